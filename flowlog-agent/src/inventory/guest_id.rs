//! The readable `interface-id` of a guest's interface: who is behind it and the guest's own
//! name for it, e.g. `web-1.eth0`. Stable across agent and container restarts (it never uses
//! the host-side `vethN` name when the guest's is known), unique on the host.
//!
//! | owner | `interface-id` |
//! | --- | --- |
//! | container | `<container name>.<guest ifname>`; without a name, the first 12 hex digits of its id |
//! | pod (Kubernetes) | `<namespace>/<pod name>.<guest ifname>` |
//! | pod (podman, no namespace) | `<pod name>.<guest ifname>` |
//! | VM | `<VM name>.<host ifname>` (the tap's name: the guest's own is not visible from the host); without a name its UUID, else `pid<VMM pid>` |
//!
//! The host-side name stands in for the guest's ifname when that is unknown. Characters a
//! record or a CloudWatch Logs stream name cannot carry (whitespace, `:`, `*`) become `_`.
//! Two interfaces that would get the same id (two runtimes with a container of the same name)
//! both get `@<host ifname>` appended.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    discover::Interface,
    owners::{Owner, OwnerKind},
};

/// How many hex digits of a container id name it when it has no name (what `podman ps` and
/// `docker ps` show).
const SHORT_ID: usize = 12;

/// The id `owner` gives its interface whose host-side name is `host_ifname`; `None` when
/// nobody known is behind it.
pub fn readable_id(owner: &Owner, host_ifname: &str) -> Option<String> {
    let ifname = owner.guest_ifname.as_deref().unwrap_or(host_ifname);
    let base = match &owner.kind {
        OwnerKind::Unknown | OwnerKind::Process(_) => return None,
        OwnerKind::Containers(containers) => {
            let first = containers.first()?;
            let pod = containers.iter().find_map(|c| {
                c.pod_name
                    .as_deref()
                    .map(|name| (c.pod_namespace.as_deref(), name))
            });
            match (pod, &first.name) {
                (Some((Some(ns), pod)), _) => format!("{ns}/{pod}"),
                (Some((None, pod)), _) => pod.to_string(),
                (None, Some(name)) => name.clone(),
                (None, None) => first.id.chars().take(SHORT_ID).collect(),
            }
        }
        // A VM's own ifname is not visible from the host: the tap's name (the fallback)
        // tells its interfaces apart.
        OwnerKind::Vm(vm) => vm
            .name
            .clone()
            .or_else(|| vm.uuid.clone())
            .unwrap_or_else(|| format!("pid{}", vm.pid)),
    };
    Some(sanitize(&format!("{base}.{ifname}")))
}

/// Whether `owner` is a guest whose records are written from its side: a container or a VM.
/// A namespace without a known container (a plain `ip netns`, a router's) and a tun held by a
/// VPN daemon are not: their traffic is logged as the host sees it.
pub fn is_guest(owner: &Owner) -> bool {
    match &owner.kind {
        OwnerKind::Containers(c) => !c.is_empty(),
        OwnerKind::Vm(_) => true,
        OwnerKind::Unknown | OwnerKind::Process(_) => false,
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_whitespace() || c == ':' || c == '*' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Sets `guest_id` of every interface with a guest owner, unique among `interfaces`.
pub fn assign(interfaces: &mut BTreeMap<u32, Interface>) {
    let mut ids: BTreeMap<u32, String> = BTreeMap::new();
    for (ifindex, iface) in interfaces.iter() {
        if let Some(id) = iface
            .owner
            .as_deref()
            .and_then(|o| readable_id(o, &iface.name))
        {
            ids.insert(*ifindex, id);
        }
    }
    let mut seen = BTreeSet::new();
    let duplicated: BTreeSet<String> = ids
        .values()
        .filter(|id| !seen.insert(id.as_str()))
        .cloned()
        .collect();
    for (ifindex, iface) in interfaces.iter_mut() {
        iface.guest_id = ids.remove(ifindex).map(|id| {
            if duplicated.contains(&id) {
                format!("{id}@{}", iface.name)
            } else {
                id
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::inventory::owners::{Container, Runtime, Vm};

    const ID_A: &str = "3f2a9c0b1d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd";
    const ID_B: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1a0918273645f";

    fn container(id: &str, name: Option<&str>, pod: Option<(&str, &str)>) -> Container {
        Container {
            id: id.into(),
            runtime: Runtime::Podman,
            name: name.map(str::to_string),
            pod_uid: None,
            pod_name: pod.map(|(_, n)| n.to_string()),
            pod_namespace: pod
                .map(|(ns, _)| ns.to_string())
                .filter(|ns| !ns.is_empty()),
        }
    }

    fn owner(kind: OwnerKind, guest_ifname: Option<&str>) -> Owner {
        Owner {
            kind,
            guest_ifname: guest_ifname.map(str::to_string),
            ..Owner::default()
        }
    }

    #[test]
    fn ids_name_the_guest_and_its_interface() {
        let c = |cs| owner(OwnerKind::Containers(cs), Some("eth0"));
        assert_eq!(
            readable_id(&c(vec![container(ID_A, Some("web-1"), None)]), "veth9"),
            Some("web-1.eth0".into())
        );
        assert_eq!(
            readable_id(&c(vec![container(ID_A, None, None)]), "veth9"),
            Some("3f2a9c0b1d4e.eth0".into())
        );
        assert_eq!(
            readable_id(
                &c(vec![
                    container(ID_A, Some("app"), Some(("shop", "cart-7d9f"))),
                    container(ID_B, Some("sidecar"), Some(("shop", "cart-7d9f")))
                ]),
                "veth9"
            ),
            Some("shop/cart-7d9f.eth0".into())
        );
        assert_eq!(
            readable_id(
                &c(vec![container(ID_A, Some("app"), Some(("", "mypod")))]),
                "veth9"
            ),
            Some("mypod.eth0".into())
        );
        // Without the guest's ifname, the host's stands in.
        assert_eq!(
            readable_id(
                &owner(
                    OwnerKind::Containers(vec![container(ID_A, Some("db"), None)]),
                    None
                ),
                "veth3"
            ),
            Some("db.veth3".into())
        );
        let vm = |name: Option<&str>, uuid: Option<&str>| {
            owner(
                OwnerKind::Vm(Vm {
                    name: name.map(str::to_string),
                    uuid: uuid.map(str::to_string),
                    pid: 4242,
                    vmm: "qemu-system-x86_64".into(),
                }),
                None,
            )
        };
        assert_eq!(
            readable_id(&vm(Some("test vm"), None), "tap0"),
            Some("test_vm.tap0".into())
        );
        assert_eq!(
            readable_id(
                &vm(None, Some("6f1c8a52-3b9e-4d7a-9c2f-0e8b7a6d5c4b")),
                "tap0"
            ),
            Some("6f1c8a52-3b9e-4d7a-9c2f-0e8b7a6d5c4b.tap0".into())
        );
        assert_eq!(
            readable_id(&vm(None, None), "tap1"),
            Some("pid4242.tap1".into())
        );
        assert_eq!(readable_id(&Owner::default(), "veth1"), None);
        assert_eq!(
            readable_id(&owner(OwnerKind::Containers(vec![]), None), "veth1"),
            None
        );
    }

    #[test]
    fn colliding_ids_get_the_host_ifname() {
        let iface = |ifindex: u32, name: &str, cname: &str| {
            let o = owner(
                OwnerKind::Containers(vec![container(ID_A, Some(cname), None)]),
                Some("eth0"),
            );
            (
                ifindex,
                Interface {
                    name: name.into(),
                    ifindex,
                    owner: Some(Arc::new(o)),
                    ..Interface::default()
                },
            )
        };
        let mut all: BTreeMap<u32, Interface> = [
            iface(3, "veth3", "web"),
            iface(4, "veth4", "web"),
            iface(5, "veth5", "db"),
            (
                6,
                Interface {
                    name: "eth0".into(),
                    ifindex: 6,
                    ..Interface::default()
                },
            ),
        ]
        .into_iter()
        .collect();
        assign(&mut all);
        let ids: Vec<Option<&str>> = all.values().map(|i| i.guest_id.as_deref()).collect();
        assert_eq!(
            ids,
            [
                Some("web.eth0@veth3"),
                Some("web.eth0@veth4"),
                Some("db.eth0"),
                None
            ]
        );
    }
}
