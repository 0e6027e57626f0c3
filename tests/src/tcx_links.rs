//! The TCX links a process holds, read from `/proc/<pid>/fdinfo`: the kernel prints
//! `link_type: tcx`, `ifindex` (0 once the interface is gone) and `attach_type` for each link
//! fd. No bpftool version or struct layout is involved.

use std::collections::BTreeSet;

use crate::fdinfo;

/// Where a TCX link hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Ingress,
    Egress,
}

/// The (ifindex, hook) of every TCX link fd `pid` holds; ifindex 0 for a link whose interface
/// was deleted. Panics when the process is gone.
pub fn of(pid: u32) -> BTreeSet<(u32, Hook)> {
    let mut out = BTreeSet::new();
    for info in fdinfo::of(pid) {
        if info.field("link_type").as_deref() != Some("tcx") {
            continue;
        }
        let ifindex = info
            .field("ifindex")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no ifindex in {}:\n{}", info.path.display(), info.text));
        let hook = match info.field("attach_type") {
            Some(t) if t.contains("ingress") => Hook::Ingress,
            Some(t) if t.contains("egress") => Hook::Egress,
            other => panic!(
                "attach_type {other:?} in {}:\n{}",
                info.path.display(),
                info.text
            ),
        };
        out.insert((ifindex, hook));
    }
    out
}
