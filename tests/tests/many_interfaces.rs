//! Many interfaces (issue 15, item 6): 1,000 veth pairs come (created with `ip -batch`) and go
//! while the agent runs. It attaches to all of them (counted by the kernel's BPF_PROG_QUERY, not by the agent),
//! its memory stays within a stated bound, and on a sample of 5 pairs with traffic the records
//! equal tcpdump's capture exactly. Started with an open-files limit too low for its interfaces,
//! it says once which limit it reached. Root only; namespaces prefixed `flmi`/`flmj`.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use flowlog_tests::{
    agent::{flowlog_bin, read_log, sigterm_and_wait, wait_for_log_line},
    netns::{Namespaces, Setup, Side, in_netns, run},
    publish::{file_objects, records_of_objects, send_udp_flows},
    records::{Tuple, dump},
    traffic::{in_ns, ping},
    wire::{Tcpdump, totals},
};

const PAIRS: usize = 1_000;
/// The pairs that carry traffic (and get addresses 10.214.k.1/24 and .2).
const SAMPLED: [usize; 5] = [0, 249, 500, 750, 999];
/// The agent's RSS may grow by at most this much while it holds 1,000 interfaces: per
/// interface two links, its inventory entry and metrics series.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

fn host_name(i: usize) -> String {
    format!("flmv{i:04}")
}

fn peer_name(i: usize) -> String {
    format!("flmp{i:04}")
}

/// Runs `lines` through one `ip -batch -` in `netns`.
fn ip_batch(netns: &str, lines: &[String]) {
    let mut child = in_netns(netns, "ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.join("\n").as_bytes())
        .expect("write the batch");
    let out = child.wait_with_output().expect("ip -batch");
    assert!(
        out.status.success(),
        "ip -batch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates pairs `range` (host end in `a`, peer in `b`) and sets both ends up.
fn create_pairs(a: &str, b: &str, range: std::ops::Range<usize>) {
    let add: Vec<String> = range
        .clone()
        .map(|i| {
            format!(
                "link add {} type veth peer name {} netns {b}",
                host_name(i),
                peer_name(i)
            )
        })
        .collect();
    ip_batch(a, &add);
    let up_a: Vec<String> = range
        .clone()
        .map(|i| format!("link set {} up", host_name(i)))
        .collect();
    ip_batch(a, &up_a);
    let up_b: Vec<String> = range
        .map(|i| format!("link set {} up", peer_name(i)))
        .collect();
    ip_batch(b, &up_b);
}

/// How many of the interfaces `names` in `netns` have a program on both TCX hooks, as the
/// kernel answers BPF_PROG_QUERY (bpftool 7.1 does not list TCX yet).
fn tcx_attached(netns: &str, names: &[String]) -> usize {
    in_ns(netns, || {
        names
            .iter()
            .filter(|name| {
                [TcAttachType::Ingress, TcAttachType::Egress]
                    .into_iter()
                    .all(|at| {
                        SchedClassifier::query_tcx(name, at)
                            .is_ok_and(|(_, progs)| !progs.is_empty())
                    })
            })
            .count()
    })
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .expect("VmRSS")
}

/// `flowlog run --iface 'flmv*'` in `side`'s namespace, under `prefix` (e.g. `prlimit`).
fn start_agent(side: &Side, dir: &Path, prefix: &[&str], extra: &[&str]) -> Child {
    let log = fs::File::create(dir.join("agent.log")).expect("agent log");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &side.netns])
        .args(prefix)
        .arg(flowlog_bin())
        .args(["run", "--no-imds", "--iface", "flmv*"])
        .args(["--aggregation-interval", "1"])
        .arg("--destination")
        .arg(format!("file:{}", dir.join("out").display()))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .arg("--control-socket")
        .arg(dir.join("run/control.sock"))
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log fd"))
        .stderr(log);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Waits until `done` holds, polling every 50 ms; panics with `what` and the agent's log.
fn wait_until(
    what: &str,
    timeout: Duration,
    log: &Path,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "{what} not within {timeout:?}; log tail:\n{}",
            read_log(log)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// A namespace of the test's own, deleted on drop (with every interface in it).
struct PeerNamespace(String);

impl PeerNamespace {
    fn new(name: String) -> Self {
        run(Command::new("ip").args(["netns", "add", &name]));
        run(in_netns(&name, "sysctl").args(["-qw", "net.ipv6.conf.default.disable_ipv6=1"]));
        PeerNamespace(name)
    }

    fn delete(&mut self) {
        if !self.0.is_empty() {
            run(Command::new("ip").args(["netns", "del", &self.0]));
            self.0.clear();
        }
    }
}

impl Drop for PeerNamespace {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
}

#[test]
fn a_thousand_veth_pairs_come_and_go_and_the_sample_is_exact() {
    let ns = Namespaces::new(Setup::new(186).ipv4_only().prefix("flmi"));
    // The peers live in a namespace of their own: deleting it removes all 1,000 pairs at once,
    // as a host tearing down its pods does (one by one, `ip link del` took ~60 ms a pair here).
    let mut peers = PeerNamespace::new(format!("flmi-{}-peers", std::process::id()));
    let (na, nb) = (ns.a.netns.clone(), peers.0.clone());
    let dir = tempfile::Builder::new()
        .prefix("flmi-")
        .tempdir()
        .expect("temp dir");
    let log_path = dir.path().join("agent.log");
    let mut child = Some(start_agent(&ns.a, dir.path(), &[], &[]));
    wait_for_log_line(
        &mut child,
        &log_path,
        0,
        "capturing",
        Duration::from_secs(30),
    );
    let pid = child.as_ref().expect("agent").id();
    let rss_start = rss_kib(pid);

    let hosts: Vec<String> = (0..PAIRS).map(host_name).collect();
    let created = Instant::now();
    for batch in (0..PAIRS).step_by(250) {
        create_pairs(&na, &nb, batch..batch + 250);
    }
    let creating = created.elapsed();
    let attaching = wait_until(
        "1,000 interfaces attached",
        Duration::from_secs(40),
        &log_path,
        || tcx_attached(&na, &hosts) == PAIRS,
    );
    let rss_attached = rss_kib(pid);

    let sides: Vec<(Side, Side)> = SAMPLED
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let side = |netns: &str, iface: String, host: u8| Side {
                netns: netns.to_string(),
                iface,
                v4: Ipv4Addr::new(10, 214, k as u8, host),
                v6: Ipv6Addr::UNSPECIFIED,
            };
            (side(&na, host_name(i), 1), side(&nb, peer_name(i), 2))
        })
        .collect();
    for (a, b) in &sides {
        for s in [a, b] {
            run(in_netns(&s.netns, "ip").args([
                "addr",
                "add",
                &format!("{}/24", s.v4),
                "dev",
                &s.iface,
            ]));
        }
    }
    let captures: Vec<Tcpdump> = sides
        .iter()
        .map(|(a, _)| Tcpdump::start(a, dir.path()))
        .collect();
    for (k, (a, b)) in sides.iter().enumerate() {
        send_udp_flows(a, b, 7800 + k as u16, 2, 5 + k, 100);
        ping(&a.netns, IpAddr::V4(b.v4), 2, 56);
    }
    let wire: Vec<BTreeMap<Tuple, (u64, u64)>> = captures
        .into_iter()
        .zip(&sides)
        .map(|(t, (a, _))| {
            totals(&t.stop(), a)
                .into_iter()
                .map(|(t, (tot, _))| (t, (tot.packets, tot.bytes)))
                .collect()
        })
        .collect();

    peers.delete();
    let detaching = wait_until(
        "1,000 interfaces detached",
        Duration::from_secs(40),
        &log_path,
        || {
            read_log(&log_path)
                .matches("interface went away; detached")
                .count()
                == PAIRS
        },
    );
    assert_eq!(tcx_attached(&na, &hosts), 0, "the interfaces are gone");
    let rss_deleted = rss_kib(pid);
    eprintln!(
        "created 1,000 pairs in {creating:?}, all attached {attaching:?} after that; all \
         detached {detaching:?} after their namespace was deleted; agent RSS {rss_start} KiB at \
         start, {rss_attached} KiB with 1,000 interfaces, {rss_deleted} KiB after they went away"
    );
    assert!(
        rss_attached <= rss_start + RSS_GROWTH_BOUND_KIB
            && rss_deleted <= rss_start + RSS_GROWTH_BOUND_KIB,
        "RSS {rss_start} -> {rss_attached} -> {rss_deleted} KiB exceeds start + {RSS_GROWTH_BOUND_KIB} KiB"
    );

    let status = sigterm_and_wait(
        child.take().expect("agent"),
        &log_path,
        Duration::from_secs(60),
    );
    let log = read_log(&log_path);
    assert!(
        status.success(),
        "{status}; log tail:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
    assert!(!log.contains("cannot attach"), "an attach failed");
    let records = records_of_objects(&file_objects(&dir.path().join("out")));
    for ((a, _), want) in sides.iter().zip(&wire) {
        let mut got: BTreeMap<Tuple, (u64, u64)> = BTreeMap::new();
        for r in records
            .iter()
            .filter(|r| r.tuple.is_some() && r.field("interface-id") == a.iface)
        {
            let e = got.entry(r.tuple.expect("tuple")).or_default();
            e.0 += r.packets.expect("packets");
            e.1 += r.bytes.expect("bytes");
        }
        assert_eq!(&got, want, "records vs tcpdump on {}", a.iface);
        // 2 UDP flows and the two ICMP directions.
        assert_eq!(want.len(), 4, "{want:?}");
    }
    let lines_of_sampled = records
        .iter()
        .filter(|r| {
            sides
                .iter()
                .any(|(a, _)| r.field("interface-id") == a.iface)
        })
        .count();
    assert!(lines_of_sampled >= 4 * SAMPLED.len(), "{}", dump(&records));
}

/// The `flowlog_interfaces_unattached` gauge in the metrics file, once it is there.
fn unattached_gauge(metrics: &Path) -> Option<usize> {
    fs::read_to_string(metrics)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("flowlog_interfaces_unattached "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn an_open_files_limit_too_low_is_named_once() {
    const MORE: usize = 100;
    let ns = Namespaces::new(Setup::new(187).ipv4_only().prefix("flmj"));
    let (na, nb) = (ns.a.netns.clone(), ns.b.netns.clone());
    let dir = tempfile::Builder::new()
        .prefix("flmj-")
        .tempdir()
        .expect("temp dir");
    let log_path = dir.path().join("agent.log");
    let metrics = dir.path().join("flowlog.prom");
    let metrics_arg = format!("--metrics-file={}", metrics.display());
    // Enough descriptors to start, not for 100 interfaces (2 links each).
    let mut child = Some(start_agent(
        &ns.a,
        dir.path(),
        &["prlimit", "--nofile=128:128"],
        &[&metrics_arg],
    ));
    wait_for_log_line(
        &mut child,
        &log_path,
        0,
        "capturing",
        Duration::from_secs(30),
    );
    create_pairs(&na, &nb, 0..MORE);
    let hosts: Vec<String> = (0..MORE).map(host_name).collect();
    wait_for_log_line(
        &mut child,
        &log_path,
        0,
        "the open-files limit is reached (RLIMIT_NOFILE 128;",
        Duration::from_secs(20),
    );
    // Every interface is either attached (BPF_PROG_QUERY) or counted as unattached (the gauge).
    let mut seen = (0, None);
    wait_until(
        "attached + unattached = 100",
        Duration::from_secs(20),
        &log_path,
        || {
            seen = (tcx_attached(&na, &hosts), unattached_gauge(&metrics));
            seen.1.is_some_and(|u| u + seen.0 == MORE)
        },
    );
    assert!(seen.0 > 0 && seen.0 < MORE, "{seen:?}");
    let status = sigterm_and_wait(
        child.take().expect("agent"),
        &log_path,
        Duration::from_secs(30),
    );
    let log = read_log(&log_path);
    assert!(status.success(), "{status}; log:\n{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot attach"))
        .collect();
    assert_eq!(lines.len(), 1, "one line naming the limit; log:\n{log}");
}
