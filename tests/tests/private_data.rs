//! Private by default (issue 15, item 1). A real agent with real traffic: the objects of a file
//! destination are 0640 in directories 0750 (or `--file-mode`/`--dir-mode`), the spool and the
//! state directory 0700 with 0600 files, the control socket 0600, all owned by the agent's
//! user; S3 objects carry the server-side encryption and canned ACL asked for, read back from
//! what moto_server received (its request recording) and kept (HeadObject). Root only.
//! Namespaces `flsc`, addresses 10.213.230.0/24 and up.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::flowlog_bin,
    moto::Moto,
    netns::{Namespaces, Setup},
    publish::{AgentProcess, records_of_objects, send_udp_flows},
    records::{self, Record, Tuple},
};

const FLOW_LOG_ID: &str = "fl-5ecc0000000000001";
const BUCKET: &str = "flowlog-private";
const KMS_KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/0b2d5a8e-7c1f-4c6e-9d5a-2f7e0c1b9a11";

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn owner(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .uid()
}

/// `root` and every directory below it, and every file below it.
fn walk(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files) = (vec![root.to_path_buf()], Vec::new());
    let mut i = 0;
    while i < dirs.len() {
        for e in fs::read_dir(&dirs[i]).expect("read dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
        i += 1;
    }
    (dirs, files)
}

/// Polls `f` every 20 ms until it gives `Some`, for at most `timeout`.
fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// (packets, bytes) per tuple of `sent`, summed over `records`.
fn sums_of(records: &[Record], sent: &BTreeMap<Tuple, (u64, u64)>) -> BTreeMap<Tuple, (u64, u64)> {
    let mut got = BTreeMap::new();
    for r in records {
        if let Some(t) = r.tuple.filter(|t| sent.contains_key(t)) {
            let e: &mut (u64, u64) = got.entry(t).or_default();
            e.0 += r.packets.expect("packets");
            e.1 += r.bytes.expect("bytes");
        }
    }
    got
}

#[test]
fn files_directories_spool_state_and_socket_are_private() {
    let ns = Namespaces::new(Setup::new(230).prefix("flsc").ipv4_only());
    let dir = tempfile::tempdir().expect("temp dir");
    // None of these exist yet: the agent creates them.
    let out = dir.path().join("out/flowlogs");
    let state = dir.path().join("var/state");
    let socket = dir.path().join("run/control.sock");
    let args = strings(&[
        "--aggregation-interval",
        "1",
        // One object for the whole run: its closed windows wait in a write-ahead log.
        "--file-rollover-seconds",
        "3600",
        "--flow-log-id",
        FLOW_LOG_ID,
        "--no-imds",
        "--destination",
        &format!("file:{}", out.display()),
        "--state-dir",
        &state.display().to_string(),
        "--control-socket",
        &socket.display().to_string(),
        "--runtime-dir",
        &dir.path().join("run").display().to_string(),
    ]);
    let mut agent = AgentProcess::start(&ns.a, &args);
    let sent = send_udp_flows(&ns.a, &ns.b, 7001, 3, 2, 100);

    // The default spool, under the state directory, holds the open object's write-ahead log
    // once a window with records closed.
    let spool_root = state.join("spool");
    let spool = poll(Duration::from_secs(20), "write-ahead log", || {
        let spool = fs::read_dir(&spool_root).ok()?.next()?.ok()?.path();
        let wal = fs::read_dir(&spool).ok()?.flatten().any(|e| {
            e.file_name().to_string_lossy().ends_with(".wal")
                && fs::metadata(e.path()).is_ok_and(|m| m.len() > 0)
        });
        wal.then_some(spool)
    });
    assert!(
        spool
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(FLOW_LOG_ID)),
        "{}",
        spool.display()
    );
    // SAFETY: geteuid has no preconditions.
    let agent_user = unsafe { libc::geteuid() };
    for d in [
        dir.path().join("var"),
        state.clone(),
        state.join("flow-logs"),
        spool_root.clone(),
        spool.clone(),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
        assert_eq!(owner(&d), agent_user, "{}", d.display());
    }
    let spool_files: Vec<PathBuf> = walk(&spool).1;
    let wals = spool_files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .count();
    assert_eq!(wals, 1, "one open object: {spool_files:?}");
    for f in spool_files.iter().filter(|p| !p.ends_with(".lock")) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    assert_eq!(mode(&socket), 0o600, "control socket");
    assert_eq!(owner(&socket), agent_user, "control socket");

    assert!(agent.stop().success(), "agent exit; log:\n{}", agent.log());
    let records = records::read_default(&out);
    assert_eq!(
        sums_of(&records, &sent),
        sent,
        "records of the traffic sent"
    );
    let (dirs, files) = walk(&dir.path().join("out"));
    // out, flowlogs, AWSLogs, <account>, vpcflowlogs, <region>, YYYY, MM, DD.
    assert_eq!(dirs.len(), 9, "{dirs:?}");
    for d in &dirs {
        assert_eq!(mode(d), 0o750, "{}", d.display());
        assert_eq!(owner(d), agent_user, "{}", d.display());
    }
    assert!(!files.is_empty(), "no object written");
    for f in &files {
        assert!(f.to_string_lossy().ends_with(".log.gz"), "{}", f.display());
        assert_eq!(mode(f), 0o640, "{}", f.display());
        assert_eq!(owner(f), agent_user, "{}", f.display());
    }
}

#[test]
fn file_and_dir_modes_follow_the_flags() {
    let ns = Namespaces::new(Setup::new(231).prefix("flsc").ipv4_only());
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    let args = strings(&[
        "--aggregation-interval",
        "1",
        "--file-rollover-seconds",
        "1",
        "--no-imds",
        "--file-mode",
        "0660",
        "--dir-mode",
        "2770",
        "--destination",
        &format!("file:{}", out.display()),
        "--spool-dir",
        &dir.path().join("spool").display().to_string(),
        "--state-dir",
        &dir.path().join("state").display().to_string(),
        "--control-socket",
        &dir.path().join("run/control.sock").display().to_string(),
        "--runtime-dir",
        &dir.path().join("run").display().to_string(),
    ]);
    let mut agent = AgentProcess::start(&ns.a, &args);
    let sent = send_udp_flows(&ns.a, &ns.b, 7002, 2, 3, 60);
    records::wait_for(
        &out,
        Duration::from_secs(20),
        "the traffic's records",
        |r| sums_of(r, &sent) == sent,
    );
    assert!(agent.stop().success(), "agent exit; log:\n{}", agent.log());
    let (dirs, files) = walk(&out);
    assert_eq!(dirs.len(), 8, "{dirs:?}");
    for d in &dirs {
        assert_eq!(mode(d), 0o2770, "{}", d.display());
    }
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(mode(f), 0o660, "{}", f.display());
    }
    assert_eq!(mode(&dir.path().join("spool")), 0o700, "--spool-dir");
}

/// One line on stderr and a usage exit for each bad value.
#[test]
fn bad_modes_and_s3_options_are_refused_with_one_line() {
    let usage = [
        (
            vec!["--file-mode", "0648"],
            "invalid --file-mode \"0648\": write an octal mode such as 0640",
        ),
        (
            vec!["--dir-mode", "4750"],
            "invalid --dir-mode \"4750\": only permission bits and setgid (2000) are allowed",
        ),
        (
            vec!["--file-mode", "0044"],
            "the owner (the agent's user) must keep read and write (u+rw)",
        ),
        (
            vec!["--s3-acl", "public-read"],
            "the canned ACL \"public-read\" would let others read flow logs (security data)",
        ),
        (
            vec!["--s3-sse", "aws:kms:dsse"],
            "[possible values: AES256, aws:kms]",
        ),
    ];
    for (args, message) in usage {
        let out = Command::new(flowlog_bin())
            .arg("run")
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run flowlog");
        assert_eq!(out.status.code(), Some(2), "{args:?}: clap's usage status");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "error: invalid value '{}' for '{} <",
                args[1], args[0]
            )),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = format!("file:{}", dir.path().display());
    let refused = [
        (
            vec![
                "--s3-sse-kms-key-id",
                "alias/logs",
                "--destination",
                "s3://bucket-x",
            ],
            "flowlog: error: a KMS key id needs server-side encryption aws:kms (--s3-sse aws:kms)",
        ),
        (
            vec!["--s3-sse", "AES256", "--destination", &file],
            "flowlog: error: --s3-sse, --s3-sse-kms-key-id and --s3-acl apply to s3 destinations only: drop them or use --destination s3://BUCKET[/PREFIX]",
        ),
    ];
    for (args, message) in refused {
        let out = Command::new(flowlog_bin())
            .args(["run", "--iface", "lo"])
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run flowlog");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end(), message, "{args:?}");
    }
}

/// The value of header `name` (case-insensitive) of a recorded request.
fn header<'a>(request: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

#[test]
fn s3_objects_carry_the_encryption_and_acl_asked_for() {
    let ns = Namespaces::new(Setup::new(232).prefix("flsc").ipv4_only());
    let moto = Moto::start(Some(&ns.a.netns));
    moto.with_clients(async |c| c.create_bucket(BUCKET).await);
    moto.start_recording();
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("control.sock");
    // The flag flow log: SSE-KMS with a named key and the ACL AWS's delivery sends.
    let args = strings(&[
        "--aggregation-interval",
        "1",
        "--file-rollover-seconds",
        "1",
        "--no-imds",
        "--account-id",
        "123456789012",
        "--region",
        "us-east-1",
        "--destination",
        &format!("s3://{BUCKET}/kms"),
        "--endpoint-url",
        &moto.endpoint(),
        "--s3-sse",
        "aws:kms",
        "--s3-sse-kms-key-id",
        KMS_KEY,
        "--s3-acl",
        "bucket-owner-full-control",
        "--spool-dir",
        &dir.path().join("spool").display().to_string(),
        "--state-dir",
        &dir.path().join("state").display().to_string(),
        "--control-socket",
        &socket.display().to_string(),
        "--runtime-dir",
        &dir.path().join("run").display().to_string(),
    ]);
    let mut agent = AgentProcess::start(&ns.a, &args);
    // Two more through the API: SSE-S3 with a private ACL, and one that asks for nothing.
    let create = |prefix: &str, options: &str| {
        let request = format!(
            r#"{{"ResourceType":"NetworkInterface","ResourceIds":["{}"],"TrafficType":"ALL",
                "LogDestinationType":"s3","LogDestination":"arn:aws:s3:::{BUCKET}/{prefix}",
                "MaxAggregationInterval":1{options}}}"#,
            ns.a.iface
        );
        let out = Command::new(flowlog_bin())
            .args(["create-flow-logs", "--control-socket"])
            .arg(&socket)
            .args(["--cli-input-json", &request])
            .output()
            .expect("create-flow-logs");
        assert!(
            out.status.success(),
            "create-flow-logs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    create(
        "aes",
        r#","DestinationOptions":{"ServerSideEncryption":"AES256","ACL":"private"}"#,
    );
    create("plain", "");
    let described = Command::new(flowlog_bin())
        .args(["describe-flow-logs", "--control-socket"])
        .arg(&socket)
        .output()
        .expect("describe-flow-logs");
    let described: serde_json::Value =
        serde_json::from_slice(&described.stdout).expect("describe JSON");
    let options: BTreeMap<String, serde_json::Value> = described["FlowLogs"]
        .as_array()
        .expect("FlowLogs")
        .iter()
        .map(|f| {
            let dest = f["LogDestination"].as_str().expect("destination");
            (
                dest.rsplit('/').next().unwrap().to_string(),
                f["DestinationOptions"].clone(),
            )
        })
        .collect();
    assert_eq!(options["aes"]["ServerSideEncryption"], "AES256");
    assert_eq!(options["aes"]["ACL"], "private");
    assert_eq!(options["aes"].get("SSEKMSKeyId"), None);
    assert_eq!(options["plain"].get("ServerSideEncryption"), None);
    assert_eq!(options["kms"]["SSEKMSKeyId"], KMS_KEY);

    let sent = send_udp_flows(&ns.a, &ns.b, 7003, 2, 2, 80);
    // Until the flag flow log's objects hold the traffic and each API flow log has objects.
    let deadline = Instant::now() + Duration::from_secs(30);
    let objects = loop {
        let objects = moto.with_clients(async |c| c.objects(BUCKET).await);
        let under = |p: &str| {
            objects
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{p}/")))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let done = sums_of(&records_of_objects(&under("kms")), &sent) == sent
            && !under("aes").is_empty()
            && !under("plain").is_empty();
        if done {
            break objects;
        }
        assert!(
            Instant::now() < deadline,
            "objects so far: {:?}; agent log:\n{}",
            objects.keys().collect::<Vec<_>>(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(agent.stop().success(), "agent exit; log:\n{}", agent.log());

    // What S3 kept: HeadObject of every object.
    let kept: BTreeMap<String, (Option<String>, Option<String>)> = moto.with_clients(async |c| {
        let mut kept = BTreeMap::new();
        for key in objects.keys() {
            let head =
                c.s3.head_object()
                    .bucket(BUCKET)
                    .key(key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("head {key}: {e:?}"));
            kept.insert(
                key.clone(),
                (
                    head.server_side_encryption()
                        .map(|s| s.as_str().to_string()),
                    head.ssekms_key_id().map(str::to_string),
                ),
            );
        }
        kept
    });
    for (key, (sse, kms_key)) in &kept {
        let want = match key.split('/').next() {
            Some("kms") => (Some("aws:kms".to_string()), Some(KMS_KEY.to_string())),
            Some("aes") => (Some("AES256".to_string()), None),
            Some("plain") => (None, None),
            other => panic!("unexpected prefix {other:?}"),
        };
        assert_eq!((sse.clone(), kms_key.clone()), want, "{key}");
    }

    // What moto received: the headers of every PutObject, by prefix.
    let puts: Vec<serde_json::Value> = moto
        .recorded_requests()
        .into_iter()
        .filter(|r| {
            r["method"] == "PUT"
                && r["url"]
                    .as_str()
                    .is_some_and(|u| u.contains(&format!("/{BUCKET}/")))
        })
        .collect();
    let mut seen = BTreeMap::<&str, usize>::new();
    for put in &puts {
        let url = put["url"].as_str().expect("url");
        let prefix = ["kms", "aes", "plain"]
            .into_iter()
            .find(|p| url.contains(&format!("/{BUCKET}/{p}/")))
            .unwrap_or_else(|| panic!("PUT to an unexpected key: {url}"));
        *seen.entry(prefix).or_default() += 1;
        let got = (
            header(put, "x-amz-server-side-encryption"),
            header(put, "x-amz-server-side-encryption-aws-kms-key-id"),
            header(put, "x-amz-acl"),
        );
        let want = match prefix {
            "kms" => (
                Some("aws:kms"),
                Some(KMS_KEY),
                Some("bucket-owner-full-control"),
            ),
            "aes" => (Some("AES256"), None, Some("private")),
            _ => (None, None, None),
        };
        assert_eq!(got, want, "headers of PUT {url}");
    }
    for p in ["kms", "aes", "plain"] {
        let objects_under = kept
            .keys()
            .filter(|k| k.starts_with(&format!("{p}/")))
            .count();
        assert!(objects_under > 0, "no object under {p}/");
        assert!(
            seen.get(p).copied().unwrap_or(0) >= objects_under,
            "{p}: {:?} PUTs recorded for {objects_under} objects",
            seen.get(p)
        );
    }
}
