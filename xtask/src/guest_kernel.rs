//! The kernel the real-VM test boots (tests/tests/qemu_guest.rs): Debian's cloud kernel and
//! the modules its virtio-net NIC needs, kept in `<workspace>/.guest-kernel/`.
//!
//! The package is fetched with `apt-get download` and unpacked with `dpkg-deb -x` rather than
//! installed: installing a kernel would run initramfs hooks and fill /boot and /lib/modules of
//! the machine with ~100 MB nobody boots. Only `vmlinuz` and the modules below are kept (~10 MB).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::util;

/// Debian's metapackage for the current cloud kernel (virtio drivers, small).
const METAPACKAGE: &str = "linux-image-cloud-amd64";

/// The modules virtio-net needs, in load order (each after what it depends on).
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// `<workspace>/.guest-kernel`: `vmlinuz`, `modules/<name>.ko`, `modules.order` (the modules
/// present, in load order) and `version`.
pub fn dir() -> PathBuf {
    util::workspace_root().join(".guest-kernel")
}

pub fn is_ready() -> bool {
    let d = dir();
    d.join("vmlinuz").is_file() && d.join("modules.order").is_file()
}

/// Fetches and unpacks the kernel unless it is there.
pub fn ensure() -> Result<()> {
    if is_ready() {
        println!("setup: guest kernel: already present ({})", dir().display());
        return Ok(());
    }
    if util::find_program("apt-get", &[]).is_none() {
        println!("setup: guest kernel: not a Debian system; put a kernel with virtio-net");
        println!(
            "setup:   (built in, or as modules listed in modules.order) into {}",
            dir().display()
        );
        bail!("cannot fetch the guest kernel without apt-get");
    }
    let package = kernel_package()?;
    println!("setup: guest kernel: fetching {package}");
    let work = util::target_dir().join("guest-kernel-download");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let installed = download_and_install(&work, &package);
    let _ = fs::remove_dir_all(&work);
    installed
}

fn download_and_install(work: &Path, package: &str) -> Result<()> {
    util::run(
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(work)
            .stdin(Stdio::null()),
    )
    .context("apt-get download of the guest kernel")?;
    let deb = fs::read_dir(work)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download wrote no .deb")?;
    let unpacked = work.join("root");
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))
        .context("unpacking the guest kernel package")?;
    install_from(&unpacked, package)
}

/// The versioned package the metapackage depends on (`linux-image-6.1.0-57-cloud-amd64`).
fn kernel_package() -> Result<String> {
    let out = util::output_ok(Command::new("apt-cache").args(["depends", METAPACKAGE]))
        .with_context(|| format!("apt-cache depends {METAPACKAGE} failed (apt-get update?)"))?;
    out.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|p| p.starts_with("linux-image-"))
        })
        .map(str::to_string)
        .with_context(|| format!("{METAPACKAGE} depends on no linux-image package:\n{out}"))
}

/// Copies vmlinuz and the modules out of an unpacked package into [`dir`], atomically (a
/// temporary directory renamed into place).
fn install_from(unpacked: &Path, package: &str) -> Result<()> {
    let vmlinuz = fs::read_dir(unpacked.join("boot"))
        .context("the kernel package has no /boot")?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the kernel package has no vmlinuz")?;
    let target = dir();
    let staging = target.with_extension("tmp");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(staging.join("modules"))?;
    fs::copy(&vmlinuz, staging.join("vmlinuz")).context("copying vmlinuz")?;
    let mut order = String::new();
    for module in MODULES {
        if let Some(path) = find_module(&unpacked.join("lib/modules"), &format!("{module}.ko")) {
            fs::copy(&path, staging.join("modules").join(format!("{module}.ko")))
                .with_context(|| format!("copying {}", path.display()))?;
            order.push_str(module);
            order.push('\n');
        }
    }
    fs::write(staging.join("modules.order"), order)?;
    fs::write(staging.join("version"), format!("{package}\n"))?;
    let _ = fs::remove_dir_all(&target);
    fs::rename(&staging, &target).context("moving the guest kernel into place")?;
    println!("setup: guest kernel: {package} in {}", target.display());
    Ok(())
}

fn find_module(dir: &Path, file: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, file) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == file) {
            return Some(path);
        }
    }
    None
}
