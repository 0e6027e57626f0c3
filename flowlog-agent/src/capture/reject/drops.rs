//! REJECT from the kernel's drops: everything the agent does for the `skb:kfree_skb` program.
//!
//! At start-up ([`prepare`]) it reads the running kernel's BTF: the `sk_buff` (and
//! `net_device`, `dst_entry`, `net`, `skb_shared_info`) member offsets the program reads, the
//! names of `enum skb_drop_reason`, and the tracepoint's prototype. Those go into the object's
//! `DROP_CONFIG` global before it is loaded ([`RejectSetup::configure`]); then the program is
//! loaded and attached ([`RejectSetup::attach`]) and the agent keeps the program's set of watched
//! interfaces in step with its own ([`DropCapture::sync_watched`]).
//!
//! A kernel without BTF, without drop reasons (< 5.17) or with an `sk_buff` the agent cannot
//! read is not an error: [`prepare`] returns [`RejectSupport::Unavailable`] with the reason,
//! the agent says so once and emits ACCEPT records only. `--kernel-btf PATH` reads the BTF
//! from another file (kernels that ship it elsewhere; tests of that fallback).
//!
//! Which reasons are REJECT is configurable (`--reject-reasons`, names as the kernel spells
//! them without `SKB_DROP_REASON_`); [`DEFAULT_REJECT_REASONS`](super::reasons::DEFAULT_REJECT_REASONS) are the policy drops.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{BtfTracePoint, ProgramFd},
};
use flowlog_common::{
    DROP_CONFIG_GLOBAL, DropConfig, DropCounters, PROG_KFREE_SKB, REJECT_MAPS, WATCHED_MAP,
};
use tracing::{debug, info, warn};

use crate::{
    capture::{
        collect::{Collector, Direction, DrainedWindow},
        prog_info,
        reject::{btf::KernelBtf, reasons::DropReasons},
    },
    inventory::discover::interface_label,
    metrics,
};

/// Whether this kernel can tell REJECT, found out at start-up.
pub enum RejectSupport {
    Ready(Box<RejectSetup>),
    /// REJECT records are unavailable; the text says why.
    Unavailable(String),
}

/// Everything resolved from BTF, ready to be written into the object before it loads.
pub struct RejectSetup {
    config: DropConfig,
    reasons: Arc<DropReasons>,
    /// Names of the REJECT set, for the start-up log line.
    reject_names: Vec<String>,
    /// Its reasons whose drops stay ACCEPT when a socket received a copy (same log line).
    exemptible: Vec<String>,

    btf_path: PathBuf,
}

/// Reads the kernel's BTF and prepares the drop program. `Err` only for bad input (an unknown
/// `--reject-reasons` name); a kernel that cannot do it gives [`RejectSupport::Unavailable`].
pub fn prepare(requested: Option<&[String]>, btf_path: &Path) -> anyhow::Result<RejectSupport> {
    let unchecked = if requested.is_some() {
        " (--reject-reasons not checked)"
    } else {
        ""
    };
    let btf = match KernelBtf::open(btf_path) {
        Ok(b) => b,
        Err(e) => {
            return Ok(RejectSupport::Unavailable(format!(
                "the kernel's BTF is not readable ({}: {}); it needs CONFIG_DEBUG_INFO_BTF{unchecked}",
                btf_path.display(),
                e.root_cause()
            )));
        }
    };
    let reasons = match DropReasons::from_btf(&btf) {
        Ok(r) if !r.is_empty() => r,
        _ => {
            return Ok(RejectSupport::Unavailable(format!(
                "this kernel has no drop reasons (enum skb_drop_reason, Linux >= 5.17){unchecked}"
            )));
        }
    };
    let reject = reasons.reject_set(requested)?;
    match btf.tracepoint_params("kfree_skb") {
        Ok(p) if p.len() >= 3 && p[0] == "struct sk_buff *" && p[2] == "enum skb_drop_reason" => {}
        Ok(p) => {
            return Ok(RejectSupport::Unavailable(format!(
                "the kfree_skb tracepoint of this kernel does not pass a drop reason (its arguments: {})",
                p.join(", ")
            )));
        }
        Err(e) => return Ok(RejectSupport::Unavailable(format!("{e:#}"))),
    }
    let mut config = match kernel_layout(&btf) {
        Ok(c) => c,
        Err(e) => {
            return Ok(RejectSupport::Unavailable(format!(
                "cannot read this kernel's sk_buff layout: {e:#}"
            )));
        }
    };
    config.netns_inum = match std::fs::metadata("/proc/self/ns/net") {
        Ok(m) => m.ino() as u32,
        Err(e) => {
            return Ok(RejectSupport::Unavailable(format!(
                "cannot identify the agent's network namespace (/proc/self/ns/net: {e})"
            )));
        }
    };
    let Some(nf) = reasons.code("NETFILTER_DROP") else {
        return Ok(RejectSupport::Unavailable(
            "this kernel has no NETFILTER_DROP drop reason".into(),
        ));
    };
    config.reason_netfilter_drop = nf;
    for r in &reject {
        config.set_reject(*r);
    }
    for r in reasons.policy_set() {
        config.set_policy(r);
    }
    config.enabled = 1;
    let reject_names = reject.iter().map(|r| reasons.name(*r)).collect();
    let exemptible = reasons.exemptible(&reject);
    Ok(RejectSupport::Ready(Box::new(RejectSetup {
        config,
        reasons: Arc::new(reasons),
        reject_names,
        exemptible,
        btf_path: btf_path.to_path_buf(),
    })))
}

/// The offsets the drop program reads, from the kernel's BTF. Each member is checked to have
/// the size the program reads.
fn kernel_layout(btf: &KernelBtf) -> anyhow::Result<DropConfig> {
    let skb = |path: &[&str], size| btf.offset_of("sk_buff", path, size);
    let tc = btf.field("sk_buff", &["tc_at_ingress"])?;
    let cloned = bit_in_byte(btf, "cloned", 1)?;
    let fclone = bit_in_byte(btf, "fclone", 2)?;
    let fclone_clone = btf
        .enumerator("SKB_FCLONE_CLONE")?
        .context("kernel BTF has no SKB_FCLONE_CLONE")?;
    Ok(DropConfig {
        skb_dev: skb(&["dev"], 8)?,
        skb_iif: skb(&["skb_iif"], 4)?,
        skb_refdst: skb(&["_skb_refdst"], 8)?,
        skb_protocol: skb(&["protocol"], 2)?,
        skb_network_header: skb(&["network_header"], 2)?,
        skb_mac_header: skb(&["mac_header"], 2)?,
        // sk_buff_data_t: 32-bit offsets on 64-bit kernels (pointers elsewhere: unsupported).
        skb_tail: skb(&["tail"], 4)?,
        skb_end: skb(&["end"], 4)?,
        skb_head: skb(&["head"], 8)?,
        skb_data: skb(&["data"], 8)?,
        skb_len: skb(&["len"], 4)?,
        skb_tc_at_ingress: tc.bit_offset / 8,
        tc_at_ingress_mask: 1 << (tc.bit_offset % 8),
        dev_ifindex: btf.offset_of("net_device", &["ifindex"], 4)?,
        dev_net: btf.offset_of("net_device", &["nd_net", "net"], 8)?,
        net_inum: btf.offset_of("net", &["ns", "inum"], 4)?,
        dst_dev: btf.offset_of("dst_entry", &["dev"], 8)?,
        shinfo_gso_segs: btf.offset_of("skb_shared_info", &["gso_segs"], 2)?,
        skb_cloned: cloned.0,
        cloned_mask: cloned.1,
        skb_fclone: fclone.0,
        fclone_mask: fclone.1,
        fclone_clone: fclone_clone << fclone.2,
        shinfo_dataref: btf.offset_of("skb_shared_info", &["dataref"], 4)?,
        ..DropConfig::ZERO
    })
}

/// (byte offset, mask within that byte, shift) of the `bits`-wide bitfield `sk_buff.<name>`;
/// an error if it is not such a bitfield or straddles a byte.
fn bit_in_byte(btf: &KernelBtf, name: &str, bits: u32) -> anyhow::Result<(u32, u32, u32)> {
    let f = btf.field("sk_buff", &[name])?;
    let shift = f.bit_offset % 8;
    if f.bitfield_bits != Some(bits) || shift + bits > 8 {
        bail!("sk_buff.{name} is not a {bits}-bit field within one byte in this kernel ({f:?})");
    }
    Ok((f.bit_offset / 8, ((1 << bits) - 1) << shift, shift))
}

impl RejectSetup {
    /// Writes the resolved layout and REJECT set into the object's `DROP_CONFIG`.
    pub fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global(DROP_CONFIG_GLOBAL, &self.config, true);
    }

    pub fn reasons(&self) -> Arc<DropReasons> {
        self.reasons.clone()
    }

    /// Loads and attaches the kfree_skb program of a loaded object (configured with
    /// [`Self::configure`]) and takes the map of watched interfaces.
    pub fn attach(&self, ebpf: &mut Ebpf) -> anyhow::Result<DropCapture> {
        let btf = aya::Btf::parse_file(&self.btf_path, aya::Endianness::default())
            .with_context(|| format!("cannot parse kernel BTF {}", self.btf_path.display()))?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(PROG_KFREE_SKB)
            .with_context(|| format!("program {PROG_KFREE_SKB} missing from the eBPF object"))?
            .try_into()
            .with_context(|| format!("program {PROG_KFREE_SKB} is not a BTF tracepoint"))?;
        prog.load("kfree_skb", &btf)
            .context("the kernel rejected the kfree_skb program")?;
        prog.attach()
            .context("cannot attach to the kfree_skb tracepoint")?;
        let prog_fd = prog
            .fd()
            .context("the kfree_skb program has no fd")?
            .try_clone()
            .context("cannot keep the kfree_skb program's fd")?;
        let watched = ebpf
            .take_map(WATCHED_MAP)
            .with_context(|| format!("map {WATCHED_MAP} missing"))?;
        let uncounted = ebpf
            .take_map(UNCOUNTED_MAP)
            .with_context(|| format!("map {UNCOUNTED_MAP} missing"))?;
        Ok(DropCapture {
            watched: HashMap::try_from(watched)
                .with_context(|| format!("map {WATCHED_MAP} has an unexpected type"))?,
            in_map: BTreeSet::new(),
            reject_names: self.reject_names.clone(),
            uncounted: PerCpuArray::try_from(uncounted)
                .with_context(|| format!("map {UNCOUNTED_MAP} has an unexpected type"))?,
            uncounted_reported: 0,
            prog_fd,
            missed_reported: 0,
        })
    }
}

/// Writes the drop program's configuration into the object about to be loaded, with REJECT
/// maps of `max_reject_flows` entries (nothing when REJECT is unavailable: the program then
/// stays unloaded).
pub fn configure<'a>(
    support: &'a RejectSupport,
    max_reject_flows: u32,
    loader: &mut EbpfLoader<'a>,
) {
    if let RejectSupport::Ready(setup) = support {
        setup.configure(loader);
        for name in REJECT_MAPS {
            loader.map_max_entries(name, max_reject_flows);
        }
    }
}

/// Loads and attaches the drop program of the loaded object, and hands the reason names to the
/// collector. When REJECT is unavailable, or the kernel refuses the program, says so once and
/// why: the agent goes on with ACCEPT records only.
pub fn start(
    support: RejectSupport,
    ebpf: &mut Ebpf,
    collector: &mut Collector,
) -> Option<DropCapture> {
    let why = match support {
        RejectSupport::Ready(setup) => match setup.attach(ebpf) {
            Ok(capture) => {
                collector.set_drop_reasons(setup.reasons());
                info!(
                    reject_reasons = %setup.reject_names.join(","),
                    not_reject_when_a_socket_received_a_copy = %setup.exemptible.join(","),
                    "drops with these kernel reasons are REJECT records"
                );
                return Some(capture);
            }
            Err(e) => format!("{e:#}"),
        },
        RejectSupport::Unavailable(why) => why,
    };
    warn!("REJECT records are unavailable: {why}; emitting ACCEPT records only");
    None
}

/// Keeps the drop program's watched set equal to the interfaces TC is attached to.
pub fn sync(capture: &mut Option<DropCapture>, ifindexes: impl IntoIterator<Item = u32>) {
    if let Some(c) = capture
        && let Err(e) = c.sync_watched(ifindexes)
    {
        warn!(error = %format!("{e:#}"), "cannot update the interfaces the drop program watches");
    }
}

/// Cumulative per-CPU counter of other drops that found no room in their map.
const UNCOUNTED_MAP: &str = "DROPS_UNCOUNTED";

/// The attached kfree_skb program's agent-side state. Dropping the `Ebpf` it came from detaches
/// the program.
pub struct DropCapture {
    watched: HashMap<MapData, u32, u8>,
    in_map: BTreeSet<u32>,
    /// The REJECT reasons, for the counters exported at zero.
    reject_names: Vec<String>,
    uncounted: PerCpuArray<MapData, DropCounters>,
    uncounted_reported: u64,
    /// The program, for the runs the kernel skipped ([`prog_info::recursion_misses`]).
    prog_fd: ProgramFd,
    missed_reported: u64,
}

impl DropCapture {
    /// Makes the program's watched set exactly `ifindexes` (the interfaces TC is attached to).
    pub fn sync_watched(&mut self, ifindexes: impl IntoIterator<Item = u32>) -> anyhow::Result<()> {
        let want: BTreeSet<u32> = ifindexes.into_iter().collect();
        for gone in self.in_map.difference(&want).copied().collect::<Vec<_>>() {
            // Already absent is fine: the aim is that it is not there.
            let _ = self.watched.remove(&gone);
            self.in_map.remove(&gone);
        }
        for new in want.difference(&self.in_map).copied().collect::<Vec<_>>() {
            self.watched
                .insert(new, 1, 0)
                .with_context(|| format!("cannot watch drops on ifindex {new}"))?;
            self.in_map.insert(new);
        }
        Ok(())
    }

    /// Adds to the metrics what the kernel could not count (should stay zero): drops the
    /// per-reason map had no room for, and runs of the program the kernel skipped.
    pub fn report_uncounted(&mut self) {
        if let Ok(values) = self.uncounted.get(&0, 0) {
            let total: u64 = values.iter().map(|c| c.packets).sum();
            add_growth(UNCOUNTED, total, &mut self.uncounted_reported);
        }
        match prog_info::recursion_misses(self.prog_fd.as_fd()) {
            Ok(total) => add_growth(MISSED, total, &mut self.missed_reported),
            Err(e) => debug!(error = %e, "cannot read the kfree_skb program's skipped runs"),
        }
    }
}

/// Adds to `counter` (name, help) what the kernel's cumulative `total` grew by since
/// `reported`, and remembers `total`.
fn add_growth(counter: (&'static str, &'static str), total: u64, reported: &mut u64) {
    metrics::counter_add(counter.0, counter.1, &[], total.saturating_sub(*reported));
    *reported = total;
}

/// Exports the REJECT counters at zero for every (interface, direction, REJECT reason), so
/// alerts can be written before the first drop. Nothing when REJECT is unavailable.
pub fn export_zero_counters<'a>(
    capture: Option<&DropCapture>,
    interfaces: impl IntoIterator<Item = &'a str>,
) {
    let Some(capture) = capture else { return };
    metrics::counter_add(UNCOUNTED.0, UNCOUNTED.1, &[], 0);
    metrics::counter_add(MISSED.0, MISSED.1, &[], 0);
    for iface in interfaces {
        for direction in [Direction::Ingress, Direction::Egress] {
            for reason in &capture.reject_names {
                let labels = [
                    ("interface", iface),
                    ("direction", direction.as_str()),
                    ("reason", reason.as_str()),
                ];
                metrics::counter_add(REJECTED.0, REJECTED.1, &labels, 0);
            }
        }
    }
}

/// Name and help of the REJECT packet counter (as [`report_window`] adds to it).
const REJECTED: (&str, &str) = (
    "flowlog_rejected_packets_total",
    "Packets the kernel dropped for a REJECT reason (REJECT records).",
);
/// Name and help of the counter of drops the per-reason map had no room for (as
/// [`DropCapture::report_uncounted`] adds to it).
const UNCOUNTED: (&str, &str) = (
    "flowlog_kernel_drops_uncounted_total",
    "Dropped packets the per-reason drop map had no room for.",
);

/// Name and help of the counter of the drop program's skipped runs (as
/// [`DropCapture::report_uncounted`] adds to it).
const MISSED: (&str, &str) = (
    "flowlog_drop_program_skipped_runs_total",
    "Runs of the kfree_skb program the kernel skipped because it was already running on that CPU (on any interface: those drops, if on a watched one, stay in ACCEPT records).",
);

/// Metrics of one window's drops: REJECT packets per (interface, direction, reason), drops for
/// other reasons (which stay in ACCEPT) the same way, and REJECT-reason drops of packets a raw
/// socket had received (which stay in ACCEPT too).
pub fn report_window(
    capture: Option<&mut DropCapture>,
    d: &DrainedWindow,
    watched: &BTreeMap<u32, String>,
) {
    let Some(capture) = capture else { return };
    capture.report_uncounted();
    let iface_name = |i: u32| interface_label(watched.get(&i).map(String::as_str), i);
    let reason = |code: u32| d.reason_name(code);
    let dir = |d: u8| Direction::of_key(d).as_str();
    for (k, t) in &d.rejects {
        let (i, r) = (iface_name(k.flow.ifindex), reason(k.reason));
        let labels = [
            ("interface", i.as_str()),
            ("direction", dir(k.flow.direction)),
            ("reason", r.as_str()),
        ];
        metrics::counter_add(REJECTED.0, REJECTED.1, &labels, t.packets);
    }
    for (k, c) in &d.other_drops {
        let (i, r) = (iface_name(k.ifindex), reason(k.reason));
        let labels = [
            ("interface", i.as_str()),
            ("direction", dir(k.direction)),
            ("reason", r.as_str()),
        ];
        if k.delivered_to_socket != 0 {
            metrics::counter_add(
                "flowlog_kernel_drops_delivered_to_socket_total",
                "Packets the kernel dropped for a --reject-reasons reason after a raw socket had received them (they stay in ACCEPT records).",
                &labels,
                c.packets,
            );
            debug!(interface = %i, direction = dir(k.direction), reason = %r, packets = c.packets, "dropped after a raw socket received it (not REJECT)");
            continue;
        }
        metrics::counter_add(
            "flowlog_kernel_drops_total",
            "Packets the kernel dropped for a reason outside --reject-reasons (they stay in ACCEPT records).",
            &labels,
            c.packets,
        );
        debug!(interface = %i, direction = dir(k.direction), reason = %r, packets = c.packets, "dropped (not REJECT)");
    }
}
