//! The interfaces of one network namespace as rtnetlink describes them: a table kept current by
//! applying the kernel's link and address messages (a dump at start, then every event), in the
//! order the kernel sent them. Pure: [`super::live`] owns the socket.
//!
//! Each message carries the full state of its link (`RTM_NEWLINK`) or one address
//! (`RTM_NEWADDR`/`RTM_DELADDR`), so applying them in order converges on the kernel's state
//! even when a dump and events overlap.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
};

use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
};

use super::discover::Interface;

/// An interface's key on the host: the network namespace it lives in (the inode of its
/// `/proc/<pid>/ns/net`) and its ifindex there. Ifindexes are per namespace, so the pair is
/// what names one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkKey {
    pub netns: u64,
    pub ifindex: u32,
}

/// What applying one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing this table keeps (another message type, a bridge-port notification, a repeat).
    Unchanged,
    Added(u32),
    /// A link's attributes or addresses changed.
    Changed(u32),
    /// The link was deleted: its last state.
    Removed(Box<Interface>),
}

/// The links of one namespace, by ifindex.
#[derive(Debug, Clone, Default)]
pub struct LinkTable {
    links: BTreeMap<u32, Interface>,
}

impl LinkTable {
    pub fn get(&self, ifindex: u32) -> Option<&Interface> {
        self.links.get(&ifindex)
    }

    pub fn get_mut(&mut self, ifindex: u32) -> Option<&mut Interface> {
        self.links.get_mut(&ifindex)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u32, &Interface)> {
        self.links.iter()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Applies one rtnetlink message.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> Applied {
        match msg {
            RouteNetlinkMessage::NewLink(m) => self.new_link(m),
            RouteNetlinkMessage::DelLink(m) => self.del_link(m),
            RouteNetlinkMessage::NewAddress(m) => self.address(m, true, false),
            RouteNetlinkMessage::DelAddress(m) => self.address(m, false, false),
            _ => Applied::Unchanged,
        }
    }

    /// Adds one address of a dump: appended, so the table keeps the dump's order (IPv4
    /// oldest first, IPv6 newest first), where an event's new IPv6 address goes first.
    pub fn add_dumped_address(&mut self, m: &AddressMessage) -> Applied {
        self.address(m, true, true)
    }

    fn new_link(&mut self, m: &LinkMessage) -> Applied {
        // Bridge port notifications (AF_BRIDGE) describe a port's bridge state, not the link:
        // their RTM_DELLINK means "left the bridge", never "deleted".
        if m.header.interface_family == AddressFamily::Bridge {
            return Applied::Unchanged;
        }
        let Some(fresh) = link_state(m) else {
            return Applied::Unchanged;
        };
        match self.links.get_mut(&fresh.ifindex) {
            None => {
                let ifindex = fresh.ifindex;
                self.links.insert(ifindex, fresh);
                Applied::Added(ifindex)
            }
            Some(known) => {
                let before = known.clone();
                if known.name != fresh.name {
                    // Renamed: who is behind it is looked up again.
                    known.owner = None;
                    known.guest_id = None;
                }
                known.name = fresh.name;
                known.mac = fresh.mac;
                known.up = fresh.up;
                known.loopback = fresh.loopback;
                known.kind = fresh.kind.or(known.kind.take());
                known.link_netnsid = fresh.link_netnsid;
                known.peer_ifindex = fresh.peer_ifindex;
                if *known == before {
                    Applied::Unchanged
                } else {
                    Applied::Changed(fresh.ifindex)
                }
            }
        }
    }

    fn del_link(&mut self, m: &LinkMessage) -> Applied {
        if m.header.interface_family == AddressFamily::Bridge {
            return Applied::Unchanged;
        }
        match self.links.remove(&m.header.index) {
            Some(gone) => Applied::Removed(Box::new(gone)),
            None => Applied::Unchanged,
        }
    }

    fn address(&mut self, m: &AddressMessage, add: bool, dumped: bool) -> Applied {
        let Some(iface) = self.links.get_mut(&m.header.index) else {
            return Applied::Unchanged;
        };
        let Some(addr) = address_of(m) else {
            return Applied::Unchanged;
        };
        let had = iface.addrs.contains(&addr);
        match (add, had) {
            (true, false) => match addr {
                // The kernel lists IPv4 addresses oldest first and IPv6 ones newest first
                // (what a dump and getifaddrs show); events keep that order.
                IpAddr::V6(_) if !dumped => iface.addrs.insert(0, addr),
                _ => iface.addrs.push(addr),
            },
            (false, true) => iface.addrs.retain(|a| *a != addr),
            _ => return Applied::Unchanged,
        }
        set_primaries(iface);
        Applied::Changed(m.header.index)
    }

    /// Replaces the table with `fresh` (a full dump after lost events), keeping what was
    /// learnt about links that are still there (same ifindex and name). Returns the links
    /// that are gone.
    pub fn replace(&mut self, mut fresh: LinkTable) -> Vec<Interface> {
        for (ifindex, iface) in fresh.links.iter_mut() {
            if let Some(old) = self.links.get(ifindex).filter(|o| o.name == iface.name) {
                iface.owner = old.owner.clone();
                iface.guest_id = old.guest_id.clone();
            }
        }
        let gone = self
            .links
            .iter()
            .filter(|(i, old)| fresh.links.get(i).is_none_or(|n| n.name != old.name))
            .map(|(_, old)| old.clone())
            .collect();
        *self = fresh;
        gone
    }
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// `ipv4`/`ipv6` from `addrs`, as [`super::discover`] chooses them: the first IPv4 address
/// listed; the oldest (last listed) IPv6 address that is not link-local, else a link-local one.
fn set_primaries(iface: &mut Interface) {
    iface.ipv4 = iface.addrs.iter().find_map(|a| match a {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    let v6: Vec<Ipv6Addr> = iface
        .addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        })
        .collect();
    iface.ipv6 = v6
        .iter()
        .rev()
        .find(|a| !is_link_local(a))
        .or_else(|| v6.first())
        .copied();
}

/// The link's own state (no addresses) from an `RTM_NEWLINK`; `None` without a name.
fn link_state(m: &LinkMessage) -> Option<Interface> {
    let mut iface = Interface {
        ifindex: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        loopback: m.header.flags.contains(LinkFlags::Loopback),
        link_type: Some(u16::from(m.header.link_layer_type)),
        ..Interface::default()
    };
    for attr in &m.attributes {
        match attr {
            LinkAttribute::IfName(name) => iface.name = name.clone(),
            LinkAttribute::Address(mac) if mac.len() == 6 && mac.iter().any(|b| *b != 0) => {
                iface.mac = Some(
                    mac.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
            LinkAttribute::LinkInfo(infos) => {
                iface.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            LinkAttribute::LinkNetNsId(id) => iface.link_netnsid = Some(*id),
            LinkAttribute::Link(peer) if *peer != 0 => iface.peer_ifindex = Some(*peer),
            _ => {}
        }
    }
    (!iface.name.is_empty()).then_some(iface)
}

/// The interface's own address in an address message: `IFA_LOCAL` for IPv4 (on a
/// point-to-point link `IFA_ADDRESS` is the peer's), else `IFA_ADDRESS`.
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    match m.header.family {
        AddressFamily::Inet => local.or(address),
        AddressFamily::Inet6 => address.or(local),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rtnetlink::packet_route::link::InfoKind;

    use super::*;

    fn link(ifindex: u32, name: &str, up: bool, extra: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.extend(extra);
        m
    }

    fn addr(ifindex: u32, ip: &str) -> AddressMessage {
        let ip: IpAddr = ip.parse().unwrap();
        let mut m = AddressMessage::default();
        m.header.index = ifindex;
        m.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.attributes.push(AddressAttribute::Address(ip));
        if ip.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(ip));
        }
        m
    }

    #[test]
    fn links_and_addresses_follow_the_kernels_messages() {
        let mut t = LinkTable::default();
        let veth = link(
            7,
            "veth1",
            false,
            vec![
                LinkAttribute::Address(vec![2, 0, 0, 0, 0, 7]),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
                LinkAttribute::LinkNetNsId(3),
                LinkAttribute::Link(2),
            ],
        );
        assert_eq!(
            t.apply(&RouteNetlinkMessage::NewLink(veth.clone())),
            Applied::Added(7)
        );
        assert_eq!(
            t.apply(&RouteNetlinkMessage::NewLink(veth.clone())),
            Applied::Unchanged
        );
        let i = t.get(7).unwrap();
        assert_eq!(
            (
                i.name.as_str(),
                i.mac.as_deref(),
                i.kind.as_deref(),
                i.link_netnsid,
                i.peer_ifindex,
                i.up
            ),
            (
                "veth1",
                Some("02:00:00:00:00:07"),
                Some("veth"),
                Some(3),
                Some(2),
                false
            )
        );
        for a in ["10.0.0.1", "10.0.0.2", "fe80::1", "fd00::1", "fd00::2"] {
            assert_eq!(
                t.apply(&RouteNetlinkMessage::NewAddress(addr(7, a))),
                Applied::Changed(7)
            );
        }
        let i = t.get(7).unwrap();
        assert_eq!(i.ipv4, Some("10.0.0.1".parse().unwrap()));
        // Oldest global IPv6 address: the first one added.
        assert_eq!(i.ipv6, Some("fd00::1".parse().unwrap()));
        assert_eq!(i.addrs.len(), 5);
        t.apply(&RouteNetlinkMessage::DelAddress(addr(7, "10.0.0.1")));
        t.apply(&RouteNetlinkMessage::DelAddress(addr(7, "fd00::1")));
        let i = t.get(7).unwrap();
        assert_eq!(i.ipv4, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(i.ipv6, Some("fd00::2".parse().unwrap()));
        // Up: a change; the addresses stay.
        let mut up = veth.clone();
        up.header.flags = LinkFlags::Up;
        assert_eq!(
            t.apply(&RouteNetlinkMessage::NewLink(up)),
            Applied::Changed(7)
        );
        assert!(t.get(7).unwrap().up);
        assert_eq!(t.get(7).unwrap().addrs.len(), 3);
        // Addresses of links the table does not know are ignored.
        assert_eq!(
            t.apply(&RouteNetlinkMessage::NewAddress(addr(99, "10.9.9.9"))),
            Applied::Unchanged
        );
    }

    #[test]
    fn a_dump_keeps_the_kernels_order_so_the_oldest_ipv6_address_is_primary() {
        let mut t = LinkTable::default();
        t.apply(&RouteNetlinkMessage::NewLink(link(4, "eth0", true, vec![])));
        // What `ip -6 addr` shows after adding fd00::1 then fd00::2: newest first, link-local
        // last; IPv4 oldest first.
        for a in ["10.0.0.1", "10.0.0.2", "fd00::2", "fd00::1", "fe80::1"] {
            t.add_dumped_address(&addr(4, a));
        }
        let i = t.get(4).unwrap();
        assert_eq!(i.ipv4, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(i.ipv6, Some("fd00::1".parse().unwrap()));
        // A later event adds fd00::3: still the oldest is primary.
        t.apply(&RouteNetlinkMessage::NewAddress(addr(4, "fd00::3")));
        assert_eq!(t.get(4).unwrap().ipv6, Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn a_bridge_port_leaving_its_bridge_is_not_a_deleted_link() {
        let mut t = LinkTable::default();
        t.apply(&RouteNetlinkMessage::NewLink(link(
            5,
            "veth5",
            true,
            vec![],
        )));
        let mut port = link(5, "veth5", true, vec![]);
        port.header.interface_family = AddressFamily::Bridge;
        assert_eq!(
            t.apply(&RouteNetlinkMessage::DelLink(port.clone())),
            Applied::Unchanged
        );
        assert_eq!(
            t.apply(&RouteNetlinkMessage::NewLink(port)),
            Applied::Unchanged
        );
        match t.apply(&RouteNetlinkMessage::DelLink(link(
            5,
            "veth5",
            true,
            vec![],
        ))) {
            Applied::Removed(gone) => assert_eq!(gone.name, "veth5"),
            other => panic!("{other:?}"),
        }
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_dump_replaces_the_table_and_names_what_is_gone() {
        let mut t = LinkTable::default();
        for (i, n) in [(1, "lo"), (2, "eth0"), (3, "veth3")] {
            t.apply(&RouteNetlinkMessage::NewLink(link(i, n, true, vec![])));
        }
        t.get_mut(2).unwrap().guest_id = Some("kept".into());
        t.get_mut(3).unwrap().guest_id = Some("renamed".into());
        let mut fresh = LinkTable::default();
        for (i, n) in [(1, "lo"), (2, "eth0"), (3, "other"), (4, "veth4")] {
            fresh.apply(&RouteNetlinkMessage::NewLink(link(i, n, true, vec![])));
        }
        let gone: Vec<String> = t.replace(fresh).into_iter().map(|i| i.name).collect();
        assert_eq!(gone, ["veth3"]);
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(2).unwrap().guest_id.as_deref(), Some("kept"));
        assert_eq!(t.get(3).unwrap().guest_id, None);
    }
}
