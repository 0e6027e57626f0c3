//! Types shared by the flowlog eBPF programs (`flowlog-ebpf`) and the agent (`flowlog-agent`).
//!
//! Everything that crosses the kernel/user boundary lives here exactly once: the flow key and
//! value stored in the flow maps, the per-interface counters, the map names and the packet
//! parser itself (so the parser is unit-tested on the host and run unchanged in the kernel).
#![no_std]

pub mod drops;
pub mod maps;
pub mod parse;

pub use drops::*;
pub use maps::*;
