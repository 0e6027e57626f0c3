//! `flowlog run`: wires discover → attach → collect → flow log → publish, and owns the window
//! clock and the shutdown sequence (flush the partial window, publish, detach, exit 0).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};

use crate::{
    attach::{Capture, spawn_ebpf_logger},
    cli::RunArgs,
    clock::{next_boundary, unix_now, until},
    collect::{Collector, DrainedWindow, Window},
    discover::{self, Selector},
    drops, ebpf_object,
    flowlog::FlowLog,
    metadata::Metadata,
    metrics, privileges,
    publish::{self, AwsSettings, Batch, Destination, Spool},
    records::{Direction, interface_label},
};

/// How long a shutdown keeps publishing what is spooled before leaving the rest for the next
/// start.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(20);

/// Lets the kernel charge BPF maps to a locked-memory budget large enough for them (kernels
/// before 5.11 account map memory against RLIMIT_MEMLOCK).
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK (only matters on kernels before 5.11)");
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let cap = &args.capture;
    let selector = Selector::new(&cap.ifaces)?;
    let initial = selector.select(true)?;
    if initial.is_empty() {
        if cap.ifaces.is_empty() {
            bail!(
                "no network interface other than loopback is up: bring one up or name one with --iface"
            );
        }
        warn!(patterns = ?cap.ifaces, "no interface matches yet; attaching when one appears");
    }
    privileges::check()?;
    let object = ebpf_object::load(cap.ebpf_object.as_deref())?;
    // Local checks above fail before anything is logged or looked up over the network, so bad
    // input gets exactly one line.
    let reject_support = drops::prepare(args.records.reject_reasons.as_deref(), &cap.kernel_btf)?;
    let meta = Metadata::discover(&args.records).await?;
    let mut flow_log = FlowLog::from_args(&args.records, &args.output, meta)?;
    args.output.warn_deprecated();
    let spec = args.output.destination();
    let settings = AwsSettings {
        endpoint_url: args.output.endpoint_url.clone(),
        fallback_region: Some(flow_log.metadata().region.clone()).filter(|r| r != "-"),
    };
    let dest = Destination::connect(&spec, &settings).await?;
    let destination = dest.describe();
    let spool = Arc::new(Spool::open(
        &args.output.spool_dir(&flow_log.id, &spec),
        args.output.spool_max_bytes,
    )?);
    // Before any new window: the closed windows an earlier run left in write-ahead logs.
    let mut unspooled_records = 0;
    for batch in tokio::task::block_in_place(|| {
        flow_log.recover(spool.dir(), |key| spool.holds_object(key))
    })? {
        unspooled_records += spool_batch(&spool, &mut flow_log, &batch);
    }

    raise_memlock();
    let mut capture = Capture::load_with(&object, cap.max_flows, |l| {
        drops::configure(&reject_support, l)
    })?;
    let _logger = spawn_ebpf_logger(capture.ebpf_mut());
    for iface in &initial {
        capture.attach(iface)?;
    }
    let mut collector = Collector::new(capture.ebpf_mut())?;
    let mut rejects = drops::start(reject_support, capture.ebpf_mut(), &mut collector);
    drops::sync(&mut rejects, capture.attached().map(|(i, _)| i));
    let metrics_file = args.operations.metrics_file.clone();
    let _metrics_server = match args.operations.metrics_addr {
        Some(addr) => Some(metrics::serve(addr).await?),
        None => None,
    };

    let (stop_publishing, stop_rx) = watch::channel(false);
    let mut publisher = tokio::spawn(publish::publisher(dest, spool.clone(), stop_rx));
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let interval = cap.aggregation_interval;
    let mut window_start = unix_now() as u64;
    let mut drain_failure = None;
    info!(
        interfaces = ?capture.attached().map(|(_, n)| n.to_string()).collect::<Vec<_>>(),
        interval, flow_log_id = %flow_log.id, destination = %destination, spool = %spool.dir().display(),
        mode = ?capture.mode(), "capturing"
    );

    loop {
        let boundary = next_boundary(unix_now(), interval);
        let stop = tokio::select! {
            _ = tokio::time::sleep(until(boundary)) => false,
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
        };
        let end = if stop {
            (unix_now().ceil() as u64).max(window_start)
        } else {
            boundary
        };
        let watched: BTreeMap<u32, String> = capture
            .attached()
            .map(|(i, n)| (i, n.to_string()))
            .collect();
        let window = Window {
            start: window_start,
            end,
        };
        let drain_started = std::time::Instant::now();
        let drained = match tokio::task::block_in_place(|| collector.cut(window)) {
            Ok(d) => d,
            // The kernel maps cannot be read: stop, but through the normal shutdown so every
            // batch already open is still spooled and delivered; the run then fails.
            Err(e) => {
                error!(error = %format!("{e:#}"), "cannot drain the window's maps; shutting down");
                drain_failure = Some(e);
                break;
            }
        };
        metrics::gauge_set(
            "flowlog_drain_seconds",
            "Time to flip, drain and clear the last window's maps.",
            &[],
            drain_started.elapsed().as_secs_f64(),
        );
        report_window(&drained, &watched, cap.max_flows);
        drops::report_window(rejects.as_mut(), &drained, &watched);
        for batch in flow_log.on_window(&drained, &discover::describe(&watched)) {
            unspooled_records += spool_batch(&spool, &mut flow_log, &batch);
        }
        metrics::flush_to(metrics_file.as_deref());
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
        drops::sync(&mut rejects, capture.attached().map(|(i, _)| i));
    }
    for batch in flow_log.close_all() {
        unspooled_records += spool_batch(&spool, &mut flow_log, &batch);
    }
    drop(capture);
    // Deliver what is spooled while the destination accepts it, for a bounded time. What is
    // left is safe in the spool and goes out first at the next start, so this is not a failed
    // run: exit 0 with a warning.
    let _ = stop_publishing.send(true);
    if tokio::time::timeout(SHUTDOWN_DRAIN, &mut publisher)
        .await
        .is_err()
    {
        publisher.abort();
    }
    let left = spool.stats();
    publish::export_spool_metrics(&left);
    metrics::flush_to(metrics_file.as_deref());
    if left.batches > 0 {
        warn!(batches = left.batches, records = left.records, spool = %spool.dir().display(), destination = %destination,
              "not delivered before exit: the batches stay in the spool and are delivered at the next start");
    } else if args.output.spool_dir.is_none() {
        spool.remove_if_empty();
    }
    if let Some(e) = drain_failure {
        return Err(e.context("the window's flows could not be read from the kernel"));
    }
    if unspooled_records > 0 {
        bail!(
            "{unspooled_records} records were lost because their batches could not be written to the spool {}: \
               check that it is writable and has space (see the errors above)",
            spool.dir().display()
        );
    }
    Ok(())
}

/// Writes a finished batch to the spool, from where the publisher delivers it, deleting the
/// write-ahead log it replaces. A batch that cannot be spooled (disk full, I/O error) is lost:
/// logged, counted, and returned so the run ends with an error.
fn spool_batch(spool: &Spool, flow_log: &mut FlowLog, batch: &Batch) -> usize {
    let mut lost = 0;
    let wal = flow_log.take_wal(batch);
    if let Err(e) = tokio::task::block_in_place(|| spool.put_replacing(batch, wal.as_deref())) {
        lost = batch.records();
        error!(batch = %batch.identity(), records = batch.records(), error = %format!("{e:#}"),
               "cannot spool a finished batch: its records are lost");
        metrics::counter_add(
            "flowlog_spool_write_failed_records_total",
            "Records lost because their batch could not be written to the spool.",
            &[],
            batch.records() as u64,
        );
    }
    publish::export_spool_metrics(&spool.stats());
    lost
}

/// One log line and the metrics per window; overflow is loud because it is data AWS would call
/// SKIPDATA.
fn report_window(d: &DrainedWindow, watched: &BTreeMap<u32, String>, max_flows: u32) {
    let name = |ifindex: u32| interface_label(watched.get(&ifindex).map(String::as_str), ifindex);
    let dir = |d: u8| Direction::of_key(d).as_str();
    let mut per_iface: BTreeMap<(u32, u8), (u64, u64)> = BTreeMap::new();
    for (k, t) in &d.flows {
        let e = per_iface.entry((k.ifindex, k.direction)).or_default();
        e.0 += t.packets;
        e.1 += t.bytes;
    }
    for ((ifindex, direction), (packets, bytes)) in per_iface {
        let iface = name(ifindex);
        let l = [("interface", iface.as_str()), ("direction", dir(direction))];
        metrics::counter_add(
            "flowlog_packets_total",
            "Packets counted in flow records.",
            &l,
            packets,
        );
        metrics::counter_add(
            "flowlog_bytes_total",
            "IP bytes counted in flow records.",
            &l,
            bytes,
        );
    }
    let (mut overflow_packets, mut overflow_bytes, mut non_ip, mut malformed) = (0, 0, 0, 0);
    for (k, c) in &d.ifaces {
        let iface = name(k.ifindex);
        let l = [
            ("interface", iface.as_str()),
            ("direction", dir(k.direction)),
        ];
        metrics::counter_add(
            "flowlog_overflow_packets_total",
            "Packets that did not fit in the full flow map (reported as SKIPDATA).",
            &l,
            c.overflow_packets,
        );
        metrics::counter_add(
            "flowlog_overflow_bytes_total",
            "IP bytes of packets that did not fit in the full flow map.",
            &l,
            c.overflow_bytes,
        );
        metrics::counter_add(
            "flowlog_non_ip_packets_total",
            "Frames that are not IPv4 or IPv6.",
            &l,
            c.non_ip_packets,
        );
        metrics::counter_add(
            "flowlog_malformed_packets_total",
            "IP packets with truncated or invalid headers (no flow key).",
            &l,
            c.malformed_packets,
        );
        overflow_packets += c.overflow_packets;
        overflow_bytes += c.overflow_bytes;
        non_ip += c.non_ip_packets;
        malformed += c.malformed_packets;
    }
    metrics::counter_add(
        "flowlog_unattributed_packets_total",
        "Packets not attributable to an interface (interface counter map full).",
        &[],
        d.lost.overflow_packets,
    );
    metrics::counter_add(
        "flowlog_windows_total",
        "Aggregation windows closed.",
        &[],
        1,
    );
    metrics::counter_add(
        "flowlog_flows_total",
        "Flows drained from the kernel.",
        &[],
        d.flows.len() as u64,
    );
    metrics::gauge_set(
        "flowlog_flow_map_fill_ratio",
        "Flows in the last window divided by the flow map capacity.",
        &[],
        d.flows.len() as f64 / max_flows.max(1) as f64,
    );
    info!(
        start = d.window.start,
        end = d.window.end,
        flows = d.flows.len(),
        non_ip_packets = non_ip,
        malformed_packets = malformed,
        "window closed"
    );
    if overflow_packets > 0 || d.lost.overflow_packets > 0 {
        warn!(
            overflow_packets,
            overflow_bytes,
            unattributed_packets = d.lost.overflow_packets,
            "flow map full: packets counted as SKIPDATA (raise --max-flows)"
        );
    }
}
