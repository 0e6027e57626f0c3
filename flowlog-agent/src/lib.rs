//! The flowlog agent as a library, so the integration tests and benchmarks drive the same code
//! the `flowlog` binary runs.
//!
//! The pipeline, one module per job:
//! [`discover`] (which interfaces) → [`attach`] (load and attach the programs, once for every
//! flow log) → [`collect`] (the capture's cuts: flip, drain, per-CPU sums) → [`flowlogs`] (each
//! flow log's part of every cut, merged into its own windows; definitions, the control socket)
//! → [`records`] (flows to AWS records) → [`format`] (records to text) → [`batch`] (records to
//! 5-minute objects) → [`publish`] (objects to a destination). [`run`] wires them.

pub mod attach;
pub mod aws_internal;
pub mod aws_ranges;
pub mod batch;
pub mod btf_offsets;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod discover;
pub mod drops;
pub mod ebpf_object;
pub mod file_modes;
pub mod flowlog;
pub mod flowlogs;
pub mod format;
pub mod imds;
pub mod map_batch;
pub mod metadata;
pub mod metrics;
pub mod parquet_object;
pub mod pid_lock;
pub mod privileges;
pub mod publish;
pub mod records;
pub mod run;
pub mod verdict;
pub mod wal;
pub mod window_metrics;
