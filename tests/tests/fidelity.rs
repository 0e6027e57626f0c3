//! Record fidelity on real traffic: the real `flowlog` binary with a format of every field of
//! versions 2-10, identity from flags, AWS ranges from an ip-ranges.json, secondary addresses on
//! the watched interface (srcaddr/dstaddr show the primary, pkt-* the header), traffic AWS does
//! not log (instance metadata, DHCP) left out by default and kept with the flag, and Parquet
//! objects under Hive-style hourly keys read back with a Parquet reader.
//! Root only; subnets 10.213.60-62.0/24.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use flowlog_tests::{
    agent::{Agent, AgentOptions, unix_now, wait_for_window_start},
    netns::{Family, Namespaces, Setup, Side, in_netns, run},
    records::{self, Record, dump},
    traffic::{TcpExchange, UdpPlan, enter, ping, tcp_exchanges, udp_send},
};

const ALL_FIELDS: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end \
    action log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr region az-id sublocation-type \
    sublocation-id pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path ecs-cluster-arn ecs-cluster-name \
    ecs-container-instance-arn ecs-container-instance-id ecs-container-id ecs-second-container-id ecs-service-name \
    ecs-task-definition-arn ecs-task-arn ecs-task-id reject-reason resource-id encryption-status";

fn log_format(header: &str) -> String {
    header
        .split(' ')
        .map(|f| format!("${{{f}}}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ip_cmd(netns: &str, args: &[&str]) {
    run(in_netns(netns, "ip").args(args));
}

fn mac(netns: &str, iface: &str) -> String {
    let out = run(in_netns(netns, "cat").arg(format!("/sys/class/net/{iface}/address")));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `count` datagrams of `payload` bytes from `from` (in `from_ns`, a fixed source port) to
/// `to` (in `to_ns`), all received.
fn udp_from_port(
    from_ns: &str,
    from: SocketAddr,
    to_ns: &str,
    to: SocketAddr,
    count: usize,
    payload: usize,
) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let rx = s.spawn(move || {
            enter(to_ns);
            let sock = UdpSocket::bind(to).unwrap_or_else(|e| panic!("bind {to}: {e}"));
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            for i in 0..count {
                let (n, _) = sock
                    .recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("datagram {i} to {to}: {e}"));
                assert_eq!(n, payload);
            }
        });
        s.spawn(move || {
            enter(from_ns);
            ready_rx.recv().unwrap();
            let sock = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
            for _ in 0..count {
                assert_eq!(sock.send_to(&vec![7u8; payload], to).unwrap(), payload);
            }
        })
        .join()
        .unwrap();
        rx.join().unwrap();
    });
}

/// An instance metadata stand-in: its address on B, and A's route to it over the link.
fn imds_stand_in(a: &Side, b: &Side) {
    ip_cmd(
        &b.netns,
        &["addr", "add", "169.254.169.254/32", "dev", &b.iface],
    );
    ip_cmd(
        &a.netns,
        &["route", "add", "169.254.169.254/32", "dev", &a.iface],
    );
}

/// Traffic AWS does not log, from A: 4 datagrams of 50 bytes to instance metadata
/// (169.254.169.254:80, see [`imds_stand_in`]) and 2 DHCP datagrams of 300 bytes (A:68 to
/// B:67). Returns the source port of the instance metadata flow.
fn send_aws_internal_traffic(a: &Side, b: &Side) -> u16 {
    let imds = SocketAddr::new("169.254.169.254".parse().unwrap(), 80);
    let port = udp_send(
        &a.netns,
        &b.netns,
        imds,
        UdpPlan {
            flows: 1,
            per_flow: 4,
            payload: 50,
            gap: Duration::ZERO,
        },
    )[0];
    udp_from_port(
        &a.netns,
        SocketAddr::new(a.addr(Family::V4), 68),
        &b.netns,
        SocketAddr::new(b.addr(Family::V4), 67),
        2,
        300,
    );
    port
}

/// The OK records of one header tuple (pkt-* addresses), over all windows.
struct Flow<'a> {
    recs: Vec<&'a Record>,
}

impl Flow<'_> {
    fn packets(&self) -> u64 {
        self.recs.iter().map(|r| r.packets.unwrap()).sum()
    }
    fn bytes(&self) -> u64 {
        self.recs.iter().map(|r| r.bytes.unwrap()).sum()
    }
    fn tcp_flags(&self) -> u8 {
        self.recs
            .iter()
            .map(|r| r.field("tcp-flags").parse::<u8>().unwrap())
            .fold(0, |a, b| a | b)
    }
    /// The value of `field`, which must be the same in every record of the flow.
    fn same(&self, field: &str) -> String {
        let v = self.recs[0].field(field).to_string();
        for r in &self.recs {
            assert_eq!(
                r.field(field),
                v,
                "{field} differs between windows: {}",
                r.line
            );
        }
        v
    }
}

fn flow<'a>(all: &'a [Record], dir: &str, pkt_src: IpAddr, pkt_dst: IpAddr, proto: u8) -> Flow<'a> {
    let recs: Vec<&Record> = all
        .iter()
        .filter(|r| r.log_status == "OK")
        .filter(|r| r.field("flow-direction") == dir && r.field("protocol") == proto.to_string())
        .filter(|r| {
            r.field("pkt-srcaddr") == pkt_src.to_string()
                && r.field("pkt-dstaddr") == pkt_dst.to_string()
        })
        .collect();
    assert!(
        !recs.is_empty(),
        "no {dir} records {pkt_src} -> {pkt_dst} proto {proto} in:\n{}",
        dump(all)
    );
    Flow { recs }
}

#[test]
fn every_field_on_real_traffic() {
    let ns = Namespaces::new(Setup::new(60));
    let (a, b) = (&ns.a, &ns.b);
    let (a4, b4, a6, b6) = (
        a.addr(Family::V4),
        b.addr(Family::V4),
        a.addr(Family::V6),
        b.addr(Family::V6),
    );
    // A's secondary addresses: IPv4 in the same subnet (the kernel lists it after the
    // primary), IPv6 added later (the kernel lists it first; the older one stays primary).
    let a4_2: IpAddr = "10.213.60.11".parse().unwrap();
    let seg = a.v6.segments();
    let a6_2 = IpAddr::V6(Ipv6Addr::new(seg[0], seg[1], seg[2], 0, 0, 0, 0, 0x11));
    let net6 = Ipv6Addr::new(seg[0], seg[1], seg[2], 0, 0, 0, 0, 0);
    ip_cmd(
        &a.netns,
        &["addr", "add", "10.213.60.11/24", "dev", &a.iface],
    );
    ip_cmd(
        &a.netns,
        &[
            "-6",
            "addr",
            "add",
            &format!("{a6_2}/64"),
            "dev",
            &a.iface,
            "nodad",
        ],
    );
    // Static IPv6 neighbours: no neighbour discovery packets in the ICMPv6 flows we count.
    let (mac_a, mac_b) = (mac(&a.netns, &a.iface), mac(&b.netns, &b.iface));
    for (ns_, dev, addr, lladdr) in [
        (&a.netns, &a.iface, b6.to_string(), &mac_b),
        (&b.netns, &b.iface, a6.to_string(), &mac_a),
        (&b.netns, &b.iface, a6_2.to_string(), &mac_a),
    ] {
        ip_cmd(
            ns_,
            &[
                "-6",
                "neigh",
                "replace",
                &addr,
                "lladdr",
                lladdr,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
        );
    }
    imds_stand_in(a, b);

    let work = tempfile::Builder::new()
        .prefix("flit-fidelity-")
        .tempdir()
        .unwrap();
    let ranges = work.path().join("ip-ranges.json");
    fs::write(
        &ranges,
        format!(
            r#"{{"syncToken": "1", "createDate": "2024-01-01-00-00-00",
            "prefixes": [
              {{"ip_prefix": "10.213.60.0/24", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1"}},
              {{"ip_prefix": "{b4}/32", "region": "eu-west-1", "service": "S3", "network_border_group": "eu-west-1"}}],
            "ipv6_prefixes": [
              {{"ipv6_prefix": "{net6}/64", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1"}},
              {{"ipv6_prefix": "{b6}/128", "region": "eu-west-1", "service": "EC2", "network_border_group": "eu-west-1"}}]}}"#
        ),
    )
    .unwrap();
    let metrics = work.path().join("metrics.prom");
    let interval = 2;
    let mut opts = AgentOptions::interval(interval);
    for arg in [
        "--no-imds",
        "--account-id",
        "123456789012",
        "--region",
        "eu-west-1",
        "--az-id",
        "euw1-az1",
        "--vpc-id",
        "vpc-0f1d0000000000001",
        "--subnet-id",
        "subnet-0f1d0000000000001",
        "--instance-id",
        "i-0f1d0000000000001",
        // base + 2 (10.213.0.2, the Amazon DNS resolver's place) is nobody here.
        "--vpc-cidr",
        "10.213.0.0/16",
    ] {
        opts = opts.arg(arg);
    }
    opts = opts.arg("--traffic-path").arg(format!("{net6}/64=4"));
    opts = opts
        .arg("--log-format")
        .arg(log_format(ALL_FIELDS))
        .arg("--interface-id")
        .arg(format!("{}=eni-0f1d0000000000001", a.iface))
        .arg("--aws-ip-ranges")
        .arg(ranges.to_str().unwrap())
        .arg("--metrics-file")
        .arg(metrics.to_str().unwrap());
    let mut agent = Agent::start(a, opts);

    wait_for_window_start(interval, Duration::from_millis(200));
    let tcp_port = tcp_exchanges(
        &a.netns,
        &b.netns,
        SocketAddr::new(a4, 8080),
        &[TcpExchange {
            request: 1_000,
            response: 500,
        }],
    )[0];
    let plan = UdpPlan {
        flows: 1,
        per_flow: 5,
        payload: 100,
        gap: Duration::ZERO,
    };
    let udp_port = udp_send(&b.netns, &a.netns, SocketAddr::new(a4_2, 9000), plan)[0];
    ping(&b.netns, a4_2, 3, 56);
    ping(&b.netns, a6_2, 3, 56);
    send_aws_internal_traffic(a, b);
    let traffic_done = unix_now();

    let header = ALL_FIELDS;
    records::wait_for_with_header(
        &agent.output_dir(),
        header,
        Duration::from_secs(20),
        "NODATA after the traffic",
        |recs| {
            recs.iter()
                .any(|r| r.log_status == "NODATA" && r.start as f64 >= traffic_done)
        },
    );
    agent.stop();
    let recs = records::read(&agent.output_dir(), header);
    // Multicast (MLD reports at address setup) is not this test's traffic.
    let recs: Vec<Record> = recs
        .into_iter()
        .filter(|r| {
            r.log_status != "OK"
                || !r
                    .field("pkt-dstaddr")
                    .parse::<IpAddr>()
                    .unwrap()
                    .is_multicast()
        })
        .collect();
    let text = dump(&recs);

    for r in &recs {
        for (f, v) in [
            ("version", "10"),
            ("account-id", "123456789012"),
            ("interface-id", "eni-0f1d0000000000001"),
            ("vpc-id", "vpc-0f1d0000000000001"),
            ("subnet-id", "subnet-0f1d0000000000001"),
            ("instance-id", "i-0f1d0000000000001"),
            ("region", "eu-west-1"),
            ("az-id", "euw1-az1"),
            ("sublocation-type", "-"),
            ("sublocation-id", "-"),
            ("reject-reason", "-"),
            ("resource-id", "-"),
            ("encryption-status", "-"),
        ] {
            assert_eq!(r.field(f), v, "{f} in {}", r.line);
        }
        for f in ALL_FIELDS.split(' ').filter(|f| f.starts_with("ecs-")) {
            assert_eq!(r.field(f), "-", "{f} in {}", r.line);
        }
        let addr_fields = ["srcaddr", "dstaddr", "pkt-srcaddr", "pkt-dstaddr"];
        for f in addr_fields {
            let v = r.field(f);
            assert!(
                v != "169.254.169.254",
                "instance metadata traffic was logged: {}",
                r.line
            );
        }
        if r.log_status == "OK" {
            assert_eq!(r.field("action"), "ACCEPT", "{}", r.line);
            assert!(
                !["67", "68"].contains(&r.field("srcport"))
                    && !["67", "68"].contains(&r.field("dstport")),
                "DHCP was logged: {}",
                r.line
            );
        } else {
            assert_eq!(r.log_status, "NODATA", "{}", r.line);
            for f in [
                "tcp-flags",
                "type",
                "pkt-srcaddr",
                "pkt-dstaddr",
                "pkt-src-aws-service",
                "pkt-dst-aws-service",
                "flow-direction",
                "traffic-path",
            ] {
                assert_eq!(r.field(f), "-", "{f} of NODATA: {}", r.line);
            }
        }
    }

    // TCP, client B -> server A:8080 and back. Each segment is 52 bytes of headers (20 IP + 20
    // TCP + 12 timestamp option), SYN and SYN-ACK 8 more (their MSS/SACK/window options).
    let tcp_in = flow(&recs, "ingress", b4, a4, 6);
    assert_eq!(tcp_in.same("srcport"), tcp_port.to_string());
    assert_eq!(
        (tcp_in.same("srcaddr"), tcp_in.same("dstaddr")),
        (b4.to_string(), a4.to_string())
    );
    assert_eq!(tcp_in.tcp_flags(), 3, "SYN and FIN\n{text}");
    assert_eq!(
        tcp_in.bytes(),
        52 * tcp_in.packets() + 8 + 1_000,
        "\n{text}"
    );
    assert_eq!(
        (tcp_in.same("type"), tcp_in.same("traffic-path")),
        ("IPv4".into(), "-".into())
    );
    assert_eq!(
        (
            tcp_in.same("pkt-src-aws-service"),
            tcp_in.same("pkt-dst-aws-service")
        ),
        ("S3".into(), "AMAZON".into())
    );
    let tcp_out = flow(&recs, "egress", a4, b4, 6);
    assert_eq!(tcp_out.tcp_flags(), 19, "SYN-ACK and FIN\n{text}");
    assert_eq!(
        tcp_out.bytes(),
        52 * tcp_out.packets() + 8 + 500,
        "\n{text}"
    );
    assert_eq!(tcp_out.same("traffic-path"), "1", "B is inside --vpc-cidr");
    assert_eq!(tcp_out.same("pkt-dst-aws-service"), "S3");

    // UDP to A's secondary address: dstaddr is A's primary, pkt-dstaddr the header.
    let udp = flow(&recs, "ingress", b4, a4_2, 17);
    assert_eq!((udp.packets(), udp.bytes()), (5, 5 * 128));
    assert_eq!(
        (udp.same("srcport"), udp.same("dstport")),
        (udp_port.to_string(), "9000".into())
    );
    assert_eq!(
        (udp.same("srcaddr"), udp.same("dstaddr")),
        (b4.to_string(), a4.to_string())
    );
    assert_eq!(udp.tcp_flags(), 0, "non-TCP flows report 0");

    // ICMP echo to the secondary address and its reply from it.
    let echo = flow(&recs, "ingress", b4, a4_2, 1);
    assert_eq!((echo.packets(), echo.bytes()), (3, 3 * 84));
    assert_eq!(
        (
            echo.same("dstaddr"),
            echo.same("srcport"),
            echo.same("dstport")
        ),
        (a4.to_string(), "0".into(), "0".into())
    );
    let reply = flow(&recs, "egress", a4_2, b4, 1);
    assert_eq!((reply.packets(), reply.bytes()), (3, 3 * 84));
    assert_eq!(
        (reply.same("srcaddr"), reply.same("dstaddr")),
        (a4.to_string(), b4.to_string())
    );
    assert_eq!(reply.same("traffic-path"), "1");

    // ICMPv6 echo to the newer IPv6 address: dstaddr shows the older (primary) one.
    let echo6 = flow(&recs, "ingress", b6, a6_2, 58);
    assert_eq!((echo6.packets(), echo6.bytes()), (3, 3 * 104));
    assert_eq!(
        (
            echo6.same("srcaddr"),
            echo6.same("dstaddr"),
            echo6.same("type")
        ),
        (b6.to_string(), a6.to_string(), "IPv6".into())
    );
    assert_eq!(echo6.same("pkt-src-aws-service"), "EC2");
    let reply6 = flow(&recs, "egress", a6_2, b6, 58);
    assert_eq!((reply6.packets(), reply6.bytes()), (3, 3 * 104));
    assert_eq!(reply6.same("srcaddr"), a6.to_string());
    assert_eq!(
        reply6.same("traffic-path"),
        "4",
        "by --traffic-path {net6}/64=4"
    );
    assert_eq!(reply6.same("pkt-dst-aws-service"), "EC2");

    // Exactly these seven flows, nothing else (excluded traffic included).
    let mut tuples: Vec<(String, String, String, String)> = recs
        .iter()
        .filter(|r| r.log_status == "OK")
        .map(|r| {
            (
                r.field("flow-direction").into(),
                r.field("pkt-srcaddr").into(),
                r.field("pkt-dstaddr").into(),
                r.field("protocol").into(),
            )
        })
        .collect();
    tuples.sort();
    tuples.dedup();
    assert_eq!(tuples.len(), 7, "{tuples:?}\n{text}");

    let prom = fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.lines()
            .any(|l| l == "flowlog_aws_internal_excluded_packets_total 6"),
        "4 to 169.254.169.254 + 2 DHCP:\n{prom}"
    );
}

#[test]
fn aws_internal_traffic_is_kept_with_the_flag() {
    let ns = Namespaces::new(Setup::new(61).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let (a4, b4) = (a.addr(Family::V4), b.addr(Family::V4));
    imds_stand_in(a, b);
    let interval = 2;
    let mut agent = Agent::start(
        a,
        AgentOptions::interval(interval)
            .arg("--no-imds")
            .arg("--include-aws-internal-traffic"),
    );
    wait_for_window_start(interval, Duration::from_millis(200));
    let imds: IpAddr = "169.254.169.254".parse().unwrap();
    let port = send_aws_internal_traffic(a, b);
    let recs = records::wait_for(
        &agent.output_dir(),
        Duration::from_secs(20),
        "both flows",
        |recs| {
            let t = records::totals(recs);
            t.keys().any(|k| k.dst == imds) && t.keys().any(|k| k.dst_port == 67)
        },
    );
    agent.stop();
    let t = records::totals(&records::read_default(&agent.output_dir()));
    let to_imds = records::Tuple {
        src: a4,
        dst: imds,
        src_port: port,
        dst_port: 80,
        protocol: 17,
    };
    let dhcp = records::Tuple {
        src: a4,
        dst: b4,
        src_port: 68,
        dst_port: 67,
        protocol: 17,
    };
    assert_eq!(
        (t[&to_imds].packets, t[&to_imds].bytes),
        (4, 4 * 78),
        "{}",
        dump(&recs)
    );
    assert_eq!(
        (t[&dhcp].packets, t[&dhcp].bytes),
        (2, 2 * 328),
        "{}",
        dump(&recs)
    );
    assert_eq!(t.len(), 2, "{t:?}");
}

#[test]
fn parquet_objects_under_hive_hourly_keys() {
    let ns = Namespaces::new(Setup::new(62).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let interval = 2;
    let opts = AgentOptions::interval(interval)
        .arg("--no-imds").arg("--account-id").arg("123456789012").arg("--region").arg("eu-west-1")
        .arg("--flow-log-id").arg("fl-0123456789abcdef0")
        .arg("--file-format").arg("parquet").arg("--hive-compatible-partitions").arg("--per-hour-partition")
        .arg("--log-format").arg("${version} ${interface-id} ${srcaddr} ${dstaddr} ${packets} ${bytes} ${start} ${end} ${traffic-path} ${log-status}");
    let mut agent = Agent::start(a, opts);
    wait_for_window_start(interval, Duration::from_millis(200));
    ping(&b.netns, a.addr(Family::V4), 4, 56);
    agent.stop();

    let mut files = Vec::new();
    let mut stack = vec![agent.output_dir()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path())
            } else {
                files.push(e.path())
            }
        }
    }
    assert!(
        files
            .iter()
            .all(|f| f.to_string_lossy().ends_with(".log.parquet")),
        "{files:?}"
    );
    let mut echo = (0i64, 0i64);
    let mut rows_total = 0;
    for f in &files {
        let rel = f
            .strip_prefix(agent.output_dir())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 9, "{rel}");
        assert_eq!(
            &parts[..4],
            [
                "AWSLogs",
                "aws-account-id=123456789012",
                "aws-service=vpcflowlogs",
                "aws-region=eu-west-1"
            ]
        );
        for (p, k, len) in [
            (parts[4], "year=", 4),
            (parts[5], "month=", 2),
            (parts[6], "day=", 2),
            (parts[7], "hour=", 2),
        ] {
            let v = p.strip_prefix(k).unwrap_or_else(|| panic!("{rel}"));
            assert!(
                v.len() == len && v.bytes().all(|c| c.is_ascii_digit()),
                "{rel}"
            );
        }
        let name = parts[8];
        let stamp = format!(
            "{}{}{}T{}",
            &parts[4][5..],
            &parts[5][6..],
            &parts[6][4..],
            &parts[7][5..]
        );
        assert!(
            name.starts_with(&format!(
                "123456789012_vpcflowlogs_eu-west-1_fl-0123456789abcdef0_{stamp}"
            )),
            "{rel}"
        );

        let reader =
            parquet::file::reader::SerializedFileReader::new(fs::File::open(f).unwrap()).unwrap();
        use parquet::file::reader::FileReader as _;
        let schema = reader.metadata().file_metadata().schema_descr();
        let names: Vec<String> = (0..schema.num_columns())
            .map(|i| schema.column(i).name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "version",
                "interface_id",
                "srcaddr",
                "dstaddr",
                "packets",
                "bytes",
                "start",
                "end",
                "traffic_path",
                "log_status"
            ]
        );
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            rows_total += 1;
            let cols: BTreeMap<String, parquet::record::Field> = row
                .get_column_iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            assert_eq!(cols["version"], parquet::record::Field::Int(5));
            assert_eq!(
                cols["interface_id"],
                parquet::record::Field::Str(a.iface.clone())
            );
            if cols["log_status"] == parquet::record::Field::Str("OK".into())
                && cols["srcaddr"] == parquet::record::Field::Str(b.v4.to_string())
            {
                let (parquet::record::Field::Long(p), parquet::record::Field::Long(by)) =
                    (&cols["packets"], &cols["bytes"])
                else {
                    panic!("packets/bytes not INT64: {cols:?}")
                };
                echo.0 += p;
                echo.1 += by;
                assert_eq!(
                    cols["traffic_path"],
                    parquet::record::Field::Null,
                    "ingress"
                );
            }
        }
    }
    assert_eq!(echo, (4, 4 * 84), "the echo requests, summed over windows");
    assert_eq!(
        rows_total,
        files
            .iter()
            .map(|f| {
                let r =
                    parquet::file::reader::SerializedFileReader::new(fs::File::open(f).unwrap())
                        .unwrap();
                use parquet::file::reader::FileReader as _;
                r.metadata().file_metadata().num_rows() as usize
            })
            .sum::<usize>(),
        "row iteration and footer row counts agree"
    );
}
