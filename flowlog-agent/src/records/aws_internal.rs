//! Traffic AWS does not log (spec §2.8): instance metadata, Amazon Time Sync, the Amazon DNS
//! resolver, DHCP and the VPC router address. Flows to or from these are left out of the
//! records unless `--include-aws-internal-traffic` is given, and counted instead.
//!
//! Done in userspace when records are built: the datapath stays short, and a window's flows
//! are few compared with its packets. Not covered: Windows license activation (its Amazon KMS
//! endpoints are per-region addresses, not a fixed list) and mirrored traffic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowlog_common::{FAMILY_IPV4, FlowKey, ipv4_mapped};
use ipnet::IpNet;

use crate::inventory::metadata::Metadata;

const IPPROTO_UDP: u8 = 17;
/// DHCP server/client and DHCPv6 client/server ports.
const DHCP_PORTS: [u16; 2] = [67, 68];
const DHCPV6_PORTS: [u16; 2] = [546, 547];

/// Fixed link-local service addresses: instance metadata, Amazon Time Sync, Amazon DNS, over
/// IPv4 and over the Nitro IPv6 endpoints.
pub const FIXED_ADDRESSES: [IpAddr; 6] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 123)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 253)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x123)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253)),
];

/// Which flows are AWS-internal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsInternal {
    addresses: Vec<IpAddr>,
    /// `addresses` as flow keys store them (IPv4 or not, IPv4-mapped bytes for IPv4), so a
    /// flow is checked without building addresses from its key.
    key_addresses: Vec<(bool, [u8; 16])>,
}

/// `net`'s base address plus `n` (IPv4 blocks only).
fn base_plus(net: &IpNet, n: u32) -> Option<IpAddr> {
    match net {
        IpNet::V4(v4) => Some(IpAddr::V4(Ipv4Addr::from(
            u32::from(v4.network()).wrapping_add(n),
        ))),
        IpNet::V6(_) => None,
    }
}

impl AwsInternal {
    /// The fixed addresses plus, from what instance metadata or the flags said about the VPC,
    /// the Amazon DNS resolver (base of the primary VPC IPv4 block + 2) and the subnet router
    /// (base of the subnet + 1).
    pub fn new(meta: &Metadata) -> Self {
        let mut addresses = FIXED_ADDRESSES.to_vec();
        let primary_v4 =
            |cidrs: &[IpNet]| cidrs.iter().find(|c| matches!(c, IpNet::V4(_))).copied();
        let vpcs = meta
            .enis
            .values()
            .map(|e| e.vpc_cidrs.as_slice())
            .chain([meta.vpc_cidrs.as_slice()]);
        for block in vpcs.filter_map(primary_v4) {
            addresses.extend(base_plus(&block, 2));
        }
        for subnet in meta.enis.values().filter_map(|e| e.subnet_cidr) {
            addresses.extend(base_plus(&subnet, 1));
        }
        addresses.sort();
        addresses.dedup();
        let key_addresses = addresses
            .iter()
            .map(|a| match a {
                IpAddr::V4(v4) => (true, ipv4_mapped(v4.octets())),
                IpAddr::V6(v6) => (false, v6.octets()),
            })
            .collect();
        AwsInternal {
            addresses,
            key_addresses,
        }
    }

    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    /// True for a flow AWS would not log.
    pub fn matches(&self, key: &FlowKey) -> bool {
        if key.protocol == IPPROTO_UDP {
            let (s, d) = (key.src_port, key.dst_port);
            if (DHCP_PORTS.contains(&s) && DHCP_PORTS.contains(&d))
                || (DHCPV6_PORTS.contains(&s) && DHCPV6_PORTS.contains(&d))
            {
                return true;
            }
        }
        let v4 = key.family == FAMILY_IPV4;
        self.key_addresses
            .iter()
            .any(|(is_v4, a)| *is_v4 == v4 && (*a == key.src_addr || *a == key.dst_addr))
    }
}

#[cfg(test)]
mod tests {
    use flowlog_common::{DIR_EGRESS, FAMILY_IPV4, FAMILY_IPV6, FiveTuple, ipv4_mapped};

    use super::*;
    use crate::inventory::imds::Eni;

    fn key(src: IpAddr, dst: IpAddr, protocol: u8, sport: u16, dport: u16) -> FlowKey {
        let (family, s, d) = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (
                FAMILY_IPV4,
                ipv4_mapped(s.octets()),
                ipv4_mapped(d.octets()),
            ),
            (IpAddr::V6(s), IpAddr::V6(d)) => (FAMILY_IPV6, s.octets(), d.octets()),
            _ => panic!("mixed families"),
        };
        let t = FiveTuple {
            family,
            protocol,
            src_addr: s,
            dst_addr: d,
            src_port: sport,
            dst_port: dport,
        };
        FlowKey::new(2, DIR_EGRESS, &t)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_services_dhcp_resolver_and_router_are_internal() {
        let mut meta = Metadata::default();
        meta.enis.insert(
            "eni-1".into(),
            Eni {
                mac: "0e:00:00:00:00:01".into(),
                interface_id: "eni-1".into(),
                account_id: None,
                vpc_id: None,
                subnet_id: None,
                vpc_cidrs: vec![
                    "2600:1f18::/56".parse().unwrap(),
                    "10.0.0.0/16".parse().unwrap(),
                ],
                subnet_cidr: Some("10.0.1.0/24".parse().unwrap()),
            },
        );
        let x = AwsInternal::new(&meta);
        assert_eq!(x.addresses().len(), 8, "{:?}", x.addresses());
        let me = ip("10.0.1.5");
        for (other, proto, port) in [
            ("169.254.169.254", 6, 80),
            ("169.254.169.123", 17, 123),
            ("169.254.169.253", 17, 53),
            ("10.0.0.2", 17, 53),
            ("10.0.1.1", 1, 0),
        ] {
            assert!(
                x.matches(&key(me, ip(other), proto, 40000, port)),
                "to {other}"
            );
            assert!(
                x.matches(&key(ip(other), me, proto, port, 40000)),
                "from {other}"
            );
        }
        assert!(x.matches(&key(ip("fe80::1"), ip("fd00:ec2::254"), 6, 40000, 80)));
        assert!(x.matches(&key(ip("fe80::1"), ip("fd00:ec2::123"), 17, 40000, 123)));
        assert!(x.matches(&key(ip("fe80::1"), ip("fd00:ec2::253"), 17, 40000, 53)));
        assert!(x.matches(&key(ip("0.0.0.0"), ip("255.255.255.255"), 17, 68, 67)));
        assert!(x.matches(&key(ip("10.0.1.1"), me, 17, 67, 68)));
        assert!(x.matches(&key(ip("fe80::1"), ip("ff02::1:2"), 17, 546, 547)));
        // Not internal: your own DNS server, DNS on other ports, other subnets' hosts.
        assert!(!x.matches(&key(me, ip("10.0.0.3"), 17, 40000, 53)));
        assert!(!x.matches(&key(me, ip("10.0.1.6"), 17, 68, 53)));
        assert!(!x.matches(&key(me, ip("169.254.169.250"), 6, 40000, 80)));
        assert!(
            !x.matches(&key(me, ip("10.0.1.6"), 6, 67, 68)),
            "TCP on the DHCP ports is not DHCP"
        );
    }

    #[test]
    fn without_vpc_knowledge_only_fixed_addresses() {
        let x = AwsInternal::new(&Metadata::default());
        let mut fixed = FIXED_ADDRESSES.to_vec();
        fixed.sort();
        assert_eq!(x.addresses(), &fixed[..]);
        assert!(!x.matches(&key(ip("10.0.1.5"), ip("10.0.0.2"), 17, 40000, 53)));
    }
}
