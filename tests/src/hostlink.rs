//! A veth pair with one end in the host's network namespace and the other in a test namespace:
//! what an agent with the host's network (a container with `--network host`) watches. The host
//! namespace also gets a name under /run/netns (`ip netns attach NAME PID`), so the helpers
//! that work by namespace name (tcpdump, traffic threads) reach it like any test namespace;
//! deleting that name only unmounts it. Only addresses of 10.213.<subnet>.0/24 are used, both
//! ends on this machine.

use std::{net::Ipv6Addr, process::Command};

use crate::netns::{Side, in_netns, run};

/// The pair; removed on drop.
#[derive(Debug)]
pub struct HostLink {
    /// The end in the host namespace (its `netns` is the host namespace's name).
    pub host: Side,
    /// The end in the test namespace.
    pub peer: Side,
}

impl HostLink {
    /// Creates the pair: IPv4 only (no IPv6 chatter), offloads off (every packet is one wire
    /// segment), host end 10.213.<subnet>.1/24, peer 10.213.<subnet>.2/24. `prefix`: 4
    /// characters naming the interfaces and namespaces.
    pub fn new(subnet: u8, prefix: &str) -> Self {
        crate::agent::require_root();
        assert_eq!(prefix.len(), 4, "interface names must stay within 15 bytes");
        let pid = std::process::id();
        let link = HostLink {
            host: Side {
                netns: format!("{prefix}-{pid}-host"),
                iface: format!("{prefix}{pid:x}h"),
                v4: std::net::Ipv4Addr::new(10, 213, subnet, 1),
                v6: Ipv6Addr::UNSPECIFIED,
            },
            peer: Side {
                netns: format!("{prefix}-{pid}-peer"),
                iface: format!("{prefix}{pid:x}p"),
                v4: std::net::Ipv4Addr::new(10, 213, subnet, 2),
                v6: Ipv6Addr::UNSPECIFIED,
            },
        };
        link.create();
        link
    }

    fn create(&self) {
        let (h, p) = (&self.host, &self.peer);
        run(Command::new("ip").args([
            "netns",
            "attach",
            &h.netns,
            &std::process::id().to_string(),
        ]));
        run(Command::new("ip").args(["netns", "add", &p.netns]));
        for kv in [
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv6.conf.all.disable_ipv6=1",
        ] {
            run(in_netns(&p.netns, "sysctl").args(["-qw", kv]));
        }
        run(Command::new("ip").args([
            "link", "add", &h.iface, "type", "veth", "peer", "name", &p.iface, "netns", &p.netns,
        ]));
        // Before the link is up, so it never sends an IPv6 packet.
        run(Command::new("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", h.iface)]));
        for s in [h, p] {
            run(in_netns(&s.netns, "ip").args([
                "addr",
                "add",
                &format!("{}/24", s.v4),
                "dev",
                &s.iface,
            ]));
            run(in_netns(&s.netns, "ethtool")
                .args(["-K", &s.iface, "tso", "off", "gso", "off", "gro", "off"]));
            run(in_netns(&s.netns, "ip").args(["link", "set", &s.iface, "up"]));
        }
        run(in_netns(&p.netns, "ip").args(["link", "set", "lo", "up"]));
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        // Errors ignored: a half-made pair still gets whatever exists removed.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host.iface])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.peer.netns])
            .output();
        // Unmounts the name only: the host namespace lives on.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host.netns])
            .output();
    }
}
