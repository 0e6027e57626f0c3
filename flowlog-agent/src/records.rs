//! From drained counters to flow log records: one record per flow per direction per window
//! (ACCEPT for what was seen and not rejected, one REJECT per kernel drop reason: [`verdict`]),
//! `NODATA` for a watched interface without traffic, `SKIPDATA` for one whose packets did not
//! all fit in the flow map.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use flowlog_common::{DIR_EGRESS, FAMILY_IPV4, FlowKey};

use crate::{
    collect::{DrainedWindow, FlowTotals},
    verdict,
};

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
    /// `reject-reason` of a REJECT record: the kernel's drop reason (`NETFILTER_DROP`, ...).
    /// A host-specific value: AWS's documented one is `BPA`.
    pub reject_reason: Option<String>,
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

/// What records need to know about one watched interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchedInterface {
    /// `interface-id`: the ENI id where one is known, else the interface name.
    pub interface_id: String,
    /// The interface's primary IPv4 address (the first the kernel lists: its first primary).
    pub primary_ipv4: Option<Ipv4Addr>,
    /// The interface's primary IPv6 address: its oldest non-link-local one, else its
    /// link-local one.
    pub primary_ipv6: Option<Ipv6Addr>,
}

impl WatchedInterface {
    /// An interface known only by its id (no addresses: header addresses are kept).
    pub fn named(interface_id: impl Into<String>) -> Self {
        WatchedInterface { interface_id: interface_id.into(), ..Default::default() }
    }

    /// What `srcaddr`/`dstaddr` show for the interface's own side, as AWS does for an ENI: its
    /// primary address of the packet's family, whatever the header says (a secondary address,
    /// a NAT'ed or forwarded address). An interface without an address of that family keeps
    /// the header address.
    pub fn local_address(&self, header: IpAddr) -> IpAddr {
        match header {
            IpAddr::V4(_) => self.primary_ipv4.map_or(header, IpAddr::V4),
            IpAddr::V6(_) => self.primary_ipv6.map_or(header, IpAddr::V6),
        }
    }
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

/// `iface` normalises the local side (ingress: destination, egress: source) of `srcaddr`/
/// `dstaddr`; `pkt-srcaddr`/`pkt-dstaddr` keep the header addresses.
fn traffic(key: &FlowKey, t: &FlowTotals, iface: Option<&WatchedInterface>) -> Traffic {
    let pkt_src = key_addr(key.family, key.src_addr);
    let pkt_dst = key_addr(key.family, key.dst_addr);
    let direction = if key.direction == DIR_EGRESS { Direction::Egress } else { Direction::Ingress };
    let (mut src, mut dst) = (pkt_src, pkt_dst);
    if let Some(iface) = iface {
        match direction {
            Direction::Egress => src = iface.local_address(pkt_src),
            Direction::Ingress => dst = iface.local_address(pkt_dst),
        }
    }
    Traffic {
        direction,
        src,
        dst,
        pkt_src,
        pkt_dst,
        src_port: key.src_port,
        dst_port: key.dst_port,
        protocol: key.protocol,
        packets: t.packets,
        bytes: t.bytes,
        tcp_flags: t.tcp_flags,
        action: Action::Accept,
        reject_reason: None,
    }
}

/// Records of one window. `watched` are the interfaces the programs were attached to during
/// the window (by ifindex); each gets NODATA if it saw no flow and SKIPDATA if any of its
/// packets overflowed the flow map. Flows for which `excluded` is true (traffic AWS does not
/// log) are left out as if never seen. Sorted, so output is deterministic.
pub fn build(
    drained: &DrainedWindow,
    watched: &BTreeMap<u32, WatchedInterface>,
    excluded: &dyn Fn(&FlowKey) -> bool,
) -> Vec<FlowRecord> {
    let w = drained.window;
    let name = |ifindex: u32| {
        watched.get(&ifindex).map(|i| i.interface_id.clone()).unwrap_or_else(|| format!("if{ifindex}"))
    };
    let mut out = Vec::with_capacity(drained.flows.len() + watched.len());
    // ACCEPT (seen minus rejected) and REJECT (per drop reason) flows: see `verdict`.
    let verdicts = verdict::split(&drained.flows, &drained.rejects);
    let mut with_flows = BTreeSet::new();
    for v in &verdicts {
        let (key, totals) = (&v.key, &v.totals);
        if excluded(key) {
            continue;
        }
        let mut traffic = traffic(key, totals, watched.get(&key.ifindex));
        traffic.action = v.action;
        traffic.reject_reason = v.reason.map(|r| match &drained.drop_reasons {
            Some(names) => names.name(r),
            None => format!("DROP_REASON_{r}"),
        });
        with_flows.insert(key.ifindex);
        out.push(FlowRecord {
            interface_id: name(key.ifindex),
            log_status: LogStatus::Ok,
            start: drained.clock.unix_secs(totals.first_seen_ns),
            end: drained.clock.unix_secs(totals.last_seen_ns),
            traffic: Some(traffic),
        });
    }
    let lost_anywhere = drained.lost.overflow_packets > 0;
    let overflowed: BTreeSet<u32> =
        drained.ifaces.iter().filter(|(_, c)| c.overflow_packets > 0).map(|(k, _)| k.ifindex).collect();
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
            interface_id: iface.interface_id.clone(),
            log_status: status,
            start: w.start,
            end: w.end,
            traffic: None,
        });
    }
    out.sort();
    out
}
