//! Synchronous rtnetlink requests owner lookups need, all from the agent's own namespace:
//! one link (here or in a peer namespace named by its nsid), a peer namespace's addresses, and
//! the nsid of a namespace file descriptor.
//!
//! Peer namespaces are read with `IFLA_TARGET_NETNSID` / `IFA_TARGET_NETNSID` (Linux >= 4.20)
//! instead of entering them: no thread has to `setns` and come back, and the caller's
//! namespace is never changed. Requests are built with netlink-packet-route (the crate the
//! event-driven inventory's rtnetlink uses) and sent on a plain blocking netlink-sys socket,
//! because lookups run on a blocking thread, not on the runtime.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::{Context, Result, bail};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkExtentMask, LinkInfo, LinkMessage},
    nsid::{NsidAttribute, NsidMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// What owner lookups need of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// IFLA_INFO_KIND ("veth", "tun", "macvtap", ...).
    pub kind: Option<String>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer's namespace, as an nsid of the requesting namespace.
    pub link_netnsid: Option<i32>,
}

/// One rtnetlink socket in the agent's namespace.
pub struct Rtnl {
    socket: Socket,
    sequence: u32,
}

impl Rtnl {
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("opening a NETLINK_ROUTE socket")?;
        socket.bind_auto().context("binding the netlink socket")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("connecting the netlink socket")?;
        // Address dumps honour IFA_TARGET_NETNSID only with strict checking on.
        socket
            .set_netlink_get_strict_chk(true)
            .context("setting NETLINK_GET_STRICT_CHK")?;
        Ok(Rtnl {
            socket,
            sequence: 0,
        })
    }

    /// The link `ifindex` of the agent's namespace (`target_nsid` None) or of the peer
    /// namespace with that nsid. None when there is no such link.
    pub fn link(&mut self, ifindex: u32, target_nsid: Option<i32>) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        if let Some(nsid) = target_nsid {
            msg.attributes.push(LinkAttribute::IfNetnsId(nsid));
        }
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(&link)),
                _ => None,
            })),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the peer namespace with that nsid.
    pub fn links(&mut self, target_nsid: i32) -> Result<Vec<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        msg.attributes.push(LinkAttribute::IfNetnsId(target_nsid));
        let replies = self.request(
            RouteNetlinkMessage::GetLink(msg),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(link)),
                _ => None,
            })
            .collect())
    }

    /// The addresses of link `ifindex` in the peer namespace with that nsid: IPv4 first, then
    /// IPv6; global before link-local; otherwise in the kernel's order.
    pub fn addresses(&mut self, target_nsid: i32, ifindex: u32) -> Result<Vec<IpAddr>> {
        let mut addrs = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = AddressMessage::default();
            msg.header.family = family;
            msg.header.index = ifindex;
            msg.attributes
                .push(AddressAttribute::TargetNetNsId(target_nsid));
            let replies = match self.request(
                RouteNetlinkMessage::GetAddress(msg),
                NLM_F_REQUEST | NLM_F_DUMP,
            ) {
                Ok(r) => r,
                // IPv6 disabled in the guest's namespace (or the kernel): no IPv6 addresses.
                Err(e) if family == AddressFamily::Inet6 && is_errno(&e, libc::EAFNOSUPPORT) => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut these: Vec<(bool, IpAddr)> = replies
                .iter()
                .filter_map(|m| match m {
                    RouteNetlinkMessage::NewAddress(a) if a.header.index == ifindex => {
                        address_of(a).map(|ip| (a.header.scope != AddressScope::Universe, ip))
                    }
                    _ => None,
                })
                .collect();
            these.sort_by_key(|&(not_global, _)| not_global);
            addrs.extend(these.into_iter().map(|(_, ip)| ip));
        }
        Ok(addrs)
    }

    /// The nsid the agent's namespace has for the namespace behind `fd` (a `/proc/<pid>/ns/net`
    /// or `/run/netns/<name>` file), or None when it has none (then no link here has its peer
    /// there).
    pub fn nsid_of(&mut self, fd: BorrowedFd<'_>) -> Result<Option<i32>> {
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(
            u32::try_from(fd.as_raw_fd()).context("negative file descriptor")?,
        ));
        let replies = self.request(RouteNetlinkMessage::GetNsId(msg), NLM_F_REQUEST)?;
        let id = replies.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewNsId(n) => n.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) => Some(*id),
                _ => None,
            }),
            _ => None,
        });
        // -1 is NETNSA_NSID_NOT_ASSIGNED.
        Ok(id.filter(|&id| id >= 0))
    }

    /// Sends one request and collects its replies (all parts of a dump).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = flags
            | if flags & NLM_F_DUMP == 0 {
                NLM_F_ACK
            } else {
                0
            };
        packet.header.sequence_number = sequence;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .context("sending a netlink request")?;

        let mut replies = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .context("receiving a netlink reply")?;
            let mut offset = 0;
            while offset < data.len() {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&data[offset..])
                        .context("decoding a netlink reply")?;
                let length = reply.header.length as usize;
                if reply.header.sequence_number == sequence {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::Error(e) => match e.code {
                            // The ACK of a non-dump request: everything came before it.
                            None => return Ok(replies),
                            Some(_) => {
                                return Err(anyhow::Error::new(e.to_io()))
                                    .context("the kernel refused a netlink request");
                            }
                        },
                        NetlinkPayload::InnerMessage(m) => replies.push(m),
                        _ => {}
                    }
                }
                if length == 0 {
                    bail!("netlink reply with length 0");
                }
                offset += length;
            }
        }
    }
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut link = Link {
        ifindex: msg.header.index,
        name: String::new(),
        kind: None,
        link: None,
        link_netnsid: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Link(i) => link.link = Some(*i),
            LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    link
}

/// IFA_LOCAL when present (the interface's own address on point-to-point links), else
/// IFA_ADDRESS.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn is_errno(e: &anyhow::Error, errno: i32) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(errno)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback is ifindex 1 in every namespace; reading it needs no privileges.
    #[test]
    fn reads_loopback_of_its_own_namespace() {
        let mut rtnl = Rtnl::open().expect("netlink socket");
        let lo = rtnl.link(1, None).expect("RTM_GETLINK").expect("ifindex 1");
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.link_netnsid, None);
        assert_eq!(rtnl.link(0x7fff_fff0, None).expect("RTM_GETLINK"), None);
    }
}
