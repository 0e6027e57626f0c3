//! Interfaces without a link-layer header: a tun device's frames start with the IP header, so
//! the agent attaches the `_l3` programs, which parse from there (`skb->protocol` says which
//! IP). The tun's file descriptor is the wire: the test reads every packet the kernel sends
//! out of the tun and writes back every reply, so the expected counts are exactly what crossed
//! it, byte for byte. Root only; netns `fll3-*`, 10.215.1.0/24 and fd00:215:1::/64.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{Agent, AgentOptions, require_root},
    netns::{Side, in_netns, run},
    records::{self, Record, dump},
    traffic::enter,
};

const FORMAT: &str = "${version} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} \
                      ${packets} ${bytes} ${start} ${end} ${flow-direction} ${action} ${log-status} ${type}";
const HEADER: &str = "version interface-id srcaddr dstaddr srcport dstport protocol packets bytes start \
                      end flow-direction action log-status type";

const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(10, 215, 1, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 215, 1, 2);
const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x215, 1, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x215, 1, 0, 0, 0, 0, 2);
const PEER_PORT: u16 = 7007;
const UDP: u8 = 17;

/// `struct ifreq` as TUNSETIFF takes it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `_IOW('T', 202, int)` from `include/uapi/linux/if_tun.h`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens a tun device named `name` (IFF_TUN | IFF_NO_PI: bare IP packets) in the calling
/// thread's network namespace.
fn open_tun(name: &str) -> File {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    tun
}

/// The UDP datagram's ports, if `packet` is an IPv4 or IPv6 (no extension header) UDP packet.
fn udp_ports(packet: &[u8]) -> Option<(u8, u16, u16)> {
    let (version, l4) = match packet.first()? >> 4 {
        4 => (4, usize::from(packet[0] & 0x0f) * 4),
        6 => (6, 40),
        _ => return None,
    };
    let protocol = if version == 4 {
        *packet.get(9)?
    } else {
        *packet.get(6)?
    };
    if protocol != UDP || packet.len() < l4 + 8 {
        return None;
    }
    let port = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    Some((version, port(l4), port(l4 + 2)))
}

/// The reply to a UDP packet: addresses and ports swapped. Neither the IPv4 header checksum nor
/// the UDP checksum changes, since both are sums over the swapped fields.
fn reply_to(packet: &[u8], version: u8) -> Vec<u8> {
    let mut r = packet.to_vec();
    let (src, len, l4) = if version == 4 {
        (12, 4, usize::from(packet[0] & 0x0f) * 4)
    } else {
        (8, 16, 40)
    };
    for i in 0..len {
        r.swap(src + i, src + len + i);
    }
    r.swap(l4, l4 + 2);
    r.swap(l4 + 1, l4 + 3);
    r
}

/// What crossed the tun, per (direction, family, local port): packets and IP bytes.
type Wire = BTreeMap<(&'static str, u8, u16), (u64, u64)>;

/// Reads the tun until `stop`, answering every UDP packet to [`PEER_PORT`] and tallying both.
/// Other packets (the kernel's own IPv6 MLD reports) are left unanswered and not tallied: the
/// test compares the UDP flows only.
fn echo_udp(mut tun: File, stop: Arc<AtomicBool>) -> Wire {
    let mut wire = Wire::new();
    let mut buf = vec![0u8; 65_536];
    let fd = tun.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 20) } <= 0 {
            continue;
        }
        let n = tun.read(&mut buf).expect("read tun");
        let packet = &buf[..n];
        let Some((version, src_port, dst_port)) = udp_ports(packet) else {
            continue;
        };
        if dst_port != PEER_PORT {
            continue;
        }
        let e = wire.entry(("egress", version, src_port)).or_default();
        e.0 += 1;
        e.1 += n as u64;
        tun.write_all(&reply_to(packet, version))
            .expect("write tun");
        let e = wire.entry(("ingress", version, src_port)).or_default();
        e.0 += 1;
        e.1 += n as u64;
    }
    wire
}

/// Sends `sizes` as UDP payloads from `local` to the peer and waits for every echo.
fn send_and_wait(netns: &str, local: IpAddr, peer: IpAddr, sizes: &[usize]) -> u16 {
    let netns = netns.to_string();
    let sizes = sizes.to_vec();
    std::thread::spawn(move || {
        enter(&netns);
        let sock = UdpSocket::bind(SocketAddr::new(local, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let port = sock.local_addr().expect("local addr").port();
        let to = SocketAddr::new(peer, PEER_PORT);
        let mut buf = [0u8; 2048];
        for &n in &sizes {
            sock.send_to(&vec![0x5a; n], to).expect("send");
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((got, from)) if from == to && got == n => break,
                    Ok(_) => {}
                    Err(_) => assert!(Instant::now() < deadline, "no echo from {to}"),
                }
            }
        }
        port
    })
    .join()
    .expect("sender thread")
}

struct TunNs {
    netns: String,
    iface: String,
}

impl TunNs {
    fn new() -> Self {
        require_root();
        let pid = std::process::id();
        let t = TunNs {
            netns: format!("fll3-{pid}"),
            // At most 15 bytes.
            iface: format!("fltun{pid:x}"),
        };
        run(std::process::Command::new("ip").args(["netns", "add", &t.netns]));
        // No IPv6 chatter beyond MLD: no link-local address, no DAD, no router solicitations.
        for kv in [
            "net.ipv6.conf.default.addr_gen_mode=1",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.default.router_solicitations=0",
        ] {
            run(in_netns(&t.netns, "sysctl").args(["-qw", kv]));
        }
        t
    }

    fn ip(&self, args: &[&str]) {
        run(in_netns(&self.netns, "ip").args(args));
    }
}

impl Drop for TunNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// UDP over IPv4 and IPv6 through a tun device: records exact against what crossed the tun,
/// with the tun's own view (egress is what the host sent into it), and no frame taken as
/// malformed or non-IP.
#[test]
fn tun_device_counts_are_exact() {
    let ns = TunNs::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let echo = {
        let (netns, iface, stop) = (ns.netns.clone(), ns.iface.clone(), stop.clone());
        std::thread::spawn(move || {
            enter(&netns);
            let tun = open_tun(&iface);
            tx.send(()).expect("tun open");
            echo_udp(tun, stop)
        })
    };
    rx.recv_timeout(Duration::from_secs(10))
        .expect("tun device created");
    let peer4 = format!("{PEER_V4}");
    let peer6 = format!("{PEER_V6}/128");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["link", "set", &ns.iface, "up"]);
    ns.ip(&[
        "addr",
        "add",
        &format!("{LOCAL_V4}"),
        "peer",
        &peer4,
        "dev",
        &ns.iface,
    ]);
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{LOCAL_V6}/128"),
        "dev",
        &ns.iface,
    ]);
    ns.ip(&["-6", "route", "add", &peer6, "dev", &ns.iface]);
    assert_eq!(
        run(in_netns(&ns.netns, "cat").arg(format!("/sys/class/net/{}/type", ns.iface)))
            .stdout
            .trim_ascii(),
        b"65534",
        "a tun device is ARPHRD_NONE"
    );

    let side = Side {
        netns: ns.netns.clone(),
        iface: ns.iface.clone(),
        v4: LOCAL_V4,
        v6: LOCAL_V6,
    };
    let mut agent = Agent::start(
        &side,
        AgentOptions::interval(60)
            .arg("--log-format")
            .arg(FORMAT)
            .arg("--no-imds"),
    );
    assert!(
        agent.log().contains("link_header=\"none\"") || agent.log().contains("link_header=none"),
        "the agent attached the IP-header programs:\n{}",
        agent.log()
    );
    let port4 = send_and_wait(
        &ns.netns,
        LOCAL_V4.into(),
        PEER_V4.into(),
        &[1, 100, 1000, 1400],
    );
    let port6 = send_and_wait(&ns.netns, LOCAL_V6.into(), PEER_V6.into(), &[7, 700]);
    agent.stop();
    stop.store(true, Ordering::Relaxed);
    let wire = echo.join().expect("echo thread");

    let records = records::read(&agent.output_dir(), HEADER);
    let key = |r: &Record| {
        (
            r.field("flow-direction").to_string(),
            r.field("srcaddr").to_string(),
            r.field("dstaddr").to_string(),
            r.field("srcport").to_string(),
            r.field("dstport").to_string(),
            r.field("protocol").to_string(),
        )
    };
    let mut got: BTreeMap<_, (u64, u64)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.field("protocol") == "17") {
        let e = got.entry(key(r)).or_default();
        e.0 += r.packets.expect("packets");
        e.1 += r.bytes.expect("bytes");
        assert_eq!(r.field("interface-id"), ns.iface, "{}", r.line);
        assert_eq!(r.field("action"), "ACCEPT", "{}", r.line);
    }
    // Expected from the wire (the tun fd), written as the records say it: egress from the
    // local address, ingress to it.
    let mut expected: BTreeMap<_, (u64, u64)> = BTreeMap::new();
    for ((direction, version, port), counts) in &wire {
        let (local, peer): (IpAddr, IpAddr) = if *version == 4 {
            (LOCAL_V4.into(), PEER_V4.into())
        } else {
            (LOCAL_V6.into(), PEER_V6.into())
        };
        let (src, dst, sport, dport) = if *direction == "egress" {
            (local, peer, *port, PEER_PORT)
        } else {
            (peer, local, PEER_PORT, *port)
        };
        expected.insert(
            (
                direction.to_string(),
                src.to_string(),
                dst.to_string(),
                sport.to_string(),
                dport.to_string(),
                "17".to_string(),
            ),
            *counts,
        );
    }
    // What the test sent, independently of the tun: 4 IPv4 datagrams (28-byte headers) and 2
    // IPv6 ones (48-byte headers), each echoed once.
    assert_eq!(
        wire.get(&("egress", 4, port4)),
        Some(&(4, (1 + 100 + 1000 + 1400) + 4 * 28))
    );
    assert_eq!(
        wire.get(&("egress", 6, port6)),
        Some(&(2, (7 + 700) + 2 * 48))
    );
    assert_eq!(got, expected, "records:\n{}", dump(&records));
    assert!(
        !records.iter().any(|r| r.field("log-status") == "SKIPDATA"),
        "records:\n{}",
        dump(&records)
    );
}
