//! ACCEPT and REJECT from the kernel's own verdicts: the real `flowlog` binary (FLOWLOG_BIN) on
//! one end of a veth pair, nftables rules in its namespace dropping some of the traffic the
//! other end sends, and the records compared with exact numbers from an independent source:
//! the nftables rule counters (and, for TCP, the client's own SYN retransmission counter), or
//! tcpdump on the agent's interface (closed ports, raw-socket ping).
//! Root only. Namespaces and veths carry the prefix `flrj` and are removed on drop; addresses
//! are 10.214.x.0/24, one x per test.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use flowlog_tests::{
    agent::{Agent, AgentOptions, require_root},
    fdinfo,
    netns::{Side, in_netns, nft, nft_counters, run},
    records::{self, Record, dump},
    traffic::in_ns,
    wire::{Tcpdump, WirePacket},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// The records carry the v2 fields (the harness's reader needs them) plus the direction and
/// the reject reason.
const FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} \
                      ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${tcp-flags} \
                      ${flow-direction} ${reject-reason}";
/// Long enough that each test's traffic fits in one window once [`settle_in_window`] ran.
const INTERVAL: u64 = 60;

// ---------------------------------------------------------------------------------------------
// Test host: two namespaces joined by a veth pair.

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Namespaces `a` (the remote peer) and `b` (where the agent and the firewall run). IPv4 only
/// unless asked, so that the interfaces send nothing on their own. Removed on drop.
struct Pair {
    a: Side,
    b: Side,
}

impl Pair {
    fn new(subnet: u8) -> Self {
        Self::build(subnet, false)
    }

    /// Also IPv6 (fd00:214:x::1 and ::2), without link-local addresses, DAD or router
    /// solicitations; neighbour discovery still runs.
    fn dual_stack(subnet: u8) -> Self {
        Self::build(subnet, true)
    }

    fn build(subnet: u8, ipv6: bool) -> Self {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let side = |tag: char, host: u8| Side {
            netns: format!("flrj-{pid}-{n}-{tag}"),
            // At most 15 bytes: "flrj" + pid in hex (<= 6) + counter + side.
            iface: format!("flrj{pid:x}{n}{tag}"),
            v4: Ipv4Addr::new(10, 214, subnet, host),
            v6: Ipv6Addr::new(0xfd00, 0x214, subnet as u16, 0, 0, 0, 0, host as u16),
        };
        let pair = Pair {
            a: side('a', 1),
            b: side('b', 2),
        };
        for s in [&pair.a, &pair.b] {
            run(Command::new("ip").args(["netns", "add", &s.netns]));
            let sysctls: &[&str] = if ipv6 {
                &[
                    "net.ipv6.conf.default.addr_gen_mode=1",
                    "net.ipv6.conf.default.accept_ra=0",
                    "net.ipv6.conf.default.router_solicitations=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ]
            } else {
                &[
                    "net.ipv6.conf.default.disable_ipv6=1",
                    "net.ipv6.conf.all.disable_ipv6=1",
                ]
            };
            for kv in sysctls {
                run(in_netns(&s.netns, "sysctl").args(["-qw", kv]));
            }
        }
        run(Command::new("ip").args([
            "link",
            "add",
            &pair.a.iface,
            "netns",
            &pair.a.netns,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b.iface,
            "netns",
            &pair.b.netns,
        ]));
        for s in [&pair.a, &pair.b] {
            run(in_netns(&s.netns, "ip").args([
                "addr",
                "add",
                &format!("{}/24", s.v4),
                "dev",
                &s.iface,
            ]));
            if ipv6 {
                let v6 = format!("{}/64", s.v6);
                run(in_netns(&s.netns, "ip")
                    .args(["-6", "addr", "add", &v6, "dev", &s.iface, "nodad"]));
            }
            run(in_netns(&s.netns, "ip").args(["link", "set", "lo", "up"]));
            run(in_netns(&s.netns, "ip").args(["link", "set", &s.iface, "up"]));
        }
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for s in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", &s.netns]).output();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nftables: rules with named counters, read back as the ground truth (`netns::nft_counters`).

// ---------------------------------------------------------------------------------------------
// Agent and records.

fn start_agent(side: &Side, extra: &[&str]) -> Agent {
    let mut opts = AgentOptions::interval(INTERVAL)
        .arg("--log-format")
        .arg(FORMAT)
        .arg("--no-imds");
    for a in extra {
        opts = opts.arg(*a);
    }
    Agent::start(side, opts)
}

fn header() -> String {
    FORMAT
        .split_whitespace()
        .map(|f| f.trim_start_matches("${").trim_end_matches('}'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stops the agent (flushing the partial window) and reads everything it wrote.
fn stop_and_read(agent: &mut Agent) -> Vec<Record> {
    agent.stop();
    records::read(&agent.output_dir(), &header())
}

/// One OK record reduced to what these tests check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Flow {
    direction: String,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    action: String,
    reject_reason: String,
}

/// OK records summed over windows per [`Flow`]: (packets, bytes, records, OR of tcp-flags).
fn flows(records: &[Record]) -> BTreeMap<Flow, (u64, u64, usize, u8)> {
    let mut out: BTreeMap<Flow, (u64, u64, usize, u8)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.log_status == "OK") {
        let t = r.tuple.expect("OK record has a tuple");
        let f = Flow {
            direction: r.field("flow-direction").to_string(),
            src: t.src,
            dst: t.dst,
            src_port: t.src_port,
            dst_port: t.dst_port,
            protocol: t.protocol,
            action: r.action.clone(),
            reject_reason: r.field("reject-reason").to_string(),
        };
        let e = out.entry(f).or_default();
        e.0 += r.packets.expect("packets");
        e.1 += r.bytes.expect("bytes");
        e.2 += 1;
        e.3 |= r.field("tcp-flags").parse::<u8>().expect("tcp-flags");
    }
    out
}

/// [`flows`] as (flow, packets, bytes).
fn packets_and_bytes(records: &[Record]) -> Vec<(Flow, u64, u64)> {
    flows(records)
        .into_iter()
        .map(|(f, (p, b, _, _))| (f, p, b))
        .collect()
}

fn flow(
    direction: &str,
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    ports: (u16, u16),
    protocol: u8,
    action: &str,
    reason: &str,
) -> Flow {
    Flow {
        direction: direction.into(),
        src: src.into(),
        dst: dst.into(),
        src_port: ports.0,
        dst_port: ports.1,
        protocol,
        action: action.into(),
        reject_reason: reason.into(),
    }
}

/// ICMP from A to B, ingress on B's interface, with `action` and `reason`.
fn icmp_a_to_b(pair: &Pair, action: &str, reason: &str) -> Flow {
    flow(
        "ingress",
        pair.a.v4,
        pair.b.v4,
        (0, 0),
        ICMP,
        action,
        reason,
    )
}

/// ICMP from B to A, egress on B's interface, accepted.
fn icmp_b_to_a(pair: &Pair) -> Flow {
    flow("egress", pair.b.v4, pair.a.v4, (0, 0), ICMP, "ACCEPT", "-")
}

/// If less than `needed` is left of the current window, waits for the next one (plus a
/// second), so traffic sent right after lands in one window.
fn settle_in_window(needed: Duration) {
    let now = flowlog_tests::agent::unix_now();
    let left = INTERVAL as f64 - now % INTERVAL as f64;
    if left < needed.as_secs_f64() {
        std::thread::sleep(Duration::from_secs_f64(left + 1.0));
    }
}

/// `count` pings of `size` data bytes from `from` to `to`, 0.1 s apart; returns how many were
/// answered (pings that a rule drops are never answered).
fn ping(from: &Side, to: Ipv4Addr, count: u32, size: u32) -> u32 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &from.netns,
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-s",
            &size.to_string(),
        ])
        .args(["-i", "0.1", "-W", "1", &to.to_string()])
        .output()
        .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("ping output:\n{text}"));
    let transmitted: u32 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("transmitted count");
    assert_eq!(
        transmitted, count,
        "ping sent a different number of requests:\n{text}"
    );
    line.split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("received count")
}

/// A TCP SYN-only connection attempt from `from` to `to` with `syn_retries` SYN
/// retransmissions allowed; returns the client's source port once connect() has failed.
fn failed_connect(from: &Side, to: SocketAddr, syn_retries: i32) -> u16 {
    in_ns(&from.netns, || {
        // std's TcpStream cannot set TCP_SYNCNT before connecting: a raw socket.
        // SAFETY: plain socket syscalls on a descriptor this closure owns and closes, with
        // sockaddr buffers of the size passed.
        unsafe {
            let mut addr: libc::sockaddr_storage = std::mem::zeroed();
            let len = match to {
                SocketAddr::V4(a) => {
                    let sin = &mut *(&mut addr as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in>();
                    sin.sin_family = libc::AF_INET as libc::sa_family_t;
                    sin.sin_port = a.port().to_be();
                    sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                    size_of::<libc::sockaddr_in>()
                }
                SocketAddr::V6(a) => {
                    let sin6 = &mut *(&mut addr as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in6>();
                    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    sin6.sin6_port = a.port().to_be();
                    sin6.sin6_addr.s6_addr = a.ip().octets();
                    size_of::<libc::sockaddr_in6>()
                }
            } as libc::socklen_t;
            let fd = libc::socket(addr.ss_family as i32, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let rc = libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_SYNCNT,
                (&syn_retries as *const i32).cast(),
                size_of::<i32>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "TCP_SYNCNT: {}", std::io::Error::last_os_error());
            let rc = libc::connect(fd, (&addr as *const libc::sockaddr_storage).cast(), len);
            let err = std::io::Error::last_os_error();
            assert_eq!(rc, -1, "connect to a port behind a drop rule succeeded");
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ETIMEDOUT),
                "connect failed otherwise: {err}"
            );
            let mut local: libc::sockaddr_storage = std::mem::zeroed();
            let mut local_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let rc = libc::getsockname(
                fd,
                (&mut local as *mut libc::sockaddr_storage).cast(),
                &mut local_len,
            );
            assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
            libc::close(fd);
            // The port sits at the same offset in sockaddr_in and sockaddr_in6.
            u16::from_be(
                (*(&local as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()).sin_port,
            )
        }
    })
}

/// `TcpExt:` counter `name` of `/proc/net/netstat` inside `netns`.
fn tcp_ext(netns: &str, name: &str) -> u64 {
    let out = run(in_netns(netns, "cat").arg("/proc/net/netstat"));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    assert_eq!(lines.len(), 2, "no TcpExt lines:\n{text}");
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.parse().expect("counter"))
        .expect("counter present")
}

/// The SYN case on `pair`, from A's address `client` to B's address `server` (one family):
/// nftables INPUT in B drops every TCP packet to port 3389, and a client in A tries to connect
/// with 2 SYN retransmissions allowed. Checks that the rule saw every SYN the client sent and
/// that the records of the flows `compared` keeps are exactly one ingress REJECT flow, reason
/// NETFILTER_DROP, with every SYN, the rule's bytes and tcp-flags SYN. Returns (SYNs sent,
/// the rule's bytes).
fn nft_input_drops_syns(
    pair: &Pair,
    client: IpAddr,
    server: IpAddr,
    compared: fn(&Flow) -> bool,
) -> (u64, u64) {
    nft(
        &pair.b.netns,
        r#"table inet flrj { chain input { type filter hook input priority 0; policy accept;
        tcp dport 3389 counter drop comment "rdp"
    }
    }"#,
    );
    let (mut agent, metrics, _metrics_dir) = start_agent_with_metrics(&pair.b, None);
    let syn_retrans_before = tcp_ext(&pair.a.netns, "TCPSynRetrans");
    let port = failed_connect(&pair.a, SocketAddr::new(server, 3389), 2);
    let syns_sent = 1 + tcp_ext(&pair.a.netns, "TCPSynRetrans") - syn_retrans_before;
    let skipped_runs = fdinfo::tracing_recursion_misses(agent.pid())
        .expect("the agent holds its kfree_skb program");
    let records = stop_and_read(&mut agent);
    let (nft_packets, nft_bytes) = nft_counters(&pair.b.netns)["rdp"];

    assert_eq!(
        nft_packets, syns_sent,
        "the rule saw every SYN the client sent"
    );
    let rdp = flow(
        "ingress",
        client,
        server,
        (port, 3389),
        TCP,
        "REJECT",
        "NETFILTER_DROP",
    );
    let got: Vec<_> = flows(&records)
        .into_iter()
        .filter(|(f, _)| compared(f))
        .map(|(f, (p, b, _, flags))| (f, p, b, flags))
        .collect();
    // On a mismatch, what the agent counted of drops and overflows says where a SYN went.
    let drop_metrics = || {
        std::fs::read_to_string(&metrics)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#') && (l.contains("drop") || l.contains("reject")))
            .filter(|l| !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let exact = [(rdp.clone(), syns_sent, nft_bytes, 2)];
    if skipped_runs == 0 || got == exact {
        assert_eq!(
            got,
            exact,
            "records:\n{}\ndrop metrics:\n{}",
            dump(&records),
            drop_metrics()
        );
    } else {
        // The kernel skips the drop program on a CPU where it is already running (a softirq
        // dropping a SYN while the program handles a process-context drop of any namespace):
        // that SYN stays ACCEPT. Allowed only up to the kernel's own count of skipped runs
        // (fdinfo), and every SYN is still in exactly one record.
        let accept = Flow {
            action: "ACCEPT".into(),
            reject_reason: "-".into(),
            ..rdp.clone()
        };
        let packets = |want: &Flow| -> u64 {
            got.iter()
                .filter(|(f, ..)| f == want)
                .map(|(_, p, ..)| p)
                .sum()
        };
        let (rejected, accepted) = (packets(&rdp), packets(&accept));
        assert!(
            got.iter().all(|(f, ..)| *f == rdp || *f == accept)
                && rejected + accepted == syns_sent
                && accepted <= skipped_runs,
            "{syns_sent} SYNs, the drop program skipped {skipped_runs} runs; records:\n{}\ndrop metrics:\n{}",
            dump(&records),
            drop_metrics()
        );
    }
    (syns_sent, nft_bytes)
}

// ---------------------------------------------------------------------------------------------

/// nftables INPUT drops every TCP packet to port 3389 of B. A client in A tries to connect
/// with 2 SYN retransmissions allowed. Every SYN that reached B is one REJECT packet, reason
/// NETFILTER_DROP, tcp-flags SYN; TC counted them on ingress too, and the agent subtracts them,
/// so there is no ACCEPT record; B never answers, so there is nothing else.
#[test]
fn nft_input_drop_gives_reject_with_every_syn_and_netfilter_drop() {
    let pair = Pair::new(1);
    // Every record is compared: nothing else may appear.
    let (syns_sent, nft_bytes) =
        nft_input_drops_syns(&pair, pair.a.v4.into(), pair.b.v4.into(), |_| true);
    // SYNs with the options Linux sends are 60 IP bytes each.
    assert_eq!(nft_bytes, 60 * syns_sent);
}

/// nftables OUTPUT in B drops UDP datagrams of IP length 128 to A:9999; the others pass. The
/// dropped ones never reach TC egress, so they are an egress REJECT record and are not
/// subtracted from the egress ACCEPT record of the same flow, which counts exactly the ones
/// A received.
#[test]
fn nft_output_drop_gives_egress_reject_and_the_rest_stays_accept() {
    let pair = Pair::new(2);
    nft(
        &pair.b.netns,
        r#"table inet flrj { chain output { type filter hook output priority 0; policy accept;
        udp dport 9999 ip length 128 counter drop comment "big"
    }
    }"#,
    );
    let mut agent = start_agent(&pair.b, &[]);
    let receiver = in_ns(&pair.a.netns, || {
        UdpSocket::bind((pair.a.v4, 9999)).expect("bind receiver")
    });
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    settle_in_window(Duration::from_secs(15));
    // 100 payload bytes: 128 IP bytes (dropped); 10 bytes: 38 (passed).
    let sizes = [100, 10, 100, 10, 10, 100, 10];
    let src_port = in_ns(&pair.b.netns, || {
        let s = UdpSocket::bind((pair.b.v4, 0)).expect("bind sender");
        for n in sizes {
            match s.send_to(&vec![7u8; n], SocketAddr::new(IpAddr::V4(pair.a.v4), 9999)) {
                Ok(_) => assert_eq!(n, 10, "a 128-byte datagram was sent"),
                // The OUTPUT drop is reported to the sender.
                Err(e) => assert_eq!((n, e.raw_os_error()), (100, Some(libc::EPERM)), "{e}"),
            }
        }
        s.local_addr().expect("local addr").port()
    });
    let mut received = 0;
    let mut buf = [0u8; 200];
    while let Ok(n) = receiver.recv(&mut buf) {
        assert_eq!(n, 10);
        received += 1;
    }
    assert_eq!(received, 4);
    let records = stop_and_read(&mut agent);
    assert_eq!(nft_counters(&pair.b.netns)["big"], (3, 3 * 128));

    let f = |action: &str, reason: &str| {
        flow(
            "egress",
            pair.b.v4,
            pair.a.v4,
            (src_port, 9999),
            UDP,
            action,
            reason,
        )
    };
    let got: Vec<_> = flows(&records)
        .into_iter()
        .map(|(f, (p, b, n, _))| (f, p, b, n))
        .collect();
    assert_eq!(
        got,
        [
            (f("ACCEPT", "-"), 4, 4 * 38, 1),
            (f("REJECT", "NETFILTER_DROP"), 3, 3 * 128, 1)
        ],
        "records:\n{}",
        dump(&records)
    );
}

/// ICMP echo requests from A to B: nftables INPUT drops those of IP length 128 and lets the
/// others through. In one window the same flow (A → B, ICMP, ingress) has an ACCEPT record
/// with exactly the passed requests and a REJECT record with exactly the dropped ones (both
/// per the rule counters); B's replies are an egress ACCEPT record.
#[test]
fn icmp_echo_partly_dropped_gives_accept_and_reject_of_one_flow_in_one_window() {
    let pair = Pair::new(3);
    nft(
        &pair.b.netns,
        r#"table inet flrj { chain input { type filter hook input priority 0; policy accept;
        icmp type echo-request counter comment "echo"
        icmp type echo-request ip length 128 counter drop comment "big"
    }
    }"#,
    );
    let mut agent = start_agent(&pair.b, &[]);
    settle_in_window(Duration::from_secs(20));
    // -s 100: 128 IP bytes, dropped; -s 56: 84 bytes, answered.
    assert_eq!(ping(&pair.a, pair.b.v4, 5, 100), 0);
    assert_eq!(ping(&pair.a, pair.b.v4, 7, 56), 7);
    let records = stop_and_read(&mut agent);
    let nft = nft_counters(&pair.b.netns);
    let (echo, big) = (nft["echo"], nft["big"]);
    assert_eq!(big, (5, 5 * 128));
    assert_eq!(echo, (12, 5 * 128 + 7 * 84));

    let got: Vec<_> = flows(&records)
        .into_iter()
        .map(|(f, (p, b, n, _))| (f, p, b, n))
        .collect();
    assert_eq!(
        got,
        [
            (icmp_b_to_a(&pair), 7, 7 * 84, 1),
            (
                icmp_a_to_b(&pair, "ACCEPT", "-"),
                echo.0 - big.0,
                echo.1 - big.1,
                1
            ),
            (
                icmp_a_to_b(&pair, "REJECT", "NETFILTER_DROP"),
                big.0,
                big.1,
                1
            ),
        ],
        "records:\n{}",
        dump(&records)
    );
    // One record each: the same window.
    let windows: Vec<u64> = records
        .iter()
        .filter(|r| r.log_status == "OK")
        .map(|r| r.start / INTERVAL)
        .collect();
    assert!(
        windows.iter().all(|w| *w == windows[0]),
        "records in several windows:\n{}",
        dump(&records)
    );
}

/// Three agents on the same interface, one per `--traffic-type`, see the same traffic (the
/// ICMP mix above): ALL emits the ACCEPT and REJECT records, ACCEPT exactly the ACCEPT ones,
/// REJECT exactly the REJECT one, with the same counts.
#[test]
fn each_traffic_type_emits_exactly_its_records() {
    let pair = Pair::new(4);
    nft(
        &pair.b.netns,
        r#"table inet flrj { chain input { type filter hook input priority 0; policy accept;
        icmp type echo-request ip length 128 counter drop comment "big"
    }
    }"#,
    );
    let mut all = start_agent(&pair.b, &["--traffic-type", "ALL"]);
    let mut accept = start_agent(&pair.b, &["--traffic-type", "ACCEPT"]);
    let mut reject = start_agent(&pair.b, &["--traffic-type", "REJECT"]);
    settle_in_window(Duration::from_secs(20));
    assert_eq!(ping(&pair.a, pair.b.v4, 3, 100), 0);
    assert_eq!(ping(&pair.a, pair.b.v4, 4, 56), 4);
    let ok = |agent: &mut Agent| {
        let records = stop_and_read(agent);
        for r in &records {
            assert!(
                r.log_status == "OK" || r.log_status == "NODATA",
                "{}",
                r.line
            );
        }
        packets_and_bytes(&records)
    };
    let (all, accept, reject) = (ok(&mut all), ok(&mut accept), ok(&mut reject));
    assert_eq!(nft_counters(&pair.b.netns)["big"], (3, 3 * 128));

    let accepted = [
        (icmp_b_to_a(&pair), 4, 4 * 84),
        (icmp_a_to_b(&pair, "ACCEPT", "-"), 4, 4 * 84),
    ];
    let rejected = [(icmp_a_to_b(&pair, "REJECT", "NETFILTER_DROP"), 3, 3 * 128)];
    assert_eq!(
        all,
        [
            accepted[0].clone(),
            accepted[1].clone(),
            rejected[0].clone()
        ]
    );
    assert_eq!(accept, accepted);
    assert_eq!(reject, rejected);
}

/// Without readable kernel BTF the agent still runs, says once why REJECT is unavailable, and
/// emits ACCEPT records: the pings the rule dropped were seen by TC ingress and stay in ACCEPT.
#[test]
fn without_kernel_btf_the_agent_says_so_once_and_emits_accept_only() {
    let pair = Pair::new(5);
    nft(
        &pair.b.netns,
        r#"table inet flrj { chain input { type filter hook input priority 0; policy accept;
        icmp type echo-request ip length 128 counter drop comment "big"
    }
    }"#,
    );
    let mut agent = start_agent(&pair.b, &["--kernel-btf", "/nonexistent/vmlinux"]);
    settle_in_window(Duration::from_secs(20));
    assert_eq!(ping(&pair.a, pair.b.v4, 2, 100), 0);
    assert_eq!(ping(&pair.a, pair.b.v4, 3, 56), 3);
    let records = stop_and_read(&mut agent);
    let log = agent.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("REJECT records are unavailable"))
        .collect();
    assert_eq!(warnings.len(), 1, "log:\n{log}");
    assert!(
        warnings[0].contains(
            "the kernel's BTF is not readable (/nonexistent/vmlinux: No such file or directory"
        ),
        "{}",
        warnings[0]
    );
    assert_eq!(nft_counters(&pair.b.netns)["big"], (2, 2 * 128));

    let got = packets_and_bytes(&records);
    assert_eq!(
        got,
        [
            (icmp_b_to_a(&pair), 3, 3 * 84),
            (icmp_a_to_b(&pair, "ACCEPT", "-"), 5, 2 * 128 + 3 * 84),
        ],
        "records:\n{}",
        dump(&records)
    );
}

/// A drop in nftables' netdev egress hook happens after the MAC header reset of
/// `__dev_queue_xmit` but before TC egress: the one case the kernel-side rule excludes by
/// reason. The dropped datagrams are REJECT and not subtracted from the flow's ACCEPT.
#[test]
fn netdev_egress_drop_before_tc_is_not_subtracted() {
    let pair = Pair::new(6);
    nft(
        &pair.b.netns,
        &format!(
            r#"table netdev flrj {{ chain egress {{ type filter hook egress device "{}" priority 0; policy accept;
        udp dport 7777 ip length 128 counter drop comment "big"
    }}
    }}"#,
            pair.b.iface
        ),
    );
    let mut agent = start_agent(&pair.b, &[]);
    let receiver = in_ns(&pair.a.netns, || {
        UdpSocket::bind((pair.a.v4, 7777)).expect("bind receiver")
    });
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    settle_in_window(Duration::from_secs(15));
    let src_port = in_ns(&pair.b.netns, || {
        let s = UdpSocket::bind((pair.b.v4, 0)).expect("bind sender");
        for n in [100, 10, 100, 10, 10] {
            // A netdev egress drop is not reported to the sender.
            s.send_to(&vec![7u8; n], SocketAddr::new(IpAddr::V4(pair.a.v4), 7777))
                .expect("send");
        }
        s.local_addr().expect("local addr").port()
    });
    let mut received = 0;
    let mut buf = [0u8; 200];
    while receiver.recv(&mut buf).is_ok() {
        received += 1;
    }
    assert_eq!(received, 3);
    let records = stop_and_read(&mut agent);
    // netdev counters count Ethernet frames: 14 more bytes each.
    assert_eq!(nft_counters(&pair.b.netns)["big"], (2, 2 * (128 + 14)));

    let f = |action: &str, reason: &str| {
        flow(
            "egress",
            pair.b.v4,
            pair.a.v4,
            (src_port, 7777),
            UDP,
            action,
            reason,
        )
    };
    let got = packets_and_bytes(&records);
    assert_eq!(
        got,
        [
            (f("ACCEPT", "-"), 3, 3 * 38),
            (f("REJECT", "NETFILTER_DROP"), 2, 2 * 128)
        ],
        "records:\n{}",
        dump(&records)
    );
}

/// (ifindex, MAC address) of a side's interface, asked in its namespace.
fn link_info(side: &Side) -> (u32, String) {
    let out = run(in_netns(&side.netns, "ip").args(["-j", "link", "show", "dev", &side.iface]));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("ip -j output is JSON");
    let link = &json[0];
    let ifindex = link["ifindex"].as_u64().expect("ifindex") as u32;
    (
        ifindex,
        link["address"].as_str().expect("address").to_string(),
    )
}

/// A TC egress program that drops every packet, attached as a TCX link after flowlog's (which
/// the agent places first), in `netns` on `ifindex`. The returned fd holds the link: closing it
/// detaches the program.
///
/// Hand-assembled with two bpf(2) calls because the tools that would do it are not here: this
/// kernel has no `act_gact` (so no `tc ... action drop`), no bpftool, and aya loads only ELF
/// objects. The program is `r0 = TC_ACT_SHOT; exit`.
fn attach_tcx_egress_drop_all(netns: &str, ifindex: u32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const BPF_TCX_EGRESS: u32 = 47;
    // BPF_ALU64|BPF_MOV|BPF_K r0 = 2 (TC_ACT_SHOT); BPF_JMP|BPF_EXIT.
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = b"GPL\0";
    in_ns(netns, || {
        // union bpf_attr, prog load part: prog_type, insn_cnt, insns, license; the rest zero.
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
        attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        // SAFETY: bpf(2) with a zero-padded attr whose pointers outlive the call.
        let prog =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
        assert!(
            prog >= 0,
            "BPF_PROG_LOAD: {}",
            std::io::Error::last_os_error()
        );
        // link_create: prog_fd, target_ifindex, attach_type, flags (0: append, after ours).
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(prog as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        attr[8..12].copy_from_slice(&BPF_TCX_EGRESS.to_ne_bytes());
        // SAFETY: as above.
        let link =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, attr.as_ptr(), attr.len()) };
        let err = std::io::Error::last_os_error();
        // SAFETY: `prog` is our fd; the link keeps the program alive.
        unsafe { libc::close(prog as i32) };
        assert!(link >= 0, "BPF_LINK_CREATE tcx egress: {err}");
        // SAFETY: a fresh fd this function owns.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(link as i32) }
    })
}

/// A TC egress program that runs after flowlog's drops every packet B sends. flowlog's TC
/// program counted each one first, so the drops (reason TC_EGRESS) are subtracted: the flow
/// has only a REJECT record, with every datagram sent and none received.
#[test]
fn tc_egress_drop_after_flowlog_is_subtracted_from_accept() {
    let pair = Pair::new(7);
    // Every egress frame is dropped, ARP included: resolve A statically.
    let (_, mac) = link_info(&pair.a);
    run(in_netns(&pair.b.netns, "ip").args([
        "neigh",
        "replace",
        &pair.a.v4.to_string(),
        "lladdr",
        &mac,
        "dev",
        &pair.b.iface,
        "nud",
        "permanent",
    ]));
    let mut agent = start_agent(&pair.b, &[]);
    let link = attach_tcx_egress_drop_all(&pair.b.netns, link_info(&pair.b).0);
    let receiver = in_ns(&pair.a.netns, || {
        UdpSocket::bind((pair.a.v4, 7777)).expect("bind receiver")
    });
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let sent = 6;
    let src_port = in_ns(&pair.b.netns, || {
        let s = UdpSocket::bind((pair.b.v4, 0)).expect("bind sender");
        for _ in 0..sent {
            // The TC drop is not reported to a UDP sender without IP_RECVERR.
            s.send_to(&[7u8; 10], SocketAddr::new(IpAddr::V4(pair.a.v4), 7777))
                .expect("send");
        }
        s.local_addr().expect("local addr").port()
    });
    let mut buf = [0u8; 64];
    assert!(
        receiver.recv(&mut buf).is_err(),
        "a datagram got past the drop-all program"
    );
    drop(link);
    let records = stop_and_read(&mut agent);

    let f = flow(
        "egress",
        pair.b.v4,
        pair.a.v4,
        (src_port, 7777),
        UDP,
        "REJECT",
        "TC_EGRESS",
    );
    let got = packets_and_bytes(&records);
    assert_eq!(got, [(f, sent, sent * 38)], "records:\n{}", dump(&records));
}

/// `--reject-reasons NO_SOCKET`: datagrams to a closed port of B are REJECT (NO_SOCKET); the
/// pings nftables drops are not REJECT any more, so they stay in ACCEPT (the TC hook saw them)
/// and appear only in the kernel-drops metric, by reason.
#[test]
fn reject_reasons_choose_the_reject_set_and_other_drops_are_a_metric() {
    let pair = Pair::new(8);
    nft(
        &pair.b.netns,
        r#"table inet flrj { chain input { type filter hook input priority 0; policy accept;
        icmp type echo-request ip length 128 counter drop comment "big"
    }
    }"#,
    );
    // Every port-unreachable B owes is sent (no per-peer ICMP rate limit).
    run(in_netns(&pair.b.netns, "sysctl").args(["-qw", "net.ipv4.icmp_ratelimit=0"]));
    let (mut agent, metrics, _metrics_dir) = start_agent_with_metrics(&pair.b, Some("NO_SOCKET"));
    settle_in_window(Duration::from_secs(20));
    assert_eq!(ping(&pair.a, pair.b.v4, 3, 100), 0);
    assert_eq!(ping(&pair.a, pair.b.v4, 2, 56), 2);
    let src_port = in_ns(&pair.a.netns, || {
        let s = UdpSocket::bind((pair.a.v4, 0)).expect("bind sender");
        s.connect(SocketAddr::new(IpAddr::V4(pair.b.v4), 9))
            .expect("connect UDP");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        for _ in 0..4 {
            s.send(&[1u8; 10]).expect("send");
            // One at a time: the connected socket reports each port-unreachable (ECONNREFUSED)
            // before the next datagram leaves.
            let e = s
                .recv(&mut [0u8; 16])
                .expect_err("nothing listens on port 9");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        }
        s.local_addr().expect("local addr").port()
    });
    let records = stop_and_read(&mut agent);
    assert_eq!(nft_counters(&pair.b.netns)["big"], (3, 3 * 128));

    let got = packets_and_bytes(&records);
    assert_eq!(
        got,
        [
            // 2 echo replies (84 bytes) and 4 port-unreachables (20 + 8 + the 38-byte datagram).
            (icmp_b_to_a(&pair), 6, 2 * 84 + 4 * 66),
            (icmp_a_to_b(&pair, "ACCEPT", "-"), 5, 3 * 128 + 2 * 84),
            (
                flow(
                    "ingress",
                    pair.a.v4,
                    pair.b.v4,
                    (src_port, 9),
                    UDP,
                    "REJECT",
                    "NO_SOCKET"
                ),
                4,
                4 * 38
            ),
        ],
        "records:\n{}",
        dump(&records)
    );
    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    let sample = |name: &str, reason: &str| {
        let prefix = format!(
            "{name}{{interface=\"{}\",direction=\"ingress\",reason=\"{reason}\"}} ",
            pair.b.iface
        );
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .to_string()
    };
    assert_eq!(sample("flowlog_kernel_drops_total", "NETFILTER_DROP"), "3");
    assert_eq!(sample("flowlog_rejected_packets_total", "NO_SOCKET"), "4");
    // The drop program's skipped runs are exported from the start (0 unless the kernel
    // skipped some: a count of any namespace's drops, so only its presence is checked here).
    assert!(
        text.lines()
            .any(|l| l.starts_with("flowlog_drop_program_skipped_runs_total ")),
        "no skipped-runs counter in:\n{text}"
    );
}

/// The SYN case over IPv6: the drop program reads the IPv6 header of the dropped skb the same
/// way. Neighbour discovery also runs on this pair; only the TCP records are compared.
#[test]
fn nft_input_drop_of_ipv6_syns_is_reject_with_every_syn() {
    let pair = Pair::dual_stack(9);
    let (syns_sent, nft_bytes) =
        nft_input_drops_syns(&pair, pair.a.v6.into(), pair.b.v6.into(), |f| {
            f.protocol == TCP
        });
    // 40-byte IPv6 header and a 40-byte TCP header with options.
    assert_eq!(nft_bytes, 80 * syns_sent);
}

// ---------------------------------------------------------------------------------------------
// What REJECT means: a policy's decision. Closed ports and raw-socket deliveries are ACCEPT.

/// What tcpdump on `side`'s interface saw, as the records should show it: per [`Flow`] (the
/// action and reason given by `verdict` for each packet), packets and IP bytes.
fn expected_from_wire(
    wire: &[WirePacket],
    verdict: impl Fn(&WirePacket) -> (&'static str, &'static str),
) -> Vec<(Flow, u64, u64)> {
    let mut out: BTreeMap<Flow, (u64, u64)> = BTreeMap::new();
    for p in wire {
        let (action, reason) = verdict(p);
        let f = flow(
            if p.ingress { "ingress" } else { "egress" },
            p.tuple.src,
            p.tuple.dst,
            (p.tuple.src_port, p.tuple.dst_port),
            p.tuple.protocol,
            action,
            reason,
        );
        let e = out.entry(f).or_default();
        e.0 += 1;
        e.1 += p.ip_len;
    }
    out.into_iter().map(|(f, (p, b))| (f, p, b)).collect()
}

/// The lines of `/proc/net/<table>` in `netns` after the header.
fn proc_net(netns: &str, table: &str) -> Vec<String> {
    let out = run(in_netns(netns, "cat").arg(format!("/proc/net/{table}")));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Root's `ping` from `from` to `to`, `count` echo requests 0.2 s apart, checked to use a raw
/// ICMP socket: the namespace's `ping_group_range` is the kernel default `1 0` (no group may
/// open ping sockets, of either family), and while ping runs `/proc/net/raw` (`raw6`) lists a
/// socket of protocol 1 (58) (the port field of a raw socket is its protocol) and
/// `/proc/net/icmp` (`icmp6`: ping sockets) is empty. Returns the replies ping received.
fn raw_socket_ping(from: &Side, to: IpAddr, count: u32) -> u32 {
    let (raw_table, ping_table, protocol) = match to {
        IpAddr::V4(_) => ("raw", "icmp", ":0001"),
        IpAddr::V6(_) => ("raw6", "icmp6", ":003A"),
    };
    let range = run(in_netns(&from.netns, "cat").arg("/proc/sys/net/ipv4/ping_group_range"));
    assert_eq!(
        String::from_utf8_lossy(&range.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1", "0"],
        "ping_group_range of {}",
        from.netns
    );
    let child = in_netns(&from.netns, "ping")
        .args(["-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "1"])
        .arg(to.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ping");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let raw_icmp = proc_net(&from.netns, raw_table).iter().any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(protocol))
        });
        if raw_icmp {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no raw ICMP socket in /proc/net/raw while ping ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        proc_net(&from.netns, ping_table),
        Vec::<String>::new(),
        "ping used a ping socket"
    );
    let out = child.wait_with_output().expect("wait for ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("ping output:\n{text}"));
    let n = |i: usize| -> u32 {
        line.split(", ")
            .nth(i)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("ping summary: {line}"))
    };
    assert_eq!(
        n(0),
        count,
        "ping sent a different number of requests:\n{text}"
    );
    n(1)
}

/// `name{interface=..,direction="ingress",reason=..}` from a Prometheus text file, if present.
fn ingress_sample(text: &str, name: &str, iface: &str, reason: &str) -> Option<String> {
    let prefix =
        format!("{name}{{interface=\"{iface}\",direction=\"ingress\",reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::to_string)
}

/// The agent on `side` writing its metrics to a file, with `--reject-reasons` when given.
/// Returns the agent, the metrics file and the directory holding it (kept as long as needed).
fn start_agent_with_metrics(
    side: &Side,
    reject_reasons: Option<&str>,
) -> (Agent, PathBuf, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("flrj-metrics-")
        .tempdir()
        .expect("temp dir");
    let metrics = dir.path().join("flowlog.prom");
    let metrics_arg = metrics.to_string_lossy().into_owned();
    let mut args = vec!["--metrics-file", &metrics_arg];
    if let Some(r) = reject_reasons {
        args.extend(["--reject-reasons", r]);
    }
    (start_agent(side, &args), metrics, dir)
}

/// Root's ping from B (the agent's side) to A: the kernel hands each echo reply to ping's raw
/// socket, then `ping_rcv` finds no ping socket and frees the original with NO_SOCKET. Every
/// reply is ACCEPT, with tcpdump's exact packets and bytes, whether or not NO_SOCKET is in
/// `reject_reasons`. Returns the agent's metrics file.
fn raw_socket_ping_is_accept(pair: Pair, v6: bool, reject_reasons: Option<&str>) -> (Pair, String) {
    let (mut agent, metrics, _metrics_dir) = start_agent_with_metrics(&pair.b, reject_reasons);
    let capture = Tcpdump::start(&pair.b, agent.work_dir());
    let count = 6;
    let to = if v6 {
        IpAddr::V6(pair.a.v6)
    } else {
        IpAddr::V4(pair.a.v4)
    };
    assert_eq!(raw_socket_ping(&pair.b, to, count), count);
    let records = stop_and_read(&mut agent);
    let wire = capture.stop();

    // Only the traffic between the pair's own addresses: over IPv6 the kernel also sends MLD
    // reports (`::` -> ff02::16) on its own timer after an address is added, and one of them
    // may fall between the agent's attach and tcpdump's start (CI saw exactly that once).
    let pair_addrs = [
        IpAddr::V4(pair.a.v4),
        IpAddr::V4(pair.b.v4),
        IpAddr::V6(pair.a.v6),
        IpAddr::V6(pair.b.v6),
    ];
    let between_pair =
        |src: &IpAddr, dst: &IpAddr| pair_addrs.contains(src) && pair_addrs.contains(dst);
    let wire: Vec<_> = wire
        .into_iter()
        .filter(|p| between_pair(&p.tuple.src, &p.tuple.dst))
        .collect();
    let replies = wire.iter().filter(|p| p.ingress).count() as u32;
    assert_eq!(replies, count, "tcpdump saw every reply");
    let expected = expected_from_wire(&wire, |_| ("ACCEPT", "-"));
    let observed: Vec<_> = packets_and_bytes(&records)
        .into_iter()
        .filter(|(f, _, _)| between_pair(&f.src, &f.dst))
        .collect();
    assert_eq!(observed, expected, "records:\n{}", dump(&records));
    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    (pair, text)
}

/// Default --reject-reasons: the raw-socket ping's replies are ACCEPT (NO_SOCKET is not a
/// policy drop).
#[test]
fn raw_socket_ping_replies_are_accept() {
    raw_socket_ping_is_accept(Pair::new(10), false, None);
}

/// NO_SOCKET opted in: the replies are still ACCEPT (a raw socket received them), and the
/// metric of drops exempted that way counts exactly the replies.
#[test]
fn raw_socket_ping_replies_stay_accept_with_no_socket_opted_in() {
    let (pair, metrics) = raw_socket_ping_is_accept(Pair::new(11), false, Some("NO_SOCKET"));
    assert_eq!(
        ingress_sample(
            &metrics,
            "flowlog_kernel_drops_delivered_to_socket_total",
            &pair.b.iface,
            "NO_SOCKET"
        )
        .as_deref(),
        Some("6"),
        "metrics:\n{metrics}"
    );
    assert_eq!(
        ingress_sample(
            &metrics,
            "flowlog_rejected_packets_total",
            &pair.b.iface,
            "NO_SOCKET"
        )
        .as_deref(),
        // Exported at 0 from the start (a configured REJECT reason), and never counted.
        Some("0"),
        "metrics:\n{metrics}"
    );
}

/// The same over IPv6 (`ping -6`: a raw ICMPv6 socket; `icmpv6_rcv` → `ping_rcv` frees each
/// reply with NO_SOCKET). Neighbours are resolved statically on both sides so that the wire
/// carries only the echo requests and replies.
#[test]
fn raw_socket_ping6_replies_stay_accept_with_no_socket_opted_in() {
    let pair = Pair::dual_stack(16);
    for (side, peer) in [(&pair.a, &pair.b), (&pair.b, &pair.a)] {
        let (_, mac) = link_info(peer);
        run(in_netns(&side.netns, "ip").args([
            "-6",
            "neigh",
            "replace",
            &peer.v6.to_string(),
            "lladdr",
            &mac,
            "dev",
            &side.iface,
            "nud",
            "permanent",
        ]));
    }
    let (pair, metrics) = raw_socket_ping_is_accept(pair, true, Some("NO_SOCKET"));
    assert_eq!(
        ingress_sample(
            &metrics,
            "flowlog_kernel_drops_delivered_to_socket_total",
            &pair.b.iface,
            "NO_SOCKET"
        )
        .as_deref(),
        Some("6"),
        "metrics:\n{metrics}"
    );
}

/// `datagrams` UDP datagrams (10 payload bytes) and one TCP connection attempt from A to port 9
/// of B, where nothing listens. Each datagram waits for B's port-unreachable (a connected UDP
/// socket gets ECONNREFUSED) and the connection for B's RST, so everything is on the wire when
/// this returns.
fn send_to_closed_port(pair: &Pair, datagrams: usize) {
    // Every port-unreachable B owes is sent (no per-peer ICMP rate limit).
    run(in_netns(&pair.b.netns, "sysctl").args(["-qw", "net.ipv4.icmp_ratelimit=0"]));
    let closed = SocketAddr::new(IpAddr::V4(pair.b.v4), 9);
    in_ns(&pair.a.netns, || {
        let s = UdpSocket::bind((pair.a.v4, 0)).expect("bind sender");
        s.connect(closed).expect("connect UDP");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        for _ in 0..datagrams {
            s.send(&[1u8; 10]).expect("send");
            let mut buf = [0u8; 16];
            let e = s.recv(&mut buf).expect_err("nothing listens on port 9");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        }
        let e = std::net::TcpStream::connect_timeout(&closed, Duration::from_secs(5))
            .expect_err("nothing listens on port 9");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    })
}

/// UDP and TCP from A to a closed port of B, checked against tcpdump on B's interface. Each
/// packet to the closed port gets `to_closed_port` (action, reason); everything else is ACCEPT.
fn closed_port(subnet: u8, extra: &[&str], to_closed_port: (&'static str, &'static str)) {
    let pair = Pair::new(subnet);
    let mut agent = start_agent(&pair.b, extra);
    let capture = Tcpdump::start(&pair.b, agent.work_dir());
    let datagrams = 4;
    send_to_closed_port(&pair, datagrams);
    let records = stop_and_read(&mut agent);
    let wire = capture.stop();

    let to_port_9: Vec<&WirePacket> = wire
        .iter()
        .filter(|p| p.ingress && p.tuple.dst_port == 9)
        .collect();
    let udp = to_port_9.iter().filter(|p| p.tuple.protocol == UDP).count();
    let syns = to_port_9.iter().filter(|p| p.tuple.protocol == TCP).count();
    assert_eq!((udp, syns), (datagrams, 1), "tcpdump: {to_port_9:?}");
    let expected = expected_from_wire(&wire, |p| {
        if p.ingress && p.tuple.dst_port == 9 {
            to_closed_port
        } else {
            ("ACCEPT", "-")
        }
    });
    assert_eq!(
        packets_and_bytes(&records),
        expected,
        "records:\n{}",
        dump(&records)
    );
}

/// Default --reject-reasons: datagrams and a SYN to a closed port are ACCEPT, as in AWS (the
/// host answered with port-unreachable and RST; no policy refused them).
#[test]
fn closed_port_udp_and_tcp_are_accept_by_default() {
    closed_port(12, &[], ("ACCEPT", "-"));
}

/// --reject-reasons NO_SOCKET: the same packets are REJECT, reason NO_SOCKET, and not in
/// ACCEPT; B's answers stay ACCEPT.
#[test]
fn closed_port_udp_and_tcp_are_reject_with_no_socket_opted_in() {
    closed_port(
        13,
        &["--reject-reasons", "NO_SOCKET"],
        ("REJECT", "NO_SOCKET"),
    );
}

/// A socket in B that takes a copy of what B receives.
#[derive(Clone, Copy, Debug)]
enum CopyTaker {
    /// `socket(AF_INET, SOCK_RAW, IPPROTO_UDP)`: a copy of every UDP datagram (not TCP).
    RawUdp,
    /// `socket(AF_PACKET, SOCK_DGRAM, ETH_P_IP)` bound to B's interface, without a ring: a copy
    /// of every IPv4 packet B receives there.
    PacketIp,
}

/// Opens `taker` in `side`'s namespace, non-blocking.
fn open_copy_taker(side: &Side, taker: CopyTaker) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    let ifindex = link_info(side).0;
    in_ns(&side.netns, || {
        // SAFETY: plain socket syscalls; the sockaddr_ll passed is a zeroed struct of the size
        // given; the fd is owned by the returned OwnedFd.
        unsafe {
            let fd = match taker {
                CopyTaker::RawUdp => libc::socket(
                    libc::AF_INET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                    libc::IPPROTO_UDP,
                ),
                CopyTaker::PacketIp => libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM | libc::SOCK_NONBLOCK,
                    (libc::ETH_P_IP as u16).to_be() as i32,
                ),
            };
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            if let CopyTaker::PacketIp = taker {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
                sll.sll_ifindex = ifindex as i32;
                let rc = libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                );
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            }
            std::os::fd::OwnedFd::from_raw_fd(fd)
        }
    })
}

/// How many packets are waiting on a non-blocking socket (reads them all).
fn drain_count(fd: &std::os::fd::OwnedFd) -> usize {
    use std::os::fd::AsRawFd as _;
    let mut n = 0;
    let mut buf = [0u8; 2048];
    // SAFETY: recv into a buffer of the length passed.
    while unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } >= 0 {
        n += 1;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "recv: {err}");
    n
}

/// NO_SOCKET opted in, and a socket in B takes a copy of what arrives: UDP and TCP from A to a
/// closed port of B. A packet the socket received is ACCEPT (and counted in the
/// delivered-to-socket metric); one it did not receive is REJECT NO_SOCKET. Checked against
/// tcpdump, and against what the socket itself read.
fn closed_port_with_copy_taker(subnet: u8, taker: CopyTaker) {
    let pair = Pair::new(subnet);
    let (mut agent, metrics, _metrics_dir) = start_agent_with_metrics(&pair.b, Some("NO_SOCKET"));
    let capture = Tcpdump::start(&pair.b, agent.work_dir());
    let socket = open_copy_taker(&pair.b, taker);
    let datagrams = 4;
    send_to_closed_port(&pair, datagrams);
    let copies = drain_count(&socket);
    drop(socket);
    let records = stop_and_read(&mut agent);
    let wire = capture.stop();

    let taken = |p: &WirePacket| {
        p.ingress
            && match taker {
                CopyTaker::RawUdp => p.tuple.protocol == UDP,
                CopyTaker::PacketIp => true,
            }
    };
    let taken_on_wire = wire.iter().filter(|p| taken(p)).count();
    assert_eq!(
        copies, taken_on_wire,
        "the {taker:?} socket read every copy"
    );
    let expected = expected_from_wire(&wire, |p| {
        if p.ingress && p.tuple.dst_port == 9 && !taken(p) {
            ("REJECT", "NO_SOCKET")
        } else {
            ("ACCEPT", "-")
        }
    });
    assert_eq!(
        packets_and_bytes(&records),
        expected,
        "records:\n{}",
        dump(&records)
    );
    let exempted = wire
        .iter()
        .filter(|p| taken(p) && p.tuple.dst_port == 9)
        .count();
    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    assert_eq!(
        ingress_sample(
            &text,
            "flowlog_kernel_drops_delivered_to_socket_total",
            &pair.b.iface,
            "NO_SOCKET"
        ),
        Some(exempted.to_string()),
        "metrics:\n{text}"
    );
}

/// A raw UDP socket in B: the datagrams to the closed port are ACCEPT, the SYN is REJECT.
#[test]
fn closed_port_datagrams_a_raw_socket_received_stay_accept() {
    closed_port_with_copy_taker(14, CopyTaker::RawUdp);
}

/// A packet socket (no ring) on B's interface: everything it received is ACCEPT.
#[test]
fn closed_port_packets_a_packet_socket_received_stay_accept() {
    closed_port_with_copy_taker(15, CopyTaker::PacketIp);
}

// ---------------------------------------------------------------------------------------------
// A full REJECT map: every rejected packet still counted once.

/// One `name{interface=..,direction=..}` sample of a Prometheus text file.
fn direction_sample(text: &str, name: &str, iface: &str, direction: &str) -> Option<u64> {
    let prefix = format!("{name}{{interface=\"{iface}\",direction=\"{direction}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// `--max-reject-flows 2`: nftables in B drops UDP from A to B:7000-7005 at INPUT (after the TC
/// ingress hook counted the packets) and UDP from B to A:8000-8005 at OUTPUT (before the TC
/// egress hook), 3 datagrams per port, in one window. The first two rejected flows (7000 and
/// 7001) fit in the REJECT map. The other ingress drops stay in ACCEPT, where TC counted them,
/// and are counted in `flowlog_reject_overflow_accept_packets_total`; the egress drops TC never
/// saw are SKIPDATA (`flowlog_overflow_packets_total`) and in no ACCEPT record. No packet is
/// both ACCEPT and SKIPDATA: the records and the overflow add up to what nftables dropped.
#[test]
fn full_reject_map_counts_every_rejected_packet_once() {
    let pair = Pair::new(17);
    nft(
        &pair.b.netns,
        r#"table inet flrj {
        chain input { type filter hook input priority 0; policy accept;
            udp dport 7000-7005 counter drop comment "in"
        }
        chain output { type filter hook output priority 0; policy accept;
            udp dport 8000-8005 counter drop comment "out"
        }
    }"#,
    );
    let metrics_dir = tempfile::Builder::new()
        .prefix("flrj-metrics-")
        .tempdir()
        .expect("temp dir");
    let metrics = metrics_dir.path().join("flowlog.prom");
    let metrics_arg = metrics.to_string_lossy().into_owned();
    let mut agent = start_agent(
        &pair.b,
        &["--metrics-file", &metrics_arg, "--max-reject-flows", "2"],
    );
    settle_in_window(Duration::from_secs(15));
    // 100 payload bytes: 128 IP bytes; 50: 78.
    let send = |from: &Side, to: Ipv4Addr, ports: std::ops::Range<u16>, payload: usize| {
        in_ns(&from.netns, || {
            let s = UdpSocket::bind((from.v4, 0)).expect("bind sender");
            for port in ports {
                for _ in 0..3 {
                    // An OUTPUT drop is reported to the sender (EPERM); an INPUT one is not.
                    let _ = s.send_to(&vec![1u8; payload], SocketAddr::new(IpAddr::V4(to), port));
                }
            }
            s.local_addr().expect("local addr").port()
        })
    };
    let a_port = send(&pair.a, pair.b.v4, 7000..7006, 100);
    // Every INPUT drop happened before the OUTPUT ones start (the map fills in that order).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while nft_counters(&pair.b.netns)["in"].0 < 18 {
        assert!(
            std::time::Instant::now() < deadline,
            "nft dropped {:?}",
            nft_counters(&pair.b.netns)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    send(&pair.b, pair.a.v4, 8000..8006, 50);
    let records = stop_and_read(&mut agent);
    let counters = nft_counters(&pair.b.netns);
    assert_eq!(counters["in"], (18, 18 * 128));
    assert_eq!(counters["out"], (18, 18 * 78));

    let got: Vec<_> = packets_and_bytes(&records)
        .into_iter()
        .filter(|(f, _, _)| f.protocol == UDP)
        .collect();
    let ingress = |port: u16, action: &str, reason: &str| {
        flow(
            "ingress",
            pair.a.v4,
            pair.b.v4,
            (a_port, port),
            UDP,
            action,
            reason,
        )
    };
    // Sorted as `packets_and_bytes` sorts: by direction, then addresses, then ports.
    let mut expected = vec![
        (ingress(7000, "REJECT", "NETFILTER_DROP"), 3, 3 * 128),
        (ingress(7001, "REJECT", "NETFILTER_DROP"), 3, 3 * 128),
    ];
    for port in 7002..7006 {
        expected.push((ingress(port, "ACCEPT", "-"), 3, 3 * 128));
    }
    expected.sort();
    assert_eq!(got, expected, "records:\n{}", dump(&records));
    assert!(
        records
            .iter()
            .any(|r| r.log_status == "SKIPDATA" && r.interface_id == pair.b.iface),
        "a SKIPDATA record for the egress drops:\n{}",
        dump(&records)
    );
    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    let sample = |name: &str, direction: &str| {
        direction_sample(&text, name, &pair.b.iface, direction)
            .unwrap_or_else(|| panic!("no {name} {direction} in:\n{text}"))
    };
    assert_eq!(
        sample("flowlog_reject_overflow_accept_packets_total", "ingress"),
        12,
        "{text}"
    );
    assert_eq!(
        sample("flowlog_overflow_packets_total", "egress"),
        18,
        "{text}"
    );
    assert_eq!(
        sample("flowlog_overflow_packets_total", "ingress"),
        0,
        "{text}"
    );
}
