//! Building the eBPF object (`flowlog-ebpf` for `bpfel-unknown-none`).
//!
//! Two routes (shared/docs/toolchain.md):
//! - standard: rustup nightly with rust-src, `-Z build-std=core`, when bpf-linker's LLVM is
//!   at least as new as nightly rustc's;
//! - Debian: `/usr/bin/rustc` from rustc-web, whose sysroot ships `core` for BPF, with
//!   `RUSTC_BOOTSTRAP=1` for aya-ebpf's `asm_experimental_arch`.
//!
//! `FLOWLOG_EBPF_ROUTE=debian|nightly` forces a route.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{setup, util};

pub const PACKAGE: &str = "flowlog-ebpf";
/// The benchmark's reference programs (no-op, minimal counter, ...): a second binary of
/// [`PACKAGE`], built only for `cargo xtask bench`.
pub const FLOOR_BIN: &str = "flowlog-floor";
pub const TARGET: &str = "bpfel-unknown-none";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const NIGHTLY: &str = "nightly";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Debian,
    Nightly,
}

/// Whether some route to build the eBPF object is available on this machine.
pub fn toolchain_present() -> bool {
    setup::find_bpf_linker().is_some() && (debian_route_available() || nightly_has_rust_src())
}

/// Builds the eBPF object and returns its absolute path.
pub fn build() -> Result<PathBuf> {
    build_bin(PACKAGE)
}

/// Builds the benchmark's reference-program object ([`FLOOR_BIN`]) and returns its path.
pub fn build_floor() -> Result<PathBuf> {
    build_bin(FLOOR_BIN)
}

/// Builds binary `bin` of the eBPF package and returns the object's absolute path.
fn build_bin(bin: &str) -> Result<PathBuf> {
    let linker = setup::find_bpf_linker()
        .context("bpf-linker not found on PATH nor in ~/.cargo/bin (run `cargo xtask setup`)")?;
    let route = choose_route(&linker)?;
    let mut cmd = match route {
        Route::Debian => debian_command(),
        Route::Nightly => nightly_command(),
    };
    cmd.args([
        "build",
        "--package",
        PACKAGE,
        "--bin",
        bin,
        "--target",
        TARGET,
        "--release",
    ]);
    // cargo finds bpf-linker on PATH: make sure its directory is there (e.g. under sudo).
    if let Some(path) = path_with(linker.parent().unwrap_or(Path::new("/"))) {
        cmd.env("PATH", path);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    util::run(cmd.stdin(Stdio::null())).context("building the eBPF object")?;

    let object = util::target_dir().join(TARGET).join("release").join(bin);
    check_object(&object)?;
    let object = object
        .canonicalize()
        .with_context(|| format!("resolving {}", object.display()))?;
    eprintln!("xtask: eBPF object: {}", object.display());
    Ok(object)
}

fn debian_command() -> Command {
    let mut cmd = util::cargo();
    cmd.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn nightly_command() -> Command {
    // `rustup run` rather than `cargo +nightly`: the cargo on PATH may not be rustup's proxy.
    let mut cmd = Command::new("rustup");
    cmd.current_dir(util::workspace_root())
        .args(["run", NIGHTLY, "cargo"])
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .arg("-Zbuild-std=core");
    cmd
}

fn choose_route(linker: &Path) -> Result<Route> {
    match std::env::var("FLOWLOG_EBPF_ROUTE").ok().as_deref() {
        Some("debian") => return Ok(Route::Debian),
        Some("nightly") => return Ok(Route::Nightly),
        Some("") | None => {}
        Some(other) => bail!("FLOWLOG_EBPF_ROUTE={other:?}: expected `debian` or `nightly`"),
    }
    if nightly_has_rust_src() {
        let nightly_llvm = nightly_llvm_major();
        let linker_llvm = bpf_linker_llvm_major(linker);
        match (linker_llvm, nightly_llvm) {
            (Some(l), Some(n)) if l >= n => {
                eprintln!(
                    "xtask: eBPF route: rustup nightly + build-std (LLVM {n}, bpf-linker LLVM {l})"
                );
                return Ok(Route::Nightly);
            }
            _ => eprintln!(
                "xtask: nightly has rust-src but bpf-linker's LLVM ({}) is older than nightly's ({}) \
                 or unknown; using Debian's rustc",
                fmt_opt(linker_llvm),
                fmt_opt(nightly_llvm),
            ),
        }
    }
    if !debian_route_available() {
        bail!(
            "no way to build the eBPF object: {DEBIAN_RUSTC} with a {TARGET} sysroot is missing \
             (install rustc-web and libstd-rust-web-dev-bpf: `cargo xtask setup`) and rustup \
             nightly has no rust-src"
        );
    }
    eprintln!("xtask: eBPF route: Debian rustc-web ({DEBIAN_RUSTC}, RUSTC_BOOTSTRAP=1)");
    Ok(Route::Debian)
}

fn fmt_opt(v: Option<u32>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
}

fn debian_route_available() -> bool {
    util::is_executable(Path::new(DEBIAN_RUSTC))
        && Path::new("/usr/lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
}

fn nightly_has_rust_src() -> bool {
    util::output_ok(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))
    .is_some_and(|out| out.lines().any(|l| l.trim().starts_with("rust-src")))
}

/// LLVM major version of nightly rustc, from `rustc +nightly -vV`.
fn nightly_llvm_major() -> Option<u32> {
    let out = util::output_ok(Command::new("rustup").args(["run", NIGHTLY, "rustc", "-vV"]))?;
    llvm_major_from_rustc_vv(&out)
}

/// LLVM major version bpf-linker was built against: from the libLLVM it links
/// dynamically (`ldd`), else from the `llvm-NN` feature recorded by `cargo install`.
fn bpf_linker_llvm_major(linker: &Path) -> Option<u32> {
    let from_ldd =
        util::output_ok(Command::new("ldd").arg(linker)).and_then(|out| llvm_major_from_ldd(&out));
    from_ldd.or_else(|| {
        let crates = util::cargo_bin_dir()?.parent()?.join(".crates2.json");
        llvm_major_from_crates2(&fs::read_to_string(crates).ok()?)
    })
}

/// `LLVM version: 22.1.4` in `rustc -vV` output.
fn llvm_major_from_rustc_vv(out: &str) -> Option<u32> {
    let version = out.lines().find_map(|l| l.strip_prefix("LLVM version:"))?;
    version.trim().split('.').next()?.parse().ok()
}

/// `libLLVM.so.22.1 => ...` or `libLLVM-22.so => ...` in `ldd` output.
fn llvm_major_from_ldd(out: &str) -> Option<u32> {
    out.lines().find_map(|line| {
        let lib = line.split_whitespace().next()?;
        let rest = lib
            .strip_prefix("libLLVM.so.")
            .or_else(|| lib.strip_prefix("libLLVM-"))?;
        rest.split(['.', '-']).next()?.parse().ok()
    })
}

/// The `llvm-NN` feature of the bpf-linker entry in cargo's `.crates2.json`.
fn llvm_major_from_crates2(text: &str) -> Option<u32> {
    let entry = &text[text.find("\"bpf-linker ")?..];
    let entry = &entry[..entry.find('}').unwrap_or(entry.len())];
    entry
        .split('"')
        .find_map(|tok| tok.strip_prefix("llvm-")?.parse().ok())
}

/// Errors unless `object` is an ELF file (the eBPF relocatable object).
fn check_object(object: &Path) -> Result<()> {
    let bytes = fs::read(object)
        .with_context(|| format!("reading the eBPF object {}", object.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        bail!("{} is not an ELF object", object.display());
    }
    Ok(())
}

/// `PATH` with `dir` in front, or `None` when `dir` is already on `PATH`.
fn path_with(dir: &Path) -> Option<std::ffi::OsString> {
    let current: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if current.iter().any(|d| d == dir) {
        return None;
    }
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(current)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_versions() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nhost: x86_64-unknown-linux-gnu\n\
                  release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major_from_rustc_vv(vv), Some(22));
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007ff7)\n";
        assert_eq!(llvm_major_from_ldd(ldd), Some(22));
        assert_eq!(
            llvm_major_from_ldd("\tlibLLVM-21.so => /x (0x1)\n"),
            Some(21)
        );
        assert_eq!(llvm_major_from_ldd("\tlibc.so.6 => /x (0x1)\n"), None);
        let crates2 = r#"{"installs":{"bpf-linker 0.13.0 (registry+https://github.com/rust-lang/crates.io-index)":{"version_req":null,"bins":["bpf-linker"],"features":["llvm-22"],"all_features":false,"no_default_features":true,"profile":"release","target":"x86_64-unknown-linux-gnu","rustc":"rustc 1.95.0\nLLVM version: 22.1.2\n"}}}"#;
        assert_eq!(llvm_major_from_crates2(crates2), Some(22));
    }
}
