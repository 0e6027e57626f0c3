//! The capture's metrics: what each closed window counted (packets, bytes and flows per
//! interface, overflow, frames without a flow key), and the same counters exported at zero for
//! every watched interface as soon as it is attached, so alerts can be written before the first
//! event.

use std::collections::BTreeMap;

use tracing::{info, warn};

use flowlog_common::FlowKey;

use crate::{
    capture::collect::{Direction, DrainedWindow, FlowTotals},
    inventory::discover::interface_label,
    metrics,
};

/// A counter's name and help text, stated once for the zero export and the window's update.
struct Counter {
    name: &'static str,
    help: &'static str,
}

impl Counter {
    fn add(&self, labels: &[(&str, &str)], v: u64) {
        metrics::counter_add(self.name, self.help, labels, v);
    }
}

const PACKETS: Counter = Counter {
    name: "flowlog_packets_total",
    help: "Packets counted in flow records.",
};
const BYTES: Counter = Counter {
    name: "flowlog_bytes_total",
    help: "IP bytes counted in flow records.",
};
const OVERFLOW_PACKETS: Counter = Counter {
    name: "flowlog_overflow_packets_total",
    help: "Packets that did not fit in the full flow map (reported as SKIPDATA).",
};
const OVERFLOW_BYTES: Counter = Counter {
    name: "flowlog_overflow_bytes_total",
    help: "IP bytes of packets that did not fit in the full flow map.",
};
const NON_IP_PACKETS: Counter = Counter {
    name: "flowlog_non_ip_packets_total",
    help: "Frames that are not IPv4 or IPv6.",
};
const MALFORMED_PACKETS: Counter = Counter {
    name: "flowlog_malformed_packets_total",
    help: "IP packets with truncated or invalid headers (no flow key).",
};
const REJECT_OVERFLOW_ACCEPT_PACKETS: Counter = Counter {
    name: "flowlog_reject_overflow_accept_packets_total",
    help: "Rejected packets whose REJECT entry did not fit (REJECT map full) and that stay in \
           ACCEPT, where the TC hook counted them (raise --max-reject-flows).",
};
const UNATTRIBUTED_PACKETS: Counter = Counter {
    name: "flowlog_unattributed_packets_total",
    help: "Packets not attributable to an interface (interface counter map full).",
};
const WINDOWS: Counter = Counter {
    name: "flowlog_windows_total",
    help: "Aggregation windows closed.",
};
const FLOWS: Counter = Counter {
    name: "flowlog_flows_total",
    help: "Flows drained from the kernel.",
};

/// Counters with a label per (interface, direction).
const PER_DIRECTION: [&Counter; 7] = [
    &PACKETS,
    &BYTES,
    &OVERFLOW_PACKETS,
    &OVERFLOW_BYTES,
    &NON_IP_PACKETS,
    &MALFORMED_PACKETS,
    &REJECT_OVERFLOW_ACCEPT_PACKETS,
];

/// Exports every capture counter at zero for the interfaces in `watched` (their names) and
/// both directions, and the unlabelled ones. Adding zero leaves a counter that already counts
/// unchanged, so this runs after every attach.
pub fn export_zero_counters<'a>(watched: impl IntoIterator<Item = &'a str>) {
    for iface in watched {
        for direction in [Direction::Ingress, Direction::Egress] {
            let l = [("interface", iface), ("direction", direction.as_str())];
            for counter in PER_DIRECTION {
                counter.add(&l, 0);
            }
        }
        FLOWS.add(&[("interface", iface)], 0);
    }
    UNATTRIBUTED_PACKETS.add(&[], 0);
    WINDOWS.add(&[], 0);
}

/// A cut's flows summed per interface and direction as they are drained, for
/// [`report_window`].
#[derive(Debug, Default)]
pub struct FlowTally {
    /// (packets, bytes) per (ifindex, direction).
    per_iface: BTreeMap<(u32, u8), (u64, u64)>,
    flows_per_iface: BTreeMap<u32, u64>,
    pub flows: u64,
    /// Of `flows`, the IPv4 ones (their own map, of the same capacity).
    pub ipv4: u64,
}

impl FlowTally {
    pub fn add(&mut self, flows: &[(FlowKey, FlowTotals)]) {
        for (k, t) in flows {
            let e = self.per_iface.entry((k.ifindex, k.direction)).or_default();
            e.0 += t.packets;
            e.1 += t.bytes;
            *self.flows_per_iface.entry(k.ifindex).or_default() += 1;
            self.ipv4 += u64::from(k.family == flowlog_common::FAMILY_IPV4);
        }
        self.flows += flows.len() as u64;
    }
}

/// One log line and the metrics per window; overflow is loud because it is data AWS would call
/// SKIPDATA. `flows`: the cut's flows, tallied as they were drained (`d.flows` is not read).
pub fn report_window(
    d: &DrainedWindow,
    flows: &FlowTally,
    watched: &BTreeMap<u32, String>,
    max_flows: u32,
) {
    let name = |ifindex: u32| interface_label(watched.get(&ifindex).map(String::as_str), ifindex);
    let dir = |d: u8| Direction::of_key(d).as_str();
    for (&(ifindex, direction), &(packets, bytes)) in &flows.per_iface {
        let iface = name(ifindex);
        let l = [("interface", iface.as_str()), ("direction", dir(direction))];
        PACKETS.add(&l, packets);
        BYTES.add(&l, bytes);
    }
    for (&ifindex, &n) in &flows.flows_per_iface {
        FLOWS.add(&[("interface", name(ifindex).as_str())], n);
    }
    let (mut overflow_packets, mut overflow_bytes, mut non_ip, mut malformed) = (0, 0, 0, 0);
    let mut reject_overflow = 0;
    for (k, c) in &d.ifaces {
        let iface = name(k.ifindex);
        let l = [
            ("interface", iface.as_str()),
            ("direction", dir(k.direction)),
        ];
        OVERFLOW_PACKETS.add(&l, c.overflow_packets);
        OVERFLOW_BYTES.add(&l, c.overflow_bytes);
        NON_IP_PACKETS.add(&l, c.non_ip_packets);
        MALFORMED_PACKETS.add(&l, c.malformed_packets);
        REJECT_OVERFLOW_ACCEPT_PACKETS.add(&l, c.reject_overflow_accept_packets);
        reject_overflow += c.reject_overflow_accept_packets;
        overflow_packets += c.overflow_packets;
        overflow_bytes += c.overflow_bytes;
        non_ip += c.non_ip_packets;
        malformed += c.malformed_packets;
    }
    UNATTRIBUTED_PACKETS.add(&[], d.lost.overflow_packets);
    WINDOWS.add(&[], 1);
    // IPv4 and IPv6 flows have a map each of `max_flows` entries: the fuller one counts.
    let fullest = flows.ipv4.max(flows.flows - flows.ipv4);
    metrics::gauge_set(
        "flowlog_flow_map_fill_ratio",
        "Flows in the last window divided by the flow map capacity (the fuller of the IPv4 and \
         IPv6 flow maps).",
        &[],
        fullest as f64 / max_flows.max(1) as f64,
    );
    info!(
        start = d.window.start,
        end = d.window.end,
        flows = flows.flows,
        non_ip_packets = non_ip,
        malformed_packets = malformed,
        "window closed"
    );
    if overflow_packets > 0 || d.lost.overflow_packets > 0 {
        warn!(
            overflow_packets,
            overflow_bytes,
            unattributed_packets = d.lost.overflow_packets,
            "flow map full: packets counted as SKIPDATA (raise --max-flows)"
        );
    }
    if reject_overflow > 0 {
        warn!(
            packets = reject_overflow,
            "REJECT map full: rejected packets the TC hook had counted stay in ACCEPT \
             (raise --max-reject-flows)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_counters_cover_each_interface_and_direction() {
        export_zero_counters(["zerotest0"]);
        for counter in PER_DIRECTION {
            for direction in ["ingress", "egress"] {
                assert_eq!(
                    metrics::value(
                        counter.name,
                        &[("interface", "zerotest0"), ("direction", direction)]
                    ),
                    Some(0.0),
                    "{} {direction}",
                    counter.name
                );
            }
        }
        assert_eq!(
            metrics::value(FLOWS.name, &[("interface", "zerotest0")]),
            Some(0.0)
        );
    }
}
