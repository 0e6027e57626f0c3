//! What an independent parser, etherparse (crates.io), makes of an Ethernet frame, turned into
//! what flowlog's datapath must count for it: a flow (key, bytes, AWS TCP flags) or one of the
//! non-flow counters. flowlog's own parser is never consulted here.
//!
//! etherparse's lax slicer finds the headers and where each ends (it honours the IP length
//! fields and falls back to the frame when they are 0 or too large, as flowlog does). On top
//! of that, these rules say what a flow is, from AWS's documentation and the RFCs:
//!
//! - The key is the IP header's addresses and protocol, IPv4 addresses IPv4-mapped. For IPv4
//!   the protocol is the IPv4 header's (an AH is not walked: AWS logs protocol 51); for IPv6
//!   it is the one after the extension headers etherparse walks (hop-by-hop, routing,
//!   destination options, fragment, AH). A later fragment (offset > 0) ends the chain: its
//!   protocol is the fragment header's next header and what follows is payload.
//! - Ports (and TCP flags) come from the transport header of a first fragment: TCP, UDP,
//!   UDP-Lite (UDP's 8-byte layout) through etherparse's slices; SCTP from its 12-byte common
//!   header (RFC 9260 3.1: ports first; etherparse has no SCTP slice), inside the IP payload
//!   etherparse delimits. ICMP and ICMPv6 have ports 0 but need their 8-byte header. Other
//!   protocols have ports 0. An incomplete or invalid header the key needs means no flow:
//!   malformed.
//! - Bytes are the IP length field (IPv4 total length; IPv6 payload length + 40), as AWS counts
//!   them; TCP flags follow AWS's rule (FIN 1, SYN 2, RST 4, SYN with ACK 18).
//!
//! Where flowlog reads less than etherparse, it may count the frame as non-IP or malformed
//! instead, and [`Oracle::instead`] states why. Nothing else may differ.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    Icmpv4Slice, Icmpv6Slice, IpNumber, Ipv6ExtensionSlice, LaxIpPayloadSlice, LaxLinkExtSlice,
    LaxNetSlice, LaxSlicedPacket, LinkSlice, TcpSlice, UdpSlice, err::Layer,
};

/// What one frame must be counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expected {
    Flow(FlowOf),
    NotIp,
    Malformed,
}

/// A flow as the datapath keys and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowOf {
    pub family: u8,
    pub protocol: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub bytes: u64,
    pub tcp_flags: u8,
}

/// Why flowlog may count a frame as non-IP or malformed where etherparse finds more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// flowlog reads two VLAN tags, 802.1Q (0x8100) and 802.1ad (0x88a8): a third tag, the
    /// pre-standard QinQ TPID 0x9100 or MACsec (0x88e5) leaves it at a non-IP ethertype.
    VlanBeyondTwoTags,
    /// The IP version nibble is not the ethertype's (etherparse goes by the nibble).
    VersionNotEthertype,
    /// An IPv4 total length below the header length (but not 0, which is BIG TCP): etherparse
    /// falls back to the frame's length, flowlog calls the header invalid.
    Ipv4TotalBelowHeader,
    /// More IPv6 extension headers than flowlog's bounded walk (6) before the upper layer.
    Ipv6ChainBeyondBound,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::VlanBeyondTwoTags => {
                "a third VLAN tag, TPID 0x9100 or MACsec: flowlog reads two 802.1Q/802.1ad tags (non-IP)"
            }
            Reason::VersionNotEthertype => {
                "IP version nibble differs from the ethertype: flowlog trusts the ethertype (malformed)"
            }
            Reason::Ipv4TotalBelowHeader => {
                "IPv4 total length below the header length: flowlog calls the header invalid (malformed)"
            }
            Reason::Ipv6ChainBeyondBound => {
                "more than 6 IPv6 extension headers: beyond flowlog's bounded walk (malformed)"
            }
        }
    }
}

/// How flowlog's count of a frame compares with the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    Exactly,
    /// Non-IP or malformed instead, for this reason.
    Instead(Reason),
    Differs,
}

/// The verdict for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oracle {
    /// What etherparse and the rules above make of the frame.
    pub expected: Expected,
    /// What flowlog may count instead (non-IP or malformed), and why.
    pub instead: Option<(Expected, Reason)>,
}

impl Oracle {
    fn exactly(expected: Expected) -> Self {
        Oracle {
            expected,
            instead: None,
        }
    }

    /// Whether flowlog counting `got` agrees with this verdict, and how.
    pub fn agreement(&self, got: &Expected) -> Agreement {
        if *got == self.expected {
            return Agreement::Exactly;
        }
        match self.instead {
            Some((alt, reason)) if alt == *got => Agreement::Instead(reason),
            _ => Agreement::Differs,
        }
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const AH: u8 = 51;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;
const UDPLITE: u8 = 136;
/// SCTP common header (RFC 9260 3.1).
const SCTP_HLEN: usize = 12;
/// flowlog's bound on the IPv6 extension headers it walks.
const MAX_IPV6_EXT_HEADERS: usize = 6;

/// AWS's `tcp-flags` of one packet (AWS VPC Flow Logs documentation): FIN 1, SYN 2, RST 4,
/// and 18 for SYN-ACK; other bits are not logged.
fn aws_tcp_flags(tcp: &TcpSlice<'_>) -> u8 {
    let mut f = 0;
    if tcp.fin() {
        f |= 1;
    }
    if tcp.syn() {
        f |= 2;
    }
    if tcp.rst() {
        f |= 4;
    }
    if tcp.syn() && tcp.ack() {
        f |= 16;
    }
    f
}

/// The verdict for `frame`.
pub fn judge(frame: &[u8]) -> Oracle {
    let Ok(p) = LaxSlicedPacket::from_ethernet(frame) else {
        // Shorter than an Ethernet header: no ethertype to go by.
        return Oracle::exactly(Expected::Malformed);
    };
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return Oracle::exactly(Expected::Malformed);
    };
    // The TPIDs etherparse followed, outermost first.
    let mut ethertype = eth.ether_type().0;
    let mut beyond = false;
    for (i, ext) in p.link_exts.iter().enumerate() {
        match ext {
            LaxLinkExtSlice::Vlan(v) => {
                if i >= 2 || !matches!(ethertype, TPID_8021Q | TPID_8021AD) {
                    beyond = true;
                }
                ethertype = v.ether_type().0;
            }
            LaxLinkExtSlice::Macsec(_) => beyond = true,
        }
    }
    // Stopped at a tag (link_exts full) or cut inside one past flowlog's reach.
    if matches!(ethertype, TPID_8021Q | TPID_8021AD | 0x9100) && p.link_exts.len() >= 2 {
        beyond = true;
    }
    if matches!(ethertype, 0x9100 | 0x88e5) {
        beyond = true;
    }
    let plain = judge_after_link(&p, frame);
    if beyond {
        return match plain.expected {
            Expected::NotIp => plain,
            _ => Oracle {
                expected: plain.expected,
                instead: Some((Expected::NotIp, Reason::VlanBeyondTwoTags)),
            },
        };
    }
    // The ethertype flowlog goes by decides between IPv4 and IPv6.
    match (&p.net, ethertype) {
        (Some(LaxNetSlice::Ipv4(_)), ETH_IPV6) | (Some(LaxNetSlice::Ipv6(_)), ETH_IPV4) => Oracle {
            expected: plain.expected,
            instead: Some((Expected::Malformed, Reason::VersionNotEthertype)),
        },
        _ => plain,
    }
}

fn judge_after_link(p: &LaxSlicedPacket<'_>, _frame: &[u8]) -> Oracle {
    if let Some((_, layer)) = &p.stop_err
        && matches!(layer, Layer::VlanHeader | Layer::MacsecHeader)
    {
        return Oracle::exactly(Expected::Malformed);
    }
    match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let total = h.total_len();
            let header_len = usize::from(h.ihl()) * 4;
            let (src, dst) = (
                Ipv4Addr::from(h.source()).to_ipv6_mapped().octets(),
                Ipv4Addr::from(h.destination()).to_ipv6_mapped().octets(),
            );
            let protocol = h.protocol().0;
            let first_fragment = h.fragments_offset().value() == 0;
            let expected = if protocol == AH {
                // The IPv4 header's protocol; etherparse's AH parse (and its errors) do not
                // change the key.
                flow(4, AH, src, dst, (0, 0), u64::from(total), 0)
            } else {
                transport(
                    4,
                    protocol,
                    src,
                    dst,
                    u64::from(total),
                    first_fragment,
                    ip.payload(),
                )
            };
            let below_header = total != 0 && usize::from(total) < header_len;
            Oracle {
                expected,
                instead: below_header
                    .then_some((Expected::Malformed, Reason::Ipv4TotalBelowHeader)),
            }
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let bytes = u64::from(h.payload_length()) + 40;
            let (src, dst) = (
                Ipv6Addr::from(h.source()).octets(),
                Ipv6Addr::from(h.destination()).octets(),
            );
            // The chain up to a later fragment header, which ends it.
            let mut walked = 0usize;
            for ext in parsed_extensions(ip.extensions()) {
                walked += 1;
                if let Ipv6ExtensionSlice::Fragment(f) = ext
                    && f.fragment_offset().value() != 0
                {
                    let expected = flow(6, f.next_header().0, src, dst, (0, 0), bytes, 0);
                    return chain_bound(expected, walked);
                }
            }
            if let Some((_, layer)) = &p.stop_err
                && matches!(
                    layer,
                    Layer::Ipv6HopByHopHeader
                        | Layer::Ipv6DestOptionsHeader
                        | Layer::Ipv6RouteHeader
                        | Layer::Ipv6FragHeader
                        | Layer::IpAuthHeader
                        | Layer::Ipv6ExtHeader
                )
            {
                return Oracle::exactly(Expected::Malformed);
            }
            let payload = ip.payload();
            let expected = transport(6, payload.ip_number.0, src, dst, bytes, true, payload);
            chain_bound(expected, walked)
        }
        // An IP ethertype whose header etherparse cannot read.
        None if p.stop_err.as_ref().is_some_and(|(_, l)| {
            matches!(l, Layer::IpHeader | Layer::Ipv4Header | Layer::Ipv6Header)
        }) =>
        {
            Oracle::exactly(Expected::Malformed)
        }
        Some(LaxNetSlice::Arp(_)) | None => Oracle::exactly(Expected::NotIp),
    }
}

/// The extension headers etherparse parsed, in order.
///
/// Not `exts.into_iter()` alone: after a lax walk that stopped with an error, etherparse
/// 0.18.2's iterator goes on to the header that failed and reads it with
/// `from_slice_unchecked` past the end of the slice (found by this fuzz test: Rust's UB check
/// aborts in `Ipv6RawExtHeaderSlice::from_slice_unchecked`). So it is stopped once the headers
/// it gave cover the parsed bytes.
fn parsed_extensions<'a>(
    exts: &etherparse::Ipv6ExtensionsSlice<'a>,
) -> Vec<Ipv6ExtensionSlice<'a>> {
    let total = exts.slice().len();
    let mut covered = 0usize;
    let mut out = Vec::new();
    let mut iter = exts.clone().into_iter();
    while covered < total {
        let Some(ext) = iter.next() else { break };
        covered += match &ext {
            Ipv6ExtensionSlice::HopByHop(s)
            | Ipv6ExtensionSlice::Routing(s)
            | Ipv6ExtensionSlice::DestinationOptions(s) => s.slice().len(),
            Ipv6ExtensionSlice::Fragment(s) => s.slice().len(),
            Ipv6ExtensionSlice::Authentication(s) => s.slice().len(),
        };
        out.push(ext);
    }
    out
}

/// flowlog walks at most [`MAX_IPV6_EXT_HEADERS`] extension headers.
fn chain_bound(expected: Expected, walked: usize) -> Oracle {
    Oracle {
        expected,
        instead: (walked > MAX_IPV6_EXT_HEADERS && expected != Expected::Malformed)
            .then_some((Expected::Malformed, Reason::Ipv6ChainBeyondBound)),
    }
}

fn flow(
    family: u8,
    protocol: u8,
    src: [u8; 16],
    dst: [u8; 16],
    (src_port, dst_port): (u16, u16),
    bytes: u64,
    tcp_flags: u8,
) -> Expected {
    Expected::Flow(FlowOf {
        family,
        protocol,
        src,
        dst,
        src_port,
        dst_port,
        bytes,
        tcp_flags,
    })
}

/// The flow of a datagram whose upper layer is `protocol`, from etherparse's slice of its IP
/// payload (`payload`), or malformed when the header the key needs is not all there.
fn transport(
    family: u8,
    protocol: u8,
    src: [u8; 16],
    dst: [u8; 16],
    bytes: u64,
    first_fragment: bool,
    payload: &LaxIpPayloadSlice<'_>,
) -> Expected {
    let data = payload.payload;
    let no_ports = flow(family, protocol, src, dst, (0, 0), bytes, 0);
    if !first_fragment {
        return no_ports;
    }
    debug_assert_eq!(payload.ip_number, IpNumber(protocol));
    match protocol {
        TCP => match TcpSlice::from_slice(data) {
            Ok(t) => flow(
                family,
                protocol,
                src,
                dst,
                (t.source_port(), t.destination_port()),
                bytes,
                aws_tcp_flags(&t),
            ),
            Err(_) => Expected::Malformed,
        },
        UDP | UDPLITE => match UdpSlice::from_slice_lax(data) {
            Ok(u) => flow(
                family,
                protocol,
                src,
                dst,
                (u.source_port(), u.destination_port()),
                bytes,
                0,
            ),
            Err(_) => Expected::Malformed,
        },
        SCTP if data.len() >= SCTP_HLEN => flow(
            family,
            protocol,
            src,
            dst,
            (
                u16::from_be_bytes([data[0], data[1]]),
                u16::from_be_bytes([data[2], data[3]]),
            ),
            bytes,
            0,
        ),
        SCTP => Expected::Malformed,
        ICMP => match Icmpv4Slice::from_slice(data) {
            Ok(_) => no_ports,
            // etherparse also wants a timestamp message (type 13/14) to be exactly 20 bytes;
            // the key only needs the 8-byte header, which it found.
            Err(e)
                if matches!(
                    e.layer,
                    Layer::Icmpv4Timestamp | Layer::Icmpv4TimestampReply
                ) =>
            {
                no_ports
            }
            Err(_) => Expected::Malformed,
        },
        ICMPV6 => match Icmpv6Slice::from_slice(data) {
            Ok(_) => no_ports,
            Err(_) => Expected::Malformed,
        },
        _ => no_ports,
    }
}
