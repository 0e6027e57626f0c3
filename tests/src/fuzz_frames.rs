//! Random and mutated Ethernet frames for the parser fuzz test (`tests/tests/parser_fuzz.rs`):
//! valid frames of every kind the datapath parses (built by [`crate::frames`]: IPv4 with
//! options and fragments, IPv6 with extension-header chains, TCP, UDP, UDP-Lite, SCTP, ICMP,
//! ICMPv6, other protocols, VLAN and QinQ tags), then changed the ways broken or hostile input
//! changes them: bits flipped, length fields lying, cut short, next-header values rewritten,
//! VLAN tags piled up, ethertypes swapped, bytes appended; and frames of random bytes.
//! Seeded, so a failure is reproduced by its seed and index.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::frames::{
    ETH_HLEN, Frame, FrameBuilder, Ipv6Ext, TPID_8021AD, TPID_8021Q, Transport, ipv4, ipv6, proto,
};

/// How a frame was made (a frame may carry several mutations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutation {
    /// A valid frame, as built.
    Valid,
    FlipBits,
    /// A length field (IPv4 IHL or total length, IPv6 payload length, an extension header's
    /// length, TCP data offset, UDP length) set to another value.
    LieLength,
    Truncate,
    /// An IPv4 protocol or IPv6 next-header byte rewritten (long or odd chains).
    NextHeader,
    /// One to four more VLAN tags in front (TPIDs 0x8100, 0x88a8, 0x9100).
    MoreVlanTags,
    /// The outer ethertype replaced.
    Ethertype,
    /// Bytes appended after the datagram.
    Appended,
    /// Random bytes, no frame behind them.
    Random,
}

/// The pre-standard QinQ TPID, which etherparse reads and flowlog does not.
const TPID_9100: u16 = 0x9100;

/// A seeded source of frames.
pub struct FrameSource {
    rng: fastrand::Rng,
}

impl FrameSource {
    pub fn new(seed: u64) -> Self {
        FrameSource {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The next frame and how it was made.
    pub fn next_frame(&mut self) -> (Vec<u8>, Vec<Mutation>) {
        if self.rng.u8(..) < 13 {
            return (self.random_bytes(), vec![Mutation::Random]);
        }
        let frame = self.valid();
        let mut bytes = frame.bytes.clone();
        let n = match self.rng.u8(..) {
            0..64 => 0,
            64..160 => 1,
            160..224 => 2,
            _ => 3,
        };
        let mut done = Vec::new();
        for _ in 0..n {
            let m = self.mutate(&frame, &mut bytes);
            done.push(m);
        }
        if done.is_empty() {
            done.push(Mutation::Valid);
        }
        (bytes, done)
    }

    fn random_bytes(&mut self) -> Vec<u8> {
        let len = self.rng.usize(ETH_HLEN..=256);
        let mut b: Vec<u8> = (0..len).map(|_| self.rng.u8(..)).collect();
        if self.rng.u8(..) < 160 {
            let et: u16 = *self
                .rng
                .choice(&[0x0800u16, 0x86dd, TPID_8021Q, TPID_8021AD])
                .expect("non-empty");
            b[12..14].copy_from_slice(&et.to_be_bytes());
            // Mostly a plausible version nibble after an IP ethertype.
            if b.len() > 14 && self.rng.bool() {
                b[14] = (if et == 0x86dd { 0x60 } else { 0x40 }) | (b[14] & 0x0f);
            }
        }
        b
    }

    /// A valid frame of a random kind.
    fn valid(&mut self) -> Frame {
        let r = &mut self.rng;
        let v6 = r.bool();
        let mut b: FrameBuilder = if v6 {
            ipv6(Ipv6Addr::from(r.u128(..)), Ipv6Addr::from(r.u128(..) | 1))
        } else {
            ipv4(Ipv4Addr::from(r.u32(..)), Ipv4Addr::from(r.u32(..) | 1))
        };
        let tags = match r.u8(..) {
            0..128 => 0,
            128..192 => 1,
            192..246 => 2,
            _ => 3,
        };
        for _ in 0..tags {
            let tpid = match r.u8(..) {
                0..120 => TPID_8021Q,
                120..240 => TPID_8021AD,
                _ => TPID_9100,
            };
            b = b.vlan(tpid, r.u16(..4096));
        }
        if v6 {
            let exts = match r.u8(..) {
                0..100 => 0,
                100..200 => r.usize(1..=3),
                200..240 => r.usize(4..=6),
                _ => r.usize(7..=9),
            };
            for i in 0..exts {
                let ext = match r.u8(..6) {
                    // Mostly first, as RFC 8200 wants it.
                    0 if i == 0 || r.u8(..) < 30 => Ipv6Ext::HopByHop { ext_len: r.u8(..4) },
                    0 | 1 => Ipv6Ext::DestOpts { ext_len: r.u8(..4) },
                    2 => Ipv6Ext::Routing { ext_len: r.u8(..4) },
                    3 => Ipv6Ext::Fragment {
                        offset: if r.bool() { 0 } else { r.u16(1..0x2000) },
                        more: r.bool(),
                    },
                    4 => Ipv6Ext::Ah {
                        payload_len: r.u8(1..8),
                    },
                    _ => Ipv6Ext::Mobility { ext_len: r.u8(..3) },
                };
                b = b.ext(ext);
            }
        } else {
            if r.u8(..) < 80 {
                b = b.ipv4_options(4 * r.usize(1..=10));
            }
            if r.u8(..) < 50 {
                let offset = if r.bool() { 0 } else { r.u16(1..0x2000) };
                b = b.ipv4_fragment(offset, r.bool());
            }
        }
        let transport = match r.u8(..10) {
            0 | 1 => Transport::Tcp {
                src: r.u16(..),
                dst: r.u16(..),
                flags: r.u8(..),
                options_len: if r.bool() { 0 } else { 4 * r.usize(1..=10) },
            },
            2 | 3 => Transport::Udp {
                src: r.u16(..),
                dst: r.u16(..),
            },
            4 => Transport::UdpLite {
                src: r.u16(..),
                dst: r.u16(..),
            },
            5 => Transport::Sctp {
                src: r.u16(..),
                dst: r.u16(..),
            },
            6 if v6 => Transport::Icmpv6 {
                icmp_type: r.u8(..),
                code: r.u8(..),
            },
            6 => Transport::Icmp {
                icmp_type: r.u8(..),
                code: r.u8(..),
            },
            7 => Transport::Icmp {
                icmp_type: r.u8(..),
                code: r.u8(..),
            },
            8 => Transport::gre(),
            _ => {
                let protocol = *r
                    .choice(&[proto::ESP, proto::NO_NEXT, 2, 4, 41, 89, 103, 255])
                    .expect("non-empty");
                let len = r.usize(..16);
                Transport::Other {
                    protocol,
                    header: (0..len).map(|_| r.u8(..)).collect(),
                }
            }
        };
        let payload = if r.bool() {
            r.usize(..32)
        } else {
            r.usize(..300)
        };
        b.transport(transport).payload(payload).build()
    }

    /// Applies one random mutation to `bytes` (made from `frame`, maybe already mutated).
    fn mutate(&mut self, frame: &Frame, bytes: &mut Vec<u8>) -> Mutation {
        let r = &mut self.rng;
        let l3 = frame.l3_offset;
        let l4 = frame.l4_offset;
        let v6 = frame.src.is_ipv6();
        let put16 = |bytes: &mut Vec<u8>, at: usize, v: u16| {
            if at + 2 <= bytes.len() {
                bytes[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
        };
        match r.u8(..8) {
            0 => {
                // Mostly in the headers.
                for _ in 0..r.usize(1..=4) {
                    if bytes.is_empty() {
                        break;
                    }
                    let end = if r.u8(..) < 200 {
                        bytes.len().min(l4 + 64)
                    } else {
                        bytes.len()
                    };
                    let at = r.usize(..end);
                    bytes[at] ^= 1 << r.u8(..8);
                }
                Mutation::FlipBits
            }
            1 => {
                let len = bytes.len();
                let datagram = len.saturating_sub(l3) as u16;
                let edge = |r: &mut fastrand::Rng, exact: u16| -> u16 {
                    match r.u8(..8) {
                        0 => 0,
                        1 => 1,
                        2 => exact.saturating_sub(1),
                        3 => exact.saturating_add(1),
                        4 => exact.saturating_add(r.u16(..64)),
                        5 => exact.saturating_sub(r.u16(..64)),
                        6 => u16::MAX,
                        _ => r.u16(..),
                    }
                };
                match r.u8(..6) {
                    0 if !v6 => {
                        let v = edge(r, datagram);
                        put16(bytes, l3 + 2, v);
                    }
                    0 => {
                        let v = edge(r, datagram.saturating_sub(40));
                        put16(bytes, l3 + 4, v);
                    }
                    1 if !v6 && l3 < len => {
                        bytes[l3] = 0x40 | r.u8(..16);
                    }
                    2 if l4 + 13 <= len => {
                        // TCP data offset (or whatever sits there).
                        bytes[l4 + 12] = (r.u8(..16) << 4) | (bytes[l4 + 12] & 0x0f);
                    }
                    3 => {
                        let v = edge(r, len.saturating_sub(l4) as u16);
                        put16(bytes, l4 + 4, v);
                    }
                    4 if v6 && l3 + 42 <= len => {
                        // The first extension header's length byte (HBH/RTG/DST units of 8,
                        // AH units of 4), or the upper layer's second byte.
                        bytes[l3 + 41] = match r.u8(..4) {
                            0 => 0,
                            1 => 255,
                            _ => r.u8(..),
                        };
                    }
                    _ => {
                        // The IPv4 total length or IPv6 payload length, to a random value.
                        let at = if v6 { l3 + 4 } else { l3 + 2 };
                        let v = r.u16(..);
                        put16(bytes, at, v);
                    }
                }
                Mutation::LieLength
            }
            2 => {
                let len = bytes.len();
                let cut = match r.u8(..4) {
                    // Near a header boundary.
                    0 => l3 + r.usize(..8),
                    1 => l4 + r.usize(..24),
                    2 => l3 + r.usize(..64),
                    _ => r.usize(ETH_HLEN..=len.max(ETH_HLEN)),
                };
                bytes.truncate(cut.clamp(ETH_HLEN.min(len), len));
                Mutation::Truncate
            }
            3 => {
                let value = *r
                    .choice(&[
                        proto::HOPOPTS,
                        proto::ROUTING,
                        proto::FRAGMENT,
                        proto::AH,
                        proto::DSTOPTS,
                        proto::MOBILITY,
                        proto::TCP,
                        proto::UDP,
                        proto::ICMP,
                        proto::ICMPV6,
                        proto::SCTP,
                        proto::UDPLITE,
                        proto::NO_NEXT,
                        proto::ESP,
                    ])
                    .expect("non-empty");
                let value = if r.u8(..) < 20 { r.u8(..) } else { value };
                let at = match (v6, r.u8(..3)) {
                    (false, _) => l3 + 9,
                    (true, 0) => l3 + 6,
                    // The next-header byte of an extension header (they all lead with it), or
                    // a byte of the upper layer.
                    (true, _) => l3 + 40 + 8 * r.usize(..6),
                };
                if at < bytes.len() {
                    bytes[at] = value;
                }
                Mutation::NextHeader
            }
            4 => {
                for _ in 0..r.usize(1..=4) {
                    let tpid = *r
                        .choice(&[TPID_8021Q, TPID_8021AD, TPID_9100])
                        .expect("non-empty");
                    let tag = [(tpid >> 8) as u8, tpid as u8, r.u8(..16), r.u8(..)];
                    let at = 12.min(bytes.len());
                    bytes.splice(at..at, tag);
                }
                Mutation::MoreVlanTags
            }
            5 => {
                let et = *r
                    .choice(&[
                        0x0800u16,
                        0x86dd,
                        TPID_8021Q,
                        TPID_8021AD,
                        TPID_9100,
                        0x0806,
                        0x88e5,
                        0x05dc,
                        0x88cc,
                    ])
                    .expect("non-empty");
                let et = if r.u8(..) < 20 { r.u16(..) } else { et };
                put16(bytes, 12, et);
                Mutation::Ethertype
            }
            _ => {
                for _ in 0..r.usize(1..=64) {
                    bytes.push(r.u8(..));
                }
                Mutation::Appended
            }
        }
    }
}
