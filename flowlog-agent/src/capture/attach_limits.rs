//! The limits that attaching to many interfaces can reach, said in one line that names the
//! limit and how to raise it, instead of one EMFILE per interface on every event.
//!
//! Each attached interface holds two link descriptors (ingress and egress), so the open-files
//! limit is the one a host with many containers meets first: systemd starts services with a
//! soft limit of 1024 (about 500 interfaces). The agent raises its soft limit to the hard one
//! at start.

use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::{info, warn};

use super::attach::Capture;
use crate::{inventory::discover::Interface, metrics};

/// Link descriptors each attached interface holds.
pub const DESCRIPTORS_PER_INTERFACE: u64 = 2;

/// The open-files limit (soft, hard).
fn open_files_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (lim.rlim_cur, lim.rlim_max)
}

/// Raises the soft open-files limit to the hard one (what systemd advises a service that needs
/// many descriptors to do). Returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let (soft, hard) = open_files_limit();
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit with a valid struct; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            return hard;
        }
    }
    soft
}

/// Descriptors kept free for everything else (spool and output files, sockets, `/proc`
/// reads): attaching stops short of them, so many interfaces never starve the delivery.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The sentence for an open-files limit of `soft`.
fn open_files_sentence(soft: u64) -> String {
    format!(
        "the open-files limit is reached (RLIMIT_NOFILE {soft}; each interface holds \
         {DESCRIPTORS_PER_INTERFACE} link descriptors and {RESERVED_DESCRIPTORS} are kept for the \
         rest): raise it (systemd LimitNOFILE=, ulimit -n, a container's nofile ulimit)"
    )
}

/// How many more interfaces the open-files limit leaves room for, counted once per round of
/// attaching (one read of `/proc/self/fd`).
pub struct Headroom {
    free: u64,
    soft: u64,
}

impl Headroom {
    pub fn now() -> Self {
        let (soft, _) = open_files_limit();
        let open = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Headroom {
            free: soft.saturating_sub(open + RESERVED_DESCRIPTORS),
            soft,
        }
    }

    /// Takes the descriptors of one more interface, or says which limit leaves no room.
    pub fn take(&mut self) -> Result<(), String> {
        if self.free < DESCRIPTORS_PER_INTERFACE {
            return Err(open_files_sentence(self.soft));
        }
        self.free -= DESCRIPTORS_PER_INTERFACE;
        Ok(())
    }
}

/// The `errno` behind an attach error, from its chain (or the `os error N` its text ends with,
/// for errors that keep the I/O error only as text).
fn errno(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|c| {
            c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
        })
        .or_else(|| {
            let text = format!("{err:#}");
            let at = text.rfind("(os error ")? + "(os error ".len();
            text[at..].split(')').next()?.parse().ok()
        })
}

/// When `err` (from attaching an interface) is a limit of the kernel or the process, the
/// sentence that names it and says how to raise it.
pub fn limit_reached(err: &anyhow::Error) -> Option<String> {
    match errno(err)? {
        libc::EMFILE => Some(open_files_sentence(open_files_limit().0)),
        libc::ENFILE => Some(
            "the system-wide open-files limit is reached (fs.file-max): raise it with sysctl"
                .to_string(),
        ),
        libc::ENOMEM => Some(
            "the kernel cannot allocate memory for another BPF link (or RLIMIT_MEMLOCK on kernels \
             before 5.11)"
                .to_string(),
        ),
        libc::E2BIG => Some(
            "the interface's TCX hook holds the most programs it can (64 per direction)"
                .to_string(),
        ),
        _ => None,
    }
}

/// Attaches `capture` to each of `wanted` not attached yet, within the limits: an interface
/// the open-files headroom has no room for, or whose attach fails on a limit, is counted and
/// reported once ([`report`]); any other failure is one warning for that interface.
pub fn attach_within_limits<'a>(
    capture: &mut Capture,
    wanted: impl Iterator<Item = &'a Interface>,
) {
    let attached: std::collections::BTreeSet<u32> = capture.attached().map(|(i, _)| i).collect();
    let mut limited: Vec<(&str, String)> = Vec::new();
    let mut headroom = None;
    for iface in wanted.filter(|i| !attached.contains(&i.ifindex)) {
        let room = headroom.get_or_insert_with(Headroom::now);
        if let Err(limit) = room.take() {
            limited.push((&iface.name, limit));
            continue;
        }
        if let Err(e) = capture.attach(iface) {
            match limit_reached(&e) {
                Some(limit) => limited.push((&iface.name, limit)),
                None => warn!(iface = %iface.name, error = %format!("{e:#}"), "cannot attach"),
            }
        }
    }
    let first = limited.first().map(|(i, l)| (*i, l.as_str()));
    report(limited.len(), first);
}

/// How many interfaces a limit kept unattached at the last report.
static LAST_REPORTED: AtomicUsize = AtomicUsize::new(0);

/// Publishes how many interfaces a limit keeps unattached (metric
/// `flowlog_interfaces_unattached`), and says so in one line when a limit is first reached
/// (`first`: the interface it refused and the sentence from [`limit_reached`]) and when every
/// interface is attached again.
pub fn report(unattached: usize, first: Option<(&str, &str)>) {
    metrics::gauge_set(
        "flowlog_interfaces_unattached",
        "Interfaces a flow log covers that a kernel or process limit kept the agent from attaching to.",
        &[],
        unattached as f64,
    );
    let last = LAST_REPORTED.swap(unattached, Ordering::Relaxed);
    match first {
        Some((iface, limit)) if last == 0 => warn!(
            first = %iface,
            "cannot attach {iface}: {limit}; the traffic of interfaces beyond the limit is not \
             counted until it is raised (metric flowlog_interfaces_unattached)"
        ),
        None if last > 0 => info!("every interface a flow log covers is attached again"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_stops_short_of_the_reserve() {
        let mut h = Headroom { free: 5, soft: 100 };
        assert!(h.take().is_ok());
        assert!(h.take().is_ok());
        let e = h.take().unwrap_err();
        assert!(
            e.starts_with("the open-files limit is reached (RLIMIT_NOFILE 100;"),
            "{e}"
        );
    }

    #[test]
    fn names_the_limit_from_the_error_chain_or_text() {
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EMFILE))
            .context("cannot attach tc_ingress to veth1");
        assert!(
            limit_reached(&e)
                .unwrap()
                .starts_with("the open-files limit is reached")
        );
        let e =
            anyhow::anyhow!("bpf_link_create failed: Too many open files in system (os error 23)");
        assert!(limit_reached(&e).unwrap().contains("fs.file-max"));
        let e = anyhow::anyhow!("no such device (os error 19)");
        assert_eq!(limit_reached(&e), None);
    }
}
