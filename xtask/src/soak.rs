//! `cargo xtask soak --minutes N`: builds the release agent, then runs the soak harness
//! (tests/src/bin/flowlog-soak, dev profile: it only drives and counts) against it as root.
//! Writes SOAK.md and SVG plots (default: docs/bench/).

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::build_cmd::{self, OBJECT_ENV, Profile};
use crate::{setup, util};

pub fn run(minutes: u64, out: Option<&Path>) -> Result<i32> {
    util::ensure_root("soak")?;
    setup::ensure()?;
    let built = build_cmd::build(Profile::Release)?;
    let out = match out {
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => std::env::current_dir()
            .context("reading the current directory")?
            .join(p),
        None => util::workspace_root().join("docs").join("bench"),
    };
    let mut cmd = util::cargo();
    cmd.args([
        "run",
        "--package",
        "flowlog-tests",
        "--bin",
        "flowlog-soak",
        "--",
    ])
    .arg("--minutes")
    .arg(minutes.to_string())
    .arg("--out")
    .arg(&out)
    .env(OBJECT_ENV, &built.object)
    .env("FLOWLOG_BIN", &built.agent)
    .env("FLOWLOG_MOTO_SERVER", util::moto_server())
    .stdin(Stdio::null());
    let status = util::status(&mut cmd).context("running the soak")?;
    if !status.success() {
        eprintln!("xtask: soak failed ({})", util::describe(status));
    }
    Ok(util::exit_code(status))
}
