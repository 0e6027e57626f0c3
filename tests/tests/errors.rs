//! Bad input to the real `flowlog` binary (FLOWLOG_BIN): a non-zero exit and one line on
//! stderr that says what is wrong and what to do; help exits 0.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{flowlog_bin, require_root},
    moto::Moto,
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

/// Runs `cmd` to its exit, killing it and panicking after `timeout` (an agent that does not
/// fail at start runs until stopped).
fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} still running after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
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

#[test]
fn help_states_ranges_lists_fields_and_shows_examples() {
    let out = output(flowlog().args(["run", "--help"]));
    assert!(out.status.success(), "flowlog run --help: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    for range in [
        "[range: 1..=86400]",
        "[range: 1..=16777216]",
        "[range: 1..=3600]",
    ] {
        assert!(text.contains(range), "{range} missing:\n{text}");
    }
    let (_, fields) = text
        .split_once("Fields for --log-format")
        .unwrap_or_else(|| panic!("no field list:\n{text}"));
    let listed: Vec<&str> = fields.split_whitespace().collect();
    // AWS's field table, versions 2 to 10.
    for name in "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets \
                 bytes start end action log-status vpc-id subnet-id instance-id tcp-flags type \
                 pkt-srcaddr pkt-dstaddr region az-id sublocation-type sublocation-id \
                 pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path \
                 ecs-cluster-arn ecs-cluster-name ecs-container-instance-arn \
                 ecs-container-instance-id ecs-container-id ecs-second-container-id \
                 ecs-service-name ecs-task-definition-arn ecs-task-arn ecs-task-id reject-reason \
                 resource-id encryption-status"
        .split_whitespace()
    {
        assert!(listed.contains(&name), "field {name} not listed:\n{fields}");
    }
    for example in [
        "flowlog run --destination file:",
        "flowlog run --traffic-type REJECT --destination s3://",
        "--file-format parquet",
        "--destination cloud-watch-logs:",
        "--log-format '${version} ${srcaddr}",
    ] {
        assert!(
            text.contains(example),
            "no example with {example:?}:\n{text}"
        );
    }
    let top = output(flowlog().arg("--help"));
    assert!(
        String::from_utf8_lossy(&top.stdout).contains("Examples:\n  # "),
        "flowlog --help has examples"
    );
}

#[test]
fn log_format_with_commas_says_to_separate_fields_with_spaces() {
    let out = output(flowlog().args(["run", "--log-format", "${srcaddr},${dstaddr}"]));
    assert_eq!(out.status.code(), Some(2), "clap's usage-error status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(
            "error: invalid value '${srcaddr},${dstaddr}' for '--log-format <FORMAT>': "
        ) && first.contains("separate fields with spaces"),
        "{stderr}"
    );
}

#[test]
fn file_destination_that_is_a_regular_file_is_not_a_directory() {
    require_root();
    let dir = temp_dir();
    let file = dir.path().join("flowlogs");
    std::fs::write(&file, b"").expect("regular file");
    let out = output_within(
        flowlog()
            .args(["run", "--iface", "lo", "--no-imds", "--spool-dir"])
            .arg(dir.path().join("spool"))
            .arg("--destination")
            .arg(format!("file:{}", file.display())),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "exit status");
    assert_eq!(
        one_line(&out),
        format!(
            "flowlog: error: output directory {} is not a directory: point --destination file: at a \
             directory (it is created if missing)",
            file.display()
        )
    );
}

/// Nothing in the AWS credential chain (no AWS_* variables, a HOME without ~/.aws, instance
/// metadata disabled): S3 and CloudWatch Logs destinations fail at start with one line that
/// names the missing credentials first and says how to provide them. Nothing is sent (moto
/// is there so that an attempt could succeed).
#[test]
fn s3_and_cloudwatch_without_credentials_say_so_first() {
    require_root();
    let moto = Moto::start(None);
    let home = temp_dir();
    for destination in ["s3://flowlog-test/p", "cloud-watch-logs:flowlog-test"] {
        let dir = temp_dir();
        let mut cmd = flowlog();
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOME", home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args(["run", "--iface", "lo", "--no-imds", "--region", "us-east-1"])
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .args([
                "--endpoint-url",
                &moto.endpoint(),
                "--destination",
                destination,
            ]);
        let out = output_within(&mut cmd, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(1), "{destination}: exit status");
        assert_eq!(
            one_line(&out),
            format!(
                "flowlog: error: no AWS credentials found for {destination} (environment, profile, \
                 container and instance role all empty): set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile in ~/.aws/credentials, or run \
                 with an instance role"
            )
        );
    }
}
