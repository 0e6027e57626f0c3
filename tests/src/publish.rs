//! For the publish tests: the agent with any destination (and the AWS environment moto
//! needs), stopped with SIGTERM or killed with SIGKILL; and the records inside S3 objects and
//! CloudWatch events, parsed with the same reader as the file destination's.

use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use flate2::read::MultiGzDecoder;

use crate::{
    agent::{flowlog_bin, read_log, sigterm_and_wait, wait_for_log_line, wait_for_window_start},
    netns::{Family, Side},
    records::{DEFAULT_HEADER, Record, Tuple, parse_line},
    traffic::{UdpPlan, udp_send},
};

/// `flowlog run` on one side's interface with the given options, in the AWS environment of
/// [`crate::moto::agent_env`]. Killed on drop.
pub struct AgentProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts the agent and waits until it logs that it is capturing. `args` follow
    /// `run --iface <side's veth>`.
    pub fn start(side: &Side, args: &[String]) -> AgentProcess {
        let dir = tempfile::Builder::new()
            .prefix("flit-publish-")
            .tempdir()
            .expect("temp dir");
        let mut agent = AgentProcess { child: None, dir };
        agent.spawn(side, args);
        agent
    }

    /// Starts it again (after [`AgentProcess::kill`] or [`AgentProcess::stop`]) with `args`,
    /// appending to the same log.
    pub fn spawn(&mut self, side: &Side, args: &[String]) {
        assert!(self.child.is_none(), "agent still running");
        let log_path = self.dir.path().join("agent.log");
        let before = self.log().len();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("agent log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &side.netns])
            .arg(flowlog_bin())
            .args(["run", "--iface", &side.iface])
            .args(args)
            .env("RUST_LOG", "info")
            // Plain log lines: the tests read fields out of them.
            .env("NO_COLOR", "1")
            .envs(crate::moto::agent_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        // `ip netns exec` execs the agent in place, so the child's pid is the agent's.
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
        );
        self.wait_for_log_after(before, "capturing", Duration::from_secs(30));
    }

    /// Process id of the agent (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent not running").id()
    }

    /// A directory that lives as long as this guard (output, spool).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        read_log(&self.path("agent.log"))
    }

    /// Waits until the log contains `needle`; panics with the log if the agent exits or time
    /// runs out first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        self.wait_for_log_after(0, needle, timeout)
    }

    fn wait_for_log_after(&mut self, offset: usize, needle: &str, timeout: Duration) {
        let log_path = self.path("agent.log");
        wait_for_log_line(&mut self.child, &log_path, offset, needle, timeout);
    }

    /// How often the log contains `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// SIGTERM and wait (the agent flushes its window and drains the spool for a bounded time).
    pub fn stop(&mut self) -> ExitStatus {
        let child = self.child.take().expect("agent not running");
        sigterm_and_wait(child, &self.path("agent.log"), Duration::from_secs(60))
    }

    /// SIGKILL: a crash. Nothing is flushed.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("agent not running");
        child.kill().expect("SIGKILL flowlog");
        let _ = child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The records of one gzip text object (default header checked).
pub fn object_records(key: &str, body: &[u8]) -> Vec<Record> {
    let mut text = String::new();
    MultiGzDecoder::new(body)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{key} is not gzip text: {e}"));
    let mut lines = text.split_terminator('\n');
    assert_eq!(lines.next(), Some(DEFAULT_HEADER), "header of {key}");
    let names: Vec<&str> = DEFAULT_HEADER.split(' ').collect();
    lines.map(|l| parse_line(l, &names)).collect()
}

/// A CloudWatch event's record (the message is one record line).
pub fn event_record(message: &str) -> Record {
    let names: Vec<&str> = DEFAULT_HEADER.split(' ').collect();
    parse_line(message, &names)
}

/// The records of every object of `objects` (key → gzip text body).
pub fn records_of_objects(objects: &BTreeMap<String, Vec<u8>>) -> Vec<Record> {
    objects
        .iter()
        .flat_map(|(k, body)| object_records(k, body))
        .collect()
}

/// Every `*.log.gz` under `dir` as key (path relative to `dir`) → body.
pub fn file_objects(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::records::files(dir)
        .into_iter()
        .map(|p| {
            let key = p
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            let body = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (key, body)
        })
        .collect()
}

/// One window's traffic: `flows` UDP flows from `a` to `b`'s IPv4 address, port `dst_port`,
/// `per_flow` datagrams of `payload` bytes each. Returns the tuples sent and, per tuple,
/// (packets, bytes).
pub fn send_udp_flows(
    a: &Side,
    b: &Side,
    dst_port: u16,
    flows: usize,
    per_flow: usize,
    payload: usize,
) -> BTreeMap<Tuple, (u64, u64)> {
    const UDP: u8 = 17;
    let to = SocketAddr::new(b.addr(Family::V4), dst_port);
    let plan = UdpPlan {
        flows,
        per_flow,
        payload,
        gap: Duration::ZERO,
    };
    udp_send(&a.netns, &b.netns, to, plan)
        .into_iter()
        .map(|src_port| {
            let t = Tuple {
                src: a.addr(Family::V4),
                dst: to.ip(),
                src_port,
                dst_port,
                protocol: UDP,
            };
            (t, (per_flow as u64, (per_flow * (payload + 28)) as u64))
        })
        .collect()
}

/// One [`send_udp_flows`] per window of `interval` seconds, each 300 ms after the window's
/// start: `windows` lists them as (dst_port, flows, per_flow, payload). Returns the first
/// window's start and every tuple sent with its (packets, bytes).
pub fn send_in_consecutive_windows(
    a: &Side,
    b: &Side,
    interval: u64,
    windows: &[(u16, usize, usize, usize)],
) -> (u64, BTreeMap<Tuple, (u64, u64)>) {
    let mut first = None;
    let mut sent = BTreeMap::new();
    for &(dst_port, flows, per_flow, payload) in windows {
        let start = wait_for_window_start(interval, Duration::from_millis(300));
        first.get_or_insert(start);
        sent.extend(send_udp_flows(a, b, dst_port, flows, per_flow, payload));
    }
    (first.expect("at least one window"), sent)
}

/// The records' lines, sorted.
pub fn sorted_lines(records: &[&Record]) -> Vec<String> {
    let mut l: Vec<String> = records.iter().map(|r| r.line.clone()).collect();
    l.sort();
    l
}

/// (packets, bytes) per tuple, summed over `records` (OK records only).
pub fn summed_per_tuple(records: &[&Record]) -> BTreeMap<Tuple, (u64, u64)> {
    let mut sums: BTreeMap<Tuple, (u64, u64)> = BTreeMap::new();
    for r in records {
        let e = sums.entry(r.tuple.unwrap()).or_default();
        e.0 += r.packets.unwrap();
        e.1 += r.bytes.unwrap();
    }
    sums
}

/// How many batches (`*.batch` files) the spool directory `spool` holds.
pub fn spooled_batches(spool: &Path) -> usize {
    fs::read_dir(spool)
        .expect("spool dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".batch"))
        })
        .count()
}
