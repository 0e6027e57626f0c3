//! What records say about a guest (a container or a VM behind a host-side interface): from whose
//! side they are written ([`Perspective`]) and the owner's values for AWS's `ecs-*` fields, a
//! VM's `instance-id`, and the extension fields `${container-name}`, `${pod-name}`,
//! `${pod-namespace}` and `${vm-name}` ([`GuestFields`]).

use std::{fmt, net::IpAddr, str::FromStr};

use anyhow::bail;

use crate::inventory::owners::{EcsTask, Owner, OwnerKind};

/// From whose side a guest's interface is logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Perspective {
    /// As AWS logs an ENI: the guest's network card. On the host side of a container's veth or
    /// a VM's tap, what the guest sent is `egress`, its own address is `srcaddr`/`dstaddr`,
    /// and `interface-id` is its readable id (`web-1.eth0`).
    #[default]
    Guest,
    /// The host side as the host sees it: what the guest sent is `ingress`, and
    /// `interface-id` is the host-side name (`veth3a1b`). Owner fields are filled either way.
    Host,
}

impl Perspective {
    pub fn as_str(self) -> &'static str {
        match self {
            Perspective::Guest => "guest",
            Perspective::Host => "host",
        }
    }
}

impl fmt::Display for Perspective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Perspective {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "guest" => Ok(Perspective::Guest),
            "host" => Ok(Perspective::Host),
            _ => bail!("invalid perspective {s:?}: use guest or host"),
        }
    }
}

/// A guest's values for the fields that describe who is behind an interface; `None` is `-`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestFields {
    /// `ecs-container-id`: the full id of the first container in the interface's namespace.
    pub container_id: Option<String>,
    /// `ecs-second-container-id`: the second one's, when there is one.
    pub second_container_id: Option<String>,
    /// `${container-name}`: the first container's name.
    pub container_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    /// `${vm-name}`.
    pub vm_name: Option<String>,
    /// `instance-id` of a VM's interface: its name, else its UUID.
    pub instance_id: Option<String>,
    pub ecs: Option<EcsFields>,
}

/// The `ecs-*` fields from the ECS agent's task data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsFields {
    pub cluster_arn: Option<String>,
    pub cluster_name: String,
    pub container_instance_arn: Option<String>,
    pub container_instance_id: Option<String>,
    pub task_definition_arn: Option<String>,
    pub task_arn: String,
    pub task_id: String,
}

impl EcsFields {
    /// From the ECS agent's task data (ARNs the agent does not give are built by
    /// [`EcsTask`]'s methods from the ones it does).
    pub fn of(task: &EcsTask) -> Self {
        EcsFields {
            cluster_arn: task.cluster_arn(),
            cluster_name: task.cluster_name().to_string(),
            container_instance_arn: task.container_instance_arn.clone(),
            container_instance_id: task.container_instance_id().map(str::to_string),
            task_definition_arn: task.task_definition_arn(),
            task_arn: task.task_arn.clone(),
            task_id: task.task_id.clone(),
        }
    }
}

impl GuestFields {
    /// The fields `owner` fills; `None` when nobody known is behind the interface.
    pub fn of(owner: &Owner) -> Option<Self> {
        let mut f = GuestFields {
            ecs: owner.ecs.as_ref().map(EcsFields::of),
            ..GuestFields::default()
        };
        match &owner.kind {
            OwnerKind::Unknown | OwnerKind::Process(_) if f.ecs.is_none() => return None,
            OwnerKind::Unknown | OwnerKind::Process(_) => {}
            OwnerKind::Containers(cs) => {
                f.container_id = cs.first().map(|c| c.id.clone());
                f.second_container_id = cs.get(1).map(|c| c.id.clone());
                f.container_name = cs.first().and_then(|c| c.name.clone());
                if let Some(c) = cs.iter().find(|c| c.pod_name.is_some()) {
                    f.pod_name = c.pod_name.clone();
                    f.pod_namespace = c.pod_namespace.clone();
                }
            }
            OwnerKind::Vm(vm) => {
                f.vm_name = vm.name.clone();
                f.instance_id = vm.name.clone().or_else(|| vm.uuid.clone());
            }
        }
        Some(f)
    }
}

/// The primary addresses of a guest: its first IPv4 address, and its first IPv6 address that
/// is not link-local (else its first link-local one).
pub fn guest_primaries(
    addrs: &[IpAddr],
) -> (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>) {
    let v4 = addrs.iter().find_map(|a| match a {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    let v6: Vec<std::net::Ipv6Addr> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
        .collect();
    let global = v6.iter().find(|a| a.segments()[0] & 0xffc0 != 0xfe80);
    (v4, global.or(v6.first()).copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::owners::{Container, Runtime, Vm};

    const ID_A: &str = "3f2a9c0b1d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd";
    const ID_B: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1a0918273645f";

    #[test]
    fn containers_fill_the_container_fields_and_vms_the_instance_id() {
        let c = |id: &str, name: &str| Container {
            id: id.into(),
            runtime: Runtime::Podman,
            name: Some(name.into()),
            pod_uid: None,
            pod_name: Some("cart".into()),
            pod_namespace: Some("shop".into()),
        };
        let owner = Owner {
            kind: OwnerKind::Containers(vec![c(ID_A, "app"), c(ID_B, "sidecar")]),
            ..Owner::default()
        };
        let f = GuestFields::of(&owner).unwrap();
        assert_eq!(f.container_id.as_deref(), Some(ID_A));
        assert_eq!(f.second_container_id.as_deref(), Some(ID_B));
        assert_eq!(f.container_name.as_deref(), Some("app"));
        assert_eq!(f.pod_name.as_deref(), Some("cart"));
        assert_eq!(f.pod_namespace.as_deref(), Some("shop"));
        assert_eq!((f.vm_name, f.instance_id, f.ecs), (None, None, None));
        let vm = |name: Option<&str>| Owner {
            kind: OwnerKind::Vm(Vm {
                name: name.map(str::to_string),
                uuid: Some("6f1c8a52-3b9e-4d7a-9c2f-0e8b7a6d5c4b".into()),
                pid: 1,
                vmm: "qemu-system-x86_64".into(),
            }),
            ..Owner::default()
        };
        let f = GuestFields::of(&vm(Some("test-vm"))).unwrap();
        assert_eq!(f.vm_name.as_deref(), Some("test-vm"));
        assert_eq!(f.instance_id.as_deref(), Some("test-vm"));
        let f = GuestFields::of(&vm(None)).unwrap();
        assert_eq!(f.vm_name, None);
        assert_eq!(
            f.instance_id.as_deref(),
            Some("6f1c8a52-3b9e-4d7a-9c2f-0e8b7a6d5c4b")
        );
        assert_eq!(GuestFields::of(&Owner::default()), None);
    }

    #[test]
    fn guest_primaries_are_the_first_of_each_family() {
        let addrs: Vec<IpAddr> = ["fe80::1", "10.88.0.5", "fd00::5", "10.88.0.6", "fd00::6"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            guest_primaries(&addrs),
            (
                Some("10.88.0.5".parse().unwrap()),
                Some("fd00::5".parse().unwrap())
            )
        );
        let ll: Vec<IpAddr> = vec!["fe80::1".parse().unwrap()];
        assert_eq!(
            guest_primaries(&ll),
            (None, Some("fe80::1".parse().unwrap()))
        );
        assert_eq!(guest_primaries(&[]), (None, None));
    }
}
