//! The deploy artifacts under test: the xtask that builds them (`FLOWLOG_XTASK`), the files of
//! deploy/, and programs copied with their shared libraries into a directory root. (podman:
//! [`crate::podman`].)

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A file of deploy/ (e.g. `systemd/flowlog.service`).
pub fn deploy_file(relative: &str) -> PathBuf {
    workspace_root().join("deploy").join(relative)
}

/// The text of a file of deploy/.
pub fn read_deploy_file(relative: &str) -> String {
    let path = deploy_file(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The xtask binary, from `FLOWLOG_XTASK` (set by `cargo xtask test`). Panics (never skips)
/// when unset.
pub fn xtask() -> PathBuf {
    let Some(path) = std::env::var_os("FLOWLOG_XTASK") else {
        panic!(
            "FLOWLOG_XTASK is not set: run the deploy tests through `cargo xtask test`, or point \
             FLOWLOG_XTASK at target/debug/xtask"
        );
    };
    PathBuf::from(path)
}

/// Runs `xtask ARGS` and returns the last line it printed (the artifact: a path or a tag).
/// Panics with its output if it fails.
pub fn run_xtask(args: &[&str]) -> String {
    let out = Command::new(xtask())
        .args(args)
        // The test run already checked the setup.
        .env("FLOWLOG_SKIP_SETUP", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run xtask");
    assert!(
        out.status.success(),
        "xtask {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_else(|| panic!("xtask {args:?} printed nothing"))
        .trim()
        .to_string()
}

/// Runs `cmd`, panicking with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Copies `program` to the same path below `root`, with every shared library `ldd` lists for
/// it (the files, not symlinks), so it runs chrooted into `root`.
pub fn copy_with_libraries(program: &Path, root: &Path) {
    let out = run_ok(Command::new("ldd").arg(program));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files = vec![program.to_path_buf()];
    for line in text.lines() {
        assert!(
            !line.contains("not found"),
            "ldd {}: {line}",
            program.display()
        );
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        files.extend(path.filter(|p| p.starts_with('/')).map(PathBuf::from));
    }
    for f in files {
        let inside = root.join(f.strip_prefix("/").expect("absolute"));
        fs::create_dir_all(inside.parent().expect("parent")).expect("create dirs");
        fs::copy(&f, &inside)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", f.display(), inside.display()));
    }
}

/// `dpkg --print-architecture`.
pub fn debian_arch() -> String {
    let out = run_ok(Command::new("dpkg").arg("--print-architecture"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The values of `key=` lines of a systemd unit (every occurrence, in order).
pub fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

/// The one value of `key=` in a unit; panics unless it appears exactly once.
pub fn unit_value(unit: &str, key: &str) -> String {
    let values = unit_values(unit, key);
    assert_eq!(values.len(), 1, "{key}= in the unit: {values:?}");
    values.into_iter().next().expect("one value")
}

/// Capability names (`CAP_BPF` or `BPF`) as the bit mask of /proc/PID/status.
pub fn capability_mask(names: &[String]) -> u64 {
    names.iter().fold(0, |mask, name| {
        let name = name.trim_start_matches("CAP_");
        let bit = match name {
            "DAC_READ_SEARCH" => 2,
            "NET_ADMIN" => 12,
            "NET_RAW" => 13,
            "SYS_PTRACE" => 19,
            "SYS_ADMIN" => 21,
            "SYS_RESOURCE" => 24,
            "PERFMON" => 38,
            "BPF" => 39,
            other => panic!("capability {other} is not known to the tests: add its bit"),
        };
        mask | (1u64 << bit)
    })
}

/// A hex mask line (`CapEff:`, ...) of /proc/PID/status.
pub fn status_mask(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim();
    u64::from_str_radix(hex, 16).expect("hex mask")
}

/// A decimal line (`NoNewPrivs:`, `Seccomp:`) of /proc/PID/status.
pub fn status_number(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .next()
        .expect("a value")
        .parse()
        .expect("a number")
}

/// Packets and bytes per tuple in `records` equal what tcpdump saw on `local`'s interface,
/// every tuple of either side (an IPv4-only link: nothing is left out).
pub fn assert_records_equal_wire(
    records: &[crate::records::Record],
    wire: &[crate::wire::WirePacket],
    local: &crate::netns::Side,
) {
    use std::collections::{BTreeMap, BTreeSet};
    let from_records: BTreeMap<crate::records::Tuple, (u64, u64)> = crate::records::totals(records)
        .into_iter()
        .map(|(t, tot)| (t, (tot.packets, tot.bytes)))
        .collect();
    let from_wire: BTreeMap<crate::records::Tuple, (u64, u64)> = crate::wire::totals(wire, local)
        .into_iter()
        .map(|(t, (tot, _))| (t, (tot.packets, tot.bytes)))
        .collect();
    let keys: BTreeSet<_> = from_records.keys().chain(from_wire.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|t| from_records.get(t) != from_wire.get(t))
        .map(|t| {
            format!(
                "{t:?}: records {:?}, capture {:?}",
                from_records.get(t),
                from_wire.get(t)
            )
        })
        .collect();
    assert!(
        !from_wire.is_empty() && differ.is_empty(),
        "records vs capture per tuple (packets, bytes):\n{}\nrecords:\n{}",
        differ.join("\n"),
        crate::records::dump(records)
    );
}
