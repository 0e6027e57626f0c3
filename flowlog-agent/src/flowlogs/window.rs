//! One flow log's windows over the shared capture. The capture cuts at every boundary of any
//! flow log (and when a flow log is created or deleted); each flow log takes the part of every
//! cut that falls on its interfaces and merges the cuts inside its own window. A window closes
//! at a wall-clock multiple of the flow log's own interval.
//!
//! Merging is exact: packets and bytes add up, first seen is the earliest, last seen the latest,
//! TCP flags are OR-ed, as the per-CPU values of one cut are summed.

use std::collections::{BTreeSet, HashMap};

use crate::capture::collect::{DrainedWindow, FlowTotals};

/// The part of `cut` that falls on the interfaces in `members`.
pub fn part_of(cut: &DrainedWindow, members: &BTreeSet<u32>) -> DrainedWindow {
    DrainedWindow {
        window: cut.window,
        flows: cut
            .flows
            .iter()
            .filter(|(k, _)| members.contains(&k.ifindex))
            .copied()
            .collect(),
        ifaces: cut
            .ifaces
            .iter()
            .filter(|(k, _)| members.contains(&k.ifindex))
            .map(|(k, c)| (*k, *c))
            .collect(),
        // Not attributable to an interface: reported once by the capture, not per flow log.
        lost: Default::default(),
        clock: cut.clock,
        rejects: cut
            .rejects
            .iter()
            .filter(|(k, _)| members.contains(&k.flow.ifindex))
            .copied()
            .collect(),
        other_drops: cut
            .other_drops
            .iter()
            .filter(|(k, _)| members.contains(&k.ifindex))
            .copied()
            .collect(),
        drop_reasons: cut.drop_reasons.clone(),
    }
}

/// Widens the span `first..=last` (monotonic ns, 0: none yet) to take in `other`.
fn widen(first: &mut u64, last: &mut u64, other_first: u64, other_last: u64) {
    if *first == 0 || (other_first != 0 && other_first < *first) {
        *first = other_first;
    }
    *last = (*last).max(other_last);
}

fn add_flow(into: &mut FlowTotals, t: &FlowTotals) {
    into.packets += t.packets;
    into.bytes += t.bytes;
    into.tcp_flags |= t.tcp_flags;
    widen(
        &mut into.first_seen_jiffies,
        &mut into.last_seen_jiffies,
        t.first_seen_jiffies,
        t.last_seen_jiffies,
    );
}

/// Sums `(key, value)` lists by key, keeping the order in which keys first appear.
fn merge_by_key<K: Copy + Eq + std::hash::Hash, V>(
    into: &mut Vec<(K, V)>,
    from: Vec<(K, V)>,
    add: impl Fn(&mut V, &V),
) {
    let mut index: HashMap<K, usize> = into.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
    for (k, v) in from {
        match index.get(&k) {
            Some(&i) => add(&mut into[i].1, &v),
            None => {
                index.insert(k, into.len());
                into.push((k, v));
            }
        }
    }
}

/// Adds the later cut `next` to `acc`: `acc` then spans both.
pub fn merge(acc: &mut DrainedWindow, next: DrainedWindow) {
    acc.window.end = next.window.end;
    // The latest clock converts every stamp of the merged window: its readings span both cuts'
    // stamps (and the offset from CLOCK_REALTIME only moves when the wall clock is stepped).
    acc.clock = next.clock;
    merge_by_key(&mut acc.flows, next.flows, add_flow);
    for (k, c) in next.ifaces {
        acc.ifaces.entry(k).or_default().add(&c);
    }
    acc.lost.add(&next.lost);
    merge_by_key(&mut acc.rejects, next.rejects, |a, b| {
        a.packets += b.packets;
        a.bytes += b.bytes;
        a.tc_packets += b.tc_packets;
        a.tc_bytes += b.tc_bytes;
        a.tcp_flags |= b.tcp_flags;
        widen(
            &mut a.first_seen_jiffies,
            &mut a.last_seen_jiffies,
            b.first_seen_jiffies,
            b.last_seen_jiffies,
        );
    });
    merge_by_key(&mut acc.other_drops, next.other_drops, |a, b| {
        a.packets += b.packets;
        a.bytes += b.bytes;
    });
    if acc.drop_reasons.is_none() {
        acc.drop_reasons = next.drop_reasons;
    }
}

/// One flow log's open window.
#[derive(Debug)]
pub struct FlowLogWindow {
    interval: u64,
    open: Option<DrainedWindow>,
}

impl FlowLogWindow {
    pub fn new(interval: u64) -> Self {
        FlowLogWindow {
            interval: interval.max(1),
            open: None,
        }
    }

    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// Takes this flow log's part of one cut. Returns the finished window when the cut ends on
    /// one of this flow log's boundaries.
    pub fn push(&mut self, part: DrainedWindow) -> Option<DrainedWindow> {
        let end = part.window.end;
        match &mut self.open {
            Some(acc) => merge(acc, part),
            None => self.open = Some(part),
        }
        if end.is_multiple_of(self.interval) {
            self.open.take()
        } else {
            None
        }
    }

    /// Whether a cut ending at `end` is a whole window of this flow log by itself: nothing is
    /// open from earlier cuts and the cut ends on one of its boundaries. Its flows can then
    /// become records as they are drained, with nothing to merge.
    pub fn whole_window(&self, end: u64) -> bool {
        self.open.is_none() && end.is_multiple_of(self.interval)
    }

    /// The open window, finished now (shutdown, or the flow log was deleted).
    pub fn flush(&mut self) -> Option<DrainedWindow> {
        self.open.take()
    }
}

/// The next cut: the earliest boundary strictly after `now` among flow logs with these
/// intervals (`None` without flow logs).
pub fn next_cut(now: f64, intervals: impl IntoIterator<Item = u64>) -> Option<u64> {
    intervals
        .into_iter()
        .map(|i| crate::capture::clock::next_boundary(now, i))
        .min()
}

/// The cut due after the one at `last_cut`: the next boundary after it. When the loop comes
/// back after that boundary (a slow disk, a busy machine), the latest boundary not after
/// `now` instead: a late cut still ends its window exactly on a boundary, rather than the
/// boundary being skipped and two windows merged; and an agent that was stopped over many
/// boundaries cuts once, not once per boundary.
pub fn due_cut(last_cut: u64, now: f64, intervals: &[u64]) -> Option<u64> {
    let next = next_cut(last_cut as f64, intervals.iter().copied())?;
    if next as f64 > now {
        return Some(next);
    }
    intervals
        .iter()
        .map(|i| {
            let i = (*i).max(1);
            now.max(0.0) as u64 / i * i
        })
        .max()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use flowlog_common::{
        DropCounters, DropReasonKey, FiveTuple, FlowKey, IfaceCounters, IfaceKey, RejectKey,
    };

    use super::*;
    use crate::{
        capture::clock::JiffiesClock, capture::collect::RejectTotals, capture::collect::Window,
    };

    fn key(ifindex: u32, port: u16) -> FlowKey {
        let tuple = FiveTuple {
            family: 4,
            protocol: 17,
            src_addr: Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets(),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets(),
            src_port: port,
            dst_port: 53,
        };
        FlowKey::new(ifindex, 0, &tuple)
    }

    fn flow(packets: u64, first: u64, last: u64, flags: u8) -> FlowTotals {
        FlowTotals {
            packets,
            bytes: packets * 100,
            first_seen_jiffies: first,
            last_seen_jiffies: last,
            tcp_flags: flags,
        }
    }

    fn cut(start: u64, end: u64, flows: Vec<(FlowKey, FlowTotals)>) -> DrainedWindow {
        DrainedWindow {
            window: Window { start, end },
            flows,
            ifaces: Default::default(),
            lost: Default::default(),
            clock: JiffiesClock::one_ns_per_jiffy(0),
            rejects: Vec::new(),
            other_drops: Vec::new(),
            drop_reasons: None,
        }
    }

    #[test]
    fn a_flow_log_merges_the_cuts_inside_its_window() {
        // Cuts every 10 s (another flow log's grid); this one's interval is 30 s.
        let mut w = FlowLogWindow::new(30);
        assert!(
            w.push(cut(0, 10, vec![(key(1, 1000), flow(3, 5, 9, 2))]))
                .is_none()
        );
        assert!(
            w.push(cut(
                10,
                20,
                vec![
                    (key(1, 1000), flow(4, 11, 19, 16)),
                    (key(1, 1001), flow(1, 12, 12, 0))
                ]
            ))
            .is_none()
        );
        let done = w
            .push(cut(20, 30, vec![(key(1, 1000), flow(2, 21, 29, 1))]))
            .unwrap();
        assert_eq!(done.window, Window { start: 0, end: 30 });
        assert_eq!(
            done.flows,
            vec![
                (key(1, 1000), flow(9, 5, 29, 19)),
                (key(1, 1001), flow(1, 12, 12, 0))
            ]
        );
        // The next window starts empty.
        assert!(w.push(cut(30, 40, Vec::new())).is_none());
        assert_eq!(w.flush().unwrap().window, Window { start: 30, end: 40 });
        assert!(w.flush().is_none());
    }

    #[test]
    fn a_forced_cut_between_boundaries_stays_in_the_window() {
        let mut w = FlowLogWindow::new(60);
        assert!(
            w.push(cut(0, 17, vec![(key(1, 1), flow(1, 1, 1, 0))]))
                .is_none()
        );
        let done = w
            .push(cut(17, 60, vec![(key(1, 1), flow(1, 2, 2, 0))]))
            .unwrap();
        assert_eq!(done.window, Window { start: 0, end: 60 });
        assert_eq!(done.flows, vec![(key(1, 1), flow(2, 1, 2, 0))]);
    }

    #[test]
    fn the_part_of_a_cut_is_its_interfaces_only() {
        let mut c = cut(
            0,
            10,
            vec![(key(1, 1), flow(1, 1, 1, 0)), (key(2, 1), flow(5, 1, 1, 0))],
        );
        c.ifaces.insert(
            IfaceKey::new(2, 0),
            IfaceCounters {
                overflow_packets: 7,
                ..Default::default()
            },
        );
        c.rejects.push((
            RejectKey::new(key(2, 1), 3),
            RejectTotals {
                packets: 2,
                ..Default::default()
            },
        ));
        c.other_drops.push((
            DropReasonKey::new(1, 0, 2),
            DropCounters {
                packets: 4,
                bytes: 400,
            },
        ));
        c.lost.overflow_packets = 9;
        let p = part_of(&c, &BTreeSet::from([2]));
        assert_eq!(p.flows, vec![(key(2, 1), flow(5, 1, 1, 0))]);
        assert_eq!(p.ifaces.len(), 1);
        assert_eq!(p.rejects.len(), 1);
        assert!(p.other_drops.is_empty());
        assert_eq!(p.lost, IfaceCounters::default());
        let mut merged = part_of(&c, &BTreeSet::from([1, 2]));
        merge(&mut merged, part_of(&c, &BTreeSet::from([1, 2])));
        assert_eq!(merged.ifaces[&IfaceKey::new(2, 0)].overflow_packets, 14);
        assert_eq!(merged.rejects[0].1.packets, 4);
        assert_eq!(
            merged.other_drops[0].1,
            DropCounters {
                packets: 8,
                bytes: 800
            }
        );
    }

    #[test]
    fn cuts_fall_on_every_flow_log_boundary() {
        assert_eq!(next_cut(61.5, [60, 600]), Some(120));
        // 7 s grid: 126; 60 s grid: 120.
        assert_eq!(next_cut(119.0, [7, 60]), Some(120));
        assert_eq!(next_cut(5.0, []), None);
    }

    #[test]
    fn a_late_loop_cuts_at_the_boundary_it_missed_and_never_merges_two_windows() {
        // On time: the next boundary.
        assert_eq!(due_cut(631, 631.02, &[1]), Some(632));
        assert_eq!(due_cut(630, 630.5, &[1, 5]), Some(631));
        assert_eq!(due_cut(630, 630.5, &[5]), Some(635));
        // Back 0.3 s after the boundary 632: cut at 632 now (not at 633).
        assert_eq!(due_cut(631, 632.3, &[1]), Some(632));
        assert_eq!(due_cut(630, 635.2, &[5, 60]), Some(635));
        // Stopped over many boundaries: one cut at the latest.
        assert_eq!(due_cut(631, 640.5, &[1]), Some(640));
        assert_eq!(due_cut(600, 1_000.0, &[60, 300]), Some(960));
        // A forced cut off the grid (a deleted flow log) is followed by the next boundary.
        assert_eq!(due_cut(633, 633.4, &[10]), Some(640));
        assert_eq!(due_cut(633, 633.4, &[]), None);
    }
}
