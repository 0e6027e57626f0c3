//! `cargo xtask soak --minutes N`: the agent (the release build, `FLOWLOG_BIN`) under flow
//! churn, steady traffic, interface churn and a flapping S3 destination (moto behind the fault
//! proxy) for N minutes; then every record is accounted for and docs/bench/SOAK.md written:
//! RSS and open fds over time with their slopes, window lateness, records in against records
//! delivered, and SVG plots.
//!
//! Exits non-zero when anything is lost without explanation (records spooled but not
//! delivered, packets on the interface but not in a record, spool drops) or the agent fails;
//! the resource and lateness targets are reported, not enforced (a 5-minute run's slope is
//! noise).

mod load;
mod report;
// The bench's hand-written SVG charts (line charts here; its bar charts go unused).
#[allow(dead_code)]
#[path = "../../../../flowlog-bench/src/svg.rs"]
mod svg;
mod tally;

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use flowlog_tests::{
    agent::{flowlog_bin, require_root, sigterm_and_wait, wait_for_log_line},
    fault_proxy::{Fault, FaultProxy, Matcher, Outcome, Times},
    moto::{self, Moto},
    netns::{Namespaces, Setup, Side, in_netns, run},
    tcx_links,
};

use crate::{load::sleep_unless_stopped, tally::Tally};

const BUCKET: &str = "flowlog-soak";
const FLOW_LOG_ID: &str = "fl-050a4000000000001";
/// Namespace and interface prefix (4 characters, like the tests' `flit`).
const PREFIX: &str = "flsk";
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(about = "Soak the agent: churn, interface churn and a flapping destination")]
struct Args {
    /// How long the load runs.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Where SOAK.md and the plots go.
    #[arg(long)]
    out: PathBuf,
    /// New flows per second offered (one packet each).
    #[arg(long, default_value_t = 20_000)]
    flows_per_second: u64,
}

/// One sample of the agent process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub secs: f64,
    pub rss_kib: u64,
    pub fds: u64,
    /// Series in the agent's metrics file.
    pub series: u64,
}

/// One closed window, from the agent's log.
#[derive(Debug, Clone, Copy)]
pub struct Lateness {
    pub end: u64,
    pub seconds: f64,
}

/// Everything the report needs.
pub struct Soak {
    pub minutes: u64,
    pub offered_rate: u64,
    pub run_secs: f64,
    pub churn_sent: u64,
    pub churn_received: u64,
    pub steady_sent: u64,
    pub steady_received: u64,
    pub iface_cycles: u64,
    pub episodes: Vec<String>,
    pub samples: Vec<Sample>,
    pub warmup_secs: f64,
    pub lateness: Vec<Lateness>,
    pub wire_packets: u64,
    pub tally: Tally,
    pub metrics: BTreeMap<String, f64>,
    pub proxy: BTreeMap<String, u64>,
    pub exit: String,
    pub links_after: String,
    /// Records the agent left in the spool at exit (delivered at its next start).
    pub left_in_spool: u64,
}

fn main() {
    let args = Args::parse();
    require_root();
    let bin = flowlog_bin();
    let outcome = soak(&args, &bin);
    fs::create_dir_all(&args.out)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", args.out.display()));
    let problems = report::write(&args.out, &outcome);
    println!("soak: report in {}", args.out.join("SOAK.md").display());
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("soak: {p}");
        }
        std::process::exit(1);
    }
}

fn soak(args: &Args, bin: &Path) -> Soak {
    let ns = Namespaces::new(Setup::new(90).ipv4_only().prefix(PREFIX));
    let (a, b) = (&ns.a, &ns.b);
    // Static neighbours: no ARP, so every packet on the interface is the soak's IPv4.
    neighbour(a, b);
    neighbour(b, a);
    let moto = Moto::start(Some(&a.netns));
    moto.with_clients(async |c| c.create_bucket(BUCKET).await);
    let proxy = FaultProxy::start(Some(&a.netns), moto.port());
    let dir = tempfile::Builder::new()
        .prefix("flowlog-soak-")
        .tempdir()
        .expect("temp dir");
    let log_path = dir.path().join("agent.log");
    let mut child = Some(start_agent(bin, a, dir.path(), &proxy.endpoint()));
    wait_for_log_line(
        &mut child,
        &log_path,
        0,
        "capturing",
        Duration::from_secs(60),
    );
    let pid = child.as_ref().expect("agent").id();
    let wire_before = load::iface_packets(&a.netns, &a.iface);
    let metrics_path = dir.path().join("flowlog.prom");

    let stop_traffic = AtomicBool::new(false);
    let stop_faults = AtomicBool::new(false);
    let stop_watch = AtomicBool::new(false);
    let (churn_sent, churn_received) = (AtomicU64::new(0), AtomicU64::new(0));
    let (steady_sent, steady_received) = (AtomicU64::new(0), AtomicU64::new(0));
    let iface_cycles = AtomicU64::new(0);
    let samples = Mutex::new(Vec::<Sample>::new());
    let proxy_outcomes = Mutex::new(BTreeMap::<String, u64>::new());
    let tally = Mutex::new(Tally::default());
    let episodes = Mutex::new(Vec::<String>::new());
    let run_for = Duration::from_secs(args.minutes * 60);
    let steady_to = SocketAddr::new(IpAddr::V4(b.v4), load::STEADY_PORT);
    let started = Instant::now();
    let receivers_bound = AtomicU64::new(0);
    let run_secs = std::thread::scope(|s| {
        for port in load::CHURN_PORTS {
            let at = SocketAddr::new(IpAddr::V4(a.v4), port);
            let (stop, received, bound) = (&stop_traffic, &churn_received, &receivers_bound);
            s.spawn(move || load::receive(&a.netns, at, stop, received, bound));
        }
        s.spawn(|| {
            load::receive(
                &b.netns,
                steady_to,
                &stop_traffic,
                &steady_received,
                &receivers_bound,
            )
        });
        // Receivers first: a datagram to a closed port would be answered with ICMP.
        let deadline = Instant::now() + Duration::from_secs(10);
        while receivers_bound.load(Ordering::SeqCst) < load::CHURN_PORTS.len() as u64 + 1 {
            assert!(Instant::now() < deadline, "the receivers did not bind");
            std::thread::sleep(Duration::from_millis(5));
        }
        s.spawn(|| load::steady(&a.netns, steady_to, &stop_traffic, &steady_sent));
        s.spawn(|| {
            load::churn(
                &b.netns,
                b.v4,
                a.v4,
                args.flows_per_second,
                &stop_traffic,
                &churn_sent,
            )
        });
        s.spawn(|| {
            load::interface_churn(
                &a.netns,
                PREFIX,
                Duration::from_secs(2),
                &stop_traffic,
                &iface_cycles,
            )
        });
        s.spawn(|| flap(&proxy, &stop_faults, &episodes));
        s.spawn(|| {
            while !stop_watch.load(Ordering::Relaxed) {
                let t = started.elapsed().as_secs_f64();
                if let Some(sample) = sample_process(pid, t, &metrics_path) {
                    samples.lock().expect("samples").push(sample);
                }
                tally_exchanges(&proxy, &proxy_outcomes);
                sleep_unless_stopped(SAMPLE_EVERY, &stop_watch);
            }
        });
        s.spawn(|| {
            while !stop_watch.load(Ordering::Relaxed) {
                let mut t = tally.lock().expect("tally").clone();
                t.poll(&moto, BUCKET, &a.iface);
                *tally.lock().expect("tally") = t;
                sleep_unless_stopped(Duration::from_secs(10), &stop_watch);
            }
        });
        // The destination is healthy for the last 30 s, so the spool drains before the stop.
        std::thread::sleep(run_for.saturating_sub(Duration::from_secs(30)));
        stop_faults.store(true, Ordering::Relaxed);
        std::thread::sleep(run_for.saturating_sub(started.elapsed()));
        stop_traffic.store(true, Ordering::Relaxed);
        // What was sent is on the interface now (veth delivers synchronously); the stop below
        // flushes the open window.
        stop_watch.store(true, Ordering::Relaxed);
        started.elapsed().as_secs_f64()
    });
    tally_exchanges(&proxy, &proxy_outcomes);
    let wire_packets = load::iface_packets(&a.netns, &a.iface) - wire_before;
    let links_after = links_after_churn(pid, &a.netns, &a.iface);
    let status = sigterm_and_wait(
        child.take().expect("agent"),
        &log_path,
        Duration::from_secs(60),
    );
    let exit = if status.success() {
        "0".to_string()
    } else {
        format!("{status}")
    };
    let metrics = read_metrics(&dir.path().join("flowlog.prom"));
    let spooled = metrics
        .get("flowlog_flow_log_records_total")
        .copied()
        .unwrap_or(0.0) as u64;
    // Everything spooled must reach moto; what the stop delivered is still to be read.
    let mut tally = tally.into_inner().expect("tally");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tally.poll(&moto, BUCKET, &a.iface);
        if tally.records + left_in_spool(&log_of(&log_path)) >= spooled
            || Instant::now() >= deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = log_of(&log_path);
    let samples = samples.into_inner().expect("samples");
    let warmup_secs = (run_secs / 6.0).max(60.0).min(run_secs / 2.0);
    Soak {
        minutes: args.minutes,
        offered_rate: args.flows_per_second,
        run_secs,
        churn_sent: churn_sent.into_inner(),
        churn_received: churn_received.into_inner(),
        steady_sent: steady_sent.into_inner(),
        steady_received: steady_received.into_inner(),
        iface_cycles: iface_cycles.into_inner(),
        episodes: episodes.into_inner().expect("episodes"),
        samples,
        warmup_secs,
        lateness: lateness_of(&log),
        wire_packets,
        tally,
        metrics,
        proxy: proxy_outcomes.into_inner().expect("outcomes"),
        exit,
        links_after,
        left_in_spool: left_in_spool(&log),
    }
}

/// A permanent neighbour entry on `from`'s interface for `to`'s address.
fn neighbour(from: &Side, to: &Side) {
    let mac = to
        .mac()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    run(in_netns(&from.netns, "ip").args([
        "neigh",
        "replace",
        &to.v4.to_string(),
        "lladdr",
        &mac,
        "dev",
        &from.iface,
        "nud",
        "permanent",
    ]));
}

/// `flowlog run` on `a`'s interface and the churned veths, 1 s windows, one S3 object per
/// window, publishing through the proxy; JSON logs with each closed window's lateness.
fn start_agent(bin: &Path, a: &Side, dir: &Path, endpoint: &str) -> Child {
    let path = |name: &str| dir.join(name).display().to_string();
    let log = fs::File::create(dir.join("agent.log")).expect("agent log");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &a.netns])
        .arg(bin)
        .args([
            "run",
            "--iface",
            &a.iface,
            "--iface",
            &format!("{PREFIX}c*"),
        ])
        .args([
            "--aggregation-interval",
            "1",
            "--file-rollover-seconds",
            "1",
            "--flow-log-id",
            FLOW_LOG_ID,
            "--account-id",
            "123456789012",
            "--region",
            moto::REGION,
            "--no-imds",
            "--destination",
            &format!("s3://{BUCKET}/soak"),
            "--endpoint-url",
            endpoint,
            "--spool-dir",
            &path("spool"),
            "--metrics-file",
            &path("flowlog.prom"),
            "--control-socket",
            &path("control.sock"),
            "--state-dir",
            &path("state"),
            "--runtime-dir",
            &path("run"),
            "--log-output",
            "json",
        ])
        .env("RUST_LOG", "info,flowlog_agent::flowlogs::pipeline=debug")
        .envs(moto::agent_env())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log fd"))
        .stderr(log);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// The destination's faults, one episode every 30 s in turn, until `stop`.
fn flap(proxy: &FaultProxy, stop: &AtomicBool, episodes: &Mutex<Vec<String>>) {
    let put = Matcher::s3_put_object(BUCKET);
    let script: [(&str, Fault, Times, Duration); 4] = [
        (
            "503 SlowDown for 10 s",
            Fault::s3_error(503, "SlowDown", "Please reduce your request rate."),
            Times::UntilRecovered,
            Duration::from_secs(10),
        ),
        (
            "2 PutObjects stored but their answers dropped",
            Fault::DropResponse,
            Times::Count(2),
            Duration::from_secs(10),
        ),
        (
            "3 PutObjects reset mid-request",
            Fault::ResetMidRequest,
            Times::Count(3),
            Duration::from_secs(10),
        ),
        (
            "500 InternalError for 5 s",
            Fault::s3_error(500, "InternalError", "We encountered an internal error."),
            Times::UntilRecovered,
            Duration::from_secs(5),
        ),
    ];
    let mut i = 0;
    sleep_unless_stopped(Duration::from_secs(20), stop);
    while !stop.load(Ordering::Relaxed) {
        let (what, fault, times, lasts) = &script[i % script.len()];
        proxy.inject(put.clone(), fault.clone(), *times);
        episodes.lock().expect("episodes").push(what.to_string());
        sleep_unless_stopped(*lasts, stop);
        proxy.recover();
        sleep_unless_stopped(Duration::from_secs(30) - *lasts, stop);
        i += 1;
    }
    proxy.recover();
}

/// Counts what the proxy did, by outcome, and forgets the requests.
fn tally_exchanges(proxy: &FaultProxy, into: &Mutex<BTreeMap<String, u64>>) {
    let taken = proxy.take_exchanges();
    let mut map = into.lock().expect("outcomes");
    for e in taken {
        let what = match &e.outcome {
            Outcome::Forwarded(code) => format!("{} passed on, moto answered {code}", e.method),
            Outcome::Faulted(Fault::Respond { status, .. }, _) => {
                format!("{} answered {status} by the proxy", e.method)
            }
            Outcome::Faulted(Fault::DropResponse, moto) => {
                format!("{} stored (moto {moto:?}), answer dropped", e.method)
            }
            Outcome::Faulted(Fault::ResetMidRequest, _) => {
                format!("{} reset mid-request", e.method)
            }
            Outcome::Faulted(Fault::Stall(_), _) => format!("{} stalled", e.method),
            Outcome::UpstreamFailed(_) => format!("{} moto unreachable", e.method),
        };
        *map.entry(what).or_default() += 1;
    }
}

/// RSS and open fds of `pid` now, and the series in its metrics file (`None` once it is gone).
fn sample_process(pid: u32, secs: f64, metrics: &Path) -> Option<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let series = fs::read_to_string(metrics)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count() as u64;
    Some(Sample {
        secs,
        rss_kib,
        fds,
        series,
    })
}

fn log_of(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Records the agent said it left in the spool at exit.
fn left_in_spool(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("not delivered before exit"))
        })
        .filter_map(|v| v["records"].as_u64())
        .sum()
}

/// Each closed window's lateness, from the agent's JSON log lines.
fn lateness_of(log: &str) -> Vec<Lateness> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "flow log window closed")
        .filter_map(|v| {
            Some(Lateness {
                end: v["end"].as_u64()?,
                seconds: v["lateness_seconds"].as_f64()?,
            })
        })
        .collect()
}

/// The metrics file: every series summed by metric name.
fn read_metrics(path: &Path) -> BTreeMap<String, f64> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series).to_string();
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name).or_default() += v;
        }
    }
    out
}

/// After the interface churn stopped: the agent's TCX links must be exactly the watched
/// interface's two (none left on a deleted veth). Polls up to 10 s; returns what it found.
fn links_after_churn(pid: u32, netns: &str, iface: &str) -> String {
    let ifindex = flowlog_tests::netns::ifindex(netns, iface).expect("ifindex");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mine: Vec<u32> = tcx_links::of(pid).into_iter().map(|(i, _)| i).collect();
        if mine.len() == 2 && mine.iter().all(|i| *i == ifindex) {
            return format!("2 TCX links, both on {iface} (ifindex {ifindex})");
        }
        if Instant::now() >= deadline {
            return format!("PROBLEM: TCX links on ifindexes {mine:?}, expected two on {ifindex}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
