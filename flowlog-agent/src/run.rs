//! `flowlog run`: wires discover → attach → collect → records → batch → publish, and owns the
//! window clock and the shutdown sequence (flush the partial window, publish, detach, exit 0).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{info, warn};

use crate::{
    attach::Capture,
    batch::{Batcher, ObjectLayout},
    cli::RunArgs,
    clock::{next_boundary, unix_now, until},
    collect::{Collector, Window},
    discover::Selector,
    ebpf_object,
    format::LogFormat,
    metadata::Metadata,
    privileges,
    publish::{self, Destination, FileDestination},
    records,
};

/// A value that lands in a record or a key must be one token.
fn check_token(what: &str, v: &str) -> anyhow::Result<()> {
    if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '/') {
        bail!("invalid {what} {v:?}: it must be one word without spaces or '/'");
    }
    Ok(())
}

/// Stable default flow log id: `fl-` and 17 hex digits derived from host name and output.
fn default_flow_log_id(args: &RunArgs) -> String {
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let mut h = crc32fast::Hasher::new();
    h.update(host.as_bytes());
    let hi = h.clone().finalize();
    h.update(args.output_dir.to_string_lossy().as_bytes());
    let lo = h.finalize();
    format!("fl-{:017x}", ((hi as u128) << 32 | lo as u128) & 0x1_ffff_ffff_ffff_ffff)
}

/// Lets the kernel charge BPF maps to a locked-memory budget large enough for them (kernels
/// before 5.11 account map memory against RLIMIT_MEMLOCK).
fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK (only matters on kernels before 5.11)");
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    check_token("--account-id", &args.account_id)?;
    check_token("--region", &args.region)?;
    let flow_log_id = args.flow_log_id.clone().unwrap_or_else(|| default_flow_log_id(&args));
    check_token("--flow-log-id", &flow_log_id)?;
    let interval = args.aggregation_interval;

    let selector = Selector::new(&args.ifaces)?;
    let initial = selector.select(true)?;
    if initial.is_empty() {
        if args.ifaces.is_empty() {
            bail!("no network interface other than loopback is up: bring one up or name one with --iface");
        }
        warn!(patterns = ?args.ifaces, "no interface matches yet; attaching when one appears");
    }
    privileges::check()?;
    let object = ebpf_object::load(args.ebpf_object.as_deref())?;
    let dest = Destination::File(FileDestination::new(&args.output_dir)?);

    raise_memlock();
    let mut capture = Capture::load(&object, args.max_flows)?;
    let _logger = crate::attach::spawn_ebpf_logger(capture.ebpf_mut());
    for iface in &initial {
        capture.attach(iface)?;
    }
    let mut collector = Collector::new(capture.ebpf_mut())?;

    let meta = Metadata {
        account_id: args.account_id.clone(),
        region: args.region.clone(),
        ..Metadata::default()
    };
    let layout = ObjectLayout {
        account_id: meta.account_id.clone(),
        region: meta.region.clone(),
        flow_log_id: flow_log_id.clone(),
        hive_compatible_partitions: false,
        per_hour_partition: false,
    };
    let mut batcher = Batcher::new(layout, LogFormat::default(), meta, args.file_rollover_seconds);
    let (tx, rx) = mpsc::channel(64);
    let publisher = tokio::spawn(publish::publisher(dest, rx));

    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut window_start = unix_now() as u64;
    info!(
        interfaces = ?capture.attached().map(|(_, n)| n.to_string()).collect::<Vec<_>>(),
        interval, flow_log_id = %flow_log_id, output = %args.output_dir.display(), mode = ?capture.mode(),
        "capturing"
    );

    loop {
        let boundary = next_boundary(unix_now(), interval);
        let stop = tokio::select! {
            _ = tokio::time::sleep(until(boundary)) => false,
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
        };
        let end = if stop { (unix_now().ceil() as u64).max(window_start) } else { boundary };
        let watched: BTreeMap<u32, String> =
            capture.attached().map(|(i, n)| (i, n.to_string())).collect();
        let window = Window { start: window_start, end };
        let drained = tokio::task::block_in_place(|| collector.cut(window))?;
        let records = records::build(&drained, &watched);
        report_window(&drained, records.len());
        let mut objects = batcher.add(&records, window_start);
        objects.extend(batcher.close_until(end));
        for obj in objects {
            tx.send(obj).await.context("publisher stopped")?;
        }
        window_start = end;
        if stop {
            info!("shutting down: flushed the partial window");
            break;
        }
        match selector.select(false) {
            Ok(present) => {
                capture.forget_missing(&present);
                for iface in &present {
                    if let Err(e) = capture.attach(iface) {
                        warn!(iface = %iface.name, error = %format!("{e:#}"), "cannot attach");
                    }
                }
            }
            Err(e) => warn!(error = %format!("{e:#}"), "cannot list interfaces"),
        }
    }
    for obj in batcher.close_all() {
        tx.send(obj).await.context("publisher stopped")?;
    }
    drop(tx);
    let undelivered = publisher.await.context("publisher task failed")?;
    drop(capture);
    if undelivered > 0 {
        bail!("{undelivered} records could not be written to {}: see the errors above", args.output_dir.display());
    }
    Ok(())
}

/// One log line per window; overflow is loud because it is data AWS would call SKIPDATA.
fn report_window(d: &crate::collect::DrainedWindow, records: usize) {
    let (mut overflow_packets, mut overflow_bytes, mut non_ip, mut malformed) = (0, 0, 0, 0);
    for c in d.ifaces.values() {
        overflow_packets += c.overflow_packets;
        overflow_bytes += c.overflow_bytes;
        non_ip += c.non_ip_packets;
        malformed += c.malformed_packets;
    }
    info!(start = d.window.start, end = d.window.end, flows = d.flows.len(), records,
          non_ip_packets = non_ip, malformed_packets = malformed, "window closed");
    if overflow_packets > 0 || d.lost.overflow_packets > 0 {
        warn!(overflow_packets, overflow_bytes, unattributed_packets = d.lost.overflow_packets,
              "flow map full: packets counted as SKIPDATA (raise --max-flows)");
    }
}
