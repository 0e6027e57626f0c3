//! `cargo xtask build`: the eBPF object, then the agent embedding it.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::{ebpf, util};

pub const AGENT_PACKAGE: &str = "flowlog-agent";
pub const AGENT_BIN: &str = "flowlog";
/// The variable flowlog-agent's build.rs reads to embed the eBPF object.
pub const OBJECT_ENV: &str = "FLOWLOG_EBPF_OBJECT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// What a build produced.
pub struct Built {
    pub object: PathBuf,
    pub agent: PathBuf,
}

/// Builds the eBPF object and the agent (`target/<profile>/flowlog`) embedding it.
pub fn build(profile: Profile) -> Result<Built> {
    let object = ebpf::build()?;
    let agent = build_agent(profile, &object)?;
    Ok(Built { object, agent })
}

/// Builds flowlog-agent with `FLOWLOG_EBPF_OBJECT=<object>`; returns the binary's path.
pub fn build_agent(profile: Profile, object: &std::path::Path) -> Result<PathBuf> {
    let mut cmd = util::cargo();
    cmd.args(["build", "--package", AGENT_PACKAGE])
        .env(OBJECT_ENV, object);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    util::run(cmd.stdin(Stdio::null())).context("building flowlog-agent")?;
    let agent = util::target_dir().join(profile.dir()).join(AGENT_BIN);
    if !util::is_executable(&agent) {
        bail!(
            "{} was not produced: does {AGENT_PACKAGE} define a binary named `{AGENT_BIN}`?",
            agent.display()
        );
    }
    agent
        .canonicalize()
        .with_context(|| format!("resolving {}", agent.display()))
}
