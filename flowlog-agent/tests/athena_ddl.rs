//! `flowlog athena-ddl` from `run` flags, against hand-written expected scripts
//! (tests/fixtures/athena/*.sql): text and Parquet, each partition layout (yyyy/MM/dd,
//! yyyy/MM/dd/HH, Hive year=/month=/day=, Hive with hour=), AWS's column types, and the named
//! queries a format has the fields for. No root needed: the binary only prints.

use std::{path::Path, process::Command};

const FLOWLOG: &str = env!("CARGO_BIN_EXE_flowlog");

/// Runs `flowlog athena-ddl` with the shared identity flags and `extra`.
fn ddl(extra: &[&str]) -> std::process::Output {
    Command::new(FLOWLOG)
        .args([
            "athena-ddl",
            "--destination",
            "s3://my-bucket/flow-logs",
            "--flow-log-id",
            "fl-0123456789abcdef0",
            "--account-id",
            "123456789012",
            "--region",
            "eu-west-1",
            "--no-imds",
            "--since",
            "2026-12-01",
        ])
        .args(extra)
        .env_remove("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .output()
        .expect("run flowlog athena-ddl")
}

fn golden(name: &str, extra: &[&str]) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/athena/{name}.sql"));
    let expected = std::fs::read_to_string(&path).expect("golden file");
    let out = ddl(extra);
    assert!(
        out.status.success(),
        "athena-ddl {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8(out.stdout).expect("utf-8");
    if got != expected {
        for (i, (g, e)) in got.lines().zip(expected.lines()).enumerate() {
            assert_eq!(g, e, "{name}.sql line {}", i + 1);
        }
        assert_eq!(
            got.lines().count(),
            expected.lines().count(),
            "{name}.sql: line count"
        );
        assert_eq!(got, expected, "{name}.sql");
    }
}

#[test]
fn text_with_date_folders() {
    golden("text-date", &[]);
}

#[test]
fn text_with_hour_folders() {
    golden("text-hour", &["--per-hour-partition"]);
}

#[test]
fn text_with_hive_folders_and_a_format_without_start() {
    golden(
        "text-hive",
        &[
            "--hive-compatible-partitions",
            "--log-format",
            "${srcaddr} ${dstaddr} ${dstport} ${protocol} ${packets} ${bytes} ${action}",
        ],
    );
}

#[test]
fn text_with_hive_hour_folders() {
    golden(
        "text-hive-hour",
        &["--hive-compatible-partitions", "--per-hour-partition"],
    );
}

#[test]
fn parquet_with_date_folders() {
    golden("parquet-date", &["--file-format", "parquet"]);
}

#[test]
fn parquet_with_hive_hour_folders_a_custom_format_and_table_name() {
    golden(
        "parquet-hive-hour",
        &[
            "--file-format",
            "parquet",
            "--hive-compatible-partitions",
            "--per-hour-partition",
            "--table",
            "flows",
            "--log-format",
            "${version} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} \
             ${packets} ${bytes} ${start} ${end} ${action} ${tcp-flags} ${flow-direction} \
             ${traffic-path} ${pkt-srcaddr} ${reject-reason}",
        ],
    );
}

/// Bad input is one line and a non-zero exit.
#[test]
fn cloudwatch_destinations_and_bad_names_are_refused_in_one_line() {
    let cw = Command::new(FLOWLOG)
        .args([
            "athena-ddl",
            "--destination",
            "cloud-watch-logs:/vpc/flows",
            "--no-imds",
        ])
        .output()
        .expect("run");
    assert!(!cw.status.success());
    let err = String::from_utf8_lossy(&cw.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("CloudWatch Logs, which Athena does not read"),
        "{err}"
    );

    let bad = ddl(&["--table", "Bad-Name"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("lowercase letters, digits and _"), "{err}");

    let day = ddl(&["--since", "2026-13-01"]);
    assert!(!day.status.success());
    assert!(String::from_utf8_lossy(&day.stderr).contains("YYYY-MM-DD"));
}

/// docs/queries/*.athena.sql are the named queries `athena-ddl` prints for the default table.
#[test]
fn the_documented_athena_queries_are_the_named_queries() {
    let out = ddl(&[]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).expect("utf-8");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/queries");
    let files = [
        ("VpcFlowLogsTopTalkers", "top-talkers"),
        ("VpcFlowLogsRejectedSshRdp", "rejected-ssh-rdp"),
        (
            "VpcFlowLogsBytesPerInterfacePerHour",
            "bytes-per-interface-per-hour",
        ),
        ("VpcFlowLogsNewPeersLastHour", "new-peers-last-hour"),
    ];
    for (name, file) in files {
        let start = script
            .find(&format!("-- {name}:"))
            .unwrap_or_else(|| panic!("{name} not printed:\n{script}"));
        let block = &script[start..];
        let block = &block[..block.find("\n\n").map_or(block.len(), |e| e + 1)];
        let sql: String = block.lines().skip(1).map(|l| format!("{l}\n")).collect();
        let doc = std::fs::read_to_string(docs.join(format!("{file}.athena.sql"))).expect("doc");
        let doc_sql: String = doc
            .lines()
            .filter(|l| !l.starts_with("--"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(doc_sql, sql, "docs/queries/{file}.athena.sql");
    }
}
