//! Drain: the agent's end-of-window work on windows of 10k, 100k and 1M flows: flip the slot,
//! read the idle flow map ([`Collector::cut`]) and clear it ([`Collector::recorded`]), then turn
//! the flows into records, format them and gzip them ([`FlowLog::on_window`] + `close_all`, as `flowlog run`
//! does with its default file destination).
//!
//! Each size runs in a fresh child process (this binary, hidden `drain-child` subcommand) so
//! its peak RSS (VmHWM) is its own. The flows are written into FLOWS_A from userspace first,
//! one `BPF_MAP_UPDATE_ELEM` each (not timed).

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
    capture::collect::{Collector, Window},
    cli::flag_flow_log,
    cli::{Cli, Command as AgentCommand},
    inventory::discover::Interface,
    inventory::metadata::Metadata,
    metrics,
    publish::Batch,
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
        vec![10_000, 100_000, 1_000_000]
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
}

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
            "  {n:>8} flows: cut {:.3} s, records+format+gzip {:.3} s, total {:.3} s, peak RSS {} MiB; \
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

/// CLOCK_MONOTONIC ns: the base of the datapath's packet stamps.
fn mono_ns() -> u64 {
    // SAFETY: an all-zero timespec is valid; CLOCK_MONOTONIC exists on every supported kernel.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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

/// Uncompresses the objects (not timed), then times gzipping their text again the way the
/// batcher does: how much of the format step is compression.
fn gzip_alone(batches: &[Batch]) -> anyhow::Result<(u64, f64)> {
    use std::io::{Read as _, Write as _};
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

/// The hidden `drain-child` subcommand: one size, result as one JSON line on stdout.
pub fn child(n: u32) -> anyhow::Result<()> {
    let object = crate::read_env_file(OBJECT_ENV)?;
    let mut capture = Capture::load(&object, n + 1_024).context("loading the flowlog object")?;
    let cpus = nr_cpus()
        .map_err(|(_, e)| e)
        .context("reading the possible CPUs")?;
    let now = mono_ns();
    {
        let map = capture
            .ebpf_mut()
            .map_mut(FLOW_MAPS[0])
            .context("FLOWS_A missing")?;
        let mut flows: PerCpuHashMap<_, FlowKey, FlowStats> = PerCpuHashMap::try_from(map)?;
        for i in 0..n {
            let mut v = vec![FlowStats::default(); cpus];
            let packets = 1 + u64::from(i % 20);
            v[(i as usize) % cpus] = FlowStats {
                packets,
                bytes: packets * 120,
                first_seen_ns: now - 30_000_000_000,
                last_seen_ns: now - 1_000_000_000,
                tcp_flags: if i % 2 == 0 { 2 } else { 0 },
                _pad: [0; 7],
            };
            flows
                .insert(key(i), PerCpuValues::try_from(v)?, 0)
                .with_context(|| format!("filling FLOWS_A (flow {i})"))?;
        }
    }
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
    let mut flow_log = flag_flow_log::flow_log(&args.records, &args.output, Metadata::default())?;
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
    let t0 = Instant::now();
    let drained = collector.cut(window)?;
    // The slot is cleared once its records are on disk; timed with the cut, as the agent
    // clears it on its cut path.
    collector.recorded()?;
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
    let gzip_bytes = batches
        .iter()
        .map(|b| match b {
            Batch::Object(o) => o.body.len(),
            _ => 0,
        })
        .sum();
    let (text_bytes, gzip_s) = gzip_alone(&batches)?;
    drop(batches);
    let (wal_s, wal_sync_s, wal_bytes) = with_wal(&args, &drained, &interfaces)?;
    let flow_logs_s = [1, 8]
        .into_iter()
        .map(|k| Ok((k, shared_by(k, &args, &drained, &interfaces)?)))
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
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The window taken by `k` flow logs of the same capture, as `flowlog run` hands a cut to each:
/// its interfaces' part, then records, format and gzip of every object. Seconds for all `k`.
fn shared_by(
    k: u32,
    args: &flowlog_agent::cli::RunArgs,
    drained: &flowlog_agent::capture::collect::DrainedWindow,
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
    drained: &flowlog_agent::capture::collect::DrainedWindow,
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
