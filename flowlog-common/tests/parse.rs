//! Host tests of the packet parser over crafted frames (the `[u8]` impl of `PacketBytes`):
//! every frame kind the datapath handles, frames cut at every byte, invalid headers, and
//! AWS's TCP flag rule. The same parser runs in the kernel; `tests/tests/datapath.rs` feeds
//! the same frames to the loaded programs.

// The frame builder lives in the root-only tests crate (shared with the datapath tests and
// the benchmarks). It depends on std only, so it is included here rather than depended on:
// flowlog-tests depends on the agent, which this no_std crate must not pull in.
#[allow(dead_code)]
#[path = "../../tests/src/frames.rs"]
mod frames;

use std::net::{Ipv4Addr, Ipv6Addr};

use flowlog_common::{
    FAMILY_IPV4, FAMILY_IPV6, FiveTuple,
    parse::{MAX_IPV6_EXT_HEADERS, Outcome, Parsed, parse_ethernet},
};
use frames::{
    Frame, FrameBuilder, Ipv6Ext, TPID_8021AD, TPID_8021Q, Transport, arp_request, ipv4, ipv6,
    non_ip, proto, tcp_flags::*,
};

const A4: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
const B4: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 9);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0xabcd, 2);

fn v4() -> FrameBuilder {
    ipv4(A4, B4)
}

fn v6() -> FrameBuilder {
    ipv6(A6, B6)
}

fn parse(bytes: &[u8]) -> Outcome {
    parse_ethernet(bytes)
}

/// The flow a complete frame must give, derived from what the builder wrote (not from the
/// parser): key fields from the frame, `tcp_flags` as the caller expects them.
fn flow_of(f: &Frame, tcp_flags: u8) -> Outcome {
    let (src_port, dst_port) = f.key_ports();
    Outcome::Flow(Parsed {
        tuple: FiveTuple {
            family: f.family(),
            protocol: f.transport.protocol(),
            src_addr: f.src_key(),
            dst_addr: f.dst_key(),
            src_port,
            dst_port,
        },
        tcp_flags,
        ip_len: f.ip_len,
        l3_offset: f.l3_offset as u32,
        header_len: f.counted_header_len() as u32,
    })
}

fn flow(outcome: Outcome) -> Parsed {
    match outcome {
        Outcome::Flow(p) => p,
        other => panic!("expected a flow, got {other:?}"),
    }
}

/// A later fragment (non-zero offset) of a TCP packet: counted as a flow of protocol 6 with
/// ports and tcp-flags 0, with `header_len` and `ip_len`. `case` names the frame in messages.
fn assert_later_tcp_fragment(f: &Frame, header_len: u32, ip_len: u32, case: &str) {
    let p = flow(parse(&f.bytes));
    assert_eq!(Outcome::Flow(p), flow_of(f, 0), "{case}");
    assert_eq!(
        (
            p.tuple.protocol,
            p.tuple.src_port,
            p.tuple.dst_port,
            p.tcp_flags
        ),
        (6, 0, 0, 0),
        "{case}"
    );
    assert_eq!((p.header_len, p.ip_len), (header_len, ip_len), "{case}");
}

fn mapped(a: Ipv4Addr) -> [u8; 16] {
    [
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0xff,
        0xff,
        a.octets()[0],
        a.octets()[1],
        a.octets()[2],
        a.octets()[3],
    ]
}

// ---- the builder itself -------------------------------------------------------------------

#[test]
fn builder_writes_an_exact_ipv4_udp_frame() {
    let f = v4().udp(5353, 53).payload(4).build();
    #[rustfmt::skip]
    let want: Vec<u8> = vec![
        2, 0, 0, 0, 0, 2,   2, 0, 0, 0, 0, 1,   0x08, 0x00,
        0x45, 0, 0, 32,   0x42, 0x42, 0, 0,   64, 17, 0, 0,   10, 1, 2, 3,   192, 168, 7, 9,
        0x14, 0xe9, 0, 53,   0, 12, 0, 0,
        0, 1, 2, 3,
    ];
    let mut got = f.bytes.clone();
    // Verify the header checksum separately, then compare the rest byte for byte.
    assert_eq!(
        frames::ipv4_checksum(&got[14..34]),
        0,
        "IPv4 header checksum does not verify"
    );
    got[24] = 0;
    got[25] = 0;
    assert_eq!(got, want);
    assert_eq!(
        (f.l3_offset, f.l4_offset, f.payload_offset, f.ip_len),
        (14, 34, 42, 32)
    );
}

#[test]
fn builder_writes_ipv6_extension_chain_with_linked_next_headers() {
    let f = v6()
        .ext(Ipv6Ext::HopByHop { ext_len: 0 })
        .ext(Ipv6Ext::Fragment {
            offset: 0,
            more: true,
        })
        .tcp(1, 2, SYN)
        .build();
    let b = &f.bytes;
    assert_eq!(b[14 + 6], proto::HOPOPTS, "IPv6 next header");
    assert_eq!(
        u16::from_be_bytes([b[18], b[19]]),
        8 + 8 + 20,
        "IPv6 payload length"
    );
    assert_eq!(b[54], proto::FRAGMENT, "hop-by-hop next header");
    assert_eq!(b[62], proto::TCP, "fragment next header");
    assert_eq!(
        u16::from_be_bytes([b[64], b[65]]),
        1,
        "fragment offset 0, M set"
    );
    assert_eq!((f.l4_offset, f.ip_len), (70, 76));
}

// ---- IPv4 -----------------------------------------------------------------------------------

#[test]
fn ipv4_tcp() {
    let f = v4().tcp(40000, 443, SYN).payload(10).build();
    let want = Parsed {
        tuple: FiveTuple {
            family: FAMILY_IPV4,
            protocol: 6,
            src_addr: mapped(A4),
            dst_addr: mapped(B4),
            src_port: 40000,
            dst_port: 443,
        },
        tcp_flags: 2,
        ip_len: 50,
        l3_offset: 14,
        header_len: 40,
    };
    assert_eq!(parse(&f.bytes), Outcome::Flow(want));
}

/// IPv4 BIG TCP (Linux >= 6.3) writes a total length of 0 into GSO/GRO packets over 64 KiB:
/// still the flow it belongs to, with `ip_len` 0 (the TC program sizes GSO packets from the
/// skb), where a non-zero total length shorter than the header stays malformed.
#[test]
fn ipv4_big_tcp_total_length_zero_is_still_a_flow() {
    let mut f = v4().tcp(40000, 443, 0x10).payload(100).build();
    f.bytes[16] = 0;
    f.bytes[17] = 0;
    let p = flow(parse(&f.bytes));
    assert_eq!(
        (p.tuple.protocol, p.tuple.src_port, p.tuple.dst_port),
        (6, 40000, 443)
    );
    assert_eq!((p.ip_len, p.header_len), (0, 40));
    f.bytes[17] = 19;
    assert_eq!(
        parse(&f.bytes),
        Outcome::Malformed,
        "total length 19 < 20-byte header"
    );
}

#[test]
fn ipv4_udp() {
    let p = flow(parse(&v4().udp(5353, 53).payload(30).build().bytes));
    assert_eq!(
        (p.tuple.protocol, p.tuple.src_port, p.tuple.dst_port),
        (17, 5353, 53)
    );
    assert_eq!(
        (p.ip_len, p.l3_offset, p.header_len, p.tcp_flags),
        (58, 14, 28, 0)
    );
}

#[test]
fn ipv4_icmp_echo_has_ports_zero_and_aws_ping_size() {
    // A Linux ping: 20 IP + 8 ICMP + 56 data = the 84 bytes per packet in AWS's examples.
    let p = flow(parse(&v4().icmp(8, 0).payload(56).build().bytes));
    assert_eq!(
        (p.tuple.protocol, p.tuple.src_port, p.tuple.dst_port),
        (1, 0, 0)
    );
    assert_eq!((p.ip_len, p.header_len), (84, 20));
}

#[test]
fn ipv4_sctp_and_udplite_ports() {
    let p = flow(parse(&v4().sctp(1000, 2000).payload(16).build().bytes));
    assert_eq!(
        (p.tuple.protocol, p.tuple.src_port, p.tuple.dst_port),
        (132, 1000, 2000)
    );
    assert_eq!((p.ip_len, p.header_len), (48, 32));
    let f = v4()
        .transport(Transport::UdpLite { src: 7, dst: 9 })
        .payload(3)
        .build();
    let p = flow(parse(&f.bytes));
    assert_eq!(
        (p.tuple.protocol, p.tuple.src_port, p.tuple.dst_port),
        (136, 7, 9)
    );
    assert_eq!((p.ip_len, p.header_len), (31, 28));
}

#[test]
fn ipv4_gre_and_esp_count_with_ports_zero() {
    let p = flow(parse(
        &v4().transport(Transport::gre()).payload(20).build().bytes,
    ));
    assert_eq!(
        (p.tuple.protocol, p.tuple.src_port, p.tuple.dst_port),
        (47, 0, 0)
    );
    assert_eq!((p.ip_len, p.header_len), (44, 20));
    let esp = Transport::Other {
        protocol: proto::ESP,
        header: vec![0, 0, 1, 0, 0, 0, 0, 1],
    };
    let p = flow(parse(&v4().transport(esp).payload(40).build().bytes));
    assert_eq!(
        (
            p.tuple.protocol,
            p.tuple.src_port,
            p.tuple.dst_port,
            p.header_len
        ),
        (50, 0, 0, 20)
    );
}

#[test]
fn ipv4_options_every_ihl_from_6_to_15() {
    for words in 1..=10usize {
        let opts = words * 4;
        for t in [
            Transport::Tcp {
                src: 1234,
                dst: 80,
                flags: ACK,
                options_len: 0,
            },
            Transport::Udp { src: 1234, dst: 53 },
            Transport::Icmp {
                icmp_type: 8,
                code: 0,
            },
        ] {
            let f = v4()
                .ipv4_options(opts)
                .transport(t.clone())
                .payload(5)
                .build();
            assert_eq!(f.bytes[14] & 0x0f, 5 + words as u8, "IHL written");
            let p = flow(parse(&f.bytes));
            assert_eq!(Outcome::Flow(p), flow_of(&f, 0), "IHL {} {t:?}", 5 + words);
            let l4 = if t.has_ports() { t.header_len() } else { 0 };
            assert_eq!(
                p.header_len as usize,
                20 + opts + l4,
                "IHL {} {t:?}",
                5 + words
            );
            assert_eq!(p.ip_len as usize, 20 + opts + t.header_len() + 5);
        }
    }
}

// ---- IPv6 -----------------------------------------------------------------------------------

#[test]
fn ipv6_tcp_udp_icmpv6() {
    let p = flow(parse(
        &v6().tcp(40000, 22, SYN | ACK).payload(10).build().bytes,
    ));
    assert_eq!(
        p,
        Parsed {
            tuple: FiveTuple {
                family: FAMILY_IPV6,
                protocol: 6,
                src_addr: A6.octets(),
                dst_addr: B6.octets(),
                src_port: 40000,
                dst_port: 22,
            },
            tcp_flags: 18,
            ip_len: 70,
            l3_offset: 14,
            header_len: 60,
        }
    );
    let p = flow(parse(&v6().udp(546, 547).payload(100).build().bytes));
    assert_eq!(
        (p.tuple.protocol, p.tuple.src_port, p.tuple.dst_port),
        (17, 546, 547)
    );
    assert_eq!((p.ip_len, p.header_len), (148, 48));
    let p = flow(parse(&v6().icmpv6(128, 0).payload(56).build().bytes));
    assert_eq!(
        (
            p.tuple.family,
            p.tuple.protocol,
            p.tuple.src_port,
            p.tuple.dst_port
        ),
        (6, 58, 0, 0)
    );
    assert_eq!((p.ip_len, p.header_len), (104, 40));
}

#[test]
fn ipv6_each_extension_header_is_walked_to_the_ports() {
    for ext in [
        Ipv6Ext::HopByHop { ext_len: 0 },
        Ipv6Ext::HopByHop { ext_len: 3 },
        Ipv6Ext::Routing { ext_len: 0 },
        Ipv6Ext::Routing { ext_len: 4 },
        Ipv6Ext::DestOpts { ext_len: 0 },
        Ipv6Ext::DestOpts { ext_len: 1 },
        Ipv6Ext::Fragment {
            offset: 0,
            more: true,
        },
        Ipv6Ext::Ah { payload_len: 4 },
    ] {
        for t in [
            Transport::Tcp {
                src: 5000,
                dst: 443,
                flags: SYN,
                options_len: 12,
            },
            Transport::Udp { src: 5000, dst: 53 },
            Transport::Sctp {
                src: 5000,
                dst: 38412,
            },
        ] {
            let f = v6()
                .ext(ext.clone())
                .transport(t.clone())
                .payload(9)
                .build();
            let want_flags = if matches!(t, Transport::Tcp { .. }) {
                2
            } else {
                0
            };
            let p = flow(parse(&f.bytes));
            assert_eq!(Outcome::Flow(p), flow_of(&f, want_flags), "{ext:?} {t:?}");
            assert_eq!(
                p.header_len as usize,
                40 + ext.byte_len() + t.header_len(),
                "{ext:?} {t:?}"
            );
            assert_eq!(
                p.ip_len as usize,
                40 + ext.byte_len() + t.header_len() + 9,
                "{ext:?} {t:?}"
            );
        }
    }
}

#[test]
fn ipv6_non_first_fragment_has_ports_zero_and_no_flags() {
    for more in [true, false] {
        let f = v6()
            .ext(Ipv6Ext::Fragment { offset: 185, more })
            .tcp(5000, 443, SYN)
            .payload(100)
            .build();
        assert_later_tcp_fragment(&f, 48, 168, &format!("MF {more}"));
    }
}

#[test]
fn ipv6_non_first_fragment_payload_is_not_walked_as_headers() {
    // The fragment header says an AH (51) follows; in a later fragment what follows is a slice
    // of the payload. Its first bytes here, read as an extension header, would announce a
    // destination-options header of 2 KiB: walking it would run off the frame (Malformed).
    let payload_as_header = vec![proto::DSTOPTS, 255, 0, 0, 0, 0, 0, 0];
    let f = v6()
        .ext(Ipv6Ext::HopByHop { ext_len: 0 })
        .ext(Ipv6Ext::Fragment {
            offset: 100,
            more: false,
        })
        .transport(Transport::Other {
            protocol: proto::AH,
            header: payload_as_header,
        })
        .payload(40)
        .build();
    let p = flow(parse(&f.bytes));
    assert_eq!(
        (p.tuple.protocol, p.tuple.src_port, p.tuple.dst_port),
        (51, 0, 0)
    );
    assert_eq!((p.header_len, p.ip_len), (56, 40 + 8 + 8 + 8 + 40));
}

#[test]
fn ipv6_chain_of_the_maximum_extension_headers_reaches_the_ports() {
    assert_eq!(
        MAX_IPV6_EXT_HEADERS, 6,
        "this test builds exactly the bound"
    );
    let chain = Ipv6Ext::rfc8200_chain();
    let ext_bytes: usize = chain.iter().map(Ipv6Ext::byte_len).sum();
    assert_eq!(ext_bytes, 8 + 16 + 24 + 8 + 24 + 8);
    let f = v6().exts(chain).tcp(33000, 443, SYN).payload(7).build();
    let p = flow(parse(&f.bytes));
    assert_eq!(Outcome::Flow(p), flow_of(&f, 2));
    assert_eq!(
        (p.tuple.src_port, p.tuple.dst_port, p.header_len),
        (33000, 443, 40 + 88 + 20)
    );
}

#[test]
fn ipv6_more_extension_headers_than_the_bound_are_malformed() {
    // After MAX_IPV6_EXT_HEADERS headers the walk stops; a seventh extension header (here a
    // second routing header) means the upper-layer protocol is out of reach: no key.
    let f = v6()
        .exts(Ipv6Ext::rfc8200_chain())
        .ext(Ipv6Ext::Routing { ext_len: 0 })
        .tcp(33000, 443, SYN)
        .payload(7)
        .build();
    assert_eq!(parse(&f.bytes), Outcome::Malformed);
    // Six destination-options headers and then no next header: within the bound.
    let mut b = v6();
    for _ in 0..6 {
        b = b.ext(Ipv6Ext::DestOpts { ext_len: 0 });
    }
    let f = b
        .transport(Transport::Other {
            protocol: proto::NO_NEXT,
            header: vec![],
        })
        .build();
    assert_eq!(flow(parse(&f.bytes)).tuple.protocol, 59);
}

#[test]
fn ipv6_hop_by_hop_after_the_first_header_is_malformed() {
    // RFC 8200 4.1: hop-by-hop options only right after the IPv6 header.
    let ok = v6().ext(Ipv6Ext::HopByHop { ext_len: 0 }).udp(1, 2).build();
    assert_eq!(parse(&ok.bytes), flow_of(&ok, 0));
    for chain in [
        vec![
            Ipv6Ext::HopByHop { ext_len: 0 },
            Ipv6Ext::HopByHop { ext_len: 0 },
        ],
        vec![
            Ipv6Ext::DestOpts { ext_len: 0 },
            Ipv6Ext::HopByHop { ext_len: 0 },
        ],
    ] {
        let f = v6().exts(chain.clone()).udp(1, 2).build();
        assert_eq!(parse(&f.bytes), Outcome::Malformed, "{chain:?}");
    }
}

#[test]
fn ipv6_ah_shorter_than_three_words_is_malformed() {
    let f = v6().ext(Ipv6Ext::Ah { payload_len: 1 }).udp(1, 2).build();
    assert_eq!(parse(&f.bytes), flow_of(&f, 0), "AH of 3 words");
    let mut f = f.clone();
    f.bytes[f.l3_offset + 40 + 1] = 0;
    assert_eq!(parse(&f.bytes), Outcome::Malformed, "AH payload length 0");
}

#[test]
fn ipv6_mobility_header_is_an_upper_layer_protocol() {
    // As for the kernel and RFC 6275: the mobility header ends the chain (its payload protocol
    // is 59), so it is the protocol, with ports 0.
    let f = v6()
        .ext(Ipv6Ext::Mobility { ext_len: 1 })
        .tcp(1, 2, SYN)
        .build();
    let p = flow(parse(&f.bytes));
    assert_eq!(
        (
            p.tuple.protocol,
            p.tuple.src_port,
            p.tuple.dst_port,
            p.tcp_flags
        ),
        (135, 0, 0, 0)
    );
    assert_eq!(p.header_len, 40);
}

#[test]
fn headers_beyond_the_datagrams_own_length_are_malformed() {
    // The transport header must lie inside the length the IP header gives: bytes past it are
    // padding or another packet's.
    let f = v4().tcp(1, 2, SYN).payload(20).build();
    for (total, want_flow) in [(39u16, false), (40, true), (60, true)] {
        let mut g = f.clone();
        g.bytes[16..18].copy_from_slice(&total.to_be_bytes());
        assert_eq!(
            matches!(parse(&g.bytes), Outcome::Flow(_)),
            want_flow,
            "IPv4 total length {total}"
        );
    }
    let f = v6().ext(Ipv6Ext::DestOpts { ext_len: 0 }).udp(1, 2).build();
    for (payload, want_flow) in [(15u16, false), (16, true), (0, true)] {
        let mut g = f.clone();
        g.bytes[18..20].copy_from_slice(&payload.to_be_bytes());
        assert_eq!(
            matches!(parse(&g.bytes), Outcome::Flow(_)),
            want_flow,
            "IPv6 payload length {payload}"
        );
    }
    // A later fragment's IP header chain too.
    let f = v6()
        .ext(Ipv6Ext::Fragment {
            offset: 9,
            more: false,
        })
        .udp(1, 2)
        .build();
    let mut g = f.clone();
    g.bytes[18..20].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(parse(&g.bytes), Outcome::Malformed);
}

#[test]
fn icmp_needs_its_eight_byte_header() {
    for f in [
        v4().icmp(8, 0).build(),
        v6().icmpv6(128, 0).build(),
        v4().ipv4_fragment(0, true).icmp(8, 0).payload(100).build(),
    ] {
        assert_eq!(parse(&f.bytes), flow_of(&f, 0));
        assert_eq!(parse(&f.bytes[..f.l4_offset + 7]), Outcome::Malformed);
        assert_eq!(parse(&f.bytes[..f.l4_offset + 8]), flow_of(&f, 0));
    }
    // A later fragment carries no ICMP header.
    let f = v4().ipv4_fragment(10, false).icmp(8, 0).build();
    assert_eq!(parse(&f.bytes[..f.l4_offset]), flow_of(&f, 0));
}

#[test]
fn ipv6_no_next_header_counts_with_protocol_59() {
    let f = v6()
        .ext(Ipv6Ext::DestOpts { ext_len: 0 })
        .transport(Transport::Other {
            protocol: proto::NO_NEXT,
            header: vec![],
        })
        .build();
    assert_eq!(parse(&f.bytes), flow_of(&f, 0));
    assert_eq!(flow(parse(&f.bytes)).tuple.protocol, 59);
}

// ---- VLAN -----------------------------------------------------------------------------------

#[test]
fn one_vlan_tag() {
    for tpid in [TPID_8021Q, TPID_8021AD] {
        let f = v4().vlan(tpid, 100).udp(10, 20).payload(3).build();
        let p = flow(parse(&f.bytes));
        assert_eq!(Outcome::Flow(p), flow_of(&f, 0));
        assert_eq!((p.l3_offset, p.ip_len, p.header_len), (18, 31, 28));
    }
}

#[test]
fn two_vlan_tags_qinq() {
    let f = v6()
        .vlan(TPID_8021AD, 10)
        .vlan(TPID_8021Q, 200)
        .tcp(1, 2, FIN | ACK)
        .payload(3)
        .build();
    let p = flow(parse(&f.bytes));
    assert_eq!(Outcome::Flow(p), flow_of(&f, 1));
    assert_eq!((p.l3_offset, p.ip_len, p.header_len), (22, 63, 60));
    let f = v4()
        .vlan(TPID_8021AD, 10)
        .vlan(TPID_8021Q, 200)
        .icmp(0, 0)
        .build();
    assert_eq!(flow(parse(&f.bytes)).l3_offset, 22);
}

#[test]
fn three_vlan_tags_are_not_ip() {
    // Only two tags are unwrapped; the third TPID is then the ethertype, which is not IP.
    let f = v4()
        .vlan(TPID_8021AD, 1)
        .vlan(TPID_8021Q, 2)
        .vlan(TPID_8021Q, 3)
        .udp(1, 2)
        .build();
    assert_eq!(parse(&f.bytes), Outcome::NotIp);
}

// ---- IPv4 fragments -------------------------------------------------------------------------

#[test]
fn ipv4_first_fragment_carries_ports() {
    let f = v4()
        .ipv4_fragment(0, true)
        .tcp(40000, 80, SYN)
        .payload(1000)
        .build();
    assert_eq!(f.bytes[14 + 6], 0x20, "MF set");
    let p = flow(parse(&f.bytes));
    assert_eq!(Outcome::Flow(p), flow_of(&f, 2));
    assert_eq!(
        (p.tuple.src_port, p.tuple.dst_port, p.header_len, p.ip_len),
        (40000, 80, 40, 1040)
    );
}

#[test]
fn ipv4_later_fragments_have_ports_zero() {
    for (offset, more) in [(1, true), (185, true), (185, false), (0x1fff, false)] {
        let f = v4()
            .ipv4_fragment(offset, more)
            .tcp(40000, 80, SYN)
            .payload(500)
            .build();
        assert_later_tcp_fragment(&f, 20, 540, &format!("offset {offset} MF {more}"));
    }
}

#[test]
fn ipv4_dont_fragment_flag_is_not_a_fragment() {
    let mut f = v4().udp(1, 2).build();
    f.bytes[14 + 6] = 0x40; // DF
    let p = flow(parse(&f.bytes));
    assert_eq!((p.tuple.src_port, p.tuple.dst_port), (1, 2));
}

// ---- not IP -----------------------------------------------------------------------------------

#[test]
fn non_ip_frames() {
    assert_eq!(parse(&arp_request(A4, B4)), Outcome::NotIp);
    assert_eq!(parse(&non_ip(0x88cc, 50)), Outcome::NotIp, "LLDP");
    assert_eq!(
        parse(&non_ip(0x0026, 38)),
        Outcome::NotIp,
        "802.3 length field"
    );
    assert_eq!(
        parse(&non_ip(0x8100, 4)[..14]),
        Outcome::Malformed,
        "VLAN ethertype, no tag"
    );
    let mut tagged_arp = non_ip(TPID_8021Q, 0);
    tagged_arp.extend_from_slice(&[0, 5, 0x08, 0x06]);
    tagged_arp.extend_from_slice(&arp_request(A4, B4)[14..]);
    assert_eq!(parse(&tagged_arp), Outcome::NotIp, "ARP in a VLAN");
}

// ---- invalid headers --------------------------------------------------------------------------

#[test]
fn ipv4_bad_version_ihl_and_total_length() {
    let good = v4().tcp(1, 2, SYN).payload(20).build();
    assert_eq!(parse(&good.bytes), flow_of(&good, 2));
    for version in [0u8, 5, 6, 15] {
        let mut f = good.clone();
        f.bytes[14] = version << 4 | 5;
        assert_eq!(parse(&f.bytes), Outcome::Malformed, "version {version}");
    }
    for ihl in 0u8..5 {
        let mut f = good.clone();
        f.bytes[14] = 0x40 | ihl;
        assert_eq!(parse(&f.bytes), Outcome::Malformed, "IHL {ihl}");
    }
    // Total length 0 is IPv4 BIG TCP, a flow: `ipv4_big_tcp_total_length_zero_is_still_a_flow`.
    for total in [1u16, 19] {
        let mut f = good.clone();
        f.bytes[16..18].copy_from_slice(&total.to_be_bytes());
        assert_eq!(parse(&f.bytes), Outcome::Malformed, "total length {total}");
    }
    // With options (IHL 6 = 24 bytes), a total length of 23 is shorter than the header.
    let mut f = v4().ipv4_options(4).transport(Transport::gre()).build();
    f.bytes[16..18].copy_from_slice(&23u16.to_be_bytes());
    assert_eq!(parse(&f.bytes), Outcome::Malformed);
    f.bytes[16..18].copy_from_slice(&24u16.to_be_bytes());
    assert_eq!(
        flow(parse(&f.bytes)).ip_len,
        24,
        "total length = header length is valid without ports"
    );
}

#[test]
fn ipv6_bad_version() {
    for version in [0u8, 4, 7] {
        let mut f = v6().udp(1, 2).build();
        f.bytes[14] = version << 4;
        assert_eq!(parse(&f.bytes), Outcome::Malformed, "version {version}");
    }
}

#[test]
fn tcp_data_offset_below_five_words_is_malformed() {
    for doff in 0u8..5 {
        let mut f = v4().tcp(1, 2, SYN).payload(20).build();
        f.bytes[f.l4_offset + 12] = doff << 4;
        assert_eq!(parse(&f.bytes), Outcome::Malformed, "data offset {doff}");
    }
}

// ---- truncation -------------------------------------------------------------------------------

/// Frames of every kind, with the AWS TCP flags each must report.
fn truncation_catalogue() -> Vec<(&'static str, Frame, u8)> {
    let gre = Transport::gre();
    vec![
        ("ipv4 tcp", v4().tcp(40000, 443, SYN).payload(12).build(), 2),
        (
            "ipv4 options + tcp options",
            v4().ipv4_options(12)
                .transport(Transport::Tcp {
                    src: 1,
                    dst: 2,
                    flags: RST,
                    options_len: 12,
                })
                .payload(3)
                .build(),
            4,
        ),
        ("ipv4 udp", v4().udp(5353, 53).payload(9).build(), 0),
        (
            "ipv4 options + icmp",
            v4().ipv4_options(8).icmp(8, 0).payload(8).build(),
            0,
        ),
        ("ipv4 sctp", v4().sctp(1, 2).payload(16).build(), 0),
        ("ipv4 gre", v4().transport(gre).payload(6).build(), 0),
        (
            "ipv4 later fragment + options",
            v4().ipv4_options(4)
                .ipv4_fragment(3, true)
                .udp(1, 2)
                .payload(6)
                .build(),
            0,
        ),
        (
            "ipv6 tcp",
            v6().tcp(40000, 443, SYN | ACK).payload(5).build(),
            18,
        ),
        (
            "ipv6 ext chain + udp",
            v6().ext(Ipv6Ext::HopByHop { ext_len: 1 })
                .ext(Ipv6Ext::Routing { ext_len: 0 })
                .ext(Ipv6Ext::Ah { payload_len: 4 })
                .udp(7, 8)
                .payload(4)
                .build(),
            0,
        ),
        (
            "ipv6 hbh + icmpv6",
            v6().ext(Ipv6Ext::HopByHop { ext_len: 0 })
                .icmpv6(128, 0)
                .payload(4)
                .build(),
            0,
        ),
        (
            "ipv6 later fragment",
            v6().ext(Ipv6Ext::Fragment {
                offset: 9,
                more: true,
            })
            .tcp(1, 2, SYN)
            .payload(8)
            .build(),
            0,
        ),
        (
            "vlan ipv4 udp",
            v4().vlan(TPID_8021Q, 7).udp(1, 2).payload(5).build(),
            0,
        ),
        (
            "qinq ipv6 tcp",
            v6().vlan(TPID_8021AD, 7)
                .vlan(TPID_8021Q, 8)
                .tcp(3, 4, FIN)
                .payload(5)
                .build(),
            1,
        ),
    ]
}

#[test]
fn truncated_at_every_byte_is_malformed_or_the_whole_frames_flow() {
    for (name, f, flags) in truncation_catalogue() {
        let whole = flow_of(&f, flags);
        assert_eq!(parse(&f.bytes), whole, "{name}: whole frame");
        let need = f.key_bytes();
        assert!(
            need > f.l3_offset && need <= f.len(),
            "{name}: key_bytes {need} within the frame"
        );
        for cut in 0..=f.len() {
            let want = if cut < need {
                Outcome::Malformed
            } else {
                whole
            };
            assert_eq!(
                parse(&f.bytes[..cut]),
                want,
                "{name}: cut at {cut} of {} (needs {need})",
                f.len()
            );
        }
    }
}

#[test]
fn truncated_non_ip_frames() {
    let arp = arp_request(A4, B4);
    for cut in 0..=arp.len() {
        let want = if cut < 14 {
            Outcome::Malformed
        } else {
            Outcome::NotIp
        };
        assert_eq!(parse(&arp[..cut]), want, "ARP cut at {cut}");
    }
    let mut tagged = non_ip(TPID_8021AD, 0);
    tagged.extend_from_slice(&[0, 5, 0x08, 0x06, 0, 0]);
    for cut in 0..=tagged.len() {
        let want = if cut < 18 {
            Outcome::Malformed
        } else {
            Outcome::NotIp
        };
        assert_eq!(parse(&tagged[..cut]), want, "tagged ARP cut at {cut}");
    }
}

// ---- TCP flags --------------------------------------------------------------------------------

#[test]
fn tcp_flags_follow_aws_rule() {
    let table: [(u8, u8, &str); 12] = [
        (SYN, 2, "SYN"),
        (SYN | ACK, 18, "SYN-ACK"),
        (FIN | ACK, 1, "FIN-ACK"),
        (FIN, 1, "FIN"),
        (RST, 4, "RST"),
        (RST | ACK, 4, "RST-ACK"),
        (ACK, 0, "ACK"),
        (PSH | ACK, 0, "PSH-ACK"),
        (PSH, 0, "PSH"),
        (SYN | ECE, 2, "SYN+ECE"),
        (SYN | ACK | ECE | CWR, 18, "SYN-ACK+ECE+CWR"),
        (URG | ECE | CWR, 0, "URG+ECE+CWR"),
    ];
    for (raw, aws, name) in table {
        for f in [v4().tcp(1, 2, raw).build(), v6().tcp(1, 2, raw).build()] {
            assert_eq!(
                flow(parse(&f.bytes)).tcp_flags,
                aws,
                "{name} over IPv{}",
                f.family()
            );
        }
    }
    let all = flow(parse(&v4().tcp(1, 2, 0xff).build().bytes)).tcp_flags;
    assert_eq!(
        all,
        1 | 2 | 4 | 16,
        "every bit set: FIN, SYN, RST and SYN-ACK's ACK"
    );
}
