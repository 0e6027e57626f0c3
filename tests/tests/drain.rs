//! The window drain against the real kernel maps: every flow comes back exactly once, summed over
//! CPUs, and the drained slot is left empty. Run as root (`cargo xtask test`).

use aya::{
    maps::{PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};
use flowlog_agent::{
    capture::attach::Capture,
    capture::collect::{Collector, DrainedWindow, FlowTotals, Window},
    capture::flow_sink::FlowSink,
    capture::object,
};
use flowlog_common::{FAMILY_IPV4, FLOW_MAPS, FiveTuple, FlowKey, FlowStats, ipv4_mapped};

fn key(i: u32) -> FlowKey {
    let tuple = FiveTuple {
        family: FAMILY_IPV4,
        protocol: 17,
        src_addr: ipv4_mapped([10, 9, (i >> 8) as u8, i as u8]),
        dst_addr: ipv4_mapped([10, 9, 255, 1]),
        src_port: (i % 60_000) as u16 + 1,
        dst_port: 53,
    };
    FlowKey::new(7, 0, &tuple)
}

fn stats(packets: u64, first: u64, last: u64) -> FlowStats {
    FlowStats {
        packets,
        bytes: packets * 100,
        first_seen_jiffies: first,
        last_seen_jiffies: last,
        tcp_flags: 0,
        _pad: [0; 7],
    }
}

/// Fills slot A with `n` flows whose per-CPU values differ, cuts, and checks every sum.
fn drain_exactly(n: u32) {
    let mut capture = filled(n);
    let cpus = nr_cpus().expect("possible cpus");
    let mut collector = Collector::new(capture.ebpf_mut()).expect("collector");
    let drained = collector.cut(Window { start: 0, end: 60 }).expect("cut");
    let expected_packets: u64 = (0..cpus).filter(|c| *c != 1).map(|c| c as u64 + 1).sum();
    let last_cpu = (0..cpus).filter(|c| *c != 1).max().unwrap_or(0) as u64;
    assert_eq!(drained.flows.len(), n as usize, "every flow drained once");
    let mut keys: Vec<FlowKey> = drained.flows.iter().map(|(k, _)| *k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n as usize, "no flow drained twice");
    for (k, t) in &drained.flows {
        assert_eq!(t.packets, expected_packets, "packets of {k:?}");
        assert_eq!(t.bytes, expected_packets * 100);
        assert_eq!(t.first_seen_jiffies, 1_000);
        assert_eq!(t.last_seen_jiffies, 2_000 + last_cpu);
    }
    // The slot is empty now: the next cut of the same slot (two cuts later) returns nothing.
    let _ = collector
        .cut(Window {
            start: 60,
            end: 120,
        })
        .expect("cut B");
    let again = collector
        .cut(Window {
            start: 120,
            end: 180,
        })
        .expect("cut A again");
    assert_eq!(again.flows.len(), 0, "drained slot left empty");
}

/// A capture whose slot A holds `n` flows, CPU c holding c+1 packets of each (CPU 1 none).
fn filled(n: u32) -> Capture {
    assert!(
        nix_is_root(),
        "the drain test loads BPF maps: run it as root (cargo xtask test)"
    );
    let object = object::load(None).expect("eBPF object (build with cargo xtask build/test)");
    let mut capture = Capture::load(&object, n + 16).expect("load");
    let cpus = nr_cpus().expect("possible cpus");
    {
        let map = capture.ebpf_mut().map_mut(FLOW_MAPS[0]).expect("FLOWS_A");
        let mut flows: PerCpuHashMap<_, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(map).expect("type");
        for i in 0..n {
            // CPU c holds c+1 packets (CPU 1 none, to check idle CPUs are ignored for times).
            let per_cpu: Vec<FlowStats> = (0..cpus)
                .map(|c| {
                    if c == 1 {
                        FlowStats::default()
                    } else {
                        stats(c as u64 + 1, 1_000 + c as u64, 2_000 + c as u64)
                    }
                })
                .collect();
            flows
                .insert(key(i), PerCpuValues::try_from(per_cpu).expect("values"), 0)
                .expect("insert");
        }
    }
    capture
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn drains_fewer_flows_than_one_batch() {
    drain_exactly(100);
}

#[test]
fn drains_more_flows_than_one_batch() {
    drain_exactly(10_000);
}

/// Records what a streamed cut hands over, and in which order.
#[derive(Default)]
struct Recorder {
    began: usize,
    flows_before_begin: usize,
    batches: Vec<usize>,
    keys: Vec<FlowKey>,
}

impl FlowSink for Recorder {
    fn begin(&mut self, _: &DrainedWindow) {
        self.began += 1;
    }

    fn flows(&mut self, flows: &[(FlowKey, FlowTotals)]) {
        if self.began == 0 {
            self.flows_before_begin += flows.len();
        }
        self.batches.push(flows.len());
        self.keys.extend(flows.iter().map(|(k, _)| *k));
    }
}

/// The agent's drain: the window's other counters first, then every flow once, in batches of
/// 4096 handed over while the map is still being drained.
#[test]
fn a_streamed_cut_hands_over_every_flow_once_in_batches() {
    let mut capture = filled(10_000);
    let mut collector = Collector::new(capture.ebpf_mut()).expect("collector");
    let mut sink = Recorder::default();
    let header = collector
        .cut_into(Window { start: 0, end: 60 }, &mut sink)
        .expect("cut");
    assert!(header.flows.is_empty(), "the flows went to the sink");
    assert_eq!((sink.began, sink.flows_before_begin), (1, 0));
    assert_eq!(sink.batches, [4096, 4096, 1808]);
    sink.keys.sort();
    sink.keys.dedup();
    assert_eq!(sink.keys.len(), 10_000, "no flow handed over twice");
    let mut expected: Vec<FlowKey> = (0..10_000).map(key).collect();
    expected.sort();
    assert_eq!(sink.keys, expected);
}
