//! Types of the drop datapath: the `skb:kfree_skb` program attributes each packet the kernel
//! drops to its flow (same [`FlowKey`] as the TC programs) with the kernel's drop reason.
//!
//! Two kinds of drops, two maps per window slot (slots as for the flow maps, selected by the
//! same `WINDOW` element):
//! - drops whose reason is in the REJECT set: per flow and reason ([`RejectKey`] →
//!   [`RejectStats`]), they become `REJECT` records;
//! - every other drop on a watched interface: per interface, direction and reason
//!   ([`DropReasonKey`] → [`DropCounters`]), reported only as a metric (the packet stays in
//!   `ACCEPT`: the policy let it through, something later lost it). Drops of a REJECT reason
//!   whose packet a raw or packet socket had already received are counted there too, flagged
//!   ([`DropReasonKey::delivered_to_socket`]): they are not REJECT records.

use core::mem::size_of;

use crate::FlowKey;

/// `PerCpuHashMap<RejectKey, RejectStats>` of the two window slots.
pub const REJECT_MAPS: [&str; 2] = ["REJECTS_A", "REJECTS_B"];
/// `PerCpuHashMap<DropReasonKey, DropCounters>` of the two window slots.
pub const DROP_MAPS: [&str; 2] = ["DROPS_A", "DROPS_B"];
/// `HashMap<u32, u8>`: ifindexes (in the agent's network namespace) the agent watches. Drops
/// elsewhere are ignored in the kernel, so they cannot fill the maps.
pub const WATCHED_MAP: &str = "WATCHED";
/// The `tp_btf/kfree_skb` program.
pub const PROG_KFREE_SKB: &str = "flowlog_kfree_skb";
/// The global ([`DropConfig`]) the agent fills in before loading.
pub const DROP_CONFIG_GLOBAL: &str = "DROP_CONFIG";

/// Default capacity of each REJECT map: distinct (flow, reason) pairs dropped per window (the
/// agent overrides it with `--max-reject-flows`). A drop that does not fit is never lost: if the
/// TC hook had not counted it, it is overflow of its interface (a SKIPDATA record); if it had,
/// it stays in ACCEPT and is counted in `IfaceCounters::reject_overflow_accept_*`.
pub const MAX_REJECT_FLOWS: u32 = 16_384;
/// Capacity of each other-drops map: (interface, direction, reason) triples per window.
pub const MAX_DROP_REASON_KEYS: u32 = 4_096;

/// Reasons are numbered below this in `enum skb_drop_reason` (about 130 on Linux 6.18);
/// subsystem reasons (`reason >> 16 != 0`) are never REJECT.
pub const MAX_REJECT_REASON: u32 = 256;

/// Key of the REJECT maps: one flow and one drop reason, so each `REJECT` record names exactly
/// one kernel reason for all of its packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RejectKey {
    pub flow: FlowKey,
    /// `enum skb_drop_reason` value.
    pub reason: u32,
}
const _: () = assert!(size_of::<RejectKey>() == 48);

impl RejectKey {
    #[inline(always)]
    pub const fn new(flow: FlowKey, reason: u32) -> Self {
        RejectKey { flow, reason }
    }
}

/// Per-CPU counters of one (flow, reason) in one window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectStats {
    /// Dropped wire packets (a GSO/GRO super-packet counts as its segments) and their IP bytes,
    /// computed exactly as the TC programs compute them.
    pub packets: u64,
    pub bytes: u64,
    /// The part of `packets`/`bytes` that the TC program of the same interface and direction
    /// had already counted before the drop: the agent subtracts it from that flow's ACCEPT.
    pub tc_packets: u64,
    pub tc_bytes: u64,
    /// `bpf_jiffies64()` of the first and last drop on this CPU (0 = none), as the TC programs
    /// stamp packets (see [`FlowStats`](crate::FlowStats)).
    pub first_seen_jiffies: u64,
    pub last_seen_jiffies: u64,
    /// OR of the AWS `tcp-flags` bits of the dropped packets.
    pub tcp_flags: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<RejectStats>() == 56);

/// Key of the other-drops maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropReasonKey {
    pub ifindex: u32,
    pub reason: u32,
    pub direction: u8,
    /// 1: a REJECT-reason drop of a packet a raw or packet socket had already received a copy
    /// of (not a REJECT record, counted apart); 0: a drop for a reason outside the REJECT set.
    pub delivered_to_socket: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<DropReasonKey>() == 12);

impl DropReasonKey {
    #[inline(always)]
    pub const fn new(ifindex: u32, direction: u8, reason: u32) -> Self {
        DropReasonKey {
            ifindex,
            reason,
            direction,
            delivered_to_socket: 0,
            _pad: [0; 2],
        }
    }

    /// The key of a REJECT-reason drop exempted because a socket received a copy of the packet.
    #[inline(always)]
    pub const fn delivered_to_socket(ifindex: u32, direction: u8, reason: u32) -> Self {
        DropReasonKey {
            ifindex,
            reason,
            direction,
            delivered_to_socket: 1,
            _pad: [0; 2],
        }
    }
}

/// Per-CPU counters of dropped packets (IP or not) that are not REJECT records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub packets: u64,
    /// IP bytes for IP packets; 0 for frames that are not IP.
    pub bytes: u64,
}
const _: () = assert!(size_of::<DropCounters>() == 16);

/// What the kfree_skb program needs to know about the running kernel and the agent, written
/// into the object's `DROP_CONFIG` global before it is loaded. Rust eBPF has no CO-RE field
/// relocations, so the `sk_buff` layout comes from the running kernel's BTF, resolved by the
/// agent. All offsets are in bytes from the start of their struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropConfig {
    /// Non-zero once filled in; the program does nothing before.
    pub enabled: u32,
    /// Inode number of the agent's network namespace: ifindexes are per namespace, the
    /// tracepoint fires for all of them.
    pub netns_inum: u32,
    /// `SKB_DROP_REASON_NETFILTER_DROP` on this kernel (see the egress rule in the program).
    pub reason_netfilter_drop: u32,
    /// `sk_buff` members.
    pub skb_dev: u32,
    pub skb_iif: u32,
    pub skb_refdst: u32,
    pub skb_protocol: u32,
    pub skb_network_header: u32,
    pub skb_mac_header: u32,
    pub skb_tail: u32,
    pub skb_end: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_len: u32,
    /// Byte holding the `tc_at_ingress` bit, and the bit's mask within that byte.
    pub skb_tc_at_ingress: u32,
    pub tc_at_ingress_mask: u32,
    /// `net_device.ifindex`, `net_device.nd_net.net`, `net.ns.inum`.
    pub dev_ifindex: u32,
    pub dev_net: u32,
    pub net_inum: u32,
    /// `dst_entry.dev`.
    pub dst_dev: u32,
    /// `skb_shared_info.gso_segs` (the shared info sits at `head + end`).
    pub shinfo_gso_segs: u32,
    /// Byte holding the `cloned` bit, and the bit's mask within that byte.
    pub skb_cloned: u32,
    pub cloned_mask: u32,
    /// Byte holding the 2-bit `fclone` field, its mask within that byte, and
    /// `SKB_FCLONE_CLONE` shifted to that position.
    pub skb_fclone: u32,
    pub fclone_mask: u32,
    pub fclone_clone: u32,
    /// `skb_shared_info.dataref` (`atomic_t`; low 16 bits: references to the data).
    pub shinfo_dataref: u32,
    pub _pad: u32,
    /// Bit n set: reason n is REJECT.
    pub reject_reasons: [u64; 4],
    /// Bit n set: reason n is a policy's decision (a firewall, TC, XDP or cgroup program): such
    /// a drop is REJECT (when in the REJECT set) even if a raw or packet socket had received a
    /// copy of the packet.
    pub policy_reasons: [u64; 4],
}
const _: () = assert!(size_of::<DropConfig>() == 176);

impl DropConfig {
    pub const ZERO: DropConfig = DropConfig {
        enabled: 0,
        netns_inum: 0,
        reason_netfilter_drop: 0,
        skb_dev: 0,
        skb_iif: 0,
        skb_refdst: 0,
        skb_protocol: 0,
        skb_network_header: 0,
        skb_mac_header: 0,
        skb_tail: 0,
        skb_end: 0,
        skb_head: 0,
        skb_data: 0,
        skb_len: 0,
        skb_tc_at_ingress: 0,
        tc_at_ingress_mask: 0,
        dev_ifindex: 0,
        dev_net: 0,
        net_inum: 0,
        dst_dev: 0,
        shinfo_gso_segs: 0,
        skb_cloned: 0,
        cloned_mask: 0,
        skb_fclone: 0,
        fclone_mask: 0,
        fclone_clone: 0,
        shinfo_dataref: 0,
        _pad: 0,
        reject_reasons: [0; 4],
        policy_reasons: [0; 4],
    };

    /// Marks `reason` as REJECT (ignored when out of range).
    pub fn set_reject(&mut self, reason: u32) {
        set_bit(&mut self.reject_reasons, reason);
    }

    /// Marks `reason` as a policy's decision (ignored when out of range).
    pub fn set_policy(&mut self, reason: u32) {
        set_bit(&mut self.policy_reasons, reason);
    }

    #[inline(always)]
    pub fn is_reject(bitmap: &[u64; 4], reason: u32) -> bool {
        if reason >= MAX_REJECT_REASON {
            return false;
        }
        match bitmap.get((reason / 64) as usize) {
            Some(word) => word & (1 << (reason % 64)) != 0,
            None => false,
        }
    }
}

fn set_bit(bitmap: &mut [u64; 4], reason: u32) {
    if reason < MAX_REJECT_REASON {
        bitmap[(reason / 64) as usize] |= 1 << (reason % 64);
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding; every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::RejectKey {}
    unsafe impl aya::Pod for super::RejectStats {}
    unsafe impl aya::Pod for super::DropReasonKey {}
    unsafe impl aya::Pod for super::DropCounters {}
    unsafe impl aya::Pod for super::DropConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_bitmap_round_trips_and_ignores_out_of_range() {
        let mut c = DropConfig::ZERO;
        for r in [0, 12, 63, 64, 127, 255, 256, 70_000] {
            c.set_reject(r);
        }
        for r in [0, 12, 63, 64, 127, 255] {
            assert!(DropConfig::is_reject(&c.reject_reasons, r), "{r}");
        }
        for r in [1, 13, 128, 256, 70_000] {
            assert!(!DropConfig::is_reject(&c.reject_reasons, r), "{r}");
        }
    }
}
