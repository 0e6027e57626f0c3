//! flowlog's datapath: count every packet on TC ingress and egress into a per-flow, per-CPU
//! hash map (IPv4 flows under a compact key in FLOWS4_A/B, IPv6 flows in FLOWS_A/B), in the
//! slot the agent has marked active for the current window.
//!
//! Where a packet is counted: [`count_packet`]. Interfaces with an Ethernet header get
//! `flowlog_tc_{ingress,egress}`; those without one (tun, WireGuard, ipip, ...) get the `_l3`
//! twins, which parse from the IP header. The programs are passive observers: they
//! always return `TC_ACT_UNSPEC` (= `TCX_NEXT`), so whatever runs after them still decides.
#![no_std]
#![no_main]

mod drops;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::{classifier, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use aya_log_ebpf::warn;
use flowlog_common::{
    CLOCK_LATEST, CLOCK_LEN, CUTS_LEN, ClockSample, DEFAULT_MAX_FLOWS, DIR_EGRESS, DIR_INGRESS,
    FAMILY_IPV4, FlowKey, FlowKey4, FlowStats, IfaceCounters, IfaceKey, MAX_IFACES,
    parse::{Outcome, Parsed, parse_ethernet, parse_l3},
};
use flowlog_ebpf::SkbBytes;
use flowlog_ebpf::flow::{self, Packet};

/// Flow maps of the two window slots. The agent resizes them at load time (`--max-flows`).
/// Deliberately not LRU: a full map must never evict a flow silently. Inserts that fail land in
/// the per-interface overflow counters instead and become SKIPDATA records.
#[map]
static FLOWS_A: PerCpuHashMap<FlowKey, FlowStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);
#[map]
static FLOWS_B: PerCpuHashMap<FlowKey, FlowStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

/// IPv4 flows of the two window slots, under the compact 20-byte key (IPv6 flows are in
/// FLOWS_A/B): the kernel hashes and compares less than half the bytes per packet. Same size
/// and rules as FLOWS_A/B.
#[map]
static FLOWS4_A: PerCpuHashMap<FlowKey4, FlowStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);
#[map]
static FLOWS4_B: PerCpuHashMap<FlowKey4, FlowStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

/// Per-interface counters (overflow, non-IP, malformed) of the two window slots.
#[map]
static IFACE_A: PerCpuHashMap<IfaceKey, IfaceCounters> =
    PerCpuHashMap::with_max_entries(MAX_IFACES, 0);
#[map]
static IFACE_B: PerCpuHashMap<IfaceKey, IfaceCounters> =
    PerCpuHashMap::with_max_entries(MAX_IFACES, 0);

/// Element 0: which slot (0 = A, 1 = B) the programs write to. Flipped by the agent at each
/// window boundary.
#[map]
static WINDOW: Array<u32> = Array::with_max_entries(1, 0);

/// Written by the agent only, never read here: which window the idle slot holds and whether
/// its records are durable (see `flowlog_common::CUTS_MAP`). Pinned with the other maps.
#[map]
static CUTS: Array<u64> = Array::with_max_entries(CUTS_LEN, 0);

/// Last resort, per slot: packets not attributable to any interface because the per-interface
/// map itself was full. The agent reports it as SKIPDATA on every interface and as a metric.
#[map]
static LOST: PerCpuArray<IfaceCounters> = PerCpuArray::with_max_entries(2, 0);

/// The jiffies <-> CLOCK_MONOTONIC samples (`flowlog_common::CLOCK_MAP`): element
/// `CLOCK_LATEST` written by [`flowlog_clock`], `CLOCK_FIRST` by the agent. Pinned.
#[map]
static CLOCK: Array<ClockSample> = Array::with_max_entries(CLOCK_LEN, 0);

/// How the frames of an interface start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkHeader {
    /// An Ethernet header (Ethernet, veth, bridge, macvlan, tap, loopback).
    Ethernet,
    /// None: the IP header comes first, and `skb->protocol` says which (tun, WireGuard, ipip,
    /// sit, gre). The agent attaches the `_l3` programs to such interfaces.
    None,
}

#[classifier]
pub fn flowlog_tc_ingress(ctx: TcContext) -> i32 {
    count_packet(&ctx, DIR_INGRESS, LinkHeader::Ethernet);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn flowlog_tc_egress(ctx: TcContext) -> i32 {
    count_packet(&ctx, DIR_EGRESS, LinkHeader::Ethernet);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn flowlog_tc_ingress_l3(ctx: TcContext) -> i32 {
    count_packet(&ctx, DIR_INGRESS, LinkHeader::None);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn flowlog_tc_egress_l3(ctx: TcContext) -> i32 {
    count_packet(&ctx, DIR_EGRESS, LinkHeader::None);
    TC_ACT_UNSPEC
}

/// Never attached: the agent runs it with `BPF_PROG_TEST_RUN` (at load and at every cut) to read
/// the jiffies the packets are stamped with and CLOCK_MONOTONIC at one moment.
#[classifier]
pub fn flowlog_clock(_ctx: TcContext) -> i32 {
    if let Some(s) = CLOCK.get_ptr_mut(CLOCK_LATEST) {
        // SAFETY: clock helpers without arguments; `s` points into an array map's value, and
        // samples are taken one at a time by the one agent that owns the maps.
        unsafe {
            let jiffies = bpf_jiffies64();
            let mono_ns = bpf_ktime_get_ns();
            let jiffies_after = bpf_jiffies64();
            *s = ClockSample {
                jiffies,
                mono_ns,
                jiffies_after,
            };
        }
    }
    TC_ACT_UNSPEC
}

/// Where a packet is counted. `link` is a constant in each program, so each one is compiled
/// with only its own parser.
#[inline(always)]
fn count_packet(ctx: &TcContext, direction: u8, link: LinkHeader) {
    // SAFETY: `skb` is the context pointer the kernel passed in; the fields read are readable
    // by SCHED_CLS programs.
    let (ifindex, gso_segs, protocol) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.ifindex, skb.gso_segs, skb.protocol)
    };
    let slot = match WINDOW.get(0) {
        Some(&s) => s & 1,
        None => 0,
    };
    // Built only on the paths that count per interface: its `[0; 3]` padding is zeroed by a
    // call to a byte-loop memset in the BPF object, which the hit path should not pay.
    let iface = || IfaceKey::new(ifindex, direction);
    let bytes = SkbBytes::new(ctx);
    let outcome = match link {
        LinkHeader::Ethernet => parse_ethernet(&bytes),
        // `protocol` holds the ethertype in network byte order in its low 16 bits.
        LinkHeader::None => parse_l3(&bytes, 0, u16::from_be(protocol as u16)),
    };
    let parsed = match outcome {
        Outcome::Flow(p) => p,
        Outcome::NotIp => {
            bump_iface(ctx, slot, &iface(), |c| c.non_ip_packets += 1);
            return;
        }
        Outcome::Malformed => {
            bump_iface(ctx, slot, &iface(), |c| c.malformed_packets += 1);
            return;
        }
    };
    let (packets, bytes) = wire_size(ctx, &parsed, gso_segs);
    let p = Packet {
        packets,
        bytes,
        // Jiffies: the verifier inlines the helper on 64-bit JITs as one load of the kernel's
        // `jiffies`, where `bpf_ktime_get_coarse_ns` is a helper call; both advance once per
        // tick, and records need whole seconds. The agent converts them to CLOCK_MONOTONIC
        // (`capture::clock::JiffiesClock`).
        // SAFETY: clock helper, no arguments.
        now: unsafe { bpf_jiffies64() },
        tcp_flags: parsed.tcp_flags,
    };
    // One call per slot, each naming its map: a lookup whose map is chosen at run time is not
    // inlined by the verifier (generic helper, indirect call). See `flow::count`.
    let counted = if parsed.tuple.family == FAMILY_IPV4 {
        let key = FlowKey4::new(ifindex, direction, &parsed.tuple);
        if slot == 0 {
            flow::count(&FLOWS4_A, &key, p)
        } else {
            flow::count(&FLOWS4_B, &key, p)
        }
    } else {
        let key = FlowKey::new(ifindex, direction, &parsed.tuple);
        if slot == 0 {
            flow::count(&FLOWS_A, &key, p)
        } else {
            flow::count(&FLOWS_B, &key, p)
        }
    };
    if counted.is_err() {
        // Map full (E2BIG) or out of memory: into the ledger, never evicting another flow.
        bump_iface(ctx, slot, &iface(), |c| overflow(c, packets, bytes));
    }
}

/// Packets and bytes as the wire sees them. A GSO/GRO super-packet stands for `gso_segs`
/// packets, each repeating the IP and transport headers.
#[inline(always)]
fn wire_size(ctx: &TcContext, p: &Parsed, gso_segs: u32) -> (u64, u64) {
    if gso_segs > 1 {
        let payload = ctx.len().saturating_sub(p.l3_offset) as u64;
        let extra_headers = (gso_segs as u64 - 1) * p.header_len as u64;
        (gso_segs as u64, payload + extra_headers)
    } else {
        (1, p.ip_len as u64)
    }
}

#[inline(always)]
fn overflow(c: &mut IfaceCounters, packets: u64, bytes: u64) {
    c.overflow_packets += packets;
    c.overflow_bytes += bytes;
}

#[inline(always)]
fn bump_iface(ctx: &TcContext, slot: u32, key: &IfaceKey, f: impl Fn(&mut IfaceCounters)) {
    let map = if slot == 0 { &IFACE_A } else { &IFACE_B };
    let ptr = match map.get_ptr_mut(key) {
        Some(p) => Some(p),
        None => {
            let _ = map.insert(key, &IfaceCounters::default(), BPF_NOEXIST as u64);
            map.get_ptr_mut(key)
        }
    };
    match ptr {
        // SAFETY: this CPU's value of a per-CPU map.
        Some(p) => f(unsafe { &mut *p }),
        None => {
            if let Some(p) = LOST.get_ptr_mut(slot) {
                // SAFETY: this CPU's element of a per-CPU array.
                f(unsafe { &mut *p });
            }
            warn!(
                ctx,
                "flowlog: interface counter map full, ifindex {}", key.ifindex
            );
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
