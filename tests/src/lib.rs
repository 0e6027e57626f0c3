//! Shared harness for flowlog's root-only tests: network namespaces, veth pairs, traffic,
//! and reading the records the agent wrote.

pub mod frames;
