//! deploy/systemd against the agent: the default flow logs file and flags are what the agent
//! accepts, the unit's directories are the agent's defaults, and the unit's user and
//! capabilities are enough. The last runs the real agent as an unprivileged user holding
//! exactly the unit's capabilities (setpriv does what systemd would: this machine has no
//! systemd as PID 1), with a notify socket as systemd gives one: READY=1 must come once the
//! interface is attached (traffic sent right after it is counted exactly, against tcpdump) and
//! STOPPING=1 on SIGTERM. (`systemd-analyze verify` runs in deb.rs, on the installed
//! unit.)

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser as _;
use flowlog_agent::{
    cli::{Cli, Command as AgentCommand, DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR},
    flowlogs::{
        file,
        spec::{Resource, ResourceType},
    },
    publish::{DestinationSpec, writer_lock::DEFAULT_RUNTIME_DIR},
};
use flowlog_tests::{
    agent::{flowlog_bin, read_log, sigterm_and_wait},
    deploy::{
        assert_records_equal_wire, capability_mask, read_deploy_file, status_mask, status_number,
        unit_value, unit_values,
    },
    netns::{Family, Namespaces, Offloads, Setup},
    records,
    traffic::{TcpExchange, UdpPlan, ping, tcp_exchanges, udp_send},
    wire::Tcpdump,
};

/// The unprivileged user the agent runs as here (the unit's `flowlog` user does not exist on
/// the test host; any user without capabilities of its own shows the same).
const NOBODY: u32 = 65534;

/// The `ExecStart=` words with `$FLOWLOG_ARGS` replaced by the default file's value, as
/// systemd splits them.
fn exec_start_with_default_flags() -> Vec<String> {
    let unit = read_deploy_file("systemd/flowlog.service");
    let defaults = read_deploy_file("systemd/flowlog.default");
    let flags = unit_value(&defaults, "FLOWLOG_ARGS");
    let flags = flags.trim_matches('"');
    unit_value(&unit, "ExecStart")
        .split_whitespace()
        .flat_map(|w| {
            if w == "$FLOWLOG_ARGS" {
                flags.split_whitespace().map(str::to_string).collect()
            } else {
                vec![w.to_string()]
            }
        })
        .collect()
}

#[test]
fn default_configuration_is_what_the_agent_accepts() {
    let _serial = crate::serial();
    // The command line the unit runs, with the default flags, parses.
    let argv = exec_start_with_default_flags();
    assert_eq!(argv[0], "/usr/bin/flowlog");
    let cli = Cli::try_parse_from(argv.iter().map(|a| a.replace("/usr/bin/", "")))
        .unwrap_or_else(|e| panic!("the unit's command line {argv:?} does not parse: {e}"));
    let AgentCommand::Run(args) = cli.command else {
        panic!("the unit does not run `flowlog run`: {argv:?}");
    };
    let flow_logs = args
        .definitions
        .flow_logs
        .clone()
        .expect("the unit names a --flow-logs file");
    assert_eq!(flow_logs, Path::new("/etc/flowlog/flow-logs.json"));

    // The default file (installed as that path) holds one flow log: every interface, files
    // under /var/log/flowlog, one-minute windows.
    let specs = file::load(
        &flowlog_tests::deploy::deploy_file("systemd/flow-logs.json"),
        chrono::Utc::now(),
    )
    .expect("deploy/systemd/flow-logs.json loads");
    assert_eq!(specs.len(), 1, "{specs:?}");
    let spec = &specs[0];
    assert_eq!(spec.resource_type, ResourceType::Vpc);
    assert!(
        matches!(spec.resource, Resource::AnyVpc),
        "{:?}",
        spec.resource
    );
    assert_eq!(spec.max_aggregation_interval, 60);
    let DestinationSpec::File(dir) = &spec.destination else {
        panic!("not a file destination: {:?}", spec.destination);
    };

    // The unit's directories are where the agent writes by default: records under
    // LogsDirectory, state under StateDirectory, socket and locks under RuntimeDirectory.
    let unit = read_deploy_file("systemd/flowlog.service");
    assert_eq!(
        dir,
        &Path::new("/var/log").join(unit_value(&unit, "LogsDirectory"))
    );
    assert_eq!(
        Path::new(DEFAULT_STATE_DIR),
        Path::new("/var/lib").join(unit_value(&unit, "StateDirectory"))
    );
    let runtime = Path::new("/run").join(unit_value(&unit, "RuntimeDirectory"));
    assert_eq!(Path::new(DEFAULT_RUNTIME_DIR), runtime);
    assert_eq!(
        Path::new(DEFAULT_CONTROL_SOCKET).parent(),
        Some(runtime.as_path())
    );
    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert_eq!(unit_value(&unit, "ProtectSystem"), "strict");
    assert_eq!(unit_value(&unit, "ReadWritePaths"), "/sys/fs/bpf");
}

/// The unit's capability names, lower case without `CAP_`, for setpriv.
fn setpriv_caps(names: &[String]) -> String {
    let mut s = String::from("-all");
    for n in names {
        s.push_str(",+");
        s.push_str(&n.trim_start_matches("CAP_").to_lowercase());
    }
    s
}

/// Waits for a datagram on the notify socket with the line `needle`; returns the message.
/// Panics with the agent's log if it exits first (`agent`) or the deadline passes.
fn wait_for_notify(
    socket: &UnixDatagram,
    needle: &str,
    timeout: Duration,
    mut agent: Option<&mut std::process::Child>,
    log: &Path,
) -> String {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {needle:?} on the notify socket within {timeout:?}; agent log:\n{}",
            read_log(log)
        );
        if let Some(status) = agent.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!(
                "the agent exited ({status}) before {needle:?}; its log:\n{}",
                read_log(log)
            );
        }
        socket
            .set_read_timeout(Some(
                left.clamp(Duration::from_millis(10), Duration::from_millis(50)),
            ))
            .expect("timeout");
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == needle) {
                return msg;
            }
        }
    }
}

#[test]
fn unit_user_and_capabilities_suffice_and_ready_means_attached() {
    let _serial = crate::serial();
    let unit = read_deploy_file("systemd/flowlog.service");
    let bounding: Vec<String> = unit_value(&unit, "CapabilityBoundingSet")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let ambient: Vec<String> = unit_value(&unit, "AmbientCapabilities")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(bounding, ambient, "the unit grants what it bounds");
    assert_ne!(
        unit_value(&unit, "User"),
        "root",
        "the unit runs as its own user"
    );
    assert_eq!(unit_values(&unit, "NoNewPrivileges"), ["yes"]);

    let ns = Namespaces::new(
        Setup::new(231)
            .offloads(Offloads::Off)
            .ipv4_only()
            .prefix("flsd"),
    );
    let (a, b) = (&ns.a, &ns.b);
    let dir = tempfile::Builder::new()
        .prefix("flsd-")
        .tempdir()
        .expect("tempdir");
    // The unit's StateDirectory, RuntimeDirectory and LogsDirectory, owned by its user.
    for d in ["state", "run", "log"] {
        let p = dir.path().join(d);
        fs::create_dir(&p).expect("dir");
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let flow_logs = dir.path().join("flow-logs.json");
    fs::write(
        &flow_logs,
        serde_json::json!([{
            "ResourceType": "NetworkInterface",
            "ResourceIds": [a.iface],
            "TrafficType": "ALL",
            "LogDestinationType": "file",
            "LogDestination": dir.path().join("log"),
            "MaxAggregationInterval": 2,
        }])
        .to_string(),
    )
    .expect("flow logs file");
    let notify = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).expect("notify socket");
    fs::set_permissions(&notify, fs::Permissions::from_mode(0o777)).expect("chmod socket");

    let log_path = dir.path().join("agent.log");
    let log = fs::File::create(&log_path).expect("log");
    let caps = setpriv_caps(&bounding);
    let child = Command::new("ip")
        .args(["netns", "exec", &a.netns, "setpriv"])
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(format!("--bounding-set={caps}"))
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg("--no-new-privs")
        .arg("--")
        .arg(flowlog_bin())
        .arg("run")
        .arg("--flow-logs")
        .arg(&flow_logs)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .arg("--control-socket")
        .arg(dir.path().join("run/control.sock"))
        .env("NOTIFY_SOCKET", &notify)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("start the agent through setpriv");
    let pid = child.id();
    let mut child = Some(child);

    let ready = wait_for_notify(
        &socket,
        "READY=1",
        Duration::from_secs(30),
        child.as_mut(),
        &log_path,
    );
    assert!(ready.contains("STATUS=capturing on 1 interface"), "{ready}");
    // Attached by now: tcpdump and traffic start only after READY, and all of it is counted.
    let capture = Tcpdump::start(a, dir.path());
    let at = |ip: IpAddr, port| SocketAddr::new(ip, port);
    let a4 = a.addr(Family::V4);
    tcp_exchanges(
        &a.netns,
        &b.netns,
        at(a4, 8080),
        &[TcpExchange {
            request: 4_000,
            response: 2_000,
        }],
    );
    udp_send(
        &b.netns,
        &a.netns,
        at(a4, 5001),
        UdpPlan {
            flows: 2,
            per_flow: 3,
            payload: 200,
            gap: Duration::ZERO,
        },
    );
    ping(&b.netns, a4, 3, 56);

    // The agent runs as the unprivileged user within the unit's capabilities; once attached
    // it holds only what attaching later interfaces and naming owners need (README, Security).
    let kept = capability_mask(
        &["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"].map(String::from),
    );
    for field in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(status_mask(pid, field), kept, "{field} of the agent");
    }
    assert_eq!(
        status_mask(pid, "CapBnd"),
        capability_mask(&bounding),
        "CapBnd of the agent"
    );
    assert_eq!(status_number(pid, "NoNewPrivs"), 1);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status.lines().any(|l| l.starts_with("Uid:")
            && l.split_whitespace()
                .skip(1)
                .all(|u| u == NOBODY.to_string())),
        "{status}"
    );

    let wire = capture.stop();
    let agent = child.take().expect("agent");
    // SIGTERM: STOPPING=1, the partial window flushed, exit 0.
    let exit = sigterm_and_wait(agent, &log_path, Duration::from_secs(30));
    wait_for_notify(
        &socket,
        "STOPPING=1",
        Duration::from_secs(5),
        None,
        &log_path,
    );
    assert!(exit.success(), "exit {exit}:\n{}", read_log(&log_path));
    let log_text = read_log(&log_path);
    assert!(
        !log_text.contains("WARN") && !log_text.contains("ERROR"),
        "the agent warned with the unit's capabilities:\n{log_text}"
    );
    let got = records::read_default(&dir.path().join("log"));
    assert_records_equal_wire(&got, &wire, a);
}
