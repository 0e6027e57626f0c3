//! The real `flowlog` binary as a child process: started inside a test namespace, stopped with
//! SIGTERM (which flushes the partial window), killed on drop if a test panics first.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Side;

/// Path of the binary under test, from `FLOWLOG_BIN`. Panics (never skips) when unset.
pub fn flowlog_bin() -> PathBuf {
    let Some(path) = std::env::var_os("FLOWLOG_BIN") else {
        panic!(
            "FLOWLOG_BIN is not set: build the agent and point FLOWLOG_BIN at it, e.g. \
             `FLOWLOG_BIN=$PWD/target/debug/flowlog cargo test -p flowlog-tests` (or `cargo xtask test`)"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "FLOWLOG_BIN={} is not a file",
        path.display()
    );
    path
}

/// These tests create namespaces and load eBPF programs: they need root. Panics (never skips)
/// otherwise.
pub fn require_root() {
    // SAFETY: plain syscall without arguments.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root (they create network namespaces and load eBPF): run them with sudo"
    );
}

/// A bpffs instance the agents of the tests pin into, at a path `ip netns exec` keeps (it
/// mounts a fresh sysfs over /sys, hiding /sys/fs/bpf). Mounted once per boot.
pub const TEST_BPFFS: &str = "/run/flowlog-tests/bpffs";

/// A pin directory of its own for one agent (`--pin-dir`): removed, with whatever is pinned in
/// it (detaching the agent's links), when dropped.
pub fn test_pin_dir() -> tempfile::TempDir {
    static MOUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let root = Path::new(TEST_BPFFS);
    {
        let _guard = MOUNT.lock().unwrap_or_else(|p| p.into_inner());
        fs::create_dir_all(root).expect("create the test bpffs mount point");
        if !is_bpffs(root) {
            let out = Command::new("mount")
                .args(["-t", "bpf", "flowlog-tests"])
                .arg(root)
                .output()
                .expect("mount");
            assert!(
                out.status.success(),
                "cannot mount bpffs at {TEST_BPFFS}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    tempfile::Builder::new()
        .prefix("pins-")
        .tempdir_in(root)
        .expect("pin dir in the test bpffs")
}

/// Whether `path` is on a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statfs into a zeroed struct with a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) }) == 0 && st.f_type as u64 == 0xcafe_4a11
}

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub aggregation_interval: u64,
    /// `--file-rollover-seconds`: 1 makes every window's records land in files right after the
    /// window closes, so a test can read them while the agent runs.
    pub file_rollover_seconds: u64,
    pub extra_args: Vec<String>,
    /// `--iface <the side's interface>`; off: the agent's default selection (every interface
    /// that is up).
    pub name_interface: bool,
}

impl AgentOptions {
    pub fn interval(seconds: u64) -> Self {
        AgentOptions {
            aggregation_interval: seconds,
            file_rollover_seconds: 1,
            extra_args: Vec::new(),
            name_interface: true,
        }
    }

    /// No `--iface`: the agent watches every interface that is up.
    pub fn every_interface_up(mut self) -> Self {
        self.name_interface = false;
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }
}

/// A running `flowlog run` attached to one side's interface.
pub struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Its `--pin-dir`: dropped after the child is killed, detaching its programs.
    _pins: tempfile::TempDir,
    pub iface: String,
    pub interval: u64,
}

impl Agent {
    /// Starts `flowlog run` in `side`'s namespace on `side`'s interface and waits until it
    /// logs that it is capturing.
    pub fn start(side: &Side, opts: AgentOptions) -> Self {
        let bin = flowlog_bin();
        let dir = tempfile::Builder::new()
            .prefix("flit-agent-")
            .tempdir()
            .expect("temp dir");
        let log = fs::File::create(dir.path().join("agent.log")).expect("agent log file");
        let pins = test_pin_dir();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &side.netns])
            .arg(&bin)
            .arg("run")
            .args(
                Some(["--iface", side.iface.as_str()])
                    .filter(|_| opts.name_interface)
                    .into_iter()
                    .flatten(),
            )
            .arg("--aggregation-interval")
            .arg(opts.aggregation_interval.to_string())
            .arg("--file-rollover-seconds")
            .arg(opts.file_rollover_seconds.to_string())
            .arg("--destination")
            .arg(format!("file:{}", dir.path().join("out").display()))
            // Keep the spool with the test, not under /var/lib/flowlog.
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            // Its own pinned state: tests run agents side by side (unless it pins nothing).
            .args(
                Some([OsStr::new("--pin-dir"), pins.path().as_os_str()])
                    .filter(|_| !opts.extra_args.iter().any(|a| a == "--no-pin"))
                    .into_iter()
                    .flatten(),
            )
            .args(&opts.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        // `ip netns exec` execs the program in place (no fork), so the child's pid is the
        // agent's and SIGTERM reaches it directly.
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut agent = Agent {
            child: Some(child),
            dir,
            _pins: pins,
            iface: side.iface.clone(),
            interval: opts.aggregation_interval,
        };
        agent.wait_for_log("capturing", Duration::from_secs(30));
        agent
    }

    /// Process id of the agent (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent stopped").id()
    }

    /// Directory the agent writes records to.
    pub fn output_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Where a test may put files that should live as long as the agent (captures, metrics).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("agent.log"))
    }

    /// Waits until the agent's log contains `needle`; panics with the log if the agent exits
    /// or the deadline passes first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let log_path = self.dir.path().join("agent.log");
        wait_for_log_line(&mut self.child, &log_path, 0, needle, timeout);
    }

    /// SIGTERM, then waits for exit (the agent flushes the partial window and publishes first).
    /// Panics unless it exits with status 0.
    pub fn stop(&mut self) {
        let status = self.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "flowlog exited with {status} after SIGTERM; its log:\n{}",
            self.log()
        );
    }

    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.take().expect("agent already stopped");
        sigterm_and_wait(child, &self.dir.path().join("agent.log"), timeout)
    }
}

/// An agent's log file so far (empty before it exists).
pub fn read_log(log_path: &Path) -> String {
    fs::read_to_string(log_path).unwrap_or_default()
}

/// Waits until the agent `child`'s log at `log_path`, from byte `offset` on, contains `needle`;
/// panics with the log if the agent exits or `timeout` passes first.
pub fn wait_for_log_line(
    child: &mut Option<Child>,
    log_path: &Path,
    offset: usize,
    needle: &str,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if read_log(log_path)
            .get(offset..)
            .is_some_and(|l| l.contains(needle))
        {
            return;
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!(
                "flowlog exited ({status}) before logging {needle:?}; its log:\n{}",
                read_log(log_path)
            );
        }
        assert!(
            Instant::now() < deadline,
            "flowlog did not log {needle:?} within {timeout:?}; its log:\n{}",
            read_log(log_path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to the agent `child`, then waits up to `timeout` for it to exit; if it does not,
/// kills it and panics with its log at `log_path`.
pub fn sigterm_and_wait(mut child: Child, log_path: &Path, timeout: Duration) -> ExitStatus {
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for flowlog") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "flowlog did not exit within {timeout:?} of SIGTERM; its log:\n{}",
                read_log(log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sleeps until `margin` after the next wall-clock multiple of `interval` seconds: the start
/// of a fresh window (the agent cuts windows at those multiples). Returns that window's start.
pub fn wait_for_window_start(interval: u64, margin: Duration) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    let next = (now.as_secs() / interval + 1) * interval;
    let target = Duration::from_secs(next) + margin;
    std::thread::sleep(target - now);
    next
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}
