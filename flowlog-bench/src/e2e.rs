//! End to end: iperf3 between two network namespaces over veth, with nothing, flowlog,
//! softflowd or pmacctd capturing A's veth, one at a time, interleaved repetition by
//! repetition (baseline, flowlog, softflowd, pmacctd, baseline, ...) so drift and other load
//! on the machine hit every variant alike.
//!
//! Per run: the receiver's throughput (iperf3 JSON), the bytes and packets the veth in A sent
//! plus received, and CPU seconds from several vantage points (see [`Run`]). After the
//! interleaved runs, one extra flowlog run per workload with the kernel's BPF run-time
//! statistics enabled gives the programs' own ns per run under real traffic (kept apart:
//! the statistics add two clock reads to every program run).

use std::collections::HashSet;
use std::fs;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::cpu;
use crate::netns::{self, ADDR_B, IF_A, NS_A, NS_B, Topology};
use crate::records::{self, V2};

const IPERF_PORT: &str = "5201";
/// NetFlow export target of softflowd: a closed port on A's loopback (the export datagrams
/// are refused; the capture side is what is measured).
const NETFLOW_TARGET: &str = "127.0.0.1:9995";
/// Where flowlog and pmacctd write what they captured (in the scratch directory).
pub(crate) const FLOWLOG_OUT: &str = "flowlog-out";
const PMACCTD_CSV: &str = "pmacctd.csv";
/// Payload of the small-packet UDP workload.
const UDP_PAYLOAD: &str = "64";

pub struct Config {
    pub secs: u32,
    pub reps: usize,
    pub quick: bool,
}

impl Config {
    pub fn new(quick: bool) -> Self {
        if quick {
            Config {
                secs: 2,
                reps: 1,
                quick,
            }
        } else {
            Config {
                secs: 5,
                reps: 5,
                quick,
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Variant {
    Baseline,
    Flowlog,
    Softflowd,
    Pmacctd,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Baseline,
        Variant::Flowlog,
        Variant::Softflowd,
        Variant::Pmacctd,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline (detached)",
            Variant::Flowlog => "flowlog",
            Variant::Softflowd => "softflowd",
            Variant::Pmacctd => "pmacctd",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Workload {
    Tcp,
    Udp64,
    /// Crafted UDP frames, a new 5-tuple each, at a fixed offered rate ([`crate::churn`]).
    Churn,
}

impl Workload {
    /// The iperf3 workloads (churn has its own generator and section).
    pub const ALL: [Workload; 2] = [Workload::Tcp, Workload::Udp64];

    pub fn label(self) -> &'static str {
        match self {
            Workload::Tcp => "TCP (1 stream)",
            Workload::Udp64 => "UDP 64-byte payload",
            Workload::Churn => "UDP churn (a new flow per packet)",
        }
    }

    fn iperf_args(self) -> anyhow::Result<&'static [&'static str]> {
        match self {
            Workload::Tcp => Ok(&[]),
            Workload::Udp64 => Ok(&["-u", "-b", "0", "-l", UDP_PAYLOAD]),
            Workload::Churn => bail!("the churn workload is not an iperf3 run"),
        }
    }
}

/// One iperf3 run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub variant: Variant,
    pub workload: Workload,
    pub rep: usize,
    /// Wall seconds of the client run.
    pub seconds: f64,
    /// Sender and receiver throughput (iperf3 `end.sum_sent`, `end.sum_received`).
    pub sender_bps: f64,
    pub receiver_bps: f64,
    /// Bytes and packets A's veth sent plus received during the run. A GSO super-packet
    /// (TCP over veth keeps them whole) counts as one packet.
    pub iface_bytes: u64,
    pub iface_packets: u64,
    /// CPU seconds of the iperf3 client (rusage) and server (/proc delta): with tick
    /// accounting this includes the softirq work (veth, TCP/UDP, BPF programs, AF_PACKET
    /// taps) that ran in their context.
    pub cpu_client: f64,
    pub cpu_server: f64,
    /// CPU seconds of the ksoftirqd threads (softirq work deferred out of those contexts).
    pub cpu_ksoftirqd: f64,
    /// CPU seconds of the capture daemon's own processes (0 for the baseline).
    pub cpu_collector: f64,
    /// Busy CPU seconds of the whole machine (includes everything else running on it).
    pub cpu_machine: f64,
    /// Packets the collector accounted for (flowlog: its records' packets; softflowd: its
    /// "packets processed"; pmacctd: its 5-tuple table's packets), and the packets A's veth
    /// carried over the collector's lifetime: a collector that fell behind shows less.
    /// flowlog counts a GSO super-packet as the segments the wire carries, the interface
    /// counters and libpcap count it once.
    pub collector_packets: Option<u64>,
    pub iface_packets_lifetime: u64,
    /// Distinct 5-tuples the traffic carried, where the generator knows (churn).
    #[serde(default)]
    pub flows_sent: Option<u64>,
    /// Flows the collector reported (flowlog: distinct 5-tuples of its OK records; softflowd:
    /// its active plus expired flows; pmacctd: the rows of its 5-tuple table).
    #[serde(default)]
    pub flows_captured: Option<u64>,
    /// CPU seconds of the collector from the start of the traffic to its exit: the run's
    /// share plus what it did after it (flowlog drains and writes the window at SIGTERM; a
    /// peer flushes its table). None for the baseline and in older results.
    #[serde(default)]
    pub cpu_collector_to_exit: Option<f64>,
}

impl Run {
    /// The throughput compared across variants: the receiver's for TCP (flow control keeps
    /// sender and receiver together); the sender's for the UDP flood, whose receiver drops
    /// what it cannot read, so its goodput can *rise* when something slows the sender, while
    /// the sender's rate is what the stack (capture included) lets through.
    /// Churn is offered at a fixed rate: what the receiving veth got is what got through.
    pub fn throughput_bps(&self) -> f64 {
        match self.workload {
            Workload::Tcp | Workload::Churn => self.receiver_bps,
            Workload::Udp64 => self.sender_bps,
        }
    }

    /// Packets the collector accounted for, in % of the interface's packets over its lifetime.
    pub fn captured_percent(&self) -> Option<f64> {
        let counted = self.collector_packets?;
        Some(100.0 * counted as f64 / self.iface_packets_lifetime.max(1) as f64)
    }

    /// CPU seconds of everything the traffic and the capture cost (client, server,
    /// ksoftirqd, collector).
    pub fn work_cpu(&self) -> f64 {
        self.cpu_client + self.cpu_server + self.cpu_ksoftirqd + self.cpu_collector
    }
}

/// The programs' own run time under real traffic (`BPF_ENABLE_STATS`), one run per workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BpfView {
    pub workload: Workload,
    pub receiver_bps: f64,
    pub iface_packets: u64,
    /// Ingress plus egress program runs and their total run time.
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl BpfView {
    pub fn ns_per_run(&self) -> f64 {
        crate::stats::ratio(self.run_time_ns as f64, self.run_cnt as f64)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EndToEnd {
    pub secs: u32,
    pub reps: usize,
    pub runs: Vec<Run>,
    pub bpf: Vec<BpfView>,
    /// The same BPF run-time view of the UDP workload with the agent running 1 and 8 flow logs
    /// on the interface (`--flow-logs`): (flow logs, view). Absent in older results.
    #[serde(default)]
    pub bpf_by_flow_logs: Vec<(u32, BpfView)>,
    pub versions: Vec<(String, String)>,
    /// The churn workload's settings and its SKIPDATA check; its runs are in `runs` and its
    /// BPF view in `bpf` (workload [`Workload::Churn`]). Absent in older results.
    #[serde(default)]
    pub churn: Option<crate::churn::Churn>,
}

pub fn run(agent: &Path, cfg: &Config) -> anyhow::Result<EndToEnd> {
    for (tool, package) in [
        ("iperf3", "iperf3"),
        ("softflowd", "softflowd"),
        ("pmacctd", "pmacct"),
        ("nsenter", "util-linux"),
    ] {
        if which(tool).is_none() {
            bail!(
                "{tool} not found: install the Debian package {package} (`cargo xtask setup` does)"
            );
        }
    }
    for comm in ["softflowd", "pmacctd"] {
        let pids = cpu::pids_named(comm);
        if !pids.is_empty() {
            eprintln!(
                "  warning: {comm} is already running (pids {pids:?}); it adds CPU load to every variant"
            );
        }
    }
    let tmp = TempDir::new()?;
    let topo = Topology::create().context("creating the benchmark namespaces")?;
    let mut server_cmd = netns::in_netns(NS_B, "iperf3");
    server_cmd.args(["-s", "-B", ADDR_B, "-p", IPERF_PORT, "--forceflush"]);
    // iperf3 -s exits 1 on SIGTERM by design.
    let server = Daemon::start(
        "iperf3 server",
        server_cmd,
        tmp.path("iperf3-server.log"),
        None,
        "Server listening",
    )?
    .exits_nonzero_on_sigterm();

    let mut runs = Vec::new();
    for rep in 0..cfg.reps {
        for workload in Workload::ALL {
            for variant in Variant::ALL {
                let r = one_run(
                    &topo, &server, agent, &tmp, variant, workload, rep, cfg.secs,
                )
                .with_context(|| {
                    format!(
                        "{} under {} (repetition {})",
                        workload.label(),
                        variant.label(),
                        rep + 1
                    )
                })?;
                eprintln!(
                    "  rep {} {:<20} {:<20} {:>7.3} Gbit/s  {:>9} pkts  work CPU {:.2} s  collector {:.2} s  captured {}",
                    rep + 1,
                    workload.label(),
                    variant.label(),
                    r.throughput_bps() / 1e9,
                    r.iface_packets,
                    r.work_cpu(),
                    r.cpu_collector,
                    r.captured_percent()
                        .map_or("-".to_owned(), |p| format!("{p:.1}%")),
                );
                runs.push(r);
            }
        }
    }
    let mut bpf = Vec::new();
    for workload in Workload::ALL {
        let v = bpf_view(&topo, &server, agent, &tmp, workload, cfg.secs, 1)
            .with_context(|| format!("BPF run-time view of {}", workload.label()))?;
        eprintln!(
            "  bpf_stats {:<20} {:.1} ns per program run, {} runs",
            workload.label(),
            v.ns_per_run(),
            v.run_cnt
        );
        bpf.push(v);
    }
    let mut bpf_by_flow_logs = Vec::new();
    for flow_logs in [1, 8] {
        let v = bpf_view(
            &topo,
            &server,
            agent,
            &tmp,
            Workload::Udp64,
            cfg.secs,
            flow_logs,
        )
        .with_context(|| format!("BPF run-time view with {flow_logs} flow logs"))?;
        eprintln!(
            "  bpf_stats {:<20} {:.1} ns per program run, {} runs, {flow_logs} flow log(s)",
            Workload::Udp64.label(),
            v.ns_per_run(),
            v.run_cnt
        );
        bpf_by_flow_logs.push((flow_logs, v));
    }
    server.stop()?;
    let churn = crate::churn::run(&topo, agent, &tmp, &crate::churn::Config::new(cfg.quick))
        .context("churn workload")?;
    runs.extend(churn.runs);
    bpf.push(churn.bpf);
    Ok(EndToEnd {
        secs: cfg.secs,
        reps: cfg.reps,
        runs,
        bpf,
        bpf_by_flow_logs,
        versions: versions(),
        churn: Some(churn.churn),
    })
}

#[allow(clippy::too_many_arguments)]
fn one_run(
    topo: &Topology,
    server: &Daemon,
    agent: &Path,
    tmp: &TempDir,
    variant: Variant,
    workload: Workload,
    rep: usize,
    secs: u32,
) -> anyhow::Result<Run> {
    let collector = match variant {
        Variant::Baseline => None,
        v => Some(start_collector(v, agent, tmp, &[])?),
    };
    measure(topo, collector, tmp, variant, workload, rep, &mut || {
        iperf_traffic(server, workload, secs)
    })
}

/// What one run's traffic did, as its generator saw it.
pub(crate) struct Traffic {
    pub sender_bps: f64,
    pub receiver_bps: f64,
    /// CPU seconds of the sending and the receiving process (0 without one).
    pub cpu_client: f64,
    pub cpu_server: f64,
    pub flows_sent: Option<u64>,
}

/// iperf3 traffic of `workload` for `secs`, the server's CPU measured around it.
fn iperf_traffic(server: &Daemon, workload: Workload, secs: u32) -> anyhow::Result<Traffic> {
    let s0 = cpu::tree_secs(server.pid());
    let (sender_bps, receiver_bps, cpu_client) = iperf_client(workload, secs)?;
    Ok(Traffic {
        sender_bps,
        receiver_bps,
        cpu_client,
        cpu_server: cpu::tree_secs(server.pid()) - s0,
        flows_sent: None,
    })
}

/// One run: `traffic` with `collector` (already started; None for the baseline) capturing
/// A's veth, the CPU and interface counters around it; then the collector is stopped and
/// what it accounted for read from its output.
pub(crate) fn measure(
    topo: &Topology,
    collector: Option<Daemon>,
    tmp: &TempDir,
    variant: Variant,
    workload: Workload,
    rep: usize,
    traffic: &mut dyn FnMut() -> anyhow::Result<Traffic>,
) -> anyhow::Result<Run> {
    let collector_pid = collector.as_ref().map(Daemon::pid);
    let (b0, p0) = topo.counters_a()?;
    let m0 = cpu::machine_busy_secs()?;
    let k0 = cpu::ksoftirqd_secs();
    let c0 = collector_pid.map_or(0.0, cpu::tree_secs);
    let started = Instant::now();
    let t = traffic()?;
    let seconds = started.elapsed().as_secs_f64();
    let c1 = collector_pid.map_or(0.0, cpu::tree_secs);
    let k1 = cpu::ksoftirqd_secs();
    let m1 = cpu::machine_busy_secs()?;
    let (b1, p1) = topo.counters_a()?;
    let softflowd_live = match variant {
        Variant::Softflowd => Some(softflowd_counts(tmp)?),
        _ => None,
    };
    let lifetime_cpu = match collector {
        Some(c) => Some(c.stop()?),
        None => None,
    };
    let (_, p2) = topo.counters_a()?;
    let captured = match variant {
        Variant::Baseline => None,
        Variant::Flowlog => {
            Some(flowlog_counts(&tmp.path(FLOWLOG_OUT)).with_context(|| {
                format!("flowlog's log: {}", log_tail(&tmp.path("flowlog.log")))
            })?)
        }
        Variant::Softflowd => softflowd_live,
        Variant::Pmacctd => Some(pmacctd_counts(&tmp.path(PMACCTD_CSV))?),
    };
    Ok(Run {
        variant,
        workload,
        rep,
        seconds,
        sender_bps: t.sender_bps,
        receiver_bps: t.receiver_bps,
        iface_bytes: b1 - b0,
        iface_packets: p1 - p0,
        cpu_client: t.cpu_client,
        cpu_server: t.cpu_server,
        cpu_ksoftirqd: k1 - k0,
        cpu_collector: c1 - c0,
        cpu_machine: m1 - m0,
        collector_packets: captured.map(|c| c.packets),
        iface_packets_lifetime: p2 - p0,
        flows_sent: t.flows_sent,
        flows_captured: captured.map(|c| c.flows),
        cpu_collector_to_exit: lifetime_cpu.map(|l| l - c0),
    })
}

/// Packets and flows a collector accounted for.
#[derive(Debug, Clone, Copy)]
struct Captured {
    packets: u64,
    flows: u64,
}

/// softflowd's "Packets processed" and its flows (active plus expired) so far, from its
/// control socket.
fn softflowd_counts(tmp: &TempDir) -> anyhow::Result<Captured> {
    let out = netns::run(
        Command::new("softflowctl")
            .arg("-c")
            .arg(tmp.path("softflowd.ctl"))
            .arg("statistics"),
    )?;
    let number = |prefix: &str| -> anyhow::Result<u64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {prefix:?} in softflowctl statistics: {out}"))
    };
    Ok(Captured {
        packets: number("Packets processed:")?,
        flows: number("Number of active flows:")? + number("Flows expired:")?,
    })
}

/// Packets in the records flowlog wrote (gzip text objects under `dir`, default v2 format;
/// NODATA/SKIPDATA records have none), and the distinct 5-tuples of its OK records.
fn flowlog_counts(dir: &Path) -> anyhow::Result<Captured> {
    let lines = records::lines(dir)?;
    if lines.is_empty() {
        bail!(
            "flowlog wrote no record under {} after SIGTERM",
            dir.display()
        );
    }
    let parsed: Vec<V2> = lines.iter().filter_map(|l| V2::parse(l)).collect();
    let flows: HashSet<[&str; 5]> = parsed
        .iter()
        .filter(|r| r.log_status == "OK")
        .map(|r| r.tuple)
        .collect();
    Ok(Captured {
        packets: parsed.iter().filter_map(|r| r.packets).sum(),
        flows: flows.len() as u64,
    })
}

/// Packets and rows in pmacctd's print-plugin CSV (every purge appended; header lines
/// skipped). Its table is keyed by the 5-tuple: a row is a flow.
fn pmacctd_counts(csv: &Path) -> anyhow::Result<Captured> {
    let text = fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let header = text.lines().next().context("pmacctd wrote an empty CSV")?;
    let col = header
        .split(',')
        .position(|c| c.trim() == "PACKETS")
        .with_context(|| format!("no PACKETS column in pmacctd's CSV header {header:?}"))?;
    let packets: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split(',').nth(col)?.trim().parse::<u64>().ok())
        .collect();
    Ok(Captured {
        packets: packets.iter().sum(),
        flows: packets.len() as u64,
    })
}

fn bpf_view(
    topo: &Topology,
    server: &Daemon,
    agent: &Path,
    tmp: &TempDir,
    workload: Workload,
    secs: u32,
    flow_logs: u32,
) -> anyhow::Result<BpfView> {
    let flowlog = if flow_logs == 1 {
        start_collector(Variant::Flowlog, agent, tmp, &[])?
    } else {
        start_flow_logs(agent, tmp, flow_logs)?
    };
    bpf_view_of(topo, flowlog, workload, &mut || {
        iperf_traffic(server, workload, secs)
    })
}

/// The run time of `flowlog`'s TC programs over `traffic`, with the kernel's BPF run-time
/// statistics on for just that long; stops `flowlog`.
pub(crate) fn bpf_view_of(
    topo: &Topology,
    flowlog: Daemon,
    workload: Workload,
    traffic: &mut dyn FnMut() -> anyhow::Result<Traffic>,
) -> anyhow::Result<BpfView> {
    let ids = prog_ids(flowlog.pid())?;
    let stats_fd: OwnedFd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("BPF_ENABLE_STATS (run time) failed")?;
    let (t0, n0) = prog_stats(&ids)?;
    let (_, p0) = topo.counters_a()?;
    let receiver_bps = traffic()?.receiver_bps;
    let (_, p1) = topo.counters_a()?;
    let (t1, n1) = prog_stats(&ids)?;
    drop(stats_fd);
    flowlog.stop()?;
    Ok(BpfView {
        workload,
        receiver_bps,
        iface_packets: p1 - p0,
        run_cnt: n1 - n0,
        run_time_ns: t1 - t0,
    })
}

/// Ids of the BPF programs process `pid` holds (its `anon_inode:bpf-prog` fds).
fn prog_ids(pid: i32) -> anyhow::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).context("listing the agent's fds")? {
        let entry = entry?;
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf-prog" {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))?;
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Summed run time (ns) and run count of the TC programs (ingress, egress, and the unattached
/// `_l3` twins, which never run) among `ids`; the agent's other programs (the drop tracepoint)
/// are left out.
fn prog_stats(ids: &[u32]) -> anyhow::Result<(u64, u64)> {
    let (mut time, mut count, mut found) = (0u64, 0u64, 0usize);
    for info in aya::programs::loaded_programs() {
        let info = info.context("listing loaded BPF programs")?;
        // Kernel program names are cut at 15 bytes: "flowlog_tc_ingr", "flowlog_tc_egre".
        let tc = info
            .name_as_str()
            .is_some_and(|n| n.starts_with("flowlog_tc"));
        if ids.contains(&info.id()) && tc {
            time += info.run_time().as_nanos() as u64;
            count += info.run_count();
            found += 1;
        }
    }
    // The agent loads the `_l3` twins too (same truncated names); only the pair attached to
    // the veth runs, the other two add nothing.
    if found != 4 {
        bail!(
            "expected the agent's 4 TC programs (ingress, egress and their _l3 twins) among its programs {ids:?}, found {found}"
        );
    }
    Ok((time, count))
}

/// Runs the iperf3 client in A; returns the sender's and the receiver's bits/s and the
/// client's CPU seconds.
fn iperf_client(workload: Workload, secs: u32) -> anyhow::Result<(f64, f64, f64)> {
    let mut cmd = netns::in_netns(NS_A, "iperf3");
    cmd.args([
        "-c",
        ADDR_B,
        "-p",
        IPERF_PORT,
        "-t",
        &secs.to_string(),
        "-J",
    ])
    .args(workload.iperf_args()?)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().context("starting the iperf3 client")?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("iperf3 stdout")?
        .read_to_string(&mut out)?;
    let (status, cpu) = cpu::wait_with_cpu(child)?;
    let json: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("iperf3 printed no JSON (exit {status}): {}", out.trim()))?;
    if let Some(err) = json.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3 client: {err}");
    }
    if !status.success() {
        bail!("iperf3 client exited with {status}");
    }
    let bps = |side: &str| {
        json["end"][side]["bits_per_second"]
            .as_f64()
            .with_context(|| format!("iperf3 JSON has no end.{side}.bits_per_second"))
    };
    Ok((bps("sum_sent")?, bps("sum_received")?, cpu))
}

/// The agent with `n` flow logs on the interface, from a `--flow-logs` file: each its own file
/// destination, all on the one capture.
fn start_flow_logs(agent: &Path, tmp: &TempDir, n: u32) -> anyhow::Result<Daemon> {
    let root = tmp.path(&format!("flowlog-{n}"));
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    fs::create_dir_all(&root)?;
    let entries: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "ResourceType": "NetworkInterface", "ResourceIds": [IF_A],
                "LogDestinationType": "file",
                "LogDestination": root.join(format!("out-{i}")).display().to_string(),
                "MaxAggregationInterval": 60,
            })
        })
        .collect();
    let file = root.join("flow-logs.json");
    fs::write(&file, serde_json::to_vec(&entries)?)?;
    let mut cmd = netns::in_netns(NS_A, agent);
    // Each run measures its own agent from a fresh attach: nothing pinned for the next one.
    cmd.args(["run", "--no-pin", "--no-imds", "--flow-logs"])
        .arg(&file)
        .arg("--state-dir")
        .arg(root.join("state"))
        .arg("--control-socket")
        .arg(root.join("control.sock"))
        .env("RUST_LOG", "info");
    Daemon::start("flowlog", cmd, root.join("flowlog.log"), None, "capturing")
}

/// Starts `variant`'s collector on A's veth; `flowlog_args` are added to flowlog's command
/// line (ignored for the peers).
pub(crate) fn start_collector(
    variant: Variant,
    agent: &Path,
    tmp: &TempDir,
    flowlog_args: &[String],
) -> anyhow::Result<Daemon> {
    match variant {
        Variant::Baseline => bail!("the baseline has no collector"),
        Variant::Flowlog => {
            // A fresh destination and spool per run: nothing a previous run left behind is
            // delivered (and counted) in this one.
            let out = tmp.path(FLOWLOG_OUT);
            let spool = tmp.path("flowlog-spool");
            for dir in [&out, &spool] {
                if dir.exists() {
                    fs::remove_dir_all(dir)
                        .with_context(|| format!("clearing {}", dir.display()))?;
                }
            }
            let mut cmd = netns::in_netns(NS_A, agent);
            // Each run measures its own agent from a fresh attach: nothing pinned for the next.
            cmd.args([
                "run",
                "--no-pin",
                "--iface",
                IF_A,
                "--no-imds",
                "--destination",
            ])
            .arg(format!("file:{}", out.display()))
            .arg("--spool-dir")
            .arg(&spool)
            .args(flowlog_args)
            .env("RUST_LOG", "info");
            Daemon::start("flowlog", cmd, tmp.path("flowlog.log"), None, "capturing")
        }
        Variant::Softflowd => {
            let mut cmd = netns::in_netns(NS_A, "softflowd");
            cmd.args(["-i", IF_A, "-n", NETFLOW_TARGET, "-d", "-p"])
                .arg(tmp.path("softflowd.pid"))
                .arg("-c")
                .arg(tmp.path("softflowd.ctl"));
            Daemon::start(
                "softflowd",
                cmd,
                tmp.path("softflowd.log"),
                None,
                "starting data collection",
            )
        }
        Variant::Pmacctd => {
            // The same aggregation as a flow log: the 5-tuple, kept in memory by the print
            // plugin and written once a minute.
            let log = tmp.path("pmacctd.log");
            let conf = tmp.path("pmacctd.conf");
            let _ = fs::remove_file(&log);
            let _ = fs::remove_file(tmp.path(PMACCTD_CSV));
            fs::write(
                &conf,
                format!(
                    "daemonize: false\npcap_interface: {IF_A}\n\
                     aggregate: src_host, dst_host, src_port, dst_port, proto\n\
                     plugins: print\nprint_output: csv\nprint_output_file: {}\n\
                     print_output_file_append: true\nprint_refresh_time: 60\nlogfile: {}\npidfile: {}\n",
                    tmp.path(PMACCTD_CSV).display(),
                    log.display(),
                    tmp.path("pmacctd.pid").display()
                ),
            )?;
            let mut cmd = netns::in_netns(NS_A, "pmacctd");
            cmd.arg("-f").arg(&conf);
            Daemon::start(
                "pmacctd",
                cmd,
                tmp.path("pmacctd.out"),
                Some(log),
                "link type is",
            )
        }
    }
}

/// A background process with its output in a log file; killed (with its descendants) on drop.
pub(crate) struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
    /// Whether a non-zero exit after SIGTERM is normal for it (else it is an error).
    nonzero_exit_ok: bool,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr to `out`, and waits until `marker` appears in
    /// `ready_log` (default: `out`).
    pub(crate) fn start(
        name: &'static str,
        mut cmd: Command,
        out: PathBuf,
        ready_log: Option<PathBuf>,
        marker: &str,
    ) -> anyhow::Result<Self> {
        let file = fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let mut d = Daemon {
            name,
            child: Some(child),
            log: out,
            nonzero_exit_ok: false,
        };
        let ready_log = ready_log.unwrap_or_else(|| d.log.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if fs::read_to_string(&ready_log).is_ok_and(|s| s.contains(marker)) {
                break;
            }
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{name} exited ({status}) before it was ready: {}", d.tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} not ready after 20 s (no {marker:?} in {}): {}",
                    ready_log.display(),
                    d.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let it finish starting up (pcap buffers, plugin processes) before measuring.
        std::thread::sleep(Duration::from_millis(300));
        Ok(d)
    }

    fn exits_nonzero_on_sigterm(mut self) -> Self {
        self.nonzero_exit_ok = true;
        self
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn tail(&self) -> String {
        log_tail(&self.log)
    }

    /// SIGTERM, then up to 10 s for a clean exit; errors (after killing it) if it does not
    /// exit, or exits with a failure. Returns the CPU seconds of its whole life (it and the
    /// children it reaped, from wait4's rusage): what it did on the way out (flowlog's last
    /// drain, a peer's final flush) included.
    pub(crate) fn stop(mut self) -> anyhow::Result<f64> {
        let Some(mut child) = self.child.take() else {
            return Ok(0.0);
        };
        let pid = child.id() as i32;
        let tree = cpu::descendants(pid);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let (status, cpu) = loop {
            let mut raw = 0;
            // SAFETY: an all-zero rusage is a valid out-parameter.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers; `pid` is our own child, not yet reaped (std never waits
            // on it: it is forgotten once reaped here).
            let r = unsafe { libc::wait4(pid, &mut raw, libc::WNOHANG, &mut ru) };
            if r == pid {
                std::mem::forget(child);
                break (ExitStatus::from_raw(raw), cpu::rusage_secs(&ru));
            }
            if r < 0 {
                bail!(
                    "waiting for {}: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
            }
            if Instant::now() > deadline {
                kill_tree(&mut child, &tree);
                bail!(
                    "{} did not exit within 10 s of SIGTERM; killed: {}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        kill_leftovers(&tree);
        // Dying of the SIGTERM it was sent (softflowd does) is a clean stop too.
        let terminated = status.signal() == Some(libc::SIGTERM);
        if !status.success() && !terminated && !self.nonzero_exit_ok {
            bail!(
                "{} exited with {status} after SIGTERM: {}",
                self.name,
                self.tail()
            );
        }
        Ok(cpu)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let tree = cpu::descendants(child.id() as i32);
            kill_tree(&mut child, &tree);
        }
    }
}

fn kill_tree(child: &mut Child, tree: &[i32]) {
    let _ = child.kill();
    kill_leftovers(tree);
    let _ = child.wait();
}

/// SIGKILLs processes of `tree` still alive (forked helpers such as pmacctd's plugins).
fn kill_leftovers(tree: &[i32]) {
    for &pid in tree {
        if Path::new(&format!("/proc/{pid}")).exists() {
            // SAFETY: plain kill(2) on a pid that was our descendant a moment ago.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The last lines of a log file, on one line, without terminal colour codes.
pub(crate) fn log_tail(path: &Path) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let tail = lines[lines.len().saturating_sub(6)..].join(" | ");
    let mut out = String::with_capacity(tail.len());
    let mut chars = tail.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip an ANSI escape sequence up to its final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A scratch directory under /tmp, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("flbn-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // FLOWLOG_BENCH_KEEP=1 keeps the agents' logs and outputs for a look afterwards.
        if std::env::var_os("FLOWLOG_BENCH_KEEP").is_some() {
            eprintln!("flowlog-bench: kept {}", self.0.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Versions of the tools in the comparison (Debian package versions).
fn versions() -> Vec<(String, String)> {
    ["iperf3", "softflowd", "pmacct"]
        .iter()
        .map(|pkg| {
            let v = Command::new("dpkg-query")
                .args(["-W", "-f=${Version}", pkg])
                .stdin(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_else(|| "unknown".to_owned());
            ((*pkg).to_owned(), v)
        })
        .collect()
}
