//! Faults between the agent and its destination that moto cannot produce, injected by the
//! fault proxy (`flowlog_tests::fault_proxy`) between the agent's `--endpoint-url` and moto,
//! under real traffic between two namespaces. Root only; namespaces prefixed `flfp`, addresses
//! 10.213.x.0/24 with x from 200 on.
//!
//! For each fault the test checks what the agent promises:
//! - S3: every record exactly once (the objects' records are exactly the traffic sent, no
//!   line twice, no batch acknowledged twice);
//! - CloudWatch Logs: every record at least once; the duplicates are measured (the stream holds
//!   each event exactly as often as moto accepted a request carrying it) and capped (only
//!   batches whose acknowledgement was lost come twice, once per lost acknowledgement);
//! - every failed attempt is in `flowlog_publish_failures_total` (exactly the faults the proxy
//!   applied) and every acknowledged batch in `flowlog_published_batches_total`;
//! - `DeliverLogsStatus` (describe-flow-logs) goes FAILED, with AWS's category, then SUCCESS;
//! - one error line for the episode, not one per retry, and one line when it ends.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use flowlog_tests::{
    delivery::{metric, read_metrics, wait_for_delivery_status},
    fault_proxy::{Exchange, Fault, Outcome, Times},
    netns::Setup,
    proxied::{BUCKET, DEADLINE, FLOW_LOG_ID, Kind, ProxiedAgent},
    publish::{send_udp_flows, summed_per_tuple},
    records::{Record, Tuple},
};

/// `--publish-timeout` of the stall test (the default, 120 s, fits a 75 MB upload).
const PUBLISH_TIMEOUT: &str = "2";
/// Longer than that client timeout.
const STALL: Duration = Duration::from_secs(5);

/// The test host of fault test `subnet`.
fn setup(subnet: u8) -> Setup {
    Setup::new(subnet).ipv4_only().prefix("flfp")
}

/// What one fault episode showed, for the report.
#[derive(Debug)]
struct Seen {
    faults: usize,
    failed_message: String,
    duplicates: usize,
}

/// One fault episode under traffic: a first batch delivered (the path works); the fault is
/// injected and traffic sent; the window's batch meets the fault and a retry meets it again;
/// describe-flow-logs says FAILED with `category` and `cause`; the fault ends (recovers, or was
/// used up); describe says SUCCESS; more traffic; SIGTERM. Then everything the module doc
/// lists is checked. `agent_args`: more `flowlog run` options.
fn episode(
    subnet: u8,
    kind: Kind,
    (fault, times): (Fault, Times),
    (category, cause): (&str, &str),
    agent_args: &[&str],
) -> Seen {
    let mut rig = ProxiedAgent::start(setup(subnet), kind, None, agent_args);
    let call = kind.publish_call();
    rig.proxy
        .wait_for("an acknowledged first batch", DEADLINE, |seen| {
            seen.iter()
                .any(|e| e.matched_by(&call) && e.outcome == Outcome::Forwarded(200))
        });
    let (a, b) = (&rig.ns.a, &rig.ns.b);

    // The open window's batch is the next to publish: it meets the fault.
    rig.proxy.inject(call.clone(), fault.clone(), times);
    let mut expected = send_udp_flows(a, b, 7001, 3, 4, 100);
    rig.proxy
        .wait_for("a retry meeting the fault again", DEADLINE, |seen| {
            seen.iter()
                .filter(|e| e.matched_by(&call) && matches!(e.outcome, Outcome::Faulted(..)))
                .count()
                >= 2
        });
    let failed_message = wait_for_delivery_status(&rig.socket(), FLOW_LOG_ID, "FAILED", DEADLINE)
        .expect("a FAILED flow log has a DeliverLogsErrorMessage");
    assert!(
        failed_message.starts_with(&format!("{category}: ")) && failed_message.contains(cause),
        "DeliverLogsErrorMessage {failed_message:?}: want {category:?} and {cause:?}"
    );
    if times == Times::UntilRecovered {
        rig.proxy.recover();
    }
    let message = wait_for_delivery_status(&rig.socket(), FLOW_LOG_ID, "SUCCESS", DEADLINE);
    assert_eq!(message, None, "no error message once delivering again");
    rig.wait_until_delivered(&expected);

    // Traffic after the episode is delivered as usual.
    expected.extend(send_udp_flows(a, b, 7002, 2, 3, 200));
    rig.wait_until_delivered(&expected);
    // A stalled request reaches moto late, after its retry: wait for it to land.
    rig.proxy
        .wait_for("the stalled requests' late arrival", DEADLINE, |seen| {
            !seen
                .iter()
                .any(|e| matches!(e.outcome, Outcome::Faulted(Fault::Stall(_), None)))
        });
    let status = rig.agent.stop();
    let log = rig.agent.log();
    assert!(status.success(), "agent exit {status}; log:\n{log}");

    let faults = rig.proxy.faulted(&call);
    if let Times::Count(n) = times {
        assert_eq!(
            faults, n as usize,
            "a counted fault is applied exactly {n} times"
        );
    }
    // Retries visible: every failed attempt counted, every acknowledged batch counted.
    let metrics = read_metrics(&rig.metrics_file());
    let destination = kind.destination();
    let labels = [
        ("flow_log_id", FLOW_LOG_ID),
        ("destination", destination.as_str()),
    ];
    assert_eq!(
        metric(&metrics, "flowlog_publish_failures_total", &labels),
        faults as f64,
        "failed attempts = faults the proxy applied; log:\n{log}"
    );
    let acknowledged = rig.acknowledged();
    assert_eq!(
        metric(&metrics, "flowlog_published_batches_total", &labels),
        acknowledged.len() as f64,
        "published batches = acknowledged calls"
    );
    assert_eq!(
        metric(
            &metrics,
            "flowlog_spool_batches",
            &[("flow_log_id", FLOW_LOG_ID)]
        ),
        0.0,
        "nothing left in the spool"
    );

    // One error line for the episode, one line when it ended.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot publish"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one error line per episode:\n{}",
        errors.join("\n")
    );
    assert!(errors[0].contains(cause), "{}", errors[0]);
    assert_eq!(
        log.matches("destination accepts batches again").count(),
        1,
        "log:\n{log}"
    );

    let records = rig.delivered();
    let duplicates = match kind {
        Kind::S3 => {
            check_exactly_once(&rig, &records, &expected);
            0
        }
        Kind::Logs => check_at_least_once(&rig, &records, &expected),
    };
    Seen {
        faults,
        failed_message,
        duplicates,
    }
}

/// S3: the objects hold every record sent exactly once; each object key was acknowledged once;
/// the bucket holds exactly the keys moto was asked to write.
fn check_exactly_once(
    rig: &ProxiedAgent,
    records: &[Record],
    expected: &BTreeMap<Tuple, (u64, u64)>,
) {
    let lines: BTreeSet<&str> = records.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(lines.len(), records.len(), "a record is in two objects");
    let ok: Vec<&Record> = records
        .iter()
        .filter(|r| r.tuple.is_some_and(|t| expected.contains_key(&t)))
        .collect();
    assert_eq!(ok.len(), expected.len(), "one record per flow");
    assert_eq!(summed_per_tuple(&ok), *expected, "every packet once");
    let other: Vec<&str> = records
        .iter()
        .filter(|r| r.tuple.is_some_and(|t| !expected.contains_key(&t)))
        .map(|r| r.line.as_str())
        .collect();
    assert_eq!(
        other,
        Vec::<&str>::new(),
        "only the test's traffic is on the veth"
    );

    let acknowledged: Vec<String> = rig.acknowledged().into_iter().map(|e| e.path).collect();
    let distinct: BTreeSet<&String> = acknowledged.iter().collect();
    assert_eq!(
        distinct.len(),
        acknowledged.len(),
        "an object acknowledged twice"
    );
    let written: BTreeSet<String> = rig
        .accepted_by_moto()
        .into_iter()
        .map(|e| e.path[BUCKET.len() + 2..].to_string())
        .collect();
    let keys: BTreeSet<String> = rig
        .moto
        .with_clients(async |c| c.objects(BUCKET).await)
        .into_keys()
        .collect();
    assert_eq!(keys, written, "the bucket holds exactly the keys written");
}

/// CloudWatch Logs: every record sent at least once; the stream holds each event exactly as
/// often as moto accepted a PutLogEvents carrying it; the events delivered more than once are
/// those of calls whose answer was lost. Returns the number of extra copies.
fn check_at_least_once(
    rig: &ProxiedAgent,
    records: &[Record],
    expected: &BTreeMap<Tuple, (u64, u64)>,
) -> usize {
    let distinct: BTreeMap<&str, &Record> = records.iter().map(|r| (r.line.as_str(), r)).collect();
    let ok: Vec<&Record> = distinct
        .values()
        .filter(|r| r.tuple.is_some_and(|t| expected.contains_key(&t)))
        .copied()
        .collect();
    assert_eq!(
        summed_per_tuple(&ok),
        *expected,
        "every packet at least once"
    );

    let mut in_stream: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        *in_stream.entry(r.line.clone()).or_default() += 1;
    }
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    for e in rig.accepted_by_moto() {
        for message in put_log_events_messages(&e) {
            *accepted.entry(message).or_default() += 1;
        }
    }
    assert_eq!(
        in_stream, accepted,
        "the stream holds each event as often as moto accepted it"
    );
    let duplicates: usize = in_stream.values().map(|n| n - 1).sum();
    // Only calls whose acknowledgement was lost add copies: one copy of their events each.
    let lost: Vec<Exchange> = rig
        .proxy
        .matching(&rig.kind.publish_call())
        .into_iter()
        .filter(|e| e.outcome == Outcome::Faulted(Fault::DropResponse, Some(200)))
        .collect();
    let lost_events: usize = lost.iter().map(|e| put_log_events_messages(e).len()).sum();
    assert_eq!(
        duplicates, lost_events,
        "extra copies = events of the lost acknowledgements"
    );
    // The cap: at most one PutLogEvents batch per lost acknowledgement.
    assert!(duplicates <= lost.len() * flowlog_agent::publish::events::MAX_BATCH_EVENTS);
    duplicates
}

/// The messages of the log events in a PutLogEvents request body.
fn put_log_events_messages(e: &Exchange) -> Vec<String> {
    let body: serde_json::Value = serde_json::from_slice(&e.body)
        .unwrap_or_else(|err| panic!("PutLogEvents body is not JSON ({err}): {e:?}"));
    body["logEvents"]
        .as_array()
        .unwrap_or_else(|| panic!("no logEvents: {body}"))
        .iter()
        .map(|ev| ev["message"].as_str().expect("message").to_string())
        .collect()
}

fn report(name: &str, seen: &Seen) {
    eprintln!(
        "FAULT {name}: retries (failed attempts) {}, FAILED message {:?}, duplicates {}",
        seen.faults, seen.failed_message, seen.duplicates
    );
}

#[test]
fn s3_slow_down_503_three_times() {
    let seen = episode(
        200,
        Kind::S3,
        (
            Fault::s3_error(503, "SlowDown", "Please reduce your request rate."),
            Times::Count(3),
        ),
        ("Rate limited", "SlowDown (HTTP 503)"),
        &[],
    );
    report("S3 503 SlowDown x3", &seen);
}

#[test]
fn s3_internal_error_500() {
    let seen = episode(
        201,
        Kind::S3,
        (
            Fault::s3_error(
                500,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ),
            Times::UntilRecovered,
        ),
        ("Unknown error", "InternalError (HTTP 500)"),
        &[],
    );
    report("S3 500 InternalError", &seen);
}

#[test]
fn s3_access_denied_403_that_recovers() {
    let seen = episode(
        202,
        Kind::S3,
        (
            Fault::s3_error(403, "AccessDenied", "Access Denied"),
            Times::UntilRecovered,
        ),
        ("Access error", "AccessDenied (HTTP 403)"),
        &[],
    );
    report("S3 403 AccessDenied", &seen);
}

#[test]
fn s3_connection_reset_mid_request() {
    let seen = episode(
        203,
        Kind::S3,
        (Fault::ResetMidRequest, Times::UntilRecovered),
        ("Unknown error", "Connection reset by peer"),
        &[],
    );
    report("S3 connection reset", &seen);
}

#[test]
fn s3_stall_longer_than_the_client_timeout() {
    let seen = episode(
        204,
        Kind::S3,
        (Fault::Stall(STALL), Times::UntilRecovered),
        ("Unknown error", "did not answer in time"),
        &["--publish-timeout", PUBLISH_TIMEOUT],
    );
    report("S3 stall", &seen);
}

#[test]
fn s3_put_object_accepted_but_its_answer_lost() {
    let seen = episode(
        205,
        Kind::S3,
        (Fault::DropResponse, Times::UntilRecovered),
        (
            "Unknown error",
            "connection closed before message completed",
        ),
        &[],
    );
    report("S3 PutObject answer lost", &seen);
}

#[test]
fn logs_throttling_exception() {
    let seen = episode(
        206,
        Kind::Logs,
        (
            Fault::logs_error(400, "ThrottlingException", "Rate exceeded"),
            Times::UntilRecovered,
        ),
        ("Rate limited", "ThrottlingException (HTTP 400)"),
        &[],
    );
    assert_eq!(seen.duplicates, 0, "a refused call adds no copies");
    report("CWL ThrottlingException", &seen);
}

#[test]
fn logs_service_unavailable_exception() {
    let seen = episode(
        207,
        Kind::Logs,
        (
            Fault::logs_error(
                500,
                "ServiceUnavailableException",
                "The service cannot complete the request.",
            ),
            Times::UntilRecovered,
        ),
        ("Unknown error", "ServiceUnavailableException (HTTP 500)"),
        &[],
    );
    assert_eq!(seen.duplicates, 0, "a refused call adds no copies");
    report("CWL ServiceUnavailableException", &seen);
}

#[test]
fn logs_put_log_events_accepted_but_its_answer_lost() {
    let seen = episode(
        208,
        Kind::Logs,
        (Fault::DropResponse, Times::UntilRecovered),
        (
            "Unknown error",
            "connection closed before message completed",
        ),
        &[],
    );
    assert!(
        seen.duplicates > 0,
        "a lost acknowledgement repeats its batch"
    );
    report("CWL PutLogEvents answer lost", &seen);
}

/// `flowlog create-flow-logs` against the rig's agent: a second flow log on the same
/// interface, ALL traffic, 1 s windows, to files under `out`. Returns its id.
fn create_file_flow_log(rig: &ProxiedAgent, out: &std::path::Path) -> String {
    let request = serde_json::json!({
        "ResourceType": "NetworkInterface",
        "ResourceIds": [rig.ns.a.iface],
        "TrafficType": "ALL",
        "LogDestinationType": "file",
        "LogDestination": out.display().to_string(),
        "MaxAggregationInterval": 1,
    });
    let answer = std::process::Command::new(flowlog_tests::agent::flowlog_bin())
        .args(["create-flow-logs", "--control-socket"])
        .arg(rig.socket())
        .args(["--cli-input-json", &request.to_string()])
        .output()
        .expect("run flowlog create-flow-logs");
    assert!(
        answer.status.success(),
        "create-flow-logs: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer.stdout).expect("JSON answer");
    assert_eq!(answer["Unsuccessful"], serde_json::json!([]), "{answer}");
    answer["FlowLogIds"][0]
        .as_str()
        .expect("a flow log id")
        .to_string()
}

/// Two flow logs in one agent, one publishing to S3 through a failing endpoint and one to
/// files: each has its own publish and spool metrics (`flow_log_id`). While the S3 flow log's
/// batches pile up in its spool, the file flow log's spool stays empty and its failure counter
/// at 0; at the end each one's published records are exactly what its destination holds.
#[test]
fn two_flow_logs_in_one_agent_have_their_own_publish_and_spool_metrics() {
    let mut rig = ProxiedAgent::start(setup(209), Kind::S3, None, &[]);
    let out = rig.dir.path().join("second");
    let second = create_file_flow_log(&rig, &out);
    let call = Kind::S3.publish_call();
    rig.proxy
        .wait_for("an acknowledged first batch", DEADLINE, |seen| {
            seen.iter()
                .any(|e| e.matched_by(&call) && e.outcome == Outcome::Forwarded(200))
        });
    rig.proxy.inject(
        call.clone(),
        Fault::s3_error(503, "SlowDown", "Please reduce your request rate."),
        Times::UntilRecovered,
    );
    let (a, b) = (&rig.ns.a, &rig.ns.b);
    let expected = send_udp_flows(a, b, 7001, 3, 4, 100);

    let s3_destination = Kind::S3.destination();
    let file_destination = format!("file:{}", out.display());
    let first = [("flow_log_id", FLOW_LOG_ID)];
    let other = [("flow_log_id", second.as_str())];
    let first_publish = [
        ("flow_log_id", FLOW_LOG_ID),
        ("destination", s3_destination.as_str()),
    ];
    let other_publish = [
        ("flow_log_id", second.as_str()),
        ("destination", file_destination.as_str()),
    ];
    // The metrics file is rewritten after every window: the S3 flow log's spool grows.
    let deadline = std::time::Instant::now() + DEADLINE;
    let during = loop {
        let m = read_metrics(&rig.metrics_file());
        if m.contains_key(&flowlog_tests::delivery::sample(
            "flowlog_spool_batches",
            &other,
        )) && metric(&m, "flowlog_spool_batches", &first) >= 3.0
        {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the S3 flow log's spool did not grow"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The file flow log delivers on: at most the batch of the window that just closed waits.
    assert!(
        metric(&during, "flowlog_spool_batches", &other) <= 1.0,
        "{during:?}"
    );
    assert!(metric(&during, "flowlog_published_batches_total", &other_publish) >= 1.0);
    assert_eq!(
        metric(&during, "flowlog_publish_failures_total", &other_publish),
        0.0
    );
    assert!(metric(&during, "flowlog_publish_failures_total", &first_publish) >= 1.0);
    assert!(metric(&during, "flowlog_spool_records", &first) >= 3.0);

    rig.proxy.recover();
    rig.wait_until_delivered(&expected);
    let status = rig.agent.stop();
    assert!(
        status.success(),
        "agent exit {status}; log:\n{}",
        rig.agent.log()
    );

    let end = read_metrics(&rig.metrics_file());
    let s3_records = rig.delivered();
    let file_records =
        flowlog_tests::publish::records_of_objects(&flowlog_tests::publish::file_objects(&out));
    for (labels, publish, records) in [
        (&first, &first_publish, &s3_records),
        (&other, &other_publish, &file_records),
    ] {
        assert_eq!(
            metric(&end, "flowlog_spool_batches", labels),
            0.0,
            "{labels:?}"
        );
        assert_eq!(
            metric(&end, "flowlog_spool_records", labels),
            0.0,
            "{labels:?}"
        );
        assert_eq!(
            metric(&end, "flowlog_published_records_total", publish),
            records.len() as f64,
            "{labels:?}: published records = records at the destination"
        );
        let ok: Vec<&Record> = records.iter().filter(|r| r.tuple.is_some()).collect();
        assert_eq!(
            summed_per_tuple(&ok),
            expected,
            "{labels:?}: the traffic, once"
        );
    }
    assert_eq!(
        metric(&end, "flowlog_publish_failures_total", &first_publish),
        rig.proxy.faulted(&call) as f64
    );
    assert_eq!(
        metric(&end, "flowlog_publish_failures_total", &other_publish),
        0.0
    );
}
