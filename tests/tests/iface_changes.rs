//! Interfaces that change under a running agent, mid-window, with real traffic on both sides
//! of the change: link down/up, rename (to a name the flow log still covers, and to one it
//! does not), MTU change, address change, delete and re-create with the same name.
//!
//! In every case the records equal the wire: `tcpdump` on the far end of the veth pair (its
//! namespace is not touched by the change, so the capture runs through it), totals per flow.
//! Each case also checks the TCX links the agent holds (`/proc/<pid>/fdinfo`): its programs
//! sit on the interface's live ifindex, or on nothing once no flow log covers it; never on a
//! dead ifindex (a link whose interface is gone shows ifindex 0).
//!
//! IPv4 only: with IPv6 off the interfaces send nothing of their own, so every IP packet on
//! the wire is the test's. Each case runs in one aggregation window (checked: every record has
//! the same start), so a change lands mid-window.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{Agent, AgentOptions, wait_for_window_start},
    netns::{Namespaces, Setup, Side, ifindex, in_netns, run},
    records::{self, Record, Tuple},
    tcx_links::{self, Hook},
    traffic::{UdpPlan, ping, udp_send},
    wire::{self, Tcpdump},
};

/// Long enough for two phases of traffic and the change between them.
const INTERVAL: u64 = 4;
const UDP_PORT: u16 = 7400;

/// One phase of traffic: UDP from A to B (A's egress; fresh source ports, so each phase has
/// flows of its own) and pings from B to `a_addr` (A's ingress and egress). Returns the UDP
/// source ports.
fn phase(ns: &Namespaces, a_addr: Ipv4Addr, payload: usize, pings: u32) -> Vec<u16> {
    let (a, b) = (&ns.a, &ns.b);
    let to = SocketAddr::new(IpAddr::V4(b.v4), UDP_PORT);
    let ports = udp_send(
        &a.netns,
        &b.netns,
        to,
        UdpPlan {
            flows: 3,
            per_flow: 10,
            payload,
            gap: Duration::from_millis(2),
        },
    );
    if pings > 0 {
        ping(&b.netns, IpAddr::V4(a_addr), pings, 56);
    }
    ports
}

/// `ip <args>` inside `side`'s namespace.
fn ip(side: &Side, args: &[&str]) {
    run(in_netns(&side.netns, "ip").args(args));
}

/// Polls until `name` in `netns` has operstate `up` (carrier back after a link change).
fn wait_until_up(netns: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = in_netns(netns, "cat")
            .arg(format!("/sys/class/net/{name}/operstate"))
            .output()
            .expect("run cat");
        if String::from_utf8_lossy(&out.stdout).trim() == "up" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} in {netns} not up in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until the agent's TCX links are exactly ingress + egress on `ifindex` (or none, for
/// `None`): the inventory applies link events asynchronously.
fn wait_for_links(agent: &Agent, ifindex: Option<u32>) {
    let want: BTreeSet<(u32, Hook)> = ifindex
        .map(|i| [(i, Hook::Ingress), (i, Hook::Egress)].into())
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = tcx_links::of(agent.pid());
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's TCX links are {got:?}, not {want:?}; its log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Packets and bytes per flow.
type Sums = BTreeMap<Tuple, (u64, u64)>;

fn record_sums(records: &[Record]) -> Sums {
    records::totals(records)
        .into_iter()
        .map(|(t, s)| (t, (s.packets, s.bytes)))
        .collect()
}

fn wire_sums(packets: &[wire::WirePacket], far: &Side) -> Sums {
    wire::totals(packets, far)
        .into_iter()
        .map(|(t, (s, _))| (t, (s.packets, s.bytes)))
        .collect()
}

/// Adds `more` into `into`.
fn add(into: &mut Sums, more: Sums) {
    for (t, (p, b)) in more {
        let e = into.entry(t).or_default();
        e.0 += p;
        e.1 += b;
    }
}

/// Stops the agent, reads its records, checks that the traffic's are all of one window and
/// that none is SKIPDATA, and returns them.
fn stop_and_read(agent: &mut Agent) -> Vec<Record> {
    agent.stop();
    let records = records::read_default(&agent.output_dir());
    // `start` and `end` are a flow's first and last packet (in whole seconds): the window is
    // the multiple of the interval they fall in.
    let starts: BTreeSet<u64> = records
        .iter()
        .filter(|r| r.log_status == "OK")
        .flat_map(|r| [r.start / INTERVAL, r.end / INTERVAL])
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "the case did not fit in one window (a change must land mid-window):\n{}",
        records::dump(&records)
    );
    for r in &records {
        assert_ne!(r.log_status, "SKIPDATA", "{}", r.line);
    }
    records
}

fn assert_exact(got: &Sums, want: &Sums, records: &[Record]) {
    assert!(!want.is_empty(), "no traffic on the wire");
    assert_eq!(
        got,
        want,
        "records (left) vs the wire (right); records:\n{}",
        records::dump(records)
    );
}

/// The agent on A's interface (`--iface <name>`) and `--iface` patterns `extra`.
fn named(extra: &[&str]) -> AgentOptions {
    let mut opts = AgentOptions::interval(INTERVAL);
    for p in extra {
        opts = opts.arg("--iface").arg(*p);
    }
    opts
}

/// Starts an agent in A's namespace, a capture on B's end, and waits for a fresh window.
fn start(ns: &Namespaces, opts: AgentOptions) -> (Agent, Tcpdump) {
    // Unpinned: the links are checked through the agent's own descriptors (fdinfo), and a
    // pinned link is held by bpffs, not by a descriptor. tests/tests/restart.rs covers pinning.
    let agent = Agent::start(&ns.a, opts.arg("--no-pin"));
    wait_for_links(&agent, ifindex(&ns.a.netns, &ns.a.iface));
    let tcpdump = Tcpdump::start(&ns.b, agent.work_dir());
    wait_for_window_start(INTERVAL, Duration::from_millis(200));
    (agent, tcpdump)
}

/// A change that keeps the interface covered and alive: every packet on the wire, before and
/// after, is in the records.
fn covered_change(
    subnet: u8,
    opts: AgentOptions,
    change: impl FnOnce(&Namespaces, &Agent) -> Ipv4Addr,
) -> (Namespaces, Vec<Record>) {
    let ns = Namespaces::new(Setup::new(subnet).ipv4_only());
    let (mut agent, tcpdump) = start(&ns, opts);
    phase(&ns, ns.a.v4, 1000, 3);
    let a_addr = change(&ns, &agent);
    // Attached (again) before the second phase.
    wait_for_links(&agent, ns_ifindex_any(&ns.a.netns));
    phase(&ns, a_addr, 1000, 3);
    let records = stop_and_read(&mut agent);
    let wire = tcpdump.stop();
    assert_exact(&record_sums(&records), &wire_sums(&wire, &ns.b), &records);
    (ns, records)
}

/// The ifindex of the one non-loopback interface of `netns`.
fn ns_ifindex_any(netns: &str) -> Option<u32> {
    let out = run(in_netns(netns, "ls").arg("/sys/class/net"));
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|n| *n != "lo")
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 1, "interfaces of {netns}: {names:?}");
    ifindex(netns, &names[0])
}

/// Down and up again under the default selection (every interface that is up): the programs
/// come off while it is down and go back on when it is up; what they counted before is still
/// written.
#[test]
fn link_down_and_up_mid_window_keeps_every_packet() {
    let opts = AgentOptions::interval(INTERVAL).every_interface_up();
    covered_change(81, opts, |ns, agent| {
        ip(&ns.a, &["link", "set", &ns.a.iface, "down"]);
        // The agent saw it down: its programs are off.
        wait_for_links(agent, None);
        ip(&ns.a, &["link", "set", &ns.a.iface, "up"]);
        wait_until_up(&ns.a.netns, &ns.a.iface);
        wait_until_up(&ns.b.netns, &ns.b.iface);
        ns.a.v4
    });
}

#[test]
fn mtu_change_mid_window_keeps_every_packet() {
    covered_change(82, named(&[]), |ns, _| {
        ip(&ns.a, &["link", "set", &ns.a.iface, "mtu", "1280"]);
        ns.a.v4
    });
}

/// Renamed to a name the flow log still covers (`--iface flit*`): the programs stay on the
/// same ifindex and every packet is counted. The window's records carry the name the interface
/// has when the window closes (`interface-id` is the interface's identity, not a wire field).
#[test]
fn rename_within_the_flow_log_keeps_every_packet() {
    let renamed = |ns: &Namespaces| format!("{}r", ns.a.iface);
    let (ns, records) = covered_change(83, named(&["flit*"]), |ns, _| {
        let new = renamed(ns);
        ip(&ns.a, &["link", "set", &ns.a.iface, "down"]);
        ip(&ns.a, &["link", "set", &ns.a.iface, "name", &new]);
        ip(&ns.a, &["link", "set", &new, "up"]);
        wait_until_up(&ns.a.netns, &new);
        wait_until_up(&ns.b.netns, &ns.b.iface);
        ns.a.v4
    });
    for r in records.iter().filter(|r| r.log_status == "OK") {
        assert_eq!(r.interface_id, renamed(&ns), "{}", r.line);
    }
}

/// Renamed to a name no flow log covers: the programs come off at once, and what they counted
/// before the rename is still written. Only the first phase's flows (by UDP source port; the
/// pings run before the rename only) are in the records, exactly as on the wire.
#[test]
fn rename_out_of_the_flow_log_keeps_what_was_counted_and_detaches() {
    let ns = Namespaces::new(Setup::new(84).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let (mut agent, tcpdump) = start(&ns, named(&[]));
    let before = phase(&ns, a.v4, 1000, 3);
    let renamed = format!("zz{}", &a.iface[2..]);
    let idx = ifindex(&a.netns, &a.iface);
    ip(a, &["link", "set", &a.iface, "down"]);
    ip(a, &["link", "set", &a.iface, "name", &renamed]);
    ip(a, &["link", "set", &renamed, "up"]);
    wait_until_up(&a.netns, &renamed);
    wait_until_up(&b.netns, &b.iface);
    assert_eq!(ifindex(&a.netns, &renamed), idx);
    wait_for_links(&agent, None);
    let after = phase(&ns, a.v4, 1000, 0);
    let records = stop_and_read(&mut agent);
    let wire = tcpdump.stop();
    let all = wire_sums(&wire, b);
    let is_udp_of = |t: &Tuple, ports: &[u16]| {
        t.protocol == 17 && (ports.contains(&t.src_port) || ports.contains(&t.dst_port))
    };
    assert!(
        all.keys().any(|t| is_udp_of(t, &after)),
        "the second phase is on the wire"
    );
    let want: Sums = all
        .into_iter()
        .filter(|(t, _)| !is_udp_of(t, &after))
        .collect();
    assert!(want.keys().any(|t| is_udp_of(t, &before)));
    assert_exact(&record_sums(&records), &want, &records);
    for r in records.iter().filter(|r| r.log_status == "OK") {
        assert_eq!(r.interface_id, a.iface, "{}", r.line);
    }
}

/// The address changes mid-window (the old one deleted, a new one added): the kernel sends
/// from the new address from then on. Each packet's flow is recorded with the address the
/// interface had when it crossed it, as on the wire.
#[test]
fn address_change_mid_window_records_each_address_as_on_the_wire() {
    covered_change(85, named(&[]), |ns, _| {
        let new = Ipv4Addr::new(10, 213, 85, 3);
        ip(
            &ns.a,
            &[
                "addr",
                "del",
                &format!("{}/24", ns.a.v4),
                "dev",
                &ns.a.iface,
            ],
        );
        ip(
            &ns.a,
            &["addr", "add", &format!("{new}/24"), "dev", &ns.a.iface],
        );
        new
    });
}

/// Deleted and created again with the same name (a new ifindex): the programs move to the new
/// interface, the old one's packets stay in the window's records, and both incarnations'
/// packets are counted exactly. The pair is re-created on both ends, so each incarnation gets
/// its own capture.
#[test]
fn delete_and_recreate_with_the_same_name_counts_both() {
    let ns = Namespaces::new(Setup::new(86).ipv4_only());
    let (a, b) = (&ns.a, &ns.b);
    let (mut agent, first_capture) = start(&ns, named(&[]));
    let old = ifindex(&a.netns, &a.iface);
    phase(&ns, a.v4, 1000, 3);
    let mut want = wire_sums(&first_capture.stop(), b);
    ip(a, &["link", "del", &a.iface]);
    run(Command::new("ip").args([
        "link", "add", &a.iface, "netns", &a.netns, "type", "veth", "peer", "name", &b.iface,
        "netns", &b.netns,
    ]));
    for s in [a, b] {
        ip(
            s,
            &["addr", "add", &format!("{}/24", s.v4), "dev", &s.iface],
        );
        ip(s, &["link", "set", &s.iface, "up"]);
    }
    wait_until_up(&a.netns, &a.iface);
    wait_until_up(&b.netns, &b.iface);
    let new = ifindex(&a.netns, &a.iface);
    assert_ne!(old, new, "the re-created interface has a new ifindex");
    wait_for_links(&agent, new);
    let second_capture = Tcpdump::start(b, agent.work_dir());
    phase(&ns, a.v4, 1000, 3);
    let records = stop_and_read(&mut agent);
    add(&mut want, wire_sums(&second_capture.stop(), b));
    assert_exact(&record_sums(&records), &want, &records);
}
