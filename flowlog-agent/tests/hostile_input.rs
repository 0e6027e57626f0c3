//! Hostile input to the agent's parsers (issue 15, item 3): whatever the bytes, an error (or a
//! value), never a panic. Property tests (proptest) over arbitrary input and over input shaped
//! like the real thing and then damaged:
//!
//! - the `LogFormat` parser (`--log-format`, `LogFormat` of a request);
//! - the create-flow-logs JSON parser, its validation, the CLI shorthand, the control socket's
//!   request handler and a `--flow-logs` file;
//! - the spool file reader and the write-ahead log reader, and a spool directory full of
//!   strange files.

use std::{
    fs,
    sync::{Arc, LazyLock, Mutex},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flowlog_agent::{
    flowlogs::{
        api::{
            CreateFlowLogsRequest, DeleteFlowLogsRequest, DescribeFlowLogsRequest, parse_request,
            parse_shorthand,
        },
        control::{ControlAnswer, RegistryService},
        file,
        registry::Registry,
        spec::FlowLogSpec,
        store::Store,
    },
    inventory::metadata::Metadata,
    publish::batch::FinishedObject,
    publish::layout::{FileFormat, ObjectLayout},
    publish::wal::{self, WalHeader, WalWriter},
    publish::{
        Batch, LogEvent, LogEventBatch, Spool,
        spool::{self, DEFAULT_SPOOL_MAX_BYTES},
    },
    records::format::{Field, LogFormat},
};
use proptest::{collection::vec, prelude::*, sample::select};
use serde_json::Value;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_000_000, 0).expect("time")
}

/// Every `${field}` name and the bits a format is made of.
fn format_piece() -> impl Strategy<Value = String> {
    let names: Vec<String> = Field::ALL
        .iter()
        .map(|f| format!("${{{}}}", f.name()))
        .collect();
    prop_oneof![
        4 => select(names),
        2 => select(vec![" ", "  ", "\t", ",", "$", "${", "}", "${}", "${version", "version}", "\n", "${ version}"])
            .prop_map(str::to_string),
        1 => any::<String>(),
        1 => "\\$\\{[a-z-]{0,12}\\}",
    ]
}

/// Strings AWS's members take, and near misses.
fn member_value() -> impl Strategy<Value = String> {
    select(vec![
        "VPC",
        "Subnet",
        "NetworkInterface",
        "TransitGateway",
        "*",
        "vpc-0123",
        "subnet-1",
        "eni-0a",
        "eth0",
        "veth*",
        "10.0.0.0/8",
        "fd00::/64",
        "300.1.1.1/33",
        "02:00:00:00:00:01",
        "ACCEPT",
        "REJECT",
        "ALL",
        "accept",
        "s3",
        "file",
        "cloud-watch-logs",
        "kinesis-data-firehose",
        "arn:aws:s3:::bucket",
        "arn:aws:s3:::bucket/AWSLogs",
        "arn:aws:s3:::b",
        "arn:aws:logs:us-east-1:1:log-group:g:*",
        "arn:aws",
        "/tmp/fl",
        "relative",
        "file:/x",
        "${version} ${srcaddr}",
        "${nope}",
        "",
        " ",
        "plain-text",
        "parquet",
        "orc",
        "AES256",
        "aws:kms",
        "alias/k",
        "bucket-owner-full-control",
        "public-read",
        "vpc-flow-log",
        "fl-0123456789abcdef0",
        "resource-id",
        "traffic-type",
    ])
    .prop_map(str::to_string)
}

fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(vec![
            "ResourceType", "ResourceIds", "TrafficType", "LogDestinationType", "LogDestination",
            "LogGroupName", "LogFormat", "MaxAggregationInterval", "DestinationOptions",
            "FileFormat", "HiveCompatiblePartitions", "PerHourPartition", "ServerSideEncryption",
            "SSEKMSKeyId", "ACL", "TagSpecifications", "Tags", "Key", "Value", "DryRun",
            "ClientToken", "DeliverLogsPermissionArn", "DeliverCrossAccountRole", "FlowLogIds",
            "Filter", "Filters", "Name", "Values", "MaxResults", "NextToken", "Action", "Input",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// JSON trees with AWS's member names and values, nested.
fn request_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        select(vec![0i64, 1, 60, 600, 86_400, 86_401, -1]).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        member_value().prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((member_name(), inner), 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One registry for all cases, with its definitions in a temporary state directory (what
/// earlier cases created stays, as in a running agent).
fn service() -> &'static RegistryService {
    static SERVICE: LazyLock<(tempfile::TempDir, RegistryService)> = LazyLock::new(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        let registry = Registry::new(Vec::new(), Some(store), Metadata::default());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Changes have nowhere to go here; the receiver just has to outlive the sends.
        std::mem::forget(rx);
        (
            dir,
            RegistryService::new(Arc::new(Mutex::new(registry)), tx),
        )
    });
    &SERVICE.1
}

/// Applies `edits` (position, byte) and a cut to `bytes`.
fn damage(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(at, v) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] ^= v;
        }
    }
    if let Some(c) = cut
        && !bytes.is_empty()
    {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

fn object_batch(records: usize, body: Vec<u8>) -> Batch {
    Batch::Object(FinishedObject {
        key: "AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/12/01/x.log.gz".into(),
        body: Bytes::from(body),
        records,
    })
}

fn events_batch(messages: Vec<String>) -> Batch {
    Batch::LogEvents(LogEventBatch {
        stream: "eth0-all".into(),
        events: messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| LogEvent {
                timestamp_ms: 1_796_000_000_000 + i as i64,
                message,
            })
            .collect(),
    })
}

/// A real spool file's bytes for `batch`.
fn spooled_bytes(batch: &Batch) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES).expect("spool");
    spool.put(batch).expect("put");
    let claim = spool.claim().expect("one batch");
    fs::read(&claim.path).expect("read spool file")
}

/// A real write-ahead log's bytes: `windows` committed windows of `lines`.
fn wal_bytes(lines: &[String], windows: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let header = WalHeader {
        slot: 1_796_000_000,
        first_window: 1_796_000_000,
        part: 0,
        run_id: 7,
        layout: ObjectLayout {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            flow_log_id: "fl-0123456789abcdef0".into(),
            hive_compatible_partitions: false,
            per_hour_partition: false,
        },
        file_format: FileFormat::PlainText,
        log_format: "${version} ${srcaddr}".into(),
    };
    let mut w = WalWriter::create(dir.path(), &header).expect("wal");
    for win in 0..windows {
        for l in lines {
            w.append(&format!("{l}\n"), 1).expect("append");
        }
        w.commit(1_796_000_000 + win).expect("commit");
    }
    fs::read(w.path()).expect("read wal")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn log_format_any_text_is_parsed_or_refused(text in any::<String>()) {
        let _ = text.parse::<LogFormat>();
    }

    #[test]
    fn log_format_made_of_fields_round_trips_or_is_refused(pieces in vec(format_piece(), 0..24)) {
        let text = pieces.concat();
        if let Ok(format) = text.parse::<LogFormat>() {
            let again: LogFormat = format.spec_text().parse().expect("its own text parses");
            prop_assert_eq!(again.fields(), format.fields());
        }
    }

    #[test]
    fn create_request_any_text_is_an_error_or_validates(text in any::<String>()) {
        if let Ok(req) = parse_request::<CreateFlowLogsRequest>(&text) {
            let _ = FlowLogSpec::from_request(&req, now());
        }
        let _ = parse_request::<DescribeFlowLogsRequest>(&text);
        let _ = parse_request::<DeleteFlowLogsRequest>(&text);
        let _ = parse_shorthand(&text);
    }

    #[test]
    fn create_request_any_json_is_an_error_or_validates(json in request_json()) {
        let text = json.to_string();
        if let Ok(req) = parse_request::<CreateFlowLogsRequest>(&text)
            && let Ok(v) = FlowLogSpec::from_request(&req, now())
        {
            for spec in &v.specs {
                let _ = serde_json::to_string(&spec.describe(None)).expect("describe encodes");
            }
        }
    }

    #[test]
    fn control_requests_get_an_answer(action in select(vec!["CreateFlowLogs", "DescribeFlowLogs", "DeleteFlowLogs", "Nope", ""]),
                                      input in request_json(), raw in any::<String>()) {
        let service = service();
        let line = serde_json::json!({"Action": action, "Input": input}).to_string();
        let _: ControlAnswer = service.handle(&line);
        match service.handle(&raw) {
            ControlAnswer::Error(e) => prop_assert!(!e.code.is_empty()),
            ControlAnswer::Output(_) => {}
        }
    }

    #[test]
    fn flow_logs_file_of_any_bytes_is_loaded_or_refused(bytes in vec(any::<u8>(), 0..512), json in request_json()) {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, body) in [("a.json", bytes), ("b.json", serde_json::to_vec(&Value::Array(vec![json])).expect("json"))] {
            let path = dir.path().join(name);
            fs::write(&path, body).expect("write");
            let _ = file::load(&path, now());
        }
    }

    #[test]
    fn spool_file_of_any_bytes_is_read_or_refused(bytes in vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("000000000000-00000000.batch");
        fs::write(&path, &bytes).expect("write");
        let _ = spool::load(&path);
    }

    #[test]
    fn write_ahead_log_of_any_bytes_is_read_or_refused(bytes in vec(any::<u8>(), 0..2048), magic in any::<bool>()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.wal");
        let mut body = if magic { b"flowlog-wal 1\n".to_vec() } else { Vec::new() };
        body.extend_from_slice(&bytes);
        fs::write(&path, &body).expect("write");
        let _ = wal::read(&path);
    }
}

/// A damage: bytes flipped (position, xor mask) and maybe a cut.
type Damage = (Vec<(usize, u8)>, Option<usize>);

fn damages() -> impl Strategy<Value = Vec<Damage>> {
    vec(
        (
            vec((any::<usize>(), 1u8..), 0..4),
            proptest::option::of(any::<usize>()),
        ),
        16,
    )
}

proptest! {
    // Each case writes real spool files and logs (fsync), then reads 16 damaged copies.
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn damaged_spool_files_are_read_or_refused(
        records in 0usize..5, body in vec(any::<u8>(), 0..300),
        messages in vec(any::<String>(), 0..4), damages in damages(),
    ) {
        for batch in [object_batch(records, body.clone()), events_batch(messages.clone())] {
            let good = spooled_bytes(&batch);
            let dir = tempfile::tempdir().expect("temp dir");
            for (i, (edits, cut)) in damages.iter().enumerate() {
                let damaged = damage(good.clone(), edits, *cut);
                let path = dir.path().join(format!("{i:012}-00000000.batch"));
                fs::write(&path, &damaged).expect("write");
                // What reads back from a damaged file is at most a batch with a changed
                // header field (the CRC covers the body); an unchanged file reads back whole.
                if let Ok(read) = spool::load(&path)
                    && damaged == good
                {
                    prop_assert_eq!(read, batch.clone());
                }
            }
            // The whole directory too, as a restarted agent indexes it.
            let _ = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES).map(|s| s.stats());
        }
    }

    #[test]
    fn damaged_write_ahead_logs_keep_at_most_what_was_committed(
        lines in vec("[ -~]{0,40}", 0..6), windows in 0u64..4, damages in damages(),
    ) {
        let good = wal_bytes(&lines, windows);
        let dir = tempfile::tempdir().expect("temp dir");
        for (i, (edits, cut)) in damages.iter().enumerate() {
            let damaged = damage(good.clone(), edits, *cut);
            let path = dir.path().join(format!("{i}.wal"));
            fs::write(&path, &damaged).expect("write");
            if let Ok(r) = wal::read(&path) {
                prop_assert!(r.windows <= windows, "{} windows read back, {windows} committed", r.windows);
                prop_assert!(r.records <= windows * lines.len() as u64);
                if damaged == good {
                    prop_assert_eq!(r.windows, windows);
                }
            }
        }
    }
}
