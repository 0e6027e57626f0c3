//! Flow logs as resources: what a flow log is ([`spec::FlowLogSpec`], one type whatever its
//! source) and the EC2 API shapes it is created, described and deleted through ([`api`]).
//! The registry and the control socket that serve those calls live here too as they come.

pub mod api;
pub mod client;
pub mod control;
pub mod file;
pub mod pipeline;
pub mod registry;
pub mod spec;
pub mod store;
pub mod window;
