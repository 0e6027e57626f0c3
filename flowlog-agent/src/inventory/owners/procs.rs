//! What owner lookups read from `/proc`: processes, their network namespace, start time,
//! command line, cgroup file and open file descriptors.
//!
//! Hand-written over `std::fs` rather than the procfs crate: five small files per process, and
//! every read tolerates the process having exited in between (the crate's errors would need the
//! same handling around each call).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Ids of the processes under `proc_root`, in ascending order.
pub fn pids(proc_root: &Path) -> std::io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = fs::read_dir(proc_root)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The inode of a namespace link's target: `net:[4026531840]` → 4026531840.
pub fn ns_inode(link_target: &str) -> Option<u64> {
    link_target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The network namespace inode of `pid` (None when it exited or is not readable).
pub fn net_ns_of(proc_root: &Path, pid: &str) -> Option<u64> {
    let target = fs::read_link(proc_root.join(pid).join("ns/net")).ok()?;
    ns_inode(target.to_str()?)
}

thread_local! {
    /// Within [`one_scan_per_batch`]: the scan of `/proc` the batch's lookups share.
    static BATCH_SCAN: std::cell::RefCell<Option<BatchScan>> = const { std::cell::RefCell::new(None) };
    /// Whether this thread is inside [`one_scan_per_batch`].
    static IN_BATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct BatchScan {
    proc_root: PathBuf,
    by_ns: BTreeMap<u64, Vec<u32>>,
}

/// Runs `f` (a batch of owner lookups, on this thread) with [`processes_by_netns`] scanning
/// `/proc` once for the whole batch instead of once per interface: with 1,000 new veths, that
/// scan (a readlink per process per interface) was most of the agent's CPU.
pub fn one_scan_per_batch<T>(f: impl FnOnce() -> T) -> T {
    BATCH_SCAN.with(|b| b.borrow_mut().take());
    IN_BATCH.with(|i| i.set(true));
    let out = f();
    IN_BATCH.with(|i| i.set(false));
    BATCH_SCAN.with(|b| b.borrow_mut().take());
    out
}

/// Processes grouped by network namespace inode (within [`one_scan_per_batch`], the batch's
/// first scan).
pub fn processes_by_netns(proc_root: &Path) -> std::io::Result<BTreeMap<u64, Vec<u32>>> {
    let cached = BATCH_SCAN.with(|b| {
        b.borrow()
            .as_ref()
            .filter(|s| s.proc_root == proc_root)
            .map(|s| s.by_ns.clone())
    });
    if let Some(by_ns) = cached {
        return Ok(by_ns);
    }
    let by_ns = scan_processes_by_netns(proc_root)?;
    if !IN_BATCH.with(std::cell::Cell::get) {
        return Ok(by_ns);
    }
    BATCH_SCAN.with(|b| {
        if let Some(slot) = b.try_borrow_mut().ok().as_deref_mut() {
            *slot = Some(BatchScan {
                proc_root: proc_root.to_path_buf(),
                by_ns: by_ns.clone(),
            });
        }
    });
    Ok(by_ns)
}

fn scan_processes_by_netns(proc_root: &Path) -> std::io::Result<BTreeMap<u64, Vec<u32>>> {
    let mut by_ns: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for pid in pids(proc_root)? {
        if let Some(ino) = net_ns_of(proc_root, &pid.to_string()) {
            by_ns.entry(ino).or_default().push(pid);
        }
    }
    Ok(by_ns)
}

/// Start time of a process in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
pub fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    start_time_of_stat(&stat)
}

/// Field 22 of a stat line; the command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
pub fn start_time_of_stat(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; field 22 is 19 further.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The argv of `pid` (empty for kernel threads or when it exited).
pub fn cmdline(proc_root: &Path, pid: u32) -> Vec<String> {
    fs::read(proc_root.join(pid.to_string()).join("cmdline"))
        .map(|bytes| argv_of(&bytes))
        .unwrap_or_default()
}

/// NUL-separated argv bytes as strings (invalid UTF-8 replaced).
pub fn argv_of(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// `/proc/<pid>/comm`, trimmed.
pub fn comm(proc_root: &Path, pid: u32) -> Option<String> {
    let comm = fs::read_to_string(proc_root.join(pid.to_string()).join("comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// `/proc/<pid>/cgroup`.
pub fn cgroup(proc_root: &Path, pid: u32) -> Option<String> {
    fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()
}

/// One open file descriptor of a process.
pub struct OpenFd {
    /// `/proc/<pid>/fd/<n>`.
    pub path: PathBuf,
    /// Where it points (`/dev/net/tun`, `/dev/tap12`, `socket:[...]`, ...).
    pub target: PathBuf,
    /// `/proc/<pid>/fdinfo/<n>`.
    pub info: PathBuf,
}

/// The open file descriptors of `pid` (empty when it exited or is not readable).
pub fn open_fds(proc_root: &Path, pid: u32) -> Vec<OpenFd> {
    let dir = proc_root.join(pid.to_string());
    let Ok(entries) = fs::read_dir(dir.join("fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let target = fs::read_link(e.path()).ok()?;
            Some(OpenFd {
                info: dir.join("fdinfo").join(e.file_name()),
                path: e.path(),
                target,
            })
        })
        .collect()
}

/// The `iff:` line of an fdinfo file: the interface a `/dev/net/tun` descriptor is attached to.
pub fn tun_iff(fdinfo: &str) -> Option<&str> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("iff:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_pid(by_ns: &BTreeMap<u64, Vec<u32>>, pid: u32) -> bool {
        by_ns.values().any(|p| p.contains(&pid))
    }

    #[test]
    fn a_batch_scans_proc_once_and_later_lookups_scan_again() {
        let proc_root = Path::new("/proc");
        let (before, during) = one_scan_per_batch(|| {
            let before = processes_by_netns(proc_root).expect("/proc");
            let child = std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .expect("sleep");
            let during = processes_by_netns(proc_root).expect("/proc");
            (before, (during, child))
        });
        let (during, mut child) = during;
        assert_eq!(
            before, during,
            "the batch's second lookup reuses its first scan"
        );
        assert!(!has_pid(&during, child.id()));
        let after = processes_by_netns(proc_root).expect("/proc");
        assert!(
            has_pid(&after, child.id()),
            "outside the batch, /proc is read again"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn namespace_link_targets() {
        assert_eq!(ns_inode("net:[4026532252]"), Some(4026532252));
        assert_eq!(ns_inode("mnt:[4026532252]"), None);
        assert_eq!(ns_inode("net:[x]"), None);
    }

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        // Hand-written stat lines: fields 1..=22, the 22nd is the start time.
        let plain = "4941 (sleep) S 4939 4941 4941 0 -1 4194560 93 0 0 0 0 0 0 0 20 0 1 0 1042399 \
                     1216512 1 18446744073709551615";
        assert_eq!(start_time_of_stat(plain), Some(1042399));
        let odd = "77 (a) b (c)) S 1 77 77 0 -1 4194560 93 0 0 0 0 0 0 0 20 0 1 0 555 0 0";
        assert_eq!(start_time_of_stat(odd), Some(555));
        assert_eq!(start_time_of_stat("77 (x) S 1 2"), None);
    }

    #[test]
    fn argv_splits_on_nul() {
        assert_eq!(
            argv_of(b"qemu-system-x86_64\0-name\0guest=vm1\0"),
            ["qemu-system-x86_64", "-name", "guest=vm1"]
        );
        assert!(argv_of(b"").is_empty());
    }

    #[test]
    fn tun_fdinfo_as_the_kernel_writes_it() {
        let info = "pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t105\niff:\tfltaptest0\n";
        assert_eq!(tun_iff(info), Some("fltaptest0"));
        assert_eq!(tun_iff("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn this_process_is_listed_with_its_namespace() {
        let proc_root = Path::new("/proc");
        let me = std::process::id();
        assert!(pids(proc_root).expect("/proc").contains(&me));
        let ino = net_ns_of(proc_root, "self").expect("own netns");
        assert_eq!(net_ns_of(proc_root, &me.to_string()), Some(ino));
        assert!(start_time(proc_root, me).is_some());
        assert!(!cmdline(proc_root, me).is_empty());
    }
}
