//! Attach latency: how long after an interface is created the agent counts its first packet.
//!
//! The agent runs in namespace `flbat-h` and watches `flbat*` (a glob that names interfaces
//! before they exist). For each of N veth pairs, the benchmark creates `flbatN` (up, its peer
//! in `flbat-g`) with one `ip link add`, and as soon as that returns sends a crafted IPv4/UDP
//! frame through it every [`SPACING`] from an AF_PACKET socket, each with its own source port
//! (1, 2, 3, ...), for [`SEND_FOR`]. The frames leave through the interface's TC egress hook,
//! where the agent's program counts them once it is attached. At the end the agent flushes,
//! and each interface's records say which was the first source port counted: its send time
//! after `ip link add` returned is the latency (resolution: [`SPACING`] plus the send loop's
//! jitter). The same records check that every frame from the first counted one on was
//! counted, once.
//!
//! The interface is deleted after its frames: what it counted must still be written (the
//! inventory keeps a deleted interface until its window is cut).

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::{
    e2e::{Daemon, TempDir},
    frames, netns,
    rawsend::RawSender,
    records, stats,
};

const NS_HOST: &str = "flbat-h";
const NS_GUEST: &str = "flbat-g";
const PREFIX: &str = "flbat";
/// Time between two frames.
const SPACING: Duration = Duration::from_micros(250);
/// How long frames are sent through each new interface: the largest latency measurable.
const SEND_FOR: Duration = Duration::from_millis(600);

pub struct Config {
    pub interfaces: usize,
}

impl Config {
    pub fn new(quick: bool) -> Self {
        Config {
            interfaces: if quick { 10 } else { 50 },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachLatency {
    /// Interfaces created.
    pub interfaces: usize,
    /// Per interface: ms from `ip link add` returning to the first frame counted (NaN: none
    /// counted within the sending time).
    pub latencies_ms: Vec<f64>,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Time between two frames, ms (the resolution).
    pub spacing_ms: f64,
    /// How long frames were sent through each interface, ms (the largest latency measurable).
    pub send_for_ms: f64,
    /// Frames sent after the first counted one that the records miss (must be 0).
    pub missed_after_attach: u64,
}

/// One interface's frames: the send time of each source port, from `ip link add` returning.
struct Sent {
    ifname: String,
    at: Vec<Duration>,
}

pub fn run(agent: &Path, cfg: &Config) -> anyhow::Result<AttachLatency> {
    let _ns = Namespaces::create()?;
    let tmp = TempDir::new()?;
    let root = tmp.path("attach");
    fs::create_dir_all(&root)?;
    let out = root.join("out");
    let mut cmd = netns::in_netns(NS_HOST, agent);
    // Nothing pinned: the benchmark's namespace and its interfaces go away with it.
    cmd.args([
        "run",
        "--no-pin",
        "--iface",
        &format!("{PREFIX}*"),
        "--no-imds",
    ])
    // Every frame is a new flow (a new source port): 50 veths x 600 ms / 0.25 ms is 120k
    // flows in one window, more than the default map holds (the excess would be SKIPDATA,
    // counted but not in OK records, and read here as missed).
    .args(["--max-flows", "262144"])
    .args([
        "--aggregation-interval",
        "60",
        "--file-rollover-seconds",
        "1",
    ])
    .args([
        "--log-format",
        "${interface-id} ${srcport} ${packets} ${log-status}",
    ])
    .arg("--destination")
    .arg(format!("file:{}", out.display()))
    .arg("--spool-dir")
    .arg(root.join("spool"))
    .arg("--state-dir")
    .arg(root.join("state"))
    .arg("--control-socket")
    .arg(root.join("control.sock"))
    .arg("--runtime-dir")
    .arg(root.join("run"))
    .env("RUST_LOG", "info");
    let daemon = Daemon::start("flowlog", cmd, root.join("flowlog.log"), None, "capturing")?;
    let sent = std::thread::scope(|s| {
        s.spawn(|| send_all(cfg.interfaces))
            .join()
            .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?
    })?;
    daemon.stop()?;
    let counted = first_counted(&out)?;
    let mut latencies = Vec::new();
    let mut missed = 0u64;
    for s in &sent {
        match counted.get(&s.ifname) {
            Some(ports) if !ports.is_empty() => {
                let first = *ports.keys().next().unwrap_or(&1);
                latencies.push(s.at[first as usize - 1].as_secs_f64() * 1e3);
                let expected = s.at.len() as u64 - u64::from(first) + 1;
                let got: u64 = ports.values().sum();
                missed += expected.saturating_sub(got);
                if got > expected {
                    bail!(
                        "{}: {got} frames counted from source port {first} on, {expected} sent",
                        s.ifname
                    );
                }
            }
            _ => latencies.push(f64::NAN),
        }
    }
    let mut sorted: Vec<f64> = latencies.iter().copied().filter(|x| !x.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted
        .get(((sorted.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN);
    let never = latencies.iter().filter(|x| x.is_nan()).count();
    Ok(AttachLatency {
        interfaces: cfg.interfaces,
        median_ms: stats::median(&latencies),
        p99_ms: if never > 0 { f64::INFINITY } else { p99 },
        max_ms: if never > 0 {
            f64::INFINITY
        } else {
            stats::range(&latencies).1
        },
        latencies_ms: latencies,
        spacing_ms: SPACING.as_secs_f64() * 1e3,
        send_for_ms: SEND_FOR.as_secs_f64() * 1e3,
        missed_after_attach: missed,
    })
}

/// Creates each interface, sends its frames, deletes it. Runs on its own thread, which moves
/// into the agent's namespace (the AF_PACKET socket must be opened there).
fn send_all(n: usize) -> anyhow::Result<Vec<Sent>> {
    netns::enter(NS_HOST)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ifname = format!("{PREFIX}{i}");
        let peer = format!("flbag{i}");
        // `up` in the same request: the frames can leave as soon as it returns.
        netns::run(Command::new("ip").args([
            "link", "add", &ifname, "up", "type", "veth", "peer", "name", &peer, "netns", NS_GUEST,
        ]))?;
        let created = Instant::now();
        let at = send_frames(&ifname, created)?;
        netns::run(Command::new("ip").args(["link", "del", &ifname]))?;
        out.push(Sent { ifname, at });
    }
    Ok(out)
}

/// Sends frames with source ports 1, 2, ... every [`SPACING`] for [`SEND_FOR`] through
/// `ifname`; returns each one's send time after `created`.
fn send_frames(ifname: &str, created: Instant) -> anyhow::Result<Vec<Duration>> {
    let sender = RawSender::open(ifname)?;
    let mut at = Vec::new();
    let mut port: u16 = 1;
    let mut next = Instant::now();
    while created.elapsed() < SEND_FOR {
        let frame = frames::ipv4([10, 78, 0, 1].into(), [10, 78, 0, 2].into())
            .udp(port, 9)
            .payload(18)
            .build();
        sender.send(&frame.bytes)?;
        at.push(created.elapsed());
        port = port
            .checked_add(1)
            .context("more frames than source ports")?;
        next += SPACING;
        while Instant::now() < next {
            std::hint::spin_loop();
        }
    }
    Ok(at)
}

/// Per interface id: packets per source port, from every record the agent wrote.
fn first_counted(out: &Path) -> anyhow::Result<BTreeMap<String, BTreeMap<u16, u64>>> {
    let mut map: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
    for line in records::lines(out)? {
        let f: Vec<&str> = line.split(' ').collect();
        if let [id, port, packets, "OK"] = f.as_slice() {
            *map.entry(id.to_string())
                .or_default()
                .entry(port.parse()?)
                .or_default() += packets.parse::<u64>()?;
        }
    }
    Ok(map)
}

/// `flbat-h` and `flbat-g`, removed on drop (with every interface left in them).
struct Namespaces;

impl Namespaces {
    fn create() -> anyhow::Result<Self> {
        for ns in [NS_HOST, NS_GUEST] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let n = Namespaces;
        for ns in [NS_HOST, NS_GUEST] {
            netns::run(Command::new("ip").args(["netns", "add", ns]))?;
            netns::run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        Ok(n)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [NS_HOST, NS_GUEST] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
