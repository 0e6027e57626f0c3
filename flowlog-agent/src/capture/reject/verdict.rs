//! ACCEPT and REJECT from the kernel's own verdicts: how one window's TC counts and drop counts
//! become `ACCEPT` and `REJECT` flows, and which of them a flow log keeps (`--traffic-type`).
//!
//! # The split
//!
//! For each flow key (interface, direction, 5-tuple) the TC program counted every packet that
//! passed its hook, and the kfree_skb program counted, per drop reason, every packet of that
//! key the kernel dropped for a REJECT reason, together with the part of those drops that had
//! passed the TC hook first (`tc_packets`; see `flowlog-ebpf/src/drops.rs` for how the kernel
//! side tells). Then, per window:
//!
//! - `ACCEPT` = seen by TC − Σ over reasons of `tc_packets` (same for bytes). An ingress packet
//!   that TC counted and netfilter INPUT then dropped is in both maps: subtracted. An egress
//!   packet dropped in nftables OUTPUT never reached TC egress: nothing to subtract.
//! - `REJECT` = one record per (flow, reason) with all of that reason's dropped packets, so each
//!   record's `reject-reason` is true for every packet it counts (AWS has one reason per record).
//!   A flow partly dropped in a window therefore has an ACCEPT record and one REJECT record per
//!   reason.
//! - Drops for reasons outside the REJECT set are not here at all: the policy let those packets
//!   through and something later lost them (socket buffer full, checksum, ...), so they stay in
//!   ACCEPT and are reported as a metric.
//!
//! The subtraction saturates at zero. It can only come up short when a packet is counted by TC
//! just before a window flip and dropped just after it: it is then ACCEPT in the first window
//! and REJECT in the second, which is as close as two windows can describe it.
//!
//! `tcp-flags` of an ACCEPT record is the OR over every packet TC saw, dropped ones included
//! (flags cannot be subtracted); `start`/`end` are TC's first/last times. A REJECT record's
//! flags and times are those of its dropped packets.

use std::collections::BTreeMap;

use flowlog_common::{FlowKey, RejectKey};

use crate::capture::collect::{FlowTotals, RejectTotals};

/// What a verdict says about one flow in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Accept,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

/// One flow's verdict in one window: what becomes one `OK` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub key: FlowKey,
    pub totals: FlowTotals,
    pub action: Action,
    /// The kernel's `enum skb_drop_reason` value, for REJECT.
    pub reason: Option<u32>,
}

/// Splits one window's TC flows and REJECT drops into ACCEPT and REJECT verdicts (see the
/// module comment): ACCEPT in `flows` order, then REJECT in `rejects` order. Flows left with no
/// packets produce nothing. The agent takes flows batch by batch ([`SeenThenDropped`],
/// [`rejected`]); the collected form is for the unit tests.
#[cfg(test)]
pub fn split(
    flows: &[(FlowKey, FlowTotals)],
    rejects: &[(RejectKey, RejectTotals)],
) -> Vec<Verdict> {
    let dropped = SeenThenDropped::of(rejects);
    flows
        .iter()
        .filter_map(|(k, t)| dropped.accept(k, t))
        .chain(rejected(rejects))
        .collect()
}

/// Per flow key, the packets and bytes the TC hook counted that were then dropped for a REJECT
/// reason: what ACCEPT leaves out. Built from the window's REJECT drops (a small map, drained
/// before the flows), then asked once per flow as the flows arrive.
#[derive(Debug, Default)]
pub struct SeenThenDropped(BTreeMap<FlowKey, (u64, u64)>);

impl SeenThenDropped {
    pub fn of(rejects: &[(RejectKey, RejectTotals)]) -> Self {
        let mut m: BTreeMap<FlowKey, (u64, u64)> = BTreeMap::new();
        for (k, r) in rejects {
            let e = m.entry(k.flow).or_default();
            e.0 += r.tc_packets;
            e.1 += r.tc_bytes;
        }
        SeenThenDropped(m)
    }

    /// The ACCEPT verdict of one TC flow: seen minus rejected (`None` when nothing is left).
    pub fn accept(&self, key: &FlowKey, t: &FlowTotals) -> Option<Verdict> {
        let (p, b) = if self.0.is_empty() {
            (0, 0)
        } else {
            self.0.get(key).copied().unwrap_or_default()
        };
        let packets = t.packets.saturating_sub(p);
        if packets == 0 {
            return None;
        }
        let totals = FlowTotals {
            packets,
            bytes: t.bytes.saturating_sub(b),
            ..*t
        };
        Some(Verdict {
            key: *key,
            totals,
            action: Action::Accept,
            reason: None,
        })
    }
}

/// The REJECT verdicts: one per (flow, reason) with packets, in `rejects` order.
pub fn rejected(rejects: &[(RejectKey, RejectTotals)]) -> impl Iterator<Item = Verdict> + '_ {
    rejects
        .iter()
        .filter(|(_, r)| r.packets > 0)
        .map(|(k, r)| Verdict {
            key: k.flow,
            totals: FlowTotals {
                packets: r.packets,
                bytes: r.bytes,
                first_seen_jiffies: r.first_seen_jiffies,
                last_seen_jiffies: r.last_seen_jiffies,
                tcp_flags: r.tcp_flags,
            },
            action: Action::Reject,
            reason: Some(k.reason),
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use flowlog_common::{DIR_EGRESS, DIR_INGRESS, FiveTuple, ipv4_mapped};

    use super::*;

    pub(crate) const NETFILTER_DROP: u32 = 12;
    pub(crate) const NO_SOCKET: u32 = 3;

    pub(crate) fn key(direction: u8, dst_port: u16) -> FlowKey {
        let tuple = FiveTuple {
            family: 4,
            protocol: 6,
            src_addr: ipv4_mapped([10, 0, 0, 1]),
            dst_addr: ipv4_mapped([10, 0, 0, 2]),
            src_port: 40000,
            dst_port,
        };
        FlowKey::new(7, direction, &tuple)
    }

    pub(crate) fn seen(packets: u64, bytes: u64) -> FlowTotals {
        FlowTotals {
            packets,
            bytes,
            first_seen_jiffies: 100,
            last_seen_jiffies: 900,
            tcp_flags: 2 | 16,
        }
    }

    pub(crate) fn dropped(
        packets: u64,
        bytes: u64,
        tc_packets: u64,
        tc_bytes: u64,
    ) -> RejectTotals {
        RejectTotals {
            packets,
            bytes,
            tc_packets,
            tc_bytes,
            first_seen_jiffies: 200,
            last_seen_jiffies: 300,
            tcp_flags: 2,
        }
    }

    fn summary(v: &[Verdict]) -> Vec<(u8, u16, Action, Option<u32>, u64, u64)> {
        let mut s: Vec<_> = v
            .iter()
            .map(|v| {
                (
                    v.key.direction,
                    v.key.dst_port,
                    v.action,
                    v.reason,
                    v.totals.packets,
                    v.totals.bytes,
                )
            })
            .collect();
        s.sort();
        s
    }

    #[test]
    fn ingress_drops_after_tc_are_subtracted_from_accept() {
        // 10 packets seen by TC ingress, 3 of them then dropped by INPUT: 7 ACCEPT, 3 REJECT.
        let k = key(DIR_INGRESS, 3389);
        let v = split(
            &[(k, seen(10, 600))],
            &[(RejectKey::new(k, NETFILTER_DROP), dropped(3, 180, 3, 180))],
        );
        assert_eq!(
            summary(&v),
            [
                (DIR_INGRESS, 3389, Action::Accept, None, 7, 420),
                (
                    DIR_INGRESS,
                    3389,
                    Action::Reject,
                    Some(NETFILTER_DROP),
                    3,
                    180
                ),
            ]
        );
        let reject = v.iter().find(|v| v.action == Action::Reject).unwrap();
        assert_eq!(
            (
                reject.totals.first_seen_jiffies,
                reject.totals.last_seen_jiffies,
                reject.totals.tcp_flags
            ),
            (200, 300, 2)
        );
        let accept = v.iter().find(|v| v.action == Action::Accept).unwrap();
        assert_eq!(
            (
                accept.totals.first_seen_jiffies,
                accept.totals.last_seen_jiffies,
                accept.totals.tcp_flags
            ),
            (100, 900, 18)
        );
    }

    #[test]
    fn a_fully_dropped_flow_has_only_reject() {
        let k = key(DIR_INGRESS, 3389);
        let v = split(
            &[(k, seen(3, 180))],
            &[(RejectKey::new(k, NETFILTER_DROP), dropped(3, 180, 3, 180))],
        );
        assert_eq!(
            summary(&v),
            [(
                DIR_INGRESS,
                3389,
                Action::Reject,
                Some(NETFILTER_DROP),
                3,
                180
            )]
        );
    }

    #[test]
    fn egress_drops_before_tc_subtract_nothing() {
        // OUTPUT dropped 4 packets TC egress never saw; 5 others of the flow passed.
        let k = key(DIR_EGRESS, 9999);
        let v = split(
            &[(k, seen(5, 500))],
            &[(RejectKey::new(k, NETFILTER_DROP), dropped(4, 400, 0, 0))],
        );
        assert_eq!(
            summary(&v),
            [
                (DIR_EGRESS, 9999, Action::Accept, None, 5, 500),
                (
                    DIR_EGRESS,
                    9999,
                    Action::Reject,
                    Some(NETFILTER_DROP),
                    4,
                    400
                ),
            ]
        );
        // Only drops, no TC entry at all.
        let v = split(
            &[],
            &[(RejectKey::new(k, NETFILTER_DROP), dropped(4, 400, 0, 0))],
        );
        assert_eq!(
            summary(&v),
            [(
                DIR_EGRESS,
                9999,
                Action::Reject,
                Some(NETFILTER_DROP),
                4,
                400
            )]
        );
    }

    #[test]
    fn one_reject_per_reason_and_subtractions_add_up() {
        let k = key(DIR_INGRESS, 80);
        let other = key(DIR_INGRESS, 443);
        let v = split(
            &[(k, seen(10, 1000)), (other, seen(2, 200))],
            &[
                (RejectKey::new(k, NETFILTER_DROP), dropped(2, 200, 2, 200)),
                (RejectKey::new(k, NO_SOCKET), dropped(3, 300, 3, 300)),
            ],
        );
        assert_eq!(
            summary(&v),
            [
                (DIR_INGRESS, 80, Action::Accept, None, 5, 500),
                (DIR_INGRESS, 80, Action::Reject, Some(NO_SOCKET), 3, 300),
                (
                    DIR_INGRESS,
                    80,
                    Action::Reject,
                    Some(NETFILTER_DROP),
                    2,
                    200
                ),
                (DIR_INGRESS, 443, Action::Accept, None, 2, 200),
            ]
        );
    }

    #[test]
    fn subtraction_saturates_when_the_tc_count_fell_in_the_previous_window() {
        let k = key(DIR_INGRESS, 22);
        let v = split(
            &[(k, seen(1, 60))],
            &[(RejectKey::new(k, NETFILTER_DROP), dropped(2, 120, 2, 120))],
        );
        assert_eq!(
            summary(&v),
            [(
                DIR_INGRESS,
                22,
                Action::Reject,
                Some(NETFILTER_DROP),
                2,
                120
            )]
        );
    }
}
