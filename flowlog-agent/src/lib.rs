//! The flowlog agent as a library, so the integration tests and benchmarks drive the same code
//! the `flowlog` binary runs.
//!
//! One folder per stage; data flows one way, and a folder only uses the ones before it:
//!
//! - [`inventory`]: which interfaces exist and who they are (names, addresses, ENI identity
//!   from instance metadata or flags).
//! - [`capture`]: the kernel side, one capture whatever the number of flow logs: load and
//!   attach the programs ([`capture::attach`]), cut windows ([`capture::collect`]: flip, drain,
//!   per-CPU sums), and the REJECT feature ([`capture::reject`]: kernel drops and verdicts).
//! - [`records`]: drained windows to AWS records ([`records::build`]) and records to text
//!   ([`records::format`]).
//! - [`publish`]: records to objects or log-event batches, the spool, and the destinations.
//! - [`flowlogs`]: flow logs as resources: specs, the registry, the control socket, and each
//!   flow log's pipeline (its part of every cut, merged into its own windows, then published).
//!
//! [`run`] wires them; [`cli`] is the command line, the only module that knows clap's argument
//! structs for the agent's flags. [`metrics`], [`lifecycle`] (systemd notifications, the
//! health and readiness answers) and [`logging`] (text or JSON lines) are what operators see.

pub mod capabilities;
pub mod capture;
pub mod cli;
pub mod flowlogs;
pub mod inventory;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod publish;
pub mod records;
pub mod run;
