//! The image (`cargo xtask image`) run as deploy/kubernetes/daemonset.yaml says: the test reads
//! the manifest and turns its pod into one `podman run` (host network and PID namespace, the
//! capabilities, seccomp, privilege escalation, read-only root, user, memory limit, every
//! volume with its propagation, the env and the args with `$(VAR)` expanded as the kubelet
//! does), waits for the readiness probe as the kubelet would, and checks that the agent in the
//! container captures host traffic into the host-mounted records directory exactly as tcpdump
//! saw it, and exits 0 on the stop the kubelet sends.
//!
//! Test-specific, and only these: the image is the one just built (the manifest names a
//! registry's); the ConfigMap's flow log is narrowed to the test's interface with 2 s windows
//! (same destination); hostPath volumes of the agent's own directories (`.../flowlog`) are
//! under the test's temporary directory instead of the host's; the node IP is the test link's
//! host address; and AWS_EC2_METADATA_DISABLED=true keeps the agent from asking for instance
//! metadata (with the host's network it would leave the machine). The host end of a veth pair
//! is the "node" interface; all traffic goes to the other end's test namespace.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Deserialize as _;
use serde_json::Value;

use flowlog_tests::{
    agent::{flowlog_bin, require_root},
    deploy::{
        assert_records_equal_wire, capability_mask, read_deploy_file, run_ok, run_xtask,
        status_mask, status_number,
    },
    hostlink::HostLink,
    netns::Family,
    podman::{podman, podman_ok},
    records,
    traffic::{TcpExchange, UdpPlan, ping, tcp_exchanges, udp_send},
    wire::Tcpdump,
};

/// The manifest's documents by kind.
fn manifest() -> BTreeMap<String, Value> {
    let text = read_deploy_file("kubernetes/daemonset.yaml");
    let mut docs = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).expect("daemonset.yaml is YAML");
        let kind = v["kind"].as_str().expect("a kind").to_string();
        assert!(docs.insert(kind.clone(), v).is_none(), "two {kind}s");
    }
    docs
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}"))
}

/// `$(NAME)` references in `arg` replaced from `env`, as the kubelet expands args.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = arg.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    assert!(!out.contains("$("), "unresolved reference in {arg:?}");
    out
}

/// What the test gives the pod that a cluster would.
struct Node<'a> {
    ip: IpAddr,
    /// Where the agent's own hostPath directories go.
    root: &'a Path,
    /// The ConfigMap's files, as the test writes them.
    config_dir: &'a Path,
    image: &'a str,
    name: &'a str,
}

/// The pod spec as `podman run` arguments, and the grace period.
struct PodRun {
    args: Vec<String>,
    grace_seconds: u64,
    /// Host directory of each mount path.
    host_dirs: BTreeMap<String, PathBuf>,
}

fn pod_run(pod: &Value, node: &Node) -> PodRun {
    let containers = list(&pod["containers"]);
    assert_eq!(containers.len(), 1, "one container");
    let c = &containers[0];
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--name".into(),
        node.name.into(),
    ];
    assert_eq!(pod["hostNetwork"], Value::Bool(true));
    args.extend(["--network".into(), "host".into()]);
    assert_eq!(pod["hostPID"], Value::Bool(true));
    args.extend(["--pid".into(), "host".into()]);

    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], Value::Bool(false), "not privileged");
    assert_eq!(
        list(&sc["capabilities"]["drop"])
            .iter()
            .map(s)
            .collect::<Vec<_>>(),
        ["ALL"]
    );
    args.extend(["--cap-drop".into(), "all".into()]);
    for cap in list(&sc["capabilities"]["add"]) {
        args.extend(["--cap-add".into(), format!("CAP_{}", s(cap))]);
    }
    match s(&sc["seccompProfile"]["type"]) {
        "Unconfined" => args.extend(["--security-opt".into(), "seccomp=unconfined".into()]),
        "RuntimeDefault" => {}
        other => panic!("seccompProfile {other} is not known to this test"),
    }
    if sc["allowPrivilegeEscalation"] == Value::Bool(false) {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    if sc["readOnlyRootFilesystem"] == Value::Bool(true) {
        // Kubernetes adds no tmpfs of its own to a read-only root.
        args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    let user = sc["runAsUser"].as_u64().expect("runAsUser");
    args.extend(["--user".into(), format!("{user}:{user}")]);
    if let Some(mem) = c["resources"]["limits"]["memory"].as_str() {
        let podman_mem = mem
            .strip_suffix("Mi")
            .map(|n| format!("{n}m"))
            .or_else(|| mem.strip_suffix("Gi").map(|n| format!("{n}g")))
            .unwrap_or_else(|| panic!("memory limit {mem} is not in Mi or Gi"));
        args.extend(["--memory".into(), podman_mem]);
    }

    // Volumes. Kubernetes refuses Bidirectional propagation on a container that is not
    // privileged (API validation), so the manifest must not use it.
    let volumes: BTreeMap<&str, &Value> = list(&pod["volumes"])
        .iter()
        .map(|v| (s(&v["name"]), v))
        .collect();
    let mut host_dirs = BTreeMap::new();
    for m in list(&c["volumeMounts"]) {
        let path = s(&m["mountPath"]).to_string();
        let vol = volumes[s(&m["name"])];
        let source = if let Some(host) = vol["hostPath"]["path"].as_str() {
            let created = vol["hostPath"]["type"].as_str() == Some("DirectoryOrCreate");
            if host.ends_with("/flowlog") {
                let dir = node.root.join(host.trim_start_matches('/'));
                fs::create_dir_all(&dir).expect("hostPath directory");
                dir
            } else {
                if created {
                    fs::create_dir_all(host).expect("hostPath directory");
                }
                assert!(
                    Path::new(host).is_dir(),
                    "hostPath {host} is not a directory"
                );
                PathBuf::from(host)
            }
        } else if vol["configMap"].is_object() {
            node.config_dir.to_path_buf()
        } else {
            panic!("volume {vol} is neither a hostPath nor a configMap");
        };
        let mut opts = Vec::new();
        if m["readOnly"] == Value::Bool(true) {
            opts.push("ro");
        }
        opts.push(match m["mountPropagation"].as_str() {
            None | Some("None") => "rprivate",
            Some("HostToContainer") => "rslave",
            Some("Bidirectional") => panic!(
                "{path}: Bidirectional mount propagation is available only to privileged containers"
            ),
            Some(other) => panic!("mountPropagation {other}"),
        });
        args.extend([
            "--volume".into(),
            format!("{}:{path}:{}", source.display(), opts.join(",")),
        ]);
        host_dirs.insert(path, source);
    }

    let mut env = BTreeMap::new();
    for e in list(&c["env"]) {
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else {
            assert_eq!(
                s(&e["valueFrom"]["fieldRef"]["fieldPath"]),
                "status.hostIP",
                "env {e}"
            );
            node.ip.to_string()
        };
        env.insert(s(&e["name"]).to_string(), value);
    }
    for (k, v) in &env {
        args.extend(["--env".into(), format!("{k}={v}")]);
    }
    // Not the manifest's: keeps the agent from asking the network for instance metadata.
    args.extend(["--env".into(), "AWS_EC2_METADATA_DISABLED=true".into()]);
    assert!(c["command"].is_null(), "the image's entrypoint runs");
    args.push(node.image.to_string());
    args.extend(list(&c["args"]).iter().map(|a| expand(s(a), &env)));
    PodRun {
        args,
        grace_seconds: pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds"),
        host_dirs,
    }
}

/// An HTTP GET probe's port number (a named port resolves through the container's ports).
fn probe_port(container: &Value, probe: &Value) -> u16 {
    let port = &probe["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = s(port);
    list(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port named {name}")) as u16
}

/// GET http://ip:port/path from the host: the status code, or None when nothing listens yet.
fn http_get(ip: IpAddr, port: u16, path: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut conn =
        std::net::TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(1))
            .ok()?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: {ip}\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// Removes the container and the image even when the test fails.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "--force", &self.container]).output();
        let _ = podman().args(["rmi", "--force", &self.image]).output();
        // The agent pinned its programs and maps into the host's bpffs: detach and free them.
        let _ = std::process::Command::new(flowlog_bin())
            .args(["cleanup", "--pin-dir", "/sys/fs/bpf/flowlog"])
            .output();
    }
}

#[test]
fn image_runs_with_the_daemonsets_settings_and_captures_exactly() {
    let _serial = crate::serial();
    require_root();
    let docs = manifest();
    let ds = &docs["DaemonSet"];
    let pod = &ds["spec"]["template"]["spec"];
    let container = &list(&pod["containers"])[0];
    let config_map = &docs["ConfigMap"];

    let link = HostLink::new(251, "fldi");
    let (host, peer) = (&link.host, &link.peer);
    let dir = tempfile::Builder::new()
        .prefix("fldi-")
        .tempdir()
        .expect("tempdir");
    let pid = std::process::id();
    let cleanup = Cleanup {
        container: format!("flowlog-test-{pid}"),
        image: format!("localhost/flowlog-test:{pid}"),
    };
    let tag = run_xtask(&[
        "image",
        "--binary",
        flowlog_bin().to_str().expect("utf-8 path"),
        "--tag",
        &cleanup.image,
    ]);
    assert_eq!(tag, cleanup.image);

    // The ConfigMap's flow logs file, narrowed to the test's interface and 2 s windows.
    let config_dir = dir.path().join("configmap");
    fs::create_dir(&config_dir).expect("configmap dir");
    let (key, text) = config_map["data"]
        .as_object()
        .and_then(|d| d.iter().next())
        .expect("one ConfigMap entry");
    let mut flow_logs: Value = serde_json::from_str(s(text)).expect("the ConfigMap's JSON");
    let entries = flow_logs.as_array_mut().expect("a list");
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0]["ResourceType"] = "NetworkInterface".into();
    entries[0]["ResourceIds"] = serde_json::json!([host.iface]);
    entries[0]["MaxAggregationInterval"] = 2.into();
    let destination = s(&entries[0]["LogDestination"]).to_string();
    fs::write(config_dir.join(key), flow_logs.to_string()).expect("flow logs file");

    let node = Node {
        ip: IpAddr::V4(host.v4),
        root: &dir.path().join("node"),
        config_dir: &config_dir,
        image: &cleanup.image,
        name: &cleanup.container,
    };
    let run = pod_run(pod, &node);
    assert!(
        run.args.iter().any(|a| a
            == &format!("--flow-logs={}/{key}", {
                let m = list(&container["volumeMounts"])
                    .iter()
                    .find(|m| m["name"].as_str() == Some("config"))
                    .expect("config mount");
                s(&m["mountPath"]).to_string()
            })),
        "the args read the ConfigMap's file: {:?}",
        run.args
    );
    podman_ok(&run.args.iter().map(String::as_str).collect::<Vec<_>>());
    let logs = || {
        let out = podman()
            .args(["logs", &cleanup.container])
            .output()
            .expect("podman logs");
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
    };

    // The kubelet's probes, on the pod's IP (the node's, with the host network).
    let ready = probe_port(container, &container["readinessProbe"]);
    let live = probe_port(container, &container["livenessProbe"]);
    let ready_path = s(&container["readinessProbe"]["httpGet"]["path"]);
    let live_path = s(&container["livenessProbe"]["httpGet"]["path"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(node.ip, ready, ready_path) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "not ready within 30 s; container log:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(node.ip, live, live_path), Some(200));

    // The agent holds exactly the manifest's capabilities, no more privileges, no seccomp.
    let agent_pid: u32 = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &cleanup.container])
        .parse()
        .expect("container pid");
    let caps: Vec<String> = list(&container["securityContext"]["capabilities"]["add"])
        .iter()
        .map(|c| s(c).to_string())
        .collect();
    // Once attached it holds only what attaching later interfaces and naming owners need.
    let kept = capability_mask(&["NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"].map(String::from));
    for field in ["CapEff", "CapPrm"] {
        assert_eq!(status_mask(agent_pid, field), kept, "{field}");
    }
    assert_eq!(
        status_mask(agent_pid, "CapBnd"),
        capability_mask(&caps),
        "CapBnd"
    );
    assert_eq!(status_number(agent_pid, "NoNewPrivs"), 1);
    assert_eq!(status_number(agent_pid, "Seccomp"), 0);

    // Host traffic to the test namespace, on the host end the agent watches.
    let capture = Tcpdump::start(host, dir.path());
    let p4 = peer.addr(Family::V4);
    tcp_exchanges(
        &peer.netns,
        &host.netns,
        SocketAddr::new(p4, 8080),
        &[
            TcpExchange {
                request: 3_000,
                response: 12_000,
            },
            TcpExchange {
                request: 500,
                response: 100,
            },
        ],
    );
    udp_send(
        &host.netns,
        &peer.netns,
        SocketAddr::new(p4, 5001),
        UdpPlan {
            flows: 2,
            per_flow: 4,
            payload: 300,
            gap: Duration::ZERO,
        },
    );
    ping(&host.netns, p4, 3, 56);
    let wire = capture.stop();

    // The kubelet's stop: SIGTERM, then the grace period.
    run_ok(podman().args([
        "stop",
        "--time",
        &run.grace_seconds.to_string(),
        &cleanup.container,
    ]));
    let exit = podman_ok(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &cleanup.container,
    ]);
    assert_eq!(exit, "0", "container log:\n{}", logs());
    // --log-output=json in the args: every line the agent wrote is a JSON object.
    let log = logs();
    for line in log.lines() {
        assert!(
            serde_json::from_str::<serde_json::Map<String, Value>>(line).is_ok(),
            "not a JSON log line: {line:?}"
        );
    }
    assert!(log.contains("\"message\":\"capturing\""), "{log}");

    let records_dir = &run.host_dirs[&destination];
    let got = records::read_default(records_dir);
    assert_records_equal_wire(&got, &wire, host);
    assert!(
        got.iter().all(|r| r.interface_id == host.iface),
        "{}",
        records::dump(&got)
    );
    // The state directory (spools) lives on the host mount.
    assert!(run.host_dirs["/var/lib/flowlog"].join("spool").is_dir());
    drop(cleanup);
}
