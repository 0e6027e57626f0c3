//! Builders shared by the record-fidelity tests: drained windows made of constructed flows,
//! metadata from command-line flags, and one record line rendered through the real pipeline
//! (records::build → format).

#![allow(dead_code)]

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use clap::Parser;
use flowlog_agent::{
    capture::clock::JiffiesClock,
    capture::collect::{DrainedWindow, FlowTotals, Window},
    cli::RecordArgs,
    inventory::metadata::Metadata,
    records::format::Field,
    records::{self, FlowRecord, WatchedInterface},
};
use flowlog_common::{
    DIR_EGRESS, DIR_INGRESS, FAMILY_IPV4, FAMILY_IPV6, FiveTuple, FlowKey, IfaceCounters,
    ipv4_mapped,
};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    records: RecordArgs,
}

/// `RecordArgs` from flags, exactly as `flowlog run` parses them.
pub fn record_args(flags: &[&str]) -> RecordArgs {
    let mut argv = vec!["flowlog", "--no-imds"];
    argv.extend_from_slice(flags);
    Args::try_parse_from(argv).expect("flags parse").records
}

/// Metadata resolved from flags (no instance metadata).
pub fn metadata(flags: &[&str]) -> Metadata {
    Metadata::resolve(&record_args(flags).metadata_config(), None).expect("metadata resolves")
}

/// A `--log-format` string of `fields` in order: `${version} ${account-id} ...`.
pub fn format_string(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| format!("${{{}}}", f.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// One constructed flow: header addresses and ports as on the wire, on interface `ifindex`.
#[derive(Clone, Copy)]
pub struct Flow<'a> {
    pub ifindex: u32,
    pub egress: bool,
    pub src: &'a str,
    pub dst: &'a str,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
    pub start: u64,
    pub end: u64,
    pub tcp_flags: u8,
}

impl Flow<'_> {
    pub fn key(&self) -> FlowKey {
        let (family, s, d) = match (ip(self.src), ip(self.dst)) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (
                FAMILY_IPV4,
                ipv4_mapped(s.octets()),
                ipv4_mapped(d.octets()),
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => (FAMILY_IPV6, s.octets(), d.octets()),
            _ => panic!("mixed address families"),
        };
        let tuple = FiveTuple {
            family,
            protocol: self.protocol,
            src_addr: s,
            dst_addr: d,
            src_port: self.sport,
            dst_port: self.dport,
        };
        FlowKey::new(
            self.ifindex,
            if self.egress { DIR_EGRESS } else { DIR_INGRESS },
            &tuple,
        )
    }

    pub fn totals(&self) -> FlowTotals {
        FlowTotals {
            packets: self.packets,
            bytes: self.bytes,
            first_seen_jiffies: self.start * 1_000_000_000,
            last_seen_jiffies: self.end * 1_000_000_000,
            tcp_flags: self.tcp_flags,
        }
    }
}

/// A drained window holding `flows`, with `overflowed` interfaces that lost packets.
pub fn drained(window: (u64, u64), flows: &[Flow<'_>], overflowed: &[u32]) -> DrainedWindow {
    let mut ifaces = BTreeMap::new();
    for &ifindex in overflowed {
        ifaces.insert(
            flowlog_common::IfaceKey::new(ifindex, DIR_INGRESS),
            IfaceCounters {
                overflow_packets: 3,
                overflow_bytes: 300,
                ..Default::default()
            },
        );
    }
    DrainedWindow {
        window: Window {
            start: window.0,
            end: window.1,
        },
        flows: flows.iter().map(|f| (f.key(), f.totals())).collect(),
        ifaces,
        lost: IfaceCounters::default(),
        clock: JiffiesClock::one_ns_per_jiffy(0),
        rejects: Vec::new(),
        other_drops: Vec::new(),
        drop_reasons: None,
    }
}

/// An interface with an ENI id and primary addresses.
pub fn iface(id: &str, v4: Option<&str>, v6: Option<&str>) -> WatchedInterface {
    WatchedInterface {
        interface_id: id.to_string(),
        primary_ipv4: v4.map(|a| a.parse().expect("IPv4")),
        primary_ipv6: v6.map(|a| a.parse().expect("IPv6")),
        ..WatchedInterface::default()
    }
}

/// Records of one window through the real builder (nothing excluded).
pub fn build(drained: &DrainedWindow, watched: &[(u32, WatchedInterface)]) -> Vec<FlowRecord> {
    let watched: BTreeMap<u32, WatchedInterface> = watched.iter().cloned().collect();
    records::build(drained, &watched, &|_| false)
}
