//! Two network namespaces joined by a veth pair: the test host. Created with `ip` (the tool
//! this environment is about; a netlink crate would add nothing here), removed on drop even
//! when the test panics. Deleting a namespace removes its veth end and any TCX links on it.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// Prefix of every kernel object these tests create.
pub const PREFIX: &str = "flit";

/// Process-wide counter so parallel tests of one run get distinct names.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// One side of the pair.
#[derive(Debug, Clone)]
pub struct Side {
    /// Namespace name (`/run/netns/<name>`).
    pub netns: String,
    /// The veth end inside it.
    pub iface: String,
    pub v4: Ipv4Addr,
    /// `::` (unspecified) when the setup has IPv6 off.
    pub v6: Ipv6Addr,
}

impl Side {
    pub fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.v4),
            Family::V6 => IpAddr::V6(self.v6),
        }
    }

    /// The interface's MAC address, as `aa:bb:cc:dd:ee:ff`.
    pub fn mac(&self) -> [u8; 6] {
        let out =
            run(in_netns(&self.netns, "cat").arg(format!("/sys/class/net/{}/address", self.iface)));
        let text = String::from_utf8_lossy(&out.stdout);
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad MAC {text:?}")))
            .collect();
        bytes
            .try_into()
            .unwrap_or_else(|_| panic!("bad MAC {text:?}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Whether the veth ends segment in software (the default) or send every segment as its own
/// frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloads {
    /// veth defaults: TSO/GSO on, so the stack hands the devices 64 KB super-packets.
    Default,
    /// TSO, GSO and GRO off on both ends: every skb is one wire segment, so a capture of the
    /// interface sees exactly the packets a NIC would put on the wire.
    Off,
}

/// Namespaces `a` and `b` with veth ends `a.iface` and `b.iface`, addressed
/// 10.213.x.1/24 + fd00:213:x::1/64 (a) and .2 / ::2 (b).
#[derive(Debug)]
pub struct Namespaces {
    pub a: Side,
    pub b: Side,
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// `ip netns exec <netns> <args...>` as a Command (not yet run).
pub fn in_netns(netns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns, program]);
    c
}

/// Names of the namespaces that exist now (`ip netns list`).
pub fn list() -> Vec<String> {
    let out = run(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// What to build: the subnet number, offloads, and whether IPv6 is on.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// The x in 10.213.x.0/24 and fd00:213:x::/64. Give each test its own so a capture can
    /// never mistake one test's traffic for another's.
    pub subnet: u8,
    pub offloads: Offloads,
    /// With IPv6 off the interfaces send nothing on their own (no MLD reports at link-up),
    /// so every IP packet in a window is the test's.
    pub ipv6: bool,
    /// Prefix of the namespace and interface names (4 characters; [`PREFIX`] by default).
    pub prefix: &'static str,
}

impl Setup {
    pub fn new(subnet: u8) -> Self {
        Setup {
            subnet,
            offloads: Offloads::Default,
            ipv6: true,
            prefix: PREFIX,
        }
    }

    /// Names the namespaces and interfaces with `prefix` instead of [`PREFIX`].
    pub fn prefix(mut self, prefix: &'static str) -> Self {
        assert_eq!(
            prefix.len(),
            PREFIX.len(),
            "interface names must stay within 15 bytes"
        );
        self.prefix = prefix;
        self
    }

    pub fn offloads(mut self, offloads: Offloads) -> Self {
        self.offloads = offloads;
        self
    }

    pub fn ipv4_only(mut self) -> Self {
        self.ipv6 = false;
        self
    }
}

impl Namespaces {
    /// Creates the pair.
    pub fn new(setup: Setup) -> Self {
        crate::agent::require_root();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names are at most 15 bytes: "flit" + pid in hex (<= 6, pid_max is 2^22)
        // + "-" + counter + side.
        assert!(n < 1000, "more than 1000 namespace pairs in one process");
        let side = |tag: char, host: u16| Side {
            netns: format!("{}-{pid}-{n}-{tag}", setup.prefix),
            iface: format!("{}{pid:x}-{n}{tag}", setup.prefix),
            v4: Ipv4Addr::new(10, 213, setup.subnet, host as u8),
            v6: if setup.ipv6 {
                Ipv6Addr::new(0xfd00, 0x213, setup.subnet as u16, 0, 0, 0, 0, host)
            } else {
                Ipv6Addr::UNSPECIFIED
            },
        };
        // The guard exists before anything is created, so a failure half-way still cleans up.
        let ns = Namespaces {
            a: side('a', 1),
            b: side('b', 2),
        };
        ns.create(setup);
        ns
    }

    fn create(&self, setup: Setup) {
        let (a, b) = (&self.a, &self.b);
        for s in [a, b] {
            run(Command::new("ip").args(["netns", "add", &s.netns]));
            // No IPv6 chatter beyond what the test sends: no link-local address (so no DAD or
            // router solicitation for it), no router advertisements accepted. Set on `default`
            // before the veth end arrives, so the interface inherits it. Link-up still sends
            // MLD reports for the global address's solicited-node group (within ~1 s).
            let ipv6 = if setup.ipv6 {
                vec![
                    "net.ipv6.conf.default.addr_gen_mode=1",
                    "net.ipv6.conf.default.accept_ra=0",
                    "net.ipv6.conf.default.router_solicitations=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.accept_ra=0",
                ]
            } else {
                vec![
                    "net.ipv6.conf.default.disable_ipv6=1",
                    "net.ipv6.conf.all.disable_ipv6=1",
                ]
            };
            for kv in ipv6 {
                run(in_netns(&s.netns, "sysctl").args(["-qw", kv]));
            }
        }
        // Both ends are created directly inside their namespaces: nothing appears in the
        // host namespace, even for a moment.
        run(Command::new("ip").args([
            "link", "add", &a.iface, "netns", &a.netns, "type", "veth", "peer", "name", &b.iface,
            "netns", &b.netns,
        ]));
        for s in [a, b] {
            let v4 = format!("{}/24", s.v4);
            run(in_netns(&s.netns, "ip").args(["addr", "add", &v4, "dev", &s.iface]));
            if setup.ipv6 {
                let v6 = format!("{}/64", s.v6);
                run(in_netns(&s.netns, "ip")
                    .args(["-6", "addr", "add", &v6, "dev", &s.iface, "nodad"]));
            }
            if setup.offloads == Offloads::Off {
                run(in_netns(&s.netns, "ethtool")
                    .args(["-K", &s.iface, "tso", "off", "gso", "off", "gro", "off"]));
            }
            run(in_netns(&s.netns, "ip").args(["link", "set", "lo", "up"]));
            run(in_netns(&s.netns, "ip").args(["link", "set", &s.iface, "up"]));
        }
    }

    /// Every name this guard owns, for checking that they are gone.
    pub fn names(&self) -> [String; 2] {
        [self.a.netns.clone(), self.b.netns.clone()]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for s in [&self.a, &self.b] {
            // Ignore errors: the namespace may not have been created yet when setup failed.
            let _ = Command::new("ip").args(["netns", "del", &s.netns]).output();
        }
    }
}

/// The `Tcp:` counters of `/proc/net/snmp` (InSegs, OutSegs, RetransSegs, ...) as seen inside
/// `netns`: every namespace has its own.
pub fn tcp_snmp(netns: &str) -> std::collections::BTreeMap<String, i64> {
    let out = run(in_netns(netns, "cat").arg("/proc/net/snmp"));
    let text = String::from_utf8_lossy(&out.stdout);
    let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    assert_eq!(tcp.len(), 2, "no Tcp: lines in /proc/net/snmp:\n{text}");
    let names = tcp[0].split_whitespace().skip(1);
    let values = tcp[1]
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<i64>().expect("snmp counter"));
    names.map(str::to_string).zip(values).collect()
}

/// TCP sockets of `netns` with local or remote port `port` that can still send (any state but
/// TIME-WAIT, CLOSE and LISTEN), from `/proc/net/tcp` and `/proc/net/tcp6` as seen there: as
/// (hex state, line).
pub fn tcp_sockets_sending(netns: &str, port: u16) -> Vec<(String, String)> {
    let out = run(in_netns(netns, "cat").args(["/proc/net/tcp", "/proc/net/tcp6"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .filter_map(|l| {
            // sl local_address rem_address st ...
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state) = (f.get(1)?, f.get(2)?, f.get(3)?);
            let ours = port_of(local) == Some(port) || port_of(remote) == Some(port);
            // 06 TIME_WAIT, 07 CLOSE, 0A LISTEN.
            (ours && !matches!(*state, "06" | "07" | "0A"))
                .then(|| (state.to_string(), l.trim().to_string()))
        })
        .collect()
}

/// Polls until no TCP socket with port `port` can still send in any of `namespaces` (the
/// connection is over on both ends, its last ACK sent); panics after `timeout`.
pub fn wait_until_tcp_closed(namespaces: &[&str], port: u16, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let open: Vec<(String, String)> = namespaces
            .iter()
            .flat_map(|ns| tcp_sockets_sending(ns, port))
            .collect();
        if open.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "TCP port {port} still open after {timeout:?}: {open:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Loads an nft script into `netns`.
pub fn nft(netns: &str, script: &str) {
    let mut child = in_netns(netns, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write nft script");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "nft -f failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (packets, bytes) of every nftables rule counter in `netns`, by the rule's comment.
pub fn nft_counters(netns: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let out = run(in_netns(netns, "nft").args(["-j", "list", "ruleset"]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j is JSON");
    let mut counters = std::collections::BTreeMap::new();
    for item in json["nftables"].as_array().expect("nftables array") {
        let rule = &item["rule"];
        let Some(comment) = rule["comment"].as_str() else {
            continue;
        };
        for expr in rule["expr"].as_array().into_iter().flatten() {
            if let Some(c) = expr.get("counter") {
                let n = |k: &str| c[k].as_u64().expect("counter value");
                counters.insert(comment.to_string(), (n("packets"), n("bytes")));
            }
        }
    }
    counters
}

/// The ifindex of `name` in `netns`, if it exists.
pub fn ifindex(netns: &str, name: &str) -> Option<u32> {
    let out = in_netns(netns, "cat")
        .arg(format!("/sys/class/net/{name}/ifindex"))
        .output()
        .expect("run cat");
    out.status
        .success()
        .then(|| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        })
        .flatten()
}
