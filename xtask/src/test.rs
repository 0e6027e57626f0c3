//! `cargo xtask test`: the whole test suite, as root, against the real eBPF object.

use std::ffi::OsString;
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::build_cmd::{self, OBJECT_ENV, Profile};
use crate::{ebpf, setup, util};

pub fn run(extra: Vec<OsString>) -> Result<i32> {
    util::ensure_root("test")?;
    setup::ensure()?;
    let object = ebpf::build()?;
    let agent = build_cmd::build_agent(Profile::Debug, &object)?;
    let moto = util::moto_server();

    let mut cmd = util::cargo();
    // --no-fail-fast: one failing test file must not hide the others' results.
    cmd.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        ebpf::PACKAGE,
    ])
    .args(&extra)
    .env(OBJECT_ENV, &object)
    .env("FLOWLOG_BIN", &agent)
    .env("FLOWLOG_MOTO_SERVER", &moto)
    .env("FLOWLOG_GUEST_KERNEL", crate::guest_kernel::dir())
    // The deploy tests build the package and the image through this very xtask.
    .env(
        "FLOWLOG_XTASK",
        std::env::current_exe().context("locating the xtask executable")?,
    )
    .stdin(Stdio::null());
    let status = util::status(&mut cmd).context("running cargo test")?;
    if !status.success() {
        eprintln!("xtask: cargo test failed ({})", util::describe(status));
    }
    Ok(util::exit_code(status))
}
