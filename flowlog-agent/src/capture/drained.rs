//! What a cut returns: one window's counts, summed over CPUs (`Collector::cut` in
//! [`collect`](super::collect) produces them; the flow logs consume them).

use std::{collections::BTreeMap, sync::Arc};

use flowlog_common::{
    DIR_EGRESS, DropCounters, DropReasonKey, FlowKey, FlowStats, IfaceCounters, IfaceKey,
    RejectKey, RejectStats,
};

use crate::capture::{clock::JiffiesClock, reject::reasons::DropReasons};

/// One window's bounds in Unix seconds: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

/// One flow's counters summed over CPUs. Times are the datapath's jiffies
/// ([`DrainedWindow::clock`] converts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTotals {
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_jiffies: u64,
    pub last_seen_jiffies: u64,
    pub tcp_flags: u8,
}

impl FlowTotals {
    /// Sums per-CPU values: counts add up, times take the earliest first and latest last seen
    /// among the CPUs that saw the flow.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a FlowStats>) -> Self {
        let mut t = FlowTotals::default();
        for s in per_cpu.into_iter().filter(|s| s.packets > 0) {
            t.packets += s.packets;
            t.bytes += s.bytes;
            t.tcp_flags |= s.tcp_flags;
            if t.first_seen_jiffies == 0 || s.first_seen_jiffies < t.first_seen_jiffies {
                t.first_seen_jiffies = s.first_seen_jiffies;
            }
            t.last_seen_jiffies = t.last_seen_jiffies.max(s.last_seen_jiffies);
        }
        t
    }
}

/// One (flow, reason)'s drop counters summed over CPUs. Times are jiffies, as
/// [`FlowTotals`]'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectTotals {
    pub packets: u64,
    pub bytes: u64,
    /// Of `packets`/`bytes`, those the TC hook had counted as seen before the drop.
    pub tc_packets: u64,
    pub tc_bytes: u64,
    pub first_seen_jiffies: u64,
    pub last_seen_jiffies: u64,
    pub tcp_flags: u8,
}

impl RejectTotals {
    /// Sums per-CPU values as [`FlowTotals::sum`] does.
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a RejectStats>) -> Self {
        let mut t = RejectTotals::default();
        for s in per_cpu.into_iter().filter(|s| s.packets > 0) {
            t.packets += s.packets;
            t.bytes += s.bytes;
            t.tc_packets += s.tc_packets;
            t.tc_bytes += s.tc_bytes;
            t.tcp_flags |= s.tcp_flags;
            if t.first_seen_jiffies == 0 || s.first_seen_jiffies < t.first_seen_jiffies {
                t.first_seen_jiffies = s.first_seen_jiffies;
            }
            t.last_seen_jiffies = t.last_seen_jiffies.max(s.last_seen_jiffies);
        }
        t
    }
}

/// Which way a counted packet went through its interface's TC hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The direction stored in a flow key (`DIR_INGRESS`/`DIR_EGRESS`).
    pub fn of_key(direction: u8) -> Self {
        if direction == DIR_EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Everything the datapath counted in one window.
#[derive(Debug, Clone)]
pub struct DrainedWindow {
    pub window: Window,
    pub flows: Vec<(FlowKey, FlowTotals)>,
    pub ifaces: BTreeMap<IfaceKey, IfaceCounters>,
    /// Packets the datapath could not attribute to an interface (interface map full).
    pub lost: IfaceCounters,
    /// Converts the flows' and drops' stamps (jiffies) to Unix time.
    pub clock: JiffiesClock,
    /// Drops for a REJECT reason, per flow and reason (empty when REJECT is unavailable).
    pub rejects: Vec<(RejectKey, RejectTotals)>,
    /// Other drops on watched interfaces, per (interface, direction, reason): metrics only.
    pub other_drops: Vec<(DropReasonKey, DropCounters)>,
    /// Names of the kernel's drop reasons (None when REJECT is unavailable).
    pub drop_reasons: Option<Arc<DropReasons>>,
}

impl DrainedWindow {
    /// Name of a kernel drop reason: decoded from kernel BTF when known, else
    /// `DROP_REASON_<code>`.
    pub fn reason_name(&self, code: u32) -> String {
        match &self.drop_reasons {
            Some(names) => names.name(code),
            None => format!("DROP_REASON_{code}"),
        }
    }
}
