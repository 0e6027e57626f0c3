//! docs/queries/*.duckdb.sql over real output, with DuckDB (the `duckdb` Python package in the
//! workspace venv): namespace A pings B, sends UDP to B, and tries SSH (22) and RDP (3389) on B,
//! where nftables drops those SYNs. The agent on B writes text (the `run` flags' flow log) and
//! Parquet (a flow log created through the control socket); every query's answer over each
//! must equal what was sent: ping and UDP sizes by construction, the SYNs from nftables'
//! counters. Then the `flowlog athena-ddl` columns of the Parquet flow log are checked against
//! DuckDB's DESCRIBE of its files.
//! Root only. Namespaces carry the prefix `flqy`; addresses are 10.213.187.0/24.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use flowlog_tests::{
    agent::{Agent, AgentOptions, flowlog_bin, unix_now},
    netns::{Namespaces, Setup, nft, nft_counters},
    traffic::{UdpPlan, one_dropped_syn, ping, udp_send},
};

const IFACE_ID: &str = "eni-0a1b2c3d4e5f60718";
const ACCOUNT: &str = "123456789012";
const REGION: &str = "eu-west-1";
const PINGS: u64 = 5;
/// ping -s 56: 84-byte IPv4 packets.
const PING_BYTES: u64 = 84;
const UDP_DATAGRAMS: u64 = 4;
const UDP_PAYLOAD: u64 = 100;
/// 20 (IPv4) + 8 (UDP) + payload.
const UDP_BYTES: u64 = 28 + UDP_PAYLOAD;

/// The venv's python (beside moto_server), which setup gives the duckdb package.
fn venv_python() -> PathBuf {
    let moto = std::env::var_os("FLOWLOG_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server"));
    let python = moto.with_file_name("python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup` (it installs duckdb in the venv)",
        python.display()
    );
    python
}

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/queries")
}

/// Loads `view` (a docs/queries view file, its path pointed at `root`) and runs each query file;
/// returns each query's rows as JSON arrays (timestamps as Unix seconds).
const RUNNER: &str = r#"
import datetime, duckdb, json, sys
view, root, queries = sys.argv[1], sys.argv[2], sys.argv[3:]
con = duckdb.connect()
con.execute(open(view).read().replace('/var/log/flowlog', root))
def cell(v):
    if isinstance(v, datetime.datetime):
        return int(v.replace(tzinfo=datetime.timezone.utc).timestamp())
    return v
out = {}
for q in queries:
    out[q] = [[cell(v) for v in row] for row in con.execute(open(q).read()).fetchall()]
out['describe'] = [[r[0], r[1]] for r in con.execute('DESCRIBE flow_logs').fetchall()]
print(json.dumps(out))
"#;

const QUERIES: [&str; 4] = [
    "top-talkers",
    "rejected-ssh-rdp",
    "bytes-per-interface-per-hour",
    "new-peers-last-hour",
];

fn duckdb(view: &str, root: &Path) -> BTreeMap<String, serde_json::Value> {
    let d = docs();
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(RUNNER)
        .arg(d.join(view))
        .arg(root)
        .args(QUERIES.iter().map(|q| d.join(format!("{q}.duckdb.sql"))))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "duckdb over {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let all: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("runner prints JSON");
    all.into_iter()
        .map(|(k, v)| {
            let name = Path::new(&k)
                .file_name()
                .and_then(|n| n.to_str())
                .map_or(k.clone(), |n| n.trim_end_matches(".duckdb.sql").to_string());
            (name, v)
        })
        .collect()
}

/// `flowlog <args>` with the agent's control socket; stdout, after checking it succeeded.
fn flowlog(args: &[&str]) -> String {
    let out = Command::new(flowlog_bin())
        .args(args)
        .output()
        .expect("run flowlog");
    assert!(
        out.status.success(),
        "flowlog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The column list of a `CREATE EXTERNAL TABLE` statement: (name, type).
fn ddl_columns(ddl: &str) -> Vec<(String, String)> {
    ddl.lines()
        .skip_while(|l| !l.starts_with("CREATE EXTERNAL TABLE"))
        .skip(1)
        .take_while(|l| !l.starts_with(')'))
        .map(|l| {
            let (name, ty) = l
                .trim()
                .trim_end_matches(',')
                .split_once(' ')
                .expect("column");
            (name.trim_matches('`').to_string(), ty.to_string())
        })
        .collect()
}

#[test]
fn duckdb_queries_over_text_and_parquet_answer_what_was_sent() {
    let ns = Namespaces::new(Setup::new(187).ipv4_only().prefix("flqy"));
    let (a, b) = (&ns.a, &ns.b);
    nft(
        &b.netns,
        r#"table inet flqy { chain input { type filter hook input priority 0; policy accept;
        tcp dport 22 counter drop comment "ssh"
        tcp dport 3389 counter drop comment "rdp"
    }
    }"#,
    );
    let work = tempfile::Builder::new()
        .prefix("flqy-")
        .tempdir()
        .expect("temp dir");
    let socket = work.path().join("control.sock");
    let parquet_dir = work.path().join("parquet");
    let mut agent = Agent::start(
        b,
        AgentOptions::interval(60)
            .arg("--no-imds")
            .arg("--account-id")
            .arg(ACCOUNT)
            .arg("--region")
            .arg(REGION)
            .arg("--interface-id")
            .arg(format!("{}={IFACE_ID}", b.iface))
            .arg("--control-socket")
            .arg(socket.display().to_string())
            .arg("--state-dir")
            .arg(work.path().join("state").display().to_string()),
    );
    let socket_arg = socket.display().to_string();
    let request = serde_json::json!({
        "ResourceType": "NetworkInterface",
        "ResourceIds": [b.iface],
        "TrafficType": "ALL",
        "LogDestinationType": "file",
        "LogDestination": parquet_dir.display().to_string(),
        "MaxAggregationInterval": 60,
        "DestinationOptions": {"FileFormat": "parquet", "HiveCompatiblePartitions": true}
    });
    let created: serde_json::Value = serde_json::from_str(&flowlog(&[
        "create-flow-logs",
        "--control-socket",
        &socket_arg,
        "--cli-input-json",
        &request.to_string(),
    ]))
    .expect("create answer");
    let parquet_id = created["FlowLogIds"][0]
        .as_str()
        .expect("an id")
        .to_string();
    agent.wait_for_log(
        &format!("flow log running flow_log_id={parquet_id}"),
        Duration::from_secs(10),
    );

    let sent_from = unix_now();
    ping(&a.netns, b.v4.into(), PINGS as u32, 56);
    udp_send(
        &a.netns,
        &b.netns,
        SocketAddr::new(b.v4.into(), 9999),
        UdpPlan {
            flows: 1,
            per_flow: UDP_DATAGRAMS as usize,
            payload: UDP_PAYLOAD as usize,
            gap: Duration::ZERO,
        },
    );
    one_dropped_syn(&a.netns, SocketAddrV4::new(b.v4, 22), &b.netns, "ssh");
    one_dropped_syn(&a.netns, SocketAddrV4::new(b.v4, 3389), &b.netns, "rdp");
    let sent_to = unix_now();

    // The Parquet flow log's DDL, through the control socket, while the agent runs.
    let ddl = flowlog(&["athena-ddl", &parquet_id, "--control-socket", &socket_arg]);
    agent.stop();
    let counters = nft_counters(&b.netns);
    let (ssh_p, ssh_b) = counters["ssh"];
    let (rdp_p, rdp_b) = counters["rdp"];
    assert!(ssh_p >= 1 && rdp_p >= 1, "{counters:?}");

    let (av, bv) = (a.v4.to_string(), b.v4.to_string());
    let a_to_b_packets = PINGS + UDP_DATAGRAMS + ssh_p + rdp_p;
    let a_to_b_bytes = PINGS * PING_BYTES + UDP_DATAGRAMS * UDP_BYTES + ssh_b + rdp_b;
    let expected_talkers = serde_json::json!([
        [av, bv, a_to_b_bytes, a_to_b_packets],
        [bv, av, PINGS * PING_BYTES, PINGS],
    ]);
    for (what, view, root) in [
        ("text", "views-text.duckdb.sql", agent.output_dir()),
        ("parquet", "views-parquet.duckdb.sql", parquet_dir.clone()),
    ] {
        let got = duckdb(view, &root);
        assert_eq!(got["top-talkers"], expected_talkers, "{what}: top talkers");

        let rejected = got["rejected-ssh-rdp"].as_array().expect("rows");
        let rows: Vec<(String, String, u64, u64)> = rejected
            .iter()
            .map(|r| {
                assert!(r[4].as_u64().expect("records") >= 1, "{what}: {r}");
                (
                    r[0].as_str().expect("src").to_string(),
                    r[1].as_str().expect("dst").to_string(),
                    r[2].as_u64().expect("port"),
                    r[3].as_u64().expect("packets"),
                )
            })
            .collect();
        let mut expected = vec![
            (av.clone(), bv.clone(), 22, ssh_p),
            (av.clone(), bv.clone(), 3389, rdp_p),
        ];
        expected.sort_by(|x, y| y.3.cmp(&x.3).then(x.2.cmp(&y.2)));
        assert_eq!(rows, expected, "{what}: rejected SSH and RDP");

        let hours = got["bytes-per-interface-per-hour"]
            .as_array()
            .expect("rows");
        let (mut bytes, mut packets) = (0, 0);
        for h in hours {
            assert_eq!(h[0], IFACE_ID, "{what}: {h}");
            let hour = h[1].as_f64().expect("hour");
            assert!(
                hour % 3600.0 == 0.0
                    && hour >= (sent_from / 3600.0).floor() * 3600.0 - 3600.0
                    && hour <= sent_to,
                "{what}: hour {hour} outside the test's"
            );
            bytes += h[2].as_u64().expect("bytes");
            packets += h[3].as_u64().expect("packets");
        }
        assert_eq!(
            (bytes, packets),
            (a_to_b_bytes + PINGS * PING_BYTES, a_to_b_packets + PINGS),
            "{what}: bytes per interface per hour: {hours:?}"
        );

        let peers: Vec<(String, String)> = got["new-peers-last-hour"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                let first = r[2].as_f64().expect("first seen");
                assert!(
                    first >= sent_from.floor() - 60.0 && first <= sent_to,
                    "{what}: first seen {first}"
                );
                (
                    r[0].as_str().expect("src").into(),
                    r[1].as_str().expect("dst").into(),
                )
            })
            .collect();
        let mut peers_sorted = peers.clone();
        peers_sorted.sort();
        let mut expected_peers = vec![(av.clone(), bv.clone()), (bv.clone(), av.clone())];
        expected_peers.sort();
        assert_eq!(peers_sorted, expected_peers, "{what}: new peers");

        if what == "parquet" {
            // The DDL's columns against the files: same names in the same order, and each
            // type one Athena reads the Parquet type into.
            let described: Vec<(String, String)> = got["describe"]
                .as_array()
                .expect("describe")
                .iter()
                .map(|c| {
                    (
                        c[0].as_str().expect("name").into(),
                        c[1].as_str().expect("type").into(),
                    )
                })
                .collect();
            let columns = ddl_columns(&ddl);
            assert_eq!(
                columns.iter().map(|c| &c.0).collect::<Vec<_>>(),
                described.iter().map(|c| &c.0).collect::<Vec<_>>(),
                "DDL columns vs Parquet columns:\n{ddl}"
            );
            for ((name, athena), (_, parquet)) in columns.iter().zip(&described) {
                let ok = match (athena.as_str(), parquet.as_str()) {
                    ("int", "INTEGER") | ("bigint", "BIGINT") | ("string", "VARCHAR") => true,
                    // AWS's DDL has protocol bigint; the Parquet column is INT_32.
                    ("bigint", "INTEGER") => name == "protocol",
                    _ => false,
                };
                assert!(ok, "column {name}: DDL {athena}, Parquet {parquet}");
            }
            assert!(
                ddl.contains(&format!(
                    "LOCATION 'file://{}/AWSLogs/aws-account-id={ACCOUNT}/aws-service=vpcflowlogs/aws-region={REGION}/'",
                    parquet_dir.display()
                )),
                "{ddl}"
            );
        }
    }
}
