//! podman as the image tasks run it: with deploy/container/containers.conf as its
//! configuration unless CONTAINERS_CONF already names one.

use std::path::PathBuf;
use std::process::Command;

use crate::util;

/// `deploy/container/containers.conf` in the workspace.
pub fn containers_conf() -> PathBuf {
    util::workspace_root()
        .join("deploy")
        .join("container")
        .join("containers.conf")
}

/// A `podman` command with CONTAINERS_CONF set.
pub fn command() -> Command {
    let mut cmd = Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none_or(|v| v.is_empty()) {
        cmd.env("CONTAINERS_CONF", containers_conf());
    }
    cmd
}
