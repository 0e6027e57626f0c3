//! Which capabilities the agent needs, when, and why: an up-front check so a user gets one line
//! naming what is missing instead of an EPERM from deep inside the loader, and the drop to what
//! the running agent still needs once its programs are loaded and attached.

use anyhow::bail;
use tracing::{info, warn};

use crate::capabilities::{
    self, CAP_BPF, CAP_DAC_READ_SEARCH, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE,
    bit,
};

/// Needed to start, with the reason (CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as
/// on kernels before 5.8).
pub const TO_START: [(u32, &str); 3] = [
    (CAP_BPF, "load the eBPF programs and create their maps"),
    (
        CAP_PERFMON,
        "load the kfree_skb tracing program behind REJECT",
    ),
    (
        CAP_NET_ADMIN,
        "attach the programs to interfaces (TCX links)",
    ),
];

/// Kept after the initial attach: the agent attaches to interfaces as they appear.
pub const TO_RUN: [(u32, &str); 1] = [(
    CAP_NET_ADMIN,
    "attach to interfaces that appear later and read peer namespaces' links (IFLA_TARGET_NETNSID)",
)];

/// Kept after the initial attach when the agent has them: without them owner lookup degrades
/// (interfaces are not named after their containers or VMs) and the agent says so once.
pub const FOR_OWNERS: [(u32, &str); 2] = [
    (
        CAP_SYS_PTRACE,
        "read other processes' /proc/<pid>/ns/net, fd links and fdinfo (which container or VM is behind an interface)",
    ),
    (
        CAP_DAC_READ_SEARCH,
        "list other users' /proc/<pid>/fd (which VM holds a tap device)",
    ),
];

/// Effective capability mask of a process, from `/proc/<pid>/status` (`self` for this one).
fn effective_caps(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    capabilities::parse_status(&status).map(|s| s.effective)
}

/// Whether process `pid` holds CAP_NET_ADMIN in its effective set (a peer of the control
/// socket that is not root). A process that is gone holds nothing.
pub fn process_has_net_admin(pid: i32) -> bool {
    effective_caps(&pid.to_string()).is_some_and(|caps| caps & bit(CAP_NET_ADMIN) != 0)
}

/// The capabilities of `TO_START` missing from the effective mask `caps`.
fn missing_to_start(caps: u64) -> Vec<(u32, &'static str)> {
    let has = |c: u32| caps & bit(c) != 0;
    TO_START
        .iter()
        .filter(|(c, _)| !(has(*c) || (*c != CAP_NET_ADMIN && has(CAP_SYS_ADMIN))))
        .copied()
        .collect()
}

/// Fails, in one line naming what is missing, unless the process holds every capability of
/// [`TO_START`].
pub fn check() -> anyhow::Result<()> {
    let caps = effective_caps("self").unwrap_or(0);
    let missing = missing_to_start(caps);
    if missing.is_empty() {
        return Ok(());
    }
    let euid = nix::unistd::geteuid();
    let mut what: Vec<String> = missing
        .iter()
        .map(|(c, why)| format!("{} (to {why})", capabilities::name(*c)))
        .collect();
    let last = what.pop().unwrap_or_default();
    let what = if what.is_empty() {
        last
    } else {
        format!("{} and {last}", what.join(", "))
    };
    bail!(
        "flowlog lacks {what} (running as uid {euid}): it needs root or CAP_BPF, CAP_PERFMON and \
         CAP_NET_ADMIN: run it with sudo (`sudo flowlog run`) or grant them (e.g. systemd's \
         AmbientCapabilities=)"
    )
}

/// Drops every capability the running agent no longer needs: it keeps [`TO_RUN`] and, when
/// it holds them, [`FOR_OWNERS`]; warns once when owner lookup lacks one of those.
pub fn drop_after_attach() -> anyhow::Result<()> {
    let keep = TO_RUN
        .iter()
        .chain(FOR_OWNERS.iter())
        .fold(0, |m, (c, _)| m | bit(*c));
    let sets = capabilities::keep_only(keep)?;
    info!(
        kept = ?capabilities::names(sets.permitted),
        bounding = ?capabilities::names(sets.bounding),
        "dropped the capabilities only loading needed"
    );
    let missing: Vec<&(u32, &str)> = FOR_OWNERS
        .iter()
        .filter(|(c, _)| sets.effective & bit(*c) == 0)
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|(c, _)| capabilities::name(*c))
            .collect();
        let why: Vec<&str> = missing.iter().map(|(_, why)| *why).collect();
        warn!(
            missing = %names.join(","),
            "owner lookup degraded: without {} the agent cannot {}; interfaces are not named after \
             their containers or VMs (grant it to name them)",
            names.join(" and "),
            why.join(", nor ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_exactly_the_missing_capability() {
        let all = bit(CAP_BPF) | bit(CAP_PERFMON) | bit(CAP_NET_ADMIN);
        assert!(missing_to_start(all).is_empty());
        assert!(missing_to_start(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN)).is_empty());
        for (cap, _) in TO_START {
            let missing: Vec<u32> = missing_to_start(all & !bit(cap))
                .iter()
                .map(|(c, _)| *c)
                .collect();
            assert_eq!(missing, [cap]);
        }
    }
}
