//! Two agents, one flow log id, one destination, each with its own spool: the second is refused
//! at start with one line naming the first's pid (they would otherwise both publish every
//! record); with another flow log id both run. Root only; real agents on a veth pair in
//! namespaces prefixed `flwl`, with the default runtime directory (/run/flowlog).

use std::os::unix::fs::DirBuilderExt as _;
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::flowlog_bin,
    netns::{Namespaces, Setup},
    publish::AgentProcess,
};

/// A flow log id of this test run only, so parallel runs never share a lock.
fn flow_log_id(n: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!(
        "fl-{:017x}",
        u64::from(std::process::id()) << 36 | u64::from(nanos) << 4 | n
    )
}

fn args(id: &str, spool: &Path, out: &Path) -> Vec<String> {
    [
        "--no-imds",
        "--aggregation-interval",
        "1",
        "--flow-log-id",
        id,
        "--spool-dir",
        &spool.to_string_lossy(),
        "--destination",
        &format!("file:{}", out.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_second_agent_for_the_same_flow_log_and_destination_is_refused_naming_the_first() {
    let ns = Namespaces::new(Setup::new(172).ipv4_only().prefix("flwl"));
    let a = &ns.a;
    let dir = tempfile::Builder::new()
        .prefix("flwl-")
        .tempdir()
        .expect("temp dir");
    let out = dir.path().join("out");
    let id = flow_log_id(1);
    let mut first = AgentProcess::start(a, &args(&id, &dir.path().join("spool-1"), &out));

    // The same directory written another way is the same destination.
    let same_out = dir.path().join("spool-2").join("..").join("out");
    // The spool directory private from the start, as the agent makes its own (else creating
    // `spool-2/../out` would make it 0750 and the agent would say, in a line of its own, that it
    // made it private).
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.path().join("spool-2"))
        .expect("spool-2");
    let started = Instant::now();
    let second = Command::new("ip")
        .args(["netns", "exec", &a.netns])
        .arg(flowlog_bin())
        .args(["run", "--iface", &a.iface])
        .args(args(&id, &dir.path().join("spool-2"), &same_out))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second agent");
    let mut second = second;
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            // Not refused: stop it, and report what it said.
            let _ = second.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = second.wait_with_output().expect("second agent's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "second agent: {}; stderr:\n{stderr}",
        output.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    let canonical = out.canonicalize().expect("output dir exists");
    let expected_start = format!(
        "flowlog: error: flow log {id} is already written to file:{} by flowlog agent pid {} (lock /run/flowlog/{id}-",
        canonical.display(),
        first.pid()
    );
    assert!(
        lines[0].starts_with(&expected_start)
            && lines[0].ends_with(
                ".lock): a second agent would duplicate every record; stop that agent, or give this one another --flow-log-id"
            ),
        "{}\nexpected it to start with\n{expected_start}",
        lines[0]
    );
    let lock = Path::new(
        lines[0]
            .split_once("(lock ")
            .and_then(|(_, rest)| rest.split_once("):"))
            .map(|(path, _)| path)
            .expect("lock path"),
    )
    .to_path_buf();
    assert!(
        lock.is_file(),
        "{} exists while the first runs",
        lock.display()
    );

    // Another flow log id to the same destination is another flow log: it runs.
    let mut other =
        AgentProcess::start(a, &args(&flow_log_id(2), &dir.path().join("spool-3"), &out));
    for (name, agent) in [("first", &mut first), ("other", &mut other)] {
        let status = agent.stop();
        assert!(
            status.success(),
            "{name} agent: {status}; log:\n{}",
            agent.log()
        );
    }
    assert!(!lock.exists(), "{} removed at a clean exit", lock.display());
}
