//! Up-front check that the agent may load and attach BPF programs, so a user gets one clear
//! line instead of an EPERM from deep inside the loader.

use anyhow::bail;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask of a process, from `/proc/<pid>/status` (`self` for this one).
fn effective_caps(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Whether process `pid` holds CAP_NET_ADMIN in its effective set (a peer of the control
/// socket that is not root). A process that is gone holds nothing.
pub fn process_has_net_admin(pid: i32) -> bool {
    effective_caps(&pid.to_string()).is_some_and(|caps| caps & (1u64 << CAP_NET_ADMIN) != 0)
}

/// Fails unless the process is root or holds CAP_BPF (or CAP_SYS_ADMIN), CAP_PERFMON and
/// CAP_NET_ADMIN.
pub fn check() -> anyhow::Result<()> {
    let caps = effective_caps("self").unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let perfmon = has(CAP_PERFMON) || has(CAP_SYS_ADMIN);
    if bpf && perfmon && has(CAP_NET_ADMIN) {
        return Ok(());
    }
    let euid = nix::unistd::geteuid();
    bail!(
        "flowlog needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN to load its eBPF programs \
         (running as uid {euid}): run it with sudo, e.g. `sudo flowlog run` or `cargo xtask run`"
    )
}
