//! A crash of the agent (SIGKILL) with objects still open: the records of the windows that
//! closed before it are on disk (write-ahead logs in the spool directory) and the next start
//! delivers them. Root only; a real agent on a veth pair in namespaces prefixed `flwl`, real
//! traffic, tcpdump on the watched interface as the reference.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{unix_now, wait_for_window_start},
    netns::{Namespaces, Setup},
    publish::{AgentProcess, file_objects, object_records, send_in_consecutive_windows},
    records::{Record, Tuple, dump},
    traffic::ping,
    wire::{Tcpdump, totals},
};

const FLOW_LOG_ID: &str = "fl-0123456789abcdef1";
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
/// AWS's 5-minute object slot (the default `--file-rollover-seconds`).
const SLOT: u64 = 300;

/// One-second windows, objects per default 5-minute slot, file destination.
fn args(dir: &Path) -> Vec<String> {
    [
        "--no-imds",
        "--aggregation-interval",
        "1",
        "--flow-log-id",
        FLOW_LOG_ID,
        "--account-id",
        ACCOUNT,
        "--region",
        REGION,
        "--spool-dir",
        &dir.join("spool").to_string_lossy(),
        "--destination",
        &format!("file:{}", dir.join("out").display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Files in `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until the agent logged that it closed the window starting at `start` (it finishes
/// a window's records, WAL included, before it logs the next window).
fn wait_for_window_closed(agent: &mut AgentProcess, start: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let needle = format!("start={start} ");
    while !agent
        .log()
        .lines()
        .any(|l| l.contains("window closed") && l.contains(&needle))
    {
        assert!(
            Instant::now() < deadline,
            "window {start} not closed; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Records of closed windows survive a SIGKILL: three windows of UDP flows and pings, the
/// agent killed two windows later (objects are only finished at the 5-minute rollover, so
/// nothing is in the output then), restarted on the same spool and destination, and stopped.
/// The records in the output equal the wire exactly (per tuple, packets and bytes, against
/// tcpdump), each record once, and the recovered object is named for its slot and the first
/// run: apart from the restarted run's own object.
#[test]
fn closed_windows_survive_sigkill_and_equal_the_wire() {
    let ns = Namespaces::new(Setup::new(163).ipv4_only().prefix("flwl"));
    let (a, b) = (&ns.a, &ns.b);
    // Everything before the kill must happen inside one slot, so no object is finished (and
    // delivered) before the crash: the records after the restart can only come from the WAL.
    if unix_now() as u64 % SLOT > SLOT - 40 {
        wait_for_window_start(SLOT, Duration::from_millis(100));
    }
    let dir = tempfile::Builder::new()
        .prefix("flwal-")
        .tempdir()
        .expect("temp dir");
    let (out, spool) = (dir.path().join("out"), dir.path().join("spool"));
    let tcpdump = Tcpdump::start(a, dir.path());
    let mut agent = AgentProcess::start(a, &args(dir.path()));

    let (w0, _) = send_in_consecutive_windows(
        a,
        b,
        1,
        &[(7401, 2, 5, 80), (7402, 3, 2, 200), (7403, 1, 7, 40)],
    );
    ping(&a.netns, IpAddr::V4(b.v4), 3, 56);
    let last = unix_now() as u64;
    // The window after the last traffic is logged once the one holding it is durable.
    wait_for_window_closed(&mut agent, last + 1);
    assert_eq!(
        last / SLOT,
        w0 / SLOT,
        "the traffic crossed a slot boundary"
    );
    agent.kill();
    let wire = totals(&tcpdump.stop(), a);
    assert!(
        file_objects(&out).is_empty(),
        "no object is finished before the slot ends"
    );
    let spool_at_crash = files_ending(&spool, "");

    let before = agent.log().len();
    agent.spawn(a, &args(dir.path()));
    let status = agent.stop();
    let log = agent.log();
    assert!(status.success(), "{status}; log:\n{log}");
    let restarted = &log[before..];

    let objects = file_objects(&out);
    let per_object: BTreeMap<&String, Vec<Record>> = objects
        .iter()
        .map(|(k, body)| (k, object_records(k, body)))
        .collect();
    let records: Vec<&Record> = per_object.values().flatten().collect();
    let all: Vec<Record> = records.iter().map(|r| (*r).clone()).collect();
    let lines: BTreeSet<&str> = records.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(
        lines.len(),
        records.len(),
        "a record twice:\n{}",
        dump(&all)
    );

    let mut got: BTreeMap<Tuple, (u64, u64)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.tuple.is_some()) {
        let e = got.entry(r.tuple.unwrap()).or_default();
        e.0 += r.packets.unwrap();
        e.1 += r.bytes.unwrap();
    }
    let want: BTreeMap<Tuple, (u64, u64)> = wire
        .iter()
        .map(|(t, (tot, _))| (*t, (tot.packets, tot.bytes)))
        .collect();
    assert_eq!(got, want, "records vs tcpdump; records:\n{}", dump(&all));
    let sent_udp = want.keys().filter(|t| t.protocol == 17).count();
    assert_eq!(sent_udp, 2 + 3 + 1, "the wire holds the six UDP flows");

    let recovered_line = restarted
        .lines()
        .find(|l| l.contains("recovered the closed windows"))
        .unwrap_or_else(|| panic!("no recovery line; log:\n{restarted}"));
    eprintln!("{recovered_line}");
    assert!(recovered_line.contains(" objects=1 "), "{recovered_line}");

    // The object holding the traffic is the first run's: named for the slot of the traffic,
    // and different from the restarted run's objects.
    let recovered: Vec<&String> = per_object
        .iter()
        .filter(|(_, rs)| rs.iter().any(|r| r.tuple.is_some()))
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(recovered.len(), 1, "objects: {:?}", objects.keys());
    let slot = w0 - w0 % SLOT;
    let date = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{slot}"), "+%Y%m%dT%H%MZ"])
        .output()
        .expect("date");
    let stamp = String::from_utf8_lossy(&date.stdout).trim().to_string();
    let name = recovered[0].rsplit('/').next().unwrap();
    assert!(
        name.starts_with(&format!(
            "{ACCOUNT}_vpcflowlogs_{REGION}_{FLOW_LOG_ID}_{stamp}_"
        )),
        "{name}"
    );
    assert!(
        recovered_line.contains(&format!(" records={} ", per_object[recovered[0]].len())),
        "{recovered_line} vs {} records in {}",
        per_object[recovered[0]].len(),
        recovered[0]
    );
    assert_eq!(
        spool_at_crash
            .iter()
            .filter(|n| n.ends_with(".wal"))
            .count(),
        1,
        "one open object at the crash, one write-ahead log: {spool_at_crash:?}"
    );
    assert_eq!(
        files_ending(&spool, ".wal"),
        Vec::<String>::new(),
        "no WAL after a clean stop"
    );
}
