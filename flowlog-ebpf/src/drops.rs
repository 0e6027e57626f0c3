//! Drops become REJECT: a BTF tracepoint on `skb:kfree_skb` attributes every packet the kernel
//! drops on a watched interface to its flow (the TC programs' key: interface, direction,
//! 5-tuple) with the kernel's drop reason.
//!
//! `kfree_skb` fires only for real drops (since 5.17 freeing a consumed skb goes through
//! `consume_skb` / its own tracepoint), so this program runs once per dropped packet, not per
//! packet: its cost does not scale with the traffic.
//!
//! Rust eBPF has no CO-RE field relocations, so every `sk_buff` (and `net_device`,
//! `dst_entry`, ...) member is read with `bpf_probe_read_kernel` at an offset the agent
//! resolved from the running kernel's BTF and wrote into [`DROP_CONFIG`] before loading.
//!
//! # Which interface and direction
//!
//! - *Ingress*: the receive path sets `skb->skb_iif = skb->dev->ifindex` on entry to
//!   `__netif_receive_skb_core`, and the stack keeps `skb->dev` = the receiving device up to
//!   the socket (PREROUTING, INPUT, FORWARD, TCP/UDP demux). So a drop with
//!   `dev->ifindex == skb_iif` is on the receive path of `dev`.
//! - *Egress*, otherwise: a forwarded packet has `dev` = the output device (set by
//!   `ip_output`, so `!= skb_iif`); a locally generated one has `skb_iif == 0`. Before
//!   `ip_output` sets `dev` (e.g. an nftables OUTPUT drop) `dev` is NULL: the route is already
//!   chosen, so the interface is `skb_dst(skb)->dev` (`_skb_refdst` without its NOREF bit).
//!
//! # Did the TC program already count it? (`tc_packets`)
//!
//! The agent emits ACCEPT = packets TC saw − packets TC saw that were then dropped. Only drops
//! *after* the TC hook of the same interface and direction are subtracted:
//! - Ingress: the kernel sets `skb->tc_at_ingress` when the skb enters the TC ingress hook of a
//!   device that has TC programs (every watched device has ours), and only the transmit path
//!   clears it. Drops before that hook (generic XDP, the per-CPU backlog) see it clear.
//! - Egress: `__dev_queue_xmit` resets the MAC header (`mac_header = data - head`) right before
//!   the TC egress hook; every earlier drop (OUTPUT, POSTROUTING, cgroup egress, neighbour
//!   resolution) has `mac_header` unset (locally generated) or still pointing at the received
//!   frame's header (forwarded), never equal to `data - head`. The one hook between that reset
//!   and TC egress is netfilter's netdev egress hook, which reports NETFILTER_DROP: excluded.
//!
//! # Received by a raw or packet socket: never REJECT
//!
//! Root's `ping` in a namespace (`net.ipv4.ping_group_range` = `1 0`) uses a raw ICMP socket:
//! `raw_local_deliver` clones each echo reply to it (`skb_clone`), then `icmp_rcv` →
//! `ping_rcv` finds no ping socket and frees the original with NO_SOCKET. The same happens to
//! UDP or TCP while a raw socket of that protocol is open, and a non-mmap `AF_PACKET` socket
//! (e.g. a DHCP client's) gets its copy the same way in `packet_rcv`. Such a drop, for a REJECT
//! reason that is not a policy's (`policy_reasons`: those happen before local delivery or are a
//! cgroup program's verdict, and a sniffer must not turn them into ACCEPT), is counted apart,
//! flagged, and stays ACCEPT. An ingress drop counts as "a socket holds a copy" when:
//! - `cloned`: `skb_clone` set it on the original; the receive path never clears it (only
//!   `pskb_expand_head` does, when a handler needs a private head: then the drop is REJECT);
//! - `fclone != SKB_FCLONE_CLONE`: TCP transmits its fast-clone companion, which crosses a veth
//!   still marked cloned; a clone made on the receive path is never that companion;
//! - `dataref > 1`: the copy still exists. Without this, skbs the sender cloned for its own
//!   reasons would pass, e.g. the first packet to an unresolved neighbour (the ARP solicitation
//!   clones it; seen in the closed-port test) or a tap on the sender's device. The drop follows
//!   the delivery within the same softirq, so the socket's reader has had no chance to take
//!   its copy yet; if an interrupt delays the handler that long, the drop is REJECT.
//!
//! Left as they are: a sender-side copy still alive at the drop (a non-mmap tap on the
//! sending device, or a TCP segment whose fast clone was busy) is exempted, and shows in the
//! delivered-to-socket metric. Rejected: `fexit` on `raw_local_deliver` (exact, but a
//! trampoline on every local delivery, and refused on kernels that restrict ftrace, such as
//! this project's test VM).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_jiffies64, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use flowlog_common::{
    DIR_EGRESS, DIR_INGRESS, DropConfig, DropCounters, DropReasonKey, FlowKey, IfaceCounters,
    IfaceKey, MAX_DROP_REASON_KEYS, MAX_IFACES, MAX_REJECT_FLOWS, RejectKey, RejectStats,
    parse::{Outcome, PacketBytes, parse_l3},
};

/// Per window slot: dropped packets whose reason is REJECT, per flow and reason.
#[map]
static REJECTS_A: PerCpuHashMap<RejectKey, RejectStats> =
    PerCpuHashMap::with_max_entries(MAX_REJECT_FLOWS, 0);
#[map]
static REJECTS_B: PerCpuHashMap<RejectKey, RejectStats> =
    PerCpuHashMap::with_max_entries(MAX_REJECT_FLOWS, 0);

/// Per window slot: every other drop on a watched interface, per (interface, direction,
/// reason), and REJECT-reason drops of frames that are not IP flows.
#[map]
static DROPS_A: PerCpuHashMap<DropReasonKey, DropCounters> =
    PerCpuHashMap::with_max_entries(MAX_DROP_REASON_KEYS, 0);
#[map]
static DROPS_B: PerCpuHashMap<DropReasonKey, DropCounters> =
    PerCpuHashMap::with_max_entries(MAX_DROP_REASON_KEYS, 0);

/// Cumulative: drops the other-drops map had no room for (should stay zero; a metric).
#[map]
static DROPS_UNCOUNTED: PerCpuArray<DropCounters> = PerCpuArray::with_max_entries(1, 0);

/// Ifindexes the agent watches (value unused). Maintained by the agent as it attaches.
#[map]
static WATCHED: HashMap<u32, u8> = HashMap::with_max_entries(MAX_IFACES, 0);

/// Filled in by the agent before loading (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static DROP_CONFIG: DropConfig = DropConfig::ZERO;

const EEXIST: i32 = 17;
/// `mac_header` value of an skb whose MAC header was never set.
const MAC_HEADER_UNSET: u16 = 0xffff;

/// `tp_btf/kfree_skb`: `(struct sk_buff *skb, void *location, enum skb_drop_reason reason,
/// ...)`. The agent checked the prototype in BTF before loading this program.
#[btf_tracepoint(function = "kfree_skb")]
pub fn flowlog_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let reason: u64 = ctx.arg(2);
    let _ = on_drop(skb, reason as u32);
    0
}

/// Reads one config field. Volatile: the value is patched into the object after compilation,
/// so the compiler must not fold the initial zero.
macro_rules! config {
    ($field:ident) => {
        // SAFETY: a plain read of a field of an initialised static.
        unsafe { core::ptr::read_volatile(&DROP_CONFIG.$field) }
    };
}

/// Whether `reason` has its bit set in the config bitmap `$field` (`reject_reasons` or
/// `policy_reasons`); reasons >= 256 never have.
macro_rules! bit_set {
    ($field:ident, $reason:expr) => {{
        let reason: u32 = $reason;
        // One constant-index read per word: a variable index into the array would need a
        // bounds check whose panic path (an infinite loop) the verifier rejects.
        // SAFETY: plain reads of fields of an initialised static (see `config!`).
        let word = match reason / 64 {
            0 => unsafe { core::ptr::read_volatile(&DROP_CONFIG.$field[0]) },
            1 => unsafe { core::ptr::read_volatile(&DROP_CONFIG.$field[1]) },
            2 => unsafe { core::ptr::read_volatile(&DROP_CONFIG.$field[2]) },
            3 => unsafe { core::ptr::read_volatile(&DROP_CONFIG.$field[3]) },
            _ => 0,
        };
        word & (1 << (reason % 64)) != 0
    }};
}

/// Reads a `T` at kernel address `base + offset`.
#[inline(always)]
fn kread<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly on a bad one.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// The packet's linear bytes from the IP header on, read with `bpf_probe_read_kernel`.
/// `limit` is the linear length after the IP header (`tail - network_header`): the stack
/// keeps the headers it has parsed in the linear area, and nothing past it is read.
struct KernelBytes {
    base: u64,
    limit: usize,
}

impl PacketBytes for KernelBytes {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if offset > self.limit || N > self.limit - offset {
            return None;
        }
        // SAFETY: see `kread`; the size is the constant N.
        unsafe { bpf_probe_read_kernel((self.base + offset as u64) as *const [u8; N]).ok() }
    }
}

#[inline(always)]
fn on_drop(skb: u64, reason: u32) -> Option<()> {
    if config!(enabled) == 0 || skb == 0 {
        return None;
    }
    let (ifindex, direction, dev) = attribute(skb)?;
    // ifindexes are per network namespace; the tracepoint sees all of them.
    let net: u64 = kread(dev, config!(dev_net))?;
    let inum: u32 = kread(net, config!(net_inum))?;
    if inum != config!(netns_inum) {
        return None;
    }
    // SAFETY: only presence matters; the value is not read.
    unsafe { WATCHED.get(&ifindex) }?;

    // Jiffies, as the TC programs stamp packets: every stamp in every map is in one unit, which
    // the agent converts once (a base helper, allowed in tracing programs).
    // SAFETY: clock helper, no arguments.
    let now = unsafe { bpf_jiffies64() };
    let slot = match crate::WINDOW.get(0) {
        Some(&s) => s & 1,
        None => 0,
    };
    let Some(pkt) = parse(skb) else {
        // Not an IP flow (ARP, truncated headers): no record to make, but the drop is counted.
        count_other(slot, &DropReasonKey::new(ifindex, direction, reason), 1, 0);
        return None;
    };
    if !bit_set!(reject_reasons, reason) {
        count_other(
            slot,
            &DropReasonKey::new(ifindex, direction, reason),
            pkt.packets,
            pkt.bytes,
        );
        return Some(());
    }
    if direction == DIR_INGRESS
        && !bit_set!(policy_reasons, reason)
        && copy_delivered_to_socket(skb).unwrap_or(false)
    {
        count_other(
            slot,
            &DropReasonKey::delivered_to_socket(ifindex, direction, reason),
            pkt.packets,
            pkt.bytes,
        );
        return Some(());
    }
    // An unreadable field means "not seen by TC": the drop is still a REJECT record.
    let counted_by_tc = if direction == DIR_INGRESS {
        let bits: u8 = kread(skb, config!(skb_tc_at_ingress)).unwrap_or(0);
        bits as u32 & config!(tc_at_ingress_mask) != 0
    } else {
        reason != config!(reason_netfilter_drop) && in_dev_queue_xmit(skb).unwrap_or(false)
    };
    let key = RejectKey::new(FlowKey::new(ifindex, direction, &pkt.tuple), reason);
    let (tc_packets, tc_bytes) = if counted_by_tc {
        (pkt.packets, pkt.bytes)
    } else {
        (0, 0)
    };
    count_reject(slot, &key, &pkt, tc_packets, tc_bytes, now);
    Some(())
}

/// Whether a socket on this host's receive path holds a copy of `skb`: `cloned`, not TCP's
/// fast clone made by the sender, and the copy still alive (see the module comment).
#[inline(always)]
fn copy_delivered_to_socket(skb: u64) -> Option<bool> {
    let cloned: u8 = kread(skb, config!(skb_cloned))?;
    if cloned as u32 & config!(cloned_mask) == 0 {
        return Some(false);
    }
    let fclone: u8 = kread(skb, config!(skb_fclone))?;
    if fclone as u32 & config!(fclone_mask) == config!(fclone_clone) {
        return Some(false);
    }
    let head: u64 = kread(skb, config!(skb_head))?;
    let end: u32 = kread(skb, config!(skb_end))?;
    let dataref: u32 = kread(head + end as u64, config!(shinfo_dataref))?;
    // Low 16 bits: all references to the data (the high half counts payload-only ones).
    Some(dataref & 0xffff > 1)
}

/// (ifindex, direction, device) the drop belongs to; see the module comment.
#[inline(always)]
fn attribute(skb: u64) -> Option<(u32, u8, u64)> {
    let dev: u64 = kread(skb, config!(skb_dev))?;
    if dev != 0 {
        let ifindex: u32 = kread(dev, config!(dev_ifindex))?;
        let iif: u32 = kread(skb, config!(skb_iif))?;
        let direction = if iif != 0 && iif == ifindex {
            DIR_INGRESS
        } else {
            DIR_EGRESS
        };
        return Some((ifindex, direction, dev));
    }
    // Low bit of _skb_refdst: SKB_DST_NOREF.
    let dst = kread::<u64>(skb, config!(skb_refdst))? & !1;
    if dst == 0 {
        return None;
    }
    let dev: u64 = kread(dst, config!(dst_dev))?;
    if dev == 0 {
        return None;
    }
    let ifindex: u32 = kread(dev, config!(dev_ifindex))?;
    Some((ifindex, DIR_EGRESS, dev))
}

/// True once `__dev_queue_xmit` has reset the MAC header to where the data starts.
#[inline(always)]
fn in_dev_queue_xmit(skb: u64) -> Option<bool> {
    let mac: u16 = kread(skb, config!(skb_mac_header))?;
    let head: u64 = kread(skb, config!(skb_head))?;
    let data: u64 = kread(skb, config!(skb_data))?;
    Some(mac != MAC_HEADER_UNSET && data >= head && mac as u64 == data - head)
}

struct DroppedPacket {
    tuple: flowlog_common::FiveTuple,
    tcp_flags: u8,
    packets: u64,
    bytes: u64,
}

/// Parses the dropped skb from its network header, and sizes it as the TC programs do: one
/// packet of the IP length, or `gso_segs` packets with their repeated headers.
// Not inlined: the parser's header buffers get their own stack frame, released before the
// map updates run (inlined, the combined frame exceeds BPF's 512-byte stack).
#[inline(never)]
fn parse(skb: u64) -> Option<DroppedPacket> {
    let head: u64 = kread(skb, config!(skb_head))?;
    let nh: u16 = kread(skb, config!(skb_network_header))?;
    let tail: u32 = kread(skb, config!(skb_tail))?;
    let proto: u16 = kread(skb, config!(skb_protocol))?;
    if head == 0 || nh == MAC_HEADER_UNSET || tail < nh as u32 {
        return None;
    }
    let bytes = KernelBytes {
        base: head + nh as u64,
        limit: (tail - nh as u32) as usize,
    };
    let parsed = match parse_l3(&bytes, 0, u16::from_be(proto)) {
        Outcome::Flow(p) => p,
        Outcome::NotIp | Outcome::Malformed => return None,
    };
    let end: u32 = kread(skb, config!(skb_end))?;
    let segs: u16 = kread(head + end as u64, config!(shinfo_gso_segs)).unwrap_or(0);
    let (packets, bytes) = if segs > 1 {
        let data: u64 = kread(skb, config!(skb_data))?;
        let len: u32 = kread(skb, config!(skb_len))?;
        // skb->len counts from skb->data, which may sit before (L2 pushed) or after (pulled
        // to L4) the IP header.
        let l3_len = (len as u64 + data.saturating_sub(head)).saturating_sub(nh as u64);
        (
            segs as u64,
            l3_len + (segs as u64 - 1) * parsed.header_len as u64,
        )
    } else {
        (1, parsed.ip_len as u64)
    };
    Some(DroppedPacket {
        tuple: parsed.tuple,
        tcp_flags: parsed.tcp_flags,
        packets,
        bytes,
    })
}

#[inline(always)]
fn count_reject(
    slot: u32,
    key: &RejectKey,
    p: &DroppedPacket,
    tc_packets: u64,
    tc_bytes: u64,
    now: u64,
) {
    let map = if slot == 0 { &REJECTS_A } else { &REJECTS_B };
    let add = |s: *mut RejectStats| {
        // SAFETY: this CPU's value of a per-CPU map. A nested run on this CPU is impossible:
        // the kernel skips a tracing program that is already running on the CPU.
        let s = unsafe { &mut *s };
        if s.first_seen_jiffies == 0 {
            s.first_seen_jiffies = now;
        }
        s.packets += p.packets;
        s.bytes += p.bytes;
        s.tc_packets += tc_packets;
        s.tc_bytes += tc_bytes;
        s.last_seen_jiffies = now;
        s.tcp_flags |= p.tcp_flags;
    };
    if let Some(s) = map.get_ptr_mut(key) {
        add(s);
        return;
    }
    let fresh = RejectStats {
        packets: p.packets,
        bytes: p.bytes,
        tc_packets,
        tc_bytes,
        first_seen_jiffies: now,
        last_seen_jiffies: now,
        tcp_flags: p.tcp_flags,
        _pad: [0; 7],
    };
    match map.insert(key, &fresh, BPF_NOEXIST as u64) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => match map.get_ptr_mut(key) {
            Some(s) => add(s),
            None => overflow(slot, key, p, tc_packets, tc_bytes),
        },
        // Map full: into the interface's ledger, never evicting another entry.
        Err(_) => overflow(slot, key, p, tc_packets, tc_bytes),
    }
}

/// A REJECT that did not fit, counted once: the part the TC hook had not counted where the TC
/// programs count flows that do not fit (a SKIPDATA record), the part it had counted (already
/// in ACCEPT) in its own counter, so no packet is both ACCEPT and SKIPDATA.
#[inline(always)]
fn overflow(slot: u32, key: &RejectKey, p: &DroppedPacket, tc_packets: u64, tc_bytes: u64) {
    let map = if slot == 0 {
        &crate::IFACE_A
    } else {
        &crate::IFACE_B
    };
    let iface = IfaceKey::new(key.flow.ifindex, key.flow.direction);
    let ptr = match map.get_ptr_mut(&iface) {
        Some(c) => Some(c),
        None => {
            let _ = map.insert(&iface, &IfaceCounters::default(), BPF_NOEXIST as u64);
            map.get_ptr_mut(&iface)
        }
    };
    let ptr = match ptr {
        Some(c) => Some(c),
        None => crate::LOST.get_ptr_mut(slot),
    };
    if let Some(c) = ptr {
        // SAFETY: this CPU's value of a per-CPU map.
        let c = unsafe { &mut *c };
        c.overflow_packets += p.packets.saturating_sub(tc_packets);
        c.overflow_bytes += p.bytes.saturating_sub(tc_bytes);
        c.reject_overflow_accept_packets += tc_packets;
        c.reject_overflow_accept_bytes += tc_bytes;
    }
}

#[inline(always)]
fn count_other(slot: u32, key: &DropReasonKey, packets: u64, bytes: u64) {
    let map = if slot == 0 { &DROPS_A } else { &DROPS_B };
    let ptr = match map.get_ptr_mut(key) {
        Some(c) => Some(c),
        None => {
            let _ = map.insert(key, &DropCounters::default(), BPF_NOEXIST as u64);
            map.get_ptr_mut(key)
        }
    };
    let ptr = match ptr {
        Some(c) => Some(c),
        None => DROPS_UNCOUNTED.get_ptr_mut(0),
    };
    if let Some(c) = ptr {
        // SAFETY: this CPU's value of a per-CPU map.
        let c = unsafe { &mut *c };
        c.packets += packets;
        c.bytes += bytes;
    }
}
