//! Known traffic between the two namespaces. Sockets are opened on threads that joined a
//! namespace with `setns(CLONE_NEWNET)`, which moves only the calling thread, so the test
//! controls every byte with plain `std::net` sockets. Pings use the system `ping`.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{
        IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream,
        UdpSocket,
    },
    os::fd::AsRawFd as _,
    sync::mpsc,
    time::Duration,
};

use crate::netns::{in_netns, run};

/// Moves the calling thread into network namespace `netns`. Call it only on a thread made for
/// the purpose: the thread stays there until it ends.
pub fn enter(netns: &str) {
    let path = format!("/run/netns/{netns}");
    let f = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; CLONE_NEWNET only affects this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Runs `f` on a new thread inside `netns` and returns its result (a panic in `f` is
/// re-raised here).
pub fn in_ns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(netns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The unspecified address of `addr`'s family (bind to it to let the kernel pick the source).
fn any_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Recognisable payload bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// One TCP connection: the client sends `request` bytes and half-closes, the server reads to
/// the end, answers `response` bytes and closes. Every close is clean (FIN, no RST).
#[derive(Debug, Clone, Copy)]
pub struct TcpExchange {
    pub request: usize,
    pub response: usize,
}

/// Runs `exchanges` one after another from a client in `client_ns` to a server listening on
/// `server` in `server_ns`. Returns each connection's client port.
pub fn tcp_exchanges(
    server_ns: &str,
    client_ns: &str,
    server: SocketAddr,
    exchanges: &[TcpExchange],
) -> Vec<u16> {
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let srv = s.spawn(move || {
            enter(server_ns);
            let listener =
                TcpListener::bind(server).unwrap_or_else(|e| panic!("bind {server}: {e}"));
            ready_tx.send(()).expect("client gone");
            for (i, ex) in exchanges.iter().enumerate() {
                let (mut conn, _) = listener.accept().expect("accept");
                conn.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("timeout");
                let mut got = Vec::new();
                conn.read_to_end(&mut got).expect("server read");
                assert_eq!(
                    got,
                    payload(ex.request, i as u8),
                    "request of connection {i}"
                );
                conn.write_all(&payload(ex.response, 100 + i as u8))
                    .expect("server write");
                // Dropping closes: FIN after the response.
            }
        });
        let cli = s.spawn(move || {
            enter(client_ns);
            ready_rx.recv().expect("server did not start");
            let mut ports = Vec::new();
            for (i, ex) in exchanges.iter().enumerate() {
                let mut conn = TcpStream::connect_timeout(&server, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connect {server}: {e}"));
                conn.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("timeout");
                ports.push(conn.local_addr().expect("local addr").port());
                conn.write_all(&payload(ex.request, i as u8))
                    .expect("client write");
                conn.shutdown(Shutdown::Write).expect("half-close");
                let mut got = Vec::new();
                conn.read_to_end(&mut got).expect("client read");
                assert_eq!(
                    got,
                    payload(ex.response, 100 + i as u8),
                    "response of connection {i}"
                );
            }
            ports
        });
        let ports = cli.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        srv.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        ports
    })
}

/// UDP datagrams from sockets in `from_ns` to one receiver bound on `to` in `to_ns`.
#[derive(Debug, Clone, Copy)]
pub struct UdpPlan {
    /// Distinct sender sockets (each gets its own ephemeral source port: one flow each).
    pub flows: usize,
    /// Datagrams per flow.
    pub per_flow: usize,
    /// Payload bytes of each datagram.
    pub payload: usize,
    /// Pause after each round (one datagram from every flow); zero sends as fast as possible.
    pub gap: Duration,
}

/// Sends the plan round-robin over its flows and checks every datagram arrived intact.
/// Returns the senders' source ports.
pub fn udp_send(from_ns: &str, to_ns: &str, to: SocketAddr, plan: UdpPlan) -> Vec<u16> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let total = plan.flows * plan.per_flow;
    std::thread::scope(|s| {
        let rx = s.spawn(move || {
            enter(to_ns);
            let sock = UdpSocket::bind(to).unwrap_or_else(|e| panic!("bind {to}: {e}"));
            // Room for a whole burst: the test checks delivery, and a full receive buffer
            // would drop datagrams after the agent counted them.
            let size: libc::c_int = 8 << 20;
            // SAFETY: setsockopt on a valid socket with a c_int value.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            ready_tx.send(()).expect("sender gone");
            let mut buf = vec![0u8; 65_536];
            for i in 0..total {
                let (n, _) = sock
                    .recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("datagram {i} of {total} to {to}: {e}"));
                assert_eq!(n, plan.payload, "size of datagram {i} to {to}");
            }
        });
        let tx = s.spawn(move || {
            enter(from_ns);
            ready_rx.recv().expect("receiver did not start");
            let socks: Vec<UdpSocket> = (0..plan.flows)
                .map(|_| {
                    let s =
                        UdpSocket::bind(SocketAddr::new(any_of(to.ip()), 0)).expect("bind sender");
                    s.connect(to).expect("connect");
                    s
                })
                .collect();
            let data = payload(plan.payload, 7);
            for _ in 0..plan.per_flow {
                for s in &socks {
                    let n = s.send(&data).expect("send");
                    assert_eq!(n, plan.payload);
                }
                if !plan.gap.is_zero() {
                    std::thread::sleep(plan.gap);
                }
            }
            socks
                .iter()
                .map(|s| s.local_addr().expect("local addr").port())
                .collect::<Vec<_>>()
        });
        let ports = tx.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        rx.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        ports
    })
}

/// `count` echo requests of `size` data bytes (ping's -s; 56 gives 84-byte IPv4 packets) from
/// `from_ns` to `to`, 0.1 s apart; all must be answered.
pub fn ping(from_ns: &str, to: IpAddr, count: u32, size: u32) {
    let out = run(in_netns(from_ns, "ping").args([
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-s",
        &size.to_string(),
        "-i",
        "0.1",
        "-W",
        "2",
        &to.to_string(),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{count} packets transmitted, {count} received")),
        "ping {to} lost replies:\n{text}"
    );
}

/// One SYN from `from_ns` to `to`, which a rule drops: a non-blocking connect, left until the
/// rule `comment` has counted it, then closed (before the first retransmission, 1 s later).
pub fn one_dropped_syn(from_ns: &str, to: SocketAddrV4, rule_ns: &str, comment: &str) {
    in_ns(from_ns, || {
        let sock = nonblocking_connect(to);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while crate::netns::nft_counters(rule_ns)
            .get(comment)
            .map_or(0, |c| c.0)
            == 0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "rule {comment} never saw the SYN"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(sock);
    });
}

/// A TCP socket with a connect to `to` under way (EINPROGRESS).
fn nonblocking_connect(to: SocketAddrV4) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain socket syscalls on a descriptor owned by the returned OwnedFd, with a
    // sockaddr_in of the size passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = to.port().to_be();
        sin.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        let rc = libc::connect(
            owned.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        assert!(
            rc == -1 && err.raw_os_error() == Some(libc::EINPROGRESS),
            "connect: {err}"
        );
        owned
    }
}
