//! The real TC programs, loaded into the running kernel (which also proves the verifier accepts
//! them), fed crafted frames with `BPF_PROG_TEST_RUN`; what they counted is read back with the
//! agent's own [`Collector`]. No interfaces are needed: under test-run the skb belongs to the
//! loopback device of the test's network namespace (ifindex 1).
//!
//! Root only. Each test loads its own copy of the object (maps are per load), so the tests run
//! in parallel threads without sharing state; `two_loads_do_not_share_maps` checks that.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions};
use flowlog_agent::{
    capture::attach::Capture,
    capture::collect::{Collector, DrainedWindow, Window},
    capture::object,
};
use flowlog_common::{
    DIR_EGRESS, DIR_INGRESS, FlowKey, IfaceCounters, IfaceKey, PROG_TC_EGRESS, PROG_TC_INGRESS,
};
use flowlog_tests::frames::{
    Frame, FrameBuilder, Ipv6Ext, TPID_8021AD, TPID_8021Q, Transport, arp_request, ipv4, ipv6,
    non_ip, tcp_flags::*,
};

/// The skb of `BPF_PROG_TEST_RUN` is attached to the loopback device of the caller's network
/// namespace (`net/bpf/test_run.c`), which is always ifindex 1.
const TEST_RUN_IFINDEX: u32 = 1;
/// `TC_ACT_UNSPEC` (-1) as the kernel reports a program's return value.
const TC_ACT_UNSPEC: u32 = -1i32 as u32;
const ETH_HLEN: usize = 14;

/// One load of the eBPF object with the agent's collector on its maps.
struct Datapath {
    capture: Capture,
    collector: Collector,
    windows: u64,
}

impl Datapath {
    /// Loads the embedded object with flow maps of `max_flows` entries. Panics (never skips)
    /// without root or without an embedded object.
    fn load(max_flows: u32) -> Self {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the datapath tests load eBPF programs and need root: run `sudo -E cargo test -p flowlog-tests --test datapath` or `cargo xtask test`"
        );
        let object = object::load(None).unwrap_or_else(|e| {
            panic!(
                "{e:#}\nembed the eBPF object: from the workspace root, after `cargo xtask build`, run FLOWLOG_EBPF_OBJECT=$PWD/target/bpfel-unknown-none/release/flowlog-ebpf cargo test -p flowlog-tests --test datapath"
            )
        });
        let mut capture = Capture::load(&object, max_flows)
            .unwrap_or_else(|e| panic!("loading the eBPF object failed: {e:#}"));
        let collector = Collector::new(capture.ebpf_mut())
            .unwrap_or_else(|e| panic!("taking the window maps failed: {e:#}"));
        Datapath {
            capture,
            collector,
            windows: 0,
        }
    }

    fn program(&mut self, name: &str) -> &SchedClassifier {
        let program = self
            .capture
            .ebpf_mut()
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"));
        let program: &mut SchedClassifier = program.try_into().expect("a TC classifier");
        program
    }

    /// Runs program `name` over `frame` `repeat` times; it must pass every packet on.
    fn run(&mut self, name: &str, frame: &[u8], repeat: u32) {
        run_program(self.program(name), frame, repeat, None);
    }

    fn ingress(&mut self, frame: &[u8], repeat: u32) {
        self.run(PROG_TC_INGRESS, frame, repeat);
    }

    /// Ends the current window and returns what it counted.
    fn cut(&mut self) -> DrainedWindow {
        self.windows += 1;
        let window = Window {
            start: self.windows * 60,
            end: (self.windows + 1) * 60,
        };
        self.collector
            .cut(window)
            .unwrap_or_else(|e| panic!("cutting window {}: {e:#}", self.windows))
    }
}

fn run_program(program: &SchedClassifier, frame: &[u8], repeat: u32, ctx: Option<&[u8]>) {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: ctx,
            repeat,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN over a {}-byte frame: {e:?}", frame.len()));
    assert_eq!(
        result.return_value, TC_ACT_UNSPEC,
        "the programs are passive observers and must return TC_ACT_UNSPEC"
    );
}

/// The longest scheduler tick of a Linux kernel flowlog runs on (CONFIG_HZ >= 100): a stamp is
/// a jiffy, which the window's clock converts to within one tick of the packet's time.
const MAX_TICK_NS: i128 = 10_000_000;

/// CLOCK_MONOTONIC_COARSE in ns: a tick-updated reading, like the jiffies flows are stamped
/// with (a stamp converted to CLOCK_MONOTONIC is within a tick of readings taken around it).
fn stamp_clock_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid pointer to a timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The key the datapath must store for `f`.
fn key_of(f: &Frame, direction: u8) -> FlowKey {
    let (src_port, dst_port) = f.key_ports();
    FlowKey {
        ifindex: TEST_RUN_IFINDEX,
        direction,
        family: f.family(),
        protocol: f.transport.protocol(),
        _pad: 0,
        src_addr: f.src_key(),
        dst_addr: f.dst_key(),
        src_port,
        dst_port,
    }
}

/// Packets, bytes and TCP flags per flow.
type Counts = BTreeMap<FlowKey, (u64, u64, u8)>;

/// A window's flows as [`Counts`]; each flow must appear once, with first <= last and stamps
/// that the window's clock converts into `[since, stamp_clock_ns()]`, give or take a tick.
fn counts(w: &DrainedWindow, since: u64) -> Counts {
    let until = stamp_clock_ns();
    let (lo, hi) = (
        i128::from(since) - MAX_TICK_NS,
        i128::from(until) + MAX_TICK_NS,
    );
    let mut out = Counts::new();
    for (key, t) in &w.flows {
        let (first, last) = (
            w.clock.monotonic_ns(t.first_seen_jiffies),
            w.clock.monotonic_ns(t.last_seen_jiffies),
        );
        assert!(
            t.first_seen_jiffies <= t.last_seen_jiffies && lo <= first && last <= hi,
            "flow {key:?}: first/last seen jiffies {}/{} = {first}/{last} ns outside \
             [{since}, {until}] +- one tick",
            t.first_seen_jiffies,
            t.last_seen_jiffies
        );
        assert!(
            out.insert(*key, (t.packets, t.bytes, t.tcp_flags))
                .is_none(),
            "flow {key:?} drained twice"
        );
    }
    out
}

fn iface(direction: u8, c: IfaceCounters) -> BTreeMap<IfaceKey, IfaceCounters> {
    BTreeMap::from([(IfaceKey::new(TEST_RUN_IFINDEX, direction), c)])
}

fn no_ifaces() -> BTreeMap<IfaceKey, IfaceCounters> {
    BTreeMap::new()
}

fn assert_nothing_lost(w: &DrainedWindow) {
    assert_eq!(
        w.lost,
        IfaceCounters::default(),
        "packets lost to a full interface map"
    );
}

/// One frame of each kind, each from its own source address so no two share a key, with the
/// AWS TCP flags it must report.
fn catalogue() -> Vec<(&'static str, Frame, u8)> {
    let a4 = |i: u8| Ipv4Addr::new(10, 0, 0, i);
    let a6 = |i: u16| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i);
    let b4 = Ipv4Addr::new(10, 9, 9, 9);
    let b6 = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9);
    let v4 = |i| ipv4(a4(i), b4);
    let v6 = |i| ipv6(a6(i), b6);
    let chain = v6(13).exts(Ipv6Ext::rfc8200_chain());
    let b: Vec<(&'static str, FrameBuilder, u8)> = vec![
        ("ipv4 tcp", v4(1).tcp(40000, 443, SYN).payload(20), 2),
        ("ipv4 udp", v4(2).udp(5353, 53).payload(30), 0),
        ("ipv4 icmp", v4(3).icmp(8, 0).payload(56), 0),
        ("ipv4 sctp", v4(4).sctp(2905, 2905).payload(16), 0),
        ("ipv4 gre", v4(5).transport(Transport::gre()).payload(40), 0),
        (
            "ipv4 ihl 6 tcp",
            v4(6).ipv4_options(4).tcp(1, 2, SYN | ACK),
            18,
        ),
        (
            "ipv4 ihl 15 udp",
            v4(7).ipv4_options(40).udp(3, 4).payload(9),
            0,
        ),
        (
            "ipv4 first fragment",
            v4(8).ipv4_fragment(0, true).udp(5, 6).payload(1000),
            0,
        ),
        (
            "ipv4 later fragment",
            v4(9).ipv4_fragment(125, false).udp(5, 6).payload(300),
            0,
        ),
        ("ipv6 tcp", v6(10).tcp(50000, 22, FIN | ACK).payload(7), 1),
        ("ipv6 udp", v6(11).udp(546, 547).payload(70), 0),
        ("ipv6 icmpv6", v6(12).icmpv6(128, 0).payload(56), 0),
        ("ipv6 six extension headers", chain.tcp(33000, 443, RST), 4),
        (
            "ipv6 hop-by-hop udp",
            v6(14)
                .ext(Ipv6Ext::HopByHop { ext_len: 2 })
                .udp(7, 8)
                .payload(3),
            0,
        ),
        (
            "ipv6 routing sctp",
            v6(15).ext(Ipv6Ext::Routing { ext_len: 0 }).sctp(9, 10),
            0,
        ),
        (
            "ipv6 ah tcp",
            v6(16).ext(Ipv6Ext::Ah { payload_len: 4 }).tcp(11, 12, SYN),
            2,
        ),
        (
            "ipv6 later fragment",
            v6(17)
                .ext(Ipv6Ext::Fragment {
                    offset: 77,
                    more: true,
                })
                .tcp(1, 2, SYN)
                .payload(64),
            0,
        ),
        (
            "vlan ipv4 tcp",
            v4(18).vlan(TPID_8021Q, 100).tcp(13, 14, ACK).payload(5),
            0,
        ),
        (
            "qinq ipv4 udp",
            v4(19)
                .vlan(TPID_8021AD, 10)
                .vlan(TPID_8021Q, 20)
                .udp(15, 16)
                .payload(5),
            0,
        ),
        (
            "qinq ipv6 tcp",
            v6(20)
                .vlan(TPID_8021AD, 10)
                .vlan(TPID_8021Q, 20)
                .tcp(17, 18, SYN | ECE),
            2,
        ),
    ];
    b.into_iter()
        .map(|(name, b, flags)| (name, b.build(), flags))
        .collect()
}

#[test]
fn every_frame_kind_is_counted_with_its_exact_key() {
    let mut dp = Datapath::load(1024);
    let cat = catalogue();
    let since = stamp_clock_ns();
    let mut want = Counts::new();
    for (i, (name, f, flags)) in cat.iter().enumerate() {
        // A different packet count per kind, so a swapped flow cannot pass.
        let n = i as u64 + 1;
        dp.ingress(&f.bytes, n as u32);
        assert!(
            want.insert(key_of(f, DIR_INGRESS), (n, n * f.ip_len as u64, *flags))
                .is_none(),
            "{name}: key clash"
        );
    }
    let w = dp.cut();
    let got = counts(&w, since);
    for (name, f, _) in &cat {
        let key = key_of(f, DIR_INGRESS);
        assert_eq!(got.get(&key), want.get(&key), "{name}: {key:?}");
    }
    assert_eq!(got, want);
    assert_eq!(
        w.ifaces,
        no_ifaces(),
        "nothing non-IP, malformed or overflowing"
    );
    assert_nothing_lost(&w);
}

/// The shortest frame `BPF_PROG_TEST_RUN` accepts for an skb program: an Ethernet header,
/// plus the fixed IPv4/IPv6 header when the (outer) ethertype announces one — the kernel pulls
/// it into the linear area and refuses shorter data with EINVAL. Shorter prefixes are covered
/// by flowlog-common's host tests of the same parser.
fn test_run_min_len(frame: &[u8]) -> usize {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => ETH_HLEN + 20,
        0x86dd => ETH_HLEN + 40,
        _ => ETH_HLEN,
    }
}

#[test]
fn truncated_frames_at_every_byte_are_malformed_or_the_whole_flow() {
    let mut dp = Datapath::load(1024);
    for (name, f, flags) in catalogue() {
        let min = test_run_min_len(&f.bytes);
        for cut in 0..min {
            let refused = dp.program(PROG_TC_INGRESS).test_run(TestRunOptions {
                data_in: Some(&f.bytes[..cut]),
                ..Default::default()
            });
            match refused {
                Err(ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EINVAL) => {}
                other => panic!(
                    "{name}: test-run of a {cut}-byte prefix (< {min}): want EINVAL, got {other:?}"
                ),
            }
        }
        let since = stamp_clock_ns();
        let need = f.key_bytes();
        for cut in min..=f.len() {
            dp.ingress(&f.bytes[..cut], 1);
        }
        let w = dp.cut();
        let whole = (f.len() + 1 - need) as u64;
        let malformed = (need - min) as u64;
        assert_eq!(
            counts(&w, since),
            Counts::from([(
                key_of(&f, DIR_INGRESS),
                (whole, whole * f.ip_len as u64, flags)
            )]),
            "{name}: prefixes of {need}..={} bytes are the whole frame's flow",
            f.len()
        );
        let want = if malformed == 0 {
            no_ifaces()
        } else {
            iface(
                DIR_INGRESS,
                IfaceCounters {
                    malformed_packets: malformed,
                    ..Default::default()
                },
            )
        };
        assert_eq!(
            w.ifaces, want,
            "{name}: prefixes of {min}..{need} bytes are malformed"
        );
        assert_nothing_lost(&w);
    }
}

#[test]
fn non_ip_and_invalid_frames_are_counted_per_interface_not_as_flows() {
    let mut dp = Datapath::load(1024);
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    dp.ingress(&arp_request(a, b), 5);
    dp.ingress(&non_ip(0x88cc, 46), 2); // LLDP
    let mut tagged_arp = non_ip(TPID_8021Q, 0);
    tagged_arp.extend_from_slice(&[0, 5, 0x08, 0x06]);
    tagged_arp.extend_from_slice(&arp_request(a, b)[14..]);
    dp.ingress(&tagged_arp, 1);
    let triple_tagged = ipv4(a, b)
        .vlan(TPID_8021AD, 1)
        .vlan(TPID_8021Q, 2)
        .vlan(TPID_8021Q, 3)
        .udp(1, 2)
        .build();
    dp.ingress(&triple_tagged.bytes, 3);

    let good = ipv4(a, b).tcp(1, 2, SYN).payload(20).build();
    let poke = |at: usize, v: u8| {
        let mut f = good.bytes.clone();
        f[at] = v;
        f
    };
    dp.ingress(&poke(14, 0x65), 1); // IPv4 ethertype, version 6
    dp.ingress(&poke(14, 0x44), 2); // IHL 4
    dp.ingress(&poke(14, 0x40), 1); // IHL 0
    let mut short_total = good.bytes.clone();
    short_total[16..18].copy_from_slice(&19u16.to_be_bytes()); // total length < IHL
    dp.ingress(&short_total, 4);
    dp.ingress(&poke(good.l4_offset + 12, 0x40), 1); // TCP data offset 4
    let mut v6_bad = ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST)
        .udp(1, 2)
        .build()
        .bytes;
    v6_bad[14] = 0x40; // IPv6 ethertype, version 4
    dp.ingress(&v6_bad, 1);
    dp.run(PROG_TC_EGRESS, &arp_request(b, a), 7);

    let w = dp.cut();
    assert_eq!(w.flows, vec![], "no flow from non-IP or invalid frames");
    let mut want = iface(
        DIR_INGRESS,
        IfaceCounters {
            non_ip_packets: 5 + 2 + 1 + 3,
            malformed_packets: 1 + 2 + 1 + 4 + 1 + 1,
            ..Default::default()
        },
    );
    want.insert(
        IfaceKey::new(TEST_RUN_IFINDEX, DIR_EGRESS),
        IfaceCounters {
            non_ip_packets: 7,
            ..Default::default()
        },
    );
    assert_eq!(w.ifaces, want);
    assert_nothing_lost(&w);
}

#[test]
fn tcp_flags_are_ored_over_a_flow_with_aws_rule() {
    let mut dp = Datapath::load(1024);
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let (a6, b6) = (
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    );
    // (frames of one flow as raw TCP flags, the flow's AWS tcp-flags)
    let flows: [(u16, &[u8], u8); 8] = [
        (1, &[SYN], 2),
        (2, &[SYN | ACK], 18),
        (3, &[FIN | ACK], 1),
        (4, &[RST], 4),
        (5, &[ACK, PSH | ACK, ACK | URG], 0),
        (6, &[SYN | ECE], 2),
        (7, &[SYN, ACK, PSH | ACK, FIN | ACK, ACK], 3),
        (8, &[SYN | ACK, ACK, RST | ACK], 22),
    ];
    let since = stamp_clock_ns();
    let mut want = Counts::new();
    for (port, seq, aws) in flows {
        for f in [
            ipv4(a, b).tcp(port, 80, 0).build(),
            ipv6(a6, b6).tcp(port, 80, 0).build(),
        ] {
            for raw in seq {
                let mut bytes = f.bytes.clone();
                bytes[f.l4_offset + 13] = *raw;
                dp.ingress(&bytes, 1);
            }
            let n = seq.len() as u64;
            want.insert(key_of(&f, DIR_INGRESS), (n, n * f.ip_len as u64, aws));
        }
    }
    let w = dp.cut();
    assert_eq!(counts(&w, since), want);
    assert_eq!(w.ifaces, no_ifaces());
}

#[test]
fn egress_program_counts_direction_egress() {
    let mut dp = Datapath::load(1024);
    let f = ipv6(
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    )
    .udp(1000, 2000)
    .payload(100)
    .build();
    let since = stamp_clock_ns();
    dp.run(PROG_TC_EGRESS, &f.bytes, 3);
    dp.run(PROG_TC_INGRESS, &f.bytes, 2);
    let w = dp.cut();
    let bytes = f.ip_len as u64;
    assert_eq!(
        counts(&w, since),
        Counts::from([
            (key_of(&f, DIR_EGRESS), (3, 3 * bytes, 0)),
            (key_of(&f, DIR_INGRESS), (2, 2 * bytes, 0)),
        ])
    );
    assert_eq!(key_of(&f, DIR_EGRESS).direction, 1);
}

#[test]
fn a_cut_splits_packets_between_windows_without_loss_or_double_count() {
    let mut dp = Datapath::load(1024);
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let f1 = ipv4(a, b).tcp(1111, 80, SYN).payload(10).build();
    let f2 = ipv4(a, b).udp(2222, 53).payload(20).build();
    let arp = arp_request(a, b);
    let (k1, k2) = (key_of(&f1, DIR_INGRESS), key_of(&f2, DIR_INGRESS));
    let (l1, l2) = (f1.ip_len as u64, f2.ip_len as u64);

    let since = stamp_clock_ns();
    dp.ingress(&f1.bytes, 4);
    dp.ingress(&arp, 1);
    let w1 = dp.cut();
    assert_eq!(
        counts(&w1, since),
        Counts::from([(k1, (4, 4 * l1, 2))]),
        "window 1"
    );
    assert_eq!(
        w1.ifaces,
        iface(
            DIR_INGRESS,
            IfaceCounters {
                non_ip_packets: 1,
                ..Default::default()
            }
        )
    );

    let since = stamp_clock_ns();
    dp.ingress(&f1.bytes, 6);
    dp.ingress(&f2.bytes, 9);
    dp.ingress(&arp, 2);
    let w2 = dp.cut();
    assert_eq!(
        counts(&w2, since),
        Counts::from([(k1, (6, 6 * l1, 2)), (k2, (9, 9 * l2, 0))]),
        "window 2"
    );
    assert_eq!(
        w2.ifaces,
        iface(
            DIR_INGRESS,
            IfaceCounters {
                non_ip_packets: 2,
                ..Default::default()
            }
        )
    );

    let w3 = dp.cut();
    assert_eq!(
        (w3.flows.len(), w3.ifaces.len()),
        (0, 0),
        "window 3 saw no packets"
    );

    // Window 4 reuses slot A, drained at the end of window 1 (nothing may linger there).
    let since = stamp_clock_ns();
    dp.ingress(&f2.bytes, 1);
    let w4 = dp.cut();
    assert_eq!(
        counts(&w4, since),
        Counts::from([(k2, (1, l2, 0))]),
        "window 4"
    );
    assert_eq!(w4.ifaces, no_ifaces());
}

#[test]
fn cuts_during_concurrent_traffic_lose_and_double_count_nothing() {
    let mut dp = Datapath::load(1024);
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let (a6, b6) = (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    );
    // Both threads send the same flow (per-CPU values of one key) plus one flow each, one IPv4
    // and one IPv6: both families' maps are flipped and drained under traffic.
    let shared = ipv4(a, b).udp(7000, 7001).payload(64).build();
    let own = [
        ipv4(a, b).udp(7100, 7101).build(),
        ipv6(a6, b6).udp(7200, 7201).build(),
    ];
    let stop = AtomicBool::new(false);
    let sent = [AtomicU64::new(0), AtomicU64::new(0)];
    let mut windows = Vec::new();
    let since = stamp_clock_ns();
    {
        let Datapath {
            capture,
            collector,
            windows: n,
        } = &mut dp;
        let program: &SchedClassifier = capture
            .ebpf_mut()
            .program(PROG_TC_INGRESS)
            .expect("ingress program")
            .try_into()
            .expect("TC");
        std::thread::scope(|s| {
            for (t, own) in own.iter().enumerate() {
                let (stop, sent, shared) = (&stop, &sent[t], &shared);
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        run_program(program, &shared.bytes, 1, None);
                        run_program(program, &own.bytes, 1, None);
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            for _ in 0..8 {
                std::thread::sleep(std::time::Duration::from_millis(15));
                *n += 1;
                windows.push(
                    collector
                        .cut(Window {
                            start: *n,
                            end: *n + 1,
                        })
                        .expect("cut"),
                );
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    windows.push(dp.cut()); // after both senders stopped
    let sent = sent.map(|s| s.into_inner());
    let mut total = Counts::new();
    let mut busy_windows = 0;
    for w in &windows {
        assert_eq!(w.ifaces, no_ifaces());
        assert_nothing_lost(w);
        let c = counts(w, since);
        busy_windows += usize::from(!c.is_empty());
        for (k, (p, b, f)) in c {
            let e = total.entry(k).or_default();
            *e = (e.0 + p, e.1 + b, e.2 | f);
        }
    }
    let want = Counts::from([
        (
            key_of(&shared, DIR_INGRESS),
            (
                sent[0] + sent[1],
                (sent[0] + sent[1]) * shared.ip_len as u64,
                0,
            ),
        ),
        (
            key_of(&own[0], DIR_INGRESS),
            (sent[0], sent[0] * own[0].ip_len as u64, 0),
        ),
        (
            key_of(&own[1], DIR_INGRESS),
            (sent[1], sent[1] * own[1].ip_len as u64, 0),
        ),
    ]);
    eprintln!(
        "concurrent cuts: {} + {} iterations, {} windows, {busy_windows} with traffic",
        sent[0],
        sent[1],
        windows.len()
    );
    assert_eq!(total, want, "sums over {} windows", windows.len());
    assert!(
        busy_windows >= 2,
        "traffic spread over {busy_windows} window(s): the test needs the cuts to land during traffic"
    );
}

#[test]
fn flows_beyond_max_flows_go_to_the_overflow_counters() {
    const MAX_FLOWS: u32 = 16;
    const FLOWS: u16 = 100;
    const K: u32 = 3;
    let mut dp = Datapath::load(MAX_FLOWS);
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let frames: Vec<Frame> = (0..FLOWS)
        .map(|i| ipv4(a, b).udp(10_000 + i, 53).payload(i as usize).build())
        .collect();
    // Twice: the drain must free the map for the next window.
    for round in 0..2 {
        let since = stamp_clock_ns();
        for f in &frames {
            dp.ingress(&f.bytes, K);
        }
        let w = dp.cut();
        let k = K as u64;
        let want: Counts = frames[..MAX_FLOWS as usize]
            .iter()
            .map(|f| (key_of(f, DIR_INGRESS), (k, k * f.ip_len as u64, 0)))
            .collect();
        assert_eq!(
            counts(&w, since),
            want,
            "round {round}: the first {MAX_FLOWS} flows are in the map"
        );
        let overflow = &frames[MAX_FLOWS as usize..];
        assert_eq!(
            w.ifaces,
            iface(
                DIR_INGRESS,
                IfaceCounters {
                    overflow_packets: overflow.len() as u64 * k,
                    overflow_bytes: overflow.iter().map(|f| k * f.ip_len as u64).sum(),
                    ..Default::default()
                }
            ),
            "round {round}"
        );
        assert_nothing_lost(&w);
    }
}

#[test]
fn max_flows_sizes_the_ipv4_and_the_ipv6_flow_map_each() {
    const MAX_FLOWS: u16 = 8;
    let mut dp = Datapath::load(u32::from(MAX_FLOWS));
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let (a6, b6) = (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    );
    // MAX_FLOWS + 2 flows of each family: each map holds MAX_FLOWS of its own family.
    let v4: Vec<Frame> = (0..MAX_FLOWS + 2)
        .map(|i| ipv4(a, b).udp(20_000 + i, 53).payload(10).build())
        .collect();
    let v6: Vec<Frame> = (0..MAX_FLOWS + 2)
        .map(|i| ipv6(a6, b6).udp(30_000 + i, 53).payload(10).build())
        .collect();
    let since = stamp_clock_ns();
    for f in v4.iter().chain(&v6) {
        dp.ingress(&f.bytes, 2);
    }
    let w = dp.cut();
    let n = MAX_FLOWS as usize;
    let want: Counts = v4[..n]
        .iter()
        .chain(&v6[..n])
        .map(|f| (key_of(f, DIR_INGRESS), (2, 2 * f.ip_len as u64, 0)))
        .collect();
    assert_eq!(
        counts(&w, since),
        want,
        "{MAX_FLOWS} IPv4 and {MAX_FLOWS} IPv6 flows"
    );
    let overflow: Vec<&Frame> = v4[n..].iter().chain(&v6[n..]).collect();
    assert_eq!(
        w.ifaces,
        iface(
            DIR_INGRESS,
            IfaceCounters {
                overflow_packets: 2 * overflow.len() as u64,
                overflow_bytes: overflow.iter().map(|f| 2 * f.ip_len as u64).sum(),
                ..Default::default()
            }
        )
    );
    assert_nothing_lost(&w);
}

/// `struct __sk_buff` (uapi/linux/bpf.h) as `BPF_PROG_TEST_RUN`'s `ctx_in`, with only
/// `gso_segs` and `gso_size` set. Offsets from the kernel's layout (192 bytes).
fn skb_ctx(gso_segs: u32, gso_size: u32) -> [u8; 192] {
    const GSO_SEGS: usize = 164;
    const GSO_SIZE: usize = 176;
    let mut ctx = [0u8; 192];
    ctx[GSO_SEGS..GSO_SEGS + 4].copy_from_slice(&gso_segs.to_ne_bytes());
    ctx[GSO_SIZE..GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
    ctx
}

#[test]
fn gso_super_packet_counts_its_segments_and_their_headers() {
    let mut dp = Datapath::load(1024);
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    // Three 1000-byte segments of TCP with 12 bytes of options: on the wire 3 x (20 + 32 + 1000).
    let tcp = ipv4(a, b)
        .transport(Transport::Tcp {
            src: 1,
            dst: 2,
            flags: ACK,
            options_len: 12,
        })
        .payload(3000)
        .build();
    // Two 1200-byte UDP segments over IPv6 with a hop-by-hop header: 2 x (40 + 8 + 8 + 1200).
    let udp = ipv6(
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
    )
    .ext(Ipv6Ext::HopByHop { ext_len: 0 })
    .udp(3, 4)
    .payload(2400)
    .build();
    let since = stamp_clock_ns();
    run_program(
        dp.program(PROG_TC_INGRESS),
        &tcp.bytes,
        1,
        Some(&skb_ctx(3, 1000)),
    );
    run_program(
        dp.program(PROG_TC_INGRESS),
        &udp.bytes,
        1,
        Some(&skb_ctx(2, 1200)),
    );
    // gso_segs 1 (and 0, a plain skb) count as one packet of the header's length.
    run_program(
        dp.program(PROG_TC_INGRESS),
        &udp.bytes,
        1,
        Some(&skb_ctx(1, 1200)),
    );
    run_program(
        dp.program(PROG_TC_INGRESS),
        &udp.bytes,
        1,
        Some(&skb_ctx(0, 0)),
    );
    let w = dp.cut();
    assert_eq!(
        counts(&w, since),
        Counts::from([
            (key_of(&tcp, DIR_INGRESS), (3, 3 * (20 + 32 + 1000), 0)),
            (
                key_of(&udp, DIR_INGRESS),
                (
                    2 + 1 + 1,
                    2 * (40 + 8 + 8 + 1200) + 2 * udp.ip_len as u64,
                    0
                )
            ),
        ])
    );
    assert_eq!(udp.ip_len, 40 + 8 + 8 + 2400);
}

#[test]
fn two_loads_do_not_share_maps() {
    let mut one = Datapath::load(1024);
    let mut two = Datapath::load(1024);
    let f = ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        .udp(1, 2)
        .build();
    let g = ipv4(Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4))
        .udp(3, 4)
        .build();
    let since = stamp_clock_ns();
    one.ingress(&f.bytes, 2);
    two.ingress(&g.bytes, 5);
    let (w1, w2) = (one.cut(), two.cut());
    assert_eq!(
        counts(&w1, since),
        Counts::from([(key_of(&f, DIR_INGRESS), (2, 2 * f.ip_len as u64, 0))])
    );
    assert_eq!(
        counts(&w2, since),
        Counts::from([(key_of(&g, DIR_INGRESS), (5, 5 * g.ip_len as u64, 0))])
    );
    // Each load has its own WINDOW map and flow maps: a packet through `one` shows up in
    // `one`'s next window and nowhere in `two`'s.
    one.ingress(&f.bytes, 1);
    assert_eq!((one.cut().flows.len(), two.cut().flows.len()), (1, 0));
}
