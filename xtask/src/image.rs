//! `cargo xtask image`: an OCI image built with podman from scratch, holding the agent, the
//! shared libraries it links (per `ldd`) and the CA certificates for HTTPS destinations.
//! deploy/kubernetes/daemonset.yaml runs it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::build_cmd::{self, Profile};
use crate::{podman, setup, util};

/// The CA bundle rustls-native-certs reads (Debian's ca-certificates).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Directories the agent writes to or is given by the DaemonSet (mount points under a
/// read-only root filesystem).
const EMPTY_DIRS: &[&str] = &[
    "etc/flowlog",
    "var/lib/flowlog",
    "var/log/flowlog",
    "run/flowlog",
    "run/netns",
    "host/proc",
];

/// The default tag: `localhost/flowlog:<version>`.
pub fn default_tag() -> String {
    format!("localhost/flowlog:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the image from `binary` (default: a fresh release build) as `tag`; prints the tag.
pub fn run(binary: Option<PathBuf>, tag: Option<String>) -> Result<i32> {
    util::ensure_root("image")?;
    setup::ensure()?;
    let binary = match binary {
        Some(b) => b,
        None => build_cmd::build(Profile::Release)?.agent,
    };
    let tag = tag.unwrap_or_else(default_tag);
    let context = util::target_dir().join("image").join(sanitize(&tag));
    let result = build(&binary, &tag, &context);
    // The context holds a copy of the binary: no need to keep it once podman has the layer.
    let _ = fs::remove_dir_all(&context);
    result?;
    println!("{tag}");
    Ok(0)
}

fn sanitize(tag: &str) -> String {
    tag.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn build(binary: &Path, tag: &str, context: &Path) -> Result<()> {
    if !util::is_executable(binary) {
        bail!("{} is not an executable file", binary.display());
    }
    let _ = fs::remove_dir_all(context);
    let rootfs = context.join("rootfs");
    fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;

    let agent = rootfs.join("usr/bin/flowlog");
    create_parent(&agent)?;
    // Debug info is most of a debug build's size; the symbols stay for backtraces.
    util::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&agent)
            .arg(binary)
            .stdin(Stdio::null()),
    )
    .context("copying the agent into the image (strip comes with binutils)")?;
    for lib in shared_libraries(binary)? {
        let inside = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        create_parent(&inside)?;
        // The file itself, not a symlink into a directory the image does not have.
        fs::copy(&lib, &inside)
            .with_context(|| format!("copying {} into the image", lib.display()))?;
    }
    let ca = rootfs.join(CA_BUNDLE.trim_start_matches('/'));
    create_parent(&ca)?;
    fs::copy(CA_BUNDLE, &ca).with_context(|| {
        format!("copying {CA_BUNDLE} into the image (install Debian's ca-certificates)")
    })?;
    for dir in EMPTY_DIRS {
        fs::create_dir_all(rootfs.join(dir)).with_context(|| format!("creating {dir}"))?;
    }
    let containerfile = util::workspace_root().join("deploy/container/Containerfile");
    let mut cmd = podman::command();
    cmd.args(["build", "--quiet", "--tag", tag])
        .arg("--label")
        .arg(format!(
            "org.opencontainers.image.version={}",
            env!("CARGO_PKG_VERSION")
        ))
        .arg("--label")
        .arg("org.opencontainers.image.title=flowlog")
        .arg("--file")
        .arg(containerfile)
        .arg(context)
        .stdin(Stdio::null());
    util::run(&mut cmd).context("podman build (is podman installed? `cargo xtask setup`)")
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().context("a path without a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))
}

/// The shared libraries `binary` loads, per `ldd`: absolute paths, the dynamic loader included
/// (the vDSO has no file).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .stdin(Stdio::null())
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary: ldd says so and fails; nothing to copy.
        if text.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&text)
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2
/// (0x...)` lines to paths; a `not found` library is an error.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("=> not found") {
            bail!("a library the agent needs is missing: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_to_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).expect("parses"),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }
}
