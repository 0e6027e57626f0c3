//! Who is behind a host-side interface: the containers sharing a veth peer's network
//! namespace, or the VM holding a tap/macvtap device, plus ECS task data when the ECS agent's
//! introspection API answers.
//!
//! Never called per packet: the inventory caches an [`Owner`] per interface and refreshes it on
//! link events.

use std::net::IpAddr;
use std::path::PathBuf;

/// Who is behind a host-side interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub kind: OwnerKind,
    /// The guest's own interface name (e.g. "eth0" inside the container), when known.
    pub guest_ifname: Option<String>,
    /// The guest's own addresses (read inside its netns for a veth; None for a VM unless known).
    pub guest_addrs: Vec<IpAddr>,
    /// ECS task data, when the ECS agent's introspection API answered.
    pub ecs: Option<EcsTask>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OwnerKind {
    #[default]
    Unknown,
    /// Containers sharing the guest netns, in a stable order (first = the one AWS's
    /// ecs-container-id names: oldest by start time, pod infra/pause container last).
    Containers(Vec<Container>),
    Vm(Vm),
}

/// Which container runtime a container id came from (told by its cgroup path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Podman,
    Docker,
    Containerd,
    Crio,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full 64-hex id.
    pub id: String,
    pub runtime: Runtime,
    /// Container name where the runtime keeps it on the host.
    pub name: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub pid: u32,
    /// The VMM's executable name ("qemu-system-x86_64", "firecracker", ...).
    pub vmm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsTask {
    pub task_arn: String,
    pub family: String,
    pub version: String,
    pub cluster: String,
    pub container_instance_arn: Option<String>,
    /// Last path part of the task ARN.
    pub task_id: String,
}

/// What the inventory knows about a host-side link when it asks.
pub struct HostLink<'a> {
    pub ifindex: u32,
    pub name: &'a str,
    /// IFLA_INFO_KIND: "veth", "tun", "macvtap", ...
    pub kind: Option<&'a str>,
    pub link_netnsid: Option<i32>,
    pub peer_ifindex: Option<u32>,
}

/// Where [`find`] looks.
#[derive(Debug, Clone)]
pub struct OwnerOptions {
    /// "/proc" normally.
    pub proc_root: PathBuf,
    /// The ECS agent's introspection API, e.g. "http://localhost:51678"; None = don't ask.
    pub ecs_endpoint: Option<String>,
}

impl Default for OwnerOptions {
    fn default() -> Self {
        OwnerOptions {
            proc_root: PathBuf::from("/proc"),
            ecs_endpoint: None,
        }
    }
}

/// Finds the owner. Never called per packet; cached by the caller and refreshed on events.
pub fn find(link: &HostLink<'_>, opts: &OwnerOptions) -> anyhow::Result<Option<Owner>> {
    let _ = (link, opts);
    Ok(None)
}
