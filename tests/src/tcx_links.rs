//! The TCX links a process holds, read from `/proc/<pid>/fdinfo`: the kernel prints
//! `link_type: tcx`, `ifindex` (0 once the interface is gone) and `attach_type` for each link
//! fd. No bpftool version or struct layout is involved.

use std::{collections::BTreeSet, fs};

/// Where a TCX link hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Ingress,
    Egress,
}

/// The (ifindex, hook) of every TCX link fd `pid` holds; ifindex 0 for a link whose interface
/// was deleted. Panics when the process is gone.
pub fn of(pid: u32) -> BTreeSet<(u32, Hook)> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {dir}: {e}"));
    let mut out = BTreeSet::new();
    for e in entries.flatten() {
        // An fd closed meanwhile has no fdinfo: skip it.
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim_start_matches(':').trim().to_string())
        };
        if field("link_type").as_deref() != Some("tcx") {
            continue;
        }
        let ifindex = field("ifindex")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {}:\n{text}", e.path().display()));
        let hook = match field("attach_type") {
            Some(t) if t.contains("ingress") => Hook::Ingress,
            Some(t) if t.contains("egress") => Hook::Egress,
            other => panic!("attach_type {other:?} in {}:\n{text}", e.path().display()),
        };
        out.insert((ifindex, hook));
    }
    out
}
