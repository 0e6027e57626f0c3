//! `cargo xtask run`: build, then run `target/release/flowlog` as root.

use std::ffi::OsString;

use anyhow::Result;

use crate::build_cmd::{self, Profile};
use crate::{setup, util};

pub fn run(args: Vec<OsString>) -> Result<i32> {
    if !setup::is_ready() {
        // Setup installs packages and mounts filesystems: do all of it as root.
        util::ensure_root("run")?;
        setup::ensure()?;
    }
    let built = build_cmd::build(Profile::Release)?;
    let args = if args.is_empty() {
        vec![OsString::from("run")]
    } else {
        args
    };
    // exec: Ctrl-C reaches flowlog directly and its exit code becomes ours.
    let mut cmd = util::as_root(built.agent.as_os_str(), &args)?;
    Err(util::exec(&mut cmd))
}
