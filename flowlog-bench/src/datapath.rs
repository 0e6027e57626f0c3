//! Datapath cost with `BPF_PROG_TEST_RUN`: the real TC program (`flowlog_tc_ingress`, loaded
//! by the agent's own [`Capture::load`]) against the reference programs of the floor object,
//! on crafted frames, with the active flow maps (FLOWS4_A for IPv4, FLOWS_A for IPv6) each
//! pre-filled to 0, 1k, 100k and 1M flows.
//!
//! The kernel runs a program `repeat` times on one frame and reports the mean time per run
//! in whole nanoseconds, excluding time it was rescheduled. Each measurement is repeated
//! `runs` times; programs are interleaved frame by frame, so drift hits every program alike.
//! Repeating one frame means its flow is a hit after the first run: this is the cost of a
//! packet of an existing flow with the flow's bucket in cache. The first packet of a flow
//! (an insert) is measured separately with distinct frames and `repeat = 1`.
//!
//! The floor programs that hold flows (`update*`, `insert`) get maps of the same capacity as
//! FLOWS_A, pre-filled to the same number of flows.

use anyhow::{Context, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, PerCpuHashMap, PerCpuValues},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    util::nr_cpus,
};
use flowlog_agent::capture::attach::Capture;
use flowlog_common::{
    DIR_INGRESS, FAMILY_IPV4, FAMILY_IPV6, FLOW_MAPS, FLOW4_MAPS, FiveTuple, FlowKey, FlowKey4,
    FlowStats, PROG_TC_INGRESS, ipv4_mapped,
};
use serde::{Deserialize, Serialize};

use crate::{frames, stats};

/// TC_ACT_UNSPEC (-1) as the kernel returns it: every program here is a passive observer.
const TC_ACT_UNSPEC: u32 = u32::MAX;
/// Interface index of the pre-filled flows: no test-run skb carries it, so the frames' own
/// flows never collide with them.
const FILL_IFINDEX: u32 = 0x7fff_fff0;

/// Reference programs in the floor object measured on repeated frames (the hit path), with
/// the labels the report uses.
pub const FLOOR_PROGRAMS: [(&str, &str); 11] = [
    ("floor_noop", "no-op"),
    ("floor_counter", "counter"),
    ("floor_hash", "hash"),
    ("floor_hash4", "hash, 20-byte key"),
    ("floor_parse", "parse"),
    ("floor_window", "window"),
    ("floor_clock", "clock"),
    ("floor_clock_coarse", "clock, coarse"),
    ("floor_key", "key"),
    ("floor_update", "update"),
    ("floor_update_shared", "update shared"),
];
/// Reference programs measured on the first packet of a flow (distinct frames, one run each).
pub const FIRST_PACKET_FLOORS: [(&str, &str); 5] = [
    ("floor_insert", "insert"),
    ("floor_update", "update"),
    ("floor_update_noprealloc", "update, no prealloc"),
    ("floor_update_shared", "update shared"),
    (
        "floor_update_shared_noprealloc",
        "update shared, no prealloc",
    ),
];
/// The floor object's flow maps: resized to FLOWS_A's capacity and pre-filled like flowlog's
/// map of the same key.
const FLOOR_FLOW_MAPS: [(&str, Fill); 9] = [
    ("FLOOR_UPDATE", Fill::PerCpu6),
    ("FLOOR_UPDATE4", Fill::PerCpu4),
    ("FLOOR_UPDATE_NOPREALLOC", Fill::PerCpu6),
    ("FLOOR_UPDATE4_NOPREALLOC", Fill::PerCpu4),
    ("FLOOR_SHARED", Fill::Shared6),
    ("FLOOR_SHARED4", Fill::Shared4),
    ("FLOOR_SHARED_NOPREALLOC", Fill::Shared6),
    ("FLOOR_SHARED4_NOPREALLOC", Fill::Shared4),
    ("FLOOR_INSERT", Fill::PerCpu4),
];

/// A flow map's kind, for pre-filling it: per-CPU or shared values, IPv4 ([`FlowKey4`]) or
/// IPv6 ([`FlowKey`]) keys.
#[derive(Clone, Copy)]
enum Fill {
    PerCpu4,
    PerCpu6,
    Shared4,
    Shared6,
}
pub const FLOWLOG: &str = "flowlog";

pub struct Config {
    pub repeat: u32,
    pub runs: usize,
    pub fills: Vec<u32>,
    /// Distinct new flows per fill level for the insert measurement.
    pub new_flows: usize,
}

impl Config {
    pub fn new(quick: bool) -> Self {
        if quick {
            Config {
                repeat: 100_000,
                runs: 3,
                fills: vec![0, 1_000, 100_000],
                new_flows: 200,
            }
        } else {
            Config {
                repeat: 1_000_000,
                runs: 5,
                fills: vec![0, 1_000, 100_000, 1_000_000],
                new_flows: 1_000,
            }
        }
    }
}

/// The median of one (fill, frame, program) combination and its samples, ns per packet.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cell {
    pub fill: u32,
    pub frame: String,
    pub program: String,
    pub median_ns: f64,
    pub samples_ns: Vec<f64>,
}

/// The first packet of a flow (the insert path) at one fill level: single runs of distinct
/// IPv4/UDP frames; the no-op's single runs show the timer overhead included in each.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewFlow {
    pub fill: u32,
    pub flows: usize,
    pub flowlog_median_ns: f64,
    pub noop_median_ns: f64,
    /// Medians of the [`FIRST_PACKET_FLOORS`] on the same frames, by label (absent in
    /// results.json files written before they were measured).
    #[serde(default)]
    pub floors: Vec<(String, f64)>,
}

impl NewFlow {
    pub fn floor(&self, label: &str) -> f64 {
        self.floors
            .iter()
            .find(|(l, _)| l == label)
            .map_or(f64::NAN, |(_, ns)| *ns)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Datapath {
    pub repeat: u32,
    pub runs: usize,
    pub fills: Vec<u32>,
    pub frames: Vec<String>,
    pub programs: Vec<String>,
    pub cells: Vec<Cell>,
    pub new_flow: Vec<NewFlow>,
    /// Packets the flowlog program counted for the crafted frames, summed over CPUs, and how
    /// many it was fed: they must be equal.
    pub counted_packets: u64,
    pub fed_packets: u64,
}

impl Datapath {
    pub fn median(&self, fill: u32, frame: &str, program: &str) -> f64 {
        self.cells
            .iter()
            .find(|c| c.fill == fill && c.frame == frame && c.program == program)
            .map_or(f64::NAN, |c| c.median_ns)
    }

    /// Median over frames of one program at one fill level.
    pub fn median_over_frames(&self, fill: u32, program: &str) -> f64 {
        let v: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.fill == fill && c.program == program)
            .map(|c| c.median_ns)
            .collect();
        stats::median(&v)
    }
}

/// One crafted frame.
struct Case {
    name: String,
    bytes: Vec<u8>,
}

fn cases() -> Vec<Case> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let v4 = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let v6: (Ipv6Addr, Ipv6Addr) = (
        "fd00::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
        "fd00::2".parse().unwrap_or(Ipv6Addr::LOCALHOST),
    );
    let mut out = Vec::new();
    for vlan in [false, true] {
        for family in ["IPv4", "IPv6"] {
            for proto in ["TCP", "UDP", "ICMP"] {
                let b = if family == "IPv4" {
                    frames::ipv4(v4.0, v4.1)
                } else {
                    frames::ipv6(v6.0, v6.1)
                };
                let b = if vlan {
                    b.vlan(frames::TPID_8021Q, 100)
                } else {
                    b
                };
                let b = match (proto, family) {
                    ("TCP", _) => b.tcp(40_000, 443, frames::tcp_flags::ACK).payload(64),
                    ("UDP", _) => b.udp(40_000, 53).payload(64),
                    (_, "IPv4") => b.icmp(8, 0).payload(56),
                    _ => b.icmpv6(128, 0).payload(56),
                };
                let name = format!("{family} {proto}{}", if vlan { " VLAN" } else { "" });
                out.push(Case {
                    name,
                    bytes: b.build().bytes,
                });
            }
        }
    }
    out
}

/// A pre-filled IPv4 flow: distinct per `i`, on an interface no test-run packet has.
fn fill_key4(i: u32) -> FlowKey4 {
    let b = i.to_be_bytes();
    let tuple = FiveTuple {
        family: FAMILY_IPV4,
        protocol: 17,
        src_addr: ipv4_mapped([10, b[1], b[2], b[3]]),
        dst_addr: ipv4_mapped([192, 0, 2, b[0]]),
        src_port: 1024 + (i % 50_000) as u16,
        dst_port: 53,
    };
    FlowKey4::new(FILL_IFINDEX, DIR_INGRESS, &tuple)
}

/// A pre-filled IPv6 flow, as [`fill_key4`].
fn fill_key6(i: u32) -> FlowKey {
    let b = i.to_be_bytes();
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[12..].copy_from_slice(&b);
    let mut dst = src;
    dst[11] = 1;
    let tuple = FiveTuple {
        family: FAMILY_IPV6,
        protocol: 17,
        src_addr: src,
        dst_addr: dst,
        src_port: 1024 + (i % 50_000) as u16,
        dst_port: 53,
    };
    FlowKey::new(FILL_IFINDEX, DIR_INGRESS, &tuple)
}

/// Inserts the pre-filled flows `range` into map `name` of `ebpf`, a hash map of `kind`.
/// `insert` again while the kernel says ENOMEM, up to a second: a map without preallocation
/// takes elements from a per-CPU cache that the kernel refills asynchronously (irq_work), so a
/// burst of inserts can outrun it although the map has room.
fn retry_nomem(
    mut insert: impl FnMut() -> Result<(), aya::maps::MapError>,
) -> Result<(), aya::maps::MapError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match insert() {
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOMEM)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

fn prefill(
    ebpf: &mut Ebpf,
    name: &str,
    kind: Fill,
    range: std::ops::Range<u32>,
    cpus: usize,
) -> anyhow::Result<()> {
    let stats = FlowStats {
        packets: 1,
        bytes: 100,
        first_seen_jiffies: 1,
        last_seen_jiffies: 1,
        tcp_flags: 0,
        _pad: [0; 7],
    };
    let map = ebpf
        .map_mut(name)
        .with_context(|| format!("map {name} missing"))?;
    let mut first_cpu = vec![FlowStats::default(); cpus];
    first_cpu[0] = stats;
    let per_cpu = || PerCpuValues::try_from(first_cpu.clone());
    let what = || format!("pre-filling {name}");
    match kind {
        Fill::PerCpu4 => {
            let mut m: PerCpuHashMap<_, FlowKey4, FlowStats> = PerCpuHashMap::try_from(map)?;
            for i in range {
                retry_nomem(|| m.insert(fill_key4(i), per_cpu()?, 0)).with_context(what)?;
            }
        }
        Fill::PerCpu6 => {
            let mut m: PerCpuHashMap<_, FlowKey, FlowStats> = PerCpuHashMap::try_from(map)?;
            for i in range {
                retry_nomem(|| m.insert(fill_key6(i), per_cpu()?, 0)).with_context(what)?;
            }
        }
        Fill::Shared4 => {
            let mut m: HashMap<_, FlowKey4, FlowStats> = HashMap::try_from(map)?;
            for i in range {
                retry_nomem(|| m.insert(fill_key4(i), stats, 0)).with_context(what)?;
            }
        }
        Fill::Shared6 => {
            let mut m: HashMap<_, FlowKey, FlowStats> = HashMap::try_from(map)?;
            for i in range {
                retry_nomem(|| m.insert(fill_key6(i), stats, 0)).with_context(what)?;
            }
        }
    }
    Ok(())
}

fn classifier<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a SchedClassifier> {
    ebpf.program(name)
        .with_context(|| format!("program {name} missing from its object"))?
        .try_into()
        .with_context(|| format!("program {name} is not a TC classifier"))
}

/// Mean ns per run of `repeat` runs of `prog` on `frame`.
fn time(prog: &SchedClassifier, name: &str, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::new()
    };
    let r = prog
        .test_run(opts)
        .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
    ensure!(
        r.return_value == TC_ACT_UNSPEC,
        "{name} returned {} instead of TC_ACT_UNSPEC: it must stay a passive observer",
        r.return_value as i32
    );
    Ok(r.duration.as_nanos() as f64)
}

pub fn run(object: &[u8], floor_object: &[u8], cfg: &Config) -> anyhow::Result<Datapath> {
    let max_fill = cfg.fills.iter().copied().max().unwrap_or(0);
    // Room for the fill, the frames' own flows and every new-flow frame.
    let capacity = max_fill + (cfg.new_flows * cfg.fills.len()) as u32 + 1_024;
    let mut capture = Capture::load(object, capacity).context("loading the flowlog programs")?;
    let mut loader = EbpfLoader::new();
    for (map, _) in FLOOR_FLOW_MAPS {
        loader.map_max_entries(map, capacity);
    }
    let mut floor = loader
        .load(floor_object)
        .context("loading the floor object")?;
    let mut floor_names: Vec<&str> = FLOOR_PROGRAMS.iter().map(|(n, _)| *n).collect();
    for (name, _) in FIRST_PACKET_FLOORS {
        if !floor_names.contains(&name) {
            floor_names.push(name);
        }
    }
    for name in floor_names {
        let prog: &mut SchedClassifier = floor
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the floor object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("the kernel rejected {name}"))?;
    }
    let cases = cases();
    let cpus = nr_cpus()
        .map_err(|(_, e)| e)
        .context("reading the possible CPUs")?;
    let mut cells: Vec<Cell> = Vec::new();
    let mut new_flow = Vec::new();
    let mut filled = 0u32;
    let mut next_new_flow = 0u32;
    let mut fed = 0u64;

    for &fill in &cfg.fills {
        let t = std::time::Instant::now();
        // Both of flowlog's maps of slot A: IPv4 frames are counted in FLOWS4_A, IPv6 in FLOWS_A.
        prefill(
            capture.ebpf_mut(),
            FLOW4_MAPS[0],
            Fill::PerCpu4,
            filled..fill,
            cpus,
        )?;
        prefill(
            capture.ebpf_mut(),
            FLOW_MAPS[0],
            Fill::PerCpu6,
            filled..fill,
            cpus,
        )?;
        for (map, kind) in FLOOR_FLOW_MAPS {
            prefill(&mut floor, map, kind, filled..fill, cpus)?;
        }
        filled = filled.max(fill);
        eprintln!(
            "  fill {fill}: pre-filled in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let flowlog = classifier(capture.ebpf_mut(), PROG_TC_INGRESS)?;
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len() * (FLOOR_PROGRAMS.len() + 1)];
        for _ in 0..cfg.runs {
            for (ci, case) in cases.iter().enumerate() {
                for (pi, (name, _)) in FLOOR_PROGRAMS.iter().enumerate() {
                    let ns = time(classifier(&floor, name)?, name, &case.bytes, cfg.repeat)?;
                    samples[ci * (FLOOR_PROGRAMS.len() + 1) + pi].push(ns);
                }
                let ns = time(flowlog, PROG_TC_INGRESS, &case.bytes, cfg.repeat)?;
                fed += u64::from(cfg.repeat);
                samples[ci * (FLOOR_PROGRAMS.len() + 1) + FLOOR_PROGRAMS.len()].push(ns);
            }
        }
        for (ci, case) in cases.iter().enumerate() {
            let labels = FLOOR_PROGRAMS.iter().map(|(_, l)| *l).chain([FLOWLOG]);
            for (pi, label) in labels.enumerate() {
                let s = std::mem::take(&mut samples[ci * (FLOOR_PROGRAMS.len() + 1) + pi]);
                cells.push(Cell {
                    fill,
                    frame: case.name.clone(),
                    program: label.to_owned(),
                    median_ns: stats::median(&s),
                    samples_ns: s,
                });
            }
        }
        // The insert path: distinct flows, one run each, interleaved with the no-op and the
        // first-packet floors.
        let noop = classifier(&floor, "floor_noop")?;
        let (mut ins, mut base) = (Vec::new(), Vec::new());
        let mut floor_ins: Vec<Vec<f64>> = vec![Vec::new(); FIRST_PACKET_FLOORS.len()];
        for _ in 0..cfg.new_flows {
            let n = next_new_flow;
            next_new_flow += 1;
            let b = n.to_be_bytes();
            let frame = frames::ipv4([172, 16, b[2], b[3]].into(), [172, 17, 0, b[1]].into())
                .udp(1024 + (n % 60_000) as u16, 53)
                .payload(64)
                .build()
                .bytes;
            base.push(time(noop, "floor_noop", &frame, 1)?);
            for (i, (name, _)) in FIRST_PACKET_FLOORS.iter().enumerate() {
                floor_ins[i].push(time(classifier(&floor, name)?, name, &frame, 1)?);
            }
            ins.push(time(flowlog, PROG_TC_INGRESS, &frame, 1)?);
            fed += 1;
        }
        new_flow.push(NewFlow {
            fill,
            flows: cfg.new_flows,
            flowlog_median_ns: stats::median(&ins),
            noop_median_ns: stats::median(&base),
            floors: FIRST_PACKET_FLOORS
                .iter()
                .zip(&floor_ins)
                .map(|((_, label), s)| ((*label).to_owned(), stats::median(s)))
                .collect(),
        });
        eprintln!(
            "  fill {fill}: flowlog {:.0} ns, counter {:.0} ns, no-op {:.0} ns (median over frames); new flow {:.0} ns",
            stats::median(
                &cells
                    .iter()
                    .filter(|c| c.fill == fill && c.program == FLOWLOG)
                    .map(|c| c.median_ns)
                    .collect::<Vec<_>>()
            ),
            stats::median(
                &cells
                    .iter()
                    .filter(|c| c.fill == fill && c.program == "counter")
                    .map(|c| c.median_ns)
                    .collect::<Vec<_>>()
            ),
            stats::median(
                &cells
                    .iter()
                    .filter(|c| c.fill == fill && c.program == "no-op")
                    .map(|c| c.median_ns)
                    .collect::<Vec<_>>()
            ),
            stats::median(&ins),
        );
    }

    // Exact check: every packet fed to the flowlog program was counted in some flow of slot A
    // (IPv4 in FLOWS4_A, IPv6 in FLOWS_A), and each map still holds its pre-filled flows.
    let mut counted = 0u64;
    let mut filled_seen = 0u32;
    let ebpf = capture.ebpf_mut();
    let map = ebpf.map(FLOW_MAPS[0]).context("FLOWS_A missing")?;
    let flows: PerCpuHashMap<_, FlowKey, FlowStats> = PerCpuHashMap::try_from(map)?;
    for entry in flows.iter() {
        let (key, values) = entry?;
        if key.ifindex == FILL_IFINDEX {
            filled_seen += 1;
        } else {
            counted += values.iter().map(|v| v.packets).sum::<u64>();
        }
    }
    let map = ebpf.map(FLOW4_MAPS[0]).context("FLOWS4_A missing")?;
    let flows: PerCpuHashMap<_, FlowKey4, FlowStats> = PerCpuHashMap::try_from(map)?;
    for entry in flows.iter() {
        let (key, values) = entry?;
        if key.ifindex == FILL_IFINDEX {
            filled_seen += 1;
        } else {
            counted += values.iter().map(|v| v.packets).sum::<u64>();
        }
    }
    if counted != fed || filled_seen != 2 * filled {
        bail!(
            "the flowlog program counted {counted} packets of the {fed} it was fed, and FLOWS_A \
             and FLOWS4_A hold {filled_seen} of the 2 x {filled} pre-filled flows: the datapath \
             lost packets or flows"
        );
    }
    Ok(Datapath {
        repeat: cfg.repeat,
        runs: cfg.runs,
        fills: cfg.fills.clone(),
        frames: cases.iter().map(|c| c.name.clone()).collect(),
        programs: FLOOR_PROGRAMS
            .iter()
            .map(|(_, l)| (*l).to_owned())
            .chain([FLOWLOG.to_owned()])
            .collect(),
        cells,
        new_flow,
        counted_packets: counted,
        fed_packets: fed,
    })
}
