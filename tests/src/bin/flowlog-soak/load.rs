//! The soak's load: flow churn (a new UDP flow in every packet, from a raw socket with
//! `sendmmsg`), steady UDP the other way, and a veth pair created and deleted every few
//! seconds. Every loop stops when `stop` is set.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use flowlog_tests::{netns::in_netns, traffic::enter};

/// Destination ports of the churn flows (each has a receiving socket).
pub const CHURN_PORTS: std::ops::Range<u16> = 9000..9004;
/// Source ports the churn cycles through: with [`CHURN_PORTS`], 258,048 distinct flows before
/// one repeats (12.9 s at 20,000 flows/s, so never within one window).
const SRC_PORTS: std::ops::Range<u32> = 1024..65536;
/// Port of the steady flow's receiver.
pub const STEADY_PORT: u16 = 7000;

const BATCH: usize = 64;
/// IPv4 header + UDP header + 18 payload bytes: a 46-byte datagram.
pub const CHURN_PACKET_LEN: usize = 20 + 8 + 18;

/// Writes the `i`-th churn datagram (IPv4 + UDP, no UDP checksum: allowed for IPv4).
fn churn_packet(buf: &mut [u8; CHURN_PACKET_LEN], src: Ipv4Addr, dst: Ipv4Addr, i: u64) {
    let span = (SRC_PORTS.end - SRC_PORTS.start) as u64;
    let sport = (SRC_PORTS.start as u64 + i % span) as u16;
    let dport = CHURN_PORTS.start + ((i / span) % CHURN_PORTS.len() as u64) as u16;
    buf.fill(0);
    buf[0] = 0x45;
    buf[2..4].copy_from_slice(&(CHURN_PACKET_LEN as u16).to_be_bytes());
    buf[8] = 64;
    buf[9] = 17;
    // Checksum and id: the kernel fills them in (raw(7), IP_HDRINCL).
    buf[12..16].copy_from_slice(&src.octets());
    buf[16..20].copy_from_slice(&dst.octets());
    buf[20..22].copy_from_slice(&sport.to_be_bytes());
    buf[22..24].copy_from_slice(&dport.to_be_bytes());
    buf[24..26].copy_from_slice(&((CHURN_PACKET_LEN - 20) as u16).to_be_bytes());
}

/// Sends churn datagrams from `src` to `dst` at `rate` per second from a raw socket in
/// `netns`, counting those the kernel took in `sent`.
pub fn churn(
    netns: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    rate: u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    enter(netns);
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    let mut bufs = vec![[0u8; CHURN_PACKET_LEN]; BATCH];
    let start = Instant::now();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if i >= due {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let n = (due - i).min(BATCH as u64) as usize;
        for (k, buf) in bufs.iter_mut().take(n).enumerate() {
            churn_packet(buf, src, dst, i + k as u64);
        }
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .take(n)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (&raw const to).cast_mut().cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: `msgs` holds `n` valid headers pointing at live buffers.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            panic!("sendmmsg: {e}");
        }
        i += r as u64;
        sent.fetch_add(r as u64, Ordering::Relaxed);
    }
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
}

/// Receives on `at` in `netns` until `stop`, counting datagrams in `received`.
/// `bound` is incremented once the socket is bound.
pub fn receive(
    netns: &str,
    at: SocketAddr,
    stop: &AtomicBool,
    received: &AtomicU64,
    bound: &AtomicU64,
) {
    enter(netns);
    let sock = UdpSocket::bind(at).unwrap_or_else(|e| panic!("bind {at}: {e}"));
    bound.fetch_add(1, Ordering::SeqCst);
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on a valid socket with a c_int value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut buf = [0u8; 2048];
    loop {
        match sock.recv_from(&mut buf) {
            Ok(_) => {
                received.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(_) => {}
        }
    }
}

/// One 200-byte datagram every 10 ms from `netns` to `to`, counting them in `sent`.
pub fn steady(netns: &str, to: SocketAddr, stop: &AtomicBool, sent: &AtomicU64) {
    enter(netns);
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind steady sender");
    sock.connect(to).expect("connect steady sender");
    let data = [7u8; 200];
    while !stop.load(Ordering::Relaxed) {
        sock.send(&data).expect("steady send");
        sent.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates a veth pair `<prefix>c<n>`/`<prefix>d<n>` in `netns`, brings it up, deletes it
/// `period` later, and starts over after another `period`, until `stop`. Counts the pairs
/// deleted in `cycles`.
pub fn interface_churn(
    netns: &str,
    prefix: &str,
    period: Duration,
    stop: &AtomicBool,
    cycles: &AtomicU64,
) {
    let ip = |args: &[&str]| {
        let out = in_netns(netns, "ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let (c, d) = (format!("{prefix}c{n}"), format!("{prefix}d{n}"));
        ip(&["link", "add", &c, "type", "veth", "peer", "name", &d]);
        ip(&["link", "set", &c, "up"]);
        ip(&["link", "set", &d, "up"]);
        sleep_unless_stopped(period, stop);
        ip(&["link", "del", &c]);
        cycles.fetch_add(1, Ordering::Relaxed);
        n += 1;
        sleep_unless_stopped(period, stop);
    }
}

/// Sleeps `d`, waking early when `stop` is set.
pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

/// Packets received plus sent by `iface` in `netns`, from its kernel counters.
pub fn iface_packets(netns: &str, iface: &str) -> u64 {
    ["rx_packets", "tx_packets"]
        .iter()
        .map(|c| {
            let out = Command::new("ip")
                .args(["netns", "exec", netns, "cat"])
                .arg(format!("/sys/class/net/{iface}/statistics/{c}"))
                .output()
                .expect("run cat");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("no {c} for {iface} in {netns}"))
        })
        .sum()
}
