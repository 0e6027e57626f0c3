//! A real VM behind a tap: qemu boots Debian's cloud kernel (`cargo xtask setup` puts it in
//! `.guest-kernel/`) with a busybox initramfs; its virtio-net NIC is a tap in a namespace the
//! test creates. The tap's owner must be that qemu (name, UUID, pid), and the guest must send
//! exactly the packets its init script sends (counted by tcpdump on the tap).
//!
//! qemu runs with software emulation (TCG), not KVM: this machine's /dev/kvm is `kvm_pvm`
//! (/sys/module/kvm_pvm; no svm/vmx flag in /proc/cpuinfo), which runs only PVM-enabled guest
//! kernels. With `-enable-kvm` a stock kernel stops after "Probing EDD" (nothing for 90 s) and
//! `-cpu host` fails with "failed to set MSR 0x10a". TCG boots the same kernel in ~5 s.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use flowlog_agent::inventory::owners::{self, HostLink, Owner, OwnerKind, OwnerOptions, Vm};
use flowlog_tests::{
    agent::require_root,
    netns::{Side, run},
    traffic::in_ns,
    wire::Tcpdump,
};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 214, 9, 1);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 214, 9, 2);
const PINGS: usize = 5;
const VM_NAME: &str = "flowlog-test-guest";
const VM_UUID: &str = "0f3c9a6e-51d2-4b7a-8e44-2c1d9b7a6f10";
/// TCG boot on a busy 2-core machine: seconds normally, more under load.
const BOOT_DEADLINE: Duration = Duration::from_secs(180);

/// `FLOWLOG_GUEST_KERNEL` (set by `cargo xtask test`), else `<workspace>/.guest-kernel`.
fn guest_kernel() -> PathBuf {
    let dir = std::env::var_os("FLOWLOG_GUEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.guest-kernel"));
    assert!(
        dir.join("vmlinuz").is_file() && dir.join("modules.order").is_file(),
        "no guest kernel in {}: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

/// The guest's init: bring eth0 up, wait until the host connects to TCP port 9 (it does so
/// once it captures), ping the host `PINGS` times, then idle (the tap must outlive the
/// capture; the test kills qemu).
fn init_script() -> String {
    format!(
        "#!/bin/sh\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         for m in $(cat /modules.order); do insmod /lib/modules/$m.ko; done\n\
         ip link set lo up\n\
         ip link set eth0 up\n\
         ip addr add {GUEST}/24 dev eth0\n\
         echo 'guest: listening'\n\
         nc -l -p 9 </dev/null >/dev/null\n\
         echo 'guest: pinging'\n\
         ping -c {PINGS} -i 0.2 {HOST}\n\
         echo 'guest: done'\n\
         exec sleep 2147483647\n"
    )
}

/// A newc cpio of busybox, its applets, the modules and the init script.
fn build_initramfs(kernel: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for sub in ["bin", "lib/modules", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(sub)).expect("initramfs dirs");
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox (busybox-static)");
    let list = run(Command::new("/bin/busybox").arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            symlink("busybox", root.join("bin").join(applet)).expect("applet link");
        }
    }
    let order = fs::read_to_string(kernel.join("modules.order")).expect("modules.order");
    for m in order.split_whitespace() {
        let ko = format!("{m}.ko");
        fs::copy(
            kernel.join("modules").join(&ko),
            root.join("lib/modules").join(&ko),
        )
        .expect("copy module");
    }
    fs::write(root.join("modules.order"), &order).expect("modules.order");
    let init = root.join("init");
    fs::write(&init, init_script()).expect("init");
    run(Command::new("chmod").arg("755").arg(&init));
    let files = run(Command::new("/bin/busybox")
        .args(["find", "."])
        .current_dir(&root));
    let cpio = dir.join("initramfs.cpio");
    let mut child = Command::new("/bin/busybox")
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&cpio).expect("cpio file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("busybox cpio");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &files.stdout)
        .expect("file list");
    assert!(child.wait().expect("cpio").success(), "busybox cpio failed");
    cpio
}

/// qemu, killed on drop; its serial console collected line by line.
struct Qemu {
    child: Child,
    console: Arc<Mutex<Vec<String>>>,
}

impl Qemu {
    fn wait_for_line(&mut self, needle: &str, deadline: Instant) {
        loop {
            if self
                .console
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "qemu exited ({status}) before {needle:?}; console:\n{}",
                    self.console.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from the guest in time; console:\n{}",
                self.console.lock().unwrap().join("\n")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn qemu_guest_behind_a_tap() {
    require_root();
    let kernel = guest_kernel();
    let work = tempfile::tempdir().expect("temp dir");
    let initramfs = build_initramfs(&kernel, work.path());
    let tag = std::process::id() % 100_000;
    let ns = NetnsGuard(format!("flitvm-{tag}"));
    run(Command::new("ip").args(["netns", "add", &ns.0]));
    let tap = format!("flovm{tag}");

    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, "qemu-system-x86_64"])
        .args(["-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet", "-no-reboot"])
        .arg("-netdev")
        .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .args(["-name", &format!("guest={VM_NAME},debug-threads=on")])
        .args(["-uuid", VM_UUID])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64 (cargo xtask setup installs qemu-system-x86)");
    let console = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let lines = console.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push(line);
            }
        });
    }
    let mut qemu = Qemu { child, console };
    // `ip netns exec` execs qemu in place: the child's pid is qemu's.
    let qemu_pid = qemu.child.id();

    // The tap exists once qemu has opened it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ifindex = loop {
        let out = Command::new("ip")
            .args(["-n", &ns.0, "-o", "link", "show", &tap])
            .output()
            .expect("ip link");
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            break text
                .split(':')
                .next()
                .and_then(|i| i.trim().parse::<u32>().ok())
                .unwrap_or_else(|| panic!("no ifindex in {text:?}"));
        }
        if let Some(status) = qemu.child.try_wait().expect("try_wait") {
            panic!(
                "qemu exited ({status}):\n{}",
                qemu.console.lock().unwrap().join("\n")
            );
        }
        assert!(Instant::now() < deadline, "qemu created no tap {tap}");
        thread::sleep(Duration::from_millis(20));
    };
    run(Command::new("ip").args([
        "-n",
        &ns.0,
        "addr",
        "add",
        &format!("{HOST}/24"),
        "dev",
        &tap,
    ]));
    run(Command::new("ip").args(["-n", &ns.0, "link", "set", &tap, "up"]));

    // The owner, looked up from inside the namespace the tap is in.
    let owner = in_ns(&ns.0, || {
        let link = HostLink {
            ifindex,
            name: &tap,
            kind: None,
            link_netnsid: None,
            peer_ifindex: None,
        };
        owners::find(&link, &OwnerOptions::default()).expect("owners::find")
    });
    assert_eq!(
        owner,
        Some(Owner {
            kind: OwnerKind::Vm(Vm {
                name: Some(VM_NAME.into()),
                uuid: Some(VM_UUID.into()),
                pid: qemu_pid,
                vmm: "qemu-system-x86_64".into(),
            }),
            ..Owner::default()
        })
    );

    // The guest's packets: capture, then let it ping.
    qemu.wait_for_line("guest: listening", Instant::now() + BOOT_DEADLINE);
    let side = Side {
        netns: ns.0.clone(),
        iface: tap.clone(),
        v4: HOST,
        v6: Ipv6Addr::UNSPECIFIED,
    };
    let capture = Tcpdump::start(&side, work.path());
    in_ns(&ns.0, || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let guest = SocketAddr::from((GUEST, 9));
        while TcpStream::connect_timeout(&guest, Duration::from_millis(500)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the guest never accepted on port 9"
            );
            thread::sleep(Duration::from_millis(50));
        }
    });
    qemu.wait_for_line("guest: done", Instant::now() + Duration::from_secs(60));
    let packets = capture.stop();
    let icmp = |src: Ipv4Addr, dst: Ipv4Addr| {
        packets
            .iter()
            .filter(|p| {
                p.tuple.protocol == 1
                    && p.tuple.src == IpAddr::V4(src)
                    && p.tuple.dst == IpAddr::V4(dst)
            })
            .count()
    };
    assert_eq!(icmp(GUEST, HOST), PINGS, "echo requests the guest sent");
    assert_eq!(icmp(HOST, GUEST), PINGS, "echo replies the host sent");
    let console = qemu.console.lock().unwrap().join("\n");
    assert!(
        console.contains(&format!(
            "{PINGS} packets transmitted, {PINGS} packets received"
        )),
        "{console}"
    );
}
