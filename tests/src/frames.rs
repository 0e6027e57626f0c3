//! Crafted Ethernet frames for the parser's host tests, the datapath tests (fed to the TC
//! programs with `BPF_PROG_TEST_RUN`) and the benchmarks.
//!
//! A [`FrameBuilder`] writes Ethernet, up to any number of VLAN tags, IPv4 (with options and
//! fragment fields) or IPv6 (with extension headers), and a transport header (TCP, UDP,
//! UDP-Lite, SCTP, ICMP, ICMPv6, or raw bytes for any other protocol), followed by a payload.
//! Every length field is correct; the IPv4 header checksum is filled in, transport checksums
//! are left 0 (nothing on these paths checks them). [`Frame`] records where each header
//! starts, so tests can cut frames at header boundaries.
//!
//! Protocol numbers here are written out from the RFCs/IANA rather than taken from
//! `flowlog_common`, so a wrong constant there cannot hide behind the same wrong constant
//! here. This file depends on `std` only: flowlog-common's host tests include it with
//! `#[path]` (they cannot depend on this crate, which depends on the agent).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Tag protocol identifier of an 802.1Q (customer) VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// Tag protocol identifier of an 802.1ad (service, outer) VLAN tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// IANA protocol numbers used by the builder.
pub mod proto {
    pub const HOPOPTS: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DSTOPTS: u8 = 60;
    pub const SCTP: u8 = 132;
    pub const MOBILITY: u8 = 135;
    pub const UDPLITE: u8 = 136;
}

/// TCP flag bits as they sit in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;

/// MAC addresses every crafted frame carries (locally administered).
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The transport header a frame carries after its IP header(s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP with `flags` (see [`tcp_flags`]) and `options_len` bytes of options (a multiple of
    /// 4, at most 40; filled with NOPs), so the header is `20 + options_len` bytes.
    Tcp {
        src: u16,
        dst: u16,
        flags: u8,
        options_len: usize,
    },
    /// UDP (8-byte header).
    Udp { src: u16, dst: u16 },
    /// UDP-Lite (8-byte header, checksum coverage 0 = whole datagram).
    UdpLite { src: u16, dst: u16 },
    /// SCTP common header (12 bytes); chunks, if any, are the payload.
    Sctp { src: u16, dst: u16 },
    /// ICMP echo-style header (8 bytes).
    Icmp { icmp_type: u8, code: u8 },
    /// ICMPv6 echo-style header (8 bytes).
    Icmpv6 { icmp_type: u8, code: u8 },
    /// Any other protocol: `header` is written as is (e.g. a 4-byte GRE header).
    Other { protocol: u8, header: Vec<u8> },
}

impl Transport {
    /// The GRE base header carrying IPv4 (RFC 2784), as a protocol without ports.
    pub fn gre() -> Self {
        Transport::Other {
            protocol: proto::GRE,
            header: vec![0, 0, 0x08, 0x00],
        }
    }

    /// IANA protocol number (the IPv4 protocol / IPv6 next header value).
    pub fn protocol(&self) -> u8 {
        match self {
            Transport::Tcp { .. } => proto::TCP,
            Transport::Udp { .. } => proto::UDP,
            Transport::UdpLite { .. } => proto::UDPLITE,
            Transport::Sctp { .. } => proto::SCTP,
            Transport::Icmp { .. } => proto::ICMP,
            Transport::Icmpv6 { .. } => proto::ICMPV6,
            Transport::Other { protocol, .. } => *protocol,
        }
    }

    /// Bytes this header occupies in the frame.
    pub fn header_len(&self) -> usize {
        match self {
            Transport::Tcp { options_len, .. } => 20 + options_len,
            Transport::Udp { .. } | Transport::UdpLite { .. } => 8,
            Transport::Sctp { .. } => 12,
            Transport::Icmp { .. } | Transport::Icmpv6 { .. } => 8,
            Transport::Other { header, .. } => header.len(),
        }
    }

    /// Source and destination port; `(0, 0)` for protocols without ports.
    pub fn ports(&self) -> (u16, u16) {
        match self {
            Transport::Tcp { src, dst, .. }
            | Transport::Udp { src, dst }
            | Transport::UdpLite { src, dst }
            | Transport::Sctp { src, dst } => (*src, *dst),
            _ => (0, 0),
        }
    }

    /// Whether the protocol has ports (TCP, UDP, UDP-Lite, SCTP).
    pub fn has_ports(&self) -> bool {
        matches!(
            self,
            Transport::Tcp { .. }
                | Transport::Udp { .. }
                | Transport::UdpLite { .. }
                | Transport::Sctp { .. }
        )
    }

    fn write(&self, payload_len: usize, out: &mut Vec<u8>) {
        match self {
            Transport::Tcp {
                src,
                dst,
                flags,
                options_len,
            } => {
                assert!(
                    options_len.is_multiple_of(4) && *options_len <= 40,
                    "TCP options must be a multiple of 4 bytes, at most 40 (got {options_len})"
                );
                out.extend_from_slice(&src.to_be_bytes());
                out.extend_from_slice(&dst.to_be_bytes());
                out.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // sequence number
                out.extend_from_slice(&0u32.to_be_bytes()); // acknowledgment number
                out.push((((20 + options_len) / 4) as u8) << 4); // data offset
                out.push(*flags);
                out.extend_from_slice(&0xffffu16.to_be_bytes()); // window
                out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                out.extend(std::iter::repeat_n(1u8, *options_len)); // NOP options
            }
            Transport::Udp { src, dst } | Transport::UdpLite { src, dst } => {
                out.extend_from_slice(&src.to_be_bytes());
                out.extend_from_slice(&dst.to_be_bytes());
                let third = match self {
                    // UDP length; UDP-Lite checksum coverage (0 = everything).
                    Transport::Udp { .. } => u16::try_from(8 + payload_len).unwrap_or(0),
                    _ => 0,
                };
                out.extend_from_slice(&third.to_be_bytes());
                out.extend_from_slice(&[0, 0]); // checksum
            }
            Transport::Sctp { src, dst } => {
                out.extend_from_slice(&src.to_be_bytes());
                out.extend_from_slice(&dst.to_be_bytes());
                out.extend_from_slice(&0xdead_beefu32.to_be_bytes()); // verification tag
                out.extend_from_slice(&[0, 0, 0, 0]); // checksum
            }
            Transport::Icmp { icmp_type, code } | Transport::Icmpv6 { icmp_type, code } => {
                out.extend_from_slice(&[*icmp_type, *code, 0, 0, 0x12, 0x34, 0, 1]);
            }
            Transport::Other { header, .. } => out.extend_from_slice(header),
        }
    }
}

/// One IPv6 extension header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options, `(ext_len + 1) * 8` bytes (PadN-filled).
    HopByHop { ext_len: u8 },
    /// Routing header, `(ext_len + 1) * 8` bytes, type 253 (experimental), segments left 0.
    Routing { ext_len: u8 },
    /// Destination options, `(ext_len + 1) * 8` bytes (PadN-filled).
    DestOpts { ext_len: u8 },
    /// Mobility header, `(ext_len + 1) * 8` bytes.
    Mobility { ext_len: u8 },
    /// Fragment header (8 bytes). `offset` is in 8-byte units; `more` is the M flag.
    Fragment { offset: u16, more: bool },
    /// Authentication header, `(payload_len + 2) * 4` bytes (RFC 4302).
    Ah { payload_len: u8 },
}

impl Ipv6Ext {
    /// The six extension headers RFC 8200 section 4.1 allows in one packet (destination options
    /// twice), in its recommended order.
    pub fn rfc8200_chain() -> Vec<Ipv6Ext> {
        vec![
            Ipv6Ext::HopByHop { ext_len: 0 },
            Ipv6Ext::DestOpts { ext_len: 1 },
            Ipv6Ext::Routing { ext_len: 2 },
            Ipv6Ext::Fragment {
                offset: 0,
                more: true,
            },
            Ipv6Ext::Ah { payload_len: 4 },
            Ipv6Ext::DestOpts { ext_len: 0 },
        ]
    }

    /// The next-header value that announces this header.
    pub fn protocol(&self) -> u8 {
        match self {
            Ipv6Ext::HopByHop { .. } => proto::HOPOPTS,
            Ipv6Ext::Routing { .. } => proto::ROUTING,
            Ipv6Ext::DestOpts { .. } => proto::DSTOPTS,
            Ipv6Ext::Mobility { .. } => proto::MOBILITY,
            Ipv6Ext::Fragment { .. } => proto::FRAGMENT,
            Ipv6Ext::Ah { .. } => proto::AH,
        }
    }

    /// Bytes this header occupies.
    pub fn byte_len(&self) -> usize {
        match self {
            Ipv6Ext::HopByHop { ext_len }
            | Ipv6Ext::Routing { ext_len }
            | Ipv6Ext::DestOpts { ext_len }
            | Ipv6Ext::Mobility { ext_len } => (*ext_len as usize + 1) * 8,
            Ipv6Ext::Fragment { .. } => 8,
            Ipv6Ext::Ah { payload_len } => (*payload_len as usize + 2) * 4,
        }
    }

    fn write(&self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Ipv6Ext::HopByHop { ext_len } | Ipv6Ext::DestOpts { ext_len } => {
                out.extend_from_slice(&[next, *ext_len]);
                let mut left = self.byte_len() - 2;
                while left > 0 {
                    if left == 1 {
                        out.push(0); // Pad1
                        left = 0;
                    } else {
                        let n = (left - 2).min(255);
                        out.extend_from_slice(&[1, n as u8]); // PadN
                        out.extend(std::iter::repeat_n(0u8, n));
                        left -= n + 2;
                    }
                }
            }
            Ipv6Ext::Routing { ext_len } => {
                out.extend_from_slice(&[next, *ext_len, 253, 0]);
                out.resize(start + self.byte_len(), 0);
            }
            Ipv6Ext::Mobility { ext_len } => {
                out.extend_from_slice(&[next, *ext_len]);
                out.resize(start + self.byte_len(), 0);
            }
            Ipv6Ext::Fragment { offset, more } => {
                assert!(
                    *offset < 0x2000,
                    "fragment offset {offset} does not fit in 13 bits"
                );
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&((offset << 3) | u16::from(*more)).to_be_bytes());
                out.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // identification
            }
            Ipv6Ext::Ah { payload_len } => {
                assert!(
                    *payload_len >= 1,
                    "an AH is at least 12 bytes (payload_len >= 1)"
                );
                out.extend_from_slice(&[next, *payload_len, 0, 0]);
                out.extend_from_slice(&0x0000_0100u32.to_be_bytes()); // SPI
                out.extend_from_slice(&1u32.to_be_bytes()); // sequence number
                out.resize(start + self.byte_len(), 0); // ICV
            }
        }
        debug_assert_eq!(out.len() - start, self.byte_len());
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Network {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        options_len: usize,
        fragment: u16,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        ext: Vec<Ipv6Ext>,
    },
}

/// Builds one frame; start with [`ipv4`] or [`ipv6`], pick a transport, then [`build`](Self::build).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameBuilder {
    vlans: Vec<(u16, u16)>,
    network: Network,
    transport: Option<Transport>,
    payload_len: usize,
}

/// An IPv4 frame from `src` to `dst`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> FrameBuilder {
    FrameBuilder::new(Network::V4 {
        src,
        dst,
        options_len: 0,
        fragment: 0,
    })
}

/// An IPv6 frame from `src` to `dst`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> FrameBuilder {
    FrameBuilder::new(Network::V6 {
        src,
        dst,
        ext: Vec::new(),
    })
}

impl FrameBuilder {
    fn new(network: Network) -> Self {
        FrameBuilder {
            vlans: Vec::new(),
            network,
            transport: None,
            payload_len: 0,
        }
    }

    /// Adds a VLAN tag (`tpid` is [`TPID_8021Q`] or [`TPID_8021AD`]); the first call is the
    /// outermost tag.
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push((tpid, vid & 0x0fff));
        self
    }

    /// IPv4 only: `len` bytes of options (a multiple of 4, at most 40), so IHL = 5 + len / 4.
    pub fn ipv4_options(mut self, len: usize) -> Self {
        assert!(
            len.is_multiple_of(4) && len <= 40,
            "IPv4 options must be a multiple of 4 bytes, at most 40 (got {len})"
        );
        match &mut self.network {
            Network::V4 { options_len, .. } => *options_len = len,
            Network::V6 { .. } => panic!("ipv4_options on an IPv6 frame"),
        }
        self
    }

    /// IPv4 only: fragment `offset` (in 8-byte units) and the MF (more fragments) flag.
    pub fn ipv4_fragment(mut self, offset: u16, more: bool) -> Self {
        assert!(
            offset < 0x2000,
            "fragment offset {offset} does not fit in 13 bits"
        );
        match &mut self.network {
            Network::V4 { fragment, .. } => *fragment = offset | if more { 0x2000 } else { 0 },
            Network::V6 { .. } => {
                panic!("ipv4_fragment on an IPv6 frame; use ext(Ipv6Ext::Fragment)")
            }
        }
        self
    }

    /// IPv6 only: appends an extension header (in order after the fixed header).
    pub fn ext(mut self, e: Ipv6Ext) -> Self {
        match &mut self.network {
            Network::V6 { ext, .. } => ext.push(e),
            Network::V4 { .. } => panic!("IPv6 extension header on an IPv4 frame"),
        }
        self
    }

    /// IPv6 only: appends each extension header of `chain`, in order.
    pub fn exts(self, chain: impl IntoIterator<Item = Ipv6Ext>) -> Self {
        chain.into_iter().fold(self, FrameBuilder::ext)
    }

    /// Sets the transport header.
    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = Some(t);
        self
    }

    /// TCP without options.
    pub fn tcp(self, src: u16, dst: u16, flags: u8) -> Self {
        self.transport(Transport::Tcp {
            src,
            dst,
            flags,
            options_len: 0,
        })
    }

    pub fn udp(self, src: u16, dst: u16) -> Self {
        self.transport(Transport::Udp { src, dst })
    }

    pub fn sctp(self, src: u16, dst: u16) -> Self {
        self.transport(Transport::Sctp { src, dst })
    }

    pub fn icmp(self, icmp_type: u8, code: u8) -> Self {
        self.transport(Transport::Icmp { icmp_type, code })
    }

    pub fn icmpv6(self, icmp_type: u8, code: u8) -> Self {
        self.transport(Transport::Icmpv6 { icmp_type, code })
    }

    /// `len` payload bytes after the transport header.
    pub fn payload(mut self, len: usize) -> Self {
        self.payload_len = len;
        self
    }

    /// Writes the frame. The transport header is written even for non-first fragments (where
    /// on the wire it would be payload), so tests can check it is *not* read as one.
    ///
    /// Panics if no transport was chosen or a length does not fit its header field.
    pub fn build(&self) -> Frame {
        let transport = self
            .transport
            .as_ref()
            .expect("FrameBuilder::build: choose a transport first");
        let mut out = Vec::with_capacity(128 + self.payload_len);
        out.extend_from_slice(&DST_MAC);
        out.extend_from_slice(&SRC_MAC);
        // dst, src, then per tag its TPID and TCI (priority 0, VLAN id), then the ethertype.
        for (tpid, vid) in &self.vlans {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&vid.to_be_bytes());
        }
        let ethertype = match self.network {
            Network::V4 { .. } => ETHERTYPE_IPV4,
            Network::V6 { .. } => ETHERTYPE_IPV6,
        };
        out.extend_from_slice(&ethertype.to_be_bytes());
        let l3_offset = out.len();
        let l4_len = transport.header_len() + self.payload_len;
        let ip_len = match &self.network {
            Network::V4 {
                src,
                dst,
                options_len,
                fragment,
            } => {
                let hlen = IPV4_HLEN + options_len;
                let total = hlen + l4_len;
                let total16 = u16::try_from(total).expect("IPv4 total length exceeds 65535");
                out.push(0x40 | (hlen / 4) as u8);
                out.push(0); // DSCP/ECN
                out.extend_from_slice(&total16.to_be_bytes());
                out.extend_from_slice(&0x4242u16.to_be_bytes()); // identification
                out.extend_from_slice(&fragment.to_be_bytes());
                out.push(64); // TTL
                out.push(transport.protocol());
                out.extend_from_slice(&[0, 0]); // checksum, below
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                if *options_len > 0 {
                    out.extend(std::iter::repeat_n(1u8, options_len - 1)); // NOP
                    out.push(0); // end of options list
                }
                let sum = ipv4_checksum(&out[l3_offset..l3_offset + hlen]);
                out[l3_offset + 10..l3_offset + 12].copy_from_slice(&sum.to_be_bytes());
                total as u32
            }
            Network::V6 { src, dst, ext } => {
                let ext_len: usize = ext.iter().map(Ipv6Ext::byte_len).sum();
                let payload =
                    u16::try_from(ext_len + l4_len).expect("IPv6 payload length exceeds 65535");
                let first = ext.first().map_or(transport.protocol(), Ipv6Ext::protocol);
                out.extend_from_slice(&[0x60, 0, 0, 0]); // version, traffic class, flow label
                out.extend_from_slice(&payload.to_be_bytes());
                out.push(first);
                out.push(64); // hop limit
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                for (i, e) in ext.iter().enumerate() {
                    let next = ext
                        .get(i + 1)
                        .map_or(transport.protocol(), Ipv6Ext::protocol);
                    e.write(next, &mut out);
                }
                IPV6_HLEN as u32 + u32::from(payload)
            }
        };
        let l4_offset = out.len();
        transport.write(self.payload_len, &mut out);
        let payload_offset = out.len();
        out.extend((0..self.payload_len).map(|i| (i % 251) as u8));
        let (src, dst, first_fragment) = match &self.network {
            Network::V4 {
                src, dst, fragment, ..
            } => (IpAddr::V4(*src), IpAddr::V4(*dst), fragment & 0x1fff == 0),
            Network::V6 { src, dst, ext } => {
                let later = ext
                    .iter()
                    .any(|e| matches!(e, Ipv6Ext::Fragment { offset, .. } if *offset != 0));
                (IpAddr::V6(*src), IpAddr::V6(*dst), !later)
            }
        };
        Frame {
            bytes: out,
            l3_offset,
            l4_offset,
            payload_offset,
            ip_len,
            src,
            dst,
            transport: transport.clone(),
            first_fragment,
        }
    }
}

/// A crafted frame and where its headers start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Vec<u8>,
    /// Start of the IP header (after Ethernet and VLAN tags).
    pub l3_offset: usize,
    /// Start of the transport header (after IPv4 options / IPv6 extension headers).
    pub l4_offset: usize,
    /// Start of the payload (after the transport header).
    pub payload_offset: usize,
    /// IP datagram length the IP header declares (IPv4 total length; IPv6 payload length + 40).
    pub ip_len: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The transport header written at `l4_offset`.
    pub transport: Transport,
    /// False for a fragment with a non-zero offset: its bytes after the IP header chain are
    /// payload, even though the builder wrote `transport` there.
    pub first_fragment: bool,
}

impl Frame {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Address family as flow keys store it: 4 or 6.
    pub fn family(&self) -> u8 {
        if self.src.is_ipv4() { 4 } else { 6 }
    }

    /// Source address as flow keys store it (IPv4 mapped).
    pub fn src_key(&self) -> [u8; 16] {
        key_addr(self.src)
    }

    /// Destination address as flow keys store it (IPv4 mapped).
    pub fn dst_key(&self) -> [u8; 16] {
        key_addr(self.dst)
    }

    /// Ports as flow keys store them: the transport's in a first fragment, else `(0, 0)`.
    pub fn key_ports(&self) -> (u16, u16) {
        if self.first_fragment {
            self.transport.ports()
        } else {
            (0, 0)
        }
    }

    /// The shortest prefix of this frame flowlog can build a key from: through the whole
    /// transport header (TCP with its options, UDP/UDP-Lite 8, SCTP 12, ICMP/ICMPv6 8 bytes) in
    /// a first fragment, else through the IP header chain (options, extension headers).
    /// A frame cut shorter than this is counted as malformed; any longer prefix gives the same
    /// flow as the whole frame (lengths come from the IP header).
    pub fn key_bytes(&self) -> usize {
        let needed = match self.transport {
            Transport::Other { .. } => 0,
            ref t => t.header_len(),
        };
        self.l4_offset + if self.first_fragment { needed } else { 0 }
    }

    /// IP plus transport header bytes as flowlog counts them per GSO segment: the IP header
    /// chain, plus the transport header when the ports are read (ICMP's is not counted).
    pub fn counted_header_len(&self) -> usize {
        let transport = if self.first_fragment && self.transport.has_ports() {
            self.transport.header_len()
        } else {
            0
        };
        self.l4_offset - self.l3_offset + transport
    }
}

/// An address as flow keys store it: IPv6 as is, IPv4 as `::ffff:a.b.c.d`.
pub fn key_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A frame of any non-IP `ethertype` with `payload_len` bytes after the Ethernet header.
pub fn non_ip(ethertype: u16, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(ETH_HLEN + payload_len);
    out.extend_from_slice(&DST_MAC);
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend(std::iter::repeat_n(0u8, payload_len));
    out
}

/// An ARP request (RFC 826, Ethernet/IPv4): `sender` asks who has `target`. 42 bytes.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut out = non_ip(ETHERTYPE_ARP, 0);
    out.extend_from_slice(&[0, 1]); // hardware type Ethernet
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    out.extend_from_slice(&[6, 4, 0, 1]); // address lengths, opcode request
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&sender.octets());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&target.octets());
    out
}

/// RFC 1071 one's-complement checksum of an IPv4 header (checksum field zero).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
