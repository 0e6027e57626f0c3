//! `flowlog run`: wires discover → attach → collect → flow log → publish, and owns the window
//! clock and the shutdown sequence (flush the partial window, publish, detach, exit 0).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{info, warn};

use crate::{
    attach::{Capture, spawn_ebpf_logger},
    cli::RunArgs,
    clock::{next_boundary, unix_now, until},
    collect::{Collector, DrainedWindow, Window},
    discover::Selector,
    ebpf_object,
    flowlog::FlowLog,
    metrics,
    privileges,
    publish::{self, Destination, FileDestination},
};

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
    let cap = &args.capture;
    let mut flow_log = FlowLog::from_args(&args.records, &args.output)?;
    let selector = Selector::new(&cap.ifaces)?;
    let initial = selector.select(true)?;
    if initial.is_empty() {
        if cap.ifaces.is_empty() {
            bail!("no network interface other than loopback is up: bring one up or name one with --iface");
        }
        warn!(patterns = ?cap.ifaces, "no interface matches yet; attaching when one appears");
    }
    privileges::check()?;
    let object = ebpf_object::load(cap.ebpf_object.as_deref())?;
    let dest = Destination::File(FileDestination::new(&args.output.output_dir)?);

    raise_memlock();
    let mut capture = Capture::load(&object, cap.max_flows)?;
    let _logger = spawn_ebpf_logger(capture.ebpf_mut());
    for iface in &initial {
        capture.attach(iface)?;
    }
    let mut collector = Collector::new(capture.ebpf_mut())?;
    let metrics_file = args.operations.metrics_file.clone();
    let _metrics_server = match args.operations.metrics_addr {
        Some(addr) => Some(metrics::serve(addr).await?),
        None => None,
    };

    let (tx, rx) = mpsc::channel(64);
    let publisher = tokio::spawn(publish::publisher(dest, rx));
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let interval = cap.aggregation_interval;
    let mut window_start = unix_now() as u64;
    info!(
        interfaces = ?capture.attached().map(|(_, n)| n.to_string()).collect::<Vec<_>>(),
        interval, flow_log_id = %flow_log.id, output = %args.output.output_dir.display(),
        mode = ?capture.mode(), "capturing"
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
        let drain_started = std::time::Instant::now();
        let drained = tokio::task::block_in_place(|| collector.cut(window))?;
        metrics::gauge_set("flowlog_drain_seconds", "Time to flip, drain and clear the last window's maps.",
            &[], drain_started.elapsed().as_secs_f64());
        report_window(&drained, &watched, cap.max_flows);
        for obj in flow_log.on_window(&drained, &watched) {
            tx.send(obj).await.context("publisher stopped")?;
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
    }
    for obj in flow_log.close_all() {
        tx.send(obj).await.context("publisher stopped")?;
    }
    drop(tx);
    let undelivered = publisher.await.context("publisher task failed")?;
    drop(capture);
    metrics::flush_to(metrics_file.as_deref());
    if undelivered > 0 {
        bail!("{undelivered} records could not be delivered: see the errors above");
    }
    Ok(())
}

/// One log line and the metrics per window; overflow is loud because it is data AWS would call
/// SKIPDATA.
fn report_window(d: &DrainedWindow, watched: &BTreeMap<u32, String>, max_flows: u32) {
    let name = |ifindex: u32| watched.get(&ifindex).cloned().unwrap_or_else(|| format!("if{ifindex}"));
    let dir = |d: u8| if d == flowlog_common::DIR_EGRESS { "egress" } else { "ingress" };
    let mut per_iface: BTreeMap<(u32, u8), (u64, u64)> = BTreeMap::new();
    for (k, t) in &d.flows {
        let e = per_iface.entry((k.ifindex, k.direction)).or_default();
        e.0 += t.packets;
        e.1 += t.bytes;
    }
    for ((ifindex, direction), (packets, bytes)) in per_iface {
        let l = [("interface", name(ifindex)), ("direction", dir(direction).to_string())];
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metrics::counter_add("flowlog_packets_total", "Packets counted in flow records.", &l, packets);
        metrics::counter_add("flowlog_bytes_total", "IP bytes counted in flow records.", &l, bytes);
    }
    let (mut overflow_packets, mut overflow_bytes, mut non_ip, mut malformed) = (0, 0, 0, 0);
    for (k, c) in &d.ifaces {
        let l = [("interface", name(k.ifindex)), ("direction", dir(k.direction).to_string())];
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metrics::counter_add("flowlog_overflow_packets_total",
            "Packets that did not fit in the full flow map (reported as SKIPDATA).", &l, c.overflow_packets);
        metrics::counter_add("flowlog_overflow_bytes_total",
            "IP bytes of packets that did not fit in the full flow map.", &l, c.overflow_bytes);
        metrics::counter_add("flowlog_non_ip_packets_total", "Frames that are not IPv4 or IPv6.", &l, c.non_ip_packets);
        metrics::counter_add("flowlog_malformed_packets_total",
            "IP packets with truncated or invalid headers (no flow key).", &l, c.malformed_packets);
        overflow_packets += c.overflow_packets;
        overflow_bytes += c.overflow_bytes;
        non_ip += c.non_ip_packets;
        malformed += c.malformed_packets;
    }
    metrics::counter_add("flowlog_unattributed_packets_total",
        "Packets not attributable to an interface (interface counter map full).", &[], d.lost.overflow_packets);
    metrics::counter_add("flowlog_windows_total", "Aggregation windows closed.", &[], 1);
    metrics::counter_add("flowlog_flows_total", "Flows drained from the kernel.", &[], d.flows.len() as u64);
    metrics::gauge_set("flowlog_flow_map_fill_ratio",
        "Flows in the last window divided by the flow map capacity.", &[], d.flows.len() as f64 / max_flows.max(1) as f64);
    info!(start = d.window.start, end = d.window.end, flows = d.flows.len(),
          non_ip_packets = non_ip, malformed_packets = malformed, "window closed");
    if overflow_packets > 0 || d.lost.overflow_packets > 0 {
        warn!(overflow_packets, overflow_bytes, unattributed_packets = d.lost.overflow_packets,
              "flow map full: packets counted as SKIPDATA (raise --max-flows)");
    }
}
