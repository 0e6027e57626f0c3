//! Two agents and one default spool directory (`/var/lib/flowlog/spool/<flow-log-id>-<hash of
//! the destination>`: the same for every agent writing to the same destination on this host).
//! Root only; real agents on a veth pair in namespaces prefixed `flsp`, pinged through.

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::flowlog_bin,
    netns::{Namespaces, Setup, Side},
    publish::AgentProcess,
    records::{Record, dump, read_default},
    traffic::ping,
};

/// Bytes of one IPv4 echo request or reply with ping's default 56 data bytes.
const PING_BYTES: u64 = 84;

/// The agent's options: everything default but the destination (so the spool is the default
/// one) and a one-second window.
fn args(out: &Path) -> Vec<String> {
    ["--no-imds", "--aggregation-interval", "1", "--destination"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("file:{}", out.display())])
        .collect()
}

/// The default spool directory an agent logged at startup; removed on drop if it is still
/// there (a failed test), so nothing is left under /var/lib/flowlog.
struct DefaultSpool(PathBuf);

impl DefaultSpool {
    fn of(agent: &AgentProcess) -> Self {
        let log = agent.log();
        let line = log
            .lines()
            .find(|l| l.contains(" capturing "))
            .unwrap_or_else(|| panic!("log:\n{log}"));
        let dir = line
            .split(' ')
            .find_map(|f| f.strip_prefix("spool="))
            .unwrap_or_else(|| panic!("{line}"));
        assert!(
            dir.starts_with("/var/lib/flowlog/spool/"),
            "not the default spool: {line}"
        );
        DefaultSpool(PathBuf::from(dir))
    }
}

impl Drop for DefaultSpool {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// ICMP packets and bytes per (source, destination) in `records`; panics on any other OK
/// record (with IPv6 off, the pings are the only IP traffic on the veth).
fn icmp_totals(records: &[Record]) -> BTreeMap<(IpAddr, IpAddr), (u64, u64)> {
    let mut sums = BTreeMap::new();
    for r in records {
        let Some(t) = r.tuple else { continue };
        assert_eq!(t.protocol, 1, "only pings were sent:\n{}", dump(records));
        let e: &mut (u64, u64) = sums.entry((t.src, t.dst)).or_default();
        e.0 += r.packets.unwrap();
        e.1 += r.bytes.unwrap();
    }
    sums
}

/// `count` pings each way between `a` and `b`, as [`icmp_totals`] reports them.
fn pings(a: &Side, b: &Side, count: u64) -> BTreeMap<(IpAddr, IpAddr), (u64, u64)> {
    let (a, b) = (IpAddr::V4(a.v4), IpAddr::V4(b.v4));
    [
        ((a, b), (count, count * PING_BYTES)),
        ((b, a), (count, count * PING_BYTES)),
    ]
    .into()
}

/// Waits for `child` to exit, killing it and panicking after `timeout`.
fn wait_with_timeout(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A second agent for the destination of a running one (so for its spool) stops at once with
/// one line that names the spool and the running agent's pid, before attaching anything; the
/// running agent is unaffected and writes exactly the traffic.
#[test]
fn a_second_agent_on_the_same_spool_fails_fast_naming_the_first() {
    let ns = Namespaces::new(Setup::new(158).ipv4_only().prefix("flsp"));
    let (a, b) = (&ns.a, &ns.b);
    let dir = tempfile::Builder::new()
        .prefix("flsp-")
        .tempdir()
        .expect("temp dir");
    let out = dir.path().join("out");
    let mut first = AgentProcess::start(a, &args(&out));
    let spool = DefaultSpool::of(&first);

    let started = Instant::now();
    let mut second = Command::new("ip")
        .args(["netns", "exec", &a.netns])
        .arg(flowlog_bin())
        .args(["run", "--iface", &a.iface])
        .args(args(&out))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second agent");
    let status = wait_with_timeout(&mut second, Duration::from_secs(30), "the second agent");
    let output = second.wait_with_output().expect("second agent's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        status.code(),
        Some(1),
        "second agent: {status}; stderr:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [format!(
            "flowlog: error: spool directory {} is in use by flowlog agent pid {}: stop that agent first, \
             or give each agent its own --spool-dir",
            spool.0.display(),
            first.pid()
        )],
        "second agent's stderr"
    );

    ping(&a.netns, IpAddr::V4(b.v4), 5, 56);
    let status = first.stop();
    assert!(
        status.success(),
        "first agent: {status}; log:\n{}",
        first.log()
    );
    let records = read_default(&out);
    assert_eq!(
        icmp_totals(&records),
        pings(a, b, 5),
        "records:\n{}",
        dump(&records)
    );
    assert!(
        !spool.0.exists(),
        "the empty default spool is removed at exit"
    );
}

/// `flowlog run` under strace, whose only effect is that the agent's flock(2) calls (the spool
/// lock, nothing else) start `FLOCK_DELAY` late. Killed on drop.
struct SlowLocker {
    strace: Option<Child>,
    agent: u32,
    log: PathBuf,
}

/// How long the second agent's flock(2) is held back: the first agent must exit within it.
const FLOCK_DELAY: Duration = Duration::from_secs(4);

impl SlowLocker {
    fn start(side: &Side, args: &[String], log: PathBuf) -> Self {
        let strace = ["/usr/bin/strace", "/bin/strace"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        let strace =
            strace.unwrap_or_else(|| panic!("this test needs strace (apt-get install strace)"));
        let file = fs::File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &side.netns,
                strace,
                "-f",
                "-qq",
                "--seccomp-bpf",
                "-o",
                "/dev/null",
            ])
            .args(["-e", "trace=flock"])
            .arg(format!(
                "--inject=flock:delay_enter={}",
                FLOCK_DELAY.as_micros()
            ))
            .arg(flowlog_bin())
            .args(["run", "--iface", &side.iface])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log fd"))
            .stderr(file)
            .spawn()
            .expect("start strace");
        // `ip netns exec` execs strace in place; the agent is strace's child running flowlog
        // (strace --seccomp-bpf first forks a short-lived child of its own to probe seccomp).
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let bin = flowlog_bin();
        let mut locker = SlowLocker {
            strace: Some(child),
            agent: 0,
            log,
        };
        locker.agent = locker.poll("strace to start the agent", || {
            fs::read_to_string(&children)
                .ok()?
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .find(|p| fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == bin))
        });
        locker
    }

    /// Polls `found` every 10 ms for 30 s; panics with the log if the agent exits first.
    fn poll<T>(&mut self, what: &str, mut found: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = found() {
                return v;
            }
            if let Some(status) = self
                .strace
                .as_mut()
                .and_then(|c| c.try_wait().expect("wait"))
            {
                panic!(
                    "agent exited ({status}) while waiting for {what}; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the agent has `path` open.
    fn wait_until_open(&mut self, path: &Path) {
        let fds = PathBuf::from(format!("/proc/{}/fd", self.agent));
        self.poll(&format!("{} open", path.display()), || {
            fs::read_dir(&fds)
                .ok()?
                .flatten()
                .any(|e| fs::read_link(e.path()).is_ok_and(|l| l == path))
                .then_some(())
        });
    }

    fn wait_for_log(&mut self, needle: &str) {
        let log = self.log.clone();
        self.poll(&format!("{needle:?} in the log"), || {
            fs::read_to_string(&log)
                .ok()?
                .contains(needle)
                .then_some(())
        });
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the agent; strace exits with the agent's status.
    fn stop(&mut self) -> ExitStatus {
        // SAFETY: signalling our child's child by pid; it is alive until strace reaps it.
        unsafe { libc::kill(self.agent as libc::pid_t, libc::SIGTERM) };
        let mut strace = self.strace.take().expect("running");
        wait_with_timeout(
            &mut strace,
            Duration::from_secs(60),
            "the agent under strace",
        )
    }
}

impl Drop for SlowLocker {
    fn drop(&mut self) {
        if let Some(mut child) = self.strace.take() {
            // SAFETY: as in stop.
            unsafe { libc::kill(self.agent as libc::pid_t, libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A restart that overlaps: the next agent opens the spool's lock file while the previous one
/// is exiting, which deletes that file and the empty directory, and takes the lock only once
/// the previous one is gone (strace holds its flock back to make this interleaving certain).
/// The new agent must notice that it locked a deleted file, take the spool properly and run:
/// both agents' traffic is written, exactly.
#[test]
fn an_agent_starting_while_the_previous_one_exits_takes_the_spool() {
    let ns = Namespaces::new(Setup::new(159).ipv4_only().prefix("flsp"));
    let (a, b) = (&ns.a, &ns.b);
    let dir = tempfile::Builder::new()
        .prefix("flsp-")
        .tempdir()
        .expect("temp dir");
    let out = dir.path().join("out");
    let mut previous = AgentProcess::start(a, &args(&out));
    let spool = DefaultSpool::of(&previous);
    ping(&a.netns, IpAddr::V4(b.v4), 5, 56);

    let mut next = SlowLocker::start(a, &args(&out), dir.path().join("next.log"));
    next.wait_until_open(&spool.0.join(".lock"));
    let opened = Instant::now();
    let status = previous.stop();
    assert!(
        status.success(),
        "previous agent: {status}; log:\n{}",
        previous.log()
    );
    assert!(
        opened.elapsed() < FLOCK_DELAY - Duration::from_millis(500),
        "the previous agent took {:?} to exit: too slow for the {FLOCK_DELAY:?} this test holds the next one's lock back",
        opened.elapsed()
    );
    assert!(
        !spool.0.exists(),
        "the previous agent removed its empty spool at exit"
    );

    next.wait_for_log("capturing");
    ping(&a.netns, IpAddr::V4(b.v4), 3, 56);
    let status = next.stop();
    let log = next.log();
    assert!(status.success(), "next agent: {status}; log:\n{log}");
    assert!(
        !log.contains("ERROR") && !log.contains("WARN"),
        "log:\n{log}"
    );
    let records = read_default(&out);
    assert_eq!(
        icmp_totals(&records),
        pings(a, b, 5 + 3),
        "records:\n{}",
        dump(&records)
    );
    assert!(
        !spool.0.exists(),
        "the next agent removed its empty spool at exit"
    );
}

/// A batch that cannot be written to the spool is lost, and the run must say so: the spool
/// directory removed under a running agent makes the final batch unspoolable, and the agent
/// ends with exit code 1 and an error naming the lost records, not a clean exit.
#[test]
fn records_that_cannot_be_spooled_fail_the_run() {
    let ns = Namespaces::new(Setup::new(159).ipv4_only().prefix("flsp"));
    let a = &ns.a;
    let dir = tempfile::Builder::new()
        .prefix("flsp-")
        .tempdir()
        .expect("temp dir");
    let out = dir.path().join("out");
    let spool = dir.path().join("spool");
    let mut agent_args = args(&out);
    agent_args.extend(["--spool-dir".to_string(), spool.display().to_string()]);
    let mut agent = AgentProcess::start(a, &agent_args);
    // No traffic is needed: the batch written at shutdown holds the NODATA records.
    fs::remove_dir_all(&spool).expect("remove the spool directory");
    // A file in its place: the spool cannot recreate its directory.
    fs::write(&spool, b"not a directory").expect("block the spool path");
    let status = agent.stop();
    let log = agent.log();
    assert_eq!(status.code(), Some(1), "agent: {status}; log:\n{log}");
    assert!(
        log.lines().any(|l| l.starts_with("flowlog: error: ")
            && l.contains(
                "records were lost because their batches could not be written to the spool"
            )),
        "log:\n{log}"
    );
}
