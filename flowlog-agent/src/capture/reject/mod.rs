//! REJECT: flows the kernel dropped for a policy's reason, in one place.
//!
//! - Kernel side: the `skb:kfree_skb` program in `flowlog-ebpf/src/drops.rs`, with the map
//!   types it shares with the agent in `flowlog-common/src/drops.rs`.
//! - [`btf`]: the running kernel's BTF, read for the `sk_buff` offsets and the drop reasons the
//!   program needs.
//! - [`reasons`]: the kernel's drop reasons by name, and which of them are REJECT.
//! - [`drops`]: preparing, loading and attaching the program, keeping its watched interfaces in
//!   step, and the per-window drop metrics.
//! - [`verdict`]: how one window's TC counts and drop counts become ACCEPT and REJECT.

pub mod btf;
pub mod drops;
pub mod reasons;
pub mod verdict;
