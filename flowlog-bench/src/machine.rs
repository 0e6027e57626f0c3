//! The machine the numbers were taken on: CPU, cores, memory, kernel, date, and how busy it
//! was (load average at the start and the end: other work on the machine skews every number).

use std::fs;

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs online (`processor` entries in /proc/cpuinfo).
    pub logical_cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    /// UTC, when the run started.
    pub date: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let logical_cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let memory_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kib| kib / (1024.0 * 1024.0));
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let os = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cpu_model,
            logical_cpus,
            memory_gib,
            kernel,
            os,
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
        }
    }

    /// Records the end-of-run load average.
    pub fn finish(&mut self) {
        self.loadavg_end = loadavg();
    }
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}
