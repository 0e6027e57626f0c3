//! Shared harness for flowlog's root-only tests: network namespaces, veth pairs, traffic,
//! and reading the records the agent wrote.

pub mod agent;
pub mod delivery;
pub mod deploy;
pub mod fault_proxy;
pub mod fdinfo;
pub mod frames;
pub mod fuzz_frames;
pub mod hostlink;
pub mod moto;
pub mod netns;
pub mod oracle;
pub mod podman;
pub mod proxied;
pub mod publish;
pub mod records;
pub mod tcx_links;
pub mod traffic;
pub mod wire;
