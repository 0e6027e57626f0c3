//! Flow logs as resources: what a flow log is ([`spec::FlowLogSpec`], one type whatever its
//! source) and the EC2 API shapes it is created, described and deleted through ([`api`]).
//! The [`registry`] holds the live flow logs and the [`control`] socket serves those calls;
//! [`store`] and [`file`](mod@file) keep definitions across restarts. Each flow log is a [`flow_log`]
//! (its records' metadata, format and delivery units) fed by a [`pipeline`], which merges the
//! capture's cuts into its own [`window`]s; [`cut_sink`] hands a cut's flows to every pipeline as
//! they are drained. [`status`] answers `flowlog status`.

pub mod api;
pub mod athena;
pub mod client;
pub mod control;
pub mod control_limits;
pub mod cut_sink;
pub mod file;
pub mod flow_log;
pub mod members;
pub mod pipeline;
pub mod registry;
pub mod snapshot;
pub mod spec;
pub mod status;
pub mod store;
pub mod window;
