//! The S3 destination against a real S3 endpoint (moto_server over HTTP, spoken to by the real
//! SDK clients), with real traffic between two namespaces. Root only. moto runs inside the
//! agent's namespace, so the agent reaches it on that namespace's loopback and the watched
//! veth carries only the test's traffic.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::Duration,
};

use flowlog_agent::publish::{Batch, spool};
use flowlog_tests::{
    agent::{flowlog_bin, unix_now, wait_for_window_start},
    moto::Moto,
    netns::{Namespaces, Setup},
    publish::{
        AgentProcess, file_objects, object_records, records_of_objects,
        send_in_consecutive_windows, send_udp_flows, sorted_lines, spooled_batches,
        summed_per_tuple,
    },
    records::{Record, Tuple},
};

const BUCKET: &str = "flowlog-test";
const PREFIX: &str = "my-logs";
const FLOW_LOG_ID: &str = "fl-0123456789abcdef0";
const ACCOUNT: &str = "123456789012";
/// Seconds per window, and per file (so every window's object is published when it closes).
const INTERVAL: u64 = 2;

fn common_args(agent_dir: &std::path::Path) -> Vec<String> {
    [
        "--aggregation-interval",
        &INTERVAL.to_string(),
        "--file-rollover-seconds",
        &INTERVAL.to_string(),
        "--flow-log-id",
        FLOW_LOG_ID,
        "--account-id",
        ACCOUNT,
        "--region",
        "us-east-1",
        "--spool-dir",
        &agent_dir.join("spool").to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn s3_args(agent_dir: &std::path::Path, moto: &Moto) -> Vec<String> {
    let mut args = common_args(agent_dir);
    args.extend([
        "--destination".into(),
        format!("s3://{BUCKET}/{PREFIX}"),
        "--endpoint-url".into(),
        moto.endpoint(),
    ]);
    args
}

/// Every batch in the spool directory `spool`, as object key → body (each must be an object).
fn spooled_objects(spool: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut objects = BTreeMap::new();
    for e in std::fs::read_dir(spool).expect("spool dir") {
        let path = e.expect("spool entry").path();
        if path.extension().is_some_and(|x| x == "batch") {
            match spool::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display())) {
                Batch::Object(o) => objects.insert(o.key, o.body.to_vec()),
                other => panic!("unexpected batch {other:?}"),
            };
        }
    }
    objects
}

/// Two agents on the same veth at once, one writing files and one publishing to S3: over the
/// windows both watched completely, the S3 objects (listed, downloaded, decompressed) hold
/// exactly the records the file destination wrote, under the same keys (plus the prefix) and
/// byte for byte; and those records are exactly the traffic sent.
#[test]
fn s3_objects_hold_exactly_what_the_file_destination_writes() {
    let ns = Namespaces::new(Setup::new(150).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let moto = Moto::start(Some(&a.netns));
    moto.with_clients(async |c| c.create_bucket(BUCKET).await);

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    let mut file_args = common_args(&dir.path().join("file"));
    file_args.extend(["--destination".into(), format!("file:{}", out.display())]);
    let mut file_agent = AgentProcess::start(a, &file_args);
    let mut s3_agent = AgentProcess::start(a, &s3_args(&dir.path().join("s3"), &moto));

    // Three windows of traffic, all seen whole by both agents.
    let (w0, expected) = send_in_consecutive_windows(
        a,
        b,
        INTERVAL,
        &[(7001, 3, 4, 100), (7002, 2, 6, 200), (7003, 1, 9, 50)],
    );
    let w3 = w0 + 3 * INTERVAL;
    assert!(unix_now() < w3 as f64, "traffic overran its windows");
    // The window w2 closes at w3; its object is published right after.
    std::thread::sleep(Duration::from_secs_f64(w3 as f64 + 1.0 - unix_now()));
    assert!(
        s3_agent.stop().success(),
        "s3 agent exit; log:\n{}",
        s3_agent.log()
    );
    assert!(
        file_agent.stop().success(),
        "file agent exit; log:\n{}",
        file_agent.log()
    );

    let files = file_objects(&out);
    let s3 = moto.with_clients(async |c| c.objects(BUCKET).await);
    let in_windows = |r: &&Record| r.start >= w0 && r.end < w3;
    let file_records = records_of_objects(&files);
    let s3_records = records_of_objects(&s3);
    let file_in: Vec<&Record> = file_records.iter().filter(in_windows).collect();
    let s3_in: Vec<&Record> = s3_records.iter().filter(in_windows).collect();
    assert_eq!(
        sorted_lines(&s3_in),
        sorted_lines(&file_in),
        "S3 and file records of windows [{w0}, {w3})"
    );

    // Exactly the traffic: one record per flow, egress on a's veth.
    let got: BTreeMap<Tuple, (u64, u64)> = s3_in
        .iter()
        .map(|r| {
            (
                r.tuple.expect("OK record"),
                (r.packets.unwrap(), r.bytes.unwrap()),
            )
        })
        .collect();
    assert_eq!(
        s3_in.len(),
        6,
        "records:\n{}",
        sorted_lines(&s3_in).join("\n")
    );
    assert_eq!(got, expected);
    for r in &s3_in {
        assert_eq!(
            (
                r.interface_id.as_str(),
                r.field("account-id"),
                r.field("action")
            ),
            (a.iface.as_str(), ACCOUNT, "ACCEPT")
        );
    }

    // Same key layout and naming: every S3 key is the prefix plus a file key, and objects
    // whose records all lie in the compared windows are byte-identical.
    let keys_s3: BTreeSet<&str> = s3
        .keys()
        .map(|k| k.strip_prefix(&format!("{PREFIX}/")).expect("prefix"))
        .collect();
    for k in &keys_s3 {
        assert!(
            k.starts_with(&format!("AWSLogs/{ACCOUNT}/vpcflowlogs/us-east-1/"))
                && k.contains(&format!("/{ACCOUNT}_vpcflowlogs_us-east-1_{FLOW_LOG_ID}_"))
                && k.ends_with(".log.gz"),
            "{k}"
        );
    }
    let whole: Vec<&String> = files
        .iter()
        .filter(|(k, body)| object_records(k, body).iter().all(|r| in_windows(&r)))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        whole.len(),
        2,
        "objects of windows w1 and w2 (w0's also holds the startup window's NODATA)"
    );
    // Each agent process adds its own run id to the names' hash (so two agents can never
    // overwrite each other's objects): the two destinations' names agree up to that hash, and
    // names are minute-resolution, so an object is matched by that name and its exact bytes.
    for k in whole {
        let body = &files[k];
        let twins: Vec<&String> = s3
            .iter()
            .filter(|(s3k, s3body)| {
                without_hash(s3k.strip_prefix(&format!("{PREFIX}/")).expect("prefix"))
                    == without_hash(k)
                    && *s3body == body
            })
            .map(|(s3k, _)| s3k)
            .collect();
        assert_eq!(
            twins.len(),
            1,
            "object {k}: exactly one S3 object with its name (up to the hash) and its bytes"
        );
    }
}

/// An object key without its 8-hex-digit hash: `..._20261126T1620Z_fe123456.log.gz` →
/// `..._20261126T1620Z.log.gz`.
fn without_hash(key: &str) -> String {
    let (stem, ext) = key.split_once(".log").expect("a .log.gz key");
    let (name, hash) = stem.rsplit_once('_').expect("a hash");
    assert!(
        hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );
    format!("{name}.log{ext}")
}

/// The endpoint disappears for more than two windows, comes back empty (moto keeps no state),
/// so the agent first meets NoSuchBucket, then the bucket is recreated: every record of every
/// window is delivered exactly once (objects from before the outage were saved first; a key
/// seen twice must have the same body, and no flow is counted twice across objects).
#[test]
fn s3_outage_of_two_windows_loses_and_duplicates_nothing() {
    let ns = Namespaces::new(Setup::new(151).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let mut moto = Moto::start(Some(&a.netns));
    moto.with_clients(async |c| c.create_bucket(BUCKET).await);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = AgentProcess::start(a, &s3_args(dir.path(), &moto));

    let w0 = wait_for_window_start(INTERVAL, Duration::from_millis(300));
    let mut expected = BTreeMap::new();
    let mut port = 7100;
    let mut window = |expected: &mut BTreeMap<Tuple, (u64, u64)>| {
        port += 1;
        expected.extend(send_udp_flows(a, b, port, 2, 3, 64));
    };
    window(&mut expected); // w0
    wait_for_window_start(INTERVAL, Duration::from_millis(300));
    window(&mut expected); // w1
    let delivered_before = expected.clone();
    wait_for_window_start(INTERVAL, Duration::from_millis(300));
    window(&mut expected); // w2
    // Keep what was delivered so far (w0 and w1: polled until there, before w2 closes), then
    // take the endpoint away for windows w2..w4.
    let w2_closes = (w0 + 3 * INTERVAL) as f64;
    let before = loop {
        let objects = moto.with_clients(async |c| c.objects(BUCKET).await);
        let ok: BTreeMap<Tuple, (u64, u64)> = records_of_objects(&objects)
            .iter()
            .filter(|r| r.tuple.is_some())
            .map(|r| (r.tuple.unwrap(), (r.packets.unwrap(), r.bytes.unwrap())))
            .collect();
        if ok == delivered_before {
            break objects;
        }
        assert!(
            unix_now() < w2_closes - 0.1,
            "w0 and w1 not delivered before w2 closed: {ok:?}; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    moto.stop();
    let down_at = unix_now();
    for _ in 0..2 {
        wait_for_window_start(INTERVAL, Duration::from_millis(300));
        window(&mut expected); // w3, w4
    }
    wait_for_window_start(INTERVAL, Duration::from_millis(500));
    moto.restart();
    assert!(unix_now() - down_at >= (2 * INTERVAL) as f64);
    window(&mut expected); // w5
    agent.wait_for_log("NoSuchBucket", Duration::from_secs(30));
    moto.with_clients(async |c| c.create_bucket(BUCKET).await);
    wait_for_window_start(INTERVAL, Duration::from_millis(300));
    window(&mut expected); // w6
    wait_for_window_start(INTERVAL, Duration::from_millis(300));
    let status = agent.stop();
    assert!(
        status.success(),
        "agent exit {status}; log:\n{}",
        agent.log()
    );
    let log = agent.log();
    let spooled_left = spooled_batches(&dir.path().join("spool"));
    assert_eq!(
        spooled_left, 0,
        "everything delivered before exit; log:\n{log}"
    );

    let after = moto.with_clients(async |c| c.objects(BUCKET).await);
    let mut all = before.clone();
    for (k, body) in &after {
        if let Some(old) = before.get(k) {
            assert_eq!(
                old, body,
                "replayed object {k} differs from the first delivery"
            );
        }
        all.insert(k.clone(), body.clone());
    }
    let records = records_of_objects(&all);
    let ok: Vec<&Record> = records
        .iter()
        .filter(|r| r.tuple.is_some() && r.start >= w0)
        .collect();
    let got = summed_per_tuple(&ok);
    assert_eq!(
        ok.len(),
        expected.len(),
        "one record per flow, none twice:\n{}",
        sorted_lines(&ok).join("\n")
    );
    assert_eq!(got, expected, "every packet sent, counted once");
    // One error line per cause: the endpoint gone, then the missing bucket.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot publish"))
        .collect();
    eprintln!("error lines:\n{}", errors.join("\n"));
    assert_eq!(errors.len(), 2, "error lines:\n{}", errors.join("\n"));
    assert!(errors[0].contains("Connection refused"), "{}", errors[0]);
    assert!(
        errors[1].contains("NoSuchBucket") && errors[1].contains("the bucket does not exist"),
        "{}",
        errors[1]
    );
    assert_eq!(
        log.matches("destination accepts batches again").count(),
        1,
        "log:\n{log}"
    );
}

/// Batches spooled while the bucket does not exist survive a SIGKILL of the agent and are
/// delivered, byte for byte, by the next agent.
#[test]
fn spooled_batches_survive_sigkill_and_the_next_agent_delivers_them() {
    let ns = Namespaces::new(Setup::new(152).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let moto = Moto::start(Some(&a.netns));
    let dir = tempfile::tempdir().expect("temp dir");
    let args = s3_args(dir.path(), &moto);
    let mut agent = AgentProcess::start(a, &args);
    agent.wait_for_log(
        "startup check of the destination failed",
        Duration::from_secs(20),
    );

    let (w0, expected) = send_in_consecutive_windows(
        a,
        b,
        INTERVAL,
        &[(7201, 2, 5, 80), (7202, 3, 2, 80), (7203, 1, 7, 80)],
    );
    // w2's object is spooled when w2 closes, at w0 + 3 intervals.
    std::thread::sleep(Duration::from_secs_f64(
        (w0 + 3 * INTERVAL) as f64 + 0.8 - unix_now(),
    ));
    agent.kill();
    let log = agent.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot publish"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one error line for the missing bucket:\n{log}"
    );
    assert!(errors[0].contains("NoSuchBucket"), "{}", errors[0]);

    // Keyed as in the bucket: prefix included.
    let spooled: BTreeMap<String, Vec<u8>> = spooled_objects(&dir.path().join("spool"))
        .into_iter()
        .map(|(k, body)| (format!("{PREFIX}/{k}"), body))
        .collect();
    // One object per 5-minute slot (here: per window) that had records.
    let slots: BTreeSet<u64> = records_of_objects(&spooled)
        .iter()
        .map(|r| r.end - r.end % INTERVAL)
        .collect();
    assert_eq!(
        spooled.len(),
        slots.len(),
        "one spooled object per slot: {:?}",
        spooled.keys()
    );
    assert!(
        slots.is_superset(&[w0, w0 + INTERVAL, w0 + 2 * INTERVAL].into()),
        "slots {slots:?}"
    );
    let spooled_ok: Vec<Record> = records_of_objects(&spooled)
        .into_iter()
        .filter(|r| r.tuple.is_some())
        .collect();
    let got: BTreeMap<Tuple, (u64, u64)> = spooled_ok
        .iter()
        .map(|r| (r.tuple.unwrap(), (r.packets.unwrap(), r.bytes.unwrap())))
        .collect();
    assert_eq!(got, expected, "the spool holds every record sent");

    moto.with_clients(async |c| c.create_bucket(BUCKET).await);
    agent.spawn(a, &args);
    agent.wait_for_log(
        "spool holds batches an earlier run did not deliver",
        Duration::from_secs(5),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let objects = moto.with_clients(async |c| c.objects(BUCKET).await);
        if spooled.keys().all(|k| objects.contains_key(k)) {
            break objects;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spooled objects not delivered; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (k, body) in &spooled {
        assert_eq!(delivered.get(k), Some(body), "object {k}");
    }
    assert!(agent.stop().success(), "log:\n{}", agent.log());
}

/// A malformed destination is one line on stderr and a non-zero exit, before anything runs.
#[test]
fn bad_destination_is_one_line_and_a_nonzero_exit() {
    for (dest, says) in [
        ("s3://Bad_Bucket/x", "invalid S3 bucket name \"Bad_Bucket\""),
        (
            "ftp://host/x",
            "unknown destination \"ftp://host/x\": use one of file:DIR",
        ),
        ("arn:aws:s3:::bucket/AWSLogs", "AWSLogs is reserved"),
    ] {
        let out = Command::new(flowlog_bin())
            .args(["run", "--destination", dest])
            .output()
            .expect("run flowlog");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dest}: {stderr}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(first.contains(says), "{dest}: {stderr}");
    }
}

/// SIGTERM while the destination refuses (no such bucket): the agent still exits 0, says how
/// many batches and records it leaves, and they are in the spool, every record sent included.
#[test]
fn undelivered_batches_stay_in_the_spool_at_shutdown_and_exit_is_0() {
    let ns = Namespaces::new(Setup::new(153).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let moto = Moto::start(Some(&a.netns));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = AgentProcess::start(a, &s3_args(dir.path(), &moto));
    wait_for_window_start(INTERVAL, Duration::from_millis(300));
    let expected = send_udp_flows(a, b, 7301, 4, 3, 120);
    wait_for_window_start(INTERVAL, Duration::from_millis(300));
    let status = agent.stop();
    let log = agent.log();
    assert!(status.success(), "exit {status}; log:\n{log}");

    let spooled = spooled_objects(&dir.path().join("spool"));
    let records = records_of_objects(&spooled);
    let got: BTreeMap<Tuple, (u64, u64)> = records
        .iter()
        .filter(|r| r.tuple.is_some())
        .map(|r| (r.tuple.unwrap(), (r.packets.unwrap(), r.bytes.unwrap())))
        .collect();
    assert_eq!(got, expected, "the spool holds the traffic");
    let warning = log
        .lines()
        .find(|l| l.contains("not delivered before exit"))
        .unwrap_or_else(|| panic!("log:\n{log}"));
    assert!(
        warning.contains(&format!(
            "batches={} records={}",
            spooled.len(),
            records.len()
        )),
        "{warning} (spool: {} batches, {} records)",
        spooled.len(),
        records.len()
    );
}
