//! The eBPF object the agent loads: embedded at build time, or read from `--ebpf-object`.

use std::path::Path;

use anyhow::{Context, bail};

/// The object `cargo xtask build` embedded (empty when built without the eBPF toolchain).
pub static EMBEDDED: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowlog.bpf.o"));

/// Bytes of the eBPF object: `path` if given, else the embedded one.
pub fn load(path: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let bytes = match path {
        Some(p) => {
            std::fs::read(p).with_context(|| format!("cannot read eBPF object {}", p.display()))?
        }
        None => EMBEDDED.to_vec(),
    };
    if bytes.is_empty() {
        bail!(
            "this flowlog binary was built without its eBPF object: build it with `cargo xtask build` \
             (or pass --ebpf-object PATH)"
        );
    }
    Ok(bytes)
}
