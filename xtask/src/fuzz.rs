//! `cargo xtask fuzz`: the parser fuzz test (`tests/tests/parser_fuzz.rs`) for much longer than
//! `cargo xtask test` runs it, with a fresh seed unless one is given: random and mutated frames
//! through the loaded TC programs, each checked against etherparse.

use std::process::Stdio;

use anyhow::{Context, Result};

use crate::build_cmd::OBJECT_ENV;
use crate::{ebpf, setup, util};

/// Frames `cargo xtask fuzz` sends by default (about 3-4 minutes on the 2-core CI machine).
pub const DEFAULT_FRAMES: u64 = 5_000_000;

pub fn run(frames: u64, seed: Option<u64>) -> Result<i32> {
    util::ensure_root("fuzz")?;
    setup::ensure()?;
    let object = ebpf::build()?;
    let seed = seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    eprintln!(
        "xtask: fuzzing the parser with {frames} frames, seed {seed:#x} (reproduce: cargo xtask fuzz --frames {frames} --seed {seed:#x})"
    );
    let mut cmd = util::cargo();
    // The same cargo invocation as `cargo xtask test`, so the test binary and its
    // dependencies are shared rather than built a second time.
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        ebpf::PACKAGE,
        "-p",
        "flowlog-tests",
        "--test",
        "parser_fuzz",
        "--",
        "--nocapture",
    ])
    .env(OBJECT_ENV, &object)
    .env("FLOWLOG_FUZZ_FRAMES", frames.to_string())
    .env("FLOWLOG_FUZZ_SEED", format!("{seed:#x}"))
    .stdin(Stdio::null());
    let status = util::status(&mut cmd).context("running the parser fuzz test")?;
    if !status.success() {
        eprintln!(
            "xtask: the parser fuzz test failed ({}); seed {seed:#x}",
            util::describe(status)
        );
    }
    Ok(util::exit_code(status))
}

/// `--seed`: decimal or 0x-prefixed hex.
pub fn parse_seed(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("invalid seed {s:?}: write a number, decimal or 0x-hex"))
}
