//! Pinned state: the per-window maps and the TCX links live on in bpffs after the agent stops,
//! so the programs keep counting and the next agent adopts both.
//!
//! Layout: `<pin-dir>/netns-<inode>/<layout id>/`, holding `maps/<NAME>` and
//! `links/<ifindex>-<ingress|egress>`. The network namespace keeps agents of different
//! namespaces (whose ifindexes overlap) apart; the layout id (a hash of the key and value
//! sizes, map names and entry counts, and [`LAYOUT_VERSION`]) keeps an agent from adopting
//! maps it would misread. The agent holds an flock on its layout directory: a second agent on
//! the same state is told and runs unpinned. State of another layout is counted (its flow
//! entries, [`DISCARDED_METRIC`]) and removed once this agent's programs are attached.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use aya::{EbpfLoader, maps::MapData, programs::TcAttachType};
use flowlog_common::{
    CLOCK_MAP, CUTS_MAP, ClockSample, DROP_MAPS, DropCounters, DropReasonKey, FLOW_MAPS,
    FLOW4_MAPS, FlowKey, FlowKey4, FlowStats, IFACE_MAPS, IfaceCounters, IfaceKey, LOST_MAP,
    REJECT_MAPS, RejectKey, RejectStats, WINDOW_MAP,
};
use tracing::{info, warn};

use crate::metrics;

/// Bumped whenever the meaning of a pinned map changes without its sizes changing (3: stamps
/// are jiffies, no longer CLOCK_MONOTONIC ns).
pub const LAYOUT_VERSION: u32 = 3;

/// The default `--pin-dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/flowlog";

/// Flow entries of an incompatible layout's maps that were dropped unread.
pub const DISCARDED_METRIC: &str = "flowlog_pinned_flows_discarded_total";

const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// The maps whose contents outlive an agent: everything a window's counts are in, the slot
/// index, and the clock readings that convert their stamps. (The drop program's watched set and
/// config are rebuilt by every agent.)
pub fn pinned_maps() -> [&'static str; 14] {
    [
        FLOW_MAPS[0],
        FLOW_MAPS[1],
        FLOW4_MAPS[0],
        FLOW4_MAPS[1],
        IFACE_MAPS[0],
        IFACE_MAPS[1],
        WINDOW_MAP,
        CUTS_MAP,
        LOST_MAP,
        REJECT_MAPS[0],
        REJECT_MAPS[1],
        DROP_MAPS[0],
        DROP_MAPS[1],
        CLOCK_MAP,
    ]
}

/// What makes pinned maps readable by this agent.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub max_flows: u32,
    /// Entries of the REJECT maps (None: left at the object's size).
    pub max_reject_flows: Option<u32>,
    /// Test only (`--pin-layout-salt`): pretends to be a binary with another layout.
    pub salt: u32,
}

impl Layout {
    /// 16 hex digits: FNV-1a over every size, name and count the pinned maps depend on.
    pub fn id(&self) -> String {
        let text = format!(
            "v{LAYOUT_VERSION} salt={} FlowKey={} FlowKey4={} FlowStats={} IfaceKey={} IfaceCounters={} \
             RejectKey={} RejectStats={} DropReasonKey={} DropCounters={} ClockSample={} maps={} \
             max_flows={} max_reject_flows={:?}",
            self.salt,
            size_of::<FlowKey>(),
            size_of::<FlowKey4>(),
            size_of::<FlowStats>(),
            size_of::<IfaceKey>(),
            size_of::<IfaceCounters>(),
            size_of::<RejectKey>(),
            size_of::<RejectStats>(),
            size_of::<DropReasonKey>(),
            size_of::<DropCounters>(),
            size_of::<ClockSample>(),
            pinned_maps().join(","),
            self.max_flows,
            self.max_reject_flows,
        );
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// This agent's pinned state, locked for as long as it lives.
#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
    _lock: File,
    /// The maps were pinned already: an earlier agent's counts are in them.
    pub adopted: bool,
    /// Other layouts' state in this namespace, no agent holding it.
    stale: Vec<(PathBuf, File)>,
}

/// Where an inode's namespace's state goes under `pin_dir`.
fn namespace_dir(pin_dir: &Path) -> anyhow::Result<PathBuf> {
    let ino = std::fs::metadata("/proc/self/ns/net")
        .context("cannot read this process's network namespace (/proc/self/ns/net)")?
        .ino();
    Ok(pin_dir.join(format!("netns-{ino}")))
}

/// Takes the flock of directory `dir`; `None` while another process holds it.
fn try_lock(dir: &Path) -> anyhow::Result<Option<File>> {
    let f = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(f));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(None);
    }
    Err(e).with_context(|| format!("cannot lock {}", dir.display()))
}

/// Whether `path` is on a BPF filesystem.
fn on_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct with a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as u64 == BPF_FS_MAGIC }
}

/// Why pinning is off for this run (said once, the agent runs unpinned).
#[derive(Debug)]
pub struct Unpinned(pub String);

impl Pins {
    /// Opens (creating) this agent's state under `pin_dir`. `Err(Unpinned)`-style outcomes
    /// (not on bpffs, another agent holds it) come back as `Ok(Err(..))` so the caller can
    /// decide whether running unpinned is acceptable.
    pub fn open(pin_dir: &Path, layout: Layout) -> anyhow::Result<Result<Pins, Unpinned>> {
        if let Err(e) = std::fs::create_dir_all(pin_dir) {
            return Ok(Err(Unpinned(format!(
                "cannot create {}: {e}",
                pin_dir.display()
            ))));
        }
        if !on_bpffs(pin_dir) {
            return Ok(Err(Unpinned(format!(
                "{} is not on a BPF filesystem (mount one there: mount -t bpf bpf {})",
                pin_dir.display(),
                pin_dir.display()
            ))));
        }
        let ns = namespace_dir(pin_dir)?;
        let dir = ns.join(layout.id());
        for sub in ["maps", "links"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let Some(lock) = try_lock(&dir)? else {
            return Ok(Err(Unpinned(format!(
                "another agent holds the pinned state in {}",
                dir.display()
            ))));
        };
        let adopted = dir.join("maps").join(WINDOW_MAP).exists();
        let mut stale = Vec::new();
        for entry in
            std::fs::read_dir(&ns).with_context(|| format!("cannot list {}", ns.display()))?
        {
            let path = entry?.path();
            if path == dir || !path.is_dir() {
                continue;
            }
            match try_lock(&path)? {
                Some(lock) => stale.push((path, lock)),
                None => {
                    warn!(dir = %path.display(), "pinned state of another layout is in use by another agent; left alone")
                }
            }
        }
        Ok(Ok(Pins {
            dir,
            _lock: lock,
            adopted,
            stale,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the loader reuse (or create and pin) the pinned maps.
    pub fn configure(&self, loader: &mut EbpfLoader<'_>) {
        for name in pinned_maps() {
            loader.map_pin_path(name, self.dir.join("maps").join(name));
        }
    }

    /// Where the link of `ifindex`'s `at` hook is pinned.
    pub fn link_path(&self, ifindex: u32, at: TcAttachType) -> PathBuf {
        let hook = match at {
            TcAttachType::Ingress => "ingress",
            _ => "egress",
        };
        self.dir.join("links").join(format!("{ifindex}-{hook}"))
    }

    /// Pinned links (of an earlier agent) whose interface is not in `keep`: removing the pin
    /// detaches them.
    pub fn unpin_links_except(&self, keep: &std::collections::BTreeSet<u32>) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("links")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let ifindex = name.split('-').next().and_then(|i| i.parse::<u32>().ok());
            if ifindex.is_some_and(|i| keep.contains(&i)) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => info!(link = %name, "unpinned a link no flow log covers (detached)"),
                Err(e) => warn!(link = %name, error = %e, "cannot unpin a stale link"),
            }
        }
    }

    /// Removes other layouts' state (after this agent's programs are attached, so no packet
    /// goes uncounted in between): counts their flow entries into [`DISCARDED_METRIC`] and
    /// says so in one line.
    pub fn discard_stale(&mut self) {
        for (path, _lock) in std::mem::take(&mut self.stale) {
            // Links first: their programs stop writing into the maps about to be counted.
            remove_files(&path.join("links"));
            let flows: u64 = FLOW_MAPS
                .iter()
                .chain(&FLOW4_MAPS)
                .map(|m| count_entries(&path.join("maps").join(m)))
                .sum();
            metrics::counter_add(
                DISCARDED_METRIC,
                "Flows in pinned maps of an incompatible layout (an upgrade that changed the map \
                 layout) that were removed unread.",
                &[],
                flows,
            );
            warn!(
                dir = %path.display(), discarded_flows = flows,
                "pinned state of another map layout (an agent of another version) cannot be adopted: \
                 started fresh, its flows since its last drain are lost"
            );
            remove_files(&path.join("maps"));
            for sub in ["links", "maps", ""] {
                let _ = std::fs::remove_dir(path.join(sub));
            }
        }
    }
}

/// Removes every pin in `dir`.
fn remove_files(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Entries of the pinned hash map at `path`, whatever its key and value types (0 if it cannot
/// be read): keys are walked as raw bytes of the map's own key size.
fn count_entries(path: &Path) -> u64 {
    let Ok(map) = MapData::from_pin(path) else {
        return 0;
    };
    let Ok(info) = map.info() else {
        return 0;
    };
    let size = info.key_size() as usize;
    let fd = {
        use std::os::fd::AsFd as _;
        map.fd().as_fd().as_raw_fd()
    };
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; size];
    let mut n = 0u64;
    loop {
        // bpf_attr for BPF_MAP_GET_NEXT_KEY: map_fd (u32, padded), key, next_key.
        #[repr(C)]
        struct Attr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            next_key: u64,
        }
        let attr = Attr {
            map_fd: fd as u32,
            _pad: 0,
            key: key.as_ref().map_or(0, |k| k.as_ptr() as u64),
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: BPF_MAP_GET_NEXT_KEY with buffers of the map's key size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                4, // BPF_MAP_GET_NEXT_KEY
                &attr as *const Attr,
                size_of::<Attr>(),
            )
        };
        if r != 0 {
            return n;
        }
        n += 1;
        key = Some(next.clone());
    }
}

/// `flowlog cleanup`: detaches and unpins everything under `pin_dir` that no running agent
/// holds. Fails naming what a running agent holds.
pub fn cleanup(pin_dir: &Path) -> anyhow::Result<()> {
    if !pin_dir.exists() {
        info!(dir = %pin_dir.display(), "nothing pinned");
        return Ok(());
    }
    let mut busy = Vec::new();
    let mut removed = 0;
    for ns in
        std::fs::read_dir(pin_dir).with_context(|| format!("cannot list {}", pin_dir.display()))?
    {
        let ns = ns?.path();
        if !ns.is_dir() {
            continue;
        }
        for layout in
            std::fs::read_dir(&ns).with_context(|| format!("cannot list {}", ns.display()))?
        {
            let layout = layout?.path();
            let Some(_lock) = try_lock(&layout)? else {
                busy.push(layout.display().to_string());
                continue;
            };
            remove_files(&layout.join("links"));
            remove_files(&layout.join("maps"));
            for sub in ["links", "maps", ""] {
                let _ = std::fs::remove_dir(layout.join(sub));
            }
            removed += 1;
        }
        let _ = std::fs::remove_dir(&ns);
    }
    if !busy.is_empty() {
        bail!(
            "a running agent holds the pinned state in {}: stop it first (its programs stay attached)",
            busy.join(", ")
        );
    }
    info!(dir = %pin_dir.display(), removed, "detached and unpinned");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_ids_differ_by_salt_and_sizes() {
        let a = Layout {
            max_flows: 1000,
            max_reject_flows: Some(16),
            salt: 0,
        };
        assert_eq!(a.id().len(), 16);
        assert_eq!(a.id(), a.id());
        assert_ne!(a.id(), Layout { salt: 1, ..a }.id());
        assert_ne!(
            a.id(),
            Layout {
                max_flows: 999,
                ..a
            }
            .id()
        );
        assert_ne!(
            a.id(),
            Layout {
                max_reject_flows: None,
                ..a
            }
            .id()
        );
    }
}
