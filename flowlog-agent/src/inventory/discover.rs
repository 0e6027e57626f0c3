//! Which interfaces to watch: name globs matched against the host's interfaces.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, bail};
use nix::{ifaddrs::getifaddrs, net::if_::InterfaceFlags};

use super::selectors::GuestSelector;

/// One network interface of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// Hardware address, lowercase `aa:bb:cc:dd:ee:ff` (how an ENI is matched).
    pub mac: Option<String>,
    /// Primary IPv4 address: the first the kernel lists, which is the first primary address
    /// (secondary addresses of the same subnet are listed after it).
    pub ipv4: Option<Ipv4Addr>,
    /// Primary IPv6 address: the oldest non-link-local address (the kernel lists them newest
    /// first, so the last one; temporary privacy addresses, being newer, are never chosen),
    /// else the link-local one, so IPv6 traffic on a link-local-only interface still shows the
    /// interface's own address.
    pub ipv6: Option<Ipv6Addr>,
    /// Every address, in the order the kernel lists them (what a `Subnet` flow log matches).
    pub addrs: Vec<IpAddr>,
    pub up: bool,
    pub loopback: bool,
    /// IFLA_INFO_KIND (`veth`, `tun`, `bridge`, ...), when the inventory read it.
    pub kind: Option<String>,
    /// IFLA_LINK_NETNSID: the namespace of the other end (a veth whose peer is elsewhere), as
    /// this namespace numbers it.
    pub link_netnsid: Option<i32>,
    /// IFLA_LINK: the other end's ifindex (in `link_netnsid`'s namespace when that is set).
    pub peer_ifindex: Option<u32>,
    /// Who is behind the interface (containers, a VM), when the inventory found out.
    pub owner: Option<std::sync::Arc<crate::inventory::owners::Owner>>,
    /// The guest's readable `interface-id` (`web-1.eth0`), unique on the host: set for an
    /// interface whose owner is a container or a VM.
    pub guest_id: Option<String>,
    /// Deleted during the open window: kept (with its last identity) until that window is
    /// cut, so the flows it counted are still written with its name and owner.
    pub deleted: bool,
    /// A guest may still be found behind it (its owner lookups have not finished their
    /// backoff): flow logs that select guests watch it meanwhile, so a container's first
    /// packets are counted before its processes can be told apart.
    pub owner_pending: bool,
    /// The kernel's `ARPHRD_*` link type (`/sys/class/net/<name>/type`), when known.
    pub link_type: Option<u16>,
    /// Primary addresses the interface had earlier in the open window (its address changed):
    /// flows counted while one of them was the primary keep it in their records.
    pub earlier_primaries: Vec<IpAddr>,
}

/// `ARPHRD_*` link types whose frames start with the IP header: `ARPHRD_RAWIP` (519),
/// `ARPHRD_TUNNEL` (ipip, 768), `ARPHRD_TUNNEL6` (ip6tnl, 769), `ARPHRD_SIT` (776),
/// `ARPHRD_IPGRE` (778), `ARPHRD_IP6GRE` (823) and `ARPHRD_NONE` (tun, WireGuard, 65534).
/// Values from `include/uapi/linux/if_arp.h`.
const LINK_TYPES_WITHOUT_HEADER: [u16; 7] = [519, 768, 769, 776, 778, 823, 65534];

/// The interface's `ARPHRD_*` type from sysfs (getifaddrs has no link-layer entry for
/// interfaces without a hardware address, such as tun).
fn link_type(name: &str) -> Option<u16> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/type"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Interface {
    /// Whether the interface's frames start with the IP header instead of an Ethernet header.
    /// Unknown link types are taken as Ethernet, as every interface was before L3 devices were
    /// told apart.
    pub fn is_l3(&self) -> bool {
        self.link_type
            .is_some_and(|t| LINK_TYPES_WITHOUT_HEADER.contains(&t))
    }
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Every interface of the host with its flags, by name.
fn host_interfaces() -> anyhow::Result<BTreeMap<String, (Interface, InterfaceFlags)>> {
    let mut out: BTreeMap<String, (Interface, InterfaceFlags)> = BTreeMap::new();
    for ifa in getifaddrs().context("cannot list network interfaces (getifaddrs)")? {
        if !out.contains_key(&ifa.interface_name) {
            let Ok(ifindex) = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()) else {
                continue; // vanished meanwhile
            };
            let iface = Interface {
                name: ifa.interface_name.clone(),
                ifindex,
                up: ifa.flags.contains(InterfaceFlags::IFF_UP),
                loopback: ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK),
                link_type: link_type(&ifa.interface_name),
                ..Default::default()
            };
            out.insert(ifa.interface_name.clone(), (iface, ifa.flags));
        }
        let Some((iface, _)) = out.get_mut(&ifa.interface_name) else {
            continue;
        };
        let Some(addr) = ifa.address else { continue };
        if let Some(mac) = addr.as_link_addr().and_then(|l| l.addr()) {
            if mac != [0; 6] {
                iface.mac = Some(
                    mac.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
        } else if let Some(v4) = addr.as_sockaddr_in() {
            iface.ipv4.get_or_insert(v4.ip());
            iface.addrs.push(v4.ip().into());
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let ip = v6.ip();
            iface.addrs.push(ip.into());
            if !is_link_local(&ip) || iface.ipv6.is_none() {
                iface.ipv6 = Some(ip);
            }
        }
    }
    Ok(out)
}

/// Every interface of the host with its MAC and primary addresses, by ifindex (read afresh:
/// addresses change while the agent runs).
pub fn interfaces_by_index() -> anyhow::Result<BTreeMap<u32, Interface>> {
    Ok(host_interfaces()?
        .into_values()
        .map(|(i, _)| (i.ifindex, i))
        .collect())
}

/// `attached` (ifindex → name) with each interface's MAC and primary addresses as they are now;
/// an interface that vanished meanwhile keeps only its name.
pub fn describe(attached: &BTreeMap<u32, String>) -> BTreeMap<u32, Interface> {
    let now = interfaces_by_index().unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "cannot read interface addresses: srcaddr/dstaddr keep header addresses this window");
        BTreeMap::new()
    });
    attached
        .iter()
        .map(|(&ifindex, name)| {
            let iface = now
                .get(&ifindex)
                .filter(|i| &i.name == name)
                .cloned()
                .unwrap_or_else(|| Interface {
                    name: name.clone(),
                    ifindex,
                    ..Default::default()
                });
            (ifindex, iface)
        })
        .collect()
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
            .map(|p| {
                if let Some(Err(e)) = GuestSelector::parse(p) {
                    bail!("invalid --iface selector {e}");
                }
                glob::Pattern::new(p).with_context(|| format!("invalid --iface pattern {p:?}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Selector { patterns })
    }

    /// Interfaces matching now. On the first call (`strict`), a literal name that matches
    /// nothing is an error that lists the interfaces that exist.
    pub fn select(&self, strict: bool) -> anyhow::Result<Vec<Interface>> {
        let host = host_interfaces()?;
        if strict {
            // Guest selectors (`container:web`) may name a guest that starts later.
            for p in self
                .patterns
                .iter()
                .filter(|p| GuestSelector::parse(p.as_str()).is_none())
            {
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
            .map(|(_, (iface, _))| iface)
            .collect();
        Ok(selected)
    }
}

/// How an interface is named in records, logs and metrics: its name (or interface id) when it
/// is watched, else `if<ifindex>` (it went away, or was never selected).
pub fn interface_label(name: Option<&str>, ifindex: u32) -> String {
    name.map(str::to_string)
        .unwrap_or_else(|| format!("if{ifindex}"))
}
