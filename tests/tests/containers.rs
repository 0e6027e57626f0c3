//! Containers logged as their own network cards: real podman containers on a podman bridge,
//! the agent in the host's namespace selecting them by name (`--iface container:NAME`), each
//! container's records from its own side (what it sent is `egress`, its address is `srcaddr`,
//! `interface-id` is `<name>.eth0`) with podman's ids in `ecs-container-id` and
//! `ecs-second-container-id`.
//!
//! Ground truth: tcpdump *inside* each container's network namespace (its `eth0`), or what the
//! test sent (a container too short-lived to start a capture in), and podman's own ids. Root
//! only. Podman networks use 10.214.x.0/24 with x = 21..=24 here.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use flowlog_tests::{
    agent::{flowlog_bin, read_log, require_root, sigterm_and_wait, wait_for_log_line},
    netns::{Side, run},
    podman::{self, Container, Network, Pod, RunOptions},
    records::{self, Record, Tuple},
    wire::{self, Tcpdump, WirePacket},
};

/// Every field the checks read: the v2 tuple and counts, the direction, and the owner.
const FORMAT: &str = "${version} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} \
    ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${flow-direction} \
    ${ecs-container-id} ${ecs-second-container-id} ${container-name}";
const ICMP: u8 = 1;

fn header() -> String {
    FORMAT
        .split_whitespace()
        .map(|f| f.trim_start_matches("${").trim_end_matches('}'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `flowlog run` in the host's namespace (where podman's bridge and the containers' veths
/// are), with its own control socket, state, spool and lock directories.
struct HostAgent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Its own `--pin-dir` (several run at once in the host's namespace).
    _pins: tempfile::TempDir,
}

impl HostAgent {
    fn start(interval: u64, ifaces: &[String]) -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("flit-guests-")
            .tempdir()
            .expect("temp dir");
        let p = |name: &str| dir.path().join(name);
        let log = fs::File::create(p("agent.log")).expect("agent log");
        let pins = flowlog_tests::agent::test_pin_dir();
        let mut cmd = Command::new(flowlog_bin());
        cmd.arg("run").arg("--pin-dir").arg(pins.path());
        for i in ifaces {
            cmd.args(["--iface", i]);
        }
        cmd.args(["--aggregation-interval", &interval.to_string()])
            .args([
                "--file-rollover-seconds",
                "1",
                "--no-imds",
                "--ecs-agent-url",
                "",
            ])
            .args(["--log-format", FORMAT])
            .arg("--destination")
            .arg(format!("file:{}", p("out").display()))
            .arg("--spool-dir")
            .arg(p("spool"))
            .arg("--state-dir")
            .arg(p("state"))
            .arg("--control-socket")
            .arg(p("control.sock"))
            .arg("--runtime-dir")
            .arg(p("run"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd.spawn().expect("start flowlog");
        let mut agent = HostAgent {
            child: Some(child),
            dir,
            _pins: pins,
        };
        agent.wait_for_log("capturing");
        agent
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn wait_for_log(&mut self, needle: &str) {
        self.wait_for_log_after(0, needle);
    }

    /// Waits for `needle` in the log after its first `offset` bytes.
    fn wait_for_log_after(&mut self, offset: usize, needle: &str) {
        let path = self.log_path();
        wait_for_log_line(
            &mut self.child,
            &path,
            offset,
            needle,
            Duration::from_secs(30),
        );
    }

    fn log_len(&self) -> usize {
        read_log(&self.log_path()).len()
    }

    /// `flowlog <command> <args>` against this agent's control socket; its stdout.
    fn api(&self, command: &str, args: &[&str]) -> String {
        let out = run(Command::new(flowlog_bin())
            .arg(command)
            .arg("--control-socket")
            .arg(self.dir.path().join("control.sock"))
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM (the partial window is flushed), exit 0, then every record written.
    fn stop(&mut self) -> Vec<Record> {
        let child = self.child.take().expect("agent running");
        let status = sigterm_and_wait(child, &self.log_path(), Duration::from_secs(30));
        assert!(
            status.success(),
            "flowlog exited with {status}: {}",
            read_log(&self.log_path())
        );
        records::read(&self.out(), &header())
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The container's `eth0` as a capture side: its network namespace by the name podman gave it
/// under /run/netns (`ip netns identify`).
fn side(c: &Container) -> Side {
    let out = run(Command::new("ip").args(["netns", "identify", &c.pid().to_string()]));
    let netns = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!netns.is_empty(), "no /run/netns name for {}", c.name);
    Side {
        netns,
        iface: "eth0".into(),
        v4: c.ipv4(),
        v6: Ipv6Addr::UNSPECIFIED,
    }
}

/// Waits until the agent has attached to the container's host-side veth.
fn wait_attached(agent: &mut HostAgent, c: &Container) {
    let (_, veth) = c.host_veth();
    agent.wait_for_log(&format!("attached iface={veth} "));
}

fn ping(from: &Container, to: Ipv4Addr, count: u32, size: u32) {
    let out = from.exec(&[
        "ping",
        "-c",
        &count.to_string(),
        "-s",
        &size.to_string(),
        "-i",
        "0.2",
        &to.to_string(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{count} packets received")),
        "ping {to} from {}: {text}",
        from.name
    );
}

/// (tuple, direction) → (packets, bytes), IPv4 ICMP between `a` and `b` only: the test's
/// traffic, not the IPv6 link-local chatter of an interface coming up.
type Sums = BTreeMap<(Tuple, String), (u64, u64)>;

fn between(t: &Tuple, a: Ipv4Addr, b: Ipv4Addr) -> bool {
    let ends = [IpAddr::V4(a), IpAddr::V4(b)];
    t.protocol == ICMP && ends.contains(&t.src) && ends.contains(&t.dst)
}

fn record_sums(records: &[&Record], a: Ipv4Addr, b: Ipv4Addr) -> Sums {
    let mut out = Sums::new();
    for r in records {
        let (Some(t), Some(p), Some(by)) = (r.tuple, r.packets, r.bytes) else {
            continue;
        };
        if between(&t, a, b) {
            let e = out
                .entry((t, r.field("flow-direction").to_string()))
                .or_default();
            e.0 += p;
            e.1 += by;
        }
    }
    out
}

fn wire_sums(packets: &[WirePacket], local: &Side, a: Ipv4Addr, b: Ipv4Addr) -> Sums {
    let mut out = Sums::new();
    for p in packets {
        let t = wire::as_recorded(p, local);
        if between(&t, a, b) {
            let dir = if p.ingress { "ingress" } else { "egress" };
            let e = out.entry((t, dir.to_string())).or_default();
            e.0 += 1;
            e.1 += p.ip_len;
        }
    }
    out
}

fn tuple(src: Ipv4Addr, dst: Ipv4Addr) -> Tuple {
    Tuple {
        src: src.into(),
        dst: dst.into(),
        src_port: 0,
        dst_port: 0,
        protocol: ICMP,
    }
}

/// The records of interface `id`.
fn of<'a>(records: &'a [Record], id: &str) -> Vec<&'a Record> {
    records.iter().filter(|r| r.interface_id == id).collect()
}

/// A container as records name it.
struct Owner<'a> {
    id: &'a str,
    name: &'a str,
}

impl<'a> From<&'a Container> for Owner<'a> {
    fn from(c: &'a Container) -> Self {
        Owner {
            id: &c.id,
            name: &c.name,
        }
    }
}

/// Every record of `records` names `first` (and `second`, or `-`) and the first's name.
fn assert_owner(records: &[&Record], first: &Owner<'_>, second: Option<&Container>) {
    assert!(!records.is_empty());
    for r in records {
        assert_eq!(r.field("ecs-container-id"), first.id, "{}", r.line);
        assert_eq!(
            r.field("ecs-second-container-id"),
            second.map_or("-", |c| c.id.as_str()),
            "{}",
            r.line
        );
        assert_eq!(r.field("container-name"), first.name, "{}", r.line);
    }
}

#[test]
fn two_containers_talking_across_the_bridge_are_each_logged_from_their_side() {
    podman::ensure_image();
    let net = Network::new(21);
    let name_a = podman::unique_name("flitca");
    let name_b = podman::unique_name("flitcb");
    let mut agent = HostAgent::start(
        4,
        &[format!("container:{name_a}"), format!("container:{name_b}")],
    );
    let run = |name: &str| {
        Container::run(RunOptions {
            name: Some(name.to_string()),
            network: Some(&net.name),
            ..RunOptions::default()
        })
    };
    let (a, b) = (run(&name_a), run(&name_b));
    wait_attached(&mut agent, &a);
    wait_attached(&mut agent, &b);
    let (side_a, side_b) = (side(&a), side(&b));
    let (ip_a, ip_b) = (side_a.v4, side_b.v4);
    // One directory each: the capture file is named after the interface, eth0 in both.
    let (captures_a, captures_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dump_a = Tcpdump::start(&side_a, captures_a.path());
    let dump_b = Tcpdump::start(&side_b, captures_b.path());

    ping(&a, ip_b, 5, 100);
    ping(&b, ip_a, 3, 300);

    let wire_a = dump_a.stop();
    let wire_b = dump_b.stop();
    let records = agent.stop();
    let recs_a = of(&records, &format!("{name_a}.eth0"));
    let recs_b = of(&records, &format!("{name_b}.eth0"));
    let all = records::dump(&records);

    // What the test sent, by hand: a's five 128-byte requests and b's three 328-byte
    // replies... (ICMP flows have ports 0: requests and replies of one direction are one flow).
    let one_way = (8, 5 * 128 + 3 * 328);
    let expected_a = Sums::from([
        ((tuple(ip_a, ip_b), "egress".into()), one_way),
        ((tuple(ip_b, ip_a), "ingress".into()), one_way),
    ]);
    let expected_b = Sums::from([
        ((tuple(ip_b, ip_a), "egress".into()), one_way),
        ((tuple(ip_a, ip_b), "ingress".into()), one_way),
    ]);
    assert_eq!(
        wire_sums(&wire_a, &side_a, ip_a, ip_b),
        expected_a,
        "tcpdump in a"
    );
    assert_eq!(
        wire_sums(&wire_b, &side_b, ip_a, ip_b),
        expected_b,
        "tcpdump in b"
    );
    assert_eq!(
        record_sums(&recs_a, ip_a, ip_b),
        expected_a,
        "a's records:\n{all}"
    );
    assert_eq!(
        record_sums(&recs_b, ip_a, ip_b),
        expected_b,
        "b's records:\n{all}"
    );
    assert_owner(&recs_a, &(&a).into(), None);
    assert_owner(&recs_b, &(&b).into(), None);
    assert_eq!(
        recs_a.len() + recs_b.len(),
        records.len(),
        "only the two containers' interfaces are logged:\n{all}"
    );
}

#[test]
fn a_pod_of_two_containers_names_both() {
    podman::ensure_image();
    let net = Network::new(22);
    let pod = Pod::new(Some(&net.name));
    let first_name = podman::unique_name("flitp1");
    let mut agent = HostAgent::start(4, &[format!("container:{first_name}")]);
    let first = pod.run(Some(first_name.clone()));
    let second = pod.run(None);
    // The owner the agent found names both containers (the second joins the pod's namespace
    // after the interface exists; the infra container comes last).
    agent.wait_for_log(&format!(
        "container {first_name} ({}), container {} ({})",
        first.id, second.name, second.id
    ));
    let gateway = Ipv4Addr::from(u32::from(net.subnet) + 1);
    let me = first.ipv4();
    ping(&first, gateway, 3, 56);
    let records = agent.stop();
    let recs = of(&records, &format!("{first_name}.eth0"));
    let all = records::dump(&records);
    // The ping's records, cut after both containers were known (records of earlier windows
    // name the containers there were then).
    let pings: Vec<&Record> = recs
        .iter()
        .copied()
        .filter(|r| r.tuple.is_some_and(|t| between(&t, me, gateway)))
        .collect();
    assert_eq!(
        record_sums(&pings, me, gateway),
        Sums::from([
            ((tuple(me, gateway), "egress".into()), (3, 3 * 84)),
            ((tuple(gateway, me), "ingress".into()), (3, 3 * 84)),
        ]),
        "records:\n{all}"
    );
    assert_owner(&pings, &(&first).into(), Some(&second));
    assert_ne!(first.id, pod.infra_id());
}

#[test]
fn a_container_that_lives_two_seconds_is_logged_exactly() {
    podman::ensure_image();
    let net = Network::new(23);
    let peer = Container::run(RunOptions {
        network: Some(&net.name),
        ..RunOptions::default()
    });
    let peer_ip = peer.ipv4();
    let name = podman::unique_name("flitshort");
    let mut agent = HostAgent::start(2, &[format!("container:{name}")]);
    // Pings from its first moment (four, 0.25 s apart), then lives on for a second; says its
    // address first (`ip -o -4 addr`), read back from its log once it is gone.
    let short = Container::run(RunOptions {
        name: Some(name.clone()),
        network: Some(&net.name),
        command: vec![
            "sh".into(),
            "-c".into(),
            format!("ip -o -4 addr show eth0 && ping -c 4 -i 0.25 {peer_ip} && sleep 1.2"),
        ],
        ..RunOptions::default()
    });
    let exit = podman::podman_ok(&["wait", &short.id]);
    let log = podman::podman_ok(&["logs", &short.id]);
    assert_eq!(exit, "0", "the short container failed: {log}");
    assert!(log.contains("4 packets received"), "{log}");
    // "2: eth0    inet 10.214.23.3/24 brd ..."
    let me: Ipv4Addr = log
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in the short container's log: {log}"));
    // Its records come out at the cut after it is gone, whole.
    let id = format!("{name}.eth0");
    let header = header();
    let records = records::wait_for_with_header(
        &agent.out(),
        &header,
        Duration::from_secs(30),
        "the short-lived container's records",
        |recs| {
            let recs: Vec<&Record> = recs.iter().filter(|r| r.interface_id == id).collect();
            record_sums(&recs, me, peer_ip)
                .values()
                .map(|v| v.0)
                .sum::<u64>()
                >= 8
        },
    );
    let recs = of(&records, &id);
    assert_eq!(
        record_sums(&recs, me, peer_ip),
        Sums::from([
            ((tuple(me, peer_ip), "egress".into()), (4, 4 * 84)),
            ((tuple(peer_ip, me), "ingress".into()), (4, 4 * 84)),
        ]),
        "records:\n{}",
        records::dump(&records)
    );
    assert_owner(&recs, &(&short).into(), None);
    let all = agent.stop();
    assert_eq!(
        record_sums(&of(&all, &id), me, peer_ip),
        record_sums(&recs, me, peer_ip),
        "nothing more after its window"
    );
}

/// The container is removed in the middle of its flow log's window, and the capture is cut
/// (by a second flow log with 1 s windows) after it is gone and before that window closes:
/// its flows are still written under its own `interface-id` and ids when the window closes.
#[test]
fn a_container_removed_mid_window_keeps_its_records() {
    podman::ensure_image();
    let net = Network::new(24);
    let name = podman::unique_name("flitgone");
    let peer = Container::run(RunOptions {
        network: Some(&net.name),
        ..RunOptions::default()
    });
    let peer_ip = peer.ipv4();
    // An hour: this flow log's window stays open for the whole test; SIGTERM closes it.
    let mut agent = HostAgent::start(3600, &[format!("container:{name}")]);
    let second = agent.dir.path().join("second");
    let created = agent.api(
        "create-flow-logs",
        &[
            "--resource-type",
            "NetworkInterface",
            "--resource-ids",
            "lo",
            "--log-destination-type",
            "file",
            "--log-destination",
            &second.display().to_string(),
            "--max-aggregation-interval",
            "1",
        ],
    );
    assert!(created.contains("fl-"), "{created}");
    let gone = Container::run(RunOptions {
        name: Some(name.clone()),
        network: Some(&net.name),
        ..RunOptions::default()
    });
    wait_attached(&mut agent, &gone);
    let (_, veth) = gone.host_veth();
    let me = gone.ipv4();
    ping(&gone, peer_ip, 4, 200);
    let id = gone.id.clone();
    gone.remove(); // the veth goes away with the namespace
    agent.wait_for_log(&format!("interface went away; detached iface={veth} "));
    // A cut after the removal: the capture no longer lists the interface.
    let offset = agent.log_len();
    agent.wait_for_log_after(offset, "window closed");
    let records = agent.stop();
    let recs = of(&records, &format!("{name}.eth0"));
    // What the test sent: four 228-byte requests (200 data + 8 ICMP + 20 IP), four replies.
    assert_eq!(
        record_sums(&recs, me, peer_ip),
        Sums::from([
            ((tuple(me, peer_ip), "egress".into()), (4, 4 * 228)),
            ((tuple(peer_ip, me), "ingress".into()), (4, 4 * 228)),
        ]),
        "records:\n{}",
        records::dump(&records)
    );
    assert_owner(
        &recs,
        &Owner {
            id: &id,
            name: &name,
        },
        None,
    );
}
