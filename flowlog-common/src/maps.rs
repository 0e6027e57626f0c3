//! Map keys, values and names. Layouts are `#[repr(C)]` with explicit padding so the kernel and
//! the agent agree byte for byte; sizes are asserted at compile time.

use core::mem::size_of;

/// Names of the maps in the eBPF object. Two copies of each per-window map exist: the programs
/// write to the one selected by [`WINDOW_MAP`] and the agent drains the other.
pub const FLOW_MAPS: [&str; 2] = ["FLOWS_A", "FLOWS_B"];
/// The IPv4 flows' maps, keyed by the compact [`FlowKey4`]: IPv4 packets are counted there,
/// IPv6 packets in [`FLOW_MAPS`]. Each has `--max-flows` entries.
pub const FLOW4_MAPS: [&str; 2] = ["FLOWS4_A", "FLOWS4_B"];
pub const IFACE_MAPS: [&str; 2] = ["IFACE_A", "IFACE_B"];
/// `Array<u32>` with one element: index (0 or 1) of the map pair the programs write to now.
pub const WINDOW_MAP: &str = "WINDOW";
/// `Array<u64>` with [`CUTS_LEN`] elements, written by the agent only (the programs never read
/// it): which window the idle slot holds and whether its records are on disk, so an agent that
/// adopts pinned maps after a crash neither loses nor repeats the window being cut.
pub const CUTS_MAP: &str = "CUTS";
pub const CUTS_LEN: u32 = 4;
/// Index in [`CUTS_MAP`]: start (Unix s) of the window the idle slot holds, set before a flip.
pub const CUT_IDLE_START: u32 = 0;
/// Index in [`CUTS_MAP`]: end (Unix s) of that window, set before a flip.
pub const CUT_IDLE_END: u32 = 1;
/// Index in [`CUTS_MAP`]: number of that cut (1, 2, ... over the life of the pinned maps).
pub const CUT_IDLE_SEQ: u32 = 2;
/// Index in [`CUTS_MAP`]: number of the last cut whose records reached disk (spool or
/// write-ahead log), set once they did and before its slot is cleared.
pub const CUT_RECORDED_SEQ: u32 = 3;
/// `Array<ClockSample>` with [`CLOCK_LEN`] elements: how the datapath's stamps (jiffies) map to
/// CLOCK_MONOTONIC. Pinned with the window maps, so an agent that adopts them converts the
/// stamps of the agent before it from the same first sample.
pub const CLOCK_MAP: &str = "CLOCK";
pub const CLOCK_LEN: u32 = 2;
/// Index in [`CLOCK_MAP`]: the sample [`PROG_CLOCK`] took on its latest run.
pub const CLOCK_LATEST: u32 = 0;
/// Index in [`CLOCK_MAP`]: the first sample of the maps' life, copied there by the agent that
/// created them, before any program could stamp a packet.
pub const CLOCK_FIRST: u32 = 1;
/// `PerCpuArray<IfaceCounters>`, one element per map pair: packets the programs could not
/// attribute to any interface because the per-interface map was full too (should stay zero).
pub const LOST_MAP: &str = "LOST";

/// Program names in the eBPF object.
pub const PROG_TC_INGRESS: &str = "flowlog_tc_ingress";
pub const PROG_TC_EGRESS: &str = "flowlog_tc_egress";
/// The same programs for interfaces without a link-layer header (tun, WireGuard, ipip, sit,
/// gre): packets start with the IP header.
pub const PROG_TC_INGRESS_L3: &str = "flowlog_tc_ingress_l3";
pub const PROG_TC_EGRESS_L3: &str = "flowlog_tc_egress_l3";
/// Never attached: run by the agent with `BPF_PROG_TEST_RUN` to sample the jiffies and
/// CLOCK_MONOTONIC together into [`CLOCK_MAP`].
pub const PROG_CLOCK: &str = "flowlog_clock";

/// Default capacity of each flow map (the agent overrides it with `--max-flows`).
pub const DEFAULT_MAX_FLOWS: u32 = 65_536;
/// Capacity of each per-interface counter map.
pub const MAX_IFACES: u32 = 4_096;

/// Packet direction relative to the interface the program is attached to.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Address family as stored in [`FlowKey::family`].
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// AWS's `tcp-flags` bits. Only these are logged; ACK only as part of SYN-ACK (18).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// One flow: a 5-tuple seen on one interface in one direction.
///
/// Addresses are 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`) so both families share
/// one key type. The key must be fully zero-initialised (padding included) because the kernel
/// hashes all its bytes: build it with [`FlowKey::new`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub ifindex: u32,
    pub direction: u8,
    pub family: u8,
    pub protocol: u8,
    pub _pad: u8,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
}
const _: () = assert!(size_of::<FlowKey>() == 44);

impl FlowKey {
    #[inline(always)]
    pub const fn new(ifindex: u32, direction: u8, tuple: &FiveTuple) -> Self {
        FlowKey {
            ifindex,
            direction,
            family: tuple.family,
            protocol: tuple.protocol,
            _pad: 0,
            src_addr: tuple.src_addr,
            dst_addr: tuple.dst_addr,
            src_port: tuple.src_port,
            dst_port: tuple.dst_port,
        }
    }
}

/// An IPv4 flow's key in the IPv4 flow maps ([`FLOW4_MAPS`]): 20 bytes against
/// [`FlowKey`]'s 44, so the kernel hashes and compares fewer bytes per packet. The agent turns
/// it into a [`FlowKey`] ([`FlowKey4::to_flow_key`]) when it drains. Zero-initialised padding,
/// as for [`FlowKey`]: build it with [`FlowKey4::new`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey4 {
    pub ifindex: u32,
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub direction: u8,
    pub protocol: u8,
    /// A scalar, not `[u8; 2]`: the BPF build zeroes small arrays with a call to a byte-loop
    /// `memset`, once per packet here.
    pub _pad: u16,
}
const _: () = assert!(size_of::<FlowKey4>() == 20);

impl FlowKey4 {
    /// The key of an IPv4 `tuple` (its addresses IPv4-mapped, as the parser gives them).
    #[inline(always)]
    pub const fn new(ifindex: u32, direction: u8, tuple: &FiveTuple) -> Self {
        let (s, d) = (&tuple.src_addr, &tuple.dst_addr);
        FlowKey4 {
            ifindex,
            src_addr: [s[12], s[13], s[14], s[15]],
            dst_addr: [d[12], d[13], d[14], d[15]],
            src_port: tuple.src_port,
            dst_port: tuple.dst_port,
            direction,
            protocol: tuple.protocol,
            _pad: 0,
        }
    }

    /// The same flow as a [`FlowKey`] (what [`FlowKey::new`] builds for the IPv4 tuple).
    pub const fn to_flow_key(&self) -> FlowKey {
        FlowKey {
            ifindex: self.ifindex,
            direction: self.direction,
            family: FAMILY_IPV4,
            protocol: self.protocol,
            _pad: 0,
            src_addr: ipv4_mapped(self.src_addr),
            dst_addr: ipv4_mapped(self.dst_addr),
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }
}

/// Per-CPU counters of one flow in one window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Wire packets: a GSO/GRO super-packet counts as its segment count.
    pub packets: u64,
    /// Sum of IP datagram lengths (IP header included, link layer excluded).
    pub bytes: u64,
    /// `bpf_jiffies64()` of the first and last packet on this CPU (0 = none yet; jiffies never
    /// are 0 on a 64-bit kernel: they start at 2^32 - 300 * HZ). A jiffy is one scheduler tick
    /// (1/CONFIG_HZ s); the agent converts them to CLOCK_MONOTONIC with [`ClockSample`]s.
    pub first_seen_jiffies: u64,
    pub last_seen_jiffies: u64,
    /// OR of [`aws_tcp_flags`] over the packets.
    pub tcp_flags: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<FlowStats>() == 40);

/// One reading of the kernel's jiffies and CLOCK_MONOTONIC, taken together by [`PROG_CLOCK`]:
/// `jiffies` before and `jiffies_after` after `mono_ns`, so a sample whose two jiffies differ
/// straddles a tick and is taken again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockSample {
    pub jiffies: u64,
    /// `bpf_ktime_get_ns()`.
    pub mono_ns: u64,
    pub jiffies_after: u64,
}
const _: () = assert!(size_of::<ClockSample>() == 24);

/// Key of the per-interface counter maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfaceKey {
    pub ifindex: u32,
    pub direction: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<IfaceKey>() == 8);

impl IfaceKey {
    #[inline(always)]
    pub const fn new(ifindex: u32, direction: u8) -> Self {
        IfaceKey {
            ifindex,
            direction,
            _pad: [0; 3],
        }
    }
}

/// Per-CPU, per-interface counters of what could not be recorded as a flow in one window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// IP packets (and their bytes) that did not fit in the full flow map: reported as SKIPDATA.
    pub overflow_packets: u64,
    pub overflow_bytes: u64,
    /// Frames that are not IPv4/IPv6 (ARP, LLDP, ...): not flows, counted for the metrics.
    pub non_ip_packets: u64,
    /// IP packets whose headers were truncated or invalid: no key can be built.
    pub malformed_packets: u64,
    /// Dropped packets the TC hook had counted (so they are in ACCEPT) whose REJECT entry did
    /// not fit in the full REJECT map: they stay in ACCEPT, and only here say they were
    /// rejected. Drops the TC hook had not counted go to `overflow_*` instead (SKIPDATA), so
    /// no packet is in both.
    pub reject_overflow_accept_packets: u64,
    pub reject_overflow_accept_bytes: u64,
}
const _: () = assert!(size_of::<IfaceCounters>() == 48);

impl IfaceCounters {
    /// Adds `other`'s counts (per-CPU values of one window, or cuts of one flow log's window).
    pub fn add(&mut self, other: &IfaceCounters) {
        self.overflow_packets += other.overflow_packets;
        self.overflow_bytes += other.overflow_bytes;
        self.non_ip_packets += other.non_ip_packets;
        self.malformed_packets += other.malformed_packets;
        self.reject_overflow_accept_packets += other.reject_overflow_accept_packets;
        self.reject_overflow_accept_bytes += other.reject_overflow_accept_bytes;
    }
}

/// AWS's per-packet `tcp-flags` value: FIN, SYN and RST as they are; ACK kept only together
/// with SYN (SYN-ACK = 18); every other bit dropped.
#[inline(always)]
pub const fn aws_tcp_flags(raw: u8) -> u8 {
    let logged = raw & (TCP_FIN | TCP_SYN | TCP_RST);
    if raw & TCP_SYN != 0 && raw & TCP_ACK != 0 {
        logged | TCP_ACK
    } else {
        logged
    }
}

/// The 5-tuple the parser extracts from one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FiveTuple {
    pub family: u8,
    pub protocol: u8,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
}

/// IPv4-mapped IPv6 form of an IPv4 address, as stored in [`FlowKey`].
#[inline(always)]
pub const fn ipv4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compact_ipv4_key_converts_to_the_key_the_tuple_makes() {
        let tuple = FiveTuple {
            family: FAMILY_IPV4,
            protocol: 6,
            src_addr: ipv4_mapped([10, 0, 0, 1]),
            dst_addr: ipv4_mapped([192, 0, 2, 7]),
            src_port: 40_000,
            dst_port: 443,
        };
        let k4 = FlowKey4::new(7, DIR_EGRESS, &tuple);
        assert_eq!(k4.src_addr, [10, 0, 0, 1]);
        assert_eq!(k4.dst_addr, [192, 0, 2, 7]);
        assert_eq!(k4.to_flow_key(), FlowKey::new(7, DIR_EGRESS, &tuple));
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding; every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKey4 {}
    unsafe impl aya::Pod for super::FlowStats {}
    unsafe impl aya::Pod for super::IfaceKey {}
    unsafe impl aya::Pod for super::IfaceCounters {}
    unsafe impl aya::Pod for super::ClockSample {}
}
