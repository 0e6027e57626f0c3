//! Reference programs for the datapath benchmark (`flowlog-bench`), never attached by the agent.
//!
//! They bracket what counting a packet can cost, measured with `BPF_PROG_TEST_RUN` in the same
//! run as the real programs:
//! - [`floor_noop`]: returns at once (the test-run loop and program call overhead);
//! - [`floor_counter`]: one per-CPU array lookup and an increment: the minimal per-CPU counter,
//!   the floor the benchmark's target ratio refers to;
//! - [`floor_hash`]: one per-CPU hash lookup keyed by a 44-byte [`FlowKey`] built without
//!   parsing, and an increment (insert on the first packet): what the flow map alone costs;
//! - [`floor_parse`]: flowlog's own parser and packet reader ([`SkbBytes`]), its result added to a
//!   per-CPU array counter: what parsing alone costs.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_UNSPEC},
    macros::{classifier, map},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use flowlog_common::{
    DIR_INGRESS, FAMILY_IPV4, FiveTuple, FlowKey,
    parse::{Outcome, parse_ethernet},
};
use flowlog_ebpf::SkbBytes;

#[map]
static FLOOR_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static FLOOR_FLOWS: PerCpuHashMap<FlowKey, u64> = PerCpuHashMap::with_max_entries(1024, 0);

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

#[classifier]
pub fn floor_parse(ctx: TcContext) -> i32 {
    // The parse result feeds the counter so the compiler cannot drop the parse.
    if let Outcome::Flow(p) = parse_ethernet(&SkbBytes::new(&ctx)) {
        bump_count(u64::from(p.ip_len));
    }
    TC_ACT_UNSPEC
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
