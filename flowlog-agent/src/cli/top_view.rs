//! What `flowlog top` shows, apart from drawing it: filters, per-second rates between two
//! snapshots, the sorted rows of each table, and a plain-text rendering (`--once`).

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use ipnet::IpNet;

use crate::flowlogs::snapshot::{FlowEntry, Snapshot};

/// Which count orders the tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    #[default]
    Bytes,
    Packets,
}

impl SortBy {
    pub fn toggled(self) -> Self {
        match self {
            SortBy::Bytes => SortBy::Packets,
            SortBy::Packets => SortBy::Bytes,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SortBy::Bytes => "bytes/s",
            SortBy::Packets => "packets/s",
        }
    }
}

/// Which flows are shown (every set filter must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Interface name, `*` glob allowed.
    pub interface: Option<String>,
    /// IANA protocol number.
    pub protocol: Option<u8>,
    /// Source or destination port.
    pub port: Option<u16>,
    /// Source or destination address inside this prefix.
    pub prefix: Option<IpNet>,
}

/// A protocol by number or name (`tcp`, `udp`, `icmp`, `icmpv6`).
pub fn parse_protocol(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" | "ipv6-icmp" => Ok(58),
        n => n.parse().map_err(|_| {
            format!("{s:?} is not a protocol: give tcp, udp, icmp, icmpv6 or a number")
        }),
    }
}

/// An address prefix (`10.0.0.0/8`), or one address.
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address prefix: give e.g. 10.0.0.0/8 or fd00::/8"))
}

/// Protocol name as tables show it.
pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

impl Filters {
    pub fn matches(&self, f: &FlowEntry) -> bool {
        let addr_in = |net: &IpNet, a: &str| a.parse::<IpAddr>().is_ok_and(|a| net.contains(&a));
        self.interface.as_ref().is_none_or(|pat| {
            glob::Pattern::new(pat).map_or(pat == &f.interface, |p| p.matches(&f.interface))
        }) && self.protocol.is_none_or(|p| p == f.protocol)
            && self.port.is_none_or(|p| p == f.src_port || p == f.dst_port)
            && self
                .prefix
                .as_ref()
                .is_none_or(|n| addr_in(n, &f.src_addr) || addr_in(n, &f.dst_addr))
    }

    /// `iface=veth* proto=udp port=53 addr=10.0.0.0/8`, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(i) = &self.interface {
            parts.push(format!("iface={i}"));
        }
        if let Some(p) = self.protocol {
            parts.push(format!("proto={}", protocol_name(p)));
        }
        if let Some(p) = self.port {
            parts.push(format!("port={p}"));
        }
        if let Some(n) = &self.prefix {
            parts.push(format!("addr={n}"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }
}

/// A flow's identity across snapshots.
type FlowId = (u32, String, u8, String, String, u16, u16);

fn flow_id(f: &FlowEntry) -> FlowId {
    (
        f.ifindex,
        f.direction.clone(),
        f.protocol,
        f.src_addr.clone(),
        f.dst_addr.clone(),
        f.src_port,
        f.dst_port,
    )
}

/// One row with its counts so far in the window and its rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<T> {
    pub item: T,
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_s: f64,
    pub bytes_per_s: f64,
}

/// The tables of one screen.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub flows: Vec<Row<FlowEntry>>,
    /// Per source address: every shown flow it sent.
    pub talkers: Vec<Row<String>>,
    pub rejects: Vec<FlowEntry>,
}

/// Rates of `now` against `before` (the previous snapshot of the same window), else against
/// the window's start.
pub fn view(now: &Snapshot, before: Option<&Snapshot>, filters: &Filters, sort: SortBy) -> View {
    let same_window = before.filter(|b| b.window_start == now.window_start && b.now < now.now);
    let previous: BTreeMap<FlowId, (u64, u64)> = same_window
        .map(|b| {
            b.flows
                .iter()
                .map(|f| (flow_id(f), (f.packets, f.bytes)))
                .collect()
        })
        .unwrap_or_default();
    let (base_time, since_start) = match same_window {
        Some(b) => (b.now, false),
        None => (now.window_start as f64, true),
    };
    let dt = (now.now - base_time).max(0.001);
    let mut flows: Vec<Row<FlowEntry>> = now
        .flows
        .iter()
        .filter(|f| filters.matches(f))
        .map(|f| {
            let (p0, b0) = if since_start {
                (0, 0)
            } else {
                previous.get(&flow_id(f)).copied().unwrap_or((0, 0))
            };
            Row {
                item: f.clone(),
                packets: f.packets,
                bytes: f.bytes,
                packets_per_s: f.packets.saturating_sub(p0) as f64 / dt,
                bytes_per_s: f.bytes.saturating_sub(b0) as f64 / dt,
            }
        })
        .collect();
    let mut talkers: BTreeMap<String, Row<String>> = BTreeMap::new();
    for r in &flows {
        let t = talkers
            .entry(r.item.src_addr.clone())
            .or_insert_with(|| Row {
                item: r.item.src_addr.clone(),
                packets: 0,
                bytes: 0,
                packets_per_s: 0.0,
                bytes_per_s: 0.0,
            });
        t.packets += r.packets;
        t.bytes += r.bytes;
        t.packets_per_s += r.packets_per_s;
        t.bytes_per_s += r.bytes_per_s;
    }
    let mut talkers: Vec<Row<String>> = talkers.into_values().collect();
    fn key<T>(r: &Row<T>, sort: SortBy) -> (f64, u64) {
        match sort {
            SortBy::Bytes => (r.bytes_per_s, r.bytes),
            SortBy::Packets => (r.packets_per_s, r.packets),
        }
    }
    flows.sort_by(|a, b| {
        let (ka, kb) = (key(a, sort), key(b, sort));
        kb.0.total_cmp(&ka.0).then(kb.1.cmp(&ka.1))
    });
    talkers.sort_by(|a, b| {
        let (ka, kb) = (key(a, sort), key(b, sort));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(a.item.cmp(&b.item))
    });
    let rejects = now
        .rejects
        .iter()
        .filter(|f| filters.matches(f))
        .cloned()
        .collect();
    View {
        flows,
        talkers,
        rejects,
    }
}

/// A rate with a unit prefix: `0`, `12.5`, `3.4k`, `1.2M`, `5.0G`.
pub fn human(x: f64) -> String {
    let (v, unit) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.1}{unit}")
    }
}

/// The header line: window, sort, filters and map fill.
pub fn status_line(s: &Snapshot, sort: SortBy, filters: &Filters) -> String {
    let pct = |n: u64, max: u64| {
        if max == 0 {
            0.0
        } else {
            n as f64 * 100.0 / max as f64
        }
    };
    format!(
        "window {}s  sort {}  filter {}  map flows {}/{} ({:.1}%) rejects {}/{} ({:.1}%)",
        (s.now - s.window_start as f64).max(0.0) as u64,
        sort.as_str(),
        filters.describe(),
        s.map.flows,
        s.map.max_flows,
        pct(s.map.flows, s.map.max_flows),
        s.map.rejects,
        s.map.max_rejects,
        pct(s.map.rejects, s.map.max_rejects),
    )
}

pub const INTERFACE_HEADER: [&str; 7] = [
    "INTERFACE",
    "OWNER",
    "FLOWS",
    "PACKETS",
    "BYTES",
    "REJ PKTS",
    "REJ BYTES",
];
pub const FLOW_HEADER: [&str; 11] = [
    "IFACE",
    "DIR",
    "PROTO",
    "SOURCE",
    "SPORT",
    "DESTINATION",
    "DPORT",
    "PACKETS",
    "BYTES",
    "PKT/S",
    "B/S",
];
pub const TALKER_HEADER: [&str; 5] = ["SOURCE", "PACKETS", "BYTES", "PKT/S", "B/S"];
pub const REJECT_HEADER: [&str; 9] = [
    "IFACE",
    "DIR",
    "PROTO",
    "SOURCE",
    "DESTINATION",
    "DPORT",
    "REASON",
    "PACKETS",
    "BYTES",
];

/// Table cells of each kind of row.
pub fn interface_cells(i: &crate::flowlogs::snapshot::InterfaceSummary) -> Vec<String> {
    vec![
        i.name.clone(),
        i.owner.clone().unwrap_or_else(|| "-".into()),
        i.flows.to_string(),
        i.packets.to_string(),
        i.bytes.to_string(),
        i.reject_packets.to_string(),
        i.reject_bytes.to_string(),
    ]
}

pub fn flow_cells(r: &Row<FlowEntry>) -> Vec<String> {
    let f = &r.item;
    vec![
        f.interface.clone(),
        if f.direction == "ingress" {
            "in"
        } else {
            "out"
        }
        .into(),
        protocol_name(f.protocol),
        f.src_addr.clone(),
        f.src_port.to_string(),
        f.dst_addr.clone(),
        f.dst_port.to_string(),
        r.packets.to_string(),
        r.bytes.to_string(),
        human(r.packets_per_s),
        human(r.bytes_per_s),
    ]
}

pub fn talker_cells(r: &Row<String>) -> Vec<String> {
    vec![
        r.item.clone(),
        r.packets.to_string(),
        r.bytes.to_string(),
        human(r.packets_per_s),
        human(r.bytes_per_s),
    ]
}

pub fn reject_cells(f: &FlowEntry) -> Vec<String> {
    vec![
        f.interface.clone(),
        if f.direction == "ingress" {
            "in"
        } else {
            "out"
        }
        .into(),
        protocol_name(f.protocol),
        f.src_addr.clone(),
        f.dst_addr.clone(),
        f.dst_port.to_string(),
        f.reason.clone().unwrap_or_else(|| "-".into()),
        f.packets.to_string(),
        f.bytes.to_string(),
    ]
}

/// Columns padded to their widest cell, two spaces apart.
fn table(out: &mut String, title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(out, "{title}");
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
    out.push('\n');
}

/// The screen as plain text (`flowlog top --once`), `limit` rows per table.
pub fn plain(s: &Snapshot, v: &View, sort: SortBy, filters: &Filters, limit: usize) -> String {
    let mut out = format!("flowlog top  {}\n\n", status_line(s, sort, filters));
    let ifaces: Vec<Vec<String>> = s.interfaces.iter().map(interface_cells).collect();
    table(&mut out, "Interfaces", &INTERFACE_HEADER, &ifaces);
    let flows: Vec<Vec<String>> = v.flows.iter().take(limit).map(flow_cells).collect();
    table(&mut out, "Top flows", &FLOW_HEADER, &flows);
    let talkers: Vec<Vec<String>> = v.talkers.iter().take(limit).map(talker_cells).collect();
    table(&mut out, "Top talkers", &TALKER_HEADER, &talkers);
    let rejects: Vec<Vec<String>> = v.rejects.iter().take(limit).map(reject_cells).collect();
    table(&mut out, "Rejected", &REJECT_HEADER, &rejects);
    out.trim_end().to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(iface: &str, proto: u8, src: &str, dport: u16, packets: u64, bytes: u64) -> FlowEntry {
        FlowEntry {
            ifindex: 2,
            interface: iface.into(),
            direction: "ingress".into(),
            protocol: proto,
            src_addr: src.into(),
            dst_addr: "10.0.0.2".into(),
            src_port: 40000,
            dst_port: dport,
            packets,
            bytes,
            reason: None,
        }
    }

    fn snap(now: f64, flows: Vec<FlowEntry>) -> Snapshot {
        Snapshot {
            window_start: 100,
            now,
            flows,
            ..Snapshot::default()
        }
    }

    #[test]
    fn rates_are_per_second_between_snapshots_of_one_window() {
        let a = snap(110.0, vec![flow("eth0", 17, "10.0.0.1", 53, 10, 1000)]);
        let b = snap(112.0, vec![flow("eth0", 17, "10.0.0.1", 53, 30, 5000)]);
        let v = view(&b, Some(&a), &Filters::default(), SortBy::Bytes);
        assert_eq!(v.flows[0].packets_per_s, 10.0);
        assert_eq!(v.flows[0].bytes_per_s, 2000.0);
        // Without a previous snapshot: since the window's start (12 s).
        let v = view(&b, None, &Filters::default(), SortBy::Bytes);
        assert_eq!(v.flows[0].packets_per_s, 2.5);
    }

    #[test]
    fn filters_and_sort() {
        let s = snap(
            110.0,
            vec![
                flow("eth0", 17, "10.0.0.1", 53, 100, 1000),
                flow("veth1", 6, "192.168.1.5", 22, 10, 5000),
            ],
        );
        let by_bytes = view(&s, None, &Filters::default(), SortBy::Bytes);
        assert_eq!(by_bytes.flows[0].item.dst_port, 22);
        let by_packets = view(&s, None, &Filters::default(), SortBy::Packets);
        assert_eq!(by_packets.flows[0].item.dst_port, 53);
        let only = |f: Filters| {
            view(&s, None, &f, SortBy::Bytes)
                .flows
                .iter()
                .map(|r| r.item.dst_port)
                .collect::<Vec<_>>()
        };
        let f = |i: Option<&str>, p: Option<u8>, port: Option<u16>, n: Option<&str>| Filters {
            interface: i.map(String::from),
            protocol: p,
            port,
            prefix: n.map(|n| parse_prefix(n).unwrap()),
        };
        assert_eq!(only(f(Some("veth*"), None, None, None)), [22]);
        assert_eq!(only(f(None, Some(17), None, None)), [53]);
        assert_eq!(only(f(None, None, Some(22), None)), [22]);
        assert_eq!(only(f(None, None, None, Some("10.0.0.0/24"))), [22, 53]);
        assert_eq!(only(f(None, None, None, Some("192.168.0.0/16"))), [22]);
        assert_eq!(parse_protocol("UDP"), Ok(17));
        assert!(parse_protocol("xyz").is_err());
    }
}
