//! Dropping capabilities once the programs are loaded and attached (least privilege).
//!
//! Linux keeps capability sets per thread, and `capset(2)` changes only the calling one, so a
//! drop must reach every thread the agent has: each is sent a real-time signal whose handler
//! makes the same two calls on its own thread (as libcap's libpsx does), and the drop is done
//! once `/proc/self/task/*/status` shows every thread with the new sets. Threads started later
//! inherit the sets of the thread that starts them.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The capabilities the agent deals in, by number (linux/capability.h).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// How long all threads may take to take the new sets.
const DROP_DEADLINE: Duration = Duration::from_secs(2);
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// A capability's name as `capabilities(7)` writes it.
pub fn name(cap: u32) -> String {
    let known = [
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
        (CAP_SETPCAP, "CAP_SETPCAP"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_BPF, "CAP_BPF"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == cap)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| format!("capability {cap}"))
}

/// The bit of `cap` in a capability mask.
pub const fn bit(cap: u32) -> u64 {
    1u64 << cap
}

/// The names of the capabilities in `mask`, lowest first.
pub fn names(mask: u64) -> Vec<String> {
    (0..64).filter(|c| mask & bit(*c) != 0).map(name).collect()
}

/// The capability sets of one thread, from its `/proc/.../status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sets {
    pub effective: u64,
    pub permitted: u64,
    pub bounding: u64,
}

/// Parses the `CapEff`, `CapPrm` and `CapBnd` lines of a `/proc/<pid>/status` text.
pub fn parse_status(status: &str) -> Option<Sets> {
    let field = |key: &str| {
        let hex = status.lines().find_map(|l| l.strip_prefix(key))?.trim();
        u64::from_str_radix(hex, 16).ok()
    };
    Some(Sets {
        effective: field("CapEff:")?,
        permitted: field("CapPrm:")?,
        bounding: field("CapBnd:")?,
    })
}

/// This thread's sets.
pub fn current() -> anyhow::Result<Sets> {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .context("cannot read /proc/thread-self/status")?;
    parse_status(&status).context("no capability lines in /proc/thread-self/status")
}

/// The mask every thread is to keep, for the signal handler (0: nothing to do).
static KEEP: AtomicU64 = AtomicU64::new(0);

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Keeps only `KEEP` in this thread's bounding, permitted, effective and inheritable sets
/// (ambient follows permitted). Only raw system calls: it runs in a signal handler.
fn drop_on_this_thread() {
    let keep = KEEP.load(Ordering::SeqCst);
    // Bounding set: needs CAP_SETPCAP; without it the set stays as the process was given it
    // (it only limits what an exec could gain, and the agent runs nothing).
    for cap in 0..64u32 {
        if keep & bit(cap) == 0 {
            // SAFETY: prctl with integer arguments; an unknown cap gives EINVAL, ignored.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget/capset with a version-3 header and two data structs, as the ABI wants.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return;
        }
        for (i, d) in data.iter_mut().enumerate() {
            let part = (keep >> (32 * i)) as u32;
            d.effective &= part;
            d.permitted &= part;
            d.inheritable &= part;
        }
        libc::syscall(libc::SYS_capset, &mut header, data.as_ptr());
    }
}

extern "C" fn on_drop_signal(_: libc::c_int) {
    // SAFETY: errno is thread-local; the handler must leave it as it found it.
    let errno = unsafe { *libc::__errno_location() };
    drop_on_this_thread();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The signal that carries the drop to other threads: the first real-time signal glibc leaves
/// to programs, plus 5 (clear of the ones async runtimes or tracers commonly take).
fn drop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

/// The threads of this process, by id.
fn threads() -> anyhow::Result<BTreeSet<i32>> {
    let dir = std::fs::read_dir("/proc/self/task").context("cannot list /proc/self/task")?;
    Ok(dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

/// A thread's sets; None when it has exited.
fn thread_sets(tid: i32) -> Option<Sets> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    parse_status(&status)
}

/// Keeps only the capabilities in `keep` (of those the process has) on every thread of the
/// process: effective, permitted and inheritable, and the bounding set when the process holds
/// CAP_SETPCAP. Returns the sets every thread has afterwards.
pub fn keep_only(keep: u64) -> anyhow::Result<Sets> {
    let before = current()?;
    let target_permitted = before.permitted & keep;
    let can_bound = before.effective & bit(CAP_SETPCAP) != 0;
    let target_bounding = if can_bound {
        before.bounding & keep
    } else {
        before.bounding
    };
    KEEP.store(keep, Ordering::SeqCst);
    // SAFETY: installing a handler that makes only raw system calls (async-signal-safe).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_drop_signal as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(drop_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot install the signal handler that drops capabilities");
        }
    }
    drop_on_this_thread();
    let done = |s: &Sets| s.permitted == target_permitted && s.bounding == target_bounding;
    // SAFETY: plain syscalls without pointers.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let deadline = Instant::now() + DROP_DEADLINE;
    loop {
        let pending: Vec<i32> = threads()?
            .into_iter()
            .filter(|tid| thread_sets(*tid).is_some_and(|s| !done(&s)))
            .collect();
        if pending.is_empty() {
            break;
        }
        if pending.contains(&me) || Instant::now() >= deadline {
            bail!(
                "cannot drop capabilities on thread(s) {pending:?}: they still hold {}",
                names(
                    pending
                        .iter()
                        .filter_map(|t| thread_sets(*t))
                        .fold(0, |m, s| m | (s.permitted & !target_permitted))
                )
                .join(", ")
            );
        }
        for tid in pending {
            // SAFETY: signalling a thread of this process; one that exited gives ESRCH.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, drop_signal()) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    current()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sets_the_kernel_writes() {
        // As a process holding CAP_NET_ADMIN, CAP_PERFMON and CAP_BPF shows them.
        let status = "Name:\tflowlog\nCapInh:\t0000000000000000\nCapPrm:\t000000c000001000\n\
                      CapEff:\t000000c000001000\nCapBnd:\t000000c000001000\nCapAmb:\t000000c000001000\n";
        let sets = parse_status(status).unwrap();
        assert_eq!(sets.effective, 0xc0_0000_1000);
        assert_eq!(
            names(sets.permitted),
            ["CAP_NET_ADMIN", "CAP_PERFMON", "CAP_BPF"]
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }
}
