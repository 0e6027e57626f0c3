//! `cargo xtask bench`: builds the eBPF objects (flowlog's and the reference programs') and
//! the release agent, then runs the flowlog-bench package, which writes BENCHMARKS.md, SVG
//! plots and results.json (default: docs/bench/).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::build_cmd::{self, OBJECT_ENV, Profile};
use crate::{ebpf, setup, util};

pub const BENCH_PACKAGE: &str = "flowlog-bench";
/// The variable flowlog-bench reads for the reference-program object.
pub const FLOOR_ENV: &str = "FLOWLOG_FLOOR_OBJECT";

/// `out`: where the report goes (relative to the current directory); None: the bench's
/// default, docs/bench/ in the workspace.
pub fn run(quick: bool, out: Option<&Path>) -> Result<i32> {
    if !has_bench_package()? {
        println!("bench: not implemented yet");
        return Ok(1);
    }
    util::ensure_root("bench")?;
    setup::ensure()?;
    let built = build_cmd::build(Profile::Release)?;
    let floor = ebpf::build_floor().context("building the benchmark's reference programs")?;

    let mut cmd = util::cargo();
    cmd.args(["run", "--release", "--package", BENCH_PACKAGE, "--"])
        .env(OBJECT_ENV, &built.object)
        .env(FLOOR_ENV, &floor)
        .env("FLOWLOG_BIN", &built.agent)
        .env("FLOWLOG_MOTO_SERVER", util::moto_server())
        .stdin(Stdio::null());
    if quick {
        cmd.arg("--quick");
    }
    if let Some(out) = out {
        // cargo runs the bench from the workspace root: pass an absolute path.
        cmd.arg("--out").arg(absolute(out)?);
    }
    let status = util::status(&mut cmd).context("running the benchmark")?;
    if !status.success() {
        eprintln!("xtask: bench failed ({})", util::describe(status));
    }
    Ok(util::exit_code(status))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current directory")?
        .join(path))
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
