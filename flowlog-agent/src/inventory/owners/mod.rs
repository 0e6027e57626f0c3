//! Who is behind a host-side interface: the containers sharing a veth peer's network
//! namespace, or the VM holding a tap/macvtap device, plus ECS task data when the ECS agent's
//! introspection API answers.
//!
//! Never called per packet: the inventory caches an [`Owner`] per interface and refreshes it on
//! link events. [`find`] blocks (it reads `/proc`, asks rtnetlink and, with an ECS endpoint,
//! makes HTTP requests with a 1 s deadline): call it from a blocking thread
//! (`tokio::task::spawn_blocking`), not on the async runtime.
//!
//! - [`veth`]: the peer namespace, the guest's interface and addresses, its containers
//!   ([`cgroup`] ids, [`containers`] names, pods and order).
//! - [`vm`]: the process holding a tap/tun or macvtap/ipvtap device and the VM's name.
//! - [`ecs`]: the ECS agent's introspection API.
//! - [`rtnl`], [`procs`]: the rtnetlink requests and `/proc` reads the others share.

pub mod cgroup;
pub mod containers;
pub mod ecs;
pub mod procs;
pub mod rtnl;
pub mod veth;
pub mod vm;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Who is behind a host-side interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub kind: OwnerKind,
    /// The guest's own interface name (e.g. "eth0" inside the container), when known.
    pub guest_ifname: Option<String>,
    /// The guest's own addresses (read in its netns for a veth; empty for a VM): IPv4 first,
    /// then IPv6, global scope before link-local, otherwise in the kernel's order.
    pub guest_addrs: Vec<IpAddr>,
    /// ECS task data, when the ECS agent's introspection API answered.
    pub ecs: Option<EcsTask>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OwnerKind {
    #[default]
    Unknown,
    /// Containers sharing the guest netns, in a stable order (first = the one AWS's
    /// ecs-container-id names): the ECS task's own order when the ECS agent answered, else
    /// oldest first by the start time of their first process in the namespace (ties by id);
    /// pod infra/pause (sandbox) containers last.
    Containers(Vec<Container>),
    Vm(Vm),
    /// A tun/tap held by a program that is not a VMM (a VPN daemon, say). Not a guest: the
    /// interface is the host's own, and its traffic is the host's.
    Process(Process),
}

/// The program holding a tun/tap device that is not a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
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
    /// qemu `-name`, firecracker `--id`, kvmtool `--name`.
    pub name: Option<String>,
    /// qemu `-uuid`, cloud-hypervisor `--platform uuid=`.
    pub uuid: Option<String>,
    /// The process holding the device.
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
    /// The task's containers (Docker ids) in the order the ECS agent lists them.
    pub container_ids: Vec<String>,
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
    /// Where the runtimes' files (`/run`, `/var/lib`) and `/sys` are: "/" normally.
    pub host_root: PathBuf,
}

/// The ECS agent's introspection API on an ECS container instance.
pub const ECS_ENDPOINT: &str = "http://localhost:51678";

impl Default for OwnerOptions {
    fn default() -> Self {
        OwnerOptions {
            proc_root: PathBuf::from("/proc"),
            ecs_endpoint: None,
            host_root: PathBuf::from("/"),
        }
    }
}

impl Owner {
    /// The containers, when the owner is containers (else empty).
    pub fn containers(&self) -> &[Container] {
        match &self.kind {
            OwnerKind::Containers(c) => c,
            _ => &[],
        }
    }

    /// Whether the interface's other end is a guest (a container's namespace or a VM), whose
    /// point of view records take.
    pub fn is_guest(&self) -> bool {
        !matches!(self.kind, OwnerKind::Process(_))
    }
}

/// Finds the owner. Never called per packet; cached by the caller and refreshed on events.
///
/// Ok(None): the link has no guest behind it (not a veth/tun/tap/macvtap/ipvtap; a veth
/// whose peer is in the agent's own namespace; a tun nobody holds). A veth whose peer is in
/// another namespace always has an owner, with [`OwnerKind::Unknown`] when no container
/// process lives there. Err: reading `/proc` or asking rtnetlink failed (not root?).
pub fn find(link: &HostLink<'_>, opts: &OwnerOptions) -> Result<Option<Owner>> {
    let mut rtnl = rtnl::Rtnl::open()?;
    let kind = match link.kind {
        Some(k) => Some(k.to_string()),
        None => rtnl.link(link.ifindex, None)?.and_then(|l| l.kind),
    };
    let owner = match kind.as_deref() {
        Some("veth") => veth::find(&mut rtnl, link, opts)
            .with_context(|| format!("finding the guest behind veth {}", link.name))?,
        Some("tun") => {
            let holders = vm::tun_holders(&opts.proc_root, link.name)
                .with_context(|| format!("finding the process holding {}", link.name))?;
            holder_owner(opts, &holders)
        }
        Some("macvtap" | "ipvtap") => {
            match vm::tap_device_number(&opts.host_root, link.name, link.ifindex) {
                Some(dev) => {
                    let holders = vm::char_device_holders(&opts.proc_root, dev)
                        .with_context(|| format!("finding the process holding {}", link.name))?;
                    holder_owner(opts, &holders)
                }
                None => None,
            }
        }
        _ => None,
    };
    Ok(owner.map(|owner| with_ecs(owner, opts)))
}

/// The owner a tun/tap's holders make: the first that is a VM, else the first process.
fn holder_owner(opts: &OwnerOptions, holders: &[u32]) -> Option<Owner> {
    let described: Vec<(u32, vm::VmIdentity)> = holders
        .iter()
        .map(|&pid| (pid, vm::identify(&procs::cmdline(&opts.proc_root, pid))))
        .collect();
    let kind = match described.iter().find(|(_, id)| id.is_vm()) {
        Some((pid, id)) => OwnerKind::Vm(Vm {
            name: id.name.clone(),
            uuid: id.uuid.clone(),
            pid: *pid,
            vmm: id.vmm.clone(),
        }),
        None => {
            let &(pid, _) = described.first()?;
            OwnerKind::Process(Process {
                pid,
                comm: procs::comm(&opts.proc_root, pid).unwrap_or_default(),
            })
        }
    };
    Some(Owner {
        kind,
        ..Owner::default()
    })
}

/// Adds the ECS task of the owner's containers, when an endpoint is set and answers, and puts
/// the containers in the task's order. A failing ECS agent costs the ECS fields, not the
/// owner (logged).
fn with_ecs(mut owner: Owner, opts: &OwnerOptions) -> Owner {
    let Some(endpoint) = opts.ecs_endpoint.as_deref() else {
        return owner;
    };
    let ids: Vec<&str> = owner.containers().iter().map(|c| c.id.as_str()).collect();
    if ids.is_empty() {
        return owner;
    }
    match ecs::task_of(endpoint, &ids) {
        Ok(Some(task)) => {
            if let OwnerKind::Containers(list) = &mut owner.kind {
                // The task's containers in its order; the others (the pause container of an
                // awsvpc task) after them, in their own order.
                list.sort_by_key(|c| {
                    task.container_ids
                        .iter()
                        .position(|id| *id == c.id)
                        .unwrap_or(usize::MAX)
                });
            }
            owner.ecs = Some(task);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(
            endpoint,
            error = format!("{e:#}"),
            "ECS agent introspection failed; ecs-* fields stay '-'"
        ),
    }
    owner
}
