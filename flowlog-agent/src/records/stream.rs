//! One window's records built batch by batch, as the drain hands over flows: ACCEPT records
//! per batch, then, once every flow is in, the REJECT records and each watched interface's
//! NODATA or SKIPDATA. [`super::build`] is the same over a whole window at once, sorted.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use flowlog_common::FlowKey;

use super::{FlowRecord, InterfaceId, LogStatus, WatchedInterface, traffic};
use crate::{
    capture::{
        collect::{DrainedWindow, FlowTotals},
        reject::verdict::{self, SeenThenDropped, Verdict},
    },
    inventory::discover::interface_label,
};

/// Traffic AWS does not log, left out of one window's records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Excluded {
    pub flows: u64,
    pub packets: u64,
}

/// A window's records being built. Holds the window's counters but its flows (its REJECT drops
/// and interface counters are small) and what it needs per watched interface.
pub struct RecordStream {
    header: DrainedWindow,
    watched: BTreeMap<u32, WatchedInterface>,
    ids: InterfaceIds,
    dropped: SeenThenDropped,
    reasons: BTreeMap<u32, Arc<str>>,
    excluded: Excluded,
}

impl RecordStream {
    /// `window`: the window's counters (its `flows` are ignored: they come through
    /// [`RecordStream::flows`]). `watched`: as for [`super::build`].
    pub fn new(window: &DrainedWindow, watched: BTreeMap<u32, WatchedInterface>) -> Self {
        let header = DrainedWindow {
            window: window.window,
            flows: Vec::new(),
            ifaces: window.ifaces.clone(),
            lost: window.lost,
            clock: window.clock,
            rejects: window.rejects.clone(),
            // Metrics only: no record comes from them.
            other_drops: Vec::new(),
            drop_reasons: window.drop_reasons.clone(),
        };
        RecordStream {
            dropped: SeenThenDropped::of(&header.rejects),
            header,
            watched,
            ids: InterfaceIds::default(),
            reasons: BTreeMap::new(),
            excluded: Excluded::default(),
        }
    }

    /// The ACCEPT records of `flows` (seen minus rejected), in their order, onto `out`. Flows
    /// for which `excluded` is true are left out as if never seen, and counted.
    pub fn flows<'f>(
        &mut self,
        flows: impl IntoIterator<Item = &'f (FlowKey, FlowTotals)>,
        excluded: &dyn Fn(&FlowKey) -> bool,
        out: &mut Vec<FlowRecord>,
    ) {
        for (key, totals) in flows {
            if excluded(key) {
                if totals.packets > 0 {
                    self.excluded.flows += 1;
                    self.excluded.packets += totals.packets;
                }
                continue;
            }
            if let Some(v) = self.dropped.accept(key, totals) {
                let r = self.record(&v);
                out.push(r);
            }
        }
    }

    /// Every flow is in: the REJECT records, then NODATA for each watched interface that had
    /// no record and SKIPDATA for each whose packets overflowed the flow map, onto `out`.
    /// Returns what was left out as AWS-internal over the whole window.
    pub fn finish(
        &mut self,
        excluded: &dyn Fn(&FlowKey) -> bool,
        out: &mut Vec<FlowRecord>,
    ) -> Excluded {
        let rejects = std::mem::take(&mut self.header.rejects);
        for v in verdict::rejected(&rejects) {
            if !excluded(&v.key) {
                let r = self.record(&v);
                out.push(r);
            }
        }
        let w = self.header.window;
        let with_flows: BTreeSet<u32> = self.ids.seen().collect();
        let lost_anywhere = self.header.lost.overflow_packets > 0;
        let overflowed: BTreeSet<u32> = self
            .header
            .ifaces
            .iter()
            .filter(|(_, c)| c.overflow_packets > 0)
            .map(|(k, _)| k.ifindex)
            .collect();
        for &ifindex in self.watched.keys() {
            let overflowed = lost_anywhere || overflowed.contains(&ifindex);
            let had_flows = with_flows.contains(&ifindex);
            let status = if overflowed {
                LogStatus::SkipData
            } else if !had_flows {
                LogStatus::NoData
            } else {
                continue;
            };
            out.push(FlowRecord {
                interface_id: self.ids.get(&self.watched, ifindex),
                log_status: status,
                start: w.start,
                end: w.end,
                traffic: None,
            });
        }
        self.excluded
    }

    fn record(&mut self, v: &Verdict) -> FlowRecord {
        let (key, totals) = (&v.key, &v.totals);
        let d = &self.header;
        let interface_id = self.ids.get(&self.watched, key.ifindex);
        let mut traffic = traffic(key, totals, self.watched.get(&key.ifindex));
        traffic.action = v.action;
        traffic.reject_reason = v.reason.map(|r| {
            self.reasons
                .entry(r)
                .or_insert_with(|| d.reason_name(r).into())
                .clone()
        });
        // A stamp is a jiffy (converted to within one tick of the packet's time), so a packet
        // counted just after a window's flip can carry a time from just before its start: no
        // record of a window starts before the window does.
        let start = d
            .clock
            .unix_secs(totals.first_seen_jiffies)
            .max(d.window.start);
        let end = d.clock.unix_secs(totals.last_seen_jiffies).max(start);
        FlowRecord {
            interface_id,
            log_status: LogStatus::Ok,
            start,
            end,
            traffic: Some(traffic),
        }
    }
}

/// The window's `interface-id`s by ifindex, one shared value per interface (`if<ifindex>` for
/// one not watched), remembering which interfaces had records.
#[derive(Default)]
struct InterfaceIds {
    ids: BTreeMap<u32, InterfaceId>,
    /// The last interface looked up: a host watches one or a few, so it is usually the next.
    last: Option<(u32, InterfaceId)>,
}

impl InterfaceIds {
    fn get(&mut self, watched: &BTreeMap<u32, WatchedInterface>, ifindex: u32) -> InterfaceId {
        if let Some((i, id)) = &self.last
            && *i == ifindex
        {
            return id.clone();
        }
        let id = self
            .ids
            .entry(ifindex)
            .or_insert_with(|| match watched.get(&ifindex) {
                Some(w) => InterfaceId::with_guest(&w.interface_id, w.guest.clone()),
                None => InterfaceId::from(interface_label(None, ifindex)),
            })
            .clone();
        self.last = Some((ifindex, id.clone()));
        id
    }

    /// Interfaces looked up so far.
    fn seen(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use flowlog_common::{DIR_EGRESS, DIR_INGRESS, IfaceCounters, IfaceKey, RejectKey};

    use super::*;
    use crate::{
        capture::{
            clock::JiffiesClock,
            collect::Window,
            reject::verdict::{
                Action,
                tests::{NETFILTER_DROP, dropped, key, seen},
            },
        },
        records::build,
    };

    type Summary = (String, LogStatus, Option<(Action, u64, u64)>);

    fn summary(records: &[FlowRecord]) -> Vec<Summary> {
        let mut s: Vec<Summary> = records
            .iter()
            .map(|r| {
                (
                    r.interface_id.to_string(),
                    r.log_status,
                    r.traffic.as_ref().map(|t| (t.action, t.packets, t.bytes)),
                )
            })
            .collect();
        s.sort();
        s
    }

    /// Flows handed over one at a time give the records `build` gives for the whole window:
    /// ACCEPT less what was rejected after TC, REJECT, AWS-internal left out and counted,
    /// SKIPDATA for an overflowed interface and NODATA for an idle one.
    #[test]
    fn flows_one_batch_at_a_time_make_the_whole_windows_records() {
        let rdp = key(DIR_INGRESS, 3389);
        let mut https = key(DIR_EGRESS, 443);
        https.ifindex = 8;
        let mut dns = key(DIR_INGRESS, 53);
        dns.ifindex = 8;
        let mut ifaces = BTreeMap::new();
        ifaces.insert(
            IfaceKey::new(9, DIR_INGRESS),
            IfaceCounters {
                overflow_packets: 5,
                ..IfaceCounters::default()
            },
        );
        let window = DrainedWindow {
            window: Window {
                start: 1_000,
                end: 1_060,
            },
            flows: vec![
                (rdp, seen(10, 600)),
                (https, seen(4, 240)),
                (dns, seen(2, 100)),
            ],
            ifaces,
            lost: IfaceCounters::default(),
            clock: JiffiesClock::one_ns_per_jiffy(1_000_000_000_000),
            rejects: vec![(RejectKey::new(rdp, NETFILTER_DROP), dropped(3, 180, 3, 180))],
            other_drops: Vec::new(),
            drop_reasons: None,
        };
        let watched: BTreeMap<u32, WatchedInterface> = (7..=10)
            .map(|i| (i, WatchedInterface::named(format!("eth{i}"))))
            .collect();
        let excluded = |k: &FlowKey| k.dst_port == 53;

        let mut stream = RecordStream::new(&window, watched.clone());
        let mut out = Vec::new();
        for flow in window.flows.chunks(1) {
            stream.flows(flow, &excluded, &mut out);
        }
        let left_out = stream.finish(&excluded, &mut out);

        let ok = |a, p, b| Some((a, p, b));
        assert_eq!(
            summary(&out),
            [
                ("eth10".to_owned(), LogStatus::NoData, None),
                ("eth7".to_owned(), LogStatus::Ok, ok(Action::Accept, 7, 420)),
                ("eth7".to_owned(), LogStatus::Ok, ok(Action::Reject, 3, 180)),
                ("eth8".to_owned(), LogStatus::Ok, ok(Action::Accept, 4, 240)),
                ("eth9".to_owned(), LogStatus::SkipData, None),
            ]
        );
        assert_eq!(
            left_out,
            Excluded {
                flows: 1,
                packets: 2
            }
        );
        assert_eq!(summary(&build(&window, &watched, &excluded)), summary(&out));
    }
}
