//! Bad input to the real `flowlog` binary (FLOWLOG_BIN): a non-zero exit and one line on
//! stderr that says what is wrong and what to do; help exits 0.

use std::process::{Command, Output};

use flowlog_tests::{
    agent::{flowlog_bin, require_root},
    netns::{Namespaces, Setup, in_netns},
};

fn flowlog() -> Command {
    let mut c = Command::new(flowlog_bin());
    c.env_remove("RUST_LOG");
    c
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The single line of stderr; panics if there is not exactly one.
fn one_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{stderr}");
    lines[0].to_string()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("flit-errors-")
        .tempdir()
        .expect("temp dir")
}

#[test]
fn unknown_interface_names_it_and_lists_the_existing_ones() {
    // Inside a namespace of our own, the interfaces that exist are known exactly.
    let ns = Namespaces::new(Setup::new(18));
    let dir = temp_dir();
    let out = output(
        in_netns(&ns.a.netns, &flowlog_bin().to_string_lossy())
            .env_remove("RUST_LOG")
            .args(["run", "--iface", "nosuch0", "--destination"])
            .arg(format!("file:{}", dir.path().display())),
    );
    assert_eq!(out.status.code(), Some(1), "exit status");
    let line = one_line(&out);
    assert!(line.contains("\"nosuch0\""), "names the interface: {line}");
    let words: Vec<&str> = line.split([' ', ',', ':']).collect();
    assert!(
        words.contains(&ns.a.iface.as_str()) && words.contains(&"lo"),
        "lists {} and lo: {line}",
        ns.a.iface
    );
}

#[test]
fn zero_aggregation_interval_is_a_usage_error() {
    let out = output(flowlog().args(["run", "--aggregation-interval", "0"]));
    assert_eq!(out.status.code(), Some(2), "clap's usage-error status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: invalid value '0' for '--aggregation-interval <SECONDS>'"),
        "clap error: {stderr}"
    );
}

#[test]
fn not_root_says_what_is_needed() {
    require_root(); // to drop to uid 65534 at all
    let dir = temp_dir();
    let out = output(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(flowlog_bin())
            .args(["run", "--iface", "lo", "--destination"])
            .arg(format!("file:{}", dir.path().display()))
            .env_remove("RUST_LOG"),
    );
    assert_eq!(out.status.code(), Some(1), "exit status");
    let line = one_line(&out);
    assert!(
        line.contains("needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN")
            && line.contains("uid 65534"),
        "{line}"
    );
}

#[test]
fn missing_ebpf_object_names_the_file() {
    require_root();
    let dir = temp_dir();
    let out = output(
        flowlog()
            .args([
                "run",
                "--iface",
                "lo",
                "--ebpf-object",
                "/nonexistent/flowlog.bpf.o",
                "--destination",
            ])
            .arg(format!("file:{}", dir.path().display())),
    );
    assert_eq!(out.status.code(), Some(1), "exit status");
    let line = one_line(&out);
    assert!(line.contains("/nonexistent/flowlog.bpf.o"), "{line}");
}

#[test]
fn help_exits_zero() {
    let out = output(flowlog().arg("--help"));
    assert!(out.status.success(), "flowlog --help: {}", out.status);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Usage: flowlog"),
        "usage line"
    );
    let out = output(flowlog().args(["run", "--help"]));
    assert!(out.status.success(), "flowlog run --help: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Usage: flowlog run") && text.contains("--aggregation-interval"),
        "{text}"
    );
}
