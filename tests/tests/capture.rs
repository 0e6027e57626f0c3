//! The real `flowlog` binary (FLOWLOG_BIN) attached to a veth end in a namespace, real traffic
//! from the peer namespace, and the records it writes compared with exact numbers: what the
//! test sent, what a packet capture of the same interface saw, and what the kernel's TCP
//! counters say. Root only; each test builds its own namespaces (subnet 10.213.x.0/24 with its
//! own x) and its own agent.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::mpsc,
    time::Duration,
};

use flowlog_tests::{
    agent::{Agent, AgentOptions, unix_now, wait_for_window_start},
    netns::{self, Family, Namespaces, Offloads, Setup, tcp_snmp, wait_until_tcp_closed},
    records::{self, Record, Totals, Tuple, dump},
    traffic::{TcpExchange, UdpPlan, ping, tcp_exchanges, udp_send},
    wire::{self, Tcpdump, WirePacket},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn tuple(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, protocol: u8) -> Tuple {
    Tuple {
        src,
        dst,
        src_port,
        dst_port,
        protocol,
    }
}

/// Packets and bytes the records hold for `t` (zero when there is no record).
fn got(totals: &BTreeMap<Tuple, Totals>, t: &Tuple) -> (u64, u64) {
    totals
        .get(t)
        .map(|x| (x.packets, x.bytes))
        .unwrap_or((0, 0))
}

/// Every OK record is on the watched interface, in the default v2 shape, accepted.
fn check_common_fields(records: &[Record], iface: &str) {
    for r in records {
        assert_eq!(r.version, 2, "{}", r.line);
        assert_eq!(r.account_id, "unknown", "{}", r.line);
        assert_eq!(r.interface_id, iface, "{}", r.line);
        if r.log_status == "OK" {
            assert_eq!(r.action, "ACCEPT", "{}", r.line);
        }
    }
}

/// TCP (3 connections over IPv4, 1 over IPv6), UDP (IPv4 and IPv6, several sizes), ICMP echo
/// (IPv4 and IPv6) from B to A, with the agent on A's interface and offloads off so every skb
/// is one wire segment. Each tuple's records, summed over windows, must equal:
/// - for UDP and ICMP: exactly what was sent (packets, payload + headers);
/// - for every tuple (TCP included): exactly what tcpdump saw on the same interface (packets,
///   sum of IP lengths), in both directions, with no tuple missing or extra.
///
/// After the traffic, an idle window must produce a NODATA record.
#[test]
fn records_match_sent_traffic_and_capture_exactly() {
    let ns = Namespaces::new(Setup::new(11).offloads(Offloads::Off));
    let (a, b) = (&ns.a, &ns.b);
    let interval = 2;
    let mut agent = Agent::start(a, AgentOptions::interval(interval));
    let capture = Tcpdump::start(a, agent.work_dir());

    let at = |ip: IpAddr, port| SocketAddr::new(ip, port);
    let (a4, b4) = (a.addr(Family::V4), b.addr(Family::V4));
    let (a6, b6) = (a.addr(Family::V6), b.addr(Family::V6));
    let tcp4 = [
        TcpExchange {
            request: 1_000,
            response: 200,
        },
        TcpExchange {
            request: 5_000,
            response: 3_000,
        },
        TcpExchange {
            request: 20_000,
            response: 100,
        },
    ];
    let tcp4_ports = tcp_exchanges(&a.netns, &b.netns, at(a4, 8080), &tcp4);
    let tcp6_ports = tcp_exchanges(
        &a.netns,
        &b.netns,
        at(a6, 8081),
        &[TcpExchange {
            request: 3_000,
            response: 1_500,
        }],
    );
    let plan = |per_flow, payload| UdpPlan {
        flows: 1,
        per_flow,
        payload,
        gap: Duration::ZERO,
    };
    let udp_small = udp_send(&b.netns, &a.netns, at(a4, 5001), plan(5, 100))[0];
    let udp_big = udp_send(&b.netns, &a.netns, at(a4, 5002), plan(3, 1_000))[0];
    let udp6 = udp_send(&b.netns, &a.netns, at(a6, 5003), plan(4, 500))[0];
    ping(&b.netns, a4, 4, 56);
    ping(&b.netns, a6, 3, 56);
    let traffic_end = unix_now();

    // An idle window after the traffic: NODATA, with the window's bounds.
    let idle_from = traffic_end.ceil() as u64;
    let records = records::wait_for(
        &agent.output_dir(),
        Duration::from_secs(5 * interval),
        "NODATA record",
        |rs| {
            rs.iter()
                .any(|r| r.log_status == "NODATA" && r.start >= idle_from)
        },
    );
    let nodata: Vec<&Record> = records
        .iter()
        .filter(|r| r.log_status == "NODATA")
        .collect();
    // The agent's first window starts when the agent does: when the traffic only began after
    // its first boundary, that partial window is NODATA too, from the earliest start of all
    // records to the first boundary.
    let first_start = records.iter().map(|r| r.start).min().expect("records");
    for r in nodata
        .iter()
        .filter(|r| r.start == first_start && r.start % interval != 0)
    {
        assert!(
            r.end % interval == 0 && r.end - r.start < interval,
            "the first window's NODATA ends on the first boundary: {}",
            r.line
        );
    }
    for r in nodata
        .iter()
        .filter(|r| !(r.start == first_start && r.start % interval != 0))
    {
        assert_eq!(
            r.start % interval,
            0,
            "NODATA starts on a window boundary: {}",
            r.line
        );
        assert_eq!(
            r.end,
            r.start + interval,
            "NODATA spans the whole window: {}",
            r.line
        );
    }
    agent.stop();
    let wire = capture.stop();
    let records = records::read_default(&agent.output_dir());
    check_common_fields(&records, &a.iface);
    assert!(
        records.iter().all(|r| r.log_status != "SKIPDATA"),
        "no SKIPDATA expected:\n{}",
        dump(&records)
    );
    let got_totals = records::totals(&records);

    // 1. What was sent. UDP: payload + 8 (UDP) + 20 (IPv4) or 40 (IPv6) per datagram, nothing
    //    back from A. ICMP echo with 56 data bytes: 84 B (IPv4) per request and per reply.
    let expect_sent = [
        (tuple(b4, a4, udp_small, 5001, UDP), (5, 5 * 128)),
        (tuple(b4, a4, udp_big, 5002, UDP), (3, 3 * 1_028)),
        (tuple(b6, a6, udp6, 5003, UDP), (4, 4 * 548)),
        (tuple(b4, a4, 0, 0, ICMP), (4, 336)),
        (tuple(a4, b4, 0, 0, ICMP), (4, 336)),
    ];
    for (t, want) in &expect_sent {
        assert_eq!(
            got(&got_totals, t),
            *want,
            "records of {t:?}:\n{}",
            dump(&records)
        );
    }
    for port in [5001, 5002, 5003] {
        assert!(
            !got_totals
                .keys()
                .any(|t| t.protocol == UDP && t.src_port == port),
            "A sent nothing from UDP port {port}:\n{}",
            dump(&records)
        );
    }

    // 2. What the wire saw, per tuple as a record shows it (the interface's side normalised to
    //    its address, spec §2.6). Left out: the MLD reports that link-up sends (ICMPv6 from
    //    `::`, as the interfaces have no link-local address, to ff02::16), which may come
    //    before the capture starts. In records they read `:: → A` (received) and `A → ff02::16`
    //    (sent).
    let wire_totals = wire::totals(&wire, a);
    let mld_v2_routers: IpAddr = "ff02::16".parse().expect("address");
    let comparable =
        |t: &Tuple| !(t.protocol == ICMPV6 && (t.src.is_unspecified() || t.dst == mld_v2_routers));
    let from_wire: BTreeMap<Tuple, (u64, u64)> = wire_totals
        .iter()
        .filter(|(t, _)| comparable(t))
        .map(|(t, (tot, _))| (*t, (tot.packets, tot.bytes)))
        .collect();
    let from_records: BTreeMap<Tuple, (u64, u64)> = got_totals
        .iter()
        .filter(|(t, _)| comparable(t))
        .map(|(t, tot)| (*t, (tot.packets, tot.bytes)))
        .collect();
    let keys: BTreeSet<&Tuple> = from_records.keys().chain(from_wire.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|t| from_records.get(t) != from_wire.get(t))
        .map(|t| {
            format!(
                "{t:?}: records {:?}, capture {:?}",
                from_records.get(t),
                from_wire.get(t)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "records vs capture per tuple (packets, bytes):\n{}\nrecords:\n{}",
        differ.join("\n"),
        dump(&records)
    );
    let mut tcp_tuples = BTreeSet::new();
    for (ports, server, client, sport) in [(&tcp4_ports, a4, b4, 8080), (&tcp6_ports, a6, b6, 8081)]
    {
        for &p in ports {
            tcp_tuples.insert(tuple(client, server, p, sport, TCP));
            tcp_tuples.insert(tuple(server, client, sport, p, TCP));
        }
    }
    let recorded_tcp: BTreeSet<Tuple> = got_totals
        .keys()
        .filter(|t| t.protocol == TCP)
        .copied()
        .collect();
    assert_eq!(recorded_tcp, tcp_tuples, "TCP tuples recorded");
    // IPv6 echo: 3 requests and 3 replies of 104 B (40 + 8 + 56); neighbour discovery shares
    // their tuples (ICMPv6 has no ports), which the capture accounts for above.
    let echo6 = wire
        .iter()
        .filter(|p| p.tuple.protocol == ICMPV6 && p.ip_len == 104)
        .count();
    assert_eq!(echo6, 6, "IPv6 echo requests and replies on the wire");
}

/// TCP flags with AWS's rule, with a format that has `${tcp-flags}`: per connection, the OR
/// over the records of a tuple equals the OR over its captured packets, and is SYN|FIN (3)
/// client→server and SYN-ACK|FIN (19) server→client.
#[test]
fn tcp_flags_follow_aws_rule() {
    const FORMAT: &str = "${version} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} \
                          ${protocol} ${packets} ${bytes} ${start} ${end} ${tcp-flags} ${log-status}";
    let header = "version interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end tcp-flags log-status";
    let ns = Namespaces::new(Setup::new(12).offloads(Offloads::Off));
    let (a, b) = (&ns.a, &ns.b);
    let mut agent = Agent::start(a, AgentOptions::interval(1).arg("--log-format").arg(FORMAT));
    let capture = Tcpdump::start(a, agent.work_dir());
    let server = SocketAddr::new(a.addr(Family::V4), 8443);
    let ex = [
        TcpExchange {
            request: 700,
            response: 300,
        },
        TcpExchange {
            request: 10,
            response: 0,
        },
    ];
    let ports = tcp_exchanges(&a.netns, &b.netns, server, &ex);
    let (a4, b4) = (a.addr(Family::V4), b.addr(Family::V4));
    // Stop once the records hold both FINs of every connection (the agent counted them).
    let flags_of = |records: &[Record]| {
        let mut flags: BTreeMap<Tuple, u8> = BTreeMap::new();
        for r in records {
            if let Some(t) = r.tuple {
                let f: u8 = r.field("tcp-flags").parse().expect("tcp-flags is a number");
                *flags.entry(t).or_default() |= f;
            }
        }
        flags
    };
    records::wait_for_with_header(
        &agent.output_dir(),
        header,
        Duration::from_secs(10),
        "records with both FINs of every connection",
        |recs| {
            let flags = flags_of(recs);
            ports.iter().all(|p| {
                flags
                    .get(&tuple(b4, a4, *p, 8443, TCP))
                    .is_some_and(|f| f & 1 == 1)
                    && flags
                        .get(&tuple(a4, b4, 8443, *p, TCP))
                        .is_some_and(|f| f & 1 == 1)
            })
        },
    );
    agent.stop();
    let wire = capture.stop();
    let records = records::read(&agent.output_dir(), header);
    assert_eq!(
        records[0].version, 3,
        "a format with tcp-flags is version 3"
    );
    let wire_totals = wire::totals(&wire, a);
    let flags = flags_of(&records);
    for p in ports {
        let c2s = tuple(b4, a4, p, 8443, TCP);
        let s2c = tuple(a4, b4, 8443, p, TCP);
        assert_eq!(
            wire_totals[&c2s].1, 3,
            "capture: client→server flags of port {p}"
        );
        assert_eq!(
            wire_totals[&s2c].1, 19,
            "capture: server→client flags of port {p}"
        );
        assert_eq!(
            flags.get(&c2s),
            Some(&3),
            "records: client→server flags of port {p}:\n{}",
            dump(&records)
        );
        assert_eq!(
            flags.get(&s2c),
            Some(&19),
            "records: server→client flags of port {p}:\n{}",
            dump(&records)
        );
    }
}

/// Steady UDP (one 200-byte datagram every 50 ms) from 0.2 s after a boundary for ~3.3 s with
/// 1 s windows: exactly four records (windows w..w+3), starts exactly w, w+1, w+2, w+3, no
/// overlap, and their sum is exactly what was sent.
#[test]
fn flow_across_window_boundaries_is_split_without_loss_or_double_counting() {
    let ns = Namespaces::new(Setup::new(13).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let mut agent = Agent::start(a, AgentOptions::interval(1));
    let to = SocketAddr::new(a.addr(Family::V4), 6000);
    let w0 = wait_for_window_start(1, Duration::from_millis(200));
    let count = 66;
    let plan = UdpPlan {
        flows: 1,
        per_flow: count,
        payload: 200,
        gap: Duration::from_millis(50),
    };
    let port = udp_send(&b.netns, &a.netns, to, plan)[0];
    let sent_until = unix_now();
    assert!(
        sent_until < (w0 + 4) as f64,
        "sending overran the fourth window ({sent_until} >= {})",
        w0 + 4
    );
    let t = tuple(b.addr(Family::V4), a.addr(Family::V4), port, 6000, UDP);
    // Stop once the fourth window closed (its record is written).
    records::wait_for(
        &agent.output_dir(),
        Duration::from_secs(10),
        "the records of the four windows",
        |recs| recs.iter().filter(|r| r.tuple == Some(t)).count() == 4,
    );
    agent.stop();
    let records = records::read_default(&agent.output_dir());
    check_common_fields(&records, &a.iface);
    let mut flow: Vec<&Record> = records.iter().filter(|r| r.tuple == Some(t)).collect();
    flow.sort_by_key(|r| r.start);
    let starts: Vec<u64> = flow.iter().map(|r| r.start).collect();
    assert_eq!(
        starts,
        vec![w0, w0 + 1, w0 + 2, w0 + 3],
        "one record per window:\n{}",
        dump(&records)
    );
    for pair in flow.windows(2) {
        assert!(
            pair[1].start >= pair[0].end,
            "records overlap:\n{}\n{}",
            pair[0].line,
            pair[1].line
        );
    }
    for r in &flow {
        assert!(
            r.end <= r.start + 1,
            "record longer than its window: {}",
            r.line
        );
    }
    let packets: u64 = flow.iter().map(|r| r.packets.unwrap()).sum();
    let bytes: u64 = flow.iter().map(|r| r.bytes.unwrap()).sum();
    assert_eq!(
        (packets, bytes),
        (count as u64, count as u64 * 228),
        "sum over windows:\n{}",
        dump(&records)
    );
    // No other IP traffic exists in these IPv4-only namespaces.
    assert!(
        records
            .iter()
            .all(|r| r.tuple.is_none() || r.tuple == Some(t)),
        "unexpected flows:\n{}",
        dump(&records)
    );
}

/// MSS on a 1500-byte veth with TCP timestamps: 1500 - 20 (IPv4) - 20 (TCP) - 12 (timestamps
/// option). Every segment of a TSO/GSO super-packet has this size except the last.
const MSS: u64 = 1448;

/// The wire packets and bytes one captured skb stands for: ceil(payload / MSS) segments (one if
/// it has no payload), each carrying the skb's IP and TCP headers.
fn wire_segments(p: &WirePacket) -> (u64, u64) {
    let headers = p.ip_len - p.tcp_payload_len;
    let segments = p.tcp_payload_len.div_ceil(MSS).max(1);
    (segments, p.tcp_payload_len + segments * headers)
}

/// Sum of a counter over the lines of a Prometheus text file whose labels include
/// `interface="<iface>"`.
fn metric_sum(text: &str, name: &str, iface: &str) -> u64 {
    let label = format!("interface=\"{iface}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name && series.contains(&label))
                .then(|| value.parse::<f64>().expect("metric value") as u64)
        })
        .sum()
}

/// `--max-flows 16` and 100 concurrent UDP flows (3 datagrams of 64 B each, sent in one burst
/// right after a window starts): that window has one SKIPDATA record for the interface,
/// exactly 16 flows recorded (each complete: a flow that got a slot keeps it), and recorded
/// plus overflowed packets and bytes (from the metrics file) equal what was sent.
#[test]
fn full_flow_map_reports_skipdata_and_loses_nothing() {
    let ns = Namespaces::new(Setup::new(14).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let interval = 2;
    let metrics_dir = tempfile::Builder::new()
        .prefix("flit-metrics-")
        .tempdir()
        .expect("temp dir");
    let metrics = metrics_dir.path().join("metrics.prom");
    let opts = AgentOptions::interval(interval)
        .arg("--max-flows")
        .arg("16")
        .arg("--metrics-file")
        .arg(metrics.to_string_lossy());
    let mut agent = Agent::start(a, opts);
    let to = SocketAddr::new(a.addr(Family::V4), 7000);
    let (flows, per_flow, ip_len) = (100u64, 3u64, 64 + 28);
    let w = wait_for_window_start(interval, Duration::from_millis(200));
    let plan = UdpPlan {
        flows: flows as usize,
        per_flow: per_flow as usize,
        payload: 64,
        gap: Duration::ZERO,
    };
    let ports: BTreeSet<u16> = udp_send(&b.netns, &a.netns, to, plan).into_iter().collect();
    assert_eq!(ports.len(), flows as usize, "distinct source ports");
    assert!(
        unix_now() < (w + interval) as f64 - 0.5,
        "the burst did not fit in one window"
    );
    records::wait_for(
        &agent.output_dir(),
        Duration::from_secs(4 * interval),
        "SKIPDATA record",
        |rs| rs.iter().any(|r| r.log_status == "SKIPDATA"),
    );
    agent.stop();
    let records = records::read_default(&agent.output_dir());
    check_common_fields(&records, &a.iface);
    let skip: Vec<&Record> = records
        .iter()
        .filter(|r| r.log_status == "SKIPDATA")
        .collect();
    assert_eq!(skip.len(), 1, "one SKIPDATA record:\n{}", dump(&records));
    assert_eq!(
        (skip[0].start, skip[0].end),
        (w, w + interval),
        "SKIPDATA carries the window bounds"
    );
    let ours: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.tuple
                .is_some_and(|t| t.dst_port == 7000 && ports.contains(&t.src_port))
        })
        .collect();
    assert_eq!(
        ours.len(),
        16,
        "flows recorded = map capacity:\n{}",
        dump(&records)
    );
    assert!(
        ours.iter().all(|r| r.start == w || r.start == w + 1),
        "recorded in the burst's window:\n{}",
        dump(&records)
    );
    for r in &ours {
        assert_eq!(
            (r.packets, r.bytes),
            (Some(per_flow), Some(per_flow * ip_len)),
            "{}",
            r.line
        );
    }
    assert!(
        records
            .iter()
            .all(|r| r.tuple.is_none() || ours.iter().any(|o| o.line == r.line)),
        "no other flows expected:\n{}",
        dump(&records)
    );
    let recorded_packets: u64 = ours.iter().map(|r| r.packets.unwrap()).sum();
    let recorded_bytes: u64 = ours.iter().map(|r| r.bytes.unwrap()).sum();
    let text = std::fs::read_to_string(&metrics).unwrap_or_else(|e| {
        panic!(
            "metrics file {}: {e}; agent log:\n{}",
            metrics.display(),
            agent.log()
        )
    });
    let overflow_packets = metric_sum(&text, "flowlog_overflow_packets_total", &a.iface);
    let overflow_bytes = metric_sum(&text, "flowlog_overflow_bytes_total", &a.iface);
    assert_eq!(
        (
            recorded_packets + overflow_packets,
            recorded_bytes + overflow_bytes
        ),
        (flows * per_flow, flows * per_flow * ip_len),
        "records {recorded_packets} packets / {recorded_bytes} bytes + overflow {overflow_packets} / \
         {overflow_bytes} must be all that was sent; metrics:\n{text}"
    );
}

/// Offloads on (veth defaults): the sender hands its veth 64 KB TSO super-packets and they
/// reach A's TC hooks unsegmented (veth does not segment, A's GRO is off). The records must
/// still count wire segments. With the kernel's TCP counters of each namespace:
///
/// - B→A packets (A's ingress) = segments B's TCP transmitted = ΔOutSegs(B) + ΔRetransSegs(B).
///   OutSegs adds `tcp_skb_pcount` (the segment count of a TSO skb) per transmitted skb and
///   leaves retransmissions to RetransSegs. A→B packets (A's egress) = ΔOutSegs(A) +
///   ΔRetransSegs(A).
/// - InSegs is *not* a segment count here: `tcp_v4_rcv` adds 1 per received skb, so a
///   super-packet counts once. ΔInSegs(A) therefore equals the frames B→A that tcpdump sees on
///   A's interface (it too sees skbs), and ΔInSegs(B) the frames A→B.
/// - packets and bytes = the captured frames cut as the stack cuts them ([`wire_segments`]):
///   a frame with a TCP payload of p bytes is ceil(p / MSS) segments, each with the frame's
///   IP and TCP headers. This holds with retransmissions and SACK options too (the simpler
///   "payload + 52 per segment" does not: a busy machine sometimes makes B retransmit).
///
/// Only this test's one connection runs in these namespaces, so the counter deltas are its.
#[test]
fn gso_super_packets_count_as_wire_segments() {
    let ns = Namespaces::new(Setup::new(15).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let mut agent = Agent::start(a, AgentOptions::interval(2));
    let capture = Tcpdump::start(a, agent.work_dir());
    let before = (tcp_snmp(&a.netns), tcp_snmp(&b.netns));
    let (upload, download) = (2_000_000, 1_000_000);
    let server = SocketAddr::new(a.addr(Family::V4), 9000);
    let ex = [TcpExchange {
        request: upload,
        response: download,
    }];
    let port = tcp_exchanges(&a.netns, &b.netns, server, &ex)[0];
    // Read the counters once the connection is over on both ends (nothing more is sent).
    wait_until_tcp_closed(&[&a.netns, &b.netns], 9000, Duration::from_secs(10));
    let after = (tcp_snmp(&a.netns), tcp_snmp(&b.netns));
    agent.stop();
    let wire = capture.stop();
    let records = records::read_default(&agent.output_dir());
    check_common_fields(&records, &a.iface);
    let totals = records::totals(&records);
    let (a4, b4) = (a.addr(Family::V4), b.addr(Family::V4));
    let up = tuple(b4, a4, port, 9000, TCP);
    let down = tuple(a4, b4, 9000, port, TCP);
    let (up_packets, up_bytes) = got(&totals, &up);
    let (down_packets, down_bytes) = got(&totals, &down);
    let delta = |side: usize, name: &str| {
        let (b, a) = if side == 0 {
            (&before.0, &after.0)
        } else {
            (&before.1, &after.1)
        };
        (a[name] - b[name]) as u64
    };
    let (a_side, b_side) = (0, 1);
    let counters = format!(
        "A: OutSegs {} RetransSegs {} InSegs {}; B: OutSegs {} RetransSegs {} InSegs {}; records: up {up_packets}/{up_bytes} down {down_packets}/{down_bytes}",
        delta(a_side, "OutSegs"),
        delta(a_side, "RetransSegs"),
        delta(a_side, "InSegs"),
        delta(b_side, "OutSegs"),
        delta(b_side, "RetransSegs"),
        delta(b_side, "InSegs"),
    );
    assert_eq!(
        up_packets,
        delta(b_side, "OutSegs") + delta(b_side, "RetransSegs"),
        "B→A vs B's sent segments; {counters}"
    );

    assert_eq!(
        down_packets,
        delta(a_side, "OutSegs") + delta(a_side, "RetransSegs"),
        "A→B vs A's sent segments; {counters}"
    );

    eprintln!("gso: {counters}");
    let wire_totals = wire::totals(&wire, a);
    for (t, packets, bytes, receiver) in [
        (up, up_packets, up_bytes, a_side),
        (down, down_packets, down_bytes, b_side),
    ] {
        let frames: Vec<&WirePacket> = wire
            .iter()
            .filter(|p| wire::as_recorded(p, a) == t)
            .collect();
        assert_eq!(frames.len() as u64, wire_totals[&t].0.packets);
        assert_eq!(
            frames.len() as u64,
            delta(receiver, "InSegs"),
            "{t:?}: frames captured vs skbs the receiver's TCP got; {counters}"
        );
        assert!(
            (frames.len() as u64) < packets,
            "{t:?}: the capture saw {} frames for {packets} segments: no GSO happened; {counters}",
            frames.len()
        );
        let (seg_packets, seg_bytes) = frames
            .iter()
            .map(|p| wire_segments(p))
            .fold((0, 0), |a, s| (a.0 + s.0, a.1 + s.1));
        assert_eq!(
            (packets, bytes),
            (seg_packets, seg_bytes),
            "{t:?}: records vs the capture's frames cut into {MSS}-byte segments; {counters}"
        );
    }
}

/// The guards leave nothing behind: namespaces (and with them the veths and TCX links) are
/// gone after a normal drop and after a panic in a test thread, and the agent is stopped.
#[test]
fn namespaces_and_agent_are_removed_even_when_a_test_panics() {
    let names = {
        let ns = Namespaces::new(Setup::new(16));
        let names = ns.names();
        let present = netns::list();
        assert!(
            names.iter().all(|n| present.contains(n)),
            "{names:?} created"
        );
        names
    };
    let present = netns::list();
    assert!(
        names.iter().all(|n| !present.contains(n)),
        "{names:?} still there after drop"
    );

    let (tx, rx) = mpsc::channel();
    let result = std::thread::spawn(move || {
        let ns = Namespaces::new(Setup::new(17));
        let agent = Agent::start(&ns.a, AgentOptions::interval(1));
        tx.send((ns.names(), agent.pid(), agent.work_dir().to_path_buf()))
            .expect("send names");
        panic!("deliberate panic to test cleanup");
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let (names, pid, work_dir) = rx.recv().expect("names");
    let present = netns::list();
    assert!(
        names.iter().all(|n| !present.contains(n)),
        "{names:?} still there after a panic"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "agent (pid {pid}) still running"
    );
    assert!(!work_dir.exists(), "agent's temp dir removed");
}
