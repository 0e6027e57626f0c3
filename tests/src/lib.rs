//! Shared harness for flowlog's root-only tests: network namespaces, veth pairs, traffic,
//! and reading the records the agent wrote.

pub mod agent;
pub mod frames;
pub mod moto;
pub mod netns;
pub mod podman;
pub mod publish;
pub mod records;
pub mod traffic;
pub mod wire;
