//! `cargo xtask setup`: installs what building and testing flowlog needs. Idempotent.
//!
//! See shared/docs/toolchain.md for why these pieces (Debian's rustc-web for the eBPF
//! crate, bpf-linker built against LLVM 22, moto for the AWS endpoints).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::util;

/// Debian packages the build and the tests need.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",               // /usr/bin/rustc with a sysroot usable for BPF
    "libstd-rust-web-dev-bpf", // prebuilt core for bpfel-unknown-none
    "llvm-22-dev",             // LLVM to build bpf-linker against
    "libpolly-22-dev",         // needed to link bpf-linker against LLVM 22
    "zlib1g-dev",              // LLVM's system libraries, for building bpf-linker
    "libzstd-dev",
    "g++",      // libstdc++.so, which linking bpf-linker (llvm-sys) needs
    "iproute2", // ip netns / veth for the test hosts
    "iputils-ping",
    "iperf3",
    // Peers for `cargo xtask bench` (libpcap flow exporters). Neither grabs an interface on
    // install: softflowd.service is a no-op (`/bin/true`) until a softflowd@IFACE instance is
    // configured, and pmacctd.service is installed disabled; the bench starts its own.
    "softflowd",
    "pmacct",
    "nftables", // drop rules in tests
    "tcpdump",  // ground truth captures
    "ethtool",
    // Guests (tests/src/podman.rs, tests/tests/owners.rs): podman with runc (crun cannot run
    // on hybrid cgroups) and the CNI plugins of its bridge networks; busybox-static is the
    // local image's only binary (no registry is reachable).
    "podman",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
    "qemu-system-x86", // a real VM on a tap (tests/tests/qemu_guest.rs), with .guest-kernel
    "strace",          // delays a syscall in the spool-lock race test
    "bpftool",         // an independent BTF decoder: expected struct offsets in unit tests
    "tmux",            // drives `flowlog top` in tests/tests/top.rs (send-keys, capture-pane)
    "python3-venv",    // .venv for moto and duckdb
    "python3-pip",
    // Deploy (`cargo xtask deb` / `image` and their tests, with the podman and runc above):
    // systemd-analyze and man for `systemd-analyze verify`, strip for the image, the CA bundle
    // the image carries.
    "systemd",
    "man-db",
    "binutils",
    "ca-certificates",
];

/// bpf-linker release that builds with our toolchains and LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM install that bpf-linker is built against.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// The LLVM feature of bpf-linker matching [`LLVM_PREFIX`].
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// cargo-deb release that `cargo xtask deb` drives.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// pip requirement for the local AWS endpoint (S3 + CloudWatch Logs).
pub const MOTO_REQUIREMENT: &str = "moto[server]>=5,<6";
/// pip requirement for running docs/queries/*.duckdb.sql over the file destination
/// (tests/tests/queries.rs).
pub const DUCKDB_REQUIREMENT: &str = "duckdb>=1.1,<3";

/// Pseudo filesystems flowlog needs: (fstype, mount point).
pub const MOUNTS: &[(&str, &str)] = &[("bpf", "/sys/fs/bpf"), ("tracefs", "/sys/kernel/tracing")];

/// Runs every setup step, printing what each one found or did.
pub fn run() -> Result<()> {
    debian_packages()?;
    bpf_linker()?;
    cargo_deb()?;
    python_venv()?;
    crate::guest_kernel::ensure()?;
    mounts()?;
    println!("setup: done");
    Ok(())
}

/// Cheap check that everything [`run`] would install is already there.
/// `FLOWLOG_SKIP_SETUP=1` makes it always true (for machines set up by other means).
pub fn is_ready() -> bool {
    if std::env::var_os("FLOWLOG_SKIP_SETUP").is_some_and(|v| v == "1") {
        return true;
    }
    matches!(missing_packages(), Ok(m) if m.is_empty())
        && find_bpf_linker().is_some()
        && find_cargo_deb().is_some()
        && util::is_executable(&util::moto_server())
        && duckdb_works()
        && crate::guest_kernel::is_ready()
        && missing_mounts().map(|m| m.is_empty()).unwrap_or(false)
}

/// Runs [`run`] unless [`is_ready`] says there is nothing to do.
pub fn ensure() -> Result<()> {
    if is_ready() {
        return Ok(());
    }
    eprintln!("xtask: something is missing; running setup first");
    run().context("setup failed (run `cargo xtask setup` to see the steps)")
}

// ---------------------------------------------------------------------------------------
// (a) Debian packages

/// Packages of [`DEBIAN_PACKAGES`] that are not installed, per `dpkg-query`.
fn missing_packages() -> Result<Vec<&'static str>> {
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\n")
        .args(DEBIAN_PACKAGES)
        .stdin(Stdio::null())
        .stderr(Stdio::null()) // "no packages found matching X" for unknown ones
        .output()
        .context("running dpkg-query")?;
    // dpkg-query exits 1 when some package is unknown; the known ones are still listed.
    let text = String::from_utf8_lossy(&out.stdout);
    let status: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(pkg, st)| (pkg.split(':').next().unwrap_or(pkg), st))
        .collect();
    Ok(DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| status.get(pkg).is_none_or(|st| !st.ends_with(" installed")))
        .collect())
}

fn apt_install_line(pkgs: &[&str]) -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        pkgs.join(" ")
    )
}

fn debian_packages() -> Result<()> {
    let has_dpkg = util::find_program("dpkg-query", &[]).is_some();
    let has_apt = util::find_program("apt-get", &[]).is_some();
    if !has_dpkg || !has_apt {
        println!("setup: Debian packages: this is not a Debian system (no apt-get/dpkg-query).");
        println!("setup: install the equivalents of these Debian packages yourself:");
        println!("setup:   {}", DEBIAN_PACKAGES.join(" "));
        println!("setup: and then build bpf-linker against LLVM 22:");
        println!("setup:   {}", bpf_linker_install_line());
        bail!("cannot install system packages automatically without apt-get");
    }
    let missing = missing_packages()?;
    if missing.is_empty() {
        println!(
            "setup: Debian packages ({}): already present",
            DEBIAN_PACKAGES.len()
        );
        return Ok(());
    }
    println!("setup: Debian packages: missing {}", missing.join(" "));
    if !util::is_root() {
        println!("setup: installing them needs root; run as root:");
        println!("setup:   {}", apt_install_line(&missing));
        bail!(
            "missing Debian packages and not root: {}",
            missing.join(" ")
        );
    }
    util::run(Command::new("apt-get").arg("update").stdin(Stdio::null()))
        .context("apt-get update")?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .stdin(Stdio::null()),
    )
    .context("apt-get install")?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!(
            "apt-get finished but these packages are still not installed: {}",
            still.join(" ")
        );
    }
    println!("setup: Debian packages: installed {}", missing.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (b) bpf-linker

/// bpf-linker on PATH or in cargo's bin directory.
pub fn find_bpf_linker() -> Option<PathBuf> {
    let extra: Vec<PathBuf> = util::cargo_bin_dir().into_iter().collect();
    util::find_program("bpf-linker", &extra)
}

fn bpf_linker_install_line() -> String {
    format!(
        "LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --version {BPF_LINKER_VERSION} \
         --locked --no-default-features --features {BPF_LINKER_LLVM_FEATURE}"
    )
}

fn bpf_linker() -> Result<()> {
    if let Some(path) = find_bpf_linker() {
        println!("setup: bpf-linker: already present ({})", path.display());
        return Ok(());
    }
    println!(
        "setup: bpf-linker: installing {BPF_LINKER_VERSION} against LLVM 22 (takes a minute or two)"
    );
    if !Path::new(LLVM_PREFIX)
        .join("bin")
        .join("llvm-config")
        .exists()
    {
        bail!(
            "{LLVM_PREFIX}/bin/llvm-config not found: install llvm-22-dev and libpolly-22-dev first"
        );
    }
    // Build with the host (rustup stable) toolchain, not whatever RUSTC the caller set.
    let mut cmd = util::cargo();
    cmd.current_dir(std::env::temp_dir())
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env_remove("RUSTC")
        .env_remove("RUSTC_BOOTSTRAP")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args([
            "--no-default-features",
            "--features",
            BPF_LINKER_LLVM_FEATURE,
        ])
        .stdin(Stdio::null());
    util::run(&mut cmd).context("installing bpf-linker")?;
    let path = find_bpf_linker()
        .context("bpf-linker was installed but is not on PATH nor in ~/.cargo/bin")?;
    println!("setup: bpf-linker: installed ({})", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (b2) cargo-deb

/// cargo-deb on PATH or in cargo's bin directory.
pub fn find_cargo_deb() -> Option<PathBuf> {
    let extra: Vec<PathBuf> = util::cargo_bin_dir().into_iter().collect();
    util::find_program("cargo-deb", &extra)
}

fn cargo_deb() -> Result<()> {
    if let Some(path) = find_cargo_deb() {
        println!("setup: cargo-deb: already present ({})", path.display());
        return Ok(());
    }
    println!("setup: cargo-deb: installing {CARGO_DEB_VERSION} (takes a few minutes)");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.env_remove("RUSTC")
        .env_remove("RUSTC_BOOTSTRAP")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "install",
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
            "--locked",
        ])
        .stdin(Stdio::null());
    util::run(&mut cmd).context("installing cargo-deb")?;
    let path = find_cargo_deb()
        .context("cargo-deb was installed but is not on PATH nor in ~/.cargo/bin")?;
    println!("setup: cargo-deb: installed ({})", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (c) Python venv with moto

/// Debian's python3 (which python3-venv is for) when present, else python3 on PATH.
fn system_python() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/python3");
    if util::is_executable(&debian) {
        debian
    } else {
        PathBuf::from("python3")
    }
}

fn moto_works(moto: &Path) -> bool {
    util::is_executable(moto)
        && Command::new(moto)
            .arg("--help")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

/// The venv's python imports duckdb.
fn duckdb_works() -> bool {
    Command::new(util::venv_dir().join("bin").join("python"))
        .args(["-c", "import duckdb"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn python_venv() -> Result<()> {
    let venv = util::venv_dir();
    let moto = util::moto_server();
    if moto_works(&moto) && duckdb_works() {
        println!(
            "setup: python venv with moto and duckdb: already present ({})",
            venv.display()
        );
        return Ok(());
    }
    println!(
        "setup: python venv with moto: installing into {}",
        venv.display()
    );
    let python = venv.join("bin").join("python");
    if !util::is_executable(&python) {
        util::run(
            Command::new(system_python())
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .stdin(Stdio::null()),
        )
        .context("creating the Python venv (is python3-venv installed?)")?;
    }
    util::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .arg(MOTO_REQUIREMENT)
            .arg(DUCKDB_REQUIREMENT)
            .env_remove("PIP_USER")
            .env("PIP_NO_INPUT", "1")
            .stdin(Stdio::null()),
    )
    .context("installing moto and duckdb into the venv")?;
    if !moto_works(&moto) {
        bail!(
            "{} --help does not work after installing moto",
            moto.display()
        );
    }
    if !duckdb_works() {
        bail!(
            "{} cannot import duckdb after installing it",
            python.display()
        );
    }
    println!(
        "setup: python venv with moto and duckdb: installed ({})",
        moto.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (d) bpffs and tracefs

/// Entries of [`MOUNTS`] not mounted with the right filesystem type, per /proc/mounts.
fn missing_mounts() -> Result<Vec<(&'static str, &'static str)>> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let present: Vec<(&str, &str)> = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _source = fields.next()?;
            let target = fields.next()?;
            let fstype = fields.next()?;
            Some((fstype, target))
        })
        .collect();
    Ok(MOUNTS
        .iter()
        .copied()
        .filter(|m| !present.contains(m))
        .collect())
}

fn mounts() -> Result<()> {
    let missing = missing_mounts()?;
    for &(fstype, target) in MOUNTS {
        if !missing.contains(&(fstype, target)) {
            println!("setup: {fstype} at {target}: already mounted");
            continue;
        }
        if !util::is_root() {
            println!("setup: {fstype} at {target}: not mounted; run as root:");
            println!("setup:   mount -t {fstype} {fstype} {target}");
            bail!("{fstype} is not mounted at {target} and not root");
        }
        fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
        util::run(
            Command::new("mount")
                .args(["-t", fstype, fstype, target])
                .stdin(Stdio::null()),
        )
        .with_context(|| format!("mounting {fstype} at {target}"))?;
        if missing_mounts()?.contains(&(fstype, target)) {
            bail!("mount succeeded but {target} is still not a {fstype} mount");
        }
        println!("setup: {fstype} at {target}: mounted");
    }
    Ok(())
}
