//! What an agent says and exports as it starts, before any traffic: plain log lines when stderr
//! is not a terminal, where the metrics are, every counter with a known label set at zero, and
//! when the first file will appear (checked against when it does). Root only; the real agent on
//! a veth pair in namespaces prefixed `flst`.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{flowlog_bin, unix_now, wait_for_window_start},
    netns::{Namespaces, Setup, Side, in_netns},
    traffic::in_ns,
};

/// The agent with stderr to a pipe (not a terminal), read by a thread into `stderr`.
struct PipedAgent {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl PipedAgent {
    fn start(side: &Side, args: &[String]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &side.netns])
            .arg(flowlog_bin())
            .args(["run", "--iface", &side.iface])
            .args(args)
            .env("RUST_LOG", "info")
            // Colour must be off because stderr is a pipe, not because the test asked.
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flowlog");
        let pipe = child.stderr.take().expect("stderr pipe");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        PipedAgent { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The first line containing `needle`, waiting for it up to `timeout`.
    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stderr().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "flowlog exited ({status}) before {needle:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PipedAgent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a log line (up to the next space).
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// GET /metrics from `port` on 127.0.0.1 inside network namespace `netns`.
fn http_get_in_netns(netns: &str, port: u16) -> String {
    in_ns(netns, || {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        conn.read_to_string(&mut text).expect("response");
        text
    })
}

/// Every `*.log.gz` file under `dir`.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".log.gz") {
                files.push(p);
            }
        }
    }
    files
}

/// Window 4 s, files every 20 s, started just after a 20 s slot began: the agent says the first
/// file appears at that slot's end, and it does (not before, and within 3 s after). Meanwhile:
/// no ESC byte on stderr (a pipe), one line naming the metrics URL and file, and right after
/// start both the file and the HTTP endpoint have every per-interface, per-direction counter
/// and every configured REJECT reason's counter at 0, and the spool gauges.
#[test]
fn start_up_lines_zero_counters_and_the_first_file_on_time() {
    const INTERVAL: u64 = 4;
    const ROLLOVER: u64 = 20;
    const PORT: u16 = 9471;
    let ns = Namespaces::new(Setup::new(171).ipv4_only().prefix("flst"));
    let (a, b) = (&ns.a, &ns.b);
    let dir = tempfile::Builder::new()
        .prefix("flst-")
        .tempdir()
        .expect("temp dir");
    let (out, metrics_file) = (dir.path().join("out"), dir.path().join("flowlog.prom"));
    let args: Vec<String> = [
        "--no-imds",
        "--aggregation-interval",
        &INTERVAL.to_string(),
        "--file-rollover-seconds",
        &ROLLOVER.to_string(),
        "--reject-reasons",
        "NETFILTER_DROP,NO_SOCKET",
        "--metrics-addr",
        &format!("127.0.0.1:{PORT}"),
        "--metrics-file",
        &metrics_file.to_string_lossy(),
        "--spool-dir",
        &dir.path().join("spool").to_string_lossy(),
        "--destination",
        &format!("file:{}", out.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let slot = wait_for_window_start(ROLLOVER, Duration::from_millis(100));
    let mut agent = PipedAgent::start(a, &args);
    let capturing = agent.wait_for_line(" capturing", Duration::from_secs(15));
    // Traffic from the first window on, until the first file is there.
    let pinger = KillOnDrop(
        in_netns(&b.netns, "ping")
            .args(["-n", "-q", "-i", "0.2", "-w", "40"])
            .arg(IpAddr::V4(a.v4).to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("ping"),
    );
    assert!(
        unix_now() < (slot + INTERVAL) as f64,
        "the agent took too long to start for the first window to see traffic: {capturing}"
    );

    // Plain lines: stderr is a pipe.
    let text = agent.stderr();
    assert!(!text.contains('\x1b'), "ANSI escape on a pipe:\n{text:?}");
    let metrics_line = agent.wait_for_line("metrics served", Duration::from_secs(1));
    assert_eq!(
        field(&metrics_line, "http"),
        format!("http://127.0.0.1:{PORT}/metrics"),
        "{metrics_line}"
    );
    assert_eq!(
        field(&metrics_line, "file"),
        metrics_file.display().to_string(),
        "{metrics_line}"
    );
    assert_eq!(
        text.matches("metrics served").count(),
        1,
        "one line:\n{text}"
    );

    // Every counter with a known label set is there at 0 before any window closed.
    let flow_log = format!("flow_log_id=\"{}\"", field(&capturing, "flow_log_id"));
    let with_destination = format!(
        "{flow_log},destination=\"{}\"",
        field(&capturing, "destination")
    );
    let mut expected = vec![
        "flowlog_windows_total 0".to_string(),
        "flowlog_unattributed_packets_total 0".to_string(),
        format!("flowlog_flows_total{{interface=\"{}\"}} 0", a.iface),
    ];
    for name in [
        "flowlog_spool_batches",
        "flowlog_spool_records",
        "flowlog_spool_dropped_batches_total",
        "flowlog_spool_dropped_records_total",
        "flowlog_spool_write_failed_records_total",
    ] {
        expected.push(format!("{name}{{{flow_log}}} 0"));
    }
    for name in [
        "flowlog_published_batches_total",
        "flowlog_published_records_total",
        "flowlog_publish_failures_total",
        "flowlog_rejected_records_total",
    ] {
        expected.push(format!("{name}{{{with_destination}}} 0"));
    }
    for direction in ["ingress", "egress"] {
        let l = format!("{{interface=\"{}\",direction=\"{direction}\"}} 0", a.iface);
        for name in [
            "flowlog_packets_total",
            "flowlog_bytes_total",
            "flowlog_overflow_packets_total",
            "flowlog_overflow_bytes_total",
            "flowlog_non_ip_packets_total",
            "flowlog_malformed_packets_total",
        ] {
            expected.push(format!("{name}{l}"));
        }
        for reason in ["NETFILTER_DROP", "NO_SOCKET"] {
            expected.push(format!(
                "flowlog_rejected_packets_total{{interface=\"{}\",direction=\"{direction}\",reason=\"{reason}\"}} 0",
                a.iface
            ));
        }
    }
    let from_file = fs::read_to_string(&metrics_file).expect("metrics file right after start");
    let from_http = http_get_in_netns(&a.netns, PORT);
    for sample in &expected {
        assert!(
            from_file.lines().any(|l| l == sample),
            "{sample} missing from the metrics file:\n{from_file}"
        );
        assert!(
            from_http.lines().any(|l| l == sample),
            "{sample} missing from the HTTP metrics:\n{from_http}"
        );
    }

    // The first file: announced for the end of the slot the agent started in, and on time.
    let line = agent.wait_for_line("first_file_at=", Duration::from_secs(1));
    let announced = field(&line, "first_file_at");
    let slot_end = slot + ROLLOVER;
    assert_eq!(announced, utc(slot_end), "{line}");
    assert!(line.contains("--file-rollover-seconds"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(ROLLOVER + 10);
    let (appeared, files) = loop {
        let files = log_files(&out);
        if !files.is_empty() {
            break (unix_now(), files);
        }
        assert!(
            Instant::now() < deadline,
            "no file by {announced}:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Not before the announced time although traffic flowed from the first window on. After
    // it, the window is drained and the spool file and the output file are fsynced: a busy
    // disk (other builds on this machine) has delayed that by seconds, hence the slack.
    assert!(
        appeared >= slot_end as f64 && appeared < slot_end as f64 + 10.0,
        "announced {announced} ({slot_end}), appeared at {appeared:.2}; log:\n{}",
        agent.stderr()
    );
    // And it is the object of the slot the agent started in (YYYYMMDDTHHMMZ in its name).
    let slot_name = utc(slot).replace(['-', ':'], "");
    let slot_name = format!("_{}Z_", &slot_name[..13]);
    assert!(
        files.len() == 1 && files[0].to_string_lossy().contains(&slot_name),
        "expected one file with {slot_name}: {files:?}"
    );
    drop(pinger);
}

/// Kills the child on drop (a failed assertion must not leave ping running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `t` (Unix seconds) as `YYYY-MM-DDTHH:MM:SSZ`, computed here (civil-from-days) rather than
/// with the agent's own formatting.
fn utc(t: u64) -> String {
    let (days, secs) = ((t / 86_400) as i64, t % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}
