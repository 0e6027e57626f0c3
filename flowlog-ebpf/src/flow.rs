//! Adding one packet to a flow's per-CPU counters: shared by the datapath (`flowlog-ebpf`) and
//! the benchmark's `update` floor programs, so the floor measures the very code that counts.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::PerCpuHashMap};
use flowlog_common::FlowStats;

const EEXIST: i32 = 17;

/// What one packet adds to its flow.
#[derive(Clone, Copy)]
pub struct Packet {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_jiffies64()` of the packet (never 0).
    pub now: u64,
    pub tcp_flags: u8,
}

impl Packet {
    /// The value of a flow whose first packet this is.
    #[inline(always)]
    pub fn first_stats(&self) -> FlowStats {
        FlowStats {
            packets: self.packets,
            bytes: self.bytes,
            first_seen_jiffies: self.now,
            last_seen_jiffies: self.now,
            tcp_flags: self.tcp_flags,
            _pad: [0; 7],
        }
    }
}

/// The map had no room for a new flow (E2BIG, out of memory): the caller puts the packet in
/// the overflow ledger, never evicting another flow.
pub struct NoRoom;

/// Adds `p` to `key`'s flow in `flows`: one lookup on a hit; on the first packet one insert of
/// the initialised value (`BPF_NOEXIST`), and a second lookup only if another CPU created the
/// flow in between.
///
/// Each call site must name one map: a call instruction that sees two maps (a map pointer
/// chosen at run time) makes the verifier fall back from the inlined per-CPU hash lookup to the
/// generic helper and an indirect call.
#[inline(always)]
pub fn count<K>(flows: &PerCpuHashMap<K, FlowStats>, key: &K, p: Packet) -> Result<(), NoRoom> {
    if let Some(stats) = flows.get_ptr_mut(key) {
        add(stats, p);
        return Ok(());
    }
    match flows.insert(key, &p.first_stats(), BPF_NOEXIST as u64) {
        Ok(()) => Ok(()),
        // Another CPU created the flow between our lookup and insert: add to our CPU's slot.
        Err(e) if e == -EEXIST => match flows.get_ptr_mut(key) {
            Some(stats) => {
                add(stats, p);
                Ok(())
            }
            None => Err(NoRoom),
        },
        Err(_) => Err(NoRoom),
    }
}

#[inline(always)]
fn add(stats: *mut FlowStats, p: Packet) {
    // SAFETY: a pointer into this CPU's value of a per-CPU map: no other writer.
    let s = unsafe { &mut *stats };
    if s.first_seen_jiffies == 0 {
        // The flow was created on another CPU; this CPU's copy starts empty.
        s.first_seen_jiffies = p.now;
    }
    s.packets += p.packets;
    s.bytes += p.bytes;
    s.last_seen_jiffies = p.now;
    s.tcp_flags |= p.tcp_flags;
}
