//! From drained counters to flow log records: one record per flow per direction per window
//! (ACCEPT for what was seen and not rejected, one REJECT per kernel drop reason: [`verdict`]),
//! `NODATA` for a watched interface without traffic, `SKIPDATA` for one whose packets did not
//! all fit in the flow map.

pub mod aws_internal;
pub mod format;
pub mod guest;
pub mod stream;
pub mod traffic_type;

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Deref,
    sync::Arc,
};

use flowlog_common::{FAMILY_IPV4, FlowKey};

use crate::{
    capture::{
        collect::{Direction, DrainedWindow, FlowTotals},
        reject::verdict::Action,
    },
    records::guest::GuestFields,
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
    /// A host-specific value: AWS's documented one is `BPA`. Shared by the window's records
    /// of the same reason.
    pub reject_reason: Option<Arc<str>>,
}

/// An `interface-id` value, with what records say about the guest behind the interface. A
/// window's records of one interface share one allocation (a window can hold a million records
/// of the same few interfaces); compares as its text (an `interface-id` names one interface).
#[derive(Debug, Clone, Eq)]
pub struct InterfaceId(Arc<str>, Option<Arc<GuestFields>>);

impl InterfaceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An id whose records carry `guest`'s fields.
    pub fn with_guest(id: &str, guest: Option<Arc<GuestFields>>) -> Self {
        InterfaceId(id.into(), guest)
    }

    /// The guest behind the interface, when one is known.
    pub fn guest(&self) -> Option<&GuestFields> {
        self.1.as_deref()
    }
}

impl Deref for InterfaceId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for InterfaceId {
    fn from(s: &str) -> Self {
        InterfaceId(s.into(), None)
    }
}

impl From<String> for InterfaceId {
    fn from(s: String) -> Self {
        InterfaceId(s.into(), None)
    }
}

impl PartialEq for InterfaceId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Ord for InterfaceId {
    /// By text; records of the same interface (the common case when sorting a window) are
    /// equal without reading the text.
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl PartialOrd for InterfaceId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for InterfaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One flow log record before formatting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowRecord {
    /// `interface-id`: the interface name on a Linux host (an ENI id where one is known).
    pub interface_id: InterfaceId,
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
    /// Addresses that were the primary earlier in the window (the address changed mid-window):
    /// a flow with one of them was counted while it was the primary, and keeps it.
    pub earlier_primaries: Vec<IpAddr>,
    /// Records are written from the guest's side (design.md "Perspective"): the host side of
    /// a container's veth or a VM's tap, where what the host receives is what the guest sent.
    /// Direction is flipped and the local side is the guest's (`primary_*` are the guest's
    /// addresses then).
    pub guest_view: bool,
    /// Who is behind the interface: its records' `ecs-*`, VM `instance-id` and extension
    /// fields.
    pub guest: Option<Arc<GuestFields>>,
}

impl WatchedInterface {
    /// An interface known only by its id (no addresses: header addresses are kept).
    pub fn named(interface_id: impl Into<String>) -> Self {
        WatchedInterface {
            interface_id: interface_id.into(),
            ..Default::default()
        }
    }

    /// What `srcaddr`/`dstaddr` show for the interface's own side, as AWS does for an ENI: its
    /// primary address of the packet's family, whatever the header says (a secondary address,
    /// a NAT'ed or forwarded address). An interface without an address of that family keeps
    /// the header address, and so does a flow sent from an earlier primary.
    pub fn local_address(&self, header: IpAddr) -> IpAddr {
        if self.earlier_primaries.contains(&header) {
            return header;
        }
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
        v6.to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6))
    } else {
        IpAddr::V6(v6)
    }
}

/// `iface` normalises the local side (ingress: destination, egress: source) of `srcaddr`/
/// `dstaddr`; `pkt-srcaddr`/`pkt-dstaddr` keep the header addresses. For an interface logged
/// from its guest's side the direction is the guest's: the host side's ingress is the guest's
/// egress (the datapath counts as the host sees it; this is the only place that flips).
fn traffic(key: &FlowKey, t: &FlowTotals, iface: Option<&WatchedInterface>) -> Traffic {
    let pkt_src = key_addr(key.family, key.src_addr);
    let pkt_dst = key_addr(key.family, key.dst_addr);
    let direction = match (Direction::of_key(key.direction), iface) {
        (Direction::Ingress, Some(i)) if i.guest_view => Direction::Egress,
        (Direction::Egress, Some(i)) if i.guest_view => Direction::Ingress,
        (d, _) => d,
    };
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
/// log) are left out as if never seen. Sorted, so output is deterministic. The agent builds a
/// closed cut's records batch by batch instead ([`stream::RecordStream`], unsorted).
pub fn build(
    drained: &DrainedWindow,
    watched: &BTreeMap<u32, WatchedInterface>,
    excluded: &dyn Fn(&FlowKey) -> bool,
) -> Vec<FlowRecord> {
    let mut records = stream::RecordStream::new(drained, watched.clone());
    // Exact: one record per verdict at most, plus one per watched interface.
    let mut out = Vec::with_capacity(drained.flows.len() + drained.rejects.len() + watched.len());
    records.flows(&drained.flows, excluded, &mut out);
    records.finish(excluded, &mut out);
    // Unstable is enough: records that compare equal are equal in every field.
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use flowlog_common::{DIR_INGRESS, FiveTuple, IfaceCounters, ipv4_mapped};

    use super::*;
    use crate::{
        capture::clock::JiffiesClock,
        capture::collect::{DrainedWindow, Window},
    };

    fn flow(ifindex: u32, src_last: u8) -> (FlowKey, FlowTotals) {
        let tuple = FiveTuple {
            family: FAMILY_IPV4,
            protocol: 17,
            src_addr: ipv4_mapped([10, 0, 0, src_last]),
            dst_addr: ipv4_mapped([10, 0, 0, 200]),
            src_port: 5000,
            dst_port: 53,
        };
        let totals = FlowTotals {
            packets: 1,
            bytes: 80,
            first_seen_jiffies: 1_000_000_000_000,
            last_seen_jiffies: 1_010_000_000_000,
            tcp_flags: 0,
        };
        (FlowKey::new(ifindex, DIR_INGRESS, &tuple), totals)
    }

    /// Records sort by the `interface-id` text, not by ifindex or by where the id is kept;
    /// an interface that is not watched is `if<ifindex>`; records of one interface share one id.
    #[test]
    fn records_sort_by_interface_id_text_and_share_it() {
        let drained = DrainedWindow {
            window: Window {
                start: 1_000,
                end: 1_060,
            },
            flows: vec![
                flow(2, 3),
                flow(1, 2),
                flow(9, 1),
                flow(2, 1),
                flow(1, 1),
                flow(3, 1),
            ],
            ifaces: BTreeMap::new(),
            lost: IfaceCounters::default(),
            clock: JiffiesClock::one_ns_per_jiffy(0),
            rejects: Vec::new(),
            other_drops: Vec::new(),
            drop_reasons: None,
        };
        let watched = BTreeMap::from([
            (1, WatchedInterface::named("eth9")),
            (2, WatchedInterface::named("eth10")),
            (3, WatchedInterface::named("eth10")),
            (4, WatchedInterface::named("a-idle")),
        ]);
        let recs = build(&drained, &watched, &|_| false);
        let got: Vec<(&str, LogStatus, Option<IpAddr>)> = recs
            .iter()
            .map(|r| {
                (
                    r.interface_id.as_str(),
                    r.log_status,
                    r.traffic.as_ref().map(|t| t.src),
                )
            })
            .collect();
        let ip = |last: u8| Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)));
        assert_eq!(
            got,
            [
                ("a-idle", LogStatus::NoData, None),
                ("eth10", LogStatus::Ok, ip(1)),
                ("eth10", LogStatus::Ok, ip(1)),
                ("eth10", LogStatus::Ok, ip(3)),
                ("eth9", LogStatus::Ok, ip(1)),
                ("eth9", LogStatus::Ok, ip(2)),
                ("if9", LogStatus::Ok, ip(1)),
            ]
        );
        assert_eq!((recs[1].start, recs[1].end), (1_000, 1_010));
        // Two interfaces with the same id text: equal ids, and their records compare equal.
        assert_eq!(recs[1], recs[2]);
        assert!(!Arc::ptr_eq(
            &recs[1].interface_id.0,
            &recs[2].interface_id.0
        ));
        let eth9: Vec<_> = recs
            .iter()
            .filter(|r| r.interface_id.as_str() == "eth9")
            .collect();
        assert!(
            Arc::ptr_eq(&eth9[0].interface_id.0, &eth9[1].interface_id.0),
            "one id per interface"
        );
    }

    /// Through [`build`] (the verdicts' end to end test): an interface whose only traffic was rejected has a REJECT
    /// record named by the kernel's reason and no NODATA record; ACCEPT is what is left.
    #[test]
    fn records_carry_the_reason_name_and_reject_only_interfaces_are_not_nodata() {
        use std::{collections::BTreeMap, sync::Arc};

        use flowlog_common::{DIR_EGRESS, RejectKey};

        use crate::capture::reject::{
            reasons::DropReasons,
            verdict::tests::{NETFILTER_DROP, NO_SOCKET, dropped, key, seen},
        };

        let egress = key(DIR_EGRESS, 9999);
        let mut ingress = key(DIR_INGRESS, 3389);
        ingress.ifindex = 8;
        let drained = DrainedWindow {
            window: Window {
                start: 1_000,
                end: 1_060,
            },
            flows: vec![(ingress, seen(4, 240))],
            ifaces: BTreeMap::new(),
            lost: IfaceCounters::default(),
            clock: JiffiesClock::one_ns_per_jiffy(1_000_000_000_000),
            rejects: vec![
                (
                    RejectKey::new(egress, NETFILTER_DROP),
                    dropped(2, 200, 0, 0),
                ),
                (RejectKey::new(ingress, NO_SOCKET), dropped(1, 60, 1, 60)),
            ],
            other_drops: Vec::new(),
            drop_reasons: Some(Arc::new(DropReasons::from_members(vec![
                ("SKB_DROP_REASON_NO_SOCKET".into(), NO_SOCKET),
                ("SKB_DROP_REASON_NETFILTER_DROP".into(), NETFILTER_DROP),
            ]))),
        };
        let watched = BTreeMap::from([
            (7, WatchedInterface::named("eth7")),
            (8, WatchedInterface::named("eth8")),
        ]);
        // Sorted as records are: same start second, then by the traffic fields.
        let recs = build(&drained, &watched, &|_| false);
        let got: Vec<_> = recs
            .iter()
            .map(|r| {
                let t = r.traffic.as_ref().expect("only OK records");
                (
                    r.interface_id.as_str(),
                    r.log_status,
                    t.action,
                    t.reject_reason.as_deref(),
                    t.packets,
                    t.bytes,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "eth7",
                    LogStatus::Ok,
                    Action::Reject,
                    Some("NETFILTER_DROP"),
                    2,
                    200
                ),
                (
                    "eth8",
                    LogStatus::Ok,
                    Action::Reject,
                    Some("NO_SOCKET"),
                    1,
                    60
                ),
                ("eth8", LogStatus::Ok, Action::Accept, None, 3, 180),
            ]
        );
    }
}
