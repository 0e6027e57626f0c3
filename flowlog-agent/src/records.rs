//! From drained counters to flow log records: one record per flow per direction per window,
//! `NODATA` for a watched interface without traffic, `SKIPDATA` for one whose packets did not
//! all fit in the flow map.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use flowlog_common::{DIR_EGRESS, FAMILY_IPV4, FlowKey};

use crate::collect::{DrainedWindow, FlowTotals};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogStatus {
    Ok,
    NoData,
    SkipData,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "OK",
            LogStatus::NoData => "NODATA",
            LogStatus::SkipData => "SKIPDATA",
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// The packet part of a record (absent for NODATA/SKIPDATA).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Traffic {
    pub direction: Direction,
    /// `srcaddr`/`dstaddr`.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `pkt-srcaddr`/`pkt-dstaddr`: the addresses in the packet headers.
    pub pkt_src: IpAddr,
    pub pkt_dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
    /// AWS `tcp-flags` (OR over the window).
    pub tcp_flags: u8,
    pub action: Action,
}

/// One flow log record before formatting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowRecord {
    /// `interface-id`: the interface name on a Linux host (an ENI id where one is known).
    pub interface_id: String,
    pub log_status: LogStatus,
    pub start: u64,
    pub end: u64,
    pub traffic: Option<Traffic>,
}

/// The address stored in a key: IPv4-mapped for IPv4 flows.
pub fn key_addr(family: u8, bytes: [u8; 16]) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(bytes);
    if family == FAMILY_IPV4 {
        v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
    } else {
        IpAddr::V6(v6)
    }
}

fn traffic(key: &FlowKey, t: &FlowTotals) -> Traffic {
    let src = key_addr(key.family, key.src_addr);
    let dst = key_addr(key.family, key.dst_addr);
    Traffic {
        direction: if key.direction == DIR_EGRESS { Direction::Egress } else { Direction::Ingress },
        src,
        dst,
        pkt_src: src,
        pkt_dst: dst,
        src_port: key.src_port,
        dst_port: key.dst_port,
        protocol: key.protocol,
        packets: t.packets,
        bytes: t.bytes,
        tcp_flags: t.tcp_flags,
        action: Action::Accept,
    }
}

/// Records of one window. `watched` are the interfaces the programs were attached to during
/// the window (ifindex → interface id); each gets NODATA if it saw no flow and SKIPDATA if any
/// of its packets overflowed the flow map. Sorted, so output is deterministic.
pub fn build(drained: &DrainedWindow, watched: &BTreeMap<u32, String>) -> Vec<FlowRecord> {
    let w = drained.window;
    let name = |ifindex: u32| {
        watched.get(&ifindex).cloned().unwrap_or_else(|| format!("if{ifindex}"))
    };
    let mut out = Vec::with_capacity(drained.flows.len() + watched.len());
    for (key, totals) in &drained.flows {
        if totals.packets == 0 {
            continue;
        }
        out.push(FlowRecord {
            interface_id: name(key.ifindex),
            log_status: LogStatus::Ok,
            start: drained.clock.unix_secs(totals.first_seen_ns),
            end: drained.clock.unix_secs(totals.last_seen_ns),
            traffic: Some(traffic(key, totals)),
        });
    }
    let lost_anywhere = drained.lost.overflow_packets > 0;
    let overflowed: BTreeSet<u32> =
        drained.ifaces.iter().filter(|(_, c)| c.overflow_packets > 0).map(|(k, _)| k.ifindex).collect();
    let with_flows: BTreeSet<u32> =
        drained.flows.iter().filter(|(_, t)| t.packets > 0).map(|(k, _)| k.ifindex).collect();
    for (&ifindex, iface) in watched {
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
            interface_id: iface.clone(),
            log_status: status,
            start: w.start,
            end: w.end,
            traffic: None,
        });
    }
    out.sort();
    out
}
