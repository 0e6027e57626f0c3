//! What supervisors and log shippers see of a running agent: `--log-output json` writes every
//! log line as one JSON object (the fatal error too), and the metrics address answers
//! `/healthz` and `/readyz` (ready only once the programs are attached and a window was cut).
//! Root only; the real agent on a veth pair in namespaces prefixed `flsv`.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{Agent, AgentOptions, flowlog_bin, unix_now, wait_for_window_start},
    netns::{Namespaces, Setup},
    traffic::in_ns,
};

/// Every line of `text` as a JSON object; panics naming the first line that is not one.
fn json_lines(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(serde_json::Value::Object(o)) => o,
            _ => panic!("not a JSON object line: {l:?}\nall of it:\n{text}"),
        })
        .collect()
}

fn str_field<'a>(o: &'a serde_json::Map<String, serde_json::Value>, k: &str) -> &'a str {
    o.get(k)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no string {k:?} in {o:?}"))
}

#[test]
fn json_log_output_is_one_object_per_line() {
    let _serial = crate::serial();
    let ns = Namespaces::new(Setup::new(241).ipv4_only().prefix("flsv"));
    let mut agent = Agent::start(
        &ns.a,
        AgentOptions::interval(1).arg("--log-output").arg("json"),
    );
    agent.wait_for_log("window closed", Duration::from_secs(10));
    agent.stop();
    let lines = json_lines(&agent.log());
    let capturing = lines
        .iter()
        .find(|o| o.get("message").and_then(|m| m.as_str()) == Some("capturing"))
        .unwrap_or_else(|| panic!("no capturing line:\n{}", agent.log()));
    assert_eq!(str_field(capturing, "level"), "INFO");
    assert_eq!(str_field(capturing, "target"), "flowlog_agent::run");
    assert!(
        chrono::DateTime::parse_from_rfc3339(str_field(capturing, "timestamp")).is_ok(),
        "{capturing:?}"
    );
    // The event's fields sit beside the message.
    assert_eq!(
        str_field(capturing, "interfaces"),
        format!("[\"{}\"]", ns.a.iface)
    );
    assert!(
        lines.iter().any(
            |o| o.get("message").and_then(|m| m.as_str()) == Some("window closed")
                && o.get("flows").is_some()
        ),
        "{}",
        agent.log()
    );
    assert!(!agent.log().contains('\u{1b}'), "colour codes in JSON logs");
}

#[test]
fn json_log_output_reports_a_fatal_error_as_json() {
    let _serial = crate::serial();
    let out = Command::new(flowlog_bin())
        .args([
            "run",
            "--log-output",
            "json",
            "--flow-logs",
            "/nonexistent/flow-logs.json",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run flowlog");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(str_field(&lines[0], "level"), "ERROR");
    assert_eq!(
        str_field(&lines[0], "message"),
        "cannot read --flow-logs file /nonexistent/flow-logs.json: No such file or directory (os error 2)"
    );
    // Text stays the default: the same error as one plain line.
    let out = Command::new(flowlog_bin())
        .args(["run", "--flow-logs", "/nonexistent/flow-logs.json"])
        .stdin(Stdio::null())
        .output()
        .expect("run flowlog");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "flowlog: error: cannot read --flow-logs file /nonexistent/flow-logs.json: No such file or directory (os error 2)\n"
    );
}

/// GET `path` from 127.0.0.1:`port` inside `netns`: (status code, body).
fn get(netns: &str, port: u16, path: &str) -> (u16, String) {
    in_ns(netns, || {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
        conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .expect("request");
        let mut text = String::new();
        conn.read_to_string(&mut text).expect("response");
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text:?}"));
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (code, body.to_string())
    })
}

/// Right after "capturing", /readyz says 503 (attached, no window cut yet) while /healthz says
/// 200; /readyz turns 200 only once the first boundary after the attach has passed.
#[test]
fn readiness_waits_for_the_first_window() {
    let _serial = crate::serial();
    const INTERVAL: u64 = 4;
    const PORT: u16 = 9481;
    let ns = Namespaces::new(Setup::new(242).ipv4_only().prefix("flsv"));
    // Start early in a window so the check below usually has the whole window to run in.
    wait_for_window_start(INTERVAL, Duration::from_millis(100));
    let agent = Agent::start(
        &ns.a,
        AgentOptions::interval(INTERVAL)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{PORT}")),
    );
    let log = agent.log();
    let capturing = log
        .lines()
        .find(|l| l.contains("capturing"))
        .expect("capturing line");
    let attached_at = chrono::DateTime::parse_from_rfc3339(
        capturing.split_whitespace().next().expect("timestamp"),
    )
    .unwrap_or_else(|e| panic!("no timestamp in {capturing:?}: {e}"))
    .timestamp() as u64;
    let first_cut = (attached_at / INTERVAL + 1) * INTERVAL;

    let (code, body) = get(&ns.a.netns, PORT, "/readyz");
    // Only decided when the answer came before the first boundary (almost always).
    if unix_now() < first_cut as f64 {
        assert_eq!(
            (code, body.as_str()),
            (
                503,
                "not ready: attached, waiting for the first window to be cut\n"
            )
        );
    }
    let (code, body) = get(&ns.a.netns, PORT, "/healthz");
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(3 * INTERVAL);
    loop {
        let asked_at = unix_now();
        let (code, body) = get(&ns.a.netns, PORT, "/readyz");
        if code == 200 {
            assert!(
                asked_at >= first_cut as f64,
                "ready at {asked_at}, before the first boundary {first_cut}"
            );
            assert_eq!(body, "ready: attached and cutting windows\n");
            break;
        }
        assert!(Instant::now() < deadline, "never ready:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, metrics) = get(&ns.a.netns, PORT, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("# TYPE flowlog_"), "{metrics}");
}
