//! Shared harness for flowlog's root-only tests: network namespaces, veth pairs, traffic,
//! and reading the records the agent wrote.

pub mod frames;
pub mod agent;
pub mod netns;
pub mod moto;
pub mod publish;
pub mod records;
pub mod traffic;
pub mod wire;
