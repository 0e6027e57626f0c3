//! Guest selectors: interfaces named by who is behind them rather than by their host-side name.
//! Written where an interface name or glob goes (a `NetworkInterface` resource id, `--iface`):
//!
//! | selector | selects the interfaces of |
//! | --- | --- |
//! | `container:<id, name or glob>` | a container: its name or id matches the glob, or the text is a prefix (12+ hex digits) of its id; any container sharing the interface's namespace counts (a pod's) |
//! | `pod:<namespace>/<name>` | a pod (globs in both parts); `pod:<name>` matches the name in any namespace (podman pods have none) |
//! | `vm:<name or UUID>` | a VM (glob over its name or UUID) |
//!
//! A `:` never appears in a Linux interface name, so these cannot be mistaken for one. An
//! interface matches once its owner is known (see [`super::live`]: within milliseconds to a
//! few seconds of its creation).

use glob::Pattern;

use super::{
    discover::Interface,
    owners::{Owner, OwnerKind},
};

/// Shortest id prefix accepted as a container id (what `podman ps` shows).
const MIN_ID_PREFIX: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestSelector {
    Container(Pattern),
    Pod {
        namespace: Option<Pattern>,
        name: Pattern,
    },
    Vm(Pattern),
}

impl GuestSelector {
    /// `None` when `text` has no selector prefix (it is an interface name or glob); else the
    /// selector, or why it is malformed.
    pub fn parse(text: &str) -> Option<Result<Self, String>> {
        let (kind, rest) = text.split_once(':')?;
        let glob = |what: &str, p: &str| -> Result<Pattern, String> {
            if p.is_empty() || p.contains(char::is_whitespace) {
                return Err(format!("{text:?}: give a {what} after {kind}:"));
            }
            Pattern::new(p).map_err(|e| format!("{text:?}: invalid glob {p:?}: {e}"))
        };
        let parsed = match kind {
            "container" => glob("container id, name or glob", rest).map(GuestSelector::Container),
            "pod" => match rest.split_once('/') {
                Some((ns, name)) => Ok(GuestSelector::Pod {
                    namespace: Some(match glob("namespace", ns) {
                        Ok(p) => p,
                        Err(e) => return Some(Err(e)),
                    }),
                    name: match glob("pod name", name) {
                        Ok(p) => p,
                        Err(e) => return Some(Err(e)),
                    },
                }),
                None => glob("pod name (or namespace/name)", rest).map(|name| GuestSelector::Pod {
                    namespace: None,
                    name,
                }),
            },
            "vm" => glob("VM name or UUID", rest).map(GuestSelector::Vm),
            // Not a selector (a MAC address or something else `:` is part of).
            _ => return None,
        };
        Some(parsed)
    }

    /// Whether the guest behind `iface` is the one selected.
    pub fn matches(&self, iface: &Interface) -> bool {
        iface
            .owner
            .as_deref()
            .is_some_and(|o| self.matches_owner(o))
    }

    fn matches_owner(&self, owner: &Owner) -> bool {
        match (self, &owner.kind) {
            (GuestSelector::Container(p), OwnerKind::Containers(cs)) => cs.iter().any(|c| {
                c.name.as_deref().is_some_and(|n| p.matches(n))
                    || p.matches(&c.id)
                    || is_id_prefix(p.as_str(), &c.id)
            }),
            (GuestSelector::Pod { namespace, name }, OwnerKind::Containers(cs)) => {
                cs.iter().any(|c| {
                    c.pod_name.as_deref().is_some_and(|n| name.matches(n))
                        && namespace.as_ref().is_none_or(|ns| {
                            c.pod_namespace.as_deref().is_some_and(|v| ns.matches(v))
                        })
                })
            }
            (GuestSelector::Vm(p), OwnerKind::Vm(vm)) => [&vm.name, &vm.uuid]
                .into_iter()
                .flatten()
                .any(|v| p.matches(v)),
            _ => false,
        }
    }
}

fn is_id_prefix(text: &str, id: &str) -> bool {
    text.len() >= MIN_ID_PREFIX
        && text.chars().all(|c| c.is_ascii_hexdigit())
        && id.starts_with(&text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::inventory::owners::{Container, Runtime, Vm};

    const ID_A: &str = "3f2a9c0b1d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcd";
    const ID_B: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180706f5e4d3c2b1a0918273645f";

    fn with_owner(kind: OwnerKind) -> Interface {
        Interface {
            name: "veth1".into(),
            owner: Some(Arc::new(Owner {
                kind,
                ..Owner::default()
            })),
            ..Interface::default()
        }
    }

    fn container(id: &str, name: &str, pod: Option<(&str, &str)>) -> Container {
        Container {
            id: id.into(),
            runtime: Runtime::Podman,
            name: Some(name.into()),
            pod_uid: None,
            pod_name: pod.map(|(_, n)| n.to_string()),
            pod_namespace: pod.map(|(ns, _)| ns.to_string()).filter(|s| !s.is_empty()),
        }
    }

    fn sel(s: &str) -> GuestSelector {
        GuestSelector::parse(s).unwrap().unwrap()
    }

    #[test]
    fn containers_by_name_glob_id_or_id_prefix() {
        let web = with_owner(OwnerKind::Containers(vec![container(ID_A, "web-1", None)]));
        let pod = with_owner(OwnerKind::Containers(vec![
            container(ID_A, "app", Some(("shop", "cart"))),
            container(ID_B, "sidecar", Some(("shop", "cart"))),
        ]));
        let hits = |s: &str| -> Vec<bool> { [&web, &pod].map(|i| sel(s).matches(i)).to_vec() };
        assert_eq!(hits("container:web-1"), [true, false]);
        assert_eq!(hits("container:web-*"), [true, false]);
        assert_eq!(hits("container:sidecar"), [false, true]);
        assert_eq!(hits(&format!("container:{ID_B}")), [false, true]);
        assert_eq!(hits("container:3F2A9C0B1D4E"), [true, true]);
        assert_eq!(hits("container:3f2a9c0b1d4"), [false, false], "11 digits");
        assert_eq!(hits("container:3f2a*"), [true, true]);
        assert_eq!(hits("pod:shop/cart"), [false, true]);
        assert_eq!(hits("pod:cart"), [false, true]);
        assert_eq!(hits("pod:*/ca*"), [false, true]);
        assert_eq!(hits("pod:other/cart"), [false, false]);
        assert_eq!(hits("vm:*"), [false, false]);
        // An interface whose owner is not known yet matches no selector.
        assert!(!sel("container:*").matches(&Interface::default()));
    }

    #[test]
    fn vms_by_name_or_uuid() {
        let vm = with_owner(OwnerKind::Vm(Vm {
            name: Some("test-vm".into()),
            uuid: Some("6f1c8a52-3b9e-4d7a-9c2f-0e8b7a6d5c4b".into()),
            pid: 1,
            vmm: "qemu-system-x86_64".into(),
        }));
        assert!(sel("vm:test-vm").matches(&vm));
        assert!(sel("vm:test-*").matches(&vm));
        assert!(sel("vm:6f1c8a52-3b9e-4d7a-9c2f-0e8b7a6d5c4b").matches(&vm));
        assert!(!sel("vm:other").matches(&vm));
        assert!(!sel("container:test-vm").matches(&vm));
    }

    #[test]
    fn names_macs_and_malformed_selectors() {
        assert_eq!(GuestSelector::parse("veth*"), None);
        assert_eq!(GuestSelector::parse("0e:12:34:56:78:9a"), None);
        for bad in ["container:", "pod:/x", "pod:ns/", "vm:a b", "container:[x"] {
            let e = GuestSelector::parse(bad).unwrap().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
