//! The CloudWatch Logs destination against a real endpoint (moto_server over HTTP, spoken to by
//! the real SDK clients), with real traffic between two namespaces. Root only. moto runs inside
//! the agent's namespace, so the agent reaches it on that namespace's loopback and the watched
//! veth carries only the test's traffic.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, UdpSocket},
    time::Duration,
};

use flowlog_agent::publish::{
    Batch, CloudWatchDestination, Destination, LogEvent,
    events::{self, LogEventBatch, MAX_BATCH_BYTES, MAX_BATCH_EVENTS},
};
use flowlog_tests::{
    agent::{unix_now, wait_for_window_start},
    moto::Moto,
    netns::{Namespaces, Setup, in_netns, run},
    publish::{
        AgentProcess, event_record, file_objects, records_of_objects, send_in_consecutive_windows,
        send_udp_flows, sorted_lines, spooled_batches, summed_per_tuple,
    },
    records::{Record, Tuple},
    traffic::in_ns,
};

const GROUP: &str = "/flowlog/test";
const ACCOUNT: &str = "123456789012";

fn args(
    agent_dir: &std::path::Path,
    interval: u64,
    destination: String,
    moto: Option<&Moto>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--aggregation-interval",
        &interval.to_string(),
        "--file-rollover-seconds",
        &interval.to_string(),
        "--flow-log-id",
        "fl-0fedcba9876543210",
        "--account-id",
        ACCOUNT,
        "--region",
        "us-east-1",
        "--spool-dir",
        &agent_dir.join("spool").to_string_lossy(),
        "--destination",
        &destination,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(m) = moto {
        args.extend(["--endpoint-url".to_string(), m.endpoint()]);
    }
    args
}

/// Every event as a record, checking that each event's timestamp is its record's `start` in
/// ms, that a stream carries only its interface's records, and that events are chronological.
fn event_records(streams: &BTreeMap<String, Vec<(i64, String)>>) -> Vec<Record> {
    let mut out = Vec::new();
    for (stream, events) in streams {
        assert!(
            events.windows(2).all(|w| w[0].0 <= w[1].0),
            "{stream} is not chronological"
        );
        for (ts, message) in events {
            let r = event_record(message);
            assert_eq!(*ts, r.start as i64 * 1000, "timestamp of {message:?}");
            assert_eq!(
                stream,
                &format!("{}-all", r.interface_id),
                "stream of {message:?}"
            );
            out.push(r);
        }
    }
    out
}

/// Two agents on the same veth at once, one writing files and one publishing to CloudWatch
/// Logs: over the windows both watched completely, GetLogEvents on the interface's stream
/// returns exactly the records the file destination wrote, one event per record.
#[test]
fn cloudwatch_streams_hold_exactly_the_records_of_the_file_destination() {
    let ns = Namespaces::new(Setup::new(155).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let moto = Moto::start(Some(&a.netns));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    let mut file_agent = AgentProcess::start(
        a,
        &args(
            &dir.path().join("f"),
            2,
            format!("file:{}", out.display()),
            None,
        ),
    );
    let mut cw_agent = AgentProcess::start(
        a,
        &args(
            &dir.path().join("c"),
            2,
            format!("cloud-watch-logs:{GROUP}"),
            Some(&moto),
        ),
    );

    let (w0, expected) = send_in_consecutive_windows(
        a,
        b,
        2,
        &[(8001, 3, 4, 100), (8002, 2, 6, 200), (8003, 1, 9, 50)],
    );
    let w3 = w0 + 6;
    assert!(unix_now() < w3 as f64, "traffic overran its windows");
    std::thread::sleep(Duration::from_secs_f64(w3 as f64 + 1.0 - unix_now()));
    assert!(cw_agent.stop().success(), "log:\n{}", cw_agent.log());
    assert!(file_agent.stop().success(), "log:\n{}", file_agent.log());
    assert_eq!(
        cw_agent.log_count("created log group"),
        1,
        "log:\n{}",
        cw_agent.log()
    );
    assert_eq!(
        cw_agent.log_count("created log stream"),
        1,
        "log:\n{}",
        cw_agent.log()
    );

    let streams = moto.with_clients(async |c| c.log_events(GROUP).await);
    assert_eq!(
        streams.keys().collect::<Vec<_>>(),
        [&format!("{}-all", a.iface)]
    );
    let cw_records = event_records(&streams);
    let file_records = records_of_objects(&file_objects(&out));
    let in_windows = |r: &&Record| r.start >= w0 && r.end < w3;
    let cw_in: Vec<&Record> = cw_records.iter().filter(in_windows).collect();
    let file_in: Vec<&Record> = file_records.iter().filter(in_windows).collect();
    assert_eq!(
        sorted_lines(&cw_in),
        sorted_lines(&file_in),
        "CloudWatch and file records of windows [{w0}, {w3})"
    );
    assert_eq!(cw_in.len(), 6);
    let got: BTreeMap<Tuple, (u64, u64)> = cw_in
        .iter()
        .map(|r| {
            (
                r.tuple.expect("OK record"),
                (r.packets.unwrap(), r.bytes.unwrap()),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // Nothing twice overall either: the agent's own first and last windows too.
    let all: BTreeSet<&str> = cw_records.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(all.len(), cw_records.len(), "duplicate events");
}

/// The endpoint disappears for more than two windows and comes back empty (moto keeps no
/// state): the agent recreates the group and stream and delivers every spooled batch; every
/// record arrives exactly once across the events saved before the outage and those after.
#[test]
fn cloudwatch_outage_of_two_windows_loses_and_duplicates_nothing() {
    let ns = Namespaces::new(Setup::new(156).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let mut moto = Moto::start(Some(&a.netns));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = AgentProcess::start(
        a,
        &args(
            dir.path(),
            2,
            format!("cloud-watch-logs:{GROUP}"),
            Some(&moto),
        ),
    );

    let w0 = wait_for_window_start(2, Duration::from_millis(300));
    let mut expected = BTreeMap::new();
    let mut port = 8100;
    let mut window = |expected: &mut BTreeMap<Tuple, (u64, u64)>| {
        port += 1;
        expected.extend(send_udp_flows(a, b, port, 2, 3, 64));
    };
    window(&mut expected); // w0
    wait_for_window_start(2, Duration::from_millis(300));
    window(&mut expected); // w1
    wait_for_window_start(2, Duration::from_millis(300));
    let delivered_before = expected.clone();
    window(&mut expected); // w2
    // Keep what was delivered so far (w0 and w1: polled until there, before w2 closes, so no
    // batch is in flight when the endpoint goes).
    let w2_closes = (w0 + 6) as f64;
    let before = loop {
        let events = moto.with_clients(async |c| c.log_events(GROUP).await);
        let records = event_records(&events);
        let ok: Vec<&Record> = records.iter().filter(|r| r.tuple.is_some()).collect();
        if summed_per_tuple(&ok) == delivered_before {
            break events;
        }
        assert!(
            unix_now() < w2_closes - 0.1,
            "w0 and w1 not delivered before w2 closed; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    moto.stop();
    let down_at = unix_now();
    for _ in 0..2 {
        wait_for_window_start(2, Duration::from_millis(300));
        window(&mut expected); // w3, w4
    }
    wait_for_window_start(2, Duration::from_millis(500));
    moto.restart();
    assert!(unix_now() - down_at >= 4.0);
    window(&mut expected); // w5
    wait_for_window_start(2, Duration::from_millis(300));
    window(&mut expected); // w6
    wait_for_window_start(2, Duration::from_millis(300));
    let status = agent.stop();
    let log = agent.log();
    assert!(status.success(), "exit {status}; log:\n{log}");
    let left = spooled_batches(&dir.path().join("spool"));
    assert_eq!(left, 0, "everything delivered before exit; log:\n{log}");

    let after = moto.with_clients(async |c| c.log_events(GROUP).await);
    let mut records = event_records(&before);
    records.extend(event_records(&after));
    let ok: Vec<&Record> = records
        .iter()
        .filter(|r| r.tuple.is_some() && r.start >= w0)
        .collect();
    let got = summed_per_tuple(&ok);
    assert_eq!(
        ok.len(),
        expected.len(),
        "one record per flow, none twice:\n{}",
        sorted_lines(&ok).join("\n")
    );
    assert_eq!(got, expected, "every packet sent, counted once");
    let all: BTreeSet<&str> = records.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(
        all.len(),
        records.len(),
        "duplicate events across the outage"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot publish"))
        .collect();
    eprintln!("error lines:\n{}", errors.join("\n"));
    assert_eq!(
        errors.len(),
        1,
        "one error line for the outage:\n{}",
        errors.join("\n")
    );
    assert!(errors[0].contains("Connection refused"), "{}", errors[0]);
    // Group and stream created at the start and again after the endpoint lost them.
    assert_eq!(log.matches("created log stream").count(), 2, "log:\n{log}");
}

/// More than 25,000 flows in one window (26,000 UDP datagrams to distinct ports of an address
/// that exists only in a neighbour entry, so nothing answers): exactly 26,000 events in the
/// stream, delivered in as many PutLogEvents calls as the limits require, each within them.
#[test]
fn more_than_25000_records_in_a_window_are_split_into_valid_batches() {
    const FLOWS: u16 = 26_000;
    const INTERVAL: u64 = 4;
    let ns = Namespaces::new(Setup::new(157).ipv4_only());
    let (a, _) = (&ns.a, &ns.b);
    let sink = Ipv4Addr::new(10, 213, 157, 99);
    run(in_netns(&a.netns, "ip").args([
        "neigh",
        "add",
        &sink.to_string(),
        "lladdr",
        "02:00:00:00:01:57",
        "dev",
        &a.iface,
        "nud",
        "permanent",
    ]));
    let moto = Moto::start(Some(&a.netns));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = AgentProcess::start(
        a,
        &args(
            dir.path(),
            INTERVAL,
            format!("cloud-watch-logs:{GROUP}"),
            Some(&moto),
        ),
    );

    let w = wait_for_window_start(INTERVAL, Duration::from_millis(300));
    let src = a.v4;
    let src_port = in_ns(&a.netns, move || {
        let sock = UdpSocket::bind((src, 0)).expect("bind");
        for port in 1..=FLOWS {
            sock.send_to(b"flowlog", (sink, port))
                .unwrap_or_else(|e| panic!("send to port {port}: {e}"));
        }
        sock.local_addr().expect("addr").port()
    });
    assert!(
        unix_now() < (w + INTERVAL) as f64,
        "sending overran the window"
    );
    std::thread::sleep(Duration::from_secs_f64(
        (w + INTERVAL) as f64 + 0.5 - unix_now(),
    ));
    let status = agent.stop();
    let log = agent.log();
    assert!(status.success(), "exit {status}; log:\n{log}");

    let stream = format!("{}-all", a.iface);
    let streams = moto.with_clients(async |c| c.log_events(GROUP).await);
    let window: Vec<(i64, String)> = streams[&stream]
        .iter()
        .filter(|(ts, _)| (w as i64 * 1000..(w + INTERVAL) as i64 * 1000).contains(ts))
        .cloned()
        .collect();
    let records: Vec<Record> = window.iter().map(|(_, m)| event_record(m)).collect();
    let ports: BTreeSet<u16> = records
        .iter()
        .map(|r| {
            let t = r.tuple.expect("OK record");
            assert_eq!(
                (t.src_port, t.dst, r.packets, r.bytes),
                (src_port, sink.into(), Some(1), Some(35)),
                "{}",
                r.line
            );
            t.dst_port
        })
        .collect();
    assert_eq!(records.len(), FLOWS as usize, "one event per flow");
    assert_eq!(ports, (1..=FLOWS).collect::<BTreeSet<u16>>());

    // The agent's PutLogEvents calls for this window (its "published batch=<stream>@<first ms>+<n>"
    // log lines) are exactly the batches the limits give for these events, in order.
    let published: Vec<usize> = log
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("batch={stream}@")))
        })
        .filter_map(|rest| {
            let (first, n) = rest.split_once('+')?;
            let first: i64 = first.parse().ok()?;
            (first >= w as i64 * 1000 && first < (w + INTERVAL) as i64 * 1000)
                .then(|| n.parse().ok())?
        })
        .collect();
    let events: Vec<LogEvent> = window
        .into_iter()
        .map(|(timestamp_ms, message)| LogEvent {
            timestamp_ms,
            message,
        })
        .collect();
    let limits: Vec<usize> = events::split(&stream, events)
        .iter()
        .map(|b| b.events.len())
        .collect();
    eprintln!("PutLogEvents calls for {FLOWS} records: {published:?}");
    assert_eq!(published, limits, "PutLogEvents calls for the window");
    assert!(
        published.len() >= 3,
        "26,000 records need at least 3 calls: {published:?}"
    );
}

/// The batching limits against the real API: 25,001 short events (so the 10,000-event limit
/// binds, not the byte limit) and 3,000 events of 1,000 bytes (so the byte limit binds) are
/// put through the destination and read back whole and in order.
#[test]
fn putlogevents_batches_at_both_limits_are_accepted() {
    let moto = Moto::start(None);
    let endpoint = moto.endpoint();
    moto.with_clients(async move |c| {
        let dest = Destination::CloudWatchLogs(CloudWatchDestination::from_client(
            c.logs.clone(),
            GROUP,
            &endpoint,
        ));
        let base = (unix_now() as i64 - 60) * 1000;
        let cases = [
            ("short-all", 25_001usize, 20usize),
            ("long-all", 3_000, 1_000),
        ];
        for (stream, n, len) in cases {
            let events: Vec<LogEvent> = (0..n)
                .map(|i| LogEvent {
                    timestamp_ms: base + i as i64 / 100,
                    message: format!("{i:0len$}"),
                })
                .collect();
            let batches: Vec<LogEventBatch> = events::split(stream, events.clone());
            for b in &batches {
                assert!(b.events.len() <= MAX_BATCH_EVENTS);
                assert!(
                    b.events.iter().map(LogEvent::billed_bytes).sum::<usize>() <= MAX_BATCH_BYTES
                );
                dest.put(&Batch::LogEvents(b.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("put {stream}: {e:#}"));
            }
            let sizes: Vec<usize> = batches.iter().map(|b| b.events.len()).collect();
            let want: &[usize] = if len == 20 {
                &[10_000, 10_000, 5_001]
            } else {
                &[1_022, 1_022, 956]
            };
            assert_eq!(sizes, want, "{stream}");
            let got = c
                .log_events(GROUP)
                .await
                .remove(stream)
                .expect("stream created");
            let got: Vec<LogEvent> = got
                .into_iter()
                .map(|(timestamp_ms, message)| LogEvent {
                    timestamp_ms,
                    message,
                })
                .collect();
            assert_eq!(got, events, "{stream}: every event once, in order");
        }
    });
}
