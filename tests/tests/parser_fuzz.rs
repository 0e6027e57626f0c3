//! The packet parser checked against an independent one (issue 15, item 3). Random and
//! mutated frames ([`flowlog_tests::fuzz_frames`]) go through the loaded TC programs with
//! `BPF_PROG_TEST_RUN`, one at a time; after each, what the program counted is read back from
//! its maps (and removed): one flow key with its packets, bytes and TCP flags, or one bump of
//! the interface's non-IP or malformed counter. That must be what etherparse makes of the
//! frame ([`flowlog_tests::oracle`]), or the non-IP/malformed counter for a reason stated
//! there; any other difference fails, with the frame in hex. The host build of the same
//! parser (`flowlog_common::parse`) must count exactly what the kernel did, and is held to the
//! oracle also for frames too short for test-run.
//!
//! `FLOWLOG_FUZZ_FRAMES` (default 100000 frames through the program) and `FLOWLOG_FUZZ_SEED`
//! set the run; `cargo xtask fuzz` runs a long one with a fresh seed. Root only.

use std::collections::BTreeMap;

use aya::{
    maps::{MapData, PerCpuHashMap},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions},
};
use flowlog_agent::{capture::attach::Capture, capture::object};
use flowlog_common::{
    DIR_EGRESS, DIR_INGRESS, FLOW_MAPS, FLOW4_MAPS, FlowKey, FlowKey4, FlowStats, IFACE_MAPS,
    IfaceCounters, IfaceKey, PROG_TC_EGRESS, PROG_TC_INGRESS,
    parse::{Outcome, parse_ethernet},
};
use flowlog_tests::{
    fuzz_frames::{FrameSource, Mutation},
    oracle::{self, Agreement, Expected, FlowOf, Reason},
};

/// `BPF_PROG_TEST_RUN`'s skb belongs to the loopback device of the caller's namespace.
const TEST_RUN_IFINDEX: u32 = 1;
/// `TC_ACT_UNSPEC` (-1) as the kernel reports a program's return value.
const TC_ACT_UNSPEC: u32 = -1i32 as u32;
const DEFAULT_FRAMES: u64 = 100_000;
const DEFAULT_SEED: u64 = 0x5ec0_f1a9_2026;
/// Failures reported in full.
const SHOWN_FAILURES: usize = 12;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        Err(_) => default,
    }
}

/// The shortest frame `BPF_PROG_TEST_RUN` takes for a TC program: an Ethernet header, plus
/// the fixed IP header when the outer ethertype announces IPv4/IPv6 (the kernel refuses
/// shorter data with EINVAL; see tests/tests/datapath.rs).
fn test_run_min_len(frame: &[u8]) -> usize {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => 14 + 20,
        0x86dd => 14 + 40,
        _ => 14,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host parser's verdict, in the oracle's terms.
fn host(frame: &[u8]) -> Expected {
    match parse_ethernet(frame) {
        Outcome::Flow(p) => Expected::Flow(FlowOf {
            family: p.tuple.family,
            protocol: p.tuple.protocol,
            src: p.tuple.src_addr,
            dst: p.tuple.dst_addr,
            src_port: p.tuple.src_port,
            dst_port: p.tuple.dst_port,
            bytes: u64::from(p.ip_len),
            tcp_flags: p.tcp_flags,
        }),
        Outcome::NotIp => Expected::NotIp,
        Outcome::Malformed => Expected::Malformed,
    }
}

/// What the program counted for one frame, read from (and removed from) its maps.
#[derive(Debug, PartialEq, Eq)]
enum Counted {
    One(Expected),
    /// Anything but exactly one flow packet or one counter bump.
    Other(String),
}

struct Maps {
    flows: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    /// IPv4 flows, under the compact key.
    flows4: PerCpuHashMap<MapData, FlowKey4, FlowStats>,
    ifaces: PerCpuHashMap<MapData, IfaceKey, IfaceCounters>,
}

impl Maps {
    /// Everything in the slot-A maps (the programs write there while WINDOW is 0), emptied.
    fn take(&mut self, direction: u8) -> Counted {
        let keys: Vec<FlowKey> = self
            .flows
            .keys()
            .collect::<Result<_, _>>()
            .expect("flow keys");
        let mut flows = Vec::new();
        for k in &keys {
            let v = self.flows.get(k, 0).expect("flow value");
            let (mut packets, mut bytes, mut flags) = (0u64, 0u64, 0u8);
            for s in v.iter() {
                packets += s.packets;
                bytes += s.bytes;
                flags |= s.tcp_flags;
            }
            self.flows.remove(k).expect("remove flow");
            flows.push((*k, packets, bytes, flags));
        }
        let keys4: Vec<FlowKey4> = self
            .flows4
            .keys()
            .collect::<Result<_, _>>()
            .expect("IPv4 flow keys");
        for k in &keys4 {
            let v = self.flows4.get(k, 0).expect("IPv4 flow value");
            let (mut packets, mut bytes, mut flags) = (0u64, 0u64, 0u8);
            for s in v.iter() {
                packets += s.packets;
                bytes += s.bytes;
                flags |= s.tcp_flags;
            }
            self.flows4.remove(k).expect("remove IPv4 flow");
            flows.push((k.to_flow_key(), packets, bytes, flags));
        }
        let ikeys: Vec<IfaceKey> = self
            .ifaces
            .keys()
            .collect::<Result<_, _>>()
            .expect("iface keys");
        let mut ifaces = Vec::new();
        for k in &ikeys {
            let v = self.ifaces.get(k, 0).expect("iface value");
            let sum = v.iter().fold(IfaceCounters::default(), |mut a, c| {
                a.overflow_packets += c.overflow_packets;
                a.overflow_bytes += c.overflow_bytes;
                a.non_ip_packets += c.non_ip_packets;
                a.malformed_packets += c.malformed_packets;
                a
            });
            self.ifaces.remove(k).expect("remove iface");
            ifaces.push((*k, sum));
        }
        let here = IfaceKey::new(TEST_RUN_IFINDEX, direction);
        let bump = |c: IfaceCounters| {
            IfaceCounters {
                overflow_packets: 0,
                overflow_bytes: 0,
                ..c
            } == c
        };
        match (&flows[..], &ifaces[..]) {
            ([(k, 1, bytes, flags)], [])
                if k.ifindex == TEST_RUN_IFINDEX && k.direction == direction =>
            {
                Counted::One(Expected::Flow(FlowOf {
                    family: k.family,
                    protocol: k.protocol,
                    src: k.src_addr,
                    dst: k.dst_addr,
                    src_port: k.src_port,
                    dst_port: k.dst_port,
                    bytes: *bytes,
                    tcp_flags: *flags,
                }))
            }
            ([], [(k, c)]) if *k == here && bump(*c) => {
                match (c.non_ip_packets, c.malformed_packets) {
                    (1, 0) => Counted::One(Expected::NotIp),
                    (0, 1) => Counted::One(Expected::Malformed),
                    _ => Counted::Other(format!("interface counters {c:?}")),
                }
            }
            _ => Counted::Other(format!("flows {flows:?}, interface counters {ifaces:?}")),
        }
    }
}

#[derive(Default)]
struct Tally {
    run: u64,
    refused_short: u64,
    flows: u64,
    not_ip: u64,
    malformed: u64,
    by_reason: BTreeMap<Reason, u64>,
    by_mutation: BTreeMap<Mutation, u64>,
    failures: Vec<String>,
    failed: u64,
}

impl Tally {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        if self.failures.len() < SHOWN_FAILURES {
            self.failures.push(what);
        }
    }
}

#[test]
fn random_and_mutated_frames_count_as_etherparse_reads_them() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "loads eBPF programs: run as root (`cargo xtask test`)"
    );
    let frames = env_u64("FLOWLOG_FUZZ_FRAMES", DEFAULT_FRAMES);
    let seed = env_u64("FLOWLOG_FUZZ_SEED", DEFAULT_SEED);
    let object = object::load(None).unwrap_or_else(|e| panic!("{e:#}"));
    let mut capture = Capture::load(&object, 1024).unwrap_or_else(|e| panic!("{e:#}"));
    let ebpf = capture.ebpf_mut();
    let mut maps = Maps {
        flows: PerCpuHashMap::try_from(ebpf.take_map(FLOW_MAPS[0]).expect("FLOWS_A"))
            .expect("flow map"),
        flows4: PerCpuHashMap::try_from(ebpf.take_map(FLOW4_MAPS[0]).expect("FLOWS4_A"))
            .expect("IPv4 flow map"),
        ifaces: PerCpuHashMap::try_from(ebpf.take_map(IFACE_MAPS[0]).expect("IFACE_A"))
            .expect("iface map"),
    };
    let ingress: &SchedClassifier = ebpf
        .program(PROG_TC_INGRESS)
        .expect("ingress")
        .try_into()
        .expect("TC");
    let egress: &SchedClassifier = ebpf
        .program(PROG_TC_EGRESS)
        .expect("egress")
        .try_into()
        .expect("TC");

    let mut source = FrameSource::new(seed);
    let mut tally = Tally::default();
    let started = std::time::Instant::now();
    let mut index = 0u64;
    while tally.run < frames {
        let (frame, mutations) = source.next_frame();
        index += 1;
        for m in &mutations {
            *tally.by_mutation.entry(*m).or_default() += 1;
        }
        let verdict = oracle::judge(&frame);
        let on_host = host(&frame);
        let report = |what: &str| {
            format!(
                "frame {index} (seed {seed:#x}, {mutations:?}, {} bytes): {what}\n  oracle: {verdict:?}\n  host parser: {on_host:?}\n  frame: {}",
                frame.len(),
                hex(&frame)
            )
        };
        if verdict.agreement(&on_host) == Agreement::Differs {
            tally.fail(report("the host parser disagrees with etherparse"));
        }
        if frame.len() < test_run_min_len(&frame) {
            match ingress.test_run(TestRunOptions {
                data_in: Some(&frame),
                ..Default::default()
            }) {
                Err(ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EINVAL) =>
                {
                    tally.refused_short += 1;
                }
                other => tally.fail(report(&format!(
                    "test-run of a frame shorter than {}: want EINVAL, got {other:?}",
                    test_run_min_len(&frame)
                ))),
            }
            continue;
        }
        let (program, direction) = if index.is_multiple_of(2) {
            (ingress, DIR_INGRESS)
        } else {
            (egress, DIR_EGRESS)
        };
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{}", report(&format!("test-run failed: {e:?}"))));
        assert_eq!(
            result.return_value,
            TC_ACT_UNSPEC,
            "{}",
            report("the programs must pass every packet on")
        );
        tally.run += 1;
        let got = match maps.take(direction) {
            Counted::One(e) => e,
            Counted::Other(what) => {
                tally.fail(report(&format!("the program counted {what}")));
                continue;
            }
        };
        if got != on_host {
            tally.fail(report(&format!(
                "the kernel counted {got:?}, the host build of the same parser {on_host:?}"
            )));
        }
        match verdict.agreement(&got) {
            Agreement::Differs => tally.fail(report(&format!("the program counted {got:?}"))),
            agreed => {
                match got {
                    Expected::Flow(_) => tally.flows += 1,
                    Expected::NotIp => tally.not_ip += 1,
                    Expected::Malformed => tally.malformed += 1,
                }
                if let Agreement::Instead(r) = agreed {
                    *tally.by_reason.entry(r).or_default() += 1;
                }
            }
        }
    }
    eprintln!(
        "parser fuzz: seed {seed:#x}: {} frames through the programs in {:.1?} ({} flows, {} non-IP, {} malformed), \
         {} shorter ones refused by test-run (host parser only); mutations {:?}",
        tally.run,
        started.elapsed(),
        tally.flows,
        tally.not_ip,
        tally.malformed,
        tally.refused_short,
        tally.by_mutation
    );
    for (r, n) in &tally.by_reason {
        eprintln!(
            "  {n} counted as non-IP/malformed where etherparse reads more: {}",
            r.describe()
        );
    }
    assert!(
        tally.failures.is_empty(),
        "{} of {} frames differ from etherparse (rerun: FLOWLOG_FUZZ_SEED={seed:#x} FLOWLOG_FUZZ_FRAMES={frames}); the first ones:\n{}",
        tally.failed,
        index,
        tally.failures.join("\n")
    );
    // A run that never exercised a kind would prove little.
    assert!(
        tally.flows > frames / 4 && tally.malformed > frames / 50 && tally.not_ip > frames / 100,
        "too few of a kind: {} flows, {} malformed, {} non-IP",
        tally.flows,
        tally.malformed,
        tally.not_ip
    );
}
