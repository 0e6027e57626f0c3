//! Small helpers shared by the tasks: paths, privilege checks and running commands.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` / `CARGO_BUILD_TARGET_DIR` if set
/// (relative paths are relative to the workspace), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|var| env::var_os(var).filter(|v| !v.is_empty()))
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

/// `<workspace>/.venv`.
pub fn venv_dir() -> PathBuf {
    workspace_root().join(".venv")
}

/// `<workspace>/.venv/bin/moto_server`.
pub fn moto_server() -> PathBuf {
    venv_dir().join("bin").join("moto_server")
}

/// The cargo binary that runs us (cargo sets `CARGO` for `cargo run`), else `cargo`.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    // CI builds once from a clean clone: incremental caches would only take disk (~7 GB).
    if env::var_os("CI").is_some() && env::var_os("CARGO_INCREMENTAL").is_none() {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

/// Whether the effective user id is 0, read from the `Uid:` line of /proc/self/status.
pub fn is_root() -> bool {
    match effective_uid() {
        Ok(uid) => uid == 0,
        Err(err) => {
            eprintln!("xtask: warning: cannot determine the user id ({err:#}); assuming not root");
            false
        }
    }
}

fn effective_uid() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("no Uid: line in /proc/self/status")?;
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid = line
        .split_whitespace()
        .nth(2)
        .context("malformed Uid: line in /proc/self/status")?;
    euid.parse()
        .with_context(|| format!("parsing effective uid {euid:?}"))
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Looks `name` up in `PATH`, then in the extra directories given.
pub fn find_program(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .chain(extra_dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// `$CARGO_HOME/bin`, or `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cargo").join("bin"))
}

/// A printable rendering of a command line, with the environment it sets.
pub fn display(cmd: &Command) -> String {
    let mut out = String::new();
    // Only the variables set are shown; removed ones (env_remove) are left out.
    for (key, value) in cmd.get_envs() {
        if let Some(v) = value {
            out.push_str(&format!("{}={} ", key.to_string_lossy(), shell_quote(v)));
        }
    }
    out.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&shell_quote(arg));
    }
    out
}

fn shell_quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdout/stderr, echoing it first; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({})", display(cmd), describe(status));
    }
    Ok(())
}

/// Runs `cmd` with inherited stdout/stderr, echoing it first, and returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("+ {}", display(cmd));
    cmd.status()
        .with_context(|| format!("starting `{}`", display(cmd)))
}

/// Runs `cmd` quietly and returns its stdout if it exits with success.
pub fn output_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Human-readable exit status.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// The exit code a shell would report for `status` (128 + signal for a killed child).
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Replaces this process with `cmd` (so signals such as Ctrl-C go straight to it and its
/// exit code becomes ours). Returns only on failure.
pub fn exec(cmd: &mut Command) -> anyhow::Error {
    eprintln!("+ exec {}", display(cmd));
    let err = cmd.exec();
    anyhow::Error::new(err).context(format!("executing `{}`", display(cmd)))
}

/// A command that runs `program args` as root: directly when we are root, else through
/// `sudo -E` (keeping our PATH, which sudo's secure_path would otherwise replace).
pub fn as_root(program: &OsStr, args: &[impl AsRef<OsStr>]) -> Result<Command> {
    if is_root() {
        let mut cmd = Command::new(program);
        cmd.args(args);
        return Ok(cmd);
    }
    let sudo = find_program("sudo", &[]).context(
        "this task needs root: run it as root, or install sudo so it can re-run itself with `sudo -E`",
    )?;
    let mut cmd = Command::new(sudo);
    cmd.arg("-E").arg("env");
    if let Some(path) = env::var_os("PATH") {
        let mut assignment = std::ffi::OsString::from("PATH=");
        assignment.push(path);
        cmd.arg(assignment);
    }
    cmd.arg(program).args(args);
    Ok(cmd)
}

/// If we are not root, re-executes this xtask binary with the same arguments through
/// `sudo -E` and never returns (on success); when already root it returns `Ok(())`.
pub fn ensure_root(task: &str) -> Result<()> {
    if is_root() {
        return Ok(());
    }
    eprintln!("xtask: `{task}` needs root; re-running through sudo -E");
    let exe = env::current_exe().context("locating the xtask executable")?;
    let args: Vec<_> = env::args_os().skip(1).collect();
    let mut cmd = as_root(exe.as_os_str(), &args)?;
    Err(exec(&mut cmd))
}
