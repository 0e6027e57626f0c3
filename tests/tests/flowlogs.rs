//! Flow logs as resources: several flow logs on one capture, created, described and deleted
//! through the control socket with the AWS CLI's inputs (`flowlog create-flow-logs` and
//! friends, the real binary), live, and kept across restarts. Each flow log's records are
//! checked exactly against tcpdump on the watched interface. S3 and CloudWatch Logs are
//! moto_server, inside the agent's namespace. Root only. Namespaces carry the prefix `flfl`;
//! addresses are 10.213.x.0/24 with x from 170 on.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{flowlog_bin, read_log, sigterm_and_wait, wait_for_log_line},
    moto::{Moto, agent_env},
    netns::{Namespaces, Setup, Side, in_netns, nft, run},
    publish::{event_record, send_udp_flows},
    records::{self, Record, Tuple},
    traffic::in_ns,
    wire::{self, Tcpdump},
};

const ACCOUNT: &str = "123456789012";
const V5_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} \
     ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${flow-direction} ${pkt-srcaddr}";
const V5_HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets \
     bytes start end action log-status flow-direction pkt-srcaddr";
/// UDP to this port is dropped by an nftables rule on the agent's side: REJECT.
const DROPPED_PORT: u16 = 7777;
/// UDP to this port is received by a socket on the agent's side: ACCEPT.
const OPEN_PORT: u16 = 7001;

/// `flowlog run` in a namespace with its own state directory and control socket.
struct ApiAgent {
    child: Option<Child>,
    dir: PathBuf,
    side_netns: String,
    extra: Vec<String>,
    starts: usize,
}

impl ApiAgent {
    /// Starts the agent in `side`'s namespace: no flow log of its own unless `extra` says so.
    fn start(side: &Side, dir: &Path, extra: &[&str]) -> ApiAgent {
        let mut agent = ApiAgent {
            child: None,
            dir: dir.to_path_buf(),
            side_netns: side.netns.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            starts: 0,
        };
        agent.spawn();
        agent
    }

    /// Started with a flow log of its own from the flags: `side`'s veth, 1 s windows, a file
    /// every second, to `out`.
    fn with_flag_flow_log(side: &Side, dir: &Path, out: &Path) -> ApiAgent {
        let destination = format!("file:{}", out.display());
        let spool = dir.join("flag-spool").display().to_string();
        let args = [
            "--iface",
            &side.iface,
            "--aggregation-interval",
            "1",
            "--file-rollover-seconds",
            "1",
            "--destination",
            &destination,
            "--spool-dir",
            &spool,
        ];
        ApiAgent::start(side, dir, &args)
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("agent log");
        let before = self.log().len();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.side_netns])
            .arg(flowlog_bin())
            .arg("run")
            .args([
                "--account-id",
                ACCOUNT,
                "--region",
                "us-east-1",
                "--no-imds",
            ])
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--control-socket")
            .arg(self.socket())
            .arg("--runtime-dir")
            .arg(self.dir.join("run"))
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(agent_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start flowlog"));
        self.starts += 1;
        let log_path = self.log_path();
        wait_for_log_line(
            &mut self.child,
            &log_path,
            before,
            "capturing",
            Duration::from_secs(30),
        );
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Waits until the log holds `needle` `count` times.
    fn wait_for_count(&mut self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches(needle).count() < count {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("flowlog exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no {count}x {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        let child = self.child.take().expect("agent running");
        let status = sigterm_and_wait(child, &self.log_path(), Duration::from_secs(60));
        assert!(
            status.success(),
            "flowlog exited {status}; log:\n{}",
            self.log()
        );
    }

    /// `flowlog <command> --control-socket <socket> <args>`, the real binary.
    fn cli(&self, command: &str, args: &[&str]) -> Output {
        Command::new(flowlog_bin())
            .arg(command)
            .arg("--control-socket")
            .arg(self.socket())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run the flowlog client")
    }

    /// create-flow-logs with `request` as --cli-input-json; the created ids.
    fn create(&self, request: &str) -> Vec<String> {
        let out = self.cli("create-flow-logs", &["--cli-input-json", request]);
        let answer = ok_json(&out);
        assert_eq!(answer["Unsuccessful"], serde_json::json!([]), "{answer}");
        answer["FlowLogIds"]
            .as_array()
            .expect("FlowLogIds")
            .iter()
            .map(|v| v.as_str().expect("id").to_string())
            .collect()
    }

    fn describe(&self) -> serde_json::Value {
        ok_json(&self.cli("describe-flow-logs", &[]))
    }
}

impl Drop for ApiAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The answer JSON of a client call that must have succeeded.
fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "client exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The test host: namespaces `a` (the peer) and `b` (the agent's side) with addresses
/// 10.213.`subnet`.0/24, and a directory for the agent's state, outputs and captures.
fn test_host(subnet: u8) -> (Namespaces, tempfile::TempDir) {
    flowlog_tests::agent::require_root();
    let ns = Namespaces::new(Setup::new(subnet).ipv4_only().prefix("flfl"));
    let dir = tempfile::Builder::new()
        .prefix("flfl-")
        .tempdir()
        .expect("temp dir");
    (ns, dir)
}

/// An nftables rule in `side`'s namespace dropping UDP to [`DROPPED_PORT`] on input.
fn drop_udp_port(side: &Side) {
    nft(
        &side.netns,
        &format!(
            "table inet flfl {{\n  chain input {{\n    type filter hook input priority 0;\n    udp dport {DROPPED_PORT} counter drop\n  }}\n}}\n"
        ),
    );
}

/// `flows` UDP flows from `a` to `b`'s [`DROPPED_PORT`], `per_flow` datagrams of `payload`
/// bytes each, from plain sockets (nothing receives them); returns once the drop rule has
/// counted every one.
fn send_dropped(a: &Side, b: &Side, flows: usize, per_flow: usize, payload: usize) {
    let to = std::net::SocketAddr::new(std::net::IpAddr::V4(b.v4), DROPPED_PORT);
    let (from, data) = (a.v4, vec![0x5a_u8; payload]);
    in_ns(&a.netns, || {
        for _ in 0..flows {
            let sock = std::net::UdpSocket::bind((from, 0)).expect("bind sender");
            for _ in 0..per_flow {
                sock.send_to(&data, to).expect("send");
            }
        }
    });
    let want = (flows * per_flow) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(in_netns(&b.netns, "nft").args(["list", "table", "inet", "flfl"]));
        let text = String::from_utf8_lossy(&out.stdout);
        let counted: u64 = text
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if counted >= want {
            assert_eq!(counted, want, "{text}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the drop rule counted {counted} of {want}: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (packets, bytes) per tuple of OK records.
fn sums<'a>(records: impl IntoIterator<Item = &'a Record>) -> BTreeMap<Tuple, (u64, u64)> {
    let mut out: BTreeMap<Tuple, (u64, u64)> = BTreeMap::new();
    for r in records.into_iter().filter(|r| r.log_status == "OK") {
        let e = out.entry(r.tuple.expect("OK record tuple")).or_default();
        e.0 += r.packets.expect("packets");
        e.1 += r.bytes.expect("bytes");
    }
    out
}

/// tcpdump's (packets, bytes) per tuple as the agent on `local` records them.
fn wire_sums(packets: &[wire::WirePacket], local: &Side) -> BTreeMap<Tuple, (u64, u64)> {
    wire::totals(packets, local)
        .into_iter()
        .map(|(t, (totals, _))| (t, (totals.packets, totals.bytes)))
        .collect()
}

/// Rows of every Parquet object, each as (column → value text), with their keys.
fn parquet_rows(objects: &BTreeMap<String, Vec<u8>>) -> Vec<BTreeMap<String, String>> {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    let mut rows = Vec::new();
    for (key, body) in objects {
        assert!(key.ends_with(".log.parquet"), "{key}");
        let reader = SerializedFileReader::new(bytes::Bytes::from(body.clone()))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        for row in reader.get_row_iter(None).expect("rows") {
            let row = row.expect("row");
            rows.push(
                row.get_column_iter()
                    .map(|(n, v)| {
                        let text = match v {
                            parquet::record::Field::Str(s) => s.clone(),
                            parquet::record::Field::Null => "-".to_string(),
                            other => other.to_string(),
                        };
                        (n.clone(), text)
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// Three flow logs at once on the one veth of the agent's namespace, each checked exactly
/// against tcpdump: NetworkInterface/REJECT to CloudWatch Logs, Subnet/ALL as Parquet with Hive
/// partitions to S3, and VPC/ALL in a version 5 format to a file.
#[test]
fn three_flow_logs_on_one_capture_each_equal_the_wire() {
    let (ns, dir) = test_host(170);
    let (a, b) = (&ns.a, &ns.b);
    drop_udp_port(b);
    let moto = Moto::start(Some(&b.netns));
    moto.with_clients(async |c| c.create_bucket("flfl-bucket").await);
    let mut agent = ApiAgent::start(
        b,
        dir.path(),
        &["--no-flag-flow-log", "--endpoint-url", &moto.endpoint()],
    );

    let rejects = agent.create(&format!(
        r#"{{"ResourceType":"NetworkInterface","ResourceIds":["{}"],"TrafficType":"REJECT",
            "LogDestinationType":"cloud-watch-logs","LogGroupName":"flfl-rejects","MaxAggregationInterval":1}}"#,
        b.iface
    ));
    let subnet = agent.create(
        r#"{"ResourceType":"Subnet","ResourceIds":["10.213.170.0/24"],"TrafficType":"ALL",
            "LogDestinationType":"s3","LogDestination":"arn:aws:s3:::flfl-bucket/flows",
            "DestinationOptions":{"FileFormat":"parquet","HiveCompatiblePartitions":true},
            "MaxAggregationInterval":2}"#,
    );
    let vpc_dir = dir.path().join("vpc");
    let vpc = agent.create(&format!(
        r#"{{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"file",
            "LogDestination":"{}","LogFormat":"{V5_FORMAT}","MaxAggregationInterval":1}}"#,
        vpc_dir.display()
    ));
    agent.wait_for_count("flow log running", 3);
    let described = agent.describe();
    let flow_logs = described["FlowLogs"].as_array().expect("FlowLogs");
    assert_eq!(flow_logs.len(), 3, "{described}");
    for (ids, resource, traffic) in [
        (&rejects, b.iface.as_str(), "REJECT"),
        (&subnet, "10.213.170.0/24", "ALL"),
        (&vpc, "*", "ALL"),
    ] {
        let d = flow_logs
            .iter()
            .find(|d| d["FlowLogId"] == ids[0].as_str())
            .unwrap_or_else(|| panic!("{} not described: {described}", ids[0]));
        assert_eq!(d["ResourceId"], resource);
        assert_eq!(d["TrafficType"], traffic);
        assert_eq!(d["FlowLogStatus"], "ACTIVE");
    }

    let tcpdump = Tcpdump::start(b, dir.path());
    send_udp_flows(a, b, OPEN_PORT, 3, 4, 100);
    send_dropped(a, b, 2, 3, 50);
    // Every datagram was received or dropped: the capture has counted them all. The agent's
    // stop cuts it, then tcpdump's capture is complete too.
    agent.stop();
    let packets = tcpdump.stop();
    let wire = wire_sums(&packets, b);
    let dropped: BTreeMap<Tuple, (u64, u64)> = wire
        .iter()
        .filter(|(t, _)| t.dst_port == DROPPED_PORT)
        .map(|(t, v)| (*t, *v))
        .collect();
    assert_eq!(dropped.len(), 2, "two dropped flows on the wire: {wire:?}");
    assert_eq!(
        wire.len(),
        dropped.len() + 3,
        "and the three received flows: {wire:?}"
    );

    // VPC, version 5, to a file: every packet on the wire.
    let file_records = records::read(&vpc_dir, V5_HEADER);
    assert_eq!(
        sums(&file_records),
        wire,
        "file records:\n{}",
        records::dump(&file_records)
    );
    assert!(file_records.iter().all(|r| r.version == 5));
    for r in file_records.iter().filter(|r| r.log_status == "OK") {
        let t = r.tuple.unwrap();
        // AWS writes `ingress` or `egress`, as seen by the interface.
        let want = if t.dst == std::net::IpAddr::V4(b.v4) {
            "ingress"
        } else {
            "egress"
        };
        assert_eq!(r.field("flow-direction"), want, "{}", r.line);
        let action = if t.dst_port == DROPPED_PORT {
            "REJECT"
        } else {
            "ACCEPT"
        };
        assert_eq!(r.action, action, "{}", r.line);
    }

    // Subnet, Parquet in Hive partitions, to S3: every packet on the wire.
    let objects = moto.with_clients(async |c| c.objects("flfl-bucket").await);
    assert!(
        !objects.is_empty(),
        "no S3 objects; agent log:\n{}",
        agent.log()
    );
    for key in objects.keys() {
        assert!(
            key.starts_with(&format!(
                "flows/AWSLogs/aws-account-id={ACCOUNT}/aws-service=vpcflowlogs/aws-region=us-east-1/year="
            )) && key.contains(&format!("_vpcflowlogs_us-east-1_{}_", subnet[0])),
            "{key}"
        );
    }
    let mut s3_sums: BTreeMap<Tuple, (u64, u64)> = BTreeMap::new();
    for row in parquet_rows(&objects)
        .iter()
        .filter(|r| r["log_status"] == "OK")
    {
        let line = [
            "version",
            "account_id",
            "interface_id",
            "srcaddr",
            "dstaddr",
            "srcport",
            "dstport",
            "protocol",
            "packets",
            "bytes",
            "start",
            "end",
            "action",
            "log_status",
        ]
        .map(|c| row[c].as_str())
        .join(" ");
        let r = records::parse_line(
            &line,
            &records::DEFAULT_HEADER.split(' ').collect::<Vec<_>>(),
        );
        let e = s3_sums.entry(r.tuple.unwrap()).or_default();
        e.0 += r.packets.unwrap();
        e.1 += r.bytes.unwrap();
    }
    assert_eq!(s3_sums, wire, "S3 Parquet rows");

    // NetworkInterface, REJECT only, to CloudWatch Logs: the dropped packets, nothing else.
    let events = moto.with_clients(async |c| c.log_events("flfl-rejects").await);
    let cw: Vec<Record> = events
        .values()
        .flatten()
        .map(|(_, m)| event_record(m))
        .collect();
    assert!(
        cw.iter()
            .filter(|r| r.log_status == "OK")
            .all(|r| r.action == "REJECT"),
        "{}",
        records::dump(&cw)
    );
    assert_eq!(
        sums(&cw),
        dropped,
        "CloudWatch events:\n{}",
        records::dump(&cw)
    );
    assert_eq!(
        events.keys().cloned().collect::<Vec<_>>(),
        [format!("{}-all", b.iface)],
        "one stream for the interface"
    );
}

/// A flow log created and deleted while traffic flows leaves the other flow log's totals
/// exact; the deleted one delivers its partial window (its records are a part of the wire,
/// and hold every packet sent while it existed).
#[test]
fn creating_and_deleting_under_traffic_leaves_the_others_exact() {
    let (ns, dir) = test_host(171);
    let (a, b) = (&ns.a, &ns.b);
    let steady_dir = dir.path().join("steady");
    let mut agent = ApiAgent::with_flag_flow_log(b, dir.path(), &steady_dir);
    let tcpdump = Tcpdump::start(b, dir.path());
    send_udp_flows(a, b, 7101, 2, 3, 80);
    let live_dir = dir.path().join("live");
    let live = agent.create(&format!(
        r#"{{"ResourceType":"NetworkInterface","ResourceIds":["{}"],"LogDestinationType":"file",
            "LogDestination":"{}","MaxAggregationInterval":5}}"#,
        b.iface,
        live_dir.display()
    ));
    agent.wait_for_count("flow log running", 2);
    let during = send_udp_flows(a, b, 7102, 3, 4, 60);
    let out = agent.cli("delete-flow-logs", &["--flow-log-ids", &live[0]]);
    assert_eq!(ok_json(&out), serde_json::json!({"Unsuccessful": []}));
    agent.wait_for_count("flow log stopped", 1);
    send_udp_flows(a, b, 7103, 2, 2, 40);
    assert_eq!(
        agent.describe()["FlowLogs"].as_array().map(Vec::len),
        Some(1),
        "only the flag flow log is left"
    );
    agent.stop();
    let packets = tcpdump.stop();

    let wire = wire_sums(&packets, b);
    let steady = records::read_default(&steady_dir);
    assert_eq!(
        sums(&steady),
        wire,
        "steady flow log:\n{}",
        records::dump(&steady)
    );
    let live_records = records::read_default(&live_dir);
    let live_sums = sums(&live_records);
    for (t, (p, by)) in &during {
        assert_eq!(
            live_sums.get(t),
            Some(&(*p, *by)),
            "the deleted flow log holds the traffic sent while it existed:\n{}",
            records::dump(&live_records)
        );
    }
    for (t, v) in &live_sums {
        let on_wire = wire
            .get(t)
            .unwrap_or_else(|| panic!("{t:?} is not on the wire"));
        assert!(
            v.0 <= on_wire.0 && v.1 <= on_wire.1,
            "more than the wire for {t:?}"
        );
        assert_ne!(t.dst_port, 7103, "traffic after the delete: {t:?}");
    }
}

/// Flow logs created through the API come back with the same ids after a restart, and write
/// records again.
#[test]
fn definitions_come_back_after_a_restart() {
    let (ns, dir) = test_host(172);
    let (a, b) = (&ns.a, &ns.b);
    let mut agent = ApiAgent::start(b, dir.path(), &["--no-flag-flow-log"]);
    let out_dir = dir.path().join("out");
    let ids = agent.create(&format!(
        r#"{{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"file",
            "LogDestination":"{}","MaxAggregationInterval":1,
            "TagSpecifications":[{{"ResourceType":"vpc-flow-log","Tags":[{{"Key":"team","Value":"net"}}]}}]}}"#,
        out_dir.display()
    ));
    let before = agent.describe();
    agent.stop();
    agent.spawn();
    agent.wait_for_count("flow log running", 2);
    let after = agent.describe();
    assert_eq!(after, before, "the same definitions after the restart");
    assert_eq!(after["FlowLogs"][0]["FlowLogId"], ids[0].as_str());
    let tcpdump = Tcpdump::start(b, dir.path());
    send_udp_flows(a, b, 7201, 2, 3, 70);
    agent.stop();
    let packets = tcpdump.stop();
    let records = records::read_default(&out_dir);
    assert_eq!(
        sums(&records),
        wire_sums(&packets, b),
        "{}",
        records::dump(&records)
    );
}

/// Bad requests get AWS-style errors and exit codes; the agent keeps running and its flow log
/// loses nothing. No agent, or a caller without privileges, gets one line and exit 1.
#[test]
fn bad_requests_get_aws_errors_and_lose_nothing() {
    let (ns, dir) = test_host(173);
    let (a, b) = (&ns.a, &ns.b);
    let out_dir = dir.path().join("out");
    let mut agent = ApiAgent::with_flag_flow_log(b, dir.path(), &out_dir);
    let tcpdump = Tcpdump::start(b, dir.path());
    send_udp_flows(a, b, 7301, 2, 3, 90);

    let ok = r#""ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"file","LogDestination":"/tmp/flfl-never""#;
    let cases: Vec<(String, u8, &str)> = vec![
        (
            format!("{{{ok},\"MaxAggregationInterval\":0}}"),
            254,
            "An error occurred (InvalidParameter) when calling the CreateFlowLogs operation: invalid MaxAggregationInterval 0",
        ),
        (
            format!("{{{ok},\"LogFormat\":\"${{version}} ${{srcadr}}\"}}"),
            254,
            "(InvalidParameter) when calling the CreateFlowLogs operation: LogFormat: unknown field ${srcadr}",
        ),
        (
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"s3","LogDestination":"arn:aws:s3:::bucket/AWSLogs"}"#.to_string(),
            254,
            "AWSLogs is reserved",
        ),
        (
            r#"{"ResourceType":"Instance","ResourceIds":["i-1"],"LogGroupName":"g"}"#.to_string(),
            254,
            "(InvalidParameter) when calling the CreateFlowLogs operation: invalid ResourceType \"Instance\"",
        ),
        (
            format!("{{{ok},\"Colour\":\"red\"}}"),
            254,
            "(InvalidParameter) when calling the CreateFlowLogs operation: malformed request: unknown field `Colour`",
        ),
        (
            "{\"ResourceType\": ".to_string(),
            252,
            "Error parsing parameter '--cli-input-json': Invalid JSON",
        ),
    ];
    for (request, code, message) in &cases {
        let out = agent.cli("create-flow-logs", &["--cli-input-json", request]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(i32::from(*code)),
            "{request}: {stderr}"
        );
        assert!(stderr.contains(message), "{request}: {stderr}");
        assert!(out.stdout.is_empty(), "{request}");
    }
    // Not JSON at all, straight on the socket.
    let raw = Command::new("python3")
        .args([
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'{nope\\n'); print(s.recv(4096).decode())",
        ])
        .arg(agent.socket())
        .output()
        .expect("python3");
    let raw = String::from_utf8_lossy(&raw.stdout);
    assert!(
        raw.starts_with(r#"{"Error":{"Code":"InvalidParameter","Message":"malformed request"#),
        "{raw}"
    );
    // Still serving, with only its own flow log.
    assert_eq!(
        agent.describe()["FlowLogs"].as_array().map(Vec::len),
        Some(1)
    );

    // A caller that is neither root nor CAP_NET_ADMIN.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(flowlog_bin())
        .args(["describe-flow-logs", "--control-socket"])
        .arg(agent.socket())
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "flowlog: error: permission denied on the control socket {}: run as root (or with CAP_NET_ADMIN)",
            agent.socket().display()
        )
    );

    send_udp_flows(a, b, 7302, 1, 5, 30);
    agent.stop();
    let packets = tcpdump.stop();
    let records = records::read_default(&out_dir);
    assert_eq!(
        sums(&records),
        wire_sums(&packets, b),
        "{}",
        records::dump(&records)
    );

    // No agent listening any more.
    let out = agent.cli("describe-flow-logs", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "flowlog: error: no flowlog agent is listening on {}: start one with `flowlog run` (or point --control-socket at its socket)",
            agent.socket().display()
        )
    );
}

/// `--flow-logs FILE`: its flow logs run from the start, and a changed file is applied on
/// SIGHUP (an entry removed is deleted, one added is created, an unchanged one keeps its id and
/// runs on); a file that does not validate changes nothing.
#[test]
fn a_flow_logs_file_is_applied_again_on_sighup() {
    let (ns, dir) = test_host(174);
    let (a, b) = (&ns.a, &ns.b);
    let entry = |name: &str, format: &str| {
        format!(
            r#"{{"ResourceType":"NetworkInterface","ResourceIds":["{}"],"LogDestinationType":"file",
                "LogDestination":"{}","MaxAggregationInterval":1,"LogFormat":"{format}"}}"#,
            b.iface,
            dir.path().join(name).display()
        )
    };
    let v2 = flowlog_agent::records::format::DEFAULT_FORMAT;
    let file = dir.path().join("flow-logs.json");
    fs::write(
        &file,
        format!("[{}, {}]", entry("kept", v2), entry("removed", v2)),
    )
    .unwrap();
    let mut agent = ApiAgent::start(b, dir.path(), &["--flow-logs", &file.to_string_lossy()]);
    agent.wait_for_count("flow log running", 2);
    let ids = |agent: &ApiAgent| -> BTreeMap<String, String> {
        agent.describe()["FlowLogs"]
            .as_array()
            .expect("FlowLogs")
            .iter()
            .map(|d| {
                (
                    d["LogDestination"].as_str().unwrap().to_string(),
                    d["FlowLogId"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let before = ids(&agent);
    assert_eq!(before.len(), 2, "{before:?}");
    let kept_dir = dir.path().join("kept").display().to_string();

    let pid = agent.child.as_ref().expect("agent running").id() as libc::pid_t;
    // SAFETY: signalling our own child by pid.
    let hup = || assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);

    // Not valid: nothing changes.
    fs::write(&file, "[{\"ResourceType\": \"VPC\"}]").unwrap();
    hup();
    agent.wait_for_count("SIGHUP: the flow logs file was not applied", 1);
    assert_eq!(ids(&agent), before);

    fs::write(
        &file,
        format!("[{}, {}]", entry("kept", v2), entry("added", V5_FORMAT)),
    )
    .unwrap();
    hup();
    agent.wait_for_count("SIGHUP: flow logs file applied", 1);
    agent.wait_for_count("flow log running", 3);
    agent.wait_for_count("flow log stopped", 1);
    let after = ids(&agent);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(
        after.get(&kept_dir),
        before.get(&kept_dir),
        "the unchanged entry keeps its id"
    );
    assert!(after.contains_key(&dir.path().join("added").display().to_string()));

    let tcpdump = Tcpdump::start(b, dir.path());
    send_udp_flows(a, b, 7401, 2, 3, 60);
    agent.stop();
    let packets = tcpdump.stop();
    let wire = wire_sums(&packets, b);
    let added = records::read(&dir.path().join("added"), V5_HEADER);
    assert_eq!(sums(&added), wire, "added:\n{}", records::dump(&added));
    // The kept flow log ran all along: it holds this traffic too.
    let kept = sums(&records::read_default(&dir.path().join("kept")));
    for (t, v) in &wire {
        assert_eq!(kept.get(t), Some(v), "kept flow log, {t:?}");
    }
}

/// `flowlog status` in both output modes, against what the test sent: a 4-entry flow map
/// and 10 one-packet UDP flows in one window make 4 flows and 6 overflow packets (SKIPDATA);
/// the attached veth in TCX mode without an owner; the flag flow log delivering, its spool
/// emptied. With no agent: one line, exit 1.
#[test]
fn status_reports_attachments_window_map_fill_and_delivery() {
    let (ns, dir) = test_host(175);
    let (a, b) = (&ns.a, &ns.b);
    drop_udp_port(b);
    let out_dir = dir.path().join("out");
    let destination = format!("file:{}", out_dir.display());
    let spool = dir.path().join("flag-spool").display().to_string();
    let interval = 4;
    let agent = ApiAgent::start(
        b,
        dir.path(),
        &[
            "--iface",
            &b.iface,
            "--aggregation-interval",
            &interval.to_string(),
            "--file-rollover-seconds",
            "1",
            "--destination",
            &destination,
            "--spool-dir",
            &spool,
            "--max-flows",
            "4",
        ],
    );
    let status = || ok_json(&agent.cli("status", &["--json"]));
    let window_start =
        flowlog_tests::agent::wait_for_window_start(interval, Duration::from_millis(300));
    send_dropped(a, b, 10, 1, 40);
    let window_end = window_start + interval;
    // The cut of that window: until the next one, "last cut" is that window.
    let deadline = Instant::now() + Duration::from_secs(3 * interval);
    let s = loop {
        let s = status();
        // The loop moves the window's start on once the cut is drained and handed out.
        if s["Window"]["Start"] == window_end {
            break s;
        }
        assert!(Instant::now() < deadline, "no cut after {window_end}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let drained = s["Window"]["LastDrainAt"].as_u64().expect("LastDrainAt");
    assert!(
        (window_end..window_end + interval).contains(&drained),
        "{s}"
    );
    assert_eq!(s["Window"]["NextCut"], window_end + interval, "{s}");
    assert_eq!(
        s["FlowMap"],
        serde_json::json!({"MaxFlows": 4, "LastCutFlows": 4, "FillPercent": 100.0,
                           "LastCutOverflowPackets": 6, "OverflowPacketsTotal": 6}),
        "{s}"
    );
    let ifaces = s["Interfaces"].as_array().expect("Interfaces");
    assert_eq!(ifaces.len(), 1, "{s}");
    assert_eq!(ifaces[0]["Name"], b.iface.as_str(), "{s}");
    assert_eq!(ifaces[0]["Owner"], "-", "{s}");
    assert_eq!(ifaces[0]["AttachMode"], "tcx", "{s}");
    let flow_logs = s["FlowLogs"].as_array().expect("FlowLogs");
    assert_eq!(flow_logs.len(), 1, "{s}");
    let id = flow_logs[0]["FlowLogId"]
        .as_str()
        .expect("FlowLogId")
        .to_string();
    assert_eq!(agent.describe()["FlowLogs"][0]["FlowLogId"], id.as_str());
    assert_eq!(flow_logs[0]["DeliveryStatus"], "SUCCESS", "{s}");
    assert_eq!(flow_logs[0]["LastError"], serde_json::Value::Null, "{s}");
    assert_eq!(
        flow_logs[0]["Destination"],
        format!("file:{}", out_dir.display()),
        "{s}"
    );
    // The window's batch is delivered: the spool empties.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status()["FlowLogs"][0]["SpoolBatches"] != 0 {
        assert!(
            Instant::now() < deadline,
            "spool never emptied: {}",
            status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = agent.cli("status", &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("window: open since "), "{text}");
    assert!(lines[1].starts_with("last drain: "), "{text}");
    let pinning = ifaces[0]["Pinning"].as_str().expect("Pinning");
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let want_iface = vec![
        b.iface.clone(),
        ifaces[0]["Ifindex"].to_string(),
        "-".into(),
        "tcx".into(),
        pinning.into(),
    ];
    assert!(
        lines.iter().any(|l| words(l) == want_iface),
        "no line {want_iface:?}: {text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| words(l) == ["INTERFACE", "IFINDEX", "OWNER", "MODE"]),
        "{text}"
    );
    let want_flow_log = format!(
        "{id} SUCCESS 0 batches, 0 records, 0 bytes file:{} -",
        out_dir.display()
    );
    assert!(
        lines.iter().any(|l| words(l).join(" ") == want_flow_log),
        "no line {want_flow_log:?}: {text}"
    );

    drop(agent);
    let none = dir.path().join("no-agent.sock");
    let out = Command::new(flowlog_bin())
        .args(["status", "--control-socket"])
        .arg(&none)
        .output()
        .expect("flowlog status");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "flowlog: error: no flowlog agent is listening on {}: start one with `flowlog run` (or point --control-socket at its socket)\n",
            none.display()
        )
    );
}
