//! The spool's limits end to end, on a small tmpfs of its own, with real traffic: a destination
//! that is down until the filesystem is full, and a filesystem that goes read-only. The agent
//! publishes to CloudWatch Logs (moto) through the fault proxy, whose batches are spooled per
//! window as text: a few thousand flows per window fill 2 MiB in a few windows. Root only;
//! namespaces prefixed `flsl`, addresses 10.213.x.0/24 with x from 210 on.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, UdpSocket},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{unix_now, wait_for_window_start},
    delivery::{metric, read_metrics, wait_for_delivery_status},
    fault_proxy::{Fault, Matcher, Outcome, Times},
    netns::{Setup, Side, in_netns, run},
    proxied::{DEADLINE, FLOW_LOG_ID, Kind, ProxiedAgent},
    records::Tuple,
    traffic::in_ns,
};

/// Size of the spool's filesystem.
const SPOOL_FS: &str = "2m";
/// Flows (one datagram each) per window: about 450 KB of spooled text, so 2 MiB holds four
/// windows' batches and fewer than 10,000 events keep each window one PutLogEvents batch.
const FLOWS_PER_WINDOW: u16 = 4_000;
const UDP: u8 = 17;

/// A tmpfs mounted on a directory of its own; unmounted (lazily: the agent's mount namespace
/// may still hold it) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("flsl-spool-")
            .tempdir()
            .expect("temp dir");
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path()));
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `mount -o remount,ro|rw` inside the mount namespace of process `pid` (`ip netns exec`
    /// gives the agent one of its own); the superblock's flag applies wherever it is mounted.
    fn remount(&self, pid: u32, mode: &str) {
        run(Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "mount", "-o"])
            .arg(format!("remount,{mode}"))
            .arg(self.path()));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).output();
    }
}

/// An address on `a`'s link that nothing answers (a permanent neighbour entry): datagrams to
/// it are flows of exactly one packet each way they are sent.
fn sink(a: &Side, subnet: u8) -> Ipv4Addr {
    let sink = Ipv4Addr::new(10, 213, subnet, 99);
    run(in_netns(&a.netns, "ip").args([
        "neigh",
        "add",
        &sink.to_string(),
        "lladdr",
        "02:00:00:00:02:99",
        "dev",
        &a.iface,
        "nud",
        "permanent",
    ]));
    sink
}

/// One datagram of 7 bytes (35 IP bytes) from one socket in `a` to each port of `ports` at
/// `sink`: one flow each. Returns the tuples, in the order sent.
fn send_flows(a: &Side, sink: Ipv4Addr, ports: std::ops::RangeInclusive<u16>) -> Vec<Tuple> {
    let src = a.v4;
    let (src_port, ports) = in_ns(&a.netns, move || {
        let sock = UdpSocket::bind((src, 0)).expect("bind");
        for port in ports.clone() {
            sock.send_to(b"flowlog", (sink, port))
                .unwrap_or_else(|e| panic!("send to port {port}: {e}"));
        }
        (sock.local_addr().expect("addr").port(), ports)
    });
    ports
        .map(|dst_port| Tuple {
            src: src.into(),
            dst: sink.into(),
            src_port,
            dst_port,
            protocol: UDP,
        })
        .collect()
}

/// The flows of window `k` (1-based): ports `(k-1)·F+1 ..= k·F`.
fn window_ports(k: u16) -> std::ops::RangeInclusive<u16> {
    (k - 1) * FLOWS_PER_WINDOW + 1..=k * FLOWS_PER_WINDOW
}

/// How many records of each tuple in `sent` CloudWatch holds; panics on other OK records.
fn delivered_counts(rig: &ProxiedAgent, sent: &[Tuple]) -> BTreeMap<Tuple, usize> {
    let records = rig.delivered();
    let known: BTreeSet<&Tuple> = sent.iter().collect();
    let mut counts = BTreeMap::new();
    for r in records.iter().filter(|r| r.tuple.is_some()) {
        let t = r.tuple.expect("OK record");
        assert!(
            known.contains(&t),
            "a record of traffic not sent: {}",
            r.line
        );
        assert_eq!(
            (r.packets, r.bytes),
            (Some(1), Some(35)),
            "one datagram per flow: {}",
            r.line
        );
        *counts.entry(t).or_default() += 1;
    }
    counts
}

/// Polls the metrics file until `done` holds; returns it then.
fn wait_for_metrics(
    rig: &ProxiedAgent,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = read_metrics(&rig.metrics_file());
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {DEADLINE:?}; metrics:\n{m:#?}\nagent log:\n{}",
            rig.agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many log lines contain `needle` (each shown on stderr).
fn lines_with(log: &str, needle: &str) -> usize {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    for l in &lines {
        eprintln!("{l}");
    }
    lines.len()
}

/// The destination is down (503 for every PutLogEvents) while windows of traffic fill the 2 MiB
/// spool filesystem: the oldest batches are dropped to make room, counted in
/// `flowlog_spool_dropped_{records,batches}_total`, and logged once for the episode. The agent
/// keeps capturing, and when the destination returns it delivers everything that was not
/// dropped: the records missing from CloudWatch are exactly the dropped ones, and they are the
/// oldest (a batch being published at that moment is kept).
#[test]
fn a_full_spool_filesystem_drops_the_oldest_batches_counted_and_delivers_the_rest() {
    let spool = Tmpfs::mount(SPOOL_FS);
    let setup = Setup::new(210).ipv4_only().prefix("flsl");
    let mut rig = ProxiedAgent::start(setup, Kind::Logs, Some(spool.path()), &[]);
    let a = rig.ns.a.clone();
    let sink = sink(&a, 210);
    let call = Matcher::logs("PutLogEvents");
    let acknowledged_window = |rig: &ProxiedAgent, start: u64| {
        rig.acknowledged().iter().any(|e| {
            serde_json::from_slice::<serde_json::Value>(&e.body)
                .is_ok_and(|b| b["logEvents"][0]["timestamp"].as_i64() == Some(start as i64 * 1000))
        })
    };

    // Window 1's traffic; then the window before it is acknowledged (the spool is empty) and
    // the destination goes down: window 1's batch is the first to stay in the spool.
    let w1 = wait_for_window_start(1, Duration::from_millis(100));
    let mut sent = send_flows(&a, sink, window_ports(1));
    let deadline = Instant::now() + DEADLINE;
    while !acknowledged_window(&rig, w1 - 1) {
        assert!(Instant::now() < deadline, "window {} not delivered", w1 - 1);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        unix_now() < (w1 + 1) as f64,
        "window 1's batch already left"
    );
    rig.proxy.inject(
        call.clone(),
        Fault::logs_error(
            500,
            "ServiceUnavailableException",
            "The service cannot complete the request.",
        ),
        Times::UntilRecovered,
    );
    // Windows 2..=7, a batch of ~450 KB each.
    for k in 2..=7 {
        let w = wait_for_window_start(1, Duration::from_millis(100));
        sent.extend(send_flows(&a, sink, window_ports(k)));
        assert!(
            unix_now() < (w + 1) as f64,
            "window {k}'s traffic overran it"
        );
    }
    let during = wait_for_metrics(&rig, "dropped batches", |m| {
        metric(
            m,
            "flowlog_spool_dropped_batches_total",
            &[("flow_log_id", FLOW_LOG_ID)],
        ) >= 2.0
    });
    eprintln!(
        "while down: spool {} bytes in {} batches, {} records dropped",
        metric(
            &during,
            "flowlog_spool_bytes",
            &[("flow_log_id", FLOW_LOG_ID)]
        ),
        metric(
            &during,
            "flowlog_spool_batches",
            &[("flow_log_id", FLOW_LOG_ID)]
        ),
        metric(
            &during,
            "flowlog_spool_dropped_records_total",
            &[("flow_log_id", FLOW_LOG_ID)]
        ),
    );
    assert!(
        metric(
            &during,
            "flowlog_spool_bytes",
            &[("flow_log_id", FLOW_LOG_ID)]
        ) <= 2.0 * 1048576.0
    );

    // The destination returns; one more window of traffic after it.
    rig.proxy.recover();
    wait_for_delivery_status(&rig.socket(), FLOW_LOG_ID, "SUCCESS", DEADLINE);
    let w = wait_for_window_start(1, Duration::from_millis(100));
    sent.extend(send_flows(&a, sink, window_ports(8)));
    assert!(unix_now() < (w + 1) as f64, "window 8's traffic overran it");
    rig.agent
        .wait_for_log("spool has room again", Duration::from_secs(30));
    let after_recovery: BTreeSet<Tuple> = sent[sent.len() - FLOWS_PER_WINDOW as usize..]
        .iter()
        .copied()
        .collect();
    let deadline = Instant::now() + DEADLINE;
    while !delivered_counts(&rig, &sent)
        .keys()
        .copied()
        .collect::<BTreeSet<_>>()
        .is_superset(&after_recovery)
    {
        assert!(Instant::now() < deadline, "window 8 not delivered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = rig.agent.stop();
    let log = rig.agent.log();
    assert!(status.success(), "agent exit {status}; log:\n{log}");

    let counts = delivered_counts(&rig, &sent);
    lines_with(&log, "window closed");
    assert!(
        counts.values().all(|n| *n == 1),
        "no record twice (no acknowledgement was lost)"
    );
    let missing: Vec<&Tuple> = sent.iter().filter(|t| !counts.contains_key(t)).collect();
    // Missing records per window, for the messages.
    let per_window: Vec<usize> = sent
        .chunks(FLOWS_PER_WINDOW as usize)
        .map(|w| w.iter().filter(|t| !counts.contains_key(t)).count())
        .collect();
    eprintln!("records missing per window: {per_window:?}");
    assert!(!missing.is_empty(), "the spool filesystem never filled");
    // The oldest batches went, but never the one being published at that moment: at most
    // one window older than a dropped one may have been kept for that reason.
    let last_dropped = per_window.iter().rposition(|m| *m > 0).unwrap_or(0);
    let kept_older = per_window[..last_dropped]
        .iter()
        .filter(|m| **m == 0)
        .count();
    assert!(
        kept_older <= 1,
        "the dropped records are not the oldest: missing per window {per_window:?}"
    );
    let end = read_metrics(&rig.metrics_file());
    let fl = [("flow_log_id", FLOW_LOG_ID)];
    let dropped = metric(&end, "flowlog_spool_dropped_records_total", &fl);
    assert_eq!(
        dropped,
        missing.len() as f64,
        "dropped records = records missing at the destination"
    );
    // Whole windows went, one batch each.
    assert_eq!(missing.len() % FLOWS_PER_WINDOW as usize, 0);
    assert_eq!(
        metric(&end, "flowlog_spool_dropped_batches_total", &fl),
        (missing.len() / FLOWS_PER_WINDOW as usize) as f64
    );
    assert_eq!(
        metric(&end, "flowlog_spool_write_failed_records_total", &fl),
        0.0
    );
    let destination = Kind::Logs.destination();
    let published = metric(
        &end,
        "flowlog_published_records_total",
        &[("flow_log_id", FLOW_LOG_ID), ("destination", &destination)],
    );
    assert_eq!(
        metric(&end, "flowlog_flow_log_records_total", &fl),
        published + dropped,
        "every record spooled was published or counted as dropped"
    );
    assert_eq!(published as usize, rig.delivered().len());
    // Once per episode.
    assert_eq!(lines_with(&log, "spool full"), 1, "log:\n{log}");
    assert_eq!(lines_with(&log, "spool has room again"), 1, "log:\n{log}");
    assert!(rig.proxy.faulted(&call) > 0);
    assert!(
        rig.proxy
            .matching(&call)
            .iter()
            .all(|e| !matches!(e.outcome, Outcome::Faulted(Fault::DropResponse, _)))
    );
}

/// The spool's filesystem is remounted read-only under a running agent: the batches of the
/// windows that close meanwhile cannot be spooled; that is one clear error line, the agent
/// keeps capturing, and once the filesystem is writable again the next windows are delivered.
/// At shutdown it exits 1 and names the records lost: exactly those of the read-only windows.
#[test]
fn a_read_only_spool_is_one_error_the_agent_runs_on_and_exits_non_zero() {
    let spool = Tmpfs::mount(SPOOL_FS);
    let setup = Setup::new(211).ipv4_only().prefix("flsl");
    let mut rig = ProxiedAgent::start(setup, Kind::Logs, Some(spool.path()), &[]);
    let a = rig.ns.a.clone();
    let sink = sink(&a, 211);
    let call = Matcher::logs("PutLogEvents");
    rig.proxy
        .wait_for("an acknowledged first batch", DEADLINE, |seen| {
            seen.iter()
                .any(|e| e.matched_by(&call) && e.outcome == Outcome::Forwarded(200))
        });

    spool.remount(rig.agent.pid(), "ro");
    let w = wait_for_window_start(1, Duration::from_millis(100));
    let lost = send_flows(&a, sink, window_ports(1));
    assert!(unix_now() < (w + 1) as f64, "traffic overran its window");
    let fl = [("flow_log_id", FLOW_LOG_ID)];
    // That window and the next (idle) one are lost.
    wait_for_metrics(&rig, "lost records", |m| {
        metric(m, "flowlog_spool_write_failed_records_total", &fl) > FLOWS_PER_WINDOW as f64
    });
    spool.remount(rig.agent.pid(), "rw");
    let w = wait_for_window_start(1, Duration::from_millis(100));
    let kept = send_flows(&a, sink, window_ports(2));
    assert!(unix_now() < (w + 1) as f64, "traffic overran its window");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let counts = delivered_counts(&rig, &[lost.clone(), kept.clone()].concat());
        if kept.iter().all(|t| counts.contains_key(t)) {
            assert!(
                lost.iter().all(|t| !counts.contains_key(t)),
                "records of a batch that was never spooled were delivered"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the traffic after the remount was not delivered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = rig.agent.stop();
    let log = rig.agent.log();
    assert_eq!(status.code(), Some(1), "agent exit {status}; log:\n{log}");

    let end = read_metrics(&rig.metrics_file());
    let unspooled = metric(&end, "flowlog_spool_write_failed_records_total", &fl);
    // The read-only windows: the traffic window's records and a NODATA record per idle window.
    let read_only_windows = unspooled as usize - lost.len();
    assert!(
        (1..=5).contains(&read_only_windows),
        "{unspooled} records lost for {} sent while read-only",
        lost.len()
    );
    let last = log.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!(
            "flowlog: error: {unspooled} records were lost because their batches could not be written to the spool {}: \
             check that it is writable and has space (see the errors above)",
            spool.path().display()
        ),
        "log:\n{log}"
    );
    assert_eq!(
        lines_with(&log, "cannot write to the spool"),
        1,
        "log:\n{log}"
    );
    assert_eq!(
        lines_with(&log, "the spool is writable again"),
        1,
        "log:\n{log}"
    );
    let published = metric(
        &end,
        "flowlog_published_records_total",
        &[
            ("flow_log_id", FLOW_LOG_ID),
            ("destination", &Kind::Logs.destination()),
        ],
    );
    assert_eq!(
        metric(&end, "flowlog_flow_log_records_total", &fl),
        published + unspooled,
        "every record was published or counted as lost"
    );
    assert_eq!(published as usize, rig.delivered().len());
}
