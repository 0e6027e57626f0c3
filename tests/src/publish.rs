//! For the publish tests: the agent with any destination (and the AWS environment moto
//! needs), stopped with SIGTERM or killed with SIGKILL; and the records inside S3 objects and
//! CloudWatch events, parsed with the same reader as the file destination's.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use flate2::read::MultiGzDecoder;

use crate::{
    agent::flowlog_bin,
    netns::Side,
    records::{DEFAULT_HEADER, Record, parse_line},
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
        let dir = tempfile::Builder::new().prefix("flit-publish-").tempdir().expect("temp dir");
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
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("agent log");
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
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")));
        self.wait_for_log_after(before, "capturing", Duration::from_secs(30));
    }

    /// A directory that lives as long as this guard (output, spool).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log if the agent exits or time
    /// runs out first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        self.wait_for_log_after(0, needle, timeout)
    }

    fn wait_for_log_after(&mut self, offset: usize, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().get(offset..).is_some_and(|l| l.contains(needle)) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("flowlog exited ({status}) before logging {needle:?}; its log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "flowlog did not log {needle:?} within {timeout:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How often the log contains `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// SIGTERM and wait (the agent flushes its window and drains the spool for a bounded time).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent not running");
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait for flowlog") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("flowlog did not exit within 60 s of SIGTERM; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
    MultiGzDecoder::new(body).read_to_string(&mut text).unwrap_or_else(|e| panic!("{key} is not gzip text: {e}"));
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

/// Every `*.log.gz` under `dir` as key (path relative to `dir`) → body.
pub fn file_objects(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    crate::records::files(dir)
        .into_iter()
        .map(|p| {
            let key = p.strip_prefix(dir).expect("under dir").to_string_lossy().into_owned();
            let body = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (key, body)
        })
        .collect()
}
