//! Owners of guest interfaces (`inventory::owners::find`) against real guests: podman
//! containers and pods on podman networks, a veth into a plain namespace, a tap and a macvtap
//! held by a VMM-like process, and an ECS agent introspection API served by the test.
//!
//! Expected values come from podman (`podman run`'s id, the names given, `podman pod
//! inspect`), from `ip` inside the guest's namespace, from the ECS documentation's JSON, and
//! from the test's own processes: never from the code under test. Root only. Podman networks
//! use 10.214.x.0/24 with x = 1..=9 here.

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, TcpListener, TcpStream},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
};

use flowlog_agent::inventory::owners::{
    self, Container, EcsTask, HostLink, Owner, OwnerKind, OwnerOptions, Process, Runtime, Vm,
};
use flowlog_tests::{
    agent::require_root,
    netns::run,
    podman::{self, Network, Pod, RunOptions},
};

fn options() -> OwnerOptions {
    OwnerOptions::default()
}

fn find(ifindex: u32, name: &str, kind: Option<&str>, opts: &OwnerOptions) -> Option<Owner> {
    let link = HostLink {
        ifindex,
        name,
        kind,
        link_netnsid: None,
        peer_ifindex: None,
    };
    owners::find(&link, opts).unwrap_or_else(|e| panic!("owners::find({name}): {e:#}"))
}

/// The addresses `ip` shows on `ifname` inside the namespace of `pid`, IPv4 first then IPv6,
/// global before link-local (the order `Owner::guest_addrs` documents).
fn addrs_in(pid: u32, ifname: &str) -> Vec<IpAddr> {
    let out = run(Command::new("nsenter").args([
        "-t",
        &pid.to_string(),
        "-n",
        "ip",
        "-o",
        "addr",
        "show",
        "dev",
        ifname,
    ]));
    addrs_of_ip_output(&String::from_utf8_lossy(&out.stdout))
}

fn addrs_of_ip_output(text: &str) -> Vec<IpAddr> {
    // "2: eth0    inet 10.214.1.2/24 brd ... scope global eth0\..."
    let mut addrs: Vec<(u8, bool, IpAddr)> = text
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let family = words.get(2)?;
            let addr: IpAddr = words.get(3)?.split('/').next()?.parse().ok()?;
            let scope = words.iter().position(|w| *w == "scope")?;
            let global = words.get(scope + 1) == Some(&"global");
            Some((if *family == "inet" { 4 } else { 6 }, !global, addr))
        })
        .collect();
    addrs.sort_by_key(|&(family, not_global, _)| (family, not_global));
    addrs.into_iter().map(|(_, _, a)| a).collect()
}

/// The nsid of the peer namespace and the `@ifN` peer index of a host veth, as `ip` shows
/// them (`link-netnsid N`, or `link-netns NAME` for a named namespace, whose nsid
/// `ip netns list-id` gives).
fn ip_link_netnsid_and_peer(name: &str) -> (i32, u32) {
    let out = run(Command::new("ip").args(["-o", "-d", "link", "show", name]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1).copied())
    };
    let nsid = match (after("link-netnsid"), after("link-netns")) {
        (Some(id), _) => id.parse().expect("numeric link-netnsid"),
        (None, Some(ns)) => {
            let ids = run(Command::new("ip").args(["netns", "list-id"]));
            let ids = String::from_utf8_lossy(&ids.stdout).to_string();
            // "nsid 2 (iproute2 netns name: netns-75938e65-...)"
            ids.lines()
                .find(|l| l.trim_end().ends_with(&format!("name: {ns})")))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or_else(|| panic!("no nsid for {ns} in {ids:?}"))
        }
        (None, None) => panic!("no link-netnsid or link-netns in {text:?}"),
    };
    let peer = words
        .get(1)
        .and_then(|n| n.trim_end_matches(':').split_once("@if"))
        .and_then(|(_, i)| i.parse().ok())
        .unwrap_or_else(|| panic!("no @ifN in {text:?}"));
    (nsid, peer)
}

fn podman_container(id: &str, name: &str, pod_uid: Option<&str>) -> Container {
    Container {
        id: id.to_string(),
        runtime: Runtime::Podman,
        name: Some(name.to_string()),
        pod_uid: pod_uid.map(str::to_string),
        pod_name: None,
        pod_namespace: None,
    }
}

/// One container on a podman network: its host veth's owner is exactly podman's id and the
/// name it was given, the guest side is `eth0` with the addresses `ip` shows in the container,
/// whether or not the caller passes the link's netnsid and peer index.
#[test]
fn podman_container_behind_its_veth() {
    require_root();
    let net = Network::new(1);
    let name = podman::unique_name("flitweb");
    let c = podman::Container::run(RunOptions {
        name: Some(name.clone()),
        network: Some(&net.name),
        ..RunOptions::default()
    });
    let (ifindex, host_name) = c.host_veth();
    // The addresses as the container itself lists them (busybox `ip` run by `podman exec`).
    let shown = c.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    let addrs = addrs_of_ip_output(&String::from_utf8_lossy(&shown.stdout));
    let podman_ip = c.ipv4();
    assert_eq!(
        podman_ip.octets()[..3],
        [10, 214, 1],
        "podman's address on the network"
    );
    assert_eq!(addrs.first(), Some(&IpAddr::V4(podman_ip)), "{addrs:?}");
    let expected = Owner {
        kind: OwnerKind::Containers(vec![Container {
            id: c.id.clone(),
            runtime: Runtime::Podman,
            name: Some(name),
            pod_uid: None,
            pod_name: None,
            pod_namespace: None,
        }]),
        guest_ifname: Some("eth0".into()),
        guest_addrs: addrs,
        ecs: None,
    };
    assert_eq!(
        find(ifindex, &host_name, Some("veth"), &options()).as_ref(),
        Some(&expected)
    );
    // As the inventory calls it: kind, netnsid and peer index from the link message.
    let (nsid, peer) = ip_link_netnsid_and_peer(&host_name);
    let link = HostLink {
        ifindex,
        name: &host_name,
        kind: Some("veth"),
        link_netnsid: Some(nsid),
        peer_ifindex: Some(peer),
    };
    assert_eq!(
        owners::find(&link, &options()).unwrap(),
        Some(expected.clone())
    );
    // Without the kind: read from the link.
    assert_eq!(find(ifindex, &host_name, None, &options()), Some(expected));
}

/// A podman pod of two containers: the owner lists both, oldest first, and the infra
/// container last; all carry the pod's id as pod UID (from `/libpod_parent/<pod id>/...`).
#[test]
fn podman_pod_lists_its_containers_infra_last() {
    require_root();
    let net = Network::new(2);
    let pod = Pod::new(Some(&net.name));
    let first = pod.run(Some(podman::unique_name("flitapp")));
    let second = pod.run(Some(podman::unique_name("flitside")));
    let infra_id = pod.infra_id();
    let (ifindex, host_name) = first.host_veth();
    let owner = find(ifindex, &host_name, Some("veth"), &options()).expect("an owner");
    let expected = vec![
        podman_container(&first.id, &first.name, Some(&pod.id)),
        podman_container(&second.id, &second.name, Some(&pod.id)),
        podman_container(&infra_id, &pod.infra_name, Some(&pod.id)),
    ];
    assert_eq!(owner.kind, OwnerKind::Containers(expected));
    assert_eq!(owner.guest_ifname.as_deref(), Some("eth0"));
    assert_eq!(owner.guest_addrs, addrs_in(first.pid(), "eth0"));
}

/// The documented answer of `GET /v1/tasks?dockerid=...` (Amazon ECS Developer Guide,
/// "Amazon ECS container introspection"), with the two containers' ids put in.
fn documented_task(first: &str, second: &str) -> String {
    format!(
        r#"{{
    "Arn": "arn:aws:ecs:us-west-2:012345678910:task/default/e01d58a8-151b-40e8-bc01-22647b9ecfec",
    "Containers": [
        {{
            "DockerId": "{first}",
            "DockerName": "ecs-nginx-efs-2-nginx-9ac0808dd0afa495f001",
            "Name": "nginx"
        }},
        {{
            "DockerId": "{second}",
            "DockerName": "ecs-nginx-efs-2-sidecar-e8bfddf9b488dff36c00",
            "Name": "sidecar"
        }}
    ],
    "DesiredStatus": "RUNNING",
    "Family": "nginx-efs",
    "KnownStatus": "RUNNING",
    "Version": "2"
}}"#
    )
}

/// The documented answer of `GET /v1/metadata`, placeholders filled in.
const DOCUMENTED_METADATA: &str = r#"{
    "Cluster": "default",
    "ContainerInstanceArn": "arn:aws:ecs:us-west-2:012345678910:container-instance/default/f9cc75bb-0c94-46b9-bf6d-49d320bc1551",
    "Version": "Amazon ECS Agent - v1.30.0 (02ff320c)"
}"#;

/// An HTTP server speaking the ECS agent's introspection API for one task: 200 with the
/// documented JSON, 404 for containers not in it (as the agent does). Records request paths.
struct FakeEcsAgent {
    url: String,
    paths: Arc<Mutex<Vec<String>>>,
}

impl FakeEcsAgent {
    fn start(task: String, task_containers: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                serve_one(conn, &task, &task_containers, &seen);
            }
        });
        FakeEcsAgent { url, paths }
    }
}

fn serve_one(mut conn: TcpStream, task: &str, containers: &[String], seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
    seen.lock().unwrap().push(path.clone());
    let (status, body) = if path == "/v1/metadata" {
        ("200 OK", DOCUMENTED_METADATA.to_string())
    } else if let Some(id) = path.strip_prefix("/v1/tasks?dockerid=") {
        if containers.iter().any(|c| c == id) {
            ("200 OK", task.to_string())
        } else {
            ("404 Not Found", "{}".to_string())
        }
    } else {
        ("404 Not Found", "{}".to_string())
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// With the ECS agent answering, the owner carries the task (ARN, id, family, version,
/// cluster, container instance, all as documented) and the containers come in the task's
/// order, the infra container (not in the task) last.
#[test]
fn ecs_introspection_fills_the_task() {
    require_root();
    let net = Network::new(3);
    let pod = Pod::new(Some(&net.name));
    let older = pod.run(Some(podman::unique_name("flitold")));
    let newer = pod.run(Some(podman::unique_name("flitnew")));
    // The task lists the newer container first: the task's order wins over start times.
    let ecs = FakeEcsAgent::start(
        documented_task(&newer.id, &older.id),
        vec![newer.id.clone(), older.id.clone()],
    );
    let (ifindex, host_name) = older.host_veth();
    let opts = OwnerOptions {
        ecs_endpoint: Some(ecs.url.clone()),
        ..options()
    };
    let owner = find(ifindex, &host_name, Some("veth"), &opts).expect("an owner");
    let ids: Vec<&str> = owner.containers().iter().map(|c| c.id.as_str()).collect();
    let infra = pod.infra_id();
    assert_eq!(ids, [newer.id.as_str(), older.id.as_str(), infra.as_str()]);
    let task = owner.ecs.expect("the ECS task");
    assert_eq!(
        task,
        EcsTask {
            task_arn:
                "arn:aws:ecs:us-west-2:012345678910:task/default/e01d58a8-151b-40e8-bc01-22647b9ecfec"
                    .into(),
            family: "nginx-efs".into(),
            version: "2".into(),
            cluster: "default".into(),
            container_instance_arn: Some(
                "arn:aws:ecs:us-west-2:012345678910:container-instance/default/f9cc75bb-0c94-46b9-bf6d-49d320bc1551"
                    .into()
            ),
            task_id: "e01d58a8-151b-40e8-bc01-22647b9ecfec".into(),
            container_ids: vec![newer.id.clone(), older.id.clone()],
        }
    );
    assert_eq!(
        task.cluster_arn().as_deref(),
        Some("arn:aws:ecs:us-west-2:012345678910:cluster/default")
    );
    assert_eq!(
        task.task_definition_arn().as_deref(),
        Some("arn:aws:ecs:us-west-2:012345678910:task-definition/nginx-efs:2")
    );
    assert_eq!(
        task.container_instance_id(),
        Some("f9cc75bb-0c94-46b9-bf6d-49d320bc1551")
    );
    // The first container in start order was asked first (it is older), and answered.
    let paths = ecs.paths.lock().unwrap().clone();
    assert_eq!(
        paths,
        [
            "/v1/metadata".to_string(),
            format!("/v1/tasks?dockerid={}", older.id)
        ]
    );

    // An agent that does not know the containers: no task, same containers in start order.
    let stranger = FakeEcsAgent::start(documented_task(&"0".repeat(64), &"1".repeat(64)), vec![]);
    let opts = OwnerOptions {
        ecs_endpoint: Some(stranger.url.clone()),
        ..options()
    };
    let owner = find(ifindex, &host_name, Some("veth"), &opts).expect("an owner");
    assert_eq!(owner.ecs, None);
    let ids: Vec<&str> = owner.containers().iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [older.id.as_str(), newer.id.as_str(), infra.as_str()]);
}

/// A host interface created by this test and deleted on drop.
struct HostLinkGuard(String);

impl Drop for HostLinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ifindex_of(name: &str) -> u32 {
    let out = run(Command::new("ip").args(["-o", "link", "show", name]));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {text:?}"))
}

/// A veth whose peer is in a namespace with no process: the guest side is read (name and
/// addresses) but there are no containers. A veth pair with both ends on the host has no
/// owner.
#[test]
fn veth_into_a_plain_namespace_and_a_host_only_pair() {
    require_root();
    let tag = std::process::id() % 100_000;
    let ns = NetnsGuard(format!("flitown-{tag}"));
    run(Command::new("ip").args(["netns", "add", &ns.0]));
    let host = HostLinkGuard(format!("flo{tag}h"));
    run(Command::new("ip").args([
        "link", "add", &host.0, "type", "veth", "peer", "name", "guest7", "netns", &ns.0,
    ]));
    let in_ns = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["-n", &ns.0]).args(args);
        run(&mut c);
    };
    in_ns(&["link", "set", "guest7", "addrgenmode", "none"]);
    in_ns(&["addr", "add", "10.214.4.2/24", "dev", "guest7"]);
    in_ns(&["addr", "add", "10.214.5.2/24", "dev", "guest7"]);
    in_ns(&[
        "-6",
        "addr",
        "add",
        "fd00:214:4::2/64",
        "dev",
        "guest7",
        "nodad",
    ]);
    in_ns(&["link", "set", "guest7", "up"]);
    let owner = find(ifindex_of(&host.0), &host.0, Some("veth"), &options());
    assert_eq!(
        owner,
        Some(Owner {
            kind: OwnerKind::Unknown,
            guest_ifname: Some("guest7".into()),
            guest_addrs: vec![
                "10.214.4.2".parse().unwrap(),
                "10.214.5.2".parse().unwrap(),
                "fd00:214:4::2".parse().unwrap(),
            ],
            ecs: None,
        })
    );

    let pair = HostLinkGuard(format!("flo{tag}a"));
    run(Command::new("ip").args([
        "link",
        "add",
        &pair.0,
        "type",
        "veth",
        "peer",
        "name",
        &format!("flo{tag}b"),
    ]));
    assert_eq!(
        find(ifindex_of(&pair.0), &pair.0, Some("veth"), &options()),
        None
    );
}

/// The VMM-like helper holding a device, killed on drop.
struct FakeVmm {
    child: Child,
    _stdin: ChildStdin,
}

impl FakeVmm {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowlog-test-vmm"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flowlog-test-vmm");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read ready");
        assert_eq!(line.trim(), "ready", "flowlog-test-vmm did not start");
        FakeVmm {
            child,
            _stdin: stdin,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for FakeVmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const UUID: &str = "6c1f3b2a-0d4e-4f5a-9b8c-7d6e5f4a3b2c";

/// A tap held through `/dev/net/tun` by a process whose command line names a VM the qemu way:
/// the owner is that VM (name, UUID, pid, executable). The same tap held by a process that
/// names no VM is a plain process, not a guest. A tap nobody holds has no owner.
#[test]
fn tap_held_by_a_vmm_like_process() {
    require_root();
    let tap = format!("flotap{}", std::process::id() % 100_000);
    let vmm = FakeVmm::start(&[
        "--tap",
        &tap,
        "-name",
        "guest=test-vm,debug-threads=on",
        "-uuid",
        UUID,
    ]);
    let ifindex = ifindex_of(&tap);
    let expected = Owner {
        kind: OwnerKind::Vm(Vm {
            name: Some("test-vm".into()),
            uuid: Some(UUID.into()),
            pid: vmm.pid(),
            vmm: "flowlog-test-vmm".into(),
        }),
        ..Owner::default()
    };
    assert_eq!(
        find(ifindex, &tap, Some("tun"), &options()),
        Some(expected.clone())
    );
    assert_eq!(find(ifindex, &tap, None, &options()), Some(expected));
    drop(vmm);
    // A tap without IFF_PERSIST goes away with its last holder.

    let plain = FakeVmm::start(&["--tap", &tap]);
    let owner = find(ifindex_of(&tap), &tap, Some("tun"), &options()).expect("an owner");
    assert_eq!(
        owner.kind,
        OwnerKind::Process(Process {
            pid: plain.pid(),
            // TASK_COMM_LEN: 15 characters of the executable's name.
            comm: "flowlog-test-vm".into(),
        })
    );
    assert!(!owner.is_guest());
    drop(plain);

    let persist = HostLinkGuard(format!("flopt{}", std::process::id() % 100_000));
    run(Command::new("ip").args(["tuntap", "add", "dev", &persist.0, "mode", "tap"]));
    assert_eq!(
        find(ifindex_of(&persist.0), &persist.0, Some("tun"), &options()),
        None
    );
}

/// A macvtap's character device opened by a VMM-like process (through a device node the test
/// makes, as no udev runs here): the owner is that VM.
#[test]
fn macvtap_held_through_its_character_device() {
    require_root();
    let tag = std::process::id() % 100_000;
    // The lower device: one end of a veth pair (this kernel has no dummy driver).
    let lower = HostLinkGuard(format!("flolw{tag}"));
    run(Command::new("ip").args([
        "link",
        "add",
        &lower.0,
        "type",
        "veth",
        "peer",
        "name",
        &format!("flolp{tag}"),
    ]));
    let mvt = format!("flomv{tag}");
    run(Command::new("ip").args([
        "link", "add", "link", &lower.0, "name", &mvt, "type", "macvtap", "mode", "bridge",
    ]));
    let ifindex = ifindex_of(&mvt);
    let dev = std::fs::read_to_string(format!("/sys/class/net/{mvt}/macvtap/tap{ifindex}/dev"))
        .expect("macvtap dev in sysfs");
    let (major, minor) = dev.trim().split_once(':').expect("major:minor");
    let dir = tempfile::tempdir().expect("temp dir");
    let node = dir.path().join(format!("tap{ifindex}"));
    run(Command::new("mknod").arg(&node).args(["c", major, minor]));
    let vmm = FakeVmm::start(&["--char-dev", &node.to_string_lossy(), "-name", "mvt-vm"]);
    let owner = find(ifindex, &mvt, Some("macvtap"), &options());
    assert_eq!(
        owner,
        Some(Owner {
            kind: OwnerKind::Vm(Vm {
                name: Some("mvt-vm".into()),
                uuid: None,
                pid: vmm.pid(),
                vmm: "flowlog-test-vmm".into(),
            }),
            ..Owner::default()
        })
    );
    drop(vmm);
    assert_eq!(find(ifindex, &mvt, Some("macvtap"), &options()), None);
}

#[test]
fn ip_address_output_is_parsed_in_the_documented_order() {
    let text = "2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever\n\
                2: eth0    inet6 fd00::2/64 scope global \\       valid_lft forever\n\
                2: eth0    inet 10.214.1.2/24 brd 10.214.1.255 scope global eth0\\       valid_lft forever\n";
    let expected: Vec<IpAddr> = vec![
        "10.214.1.2".parse().unwrap(),
        "fd00::2".parse().unwrap(),
        "fe80::1".parse().unwrap(),
    ];
    assert_eq!(addrs_of_ip_output(text), expected);
}
