//! CPU time from /proc: whole machine (/proc/stat), a process tree (/proc/PID/stat utime +
//! stime of a process and its descendants), the ksoftirqd threads, and a waited-for child
//! (wait4 rusage).
//!
//! On this kernel (tick accounting without IRQ_TIME_ACCOUNTING) softirq work is charged to
//! whichever task it interrupted or ran in: over veth that is mostly the iperf3 processes
//! themselves (the receive path runs in the sender's softirq), or ksoftirqd under load.

use std::collections::BTreeMap;
use std::fs;
use std::process::Child;

use anyhow::{Context, bail};

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (ppid, utime + stime in seconds, comm) of one process, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(i32, f64, String)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // After the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    // utime stime ...
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((ppid, (utime + stime) / clk_tck(), comm))
}

fn all_processes() -> BTreeMap<i32, (i32, f64, String)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// CPU seconds of `root` and every live descendant.
pub fn tree_secs(root: i32) -> f64 {
    let procs = all_processes();
    let mut total = 0.0;
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        if let Some((_, secs, _)) = procs.get(&pid) {
            total += secs;
        }
        frontier.extend(
            procs
                .iter()
                .filter(|(_, (ppid, _, _))| *ppid == pid)
                .map(|(p, _)| *p),
        );
    }
    total
}

/// Pids of `root`'s live descendants (not `root` itself).
pub fn descendants(root: i32) -> Vec<i32> {
    let procs = all_processes();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        for (p, _) in procs.iter().filter(|(_, (ppid, _, _))| *ppid == pid) {
            out.push(*p);
            frontier.push(*p);
        }
    }
    out
}

/// CPU seconds of all ksoftirqd threads.
pub fn ksoftirqd_secs() -> f64 {
    all_processes()
        .values()
        .filter(|(_, _, comm)| comm.starts_with("ksoftirqd/"))
        .map(|(_, secs, _)| secs)
        .sum()
}

/// Pids of running processes whose command is `comm`.
pub fn pids_named(comm: &str) -> Vec<i32> {
    all_processes()
        .into_iter()
        .filter(|(_, (_, _, c))| c == comm)
        .map(|(p, _)| p)
        .collect()
}

/// Busy CPU seconds of the whole machine so far: user + nice + system + irq + softirq + steal
/// over all CPUs (idle and iowait excluded), from /proc/stat.
pub fn machine_busy_secs() -> anyhow::Result<f64> {
    let s = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = s
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        bail!("unexpected /proc/stat cpu line: {line}");
    }
    Ok((v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / clk_tck())
}

/// Waits for `child` and returns its exit status and CPU seconds (user + system, rusage).
/// The caller must have taken and drained its pipes first.
pub fn wait_with_cpu(child: Child) -> anyhow::Result<(std::process::ExitStatus, f64)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; `pid` is our own unwaited child (std has not reaped it).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        bail!("wait4({pid}) failed: {}", std::io::Error::last_os_error());
    }
    // The child is reaped: forget the handle so std does not wait on it again.
    std::mem::forget(child);
    Ok((std::process::ExitStatus::from_raw(status), rusage_secs(&ru)))
}

/// User plus system CPU seconds of an rusage.
pub fn rusage_secs(ru: &libc::rusage) -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
