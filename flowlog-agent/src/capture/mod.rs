//! The kernel side: one capture for every flow log.
//!
//! - [`object`]: the embedded eBPF object.
//! - [`attach`]: load it and attach the TC programs, once per interface (where a packet is
//!   counted: `flowlog-ebpf/src/main.rs`).
//! - [`attach_limits`]: the limits many interfaces reach (open files), named in one line.
//! - [`bpf_syscall`]: the one raw `bpf(2)` call, for what aya does not offer.
//! - [`collect`]: where a window is cut (flip the active slot, read the other, clear it once
//!   its records are on disk).
//! - [`drained`]: what a cut returns (one window's counts).
//! - [`flow_sink`]: the cut's flows handed over in batches while the drain goes on.
//! - [`read_keys`]: the keys a cut read, kept to clear exactly those once recorded.
//! - [`peek`]: read the open window's maps without changing them (`flowlog top`).
//! - [`pins`]: pinned maps and links, so a restarted agent adopts them without a gap.
//! - [`prog_info`]: what the kernel counts about a loaded program (its skipped runs).
//! - [`clock`]: window boundaries on the wall clock, and the datapath's stamps (jiffies) as
//!   Unix time.
//! - [`calibrate`]: readings of jiffies against CLOCK_MONOTONIC, taken by a test run.
//! - [`reject`]: the REJECT feature, from the kernel's drops to ACCEPT/REJECT verdicts.
//! - [`window_metrics`]: what each cut counted, as metrics.

pub mod attach;
pub mod attach_limits;
pub mod bpf_syscall;
pub mod calibrate;
pub mod clock;
pub mod collect;
pub mod drained;
pub mod flow_sink;
pub mod map_batch;
pub mod object;
pub mod peek;
pub mod pins;
pub mod prog_info;
pub mod read_keys;
pub mod reject;
pub mod window_metrics;
