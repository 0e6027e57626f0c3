//! The kernel side: one capture for every flow log.
//!
//! - [`object`]: the embedded eBPF object.
//! - [`attach`]: load it and attach the TC programs, once per interface (where a packet is
//!   counted: `flowlog-ebpf/src/main.rs`).
//! - [`collect`]: where a window is cut (flip the active slot, drain and clear the other).
//! - [`pins`]: pinned maps and links, so a restarted agent adopts them without a gap.
//! - [`clock`]: window boundaries on the wall clock, and the kernel's monotonic clock.
//! - [`reject`]: the REJECT feature, from the kernel's drops to ACCEPT/REJECT verdicts.
//! - [`window_metrics`]: what each cut counted, as metrics.

pub mod attach;
pub mod clock;
pub mod collect;
pub mod map_batch;
pub mod object;
pub mod pins;
pub mod reject;
pub mod window_metrics;
