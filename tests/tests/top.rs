//! `flowlog top` against known traffic: namespace A pings B, sends UDP to B and one SYN to B's
//! port 22, which nftables in B drops. The agent on B serves `Snapshot`; `flowlog top` runs in
//! a detached tmux session of a fixed size, and the test reads the screen with capture-pane
//! (polled with a deadline), types keys with send-keys, and checks sorting and filtering.
//! `--once --json` is checked too, and the records written after all the peeking still hold
//! every packet: `top` drains nothing.
//! Root only. Namespaces carry the prefix `fltp`; addresses are 10.213.188.0/24.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4},
    process::Command,
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{Agent, AgentOptions, flowlog_bin, unix_now},
    netns::{Namespaces, Setup, nft, nft_counters, run},
    records::{self, Tuple},
    traffic::{UdpPlan, one_dropped_syn, ping, udp_send},
};

const INTERVAL: u64 = 600;
const PINGS: u64 = 7;
/// ping -s 56: 84-byte IPv4 packets.
const PING_BYTES: u64 = 84;
const UDP_DATAGRAMS: u64 = 3;
/// 20 (IPv4) + 8 (UDP) + 200 payload.
const UDP_BYTES: u64 = 228;
const UDP_PORT: u16 = 9999;

/// A tmux server of the test's own (`tmux -L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Self {
        Tmux {
            socket: format!("{name}-{}", std::process::id()),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Starts `program` in a detached session `top` of `width` x `height`.
    fn start(&self, width: u16, height: u16, program: &[String]) {
        let mut c = self.cmd();
        c.args(["new-session", "-d", "-s", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .args(program);
        run(&mut c);
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        run(self.cmd().args(["send-keys", "-t", "top"]).args(keys));
    }

    fn session_alive(&self) -> bool {
        self.cmd()
            .args(["has-session", "-t", "top"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Polls the screen until `ok` holds; panics with the last screen at the deadline.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The screen's lines as word lists, the table borders left out.
fn rows(screen: &str) -> Vec<Vec<String>> {
    screen
        .lines()
        .map(|l| {
            l.split(|c: char| c.is_whitespace() || c == '│')
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Whether some line has exactly these words one after the other (tables may share a line).
fn has_row(screen: &str, words: &[String]) -> bool {
    rows(screen)
        .iter()
        .any(|r| r.windows(words.len()).any(|w| w == words))
}

/// The rows of the "Top flows" table (between its header and the table's bottom border).
fn flow_rows(screen: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = screen.lines().collect();
    let Some(title) = lines.iter().position(|l| l.contains("Top flows")) else {
        return Vec::new();
    };
    lines[title + 2..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('└'))
        .map(|l| rows(l).into_iter().next().unwrap_or_default())
        .filter(|r| !r.is_empty())
        .collect()
}

/// Waits for the next window if less than `needed` is left of this one.
fn settle_in_window(needed: Duration) {
    let now = unix_now();
    let left = INTERVAL as f64 - now % INTERVAL as f64;
    if left < needed.as_secs_f64() {
        std::thread::sleep(Duration::from_secs_f64(left + 1.0));
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

#[test]
fn top_shows_the_open_window_sorts_filters_and_drains_nothing() {
    let ns = Namespaces::new(Setup::new(188).ipv4_only().prefix("fltp"));
    let (a, b) = (&ns.a, &ns.b);
    nft(
        &b.netns,
        r#"table inet fltp { chain input { type filter hook input priority 0; policy accept;
        tcp dport 22 counter drop comment "ssh"
    }
    }"#,
    );
    let work = tempfile::Builder::new()
        .prefix("fltp-")
        .tempdir()
        .expect("temp dir");
    let socket = work.path().join("control.sock");
    let socket_arg = socket.display().to_string();
    // Traffic and every check below fit in one window.
    settle_in_window(Duration::from_secs(40));
    let mut agent = Agent::start(
        b,
        AgentOptions::interval(INTERVAL)
            .arg("--no-imds")
            .arg("--control-socket")
            .arg(socket_arg.clone())
            .arg("--state-dir")
            .arg(work.path().join("state").display().to_string()),
    );

    ping(&a.netns, b.v4.into(), PINGS as u32, 56);
    let udp_ports = udp_send(
        &a.netns,
        &b.netns,
        SocketAddr::new(b.v4.into(), UDP_PORT),
        UdpPlan {
            flows: 1,
            per_flow: UDP_DATAGRAMS as usize,
            payload: 200,
            gap: Duration::ZERO,
        },
    );
    one_dropped_syn(&a.netns, SocketAddrV4::new(b.v4, 22), &b.netns, "ssh");
    let (ssh_p, ssh_b) = nft_counters(&b.netns)["ssh"];

    let (av, bv, iface) = (a.v4.to_string(), b.v4.to_string(), b.iface.clone());
    let (ping_p, ping_b) = (PINGS.to_string(), (PINGS * PING_BYTES).to_string());
    let (udp_p, udp_b) = (
        UDP_DATAGRAMS.to_string(),
        (UDP_DATAGRAMS * UDP_BYTES).to_string(),
    );
    let icmp_in = words(&[&iface, "in", "icmp", &av, "0", &bv, "0", &ping_p, &ping_b]);
    let icmp_out = words(&[&iface, "out", "icmp", &bv, "0", &av, "0", &ping_p, &ping_b]);
    let udp_in = words(&[
        &iface,
        "in",
        "udp",
        &av,
        &udp_ports[0].to_string(),
        &bv,
        &UDP_PORT.to_string(),
        &udp_p,
        &udp_b,
    ]);
    let reject = words(&[
        &iface,
        "in",
        "tcp",
        &av,
        &bv,
        "22",
        "NETFILTER_DROP",
        &ssh_p.to_string(),
        &ssh_b.to_string(),
    ]);
    let accepted_bytes = 2 * PINGS * PING_BYTES + UDP_DATAGRAMS * UDP_BYTES;
    let iface_row = words(&[
        &iface,
        "-",
        "3",
        &(2 * PINGS + UDP_DATAGRAMS).to_string(),
        &accepted_bytes.to_string(),
        &ssh_p.to_string(),
        &ssh_b.to_string(),
    ]);

    // --once --json: one snapshot, exact counts.
    let out = Command::new(flowlog_bin())
        .args(["top", "--once", "--json", "--control-socket", &socket_arg])
        .output()
        .expect("run flowlog top --once --json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON snapshot");
    let flows: Vec<(String, u64, String, String, u64, u64)> = snap["Flows"]
        .as_array()
        .expect("Flows")
        .iter()
        .map(|f| {
            (
                f["Direction"].as_str().expect("dir").to_string(),
                f["Protocol"].as_u64().expect("proto"),
                f["SrcAddr"].as_str().expect("src").to_string(),
                f["DstAddr"].as_str().expect("dst").to_string(),
                f["Packets"].as_u64().expect("packets"),
                f["Bytes"].as_u64().expect("bytes"),
            )
        })
        .collect();
    assert_eq!(
        flows,
        [
            (
                "ingress".into(),
                17,
                av.clone(),
                bv.clone(),
                UDP_DATAGRAMS,
                UDP_DATAGRAMS * UDP_BYTES
            ),
            (
                "egress".into(),
                1,
                bv.clone(),
                av.clone(),
                PINGS,
                PINGS * PING_BYTES
            ),
            (
                "ingress".into(),
                1,
                av.clone(),
                bv.clone(),
                PINGS,
                PINGS * PING_BYTES
            ),
        ],
        "{snap:#}"
    );
    assert_eq!(snap["Rejects"][0]["Reason"], "NETFILTER_DROP", "{snap:#}");
    assert_eq!(snap["Rejects"][0]["DstPort"], 22);
    assert_eq!(snap["Rejects"][0]["Packets"], ssh_p);
    assert_eq!(snap["Rejects"][0]["Bytes"], ssh_b);
    assert_eq!(snap["Interfaces"][0]["Name"], iface.as_str());
    assert_eq!(snap["Interfaces"][0]["Packets"], 2 * PINGS + UDP_DATAGRAMS);
    // The SYN's flow entry is in the map too (counted at TC, then rejected).
    assert_eq!(snap["Map"]["Flows"], 4, "{snap:#}");
    assert_eq!(snap["Map"]["Rejects"], 1, "{snap:#}");

    // --once as text, filtered: the UDP flow only.
    let out = Command::new(flowlog_bin())
        .args([
            "top",
            "--once",
            "--protocol",
            "udp",
            "--control-socket",
            &socket_arg,
        ])
        .output()
        .expect("run flowlog top --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(has_row(&text, &udp_in), "{text}");
    assert!(
        !has_row(&text, &icmp_in) && !has_row(&text, &icmp_out),
        "{text}"
    );
    assert!(has_row(&text, &iface_row), "{text}");
    assert!(text.contains("filter proto=udp"), "{text}");

    // The live view in tmux.
    let tmux = Tmux::new("fltp");
    tmux.start(
        180,
        45,
        &[
            flowlog_bin().display().to_string(),
            "top".into(),
            "--control-socket".into(),
            socket_arg.clone(),
        ],
    );
    let screen = tmux.wait_for("the traffic", |s| {
        has_row(s, &icmp_in)
            && has_row(s, &icmp_out)
            && has_row(s, &udp_in)
            && has_row(s, &reject)
            && has_row(s, &iface_row)
            && s.contains("map flows 4/")
            && s.contains("rejects 1/")
    });
    // By bytes: UDP (684 B) before ICMP (588 B each way).
    assert_eq!(flow_rows(&screen)[0][2], "udp", "{screen}");
    tmux.keys(&["s"]);
    let screen = tmux.wait_for("sort by packets", |s| s.contains("sort packets/s"));
    let screen = if flow_rows(&screen).first().is_some_and(|r| r[2] == "icmp") {
        screen
    } else {
        tmux.wait_for("ICMP first", |s| {
            flow_rows(s).first().is_some_and(|r| r[2] == "icmp")
        })
    };
    assert_eq!(flow_rows(&screen).len(), 3, "{screen}");
    tmux.keys(&["p", "udp", "Enter"]);
    let screen = tmux.wait_for("only UDP", |s| {
        s.contains("filter proto=udp") && flow_rows(s).len() == 1
    });
    assert!(has_row(&screen, &udp_in), "{screen}");
    assert!(
        !has_row(&screen, &reject),
        "the REJECT row is TCP:\n{screen}"
    );
    tmux.keys(&["c", "a", &format!("{bv}/32"), "Enter", "o", "22", "Enter"]);
    let screen = tmux.wait_for("the SSH filter", |s| {
        s.contains(&format!("filter port=22 addr={bv}/32")) && flow_rows(s).is_empty()
    });
    assert!(has_row(&screen, &reject), "{screen}");
    tmux.keys(&["i", "nomatch*", "Enter"]);
    tmux.wait_for("no REJECT row on another interface", |s| {
        s.contains("iface=nomatch*") && !has_row(s, &reject)
    });
    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.session_alive() {
        assert!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Everything `top` read is still in the records: it drained nothing.
    agent.stop();
    let recs = records::read_default(&agent.output_dir());
    let totals = records::totals(&recs);
    let t = |src: &str, dst: &str, ports: (u16, u16), protocol: u8| Tuple {
        src: src.parse().expect("addr"),
        dst: dst.parse().expect("addr"),
        src_port: ports.0,
        dst_port: ports.1,
        protocol,
    };
    let got: BTreeMap<Tuple, (u64, u64)> = totals
        .iter()
        .map(|(k, v)| (*k, (v.packets, v.bytes)))
        .collect();
    let udp = t(&av, &bv, (udp_ports[0], UDP_PORT), 17);
    assert_eq!(got[&t(&av, &bv, (0, 0), 1)], (PINGS, PINGS * PING_BYTES));
    assert_eq!(got[&t(&bv, &av, (0, 0), 1)], (PINGS, PINGS * PING_BYTES));
    assert_eq!(got[&udp], (UDP_DATAGRAMS, UDP_DATAGRAMS * UDP_BYTES));
    let syn = recs
        .iter()
        .filter(|r| r.action == "REJECT")
        .map(|r| (r.packets, r.bytes))
        .collect::<Vec<_>>();
    assert_eq!(
        syn,
        [(Some(ssh_p), Some(ssh_b))],
        "{}",
        records::dump(&recs)
    );
}
