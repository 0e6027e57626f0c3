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
    clock::{first_object_at, next_boundary, unix_now, until},
    collect::{Collector, Window},
    discover::{self, Selector},
    drops, ebpf_object,
    flowlog::FlowLog,
    metadata::Metadata,
    metrics, privileges,
    publish::{self, AwsSettings, Batch, Destination, Spool, WriterLock, writer_lock},
    window_metrics::{export_zero_counters, report_window},
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
    // After the spool's own lock, so agents sharing a spool are told about the spool.
    let _writer_lock = WriterLock::acquire(
        &args.operations.runtime_dir,
        &flow_log.id,
        &writer_lock::canonical_destination(&spec, settings.endpoint_url.as_deref()),
    )?;
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
    export_known_series(&capture, rejects.as_ref(), &spool);
    metrics::flush_to(metrics_file.as_deref());
    metrics::announce(args.operations.metrics_addr, metrics_file.as_deref());

    let (stop_publishing, stop_rx) = watch::channel(false);
    let mut publisher = tokio::spawn(publish::publisher(dest, spool.clone(), stop_rx));
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let interval = cap.aggregation_interval;
    let mut window_start = unix_now() as u64;
    let mut drain_failure = None;
    announce_first_file(&spec, interval, args.output.file_rollover_seconds);
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
            "flowlog_last_drain_seconds",
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
        export_known_series(&capture, rejects.as_ref(), &spool);
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

/// With a file destination whose objects collect several windows, says when the first file can
/// appear (so an empty directory after the first window is not a surprise) and how to change it.
fn announce_first_file(spec: &publish::DestinationSpec, interval: u64, rollover: u64) {
    let publish::DestinationSpec::File(dir) = spec else {
        return;
    };
    if interval >= rollover {
        return;
    }
    let at = first_object_at(unix_now(), interval, rollover);
    let at = chrono::DateTime::from_timestamp(at as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| at.to_string());
    info!(
        first_file_at = %at, file_rollover_seconds = rollover, dir = %dir.display(),
        "a file collects {rollover} s of records (as AWS does): the first appears at {at} if there is traffic \
         before then; set --file-rollover-seconds lower to see files sooner"
    );
}

/// Every counter with a known label set at zero (per watched interface and direction, per
/// REJECT reason) and the spool gauges, so they exist before the first event. Run at start and
/// after every attach pass (interfaces attached later); counting ones are left as they are.
fn export_known_series(capture: &Capture, rejects: Option<&drops::DropCapture>, spool: &Spool) {
    let names: Vec<String> = capture.attached().map(|(_, n)| n.to_string()).collect();
    export_zero_counters(names.iter().map(String::as_str));
    drops::export_zero_counters(rejects, names.iter().map(String::as_str));
    publish::export_spool_metrics(&spool.stats());
}
