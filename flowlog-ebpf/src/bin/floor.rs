//! Reference programs for the datapath benchmark (`flowlog-bench`), never attached by the agent.
//!
//! They bracket what counting a packet can cost, measured with `BPF_PROG_TEST_RUN` in the same
//! run as the real programs:
//! - [`floor_noop`]: returns at once (the test-run loop and program call overhead);
//! - [`floor_counter`]: one per-CPU array lookup and an increment: the minimal per-CPU counter,
//!   the floor the benchmark's target ratio refers to;
//! - [`floor_hash`]: one per-CPU hash lookup keyed by a 44-byte [`FlowKey`] built without
//!   parsing, and an increment (insert on the first packet): what the flow map alone costs;
//! - [`floor_hash4`]: the same with the compact 20-byte IPv4 key [`FlowKey4`];
//! - [`floor_parse`]: flowlog's own parser and packet reader ([`SkbBytes`]), its result added to a
//!   per-CPU array counter: what parsing alone costs.
//!
//! The parts of flowlog's per-packet work, each added to one of the programs above:
//! - [`floor_window`]: the counter plus a read of a one-element `Array` like `WINDOW`;
//! - [`floor_clock`]: the counter plus `bpf_jiffies64`, the clock flowlog stamps packets with
//!   (inlined by the verifier: one load); [`floor_clock_coarse`] the same with
//!   `bpf_ktime_get_coarse_ns`, the helper call it replaced, for reference;
//! - [`floor_key`]: the parser plus building flowlog's key (the compact [`FlowKey4`] for IPv4,
//!   [`FlowKey`] for IPv6), stored into a per-CPU array (so the build is not optimised away),
//!   no hash map;
//! - [`floor_update`]: parser, key, clock and flowlog's own [`flow::count`] in a per-CPU hash
//!   map per family (pre-filled by the benchmark like the agent's): flowlog without the WINDOW
//!   read and the choice of the slot's maps;
//! - [`floor_update_shared`]: the same on shared (not per-CPU) hash maps, counters added with
//!   atomic adds.
//!
//! For the first packet of a flow (distinct frames, one run each): `floor_update*` on maps with
//! and without `BPF_F_NO_PREALLOC`, and [`floor_insert`], one bare insert of a fresh compact
//! IPv4 key per run (no parsing, no lookup): the floor for a packet that creates a flow.
#![no_std]
#![no_main]
// For `atomic_add`: Rust's core has no atomic read-modify-write on the BPF target.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use flowlog_common::{
    DIR_INGRESS, FAMILY_IPV4, FiveTuple, FlowKey, FlowKey4, FlowStats,
    parse::{Outcome, Parsed, parse_ethernet},
};
use flowlog_ebpf::{
    SkbBytes,
    flow::{self, Packet},
};

#[map]
static FLOOR_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static FLOOR_FLOWS: PerCpuHashMap<FlowKey, u64> = PerCpuHashMap::with_max_entries(1024, 0);
#[map]
static FLOOR_FLOWS4: PerCpuHashMap<FlowKey4, u64> = PerCpuHashMap::with_max_entries(1024, 0);

/// Like flowlog's WINDOW: element 0 is the active slot.
#[map]
static FLOOR_WINDOW: Array<u32> = Array::with_max_entries(1, 0);

/// Where `floor_key` stores the key it built.
#[map]
static FLOOR_KEY: PerCpuArray<FlowKey> = PerCpuArray::with_max_entries(1, 0);
#[map]
static FLOOR_KEY4: PerCpuArray<FlowKey4> = PerCpuArray::with_max_entries(1, 0);

/// Flow maps of the `update` and `insert` floors, one per family as flowlog's, resized and
/// pre-filled by the benchmark.
#[map]
static FLOOR_UPDATE: PerCpuHashMap<FlowKey, FlowStats> = PerCpuHashMap::with_max_entries(1024, 0);
#[map]
static FLOOR_UPDATE4: PerCpuHashMap<FlowKey4, FlowStats> = PerCpuHashMap::with_max_entries(1024, 0);
#[map]
static FLOOR_UPDATE_NOPREALLOC: PerCpuHashMap<FlowKey, FlowStats> =
    PerCpuHashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
#[map]
static FLOOR_UPDATE4_NOPREALLOC: PerCpuHashMap<FlowKey4, FlowStats> =
    PerCpuHashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
#[map]
static FLOOR_SHARED: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(1024, 0);
#[map]
static FLOOR_SHARED4: HashMap<FlowKey4, FlowStats> = HashMap::with_max_entries(1024, 0);
#[map]
static FLOOR_SHARED_NOPREALLOC: HashMap<FlowKey, FlowStats> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
#[map]
static FLOOR_SHARED4_NOPREALLOC: HashMap<FlowKey4, FlowStats> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
#[map]
static FLOOR_INSERT: PerCpuHashMap<FlowKey4, FlowStats> = PerCpuHashMap::with_max_entries(1024, 0);

#[classifier]
pub fn floor_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_counter(_ctx: TcContext) -> i32 {
    bump_count(1);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_hash(ctx: TcContext) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; SCHED_CLS may read ifindex.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let tuple = FiveTuple {
        family: FAMILY_IPV4,
        protocol: 17,
        src_addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
        dst_addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2],
        src_port: 1234,
        dst_port: 53,
    };
    let key = FlowKey::new(ifindex, DIR_INGRESS, &tuple);
    match FLOOR_FLOWS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value of a per-CPU map: no other writer.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = FLOOR_FLOWS.insert(&key, &1, BPF_NOEXIST as u64);
        }
    }
    TC_ACT_UNSPEC
}

/// [`floor_hash`] with the compact 20-byte IPv4 key: what the key's size costs the lookup.
#[classifier]
pub fn floor_hash4(ctx: TcContext) -> i32 {
    let tuple = FiveTuple {
        family: FAMILY_IPV4,
        protocol: 17,
        src_addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
        dst_addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2],
        src_port: 1234,
        dst_port: 53,
    };
    let key = FlowKey4::new(ifindex(&ctx), DIR_INGRESS, &tuple);
    match FLOOR_FLOWS4.get_ptr_mut(&key) {
        // SAFETY: this CPU's value of a per-CPU map: no other writer.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = FLOOR_FLOWS4.insert(&key, &1, BPF_NOEXIST as u64);
        }
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_parse(ctx: TcContext) -> i32 {
    // The parse result feeds the counter so the compiler cannot drop the parse.
    if let Outcome::Flow(p) = parse_ethernet(&SkbBytes::new(&ctx)) {
        bump_count(u64::from(p.ip_len));
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_window(_ctx: TcContext) -> i32 {
    let slot = match FLOOR_WINDOW.get(0) {
        Some(&s) => s & 1,
        None => 0,
    };
    bump_count(u64::from(slot) + 1);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_clock(_ctx: TcContext) -> i32 {
    // SAFETY: clock helper, no arguments.
    bump_count(unsafe { bpf_jiffies64() });
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_clock_coarse(_ctx: TcContext) -> i32 {
    // SAFETY: clock helper, no arguments.
    bump_count(unsafe { bpf_ktime_get_coarse_ns() });
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_key(ctx: TcContext) -> i32 {
    if let Outcome::Flow(p) = parse_ethernet(&SkbBytes::new(&ctx)) {
        if p.tuple.family == FAMILY_IPV4 {
            if let Some(slot) = FLOOR_KEY4.get_ptr_mut(0) {
                // SAFETY: this CPU's element of a per-CPU array: no other writer.
                unsafe { *slot = FlowKey4::new(ifindex(&ctx), DIR_INGRESS, &p.tuple) };
            }
        } else if let Some(slot) = FLOOR_KEY.get_ptr_mut(0) {
            // SAFETY: as above.
            unsafe { *slot = FlowKey::new(ifindex(&ctx), DIR_INGRESS, &p.tuple) };
        }
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_update(ctx: TcContext) -> i32 {
    match parse_key_clock(&ctx) {
        Some((Key::V4(k), p)) => {
            let _ = flow::count(&FLOOR_UPDATE4, &k, p);
        }
        Some((Key::V6(k), p)) => {
            let _ = flow::count(&FLOOR_UPDATE, &k, p);
        }
        None => {}
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_update_noprealloc(ctx: TcContext) -> i32 {
    match parse_key_clock(&ctx) {
        Some((Key::V4(k), p)) => {
            let _ = flow::count(&FLOOR_UPDATE4_NOPREALLOC, &k, p);
        }
        Some((Key::V6(k), p)) => {
            let _ = flow::count(&FLOOR_UPDATE_NOPREALLOC, &k, p);
        }
        None => {}
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_update_shared(ctx: TcContext) -> i32 {
    match parse_key_clock(&ctx) {
        Some((Key::V4(k), p)) => count_shared(&FLOOR_SHARED4, &k, p),
        Some((Key::V6(k), p)) => count_shared(&FLOOR_SHARED, &k, p),
        None => {}
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn floor_update_shared_noprealloc(ctx: TcContext) -> i32 {
    match parse_key_clock(&ctx) {
        Some((Key::V4(k), p)) => count_shared(&FLOOR_SHARED4_NOPREALLOC, &k, p),
        Some((Key::V6(k), p)) => count_shared(&FLOOR_SHARED_NOPREALLOC, &k, p),
        None => {}
    }
    TC_ACT_UNSPEC
}

/// One insert of a key no run used before (a per-CPU run counter in its ports and source
/// address), nothing else: what creating a flow costs at the least.
#[classifier]
pub fn floor_insert(ctx: TcContext) -> i32 {
    let Some(n) = FLOOR_COUNT.get_ptr_mut(0) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: this CPU's element of a per-CPU array: no other writer.
    let n = unsafe {
        *n += 1;
        *n
    };
    let b = (n as u32).to_be_bytes();
    let tuple = FiveTuple {
        family: FAMILY_IPV4,
        protocol: 17,
        src_addr: [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, b[1], b[2], b[3],
        ],
        dst_addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, b[0]],
        src_port: n as u16,
        dst_port: 53,
    };
    let key = FlowKey4::new(ifindex(&ctx), DIR_INGRESS, &tuple);
    let fresh = FlowStats {
        packets: 1,
        bytes: 100,
        first_seen_jiffies: n,
        last_seen_jiffies: n,
        tcp_flags: 0,
        _pad: [0; 7],
    };
    let _ = FLOOR_INSERT.insert(&key, &fresh, BPF_NOEXIST as u64);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; SCHED_CLS may read ifindex.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// flowlog's key of a packet: compact for IPv4.
enum Key {
    V4(FlowKey4),
    V6(FlowKey),
}

/// What `count_packet` does before its map operations (without GSO: a test-run frame is one
/// packet): parse, build the key, read the clock.
#[inline(always)]
fn parse_key_clock(ctx: &TcContext) -> Option<(Key, Packet)> {
    let Outcome::Flow(Parsed {
        tuple,
        tcp_flags,
        ip_len,
        ..
    }) = parse_ethernet(&SkbBytes::new(ctx))
    else {
        return None;
    };
    // flowlog's clock. SAFETY: clock helper, no arguments.
    let now = unsafe { bpf_jiffies64() };
    let key = if tuple.family == FAMILY_IPV4 {
        Key::V4(FlowKey4::new(ifindex(ctx), DIR_INGRESS, &tuple))
    } else {
        Key::V6(FlowKey::new(ifindex(ctx), DIR_INGRESS, &tuple))
    };
    Some((
        key,
        Packet {
            packets: 1,
            bytes: u64::from(ip_len),
            now,
            tcp_flags,
        },
    ))
}

/// [`flow::count`] for a map shared by all CPUs: the counters are added atomically (a plain
/// `+=` would lose counts when two CPUs add to one flow at once); first/last seen and the
/// flags are plain stores, as a floor may have them.
#[inline(always)]
fn count_shared<K>(flows: &HashMap<K, FlowStats>, key: &K, p: Packet) {
    if let Some(s) = flows.get_ptr_mut(key) {
        // SAFETY: a pointer to the map value, valid for this program run; the counters are
        // only ever changed through atomics.
        unsafe {
            atomic_add(&raw mut (*s).packets, p.packets);
            atomic_add(&raw mut (*s).bytes, p.bytes);
            (*s).last_seen_jiffies = p.now;
            (*s).tcp_flags |= p.tcp_flags;
        }
        return;
    }
    // A lost race (EEXIST) would add to the flow another CPU created; a floor may skip that.
    let _ = flows.insert(key, &p.first_stats(), BPF_NOEXIST as u64);
}

/// `lock *(u64 *)(ptr + 0) += v`: BPF's atomic add, what C's `__sync_fetch_and_add` compiles
/// to when its result is unused (BPF_XADD; any kernel and CPU version).
///
/// # Safety
/// `ptr` points to a u64 in a map value the verifier allows this program to write.
#[inline(always)]
unsafe fn atomic_add(ptr: *mut u64, v: u64) {
    // SAFETY: see the function's contract; the instruction writes only `*ptr`.
    unsafe {
        core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) ptr, in(reg) v);
    }
}

#[inline(always)]
fn bump_count(n: u64) {
    if let Some(c) = FLOOR_COUNT.get_ptr_mut(0) {
        // SAFETY: this CPU's element of a per-CPU array: no other writer.
        unsafe { *c += n };
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
