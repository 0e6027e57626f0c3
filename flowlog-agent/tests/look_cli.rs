//! `flowlog top` and `flowlog athena-ddl FLOW_LOG_ID` without an agent, and `top`'s refused
//! flags: one line saying what to do and a non-zero exit. No root needed.

use std::process::Command;

const FLOWLOG: &str = env!("CARGO_BIN_EXE_flowlog");

fn one_line_failure(args: &[&str], needle: &str) {
    let out = Command::new(FLOWLOG)
        .args(args)
        .output()
        .expect("run flowlog");
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
}

#[test]
fn without_an_agent_top_and_athena_ddl_say_so_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("none.sock");
    let socket = socket.to_str().expect("utf-8 path");
    for args in [
        vec!["top", "--once", "--control-socket", socket],
        vec!["top", "--once", "--json", "--control-socket", socket],
        vec![
            "athena-ddl",
            "fl-0123456789abcdef0",
            "--control-socket",
            socket,
        ],
    ] {
        let out = Command::new(FLOWLOG).args(&args).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("no flowlog agent is listening on") && err.contains("flowlog run"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn top_refuses_bad_flags() {
    one_line_failure(&["top", "--json"], "--once");
    one_line_failure(&["top", "--once", "--protocol", "xyz"], "is not a protocol");
    one_line_failure(
        &["top", "--once", "--prefix", "10.0.0.0/33"],
        "is not an address prefix",
    );
    one_line_failure(&["top", "--refresh-ms", "5"], "100..=60000");
    // stdout is a pipe here.
    one_line_failure(&["top"], "needs a terminal: use --once");
}
