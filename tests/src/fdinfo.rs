//! `/proc/<pid>/fdinfo`: what the kernel prints about each fd a process holds (for BPF links
//! and programs: their type, attach point and run counters). Plain text the kernel has kept
//! stable; no bpftool version or struct layout is involved.

use std::{fs, path::PathBuf};

/// One fd's fdinfo text.
pub struct FdInfo {
    pub path: PathBuf,
    pub text: String,
}

impl FdInfo {
    /// The value of the `name:` line, trimmed.
    pub fn field(&self, name: &str) -> Option<String> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }
}

/// The fdinfo of every fd `pid` holds. Panics when the process is gone.
pub fn of(pid: u32) -> Vec<FdInfo> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {dir}: {e}"));
    entries
        .flatten()
        // An fd closed meanwhile has no fdinfo: skip it.
        .filter_map(|e| {
            let text = fs::read_to_string(e.path()).ok()?;
            Some(FdInfo {
                path: e.path(),
                text,
            })
        })
        .collect()
}

/// `prog_type` of tracing programs (`BPF_PROG_TYPE_TRACING`, uapi `enum bpf_prog_type`).
const BPF_PROG_TYPE_TRACING: &str = "26";

/// The runs the kernel skipped as recursive (`recursion_misses`), summed over the tracing
/// programs `pid` holds (the agent's `kfree_skb` program), each program once; `None` when it
/// holds no tracing program.
pub fn tracing_recursion_misses(pid: u32) -> Option<u64> {
    let mut seen = std::collections::BTreeSet::new();
    let misses: Vec<u64> = of(pid)
        .iter()
        .filter(|i| i.field("prog_type").as_deref() == Some(BPF_PROG_TYPE_TRACING))
        .filter(|i| seen.insert(i.field("prog_id")))
        .map(|i| {
            i.field("recursion_misses")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| {
                    panic!("no recursion_misses in {}:\n{}", i.path.display(), i.text)
                })
        })
        .collect();
    (!misses.is_empty()).then(|| misses.iter().sum())
}
