//! Ground truth from the wire: `tcpdump` on the same interface the agent watches, and the
//! capture read back per 5-tuple and direction.
//!
//! The capture is parsed with `pcap-file` (the classic pcap container tcpdump writes) and
//! `etherparse` (Ethernet/IP/TCP/UDP headers), not with flowlog's own parser: a ground truth
//! that shared the code under test could not catch that code's mistakes.

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;

use crate::{
    netns::Side,
    records::{Totals, Tuple},
};

/// One captured IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WirePacket {
    /// Addresses as in the headers.
    pub tuple: Tuple,
    /// Received by the captured interface (its Ethernet source is not the interface's MAC).
    pub ingress: bool,
    /// IP datagram length: IPv4 total length, or IPv6 payload length + 40.
    pub ip_len: u64,
    /// TCP payload bytes (0 for non-TCP): with `ip_len`, gives the header bytes of a GSO
    /// super-packet, which each of its segments repeats.
    pub tcp_payload_len: u64,
    /// AWS `tcp-flags` value of this one packet (0 for non-TCP).
    pub aws_tcp_flags: u8,
    /// Capture time since the Unix epoch.
    pub time: Duration,
}

/// AWS's tcp-flags rule for one packet, written out here independently of flowlog-common:
/// FIN 1, SYN 2, RST 4 as they are; ACK (16) only together with SYN (SYN-ACK = 18).
pub fn aws_flags(fin: bool, syn: bool, rst: bool, ack: bool) -> u8 {
    let mut v = 0;
    if fin {
        v |= 1;
    }
    if syn {
        v |= 2;
    }
    if rst {
        v |= 4;
    }
    if syn && ack {
        v |= 16;
    }
    v
}

/// A running `tcpdump -i <iface>` inside a side's namespace.
pub struct Tcpdump {
    child: Option<Child>,
    pcap: PathBuf,
    log: PathBuf,
    mac: [u8; 6],
}

impl Tcpdump {
    /// Starts capturing on `side.iface` into `dir` and waits until tcpdump is listening.
    pub fn start(side: &Side, dir: &std::path::Path) -> Self {
        let pcap = dir.join(format!("{}.pcap", side.iface));
        let log = dir.join(format!("{}.tcpdump.log", side.iface));
        let logf = fs::File::create(&log).expect("tcpdump log");
        let mut cmd = Command::new("ip");
        // -Z root: keep writing as root (tcpdump otherwise drops to its own user, who may not
        // write into the test's directory). --immediate-mode and -U: nothing waits in a buffer.
        // -B: a 32 MB ring, room for bursts of 64 KB GSO super-packets.
        cmd.args([
            "netns",
            "exec",
            &side.netns,
            "tcpdump",
            "-Z",
            "root",
            "-n",
            "--immediate-mode",
            "-U",
        ])
        .args(["-B", "32768"])
        .args(["-i", &side.iface, "-w"])
        .arg(&pcap)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut t = Tcpdump {
            child: Some(child),
            pcap,
            log,
            mac: side.mac(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.log_text().contains("listening on") {
            if let Some(status) = t.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("tcpdump exited ({status}): {}", t.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "tcpdump did not start: {}",
                t.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the capture (SIGINT: tcpdump flushes and prints its counters), checks that the
    /// kernel dropped nothing, and returns every IP packet captured.
    pub fn stop(mut self) -> Vec<WirePacket> {
        let mut child = self.child.take().expect("tcpdump already stopped");
        // SAFETY: signalling our own child by pid (`ip netns exec` execs tcpdump in place).
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let status = child.wait().expect("wait for tcpdump");
        let log = self.log_text();
        assert!(status.success(), "tcpdump exited with {status}: {log}");
        assert!(
            log.lines()
                .any(|l| l.trim() == "0 packets dropped by kernel"),
            "tcpdump lost packets: {log}"
        );
        read_pcap(&self.pcap, self.mac)
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every IP packet of a pcap file captured on the interface with MAC `local_mac`. Non-IP
/// frames (ARP) are left out, as the agent leaves them out of flows; an IP frame that cannot be
/// parsed fails the test.
pub fn read_pcap(path: &std::path::Path, local_mac: [u8; 6]) -> Vec<WirePacket> {
    let file =
        fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut reader =
        PcapReader::new(file).unwrap_or_else(|e| panic!("{} is not a pcap: {e}", path.display()));
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap_or_else(|e| panic!("bad packet in {}: {e}", path.display()));
        assert_eq!(pkt.orig_len as usize, pkt.data.len(), "truncated capture");
        let sliced = SlicedPacket::from_ethernet(&pkt.data)
            .unwrap_or_else(|e| panic!("cannot parse captured frame {:02x?}: {e}", &pkt.data));
        let (src, dst, ip_len, protocol, l4_len): (IpAddr, IpAddr, u64, u8, usize) =
            match &sliced.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    (
                        h.source_addr().into(),
                        h.destination_addr().into(),
                        h.total_len().into(),
                        ip.payload().ip_number.0,
                        ip.payload().payload.len(),
                    )
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    let len = u64::from(h.payload_length()) + 40;
                    (
                        h.source_addr().into(),
                        h.destination_addr().into(),
                        len,
                        ip.payload().ip_number.0,
                        ip.payload().payload.len(),
                    )
                }
                _ => continue,
            };
        let (src_port, dst_port, aws_tcp_flags, tcp_payload_len) = match &sliced.transport {
            Some(TransportSlice::Tcp(t)) => (
                t.source_port(),
                t.destination_port(),
                aws_flags(t.fin(), t.syn(), t.rst(), t.ack()),
                (l4_len - usize::from(t.data_offset()) * 4) as u64,
            ),
            Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port(), 0, 0),
            _ => (0, 0, 0, 0),
        };
        let ingress = pkt.data.get(6..12) != Some(&local_mac[..]);
        out.push(WirePacket {
            tuple: Tuple {
                src,
                dst,
                src_port,
                dst_port,
                protocol,
            },
            ingress,
            ip_len,
            tcp_payload_len,
            aws_tcp_flags,
            time: pkt.timestamp,
        });
    }
    out
}

/// The tuple as a v2 record shows it (spec §2.6): the interface's own side (destination of
/// what it receives, source of what it sends) is the interface's address of that family, even
/// when the header says otherwise (multicast, a secondary address); the far side is as in the
/// header.
pub fn as_recorded(p: &WirePacket, local: &Side) -> Tuple {
    let own = |header: IpAddr| match header {
        IpAddr::V4(_) => IpAddr::V4(local.v4),
        IpAddr::V6(_) if !local.v6.is_unspecified() => IpAddr::V6(local.v6),
        IpAddr::V6(_) => header,
    };
    let mut t = p.tuple;
    if p.ingress {
        t.dst = own(t.dst);
    } else {
        t.src = own(t.src);
    }
    t
}

/// Per tuple as recorded on `local`'s interface: packets, bytes (sum of IP lengths), and the
/// OR of AWS tcp-flags.
pub fn totals(packets: &[WirePacket], local: &Side) -> BTreeMap<Tuple, (Totals, u8)> {
    let mut out: BTreeMap<Tuple, (Totals, u8)> = BTreeMap::new();
    for p in packets {
        let e = out.entry(as_recorded(p, local)).or_default();
        e.0.packets += 1;
        e.0.bytes += p.ip_len;
        e.1 |= p.aws_tcp_flags;
    }
    out
}
