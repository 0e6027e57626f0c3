//! Packet parser: Ethernet (up to two VLAN tags) → IPv4/IPv6 (options, a bounded walk over
//! extension headers, fragments) → TCP/UDP/UDP-Lite/SCTP ports, ICMP/ICMPv6 and any other
//! protocol with ports 0.
//!
//! It reads through [`PacketBytes`], so the same code runs in the kernel (over
//! `bpf_skb_load_bytes`) and in host unit tests (over a byte slice). Every loop has a constant
//! bound and every read is a fixed-size copy at a checked offset, which keeps the verifier happy.
//!
//! A frame is a flow only when every header the key comes from is complete and valid: the IP
//! header chain, and in a first fragment the whole transport header (TCP with its options,
//! ICMP's 8 bytes), all inside the datagram's own length field. Anything else is
//! [`Outcome::Malformed`]. `tests/tests/parser_fuzz.rs` holds the program to that against
//! etherparse, an independent parser, over random and mutated frames.

use crate::{FAMILY_IPV4, FAMILY_IPV6, FiveTuple, aws_tcp_flags, ipv4_mapped};

/// Random access to a packet's bytes.
pub trait PacketBytes {
    /// Copy `N` bytes starting at `offset`, or `None` if the packet is shorter.
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl PacketBytes for [u8] {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let src = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(src);
        Some(out)
    }
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;
/// Mobility header: an upper-layer protocol here, as for the kernel (`ipv6_ext_hdr`) and
/// RFC 6275 (it is the last header; its payload protocol must be 59, no next header).
pub const IPPROTO_MH: u8 = 135;
pub const IPPROTO_UDPLITE: u8 = 136;
pub const IPPROTO_SCTP: u8 = 132;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
/// 802.1ad outer tag + 802.1Q inner tag.
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked; a chain still going after that many is malformed (its
/// upper-layer protocol is out of the bounded walk's reach).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;
/// The fixed part of every ICMP and ICMPv6 message: type, code, checksum and 4 bytes.
const ICMP_HLEN: usize = 8;

/// What one packet contributes to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub tuple: FiveTuple,
    /// AWS `tcp-flags` bits of this packet (0 for non-TCP).
    pub tcp_flags: u8,
    /// IP datagram length from the header (IPv4 total length; IPv6 payload length + 40).
    pub ip_len: u32,
    /// Offset of the IP header from the start of the frame.
    pub l3_offset: u32,
    /// Bytes of IP + transport headers: what each extra GSO segment repeats.
    pub header_len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Flow(Parsed),
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NotIp,
    /// IP, but a header is cut short or invalid.
    Malformed,
}

/// Parse a frame that starts with an Ethernet header.
#[inline(always)]
pub fn parse_ethernet<P: PacketBytes + ?Sized>(pkt: &P) -> Outcome {
    let Some(eth) = pkt.read::<ETH_HLEN>(0) else {
        return Outcome::Malformed;
    };
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut offset = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = pkt.read::<VLAN_HLEN>(offset) else {
            return Outcome::Malformed;
        };
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        offset += VLAN_HLEN;
    }
    parse_l3(pkt, offset, ethertype)
}

/// Parse from the IP header at `offset`, given the ethertype that announced it.
#[inline(always)]
pub fn parse_l3<P: PacketBytes + ?Sized>(pkt: &P, offset: usize, ethertype: u16) -> Outcome {
    match ethertype {
        ETH_P_IP => parse_ipv4(pkt, offset),
        ETH_P_IPV6 => parse_ipv6(pkt, offset),
        _ => Outcome::NotIp,
    }
}

#[inline(always)]
fn parse_ipv4<P: PacketBytes + ?Sized>(pkt: &P, l3: usize) -> Outcome {
    let Some(h) = pkt.read::<20>(l3) else {
        return Outcome::Malformed;
    };
    if h[0] >> 4 != 4 {
        return Outcome::Malformed;
    }
    // IHL is 4 bits, so the header is at most 60 bytes; below 5 words it is invalid.
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    // A total length of 0 is how IPv4 BIG TCP (Linux >= 6.3) marks a GSO/GRO packet larger
    // than 64 KiB: still a flow; its size then comes from the skb (see the TC program).
    if ihl < 20 || (total_len != 0 && total_len < ihl) {
        return Outcome::Malformed;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let first_fragment = frag & 0x1fff == 0;
    let protocol = h[9];
    let ip_end = if total_len == 0 {
        usize::MAX
    } else {
        l3 + total_len
    };
    let mut tuple = FiveTuple {
        family: FAMILY_IPV4,
        protocol,
        src_addr: ipv4_mapped([h[12], h[13], h[14], h[15]]),
        dst_addr: ipv4_mapped([h[16], h[17], h[18], h[19]]),
        src_port: 0,
        dst_port: 0,
    };
    parse_l4(
        pkt,
        Datagram {
            l3,
            l4: l3 + ihl,
            ip_len: total_len as u32,
            ip_end,
            first_fragment,
        },
        &mut tuple,
    )
}

#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(pkt: &P, l3: usize) -> Outcome {
    let Some(h) = pkt.read::<40>(l3) else {
        return Outcome::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Outcome::Malformed;
    }
    let payload_len = u16::from_be_bytes([h[4], h[5]]) as u32;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut offset = l3 + 40;
    let mut first_fragment = true;
    for i in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // RFC 8200 4.1: hop-by-hop options only right after the IPv6 header.
            IPPROTO_HOPOPTS if i > 0 => return Outcome::Malformed,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(e) = pkt.read::<2>(offset) else {
                    return Outcome::Malformed;
                };
                next = e[0];
                offset += (e[1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                let Some(e) = pkt.read::<2>(offset) else {
                    return Outcome::Malformed;
                };
                // RFC 4302 2.2: at least 3 words (payload length 1).
                if e[1] == 0 {
                    return Outcome::Malformed;
                }
                next = e[0];
                offset += (e[1] as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let Some(e) = pkt.read::<4>(offset) else {
                    return Outcome::Malformed;
                };
                next = e[0];
                offset += 8;
                if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                    // A later fragment carries payload, not headers: stop here (as the kernel's
                    // ipv6_skip_exthdr does) with the protocol the fragment header names.
                    first_fragment = false;
                    break;
                }
            }
            _ => break,
        }
    }
    if first_fragment
        && matches!(
            next,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
        )
    {
        // More extension headers than the walk's bound.
        return Outcome::Malformed;
    }
    let mut tuple = FiveTuple {
        family: FAMILY_IPV6,
        protocol: next,
        src_addr: src,
        dst_addr: dst,
        src_port: 0,
        dst_port: 0,
    };
    // Payload length 0: a jumbogram or IPv6 BIG TCP (Linux >= 5.19), whose length comes from
    // the skb (see the TC program); without GSO it counts its 40 header bytes.
    let ip_end = if payload_len == 0 {
        usize::MAX
    } else {
        l3 + 40 + payload_len as usize
    };
    parse_l4(
        pkt,
        Datagram {
            l3,
            l4: offset,
            ip_len: payload_len + 40,
            ip_end,
            first_fragment,
        },
        &mut tuple,
    )
}

/// Where one datagram's parts are, for [`parse_l4`].
struct Datagram {
    /// Offsets of the IP header and of what follows the IP header chain.
    l3: usize,
    l4: usize,
    /// IP datagram length from the header (what a packet counts as bytes).
    ip_len: u32,
    /// Where the datagram ends by its length field (`usize::MAX` when that field says
    /// "from the skb": IPv4 total length 0, IPv6 payload length 0).
    ip_end: usize,
    /// Offset 0: the transport header is here (later fragments carry payload).
    first_fragment: bool,
}

/// Ports and TCP flags. Only the first fragment carries them; other fragments count with
/// ports 0, as do protocols without ports (ICMP, ICMPv6, GRE, ...).
#[inline(always)]
fn parse_l4<P: PacketBytes + ?Sized>(pkt: &P, d: Datagram, tuple: &mut FiveTuple) -> Outcome {
    let l4 = d.l4;
    let mut tcp_flags = 0;
    // Transport header bytes that repeat in every GSO segment (ICMP's are not counted).
    let mut l4_header = 0usize;
    // Transport header bytes that must be there for the frame to be a flow.
    let mut needed = 0usize;
    match (d.first_fragment, tuple.protocol) {
        (true, IPPROTO_TCP) => {
            let Some(t) = pkt.read::<20>(l4) else {
                return Outcome::Malformed;
            };
            l4_header = ((t[12] >> 4) as usize) * 4;
            // The options too: a header cut inside them is no TCP header.
            if l4_header < 20 || pkt.read::<1>(l4 + l4_header - 1).is_none() {
                return Outcome::Malformed;
            }
            tuple.src_port = u16::from_be_bytes([t[0], t[1]]);
            tuple.dst_port = u16::from_be_bytes([t[2], t[3]]);
            tcp_flags = aws_tcp_flags(t[13]);
            needed = l4_header;
        }
        (true, IPPROTO_UDP | IPPROTO_UDPLITE) => {
            let Some(u) = pkt.read::<8>(l4) else {
                return Outcome::Malformed;
            };
            tuple.src_port = u16::from_be_bytes([u[0], u[1]]);
            tuple.dst_port = u16::from_be_bytes([u[2], u[3]]);
            l4_header = 8;
            needed = 8;
        }
        (true, IPPROTO_SCTP) => {
            let Some(s) = pkt.read::<12>(l4) else {
                return Outcome::Malformed;
            };
            tuple.src_port = u16::from_be_bytes([s[0], s[1]]);
            tuple.dst_port = u16::from_be_bytes([s[2], s[3]]);
            l4_header = 12;
            needed = 12;
        }
        (true, IPPROTO_ICMP | IPPROTO_ICMPV6) => {
            if pkt.read::<ICMP_HLEN>(l4).is_none() {
                return Outcome::Malformed;
            }
            needed = ICMP_HLEN;
        }
        _ => {
            // Last byte of the IP header chain (options, extension headers); l4 >= l3 + 20.
            if pkt.read::<1>(l4 - 1).is_none() {
                return Outcome::Malformed;
            }
        }
    }
    // Headers beyond the datagram's own length are not its headers (the bytes there are
    // Ethernet padding or another packet's).
    if l4 + needed > d.ip_end {
        return Outcome::Malformed;
    }
    Outcome::Flow(Parsed {
        tuple: *tuple,
        tcp_flags,
        ip_len: d.ip_len,
        l3_offset: d.l3 as u32,
        header_len: (l4 - d.l3 + l4_header) as u32,
    })
}
