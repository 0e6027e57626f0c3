//! Restarts without a gap: the agent pins its maps and TCX links (`--pin-dir`), the programs
//! keep counting while no agent runs, and the next agent adopts them. Under steady UDP traffic,
//! every record of every run together equals tcpdump on the watched veth exactly, across
//! SIGTERM restarts and a SIGKILL; an "upgrade" to a binary whose map layout differs (the
//! test-only `--pin-layout-salt`) starts fresh, says so, and counts what it discarded. Root
//! only; namespaces prefixed `flrs`, addresses 10.213.190-193.0/24.

use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use flowlog_tests::{
    agent::{flowlog_bin, require_root, test_pin_dir, wait_for_window_start},
    netns::{Family, Namespaces, Setup, Side, ifindex, in_netns, run},
    publish::AgentProcess,
    records::{self, Tuple},
    traffic::enter,
    wire::{self, Tcpdump},
};

const PORT: u16 = 7411;

/// UDP from `a` to `b` on four flows, one datagram per flow every 5 ms, until stopped. Nothing
/// listens: `b` answers with ICMP port unreachable (rate-limited by the kernel), which
/// tcpdump sees and the agent counts too.
struct SteadyTraffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl SteadyTraffic {
    fn start(a: &Side, b: &Side) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (netns, from, to) = (
            a.netns.clone(),
            a.addr(Family::V4),
            SocketAddr::new(b.addr(Family::V4), PORT),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&netns);
            let socks: Vec<UdpSocket> = (0..4)
                .map(|_| UdpSocket::bind((from, 0)).expect("bind sender"))
                .collect();
            let mut sent = 0;
            while !flag.load(Ordering::Relaxed) {
                for s in &socks {
                    // ECONNREFUSED from an earlier ICMP error is not a failed send.
                    if s.send_to(&[0x5a; 100], to).is_ok() {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        });
        SteadyTraffic {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sending; returns how many datagrams were sent.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("traffic thread")
    }
}

impl Drop for SteadyTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One-second windows and files, a fixed flow log id, output and spool in `dir`, pinned state
/// in `pins`.
fn args(dir: &Path, pins: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--no-imds",
        "--aggregation-interval",
        "1",
        "--file-rollover-seconds",
        "1",
        "--flow-log-id",
        "fl-0123456789abcdef2",
        "--spool-dir",
        &dir.join("spool").to_string_lossy(),
        "--destination",
        &format!("file:{}", dir.join("out").display()),
        "--pin-dir",
        &pins.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// (packets, bytes) per tuple of every OK record in `dir/out`.
fn recorded(dir: &Path) -> BTreeMap<Tuple, (u64, u64)> {
    records::totals(&records::read_default(&dir.join("out")))
        .into_iter()
        .map(|(t, v)| (t, (v.packets, v.bytes)))
        .collect()
}

/// (packets, bytes) per tuple as the agent on `local` records them.
fn on_the_wire(packets: &[wire::WirePacket], local: &Side) -> BTreeMap<Tuple, (u64, u64)> {
    wire::totals(packets, local)
        .into_iter()
        .map(|(t, (v, _))| (t, (v.packets, v.bytes)))
        .collect()
}

fn setup(subnet: u8) -> (Namespaces, tempfile::TempDir, tempfile::TempDir) {
    require_root();
    let ns = Namespaces::new(Setup::new(subnet).ipv4_only().prefix("flrs"));
    let dir = tempfile::Builder::new()
        .prefix("flrs-")
        .tempdir()
        .expect("temp dir");
    (ns, dir, test_pin_dir())
}

/// `flowlog cleanup --pin-dir <pins>`, the real binary.
fn cleanup(pins: &Path) -> std::process::Output {
    std::process::Command::new(flowlog_bin())
        .args(["cleanup", "--pin-dir"])
        .arg(pins)
        .output()
        .expect("flowlog cleanup")
}

/// Lets the traffic run for `d`: windows close meanwhile (not a synchronisation).
fn traffic_for(d: Duration) {
    std::thread::sleep(d);
}

/// SIGTERM and start again, twice; then SIGKILL in the middle of a window and start again.
/// Every restart adopts the pinned maps and links; the records of all runs sum to the wire.
#[test]
fn restarts_with_sigterm_and_sigkill_lose_and_double_nothing() {
    let (ns, dir, pins) = setup(190);
    let (a, b) = (&ns.a, &ns.b);
    let args = args(dir.path(), pins.path(), &[]);
    let tcpdump = Tcpdump::start(b, dir.path());
    let mut agent = AgentProcess::start(b, &args);
    // From here on every packet must be counted by some agent.
    let traffic = SteadyTraffic::start(a, b);
    for round in 1..=2 {
        traffic_for(Duration::from_millis(1500));
        let status = agent.stop();
        assert!(status.success(), "exit {status}; log:\n{}", agent.log());
        // Nobody drains now; the pinned programs keep counting.
        traffic_for(Duration::from_millis(400));
        agent.spawn(b, &args);
        assert_eq!(
            agent.log_count("adopted the pinned maps"),
            round,
            "{}",
            agent.log()
        );
    }
    traffic_for(Duration::from_millis(1000));
    // Away from a boundary (a kill in the middle of a cut has its own test below).
    wait_for_window_start(1, Duration::from_millis(500));
    agent.kill();
    traffic_for(Duration::from_millis(400));
    agent.spawn(b, &args);
    assert_eq!(
        agent.log_count("adopted the pinned maps"),
        3,
        "{}",
        agent.log()
    );
    traffic_for(Duration::from_millis(1500));
    let sent = traffic.stop();
    // `flowlog cleanup` leaves a running agent's state alone.
    let out = cleanup(pins.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("flowlog: error: a running agent holds the pinned state in ")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    let status = agent.stop();
    assert!(status.success(), "exit {status}; log:\n{}", agent.log());
    let log = agent.log();
    assert!(
        fs::read_dir(pins.path()).expect("pin dir").next().is_some(),
        "the stopped agent's state stays pinned"
    );
    let out = cleanup(pins.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = fs::read_dir(pins.path())
        .expect("pin dir")
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let adopted_links = log
        .lines()
        .filter(|l| l.contains(" attached ") && l.contains("adopted"))
        .count();
    assert_eq!(adopted_links, 3, "{log}");
    let packets = tcpdump.stop();

    assert_records_equal_the_wire(dir.path(), &packets, b, sent, &log);
}

/// tcpdump on `local` saw all `sent` datagrams, and the records of every run in `dir` equal
/// the wire per tuple, packets and bytes.
fn assert_records_equal_the_wire(
    dir: &Path,
    packets: &[wire::WirePacket],
    local: &Side,
    sent: u64,
    log: &str,
) {
    let wire = on_the_wire(packets, local);
    let to_port: u64 = wire
        .iter()
        .filter(|(t, _)| t.dst_port == PORT)
        .map(|(_, v)| v.0)
        .sum();
    assert_eq!(to_port, sent, "tcpdump saw every datagram sent");
    let got = recorded(dir);
    if got != wire {
        panic!(
            "records differ from the wire\n{}\nlog:\n{log}",
            where_they_differ(dir, &got, &wire, packets, local)
        );
    }
}

/// For a failed comparison: per tuple recorded/wire, and for the first tuple that differs its
/// records (file, start, end, packets) beside the wire's packets per second.
fn where_they_differ(
    dir: &Path,
    got: &BTreeMap<Tuple, (u64, u64)>,
    wire: &BTreeMap<Tuple, (u64, u64)>,
    packets: &[wire::WirePacket],
    local: &Side,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let tuples: std::collections::BTreeSet<&Tuple> = got.keys().chain(wire.keys()).collect();
    for t in &tuples {
        let _ = writeln!(
            out,
            "{t:?}: recorded {:?} wire {:?}",
            got.get(t),
            wire.get(t)
        );
    }
    let Some(t) = tuples.into_iter().find(|t| got.get(t) != wire.get(t)) else {
        return out;
    };
    let names: Vec<&str> = records::DEFAULT_HEADER.split(' ').collect();
    for path in records::files(&dir.join("out")) {
        let mut text = String::new();
        let raw = fs::read(&path).unwrap_or_default();
        let _ = std::io::Read::read_to_string(
            &mut flate2::read::MultiGzDecoder::new(raw.as_slice()),
            &mut text,
        );
        for r in text
            .lines()
            .skip(1)
            .map(|l| records::parse_line(l, &names))
            .filter(|r| r.tuple.as_ref() == Some(t))
        {
            let _ = writeln!(
                out,
                "  record {} {}-{} packets {:?} in {}",
                r.action,
                r.start,
                r.end,
                r.packets,
                path.file_name().unwrap_or_default().to_string_lossy()
            );
        }
    }
    let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
    for p in packets {
        if wire::as_recorded(p, local) == *t {
            *per_second.entry(p.time.as_secs()).or_default() += 1;
        }
    }
    for (s, n) in per_second {
        let _ = writeln!(out, "  wire second {s}: {n}");
    }
    out
}

/// SIGKILL a few milliseconds after a window boundary, while the agent is cutting: after the
/// flip and before the window's records are on disk. The slot it was reading keeps its
/// counts, and the next agent hands them out as that window; every record of every run
/// together still equals tcpdump. (Before the slot was kept until its records were on disk,
/// such a kill lost the whole window.)
#[test]
fn a_sigkill_in_the_middle_of_a_cut_loses_and_doubles_nothing() {
    let (ns, dir, pins) = setup(192);
    let (a, b) = (&ns.a, &ns.b);
    let args = args(dir.path(), pins.path(), &[]);
    let tcpdump = Tcpdump::start(b, dir.path());
    let mut agent = AgentProcess::start(b, &args);
    let traffic = SteadyTraffic::start(a, b);
    // The flip comes about 1 ms after the boundary, then a 20 ms grace before the slot is read:
    // these kills land after the flip and before the records are written.
    for (round, after_boundary_ms) in [5u64, 10, 15].into_iter().enumerate() {
        traffic_for(Duration::from_millis(1200));
        wait_for_window_start(1, Duration::from_millis(after_boundary_ms));
        agent.kill();
        agent.spawn(b, &args);
        assert_eq!(
            agent.log_count("adopted the pinned maps"),
            round + 1,
            "{}",
            agent.log()
        );
    }
    traffic_for(Duration::from_millis(1500));
    let sent = traffic.stop();
    let status = agent.stop();
    assert!(status.success(), "exit {status}; log:\n{}", agent.log());
    let log = agent.log();
    let carried = agent.log_count("the last agent stopped before its last cut reached disk");
    assert!(
        carried > 0,
        "no kill landed inside a cut, so this run proves nothing: {log}"
    );
    let packets = tcpdump.stop();
    assert_records_equal_the_wire(dir.path(), &packets, b, sent, &log);
}

/// Every pinned link under `pins` (`netns-*/<layout>/links/*`), by file name.
fn pinned_links(pins: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for ns in fs::read_dir(pins).expect("pin dir").flatten() {
        for layout in fs::read_dir(ns.path()).expect("netns dir").flatten() {
            if let Ok(links) = fs::read_dir(layout.path().join("links")) {
                out.extend(
                    links
                        .flatten()
                        .map(|l| l.file_name().to_string_lossy().to_string()),
                );
            }
        }
    }
    out.sort();
    out
}

/// An interface deleted under a running agent: its two pinned links go with it (no pin is
/// left to a dead ifindex), and the agent runs on.
#[test]
fn a_deleted_interface_leaves_no_pinned_link() {
    let (ns, dir, pins) = setup(193);
    let b = &ns.b;
    let args = args(dir.path(), pins.path(), &[]);
    let mut agent = AgentProcess::start(b, &args);
    let ifindex = ifindex(&b.netns, &b.iface).expect("the watched interface's ifindex");
    assert_eq!(
        pinned_links(pins.path()),
        vec![format!("{ifindex}-egress"), format!("{ifindex}-ingress")]
    );
    run(in_netns(&b.netns, "ip").args(["link", "del", &b.iface]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pinned_links(pins.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "pinned links left after the interface was deleted: {:?}\n{}",
            pinned_links(pins.path()),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = agent.stop();
    assert!(status.success(), "exit {status}; log:\n{}", agent.log());
    assert!(pinned_links(pins.path()).is_empty());
}

/// An upgrade to a binary whose map layout differs: the new agent cannot read the pinned
/// maps, says so in one line, counts the flows it discarded, removes the old state and
/// starts fresh. What it records is never more than the wire; the gap is lost and reported.
#[test]
fn an_upgrade_with_another_map_layout_starts_fresh_and_counts_the_loss() {
    let (ns, dir, pins) = setup(191);
    let (a, b) = (&ns.a, &ns.b);
    let metrics = dir.path().join("metrics.prom");
    let old = args(dir.path(), pins.path(), &[]);
    let metrics_arg = metrics.to_string_lossy().to_string();
    let new = args(
        dir.path(),
        pins.path(),
        &["--pin-layout-salt", "1", "--metrics-file", &metrics_arg],
    );
    let tcpdump = Tcpdump::start(b, dir.path());
    let mut agent = AgentProcess::start(b, &old);
    let traffic = SteadyTraffic::start(a, b);
    traffic_for(Duration::from_millis(1500));
    let status = agent.stop();
    assert!(status.success(), "exit {status}; log:\n{}", agent.log());
    traffic_for(Duration::from_millis(400));
    agent.spawn(b, &new);
    let log = agent.log();
    assert_eq!(agent.log_count("adopted the pinned maps"), 0, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("pinned state of another map layout"))
        .unwrap_or_else(|| panic!("no layout-change line: {log}"));
    let discarded: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("discarded_flows="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no discarded_flows in {line:?}"));
    // Four UDP flows ingress and the ICMP answers egress were counted while no agent ran.
    assert!(discarded >= 4, "{line}");
    traffic_for(Duration::from_millis(1500));
    traffic.stop();
    let status = agent.stop();
    assert!(status.success(), "exit {status}; log:\n{}", agent.log());
    let packets = tcpdump.stop();

    let prom = fs::read_to_string(&metrics).expect("metrics file");
    let metric: u64 = prom
        .lines()
        .find_map(|l| l.strip_prefix("flowlog_pinned_flows_discarded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no discarded metric: {prom}"));
    assert_eq!(metric, discarded, "{prom}");
    // Only the new layout's state is left.
    let layouts: Vec<_> = fs::read_dir(pins.path())
        .expect("pin dir")
        .flatten()
        .flat_map(|ns| fs::read_dir(ns.path()).expect("netns dir").flatten())
        .collect();
    assert_eq!(layouts.len(), 1, "{layouts:?}");

    let wire = on_the_wire(&packets, b);
    let got = recorded(dir.path());
    for (t, (p, bytes)) in &got {
        let (wp, wb) = wire.get(t).copied().unwrap_or_default();
        assert!(
            *p <= wp && *bytes <= wb,
            "{t:?}: recorded {p}/{bytes} > wire {wp}/{wb}"
        );
    }
    let (got_total, wire_total): (u64, u64) = (
        got.values().map(|v| v.0).sum(),
        wire.values().map(|v| v.0).sum(),
    );
    // The datagrams sent while no agent of the new layout ran are the loss (about 80 per 100 ms).
    assert!(
        got_total + 4 * 20 <= wire_total,
        "recorded {got_total} of {wire_total}"
    );
}
