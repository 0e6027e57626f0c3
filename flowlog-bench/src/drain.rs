//! Drain: the agent's end-of-window work on windows of 10k, 100k, 1M and 4M flows.
//!
//! Streamed, as `flowlog run` does it: flip the slot, then read the idle flow map on a second
//! thread while each batch becomes records, text and gzip ([`Collector::cut_into`] +
//! [`FlowLog::add_flows`]), until every object is finished, then clear the slot
//! ([`Collector::recorded`]); its peak RSS is checked against
//! [`budget_kib`]. Then, to show where the time goes, the same window collected first
//! ([`Collector::cut`]) and each step alone: records (unsorted and sorted), format + gzip,
//! gzip alone, the write-ahead log, and the records of 1..8 flow logs sharing the cut.
//!
//! Each size runs in a fresh child process (this binary, hidden `drain-child` subcommand) so
//! its peak RSS (VmHWM) is its own. The flows are written into both slots' flow maps from
//! userspace first, one `BPF_MAP_UPDATE_ELEM` each (not timed).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use aya::{
    maps::{PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};
use clap::Parser as _;
use flowlog_agent::{
    capture::attach::Capture,
    capture::collect::{Collector, DrainedWindow, FlowTotals, Window},
    capture::flow_sink::{FLOW_BATCH, FlowSink},
    capture::window_metrics::FlowTally,
    cli::flag_flow_log,
    cli::{Cli, Command as AgentCommand},
    flowlogs::flow_log::{FlowLog, OpenWindow},
    inventory::discover::Interface,
    inventory::metadata::Metadata,
    metrics,
    publish::Batch,
    records::{self, WatchedInterface, stream::RecordStream},
};
use flowlog_common::{
    DIR_EGRESS, DIR_INGRESS, FAMILY_IPV4, FAMILY_IPV6, FLOW_MAPS, FiveTuple, FlowKey, FlowStats,
    ipv4_mapped,
};
use serde::{Deserialize, Serialize};

use crate::OBJECT_ENV;

/// Interface the drained flows were "seen" on.
const IFINDEX: u32 = 7;

pub fn sizes(quick: bool) -> Vec<u32> {
    if quick {
        vec![10_000, 100_000]
    } else {
        vec![10_000, 100_000, 1_000_000, 4_000_000]
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrainResult {
    pub flows: u32,
    /// `Collector::cut` and `Collector::recorded`: flip, grace period, read, clear.
    pub cut_s: f64,
    /// The grace period inside `cut_s` (a sleep; no work).
    pub grace_s: f64,
    /// Records, formatting (default v2 format) and gzip of every object.
    pub format_s: f64,
    pub total_s: f64,
    /// Peak RSS of the child before the drain (after loading and filling) and at the end.
    pub hwm_before_kib: u64,
    pub hwm_after_kib: u64,
    pub records: usize,
    pub gzip_bytes: usize,
    /// The objects' text, uncompressed, and the time to gzip it alone (flate2 at the
    /// batcher's level): the gzip share of `format_s`. Absent in older results.
    #[serde(default)]
    pub text_bytes: Option<u64>,
    #[serde(default)]
    pub gzip_s: Option<f64>,
    /// The gzip level of the objects and of `gzip_s`. Absent in older results.
    #[serde(default)]
    pub gzip_level: Option<u32>,
    /// What the write-ahead log costs the window (the same window through a flow log whose
    /// open object has a WAL, on disk under /var/tmp): its writes and fsync, as the agent's
    /// `flowlog_wal_last_window_seconds` measures them. Absent in older results.
    #[serde(default)]
    pub wal_s: Option<f64>,
    /// Inside `wal_s`: the fsync.
    #[serde(default)]
    pub wal_sync_s: Option<f64>,
    /// Bytes the window wrote to the WAL.
    #[serde(default)]
    pub wal_bytes: Option<u64>,
    /// The same drained window taken by 1 and by 8 flow logs over the one capture (each its
    /// interfaces' part, records, format, gzip): (flow logs, seconds). The datapath is the same
    /// program whatever their number. Absent in older results.
    #[serde(default)]
    pub flow_logs_s: Vec<(u32, f64)>,
    /// The agent's path: flip, then the flows become records, text and gzip as they are
    /// drained ([`Collector::cut_into`], a second thread draining), until every object is
    /// finished. Absent in older results (their `total_s` collected every flow first).
    #[serde(default)]
    pub stream_s: Option<f64>,
    /// Of `stream_s`, the time the agent's thread spent turning batches into records, text and
    /// gzip and finishing the objects (the rest it waited for the drain thread, or flipped).
    #[serde(default)]
    pub stream_busy_s: Option<f64>,
    /// After `stream_s` (the records are in the objects): clearing the slot
    /// ([`Collector::recorded`]: `BPF_MAP_DELETE_BATCH` of the keys the drain read). Absent in
    /// older results, whose `stream_s` included the clear (by `BPF_MAP_LOOKUP_AND_DELETE_BATCH`).
    #[serde(default)]
    pub stream_clear_s: Option<f64>,
    /// Inside `cut_s`: the clear alone, as `stream_clear_s`.
    #[serde(default)]
    pub clear_s: Option<f64>,
    /// The same `flows` cleared the earlier way, `BPF_MAP_LOOKUP_AND_DELETE_BATCH` of every
    /// entry (each per-CPU value copied out again), for comparison.
    #[serde(default)]
    pub clear_lookup_delete_s: Option<f64>,
    /// Peak RSS at the end of the streamed drain (before the collected one runs).
    #[serde(default)]
    pub stream_hwm_kib: Option<u64>,
    /// The memory budget of the streamed drain above `hwm_before_kib`: [`budget_kib`].
    #[serde(default)]
    pub budget_kib: Option<u64>,
    /// Inside `format_s` (every flow collected first): building the records unsorted, and
    /// `records::build` (the same, sorted).
    #[serde(default)]
    pub records_s: Option<f64>,
    #[serde(default)]
    pub build_sorted_s: Option<f64>,
    /// Records, format and gzip of the collected window fed in drain batches to k flow logs
    /// at once, as `flowlog run` hands each batch to every flow log: (k, seconds), the drain
    /// itself (shared) not included.
    #[serde(default)]
    pub streamed_flow_logs_s: Vec<(u32, f64)>,
}

/// The streamed drain's memory budget over the RSS before it, in KiB: a fixed part (batches in
/// flight: (IN_FLIGHT + 2) x FLOW_BATCH flows of 88 bytes, about 2 MiB; one batch's records;
/// an object's 128 KiB text chunk; allocator slack) and, per flow, the finished objects'
/// gzip bytes, which stay in memory until spooled (about 5.6 bytes per record of the default
/// format, up to twice that while the compressed buffer grows by doubling: 16 bytes), and the
/// flow's map key, kept until the slot is cleared (40 bytes: the bench's flows are all in the
/// IPv6-keyed map; the agent keeps IPv4 flows under the 20-byte compact key).
pub fn budget_kib(flows: u32) -> u64 {
    BUDGET_FIXED_KIB + u64::from(flows) * BUDGET_BYTES_PER_FLOW / 1024
}
pub const BUDGET_FIXED_KIB: u64 = 16 * 1024;
pub const BUDGET_BYTES_PER_FLOW: u64 = 16 + 40;

pub fn run(sizes: &[u32]) -> anyhow::Result<Vec<DrainResult>> {
    let exe = std::env::current_exe().context("locating the benchmark binary")?;
    let mut out = Vec::new();
    for &n in sizes {
        let child = Command::new(&exe)
            .args(["drain-child", "--flows", &n.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running the drain child")?;
        if !child.status.success() {
            bail!("drain of {n} flows failed ({})", child.status);
        }
        let line = String::from_utf8_lossy(&child.stdout);
        let r: DrainResult = serde_json::from_str(line.trim())
            .with_context(|| format!("drain child printed no result: {line}"))?;
        eprintln!(
            "  {n:>8} flows streamed: flip to objects finished {:.3} s (records, text, gzip busy {:.3} s), peak RSS {} MiB (budget {} MiB over {} MiB before)",
            r.stream_s.unwrap_or(f64::NAN),
            r.stream_busy_s.unwrap_or(f64::NAN),
            r.stream_hwm_kib.unwrap_or(0) / 1024,
            r.budget_kib.unwrap_or(0) / 1024,
            r.hwm_before_kib / 1024,
        );
        eprintln!(
            "  {n:>8} flows collected first: cut {:.3} s, records+format+gzip {:.3} s, total {:.3} s, peak RSS {} MiB; \
             write-ahead log {:.3} s (fsync {:.3} s, {:.1} MiB); flow logs sharing the window (count, s): {:?}",
            r.cut_s,
            r.format_s,
            r.total_s,
            r.hwm_after_kib / 1024,
            r.wal_s.unwrap_or(f64::NAN),
            r.wal_sync_s.unwrap_or(f64::NAN),
            r.wal_bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            r.flow_logs_s,
        );
        eprintln!(
            "  {n:>8} flows: records unsorted {:.3} s, sorted {:.3} s; streamed batches to k flow logs (k, s): {:?}",
            r.records_s.unwrap_or(f64::NAN),
            r.build_sorted_s.unwrap_or(f64::NAN),
            r.streamed_flow_logs_s,
        );
        out.push(r);
    }
    Ok(out)
}

/// A distinct flow per `i`: three in four IPv4, one in four IPv6; TCP and UDP; both directions.
fn key(i: u32) -> FlowKey {
    let b = i.to_be_bytes();
    let v6 = i % 4 == 3;
    let (src, dst) = if v6 {
        let mut s = [0u8; 16];
        s[0] = 0xfd;
        s[12..].copy_from_slice(&b);
        let mut d = [0u8; 16];
        d[0] = 0xfd;
        d[15] = 1;
        (s, d)
    } else {
        (
            ipv4_mapped([10, b[1], b[2], b[3]]),
            ipv4_mapped([10, 255, 0, 1]),
        )
    };
    let tuple = FiveTuple {
        family: if v6 { FAMILY_IPV6 } else { FAMILY_IPV4 },
        protocol: if i.is_multiple_of(2) { 6 } else { 17 },
        src_addr: src,
        dst_addr: dst,
        src_port: 1024 + (i % 60_000) as u16,
        dst_port: 443,
    };
    FlowKey::new(
        IFINDEX,
        if i.is_multiple_of(3) {
            DIR_EGRESS
        } else {
            DIR_INGRESS
        },
        &tuple,
    )
}

/// The kernel's jiffies now, what the datapath stamps packets with (the bench runs as root,
/// which may read /proc/timer_list).
fn jiffies_now() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/timer_list").context("reading /proc/timer_list")?;
    text.lines()
        .find_map(|l| l.strip_prefix("jiffies: "))
        .and_then(|j| j.trim().parse().ok())
        .context("no jiffies line in /proc/timer_list")
}

/// CPU time of the calling thread, s: what a step cost on a machine other work shares.
fn thread_cpu_s() -> f64 {
    // SAFETY: an all-zero timespec is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on every supported kernel.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// VmHWM (peak resident set) of this process, KiB.
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The text of every finished object of `batches`, uncompressed.
fn object_texts(batches: &[Batch]) -> anyhow::Result<Vec<Vec<u8>>> {
    use std::io::Read as _;
    let mut texts = Vec::new();
    for b in batches {
        if let Batch::Object(o) = b {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(&o.body[..])
                .read_to_end(&mut text)
                .context("gunzip of a finished object")?;
            texts.push(text);
        }
    }
    Ok(texts)
}

/// Uncompresses the objects (not timed), then times gzipping their text again the way the
/// batcher does: how much of the format step is compression.
fn gzip_alone(batches: &[Batch]) -> anyhow::Result<(u64, f64)> {
    use std::io::Write as _;
    let texts = object_texts(batches)?;
    let t = Instant::now();
    for text in &texts {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::new(flowlog_agent::publish::batch::GZIP_LEVEL),
        );
        gz.write_all(text)?;
        std::hint::black_box(gz.finish()?);
    }
    Ok((
        texts.iter().map(|t| t.len() as u64).sum(),
        t.elapsed().as_secs_f64(),
    ))
}

/// Times `BPF_MAP_LOOKUP_AND_DELETE_BATCH` of every entry of the flow map `name` (holding `n`
/// flows), each per-CPU value copied out: how the collector cleared a recorded slot before it
/// kept the keys it read. Returns seconds and CPU seconds.
fn clear_every_entry(
    capture: &mut Capture,
    name: &str,
    n: u32,
    cpus: usize,
) -> anyhow::Result<(f64, f64)> {
    let map = capture
        .ebpf_mut()
        .map_mut(name)
        .with_context(|| format!("{name} missing"))?;
    let flows: PerCpuHashMap<_, FlowKey, FlowStats> = PerCpuHashMap::try_from(map)?;
    let t = Instant::now();
    let cpu = thread_cpu_s();
    let deleted = flowlog_agent::capture::map_batch::lookup_and_delete_all(&flows, cpus, |_, _| {})
        .with_context(|| format!("BPF_MAP_LOOKUP_AND_DELETE_BATCH of {name}"))?;
    let s = (t.elapsed().as_secs_f64(), thread_cpu_s() - cpu);
    if deleted != n as usize {
        bail!("cleared {deleted} flows of the {n} in {name}");
    }
    Ok(s)
}

/// Gzip of the objects' text at levels 1, 2 and 3 (flate2, the batcher's backend): (level,
/// CPU seconds, compressed bytes).
fn gzip_levels(batches: &[Batch]) -> anyhow::Result<Vec<(u32, f64, usize)>> {
    use std::io::Write as _;
    let texts = object_texts(batches)?;
    let mut out = Vec::new();
    for level in 1..=3 {
        let t = thread_cpu_s();
        let mut bytes = 0;
        for text in &texts {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            gz.write_all(text)?;
            bytes += gz.finish()?.len();
        }
        out.push((level, thread_cpu_s() - t, bytes));
    }
    Ok(out)
}

/// Writes `n` flows into the flow map `name` from userspace.
fn fill(capture: &mut Capture, name: &str, n: u32, cpus: usize, now: u64) -> anyhow::Result<()> {
    let map = capture
        .ebpf_mut()
        .map_mut(name)
        .with_context(|| format!("{name} missing"))?;
    let mut flows: PerCpuHashMap<_, FlowKey, FlowStats> = PerCpuHashMap::try_from(map)?;
    for i in 0..n {
        let mut v = vec![FlowStats::default(); cpus];
        let packets = 1 + u64::from(i % 20);
        v[(i as usize) % cpus] = FlowStats {
            packets,
            bytes: packets * 120,
            first_seen_jiffies: now - 1,
            last_seen_jiffies: now,
            tcp_flags: if i % 2 == 0 { 2 } else { 0 },
            _pad: [0; 7],
        };
        flows
            .insert(key(i), PerCpuValues::try_from(v)?, 0)
            .with_context(|| format!("filling {name} (flow {i})"))?;
    }
    Ok(())
}

/// The agent's path for one flow log, as `flowlog run`'s cut sink and pipeline take a cut:
/// each drained batch is tallied for the window metrics, filtered to the flow log's interfaces
/// and becomes records, text and gzip at once ([`FlowLog::add_flows`]).
struct Streamed<'a> {
    flow_log: &'a mut FlowLog,
    interfaces: &'a BTreeMap<u32, Interface>,
    open: Option<OpenWindow>,
    tally: FlowTally,
    flows: usize,
    busy: std::time::Duration,
    /// CPU time of `busy`.
    busy_cpu_s: f64,
}

impl FlowSink for Streamed<'_> {
    fn begin(&mut self, window: &DrainedWindow) {
        self.open = Some(self.flow_log.open_window(window, self.interfaces, true));
    }

    fn flows(&mut self, flows: &[(FlowKey, FlowTotals)]) {
        let t = Instant::now();
        let cpu = thread_cpu_s();
        self.flows += flows.len();
        self.tally.add(flows);
        let members = self.interfaces;
        if let Some(w) = &mut self.open {
            self.flow_log.add_flows(
                w,
                flows
                    .iter()
                    .filter(|(k, _)| members.contains_key(&k.ifindex)),
            );
        }
        self.busy += t.elapsed();
        self.busy_cpu_s += thread_cpu_s() - cpu;
    }
}

fn object_bytes(batches: &[Batch]) -> usize {
    batches
        .iter()
        .map(|b| match b {
            Batch::Object(o) => o.body.len(),
            _ => 0,
        })
        .sum()
}

/// The hidden `drain-child` subcommand: one size, result as one JSON line on stdout.
///
/// Both flow map slots are filled with the same `n` flows. The first cut (slot A) takes the
/// agent's path, streamed, for its time and peak RSS; the second (slot B) collects every flow
/// first and times each step alone: where the time goes.
///
/// `streamed_only` (for work on the drain): only the streamed cut, then the gzip of its
/// objects' text at levels 1 to 3, as one JSON line.
pub fn child(n: u32, streamed_only: bool) -> anyhow::Result<()> {
    let object = crate::read_env_file(OBJECT_ENV)?;
    let mut capture = Capture::load(&object, n + 1_024).context("loading the flowlog object")?;
    let cpus = nr_cpus()
        .map_err(|(_, e)| e)
        .context("reading the possible CPUs")?;
    let now = jiffies_now()?;
    fill(&mut capture, FLOW_MAPS[0], n, cpus, now)?;
    // The clear the collector used before it kept the keys it read, for comparison; then the
    // map is filled again.
    let (clear_lookup_delete_s, clear_lookup_delete_cpu_s) =
        clear_every_entry(&mut capture, FLOW_MAPS[0], n, cpus)?;
    fill(&mut capture, FLOW_MAPS[0], n, cpus, now)?;
    fill(&mut capture, FLOW_MAPS[1], n, cpus, now)?;
    // The options `flowlog run` gets by default, parsed by the agent's own CLI.
    let args = match Cli::try_parse_from([
        "flowlog",
        "run",
        "--no-imds",
        "--destination",
        "file:/nonexistent-flowlog-bench",
    ]) {
        Ok(Cli {
            command: AgentCommand::Run(a),
            ..
        }) => a,
        Ok(_) => bail!("`flowlog run` did not parse as the run command"),
        Err(e) => bail!("parsing `flowlog run` options: {e}"),
    };
    let interfaces: BTreeMap<u32, Interface> = [(
        IFINDEX,
        Interface {
            name: "eth0".into(),
            ifindex: IFINDEX,
            mac: None,
            ipv4: Some(Ipv4Addr::new(10, 255, 0, 1)),
            ipv6: None,
            ..Default::default()
        },
    )]
    .into();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let window = Window {
        start: unix - unix % 60 - 60,
        end: unix - unix % 60,
    };
    let hwm_before_kib = vm_hwm_kib();
    let mut collector = Collector::new(capture.ebpf_mut())?;

    // The agent's path: records as the flows are drained.
    let mut flow_log = flag_flow_log::flow_log(&args.records, &args.output, Metadata::default())?;
    let t = Instant::now();
    let mut sink = Streamed {
        flow_log: &mut flow_log,
        interfaces: &interfaces,
        open: None,
        tally: FlowTally::default(),
        flows: 0,
        busy: std::time::Duration::ZERO,
        busy_cpu_s: 0.0,
    };
    collector.cut_into(window, &mut sink)?;
    let (streamed, open, busy, busy_cpu_s) =
        (sink.flows, sink.open.take(), sink.busy, sink.busy_cpu_s);
    let open = open.context("the drain never began the window")?;
    let t_close = Instant::now();
    let cpu_close = thread_cpu_s();
    let mut batches = flow_log.close_window(open);
    batches.extend(flow_log.close_all());
    let stream_s = t.elapsed().as_secs_f64();
    let stream_busy_s = (busy + t_close.elapsed()).as_secs_f64();
    let stream_busy_cpu_s = busy_cpu_s + thread_cpu_s() - cpu_close;
    // The records are in the objects: the slot is cleared, as the agent does then.
    let t_clear = Instant::now();
    let cpu_clear = thread_cpu_s();
    collector.recorded()?;
    let stream_clear_s = t_clear.elapsed().as_secs_f64();
    let stream_clear_cpu_s = thread_cpu_s() - cpu_clear;
    let stream_hwm_kib = vm_hwm_kib();
    let streamed_records: usize = batches.iter().map(Batch::records).sum();
    if streamed != n as usize || streamed_records != n as usize {
        bail!(
            "the streamed drain returned {streamed} flows and {streamed_records} records of the {n} in the map"
        );
    }
    let streamed_gzip = object_bytes(&batches);
    if streamed_only {
        let gzip_levels = gzip_levels(&batches)?;
        println!(
            "{}",
            serde_json::json!({
                "flows": n,
                "stream_s": stream_s,
                "stream_busy_s": stream_busy_s,
                "stream_busy_cpu_s": stream_busy_cpu_s,
                "stream_clear_s": stream_clear_s,
                "stream_clear_cpu_s": stream_clear_cpu_s,
                "clear_lookup_delete_s": clear_lookup_delete_s,
                "clear_lookup_delete_cpu_s": clear_lookup_delete_cpu_s,
                "hwm_before_kib": hwm_before_kib,
                "stream_hwm_kib": stream_hwm_kib,
                "budget_kib": budget_kib(n),
                "gzip_bytes": streamed_gzip,
                "gzip_levels": gzip_levels,
            })
        );
        return Ok(());
    }
    drop(batches);

    // Every flow collected first, then each step alone.
    let mut flow_log = flag_flow_log::flow_log(&args.records, &args.output, Metadata::default())?;
    let t0 = Instant::now();
    let drained = collector.cut(window)?;
    // Cleared on the cut path, as the agent does once the records are on disk.
    let t_clear = Instant::now();
    collector.recorded()?;
    let clear_s = t_clear.elapsed().as_secs_f64();
    let cut_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut batches = flow_log.on_window(&drained, &interfaces);
    batches.extend(flow_log.close_all());
    let format_s = t1.elapsed().as_secs_f64();
    let total_s = t0.elapsed().as_secs_f64();
    // Before `gzip_alone`, which holds the objects' whole text uncompressed.
    let hwm_after_kib = vm_hwm_kib();

    if drained.flows.len() != n as usize {
        bail!(
            "the drain returned {} flows of the {n} in the map",
            drained.flows.len()
        );
    }
    let records: usize = batches.iter().map(Batch::records).sum();
    if records != n as usize {
        bail!("{records} records for {n} flows");
    }
    let gzip_bytes = object_bytes(&batches);
    if streamed_gzip == 0 {
        bail!("the streamed drain finished no object");
    }
    let (text_bytes, gzip_s) = gzip_alone(&batches)?;
    drop(batches);
    let (records_s, build_sorted_s) = records_alone(&drained)?;
    let (wal_s, wal_sync_s, wal_bytes) = with_wal(&args, &drained, &interfaces)?;
    let flow_logs_s = [1, 8]
        .into_iter()
        .map(|k| Ok((k, shared_by(k, &args, &drained, &interfaces)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let streamed_flow_logs_s = [1, 2, 4, 8]
        .into_iter()
        .map(|k| Ok((k, streamed_to(k, &args, &drained, &interfaces)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let result = DrainResult {
        flows: n,
        cut_s,
        grace_s: flowlog_agent::capture::collect::DEFAULT_GRACE.as_secs_f64(),
        format_s,
        total_s,
        hwm_before_kib,
        hwm_after_kib,
        records,
        gzip_bytes,
        text_bytes: Some(text_bytes),
        gzip_s: Some(gzip_s),
        gzip_level: Some(flowlog_agent::publish::batch::GZIP_LEVEL),
        wal_s: Some(wal_s),
        wal_sync_s: Some(wal_sync_s),
        wal_bytes: Some(wal_bytes),
        flow_logs_s,
        stream_s: Some(stream_s),
        stream_busy_s: Some(stream_busy_s),
        stream_clear_s: Some(stream_clear_s),
        clear_s: Some(clear_s),
        clear_lookup_delete_s: Some(clear_lookup_delete_s),
        stream_hwm_kib: Some(stream_hwm_kib),
        budget_kib: Some(budget_kib(n)),
        records_s: Some(records_s),
        build_sorted_s: Some(build_sorted_s),
        streamed_flow_logs_s,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Building the window's records alone: unsorted (as streamed), and sorted (`records::build`).
fn records_alone(drained: &DrainedWindow) -> anyhow::Result<(f64, f64)> {
    let watched = BTreeMap::from([(
        IFINDEX,
        WatchedInterface {
            primary_ipv4: Some(Ipv4Addr::new(10, 255, 0, 1)),
            ..WatchedInterface::named("eth0")
        },
    )]);
    let t = Instant::now();
    let mut out = Vec::with_capacity(drained.flows.len());
    let mut stream = RecordStream::new(drained, watched.clone());
    stream.flows(&drained.flows, &|_| false, &mut out);
    stream.finish(&|_| false, &mut out);
    let unsorted_s = t.elapsed().as_secs_f64();
    if out.len() != drained.flows.len() {
        bail!("{} records for {} flows", out.len(), drained.flows.len());
    }
    drop(out);
    let t = Instant::now();
    std::hint::black_box(records::build(drained, &watched, &|_| false));
    Ok((unsorted_s, t.elapsed().as_secs_f64()))
}

/// The collected window handed in drain-sized batches to `k` flow logs at once (each its
/// interfaces' part, records, text and gzip as the batch arrives), as `flowlog run` feeds its
/// pipelines: seconds for all `k`, the drain (shared, once) not included.
fn streamed_to(
    k: u32,
    args: &flowlog_agent::cli::RunArgs,
    drained: &DrainedWindow,
    interfaces: &BTreeMap<u32, Interface>,
) -> anyhow::Result<f64> {
    let mut flow_logs = (0..k)
        .map(|i| {
            let mut records = args.records.clone();
            records.flow_log_id = Some(format!("fl-{i:017x}"));
            flag_flow_log::flow_log(&records, &args.output, Metadata::default())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let members: std::collections::BTreeSet<u32> = interfaces.keys().copied().collect();
    let t = Instant::now();
    let mut open: Vec<OpenWindow> = flow_logs
        .iter()
        .map(|fl| fl.open_window(drained, interfaces, true))
        .collect();
    for batch in drained.flows.chunks(FLOW_BATCH) {
        for (fl, w) in flow_logs.iter_mut().zip(open.iter_mut()) {
            fl.add_flows(
                w,
                batch.iter().filter(|(k, _)| members.contains(&k.ifindex)),
            );
        }
    }
    let mut records = 0;
    for (fl, w) in flow_logs.iter_mut().zip(open) {
        let mut batches = fl.close_window(w);
        batches.extend(fl.close_all());
        records += batches.iter().map(Batch::records).sum::<usize>();
    }
    let s = t.elapsed().as_secs_f64();
    if records != drained.flows.len() * k as usize {
        bail!(
            "{records} records from {k} flow logs of {} flows",
            drained.flows.len()
        );
    }
    Ok(s)
}

/// The window taken by `k` flow logs of the same capture, as `flowlog run` hands a cut to each:
/// its interfaces' part, then records, format and gzip of every object. Seconds for all `k`.
fn shared_by(
    k: u32,
    args: &flowlog_agent::cli::RunArgs,
    drained: &DrainedWindow,
    interfaces: &BTreeMap<u32, Interface>,
) -> anyhow::Result<f64> {
    let mut flow_logs = (0..k)
        .map(|i| {
            let mut records = args.records.clone();
            records.flow_log_id = Some(format!("fl-{i:017x}"));
            flag_flow_log::flow_log(&records, &args.output, Metadata::default())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let members = interfaces.keys().copied().collect();
    let t = Instant::now();
    for fl in &mut flow_logs {
        let part = flowlog_agent::flowlogs::window::part_of(drained, &members);
        let mut batches = fl.on_window(&part, interfaces);
        batches.extend(fl.close_all());
        std::hint::black_box(batches);
    }
    Ok(t.elapsed().as_secs_f64())
}

/// The window again through a flow log whose objects have write-ahead logs, in a directory
/// under /var/tmp (on disk, like the default spool under /var/lib; /tmp may be tmpfs, where
/// fsync costs nothing). Returns the time the WAL's writes and fsyncs took (as the agent
/// measures them for its metrics), the fsyncs' share and the bytes written.
fn with_wal(
    args: &flowlog_agent::cli::RunArgs,
    drained: &DrainedWindow,
    interfaces: &BTreeMap<u32, Interface>,
) -> anyhow::Result<(f64, f64, u64)> {
    let dir =
        std::path::PathBuf::from(format!("/var/tmp/flowlog-bench-wal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = (|| {
        let mut flow_log =
            flag_flow_log::flow_log(&args.records, &args.output, Metadata::default())?;
        flow_log.recover(&dir, |_| false)?;
        let batches = flow_log.on_window(drained, interfaces);
        let gauge =
            |name| metrics::value(name, &[]).with_context(|| format!("the flow log set no {name}"));
        let total_s = gauge("flowlog_wal_last_window_seconds")?;
        let sync_s = gauge("flowlog_wal_last_fsync_seconds")?;
        let bytes = gauge("flowlog_wal_bytes")? as u64;
        if !batches.is_empty() || bytes == 0 {
            bail!("the window's object was finished at once (its slot had ended): run again");
        }
        Ok((total_s, sync_s, bytes))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
