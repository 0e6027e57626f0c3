//! Least privilege (issue 15, item 2): the agent runs as `nobody` holding exactly the
//! capabilities README's Security section lists (setpriv sets them as ambient, inheritable and
//! bounding, as systemd's AmbientCapabilities= and CapabilityBoundingSet= do), counts real
//! traffic exactly (against tcpdump), attaches to a veth created after it started, and after
//! attaching holds only what it still needs, on every thread. Started without one of the
//! capabilities it needs to start, it fails with one line naming that capability. Root only;
//! namespaces prefixed `fllp`.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use flowlog_tests::{
    agent::{flowlog_bin, read_log, sigterm_and_wait, wait_for_log_line},
    netns::{Namespaces, Setup, Side, in_netns, run},
    publish::{file_objects, records_of_objects, send_udp_flows},
    records::{Record, Tuple, dump},
    traffic::ping,
    wire::{Tcpdump, totals},
};

/// What the agent needs to start: setpriv's names.
const TO_START: [&str; 3] = ["bpf", "perfmon", "net_admin"];
/// What owner lookup needs besides (README, Security).
const FOR_OWNERS: [&str; 2] = ["sys_ptrace", "dac_read_search"];

/// Capability masks as `/proc/<pid>/status` prints them, written by hand from
/// linux/capability.h: CAP_DAC_READ_SEARCH 2, CAP_NET_ADMIN 12, CAP_SYS_PTRACE 19,
/// CAP_PERFMON 38, CAP_BPF 39.
const NET_ADMIN: &str = "0000000000001000";
const NET_ADMIN_PTRACE_DAC: &str = "0000000000081004";
const START_SET: &str = "000000c000001000";
const START_AND_OWNERS: &str = "000000c000081004";

const NOBODY: u32 = 65534;

/// `flowlog run` as nobody in `side`'s namespace, holding exactly `caps` (setpriv names),
/// watching interfaces that match `pattern`; everything it writes under `dir`.
fn start_as_nobody(side: &Side, dir: &Path, caps: &[&str], pattern: &str) -> Child {
    let list: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let log = fs::File::create(dir.join("agent.log")).expect("agent log");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &side.netns, "setpriv"])
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .arg(format!("--inh-caps=-all{list}"))
        .arg(format!("--ambient-caps=-all{list}"))
        .arg(format!("--bounding-set=-all{list}"))
        .arg(flowlog_bin())
        .args(["run", "--no-imds", "--iface", pattern])
        .args(["--aggregation-interval", "1"])
        .arg("--destination")
        .arg(format!("file:{}", dir.join("out").display()))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .arg("--control-socket")
        .arg(dir.join("run/control.sock"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log fd"))
        .stderr(log);
    // `ip netns exec` and setpriv exec in place: the child's pid is the agent's.
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// A directory nobody may write into.
fn nobody_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: chown on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::chown(path.as_ptr(), NOBODY, NOBODY) }, 0);
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// (CapEff, CapPrm, CapBnd, CapAmb) of every thread of `pid`.
fn thread_caps(pid: u32) -> BTreeMap<String, [String; 4]> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .expect("agent threads")
        .flatten()
        .filter_map(|t| {
            let status = fs::read_to_string(t.path().join("status")).ok()?;
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            Some((
                t.file_name().to_string_lossy().into_owned(),
                [
                    field("CapEff:"),
                    field("CapPrm:"),
                    field("CapBnd:"),
                    field("CapAmb:"),
                ],
            ))
        })
        .collect()
}

/// Asserts every thread of `pid` holds exactly `kept` (effective, permitted, ambient) within
/// the bounding set `bounding`.
fn assert_caps(pid: u32, kept: &str, bounding: &str, log: &str) {
    let caps = thread_caps(pid);
    assert!(!caps.is_empty(), "no threads of {pid}");
    let want = [kept, kept, bounding, kept].map(String::from);
    for (tid, got) in &caps {
        assert_eq!(
            got, &want,
            "thread {tid}: CapEff, CapPrm, CapBnd, CapAmb; log:\n{log}"
        );
    }
}

/// Per tuple (packets, bytes) of the records of interface `iface`.
fn recorded(records: &[Record], iface: &str) -> BTreeMap<Tuple, (u64, u64)> {
    let mut got: BTreeMap<Tuple, (u64, u64)> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.tuple.is_some() && r.field("interface-id") == iface)
    {
        let e = got.entry(r.tuple.expect("tuple")).or_default();
        e.0 += r.packets.expect("packets");
        e.1 += r.bytes.expect("bytes");
    }
    got
}

fn wire(packets: &[flowlog_tests::wire::WirePacket], side: &Side) -> BTreeMap<Tuple, (u64, u64)> {
    totals(packets, side)
        .into_iter()
        .map(|(t, (tot, _))| (t, (tot.packets, tot.bytes)))
        .collect()
}

/// A second veth pair between the namespaces of `ns`, created now (after the agent started),
/// addressed 10.213.183.1/24 (agent's side) and .2.
fn late_pair(ns: &Namespaces) -> (Side, Side) {
    let tag = format!("{:x}", std::process::id());
    let side = |netns: &str, end: char, host: u8| Side {
        netns: netns.to_string(),
        iface: format!("fllp{tag}-l{end}"),
        v4: Ipv4Addr::new(10, 213, 183, host),
        v6: Ipv6Addr::UNSPECIFIED,
    };
    let (a, b) = (side(&ns.a.netns, 'a', 1), side(&ns.b.netns, 'b', 2));
    run(Command::new("ip").args([
        "link", "add", &a.iface, "netns", &a.netns, "type", "veth", "peer", "name", &b.iface,
        "netns", &b.netns,
    ]));
    for s in [&a, &b] {
        run(in_netns(&s.netns, "ip").args([
            "addr",
            "add",
            &format!("{}/24", s.v4),
            "dev",
            &s.iface,
        ]));
        run(in_netns(&s.netns, "ip").args(["link", "set", &s.iface, "up"]));
    }
    (a, b)
}

#[test]
fn as_nobody_with_exactly_its_capabilities_it_counts_exactly_and_keeps_only_what_it_needs() {
    let ns = Namespaces::new(Setup::new(182).ipv4_only().prefix("fllp"));
    let (a, b) = (&ns.a, &ns.b);
    let dir = nobody_dir("fllp-");
    let caps: Vec<&str> = TO_START.iter().chain(FOR_OWNERS.iter()).copied().collect();
    let first = Tcpdump::start(a, dir.path());
    let pattern = format!("fllp{:x}-*", std::process::id());
    let mut child = Some(start_as_nobody(a, dir.path(), &caps, &pattern));
    let pid = child.as_ref().expect("agent").id();
    let log_path = dir.path().join("agent.log");
    wait_for_log_line(
        &mut child,
        &log_path,
        0,
        "capturing",
        Duration::from_secs(30),
    );
    assert_caps(
        pid,
        NET_ADMIN_PTRACE_DAC,
        START_AND_OWNERS,
        &read_log(&log_path),
    );

    send_udp_flows(a, b, 7700, 3, 10, 200);
    ping(&a.netns, IpAddr::V4(b.v4), 3, 56);

    let second_tcpdump_dir = dir.path().join("late");
    fs::create_dir(&second_tcpdump_dir).expect("dir");
    let (la, lb) = late_pair(&ns);
    wait_for_log_line(
        &mut child,
        &log_path,
        0,
        &format!("iface={} ", la.iface),
        Duration::from_secs(10),
    );
    let second = Tcpdump::start(&la, &second_tcpdump_dir);
    send_udp_flows(&la, &lb, 7701, 2, 7, 300);
    ping(&la.netns, IpAddr::V4(lb.v4), 2, 100);
    // Still exactly the same sets after attaching the late interface.
    assert_caps(
        pid,
        NET_ADMIN_PTRACE_DAC,
        START_AND_OWNERS,
        &read_log(&log_path),
    );

    let status = sigterm_and_wait(
        child.take().expect("agent"),
        &log_path,
        Duration::from_secs(30),
    );
    let log = read_log(&log_path);
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(
        !log.contains("owner lookup degraded"),
        "it holds what owner lookup needs; log:\n{log}"
    );
    let records = records_of_objects(&file_objects(&dir.path().join("out")));
    let (first, second) = (first.stop(), second.stop());
    assert_eq!(
        recorded(&records, &a.iface),
        wire(&first, a),
        "records vs tcpdump on {}; records:\n{}",
        a.iface,
        dump(&records)
    );
    let late = recorded(&records, &la.iface);
    assert_eq!(
        late,
        wire(&second, &la),
        "records vs tcpdump on the late {}; records:\n{}",
        la.iface,
        dump(&records)
    );
    // The late interface's traffic is there: 2 UDP flows and one ICMP flow each way.
    assert_eq!(late.len(), 2 + 2, "{late:?}");
}

#[test]
fn without_the_owner_capabilities_it_runs_keeps_net_admin_and_says_once_what_is_degraded() {
    let ns = Namespaces::new(Setup::new(184).ipv4_only().prefix("fllq"));
    let dir = nobody_dir("fllq-");
    let mut child = Some(start_as_nobody(&ns.a, dir.path(), &TO_START, &ns.a.iface));
    let pid = child.as_ref().expect("agent").id();
    let log_path = dir.path().join("agent.log");
    wait_for_log_line(
        &mut child,
        &log_path,
        0,
        "capturing",
        Duration::from_secs(30),
    );
    assert_caps(pid, NET_ADMIN, START_SET, &read_log(&log_path));
    let status = sigterm_and_wait(
        child.take().expect("agent"),
        &log_path,
        Duration::from_secs(30),
    );
    let log = read_log(&log_path);
    assert!(status.success(), "{status}; log:\n{log}");
    let degraded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("owner lookup degraded"))
        .collect();
    assert_eq!(degraded.len(), 1, "log:\n{log}");
    assert!(
        degraded[0].contains("without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
        "{}",
        degraded[0]
    );
}

#[test]
fn missing_one_capability_to_start_gives_one_line_naming_it() {
    let ns = Namespaces::new(Setup::new(185).ipv4_only().prefix("fllr"));
    for missing in TO_START {
        let dir = nobody_dir("fllr-");
        let caps: Vec<&str> = TO_START
            .iter()
            .filter(|c| **c != missing)
            .copied()
            .collect();
        let mut child = start_as_nobody(&ns.a, dir.path(), &caps, &ns.a.iface);
        let status = child.wait().expect("wait for flowlog");
        let log = read_log(&dir.path().join("agent.log"));
        assert!(!status.success(), "started without {missing}; log:\n{log}");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "one line without {missing}; log:\n{log}");
        let name = format!("CAP_{}", missing.to_uppercase());
        assert!(
            lines[0].starts_with(&format!("flowlog: error: flowlog lacks {name} (to ")),
            "{}",
            lines[0]
        );
        for other in TO_START.iter().filter(|c| **c != missing) {
            assert!(
                !lines[0].contains(&format!("lacks CAP_{}", other.to_uppercase())),
                "{}",
                lines[0]
            );
        }
    }
}
