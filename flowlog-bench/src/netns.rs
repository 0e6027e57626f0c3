//! The benchmark's two hosts (every name starts with `flbn`): network namespaces `flbn-a` and `flbn-b` joined by a veth pair
//! (`flbn-va` in A, `flbn-vb` in B). Removed on drop, also when a run fails half way.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

pub const NS_A: &str = "flbn-a";
pub const NS_B: &str = "flbn-b";
pub const IF_A: &str = "flbn-va";
pub const IF_B: &str = "flbn-vb";
pub const ADDR_A: &str = "10.77.0.1";
pub const ADDR_B: &str = "10.77.0.2";

/// Runs `cmd`; errors with its stderr when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// A command that runs `program` inside network namespace `ns`. `nsenter` only switches the
/// network namespace (unlike `ip netns exec`, which also remounts /sys), so bpffs stays
/// visible, and it execs, so the child's pid is the program's pid.
pub fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    cmd
}

pub struct Topology {
    _private: (),
}

impl Topology {
    pub fn create() -> anyhow::Result<Self> {
        remove_stale();
        let t = Topology { _private: () };
        ip(&["netns", "add", NS_A])?;
        ip(&["netns", "add", NS_B])?;
        ip(&[
            "link", "add", IF_A, "netns", NS_A, "type", "veth", "peer", "name", IF_B, "netns", NS_B,
        ])?;
        for (ns, ifname, addr) in [(NS_A, IF_A, ADDR_A), (NS_B, IF_B, ADDR_B)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                ifname,
            ])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(t)
    }

    /// Bytes and packets the interface in namespace A sent plus received so far.
    pub fn counters_a(&self) -> anyhow::Result<(u64, u64)> {
        let c = counters(NS_A, IF_A)?;
        Ok((c.rx_bytes + c.tx_bytes, c.rx_packets + c.tx_packets))
    }
}

/// An interface's byte and packet counters (`ip -s link`, stats64), per direction.
#[derive(Debug, Clone, Copy)]
pub struct IfCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// The counters of `ifname` in namespace `ns` so far.
pub fn counters(ns: &str, ifname: &str) -> anyhow::Result<IfCounters> {
    let json = ip(&["-n", ns, "-s", "-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&json).context("parsing `ip -j -s link`")?;
    let s = &v[0]["stats64"];
    let get = |dir: &str, what: &str| s[dir][what].as_u64();
    match (
        get("rx", "bytes"),
        get("rx", "packets"),
        get("tx", "bytes"),
        get("tx", "packets"),
    ) {
        (Some(rx_bytes), Some(rx_packets), Some(tx_bytes), Some(tx_packets)) => Ok(IfCounters {
            rx_bytes,
            rx_packets,
            tx_bytes,
            tx_packets,
        }),
        _ => bail!("`ip -n {ns} -j -s link show dev {ifname}` has no stats64 counters: {json}"),
    }
}

/// Moves the calling thread (only it) into network namespace `ns`, for sockets that must be
/// opened there.
pub fn enter(ns: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening namespace {ns}"))?;
    // SAFETY: setns on this thread only, with a namespace fd we hold open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "cannot enter namespace {ns}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

impl Drop for Topology {
    fn drop(&mut self) {
        remove_stale();
    }
}

/// Removes this benchmark's namespaces (and with them the veth pair) if they exist.
fn remove_stale() {
    for ns in [NS_A, NS_B] {
        if PathBuf::from("/run/netns").join(ns).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .status();
        }
    }
}
