//! Which interfaces to watch: name globs matched against the host's interfaces.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use nix::{ifaddrs::getifaddrs, net::if_::InterfaceFlags};

/// One network interface of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
}

/// Every interface of the host with its flags, by name.
fn host_interfaces() -> anyhow::Result<BTreeMap<String, (u32, InterfaceFlags)>> {
    let mut out = BTreeMap::new();
    for ifa in getifaddrs().context("cannot list network interfaces (getifaddrs)")? {
        if out.contains_key(&ifa.interface_name) {
            continue;
        }
        let Ok(ifindex) = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()) else {
            continue; // vanished meanwhile
        };
        out.insert(ifa.interface_name.clone(), (ifindex, ifa.flags));
    }
    Ok(out)
}

/// The interfaces selected by `patterns` (name globs); with no patterns, every interface that
/// is up and not loopback.
#[derive(Debug, Clone)]
pub struct Selector {
    patterns: Vec<glob::Pattern>,
}

impl Selector {
    pub fn new(patterns: &[String]) -> anyhow::Result<Self> {
        let patterns = patterns
            .iter()
            .map(|p| glob::Pattern::new(p).with_context(|| format!("invalid --iface pattern {p:?}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Selector { patterns })
    }

    /// Interfaces matching now. On the first call (`strict`), a literal name that matches
    /// nothing is an error that lists the interfaces that exist.
    pub fn select(&self, strict: bool) -> anyhow::Result<Vec<Interface>> {
        let host = host_interfaces()?;
        if strict {
            for p in &self.patterns {
                let literal = !p.as_str().contains(['*', '?', '[']);
                if literal && !host.contains_key(p.as_str()) {
                    let names: Vec<&str> = host.keys().map(String::as_str).collect();
                    bail!(
                        "unknown interface {:?}: the interfaces here are {}",
                        p.as_str(),
                        names.join(", ")
                    );
                }
            }
        }
        let selected = host
            .into_iter()
            .filter(|(name, (_, flags))| {
                if self.patterns.is_empty() {
                    flags.contains(InterfaceFlags::IFF_UP)
                        && !flags.contains(InterfaceFlags::IFF_LOOPBACK)
                } else {
                    self.patterns.iter().any(|p| p.matches(name))
                }
            })
            .map(|(name, (ifindex, _))| Interface { name, ifindex })
            .collect();
        Ok(selected)
    }
}
