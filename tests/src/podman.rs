//! Real podman containers for the tests: a local busybox image (no registry is reachable), a
//! podman network per test, containers and pods, exec, and removal on drop.
//!
//! This machine's cgroups are hybrid (v1 controllers + a v2 `unified` mount), where crun
//! cannot run containers: everything runs with runc and explicit ulimits (a
//! `CONTAINERS_CONF` the harness writes, plus the flags on `podman run`). A container's
//! cgroup is then `/libpod_parent/libpod-<id>` (`/libpod_parent/<pod id>/libpod-<id>` in a
//! pod).
//!
//! The image `localhost/flowlog-busybox:test` is `podman import` of a tar holding busybox-static
//! as `/bin/busybox` with its applet links, and `/pause` (a shell loop that exits on SIGTERM)
//! for pod infra containers. It is created once per machine (`podman image exists` first).

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::fs::{PermissionsExt, symlink},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use crate::netns::run;

/// The local image every test container runs.
pub const IMAGE: &str = "localhost/flowlog-busybox:test";

/// busybox-static's binary (Debian package busybox-static).
const BUSYBOX: &str = "/bin/busybox";

/// The containers.conf these tests run podman with.
const CONTAINERS_CONF: &str = "[containers]\n\
default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
[engine]\n\
runtime = \"runc\"\n";

/// Flags every `podman run` gets (see the module comment).
const RUN_FLAGS: &[&str] = &[
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// `/pause`: the infra container's command. A shell as PID 1 ignores SIGTERM unless it traps
/// it, so `podman pod stop` would wait for its timeout.
const PAUSE_SCRIPT: &str =
    "#!/bin/sh\ntrap 'exit 0' TERM INT\nwhile :; do sleep 3600 & wait $!; done\n";

static NEXT: AtomicU32 = AtomicU32::new(0);
static IMAGE_READY: Mutex<bool> = Mutex::new(false);

/// A name unique to this process and call: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// `podman` with this harness's containers.conf.
pub fn podman() -> Command {
    let conf = std::env::temp_dir().join("flowlog-tests-containers.conf");
    if fs::read_to_string(&conf).ok().as_deref() != Some(CONTAINERS_CONF) {
        // Written whole to a temporary name and renamed: parallel tests never read half a file.
        let tmp = conf.with_extension(format!("{}.tmp", std::process::id()));
        fs::write(&tmp, CONTAINERS_CONF).expect("write containers.conf");
        fs::rename(&tmp, &conf).expect("rename containers.conf");
    }
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", conf).stdin(Stdio::null());
    c
}

/// Runs podman with `args`, panicking with its stderr on failure; returns trimmed stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let out = run(podman().args(args));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes [`IMAGE`] unless it exists.
pub fn ensure_image() {
    crate::agent::require_root();
    let mut ready = IMAGE_READY.lock().unwrap_or_else(|e| e.into_inner());
    if *ready {
        return;
    }
    let exists = podman()
        .args(["image", "exists", IMAGE])
        .status()
        .expect("run podman image exists");
    if !exists.success() {
        build_image();
    }
    *ready = true;
}

fn build_image() {
    assert!(
        PathBuf::from(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install busybox-static (cargo xtask setup)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).expect("mkdir bin");
    fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox");
    let list = run(Command::new(BUSYBOX).arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            symlink("busybox", bin.join(applet)).expect("applet link");
        }
    }
    let pause = dir.path().join("pause");
    fs::write(&pause, PAUSE_SCRIPT).expect("write /pause");
    fs::set_permissions(&pause, fs::Permissions::from_mode(0o755)).expect("chmod /pause");
    let tar = dir.path().join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-cf")
        .arg(&tar)
        .args(["bin", "pause"]));
    podman_ok(&["import", &tar.to_string_lossy(), IMAGE]);
}

/// A podman bridge network with its own /24, removed on drop.
#[derive(Debug)]
pub struct Network {
    pub name: String,
    pub subnet: Ipv4Addr,
}

impl Network {
    /// `10.214.<x>.0/24`: give each test its own x.
    pub fn new(x: u8) -> Self {
        crate::agent::require_root();
        remove_networks_of_dead_runs();
        let name = unique_name("flitnet");
        let subnet = Ipv4Addr::new(10, 214, x, 0);
        let net = Network { name, subnet };
        podman_ok(&[
            "network",
            "create",
            "--subnet",
            &format!("{subnet}/24"),
            &net.name,
        ]);
        net
    }
}

/// Networks an earlier test process left behind when it was killed (their drop never ran)
/// hold their subnets: removed once per process, those whose process is gone.
fn remove_networks_of_dead_runs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(out) = podman()
            .args(["network", "ls", "--format", "{{.Name}}"])
            .output()
        else {
            return;
        };
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            let pid = name
                .strip_prefix("flitnet-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                let _ = podman().args(["network", "rm", "-f", name]).output();
            }
        }
    });
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = podman().args(["network", "rm", "-f", &self.name]).output();
    }
}

/// How to start a container.
#[derive(Debug, Clone, Default)]
pub struct RunOptions<'a> {
    pub name: Option<String>,
    pub network: Option<&'a str>,
    pub pod: Option<&'a str>,
    /// The command; `sleep 2147483647` when empty.
    pub command: Vec<String>,
}

/// A running container, removed (`rm -f -t 0`) on drop.
#[derive(Debug)]
pub struct Container {
    /// podman's full id.
    pub id: String,
    pub name: String,
}

impl Container {
    /// `podman run -d` with the harness's runtime flags.
    pub fn run(opts: RunOptions<'_>) -> Self {
        ensure_image();
        let name = opts.name.unwrap_or_else(|| unique_name("flitctr"));
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.clone()];
        args.extend(RUN_FLAGS.iter().map(|s| s.to_string()));
        if let Some(net) = opts.network {
            args.extend(["--network".into(), net.into()]);
        }
        if let Some(pod) = opts.pod {
            args.extend(["--pod".into(), pod.into()]);
        }
        args.push(IMAGE.into());
        if opts.command.is_empty() {
            args.extend(["sleep".into(), "2147483647".into()]);
        } else {
            args.extend(opts.command);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = podman_ok(&refs);
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "podman run printed {id:?}, not a container id"
        );
        Container { id, name }
    }

    /// The container's init process, as the host sees it.
    pub fn pid(&self) -> u32 {
        let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &self.id]);
        pid.parse()
            .unwrap_or_else(|_| panic!("podman inspect pid of {}: {pid:?}", self.name))
    }

    /// Runs a command inside the container (`podman exec`), panicking when it fails.
    pub fn exec(&self, command: &[&str]) -> Output {
        let mut args = vec!["exec", &self.id];
        args.extend_from_slice(command);
        run(podman().args(&args))
    }

    /// The host end of the container's `eth0`: (ifindex, name), read with `ip` inside the
    /// container's namespace (`eth0@ifN`) and in the host's.
    pub fn host_veth(&self) -> (u32, String) {
        host_veth_of_pid(self.pid(), "eth0")
    }

    /// The IPv4 address podman gave the container on its (first) network.
    pub fn ipv4(&self) -> Ipv4Addr {
        let ip = podman_ok(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            &self.id,
        ]);
        ip.split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "podman inspect gave no IPv4 address for {}: {ip:?}",
                    self.name
                )
            })
    }

    /// The container's network namespace, as a path a thread can `setns` into.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// Removes the container now (`podman rm -f -t 0`), as when it is stopped mid-window.
    pub fn remove(self) {
        podman_ok(&["rm", "-f", "-t", "0", &self.id]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.id]).output();
    }
}

/// The host end of interface `ifname` in the network namespace of `pid`: (ifindex, name).
pub fn host_veth_of_pid(pid: u32, ifname: &str) -> (u32, String) {
    let out = run(Command::new("nsenter").args([
        "-t",
        &pid.to_string(),
        "-n",
        "ip",
        "-o",
        "link",
        "show",
        ifname,
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    // "2: eth0@if9: <BROADCAST,...> ..."
    let ifindex: u32 = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.trim_end_matches(':').split_once("@if"))
        .and_then(|(_, i)| i.parse().ok())
        .unwrap_or_else(|| panic!("no peer ifindex in {text:?}"));
    let host = run(Command::new("ip").args(["-o", "link", "show"]));
    let host = String::from_utf8_lossy(&host.stdout);
    let name = host
        .lines()
        .find_map(|l| {
            let (index, rest) = l.split_once(": ")?;
            (index.parse::<u32>().ok()? == ifindex)
                .then(|| rest.split([':', '@']).next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no host interface with ifindex {ifindex}:\n{host}"));
    (ifindex, name)
}

/// A podman pod whose infra container runs [`IMAGE`]'s `/pause`, removed with its containers
/// on drop.
#[derive(Debug)]
pub struct Pod {
    pub id: String,
    pub name: String,
    /// The infra container's name (`<pod name>-infra`).
    pub infra_name: String,
}

impl Pod {
    pub fn new(network: Option<&str>) -> Self {
        ensure_image();
        let name = unique_name("flitpod");
        let infra_name = format!("{name}-infra");
        let mut args = vec![
            "pod",
            "create",
            "--name",
            &name,
            "--infra-image",
            IMAGE,
            "--infra-command",
            "/pause",
            "--infra-name",
            &infra_name,
        ];
        if let Some(net) = network {
            args.extend(["--network", net]);
        }
        let id = podman_ok(&args);
        Pod {
            id,
            name,
            infra_name,
        }
    }

    /// The infra container's full id.
    pub fn infra_id(&self) -> String {
        podman_ok(&[
            "pod",
            "inspect",
            "--format",
            "{{.InfraContainerID}}",
            &self.id,
        ])
    }

    /// Starts a container in the pod.
    pub fn run(&self, name: Option<String>) -> Container {
        Container::run(RunOptions {
            name,
            pod: Some(&self.name),
            ..RunOptions::default()
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = podman()
            .args(["pod", "rm", "-f", "-t", "0", &self.id])
            .output();
    }
}
