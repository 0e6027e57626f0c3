//! `cargo xtask clippy`: lints the userspace crates; builds (not lints) the eBPF crate.

use std::process::Stdio;

use anyhow::{Context, Result};

use crate::{ebpf, util};

pub fn run() -> Result<i32> {
    let mut cmd = util::cargo();
    cmd.args([
        "clippy",
        "--workspace",
        "--exclude",
        ebpf::PACKAGE,
        "--all-targets",
    ])
    .args(["--", "-D", "warnings"])
    .stdin(Stdio::null());
    let status = util::status(&mut cmd).context("running cargo clippy")?;
    if !status.success() {
        eprintln!("xtask: clippy failed ({})", util::describe(status));
        return Ok(util::exit_code(status));
    }
    if ebpf::toolchain_present() {
        eprintln!("xtask: clippy does not run on the eBPF crate; building it instead");
        ebpf::build()?;
    } else {
        eprintln!("xtask: eBPF toolchain not present; skipping the eBPF crate");
    }
    Ok(0)
}
