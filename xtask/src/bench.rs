//! `cargo xtask bench`: runs the flowlog-bench package once it exists.

use std::process::Stdio;

use anyhow::{Context, Result};

use crate::build_cmd::{self, OBJECT_ENV, Profile};
use crate::{setup, util};

pub const BENCH_PACKAGE: &str = "flowlog-bench";

pub fn run(quick: bool) -> Result<i32> {
    if !has_bench_package()? {
        println!("bench: not implemented yet");
        return Ok(1);
    }
    util::ensure_root("bench")?;
    setup::ensure()?;
    let built = build_cmd::build(Profile::Release)?;

    let mut cmd = util::cargo();
    cmd.args(["run", "--release", "--package", BENCH_PACKAGE, "--"])
        .env(OBJECT_ENV, &built.object)
        .env("FLOWLOG_BIN", &built.agent)
        .env("FLOWLOG_MOTO_SERVER", util::moto_server())
        .stdin(Stdio::null());
    if quick {
        cmd.arg("--quick");
    }
    let status = util::status(&mut cmd).context("running the benchmark")?;
    if !status.success() {
        eprintln!("xtask: bench failed ({})", util::describe(status));
    }
    Ok(util::exit_code(status))
}

/// Whether the workspace has a package named [`BENCH_PACKAGE`] (per `cargo metadata`).
fn has_bench_package() -> Result<bool> {
    let out = util::cargo()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        anyhow::bail!("cargo metadata failed ({})", util::describe(out.status));
    }
    // With --no-deps, "packages" holds only workspace members.
    let json = String::from_utf8_lossy(&out.stdout);
    let needle = format!("\"name\":\"{BENCH_PACKAGE}\"");
    Ok(json.contains(&needle))
}
