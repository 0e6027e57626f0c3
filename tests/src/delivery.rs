//! How an agent's delivery goes, read the way an operator reads it: `DeliverLogsStatus` from
//! `flowlog describe-flow-logs` against the agent's control socket, and the Prometheus
//! metrics file it rewrites after every window and at exit.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::agent::flowlog_bin;

/// `flowlog describe-flow-logs --control-socket <socket>`: the answer JSON.
pub fn describe(socket: &Path) -> serde_json::Value {
    let out = Command::new(flowlog_bin())
        .args(["describe-flow-logs", "--control-socket"])
        .arg(socket)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run flowlog describe-flow-logs");
    assert!(
        out.status.success(),
        "describe-flow-logs exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "describe-flow-logs answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `DeliverLogsStatus` and `DeliverLogsErrorMessage` of flow log `id`.
pub fn delivery_status(socket: &Path, id: &str) -> (String, Option<String>) {
    let answer = describe(socket);
    let flow_log = answer["FlowLogs"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["FlowLogId"] == id))
        .unwrap_or_else(|| panic!("{id} is not described: {answer}"));
    (
        flow_log["DeliverLogsStatus"]
            .as_str()
            .unwrap_or_else(|| panic!("no DeliverLogsStatus: {flow_log}"))
            .to_string(),
        flow_log["DeliverLogsErrorMessage"]
            .as_str()
            .map(str::to_string),
    )
}

/// Polls [`delivery_status`] until it is `want`; returns the error message then. Panics with
/// the last answer after `timeout`.
pub fn wait_for_delivery_status(
    socket: &Path,
    id: &str,
    want: &str,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, message) = delivery_status(socket, id);
        if status == want {
            return message;
        }
        assert!(
            Instant::now() < deadline,
            "DeliverLogsStatus of {id} is still {status} ({message:?}) after {timeout:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The samples of a Prometheus text file: `name{labels}` (as written) → value.
pub fn read_metrics(path: &Path) -> BTreeMap<String, f64> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read metrics {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (sample, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {l:?}: {e}"));
            (sample.to_string(), value)
        })
        .collect()
}

/// The sample `name{k="v",...}` (labels in the order given), written here by hand rather than
/// with the agent's own renderer.
pub fn sample(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The value of `name{labels}` in `metrics`; panics with every sample of that name if absent.
pub fn metric(metrics: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = sample(name, labels);
    metrics.get(&key).copied().unwrap_or_else(|| {
        let same: Vec<&String> = metrics.keys().filter(|k| k.starts_with(name)).collect();
        panic!("no sample {key}; samples of {name}: {same:?}")
    })
}
