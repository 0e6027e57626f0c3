//! Embeds the eBPF object built by `cargo xtask build` (passed in `FLOWLOG_EBPF_OBJECT`).
//!
//! Without it (plain `cargo build`/`clippy`/`test`, no eBPF toolchain) an empty stub is
//! embedded, and `flowlog run` says how to get a real build. This mirrors aya's own workspace,
//! which keeps the userspace crates buildable on machines without bpf-linker.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=FLOWLOG_EBPF_OBJECT");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("flowlog.bpf.o");
    match env::var_os("FLOWLOG_EBPF_OBJECT") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            fs::copy(&path, &out).unwrap_or_else(|e| {
                panic!("FLOWLOG_EBPF_OBJECT={}: cannot copy: {e}", path.display())
            });
        }
        None => {
            fs::write(&out, b"").expect("write eBPF stub");
        }
    }
}
