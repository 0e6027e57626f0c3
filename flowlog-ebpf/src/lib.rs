//! Code shared by flowlog's eBPF programs (`flowlog-ebpf`) and the benchmark's reference
//! programs (`flowlog-floor`), so the benchmark measures the very reader the datapath uses.
#![no_std]

use aya_ebpf::programs::TcContext;
use flowlog_common::parse::PacketBytes;

/// Reads packet bytes straight from the skb's linear data when the bytes are there (nearly
/// always for headers), else with `bpf_skb_load_bytes`, which also reaches paged data.
/// `start`/`end` are read from the context once per packet; `bpf_skb_load_bytes` does not move
/// packet data, so they stay valid across fallbacks.
pub struct SkbBytes<'a> {
    ctx: &'a TcContext,
    start: usize,
    end: usize,
}

impl<'a> SkbBytes<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        SkbBytes {
            ctx,
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }
}

impl PacketBytes for SkbBytes<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // The parser's offsets are bounded (IHL, two VLAN tags, at most six IPv6 extension
        // headers), so the verifier can check this pointer comparison against data_end.
        let at = self.start + offset;
        if at + N <= self.end {
            // SAFETY: `at..at + N` lies inside the packet's linear data, checked just above.
            return Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) });
        }
        self.ctx.load::<[u8; N]>(offset).ok()
    }
}

pub mod flow;
