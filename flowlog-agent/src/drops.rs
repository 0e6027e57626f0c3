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
//! them without `SKB_DROP_REASON_`); [`DEFAULT_REJECT_REASONS`] are the policy drops.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::BtfTracePoint,
};
use flowlog_common::{
    DROP_CONFIG_GLOBAL, DropConfig, DropCounters, MAX_REJECT_REASON, PROG_KFREE_SKB, WATCHED_MAP,
};
use tracing::{debug, info, warn};

use crate::{
    btf_offsets::KernelBtf,
    collect::{Collector, DrainedWindow},
    metrics,
    records::{Direction, interface_label},
};

/// Prefix of every member of `enum skb_drop_reason` that is a drop reason.
const REASON_PREFIX: &str = "SKB_DROP_REASON_";

/// Drop reasons that are a policy's decision, as AWS's REJECT is a security group's or network
/// ACL's decision:
/// - `NETFILTER_DROP`: an nftables/iptables rule (any hook, any family).
/// - `TC_INGRESS`, `TC_EGRESS`: a TC program or filter that runs after flowlog's.
/// - `XDP`: a generic-mode XDP program (native XDP drops happen before any skb exists and are
///   invisible to the kernel's drop tracepoint).
/// - `BPF_CGROUP_EGRESS`: a cgroup egress program (e.g. systemd's `IPAddressDeny=`).
/// - `SOCKET_FILTER`: a cgroup ingress program (the kernel reports it as SOCKET_FILTER), but
///   also any socket's own filter, see [`DEFAULT_REJECT_REASONS`].
///
/// A drop for one of these is REJECT (when in the REJECT set) even if a raw or packet socket had
/// received a copy of the packet; other reasons are exempted then (see the kfree_skb program).
pub const POLICY_REASONS: &[&str] = &[
    "NETFILTER_DROP",
    "TC_INGRESS",
    "TC_EGRESS",
    "XDP",
    "BPF_CGROUP_EGRESS",
    "SOCKET_FILTER",
];

/// The reasons that are REJECT unless `--reject-reasons` says otherwise: the
/// [`POLICY_REASONS`] without `SOCKET_FILTER`. Names this kernel does not have are left out.
///
/// - Not `SOCKET_FILTER`: besides cgroup ingress programs, the kernel gives that reason when a
///   socket's own filter refuses a packet, and raw sockets get private copies: iputils `ping`
///   attaches a filter to its raw socket that refuses every ICMP message meant for another
///   ping, so with two pings running, each one's replies would be REJECT (and taken out of
///   ACCEPT) although they were delivered. Hosts with cgroup ingress firewalls opt in.
/// - Not `NO_SOCKET` (nor the other "nobody listened" reasons): a packet to a closed port is
///   the host answering, and AWS logs it as ACCEPT; REJECT there means a security group or
///   network ACL refused it. Opt in with `--reject-reasons` to see closed-port traffic as
///   REJECT.
pub const DEFAULT_REJECT_REASONS: &[&str] = &[
    "NETFILTER_DROP",
    "TC_INGRESS",
    "TC_EGRESS",
    "XDP",
    "BPF_CGROUP_EGRESS",
];

/// The kernel's drop reasons by value, decoded from its BTF (never from a table here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReasons {
    names: BTreeMap<u32, String>,
}

impl DropReasons {
    /// Members of `enum skb_drop_reason` named `SKB_DROP_REASON_*`, below `..._MAX`, without the
    /// prefix (`NETFILTER_DROP`). `SKB_NOT_DROPPED_YET` and `SKB_CONSUMED` are not drops.
    pub fn from_btf(btf: &KernelBtf) -> anyhow::Result<Self> {
        let members = btf.enum_members("skb_drop_reason")?;
        Ok(Self::from_members(members))
    }

    /// From `enum skb_drop_reason`'s (name, value) members.
    pub fn from_members(members: Vec<(String, u32)>) -> Self {
        let max = members
            .iter()
            .find(|(n, _)| n == "SKB_DROP_REASON_MAX")
            .map(|(_, v)| *v)
            .unwrap_or(u32::MAX);
        let names = members
            .into_iter()
            .filter(|(_, v)| *v < max)
            .filter_map(|(n, v)| n.strip_prefix(REASON_PREFIX).map(|s| (v, s.to_string())))
            .collect();
        DropReasons { names }
    }

    /// The name of reason `code`; a value this kernel's BTF did not list (a subsystem reason,
    /// `subsystem << 16 | n`) is written as `DROP_REASON_<code>`.
    pub fn name(&self, code: u32) -> String {
        match self.names.get(&code) {
            Some(n) => n.clone(),
            None => format!("DROP_REASON_{code}"),
        }
    }

    pub fn code(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(c, _)| *c)
    }

    /// Every reason, by value.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().map(|(c, n)| (*c, n.as_str()))
    }

    /// The REJECT set: `requested` names (case-insensitive, with or without the
    /// `SKB_DROP_REASON_` prefix), or [`DEFAULT_REJECT_REASONS`] where this kernel has them.
    /// An unknown name is an error that lists the valid ones.
    pub fn reject_set(&self, requested: Option<&[String]>) -> anyhow::Result<BTreeSet<u32>> {
        let Some(requested) = requested else {
            return Ok(DEFAULT_REJECT_REASONS
                .iter()
                .filter_map(|n| self.code(n))
                .collect());
        };
        let mut set = BTreeSet::new();
        for raw in requested {
            let upper = raw.trim().to_ascii_uppercase();
            let name = upper.strip_prefix(REASON_PREFIX).unwrap_or(&upper);
            match self.code(name) {
                Some(c) if c < MAX_REJECT_REASON => {
                    set.insert(c);
                }
                _ => {
                    let valid: Vec<&str> = self.names.values().map(String::as_str).collect();
                    bail!(
                        "unknown drop reason {raw:?} in --reject-reasons; this kernel's reasons are: {}",
                        valid.join(",")
                    );
                }
            }
        }
        Ok(set)
    }
}

impl DropReasons {
    /// The [`POLICY_REASONS`] this kernel has.
    pub fn policy_set(&self) -> BTreeSet<u32> {
        POLICY_REASONS.iter().filter_map(|n| self.code(n)).collect()
    }

    /// Names of the reasons in `reject` that are not a policy's: their drops are not REJECT
    /// when a raw or packet socket received a copy of the packet.
    pub fn exemptible(&self, reject: &BTreeSet<u32>) -> Vec<String> {
        reject
            .difference(&self.policy_set())
            .map(|r| self.name(*r))
            .collect()
    }
}

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
        Ok(r) if !r.names.is_empty() => r,
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
        })
    }
}

/// Writes the drop program's configuration into the object about to be loaded (nothing when
/// REJECT is unavailable: the program then stays unloaded).
pub fn configure<'a>(support: &'a RejectSupport, loader: &mut EbpfLoader<'a>) {
    if let RejectSupport::Ready(setup) = support {
        setup.configure(loader);
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

    /// Adds to the metrics what the kernel could not count (should stay zero).
    pub fn report_uncounted(&mut self) {
        let Ok(values) = self.uncounted.get(&0, 0) else {
            return;
        };
        let total: u64 = values.iter().map(|c| c.packets).sum();
        metrics::counter_add(
            "flowlog_kernel_drops_uncounted_total",
            "Dropped packets the per-reason drop map had no room for.",
            &[],
            total.saturating_sub(self.uncounted_reported),
        );
        self.uncounted_reported = total;
    }
}

/// Exports the REJECT counters at zero for every (interface, direction, REJECT reason), so
/// alerts can be written before the first drop. Nothing when REJECT is unavailable.
pub fn export_zero_counters<'a>(
    capture: Option<&DropCapture>,
    interfaces: impl IntoIterator<Item = &'a str>,
) {
    let Some(capture) = capture else { return };
    metrics::counter_add(UNCOUNTED.0, UNCOUNTED.1, &[], 0);
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
        metrics::counter_add(
            "flowlog_rejected_packets_total",
            "Packets the kernel dropped for a REJECT reason (REJECT records).",
            &labels,
            t.packets,
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf_offsets::VMLINUX_BTF;

    fn kernel_reasons() -> DropReasons {
        DropReasons::from_btf(&KernelBtf::open(Path::new(VMLINUX_BTF)).expect("kernel BTF"))
            .expect("drop reasons")
    }

    /// The tracefs format file of `skb:kfree_skb` prints reasons with the kernel's own
    /// `{ value, "NAME" }` table: an independent ground truth for the BTF decoding.
    fn tracefs_reasons() -> BTreeMap<u32, String> {
        let format = [
            "/sys/kernel/tracing/events/skb/kfree_skb/format",
            "/sys/kernel/debug/tracing/events/skb/kfree_skb/format",
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .expect("tracefs is mounted (mount -t tracefs tracefs /sys/kernel/tracing)");
        let table = format
            .split("__print_symbolic(REC->reason,")
            .nth(1)
            .expect("a symbolic reason table");
        let mut out = BTreeMap::new();
        for entry in table.split('{').skip(1) {
            let (value, rest) = entry.split_once(',').expect("{ value, \"NAME\" }");
            let name = rest.split('"').nth(1).expect("quoted name");
            out.insert(
                value.trim().parse::<u32>().expect("numeric value"),
                name.to_string(),
            );
        }
        out
    }

    #[test]
    fn reason_names_decoded_from_btf_match_the_kernels_own_table() {
        let btf = kernel_reasons();
        let mut tracefs = tracefs_reasons();
        // The trace table also prints the MAX sentinel, which is not a reason.
        let max = tracefs
            .iter()
            .find(|(_, n)| n.as_str() == "MAX")
            .map(|(v, _)| *v)
            .expect("MAX entry");
        tracefs.remove(&max);
        let decoded: BTreeMap<u32, String> = btf.iter().map(|(c, n)| (c, n.to_string())).collect();
        assert_eq!(decoded, tracefs);
        let netfilter_drop = tracefs_code(&tracefs, "NETFILTER_DROP");
        assert_eq!(btf.code("NETFILTER_DROP"), Some(netfilter_drop));
        assert_eq!(
            btf.code("NO_SOCKET"),
            Some(tracefs_code(&tracefs, "NO_SOCKET"))
        );
        assert_eq!(btf.name(netfilter_drop), "NETFILTER_DROP");
        // A subsystem's reason (high 16 bits set) that this kernel does not name.
        assert_eq!(btf.name(0x0003_0001), "DROP_REASON_196609");
    }

    /// The value tracefs gives reason `name` on this kernel.
    fn tracefs_code(tracefs: &BTreeMap<u32, String>, name: &str) -> u32 {
        tracefs
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
            .unwrap_or_else(|| panic!("this kernel has no drop reason {name}"))
    }

    #[test]
    fn default_reject_set_is_the_policy_drops_this_kernel_has() {
        let r = kernel_reasons();
        let set: Vec<String> = r
            .reject_set(None)
            .unwrap()
            .into_iter()
            .map(|c| r.name(c))
            .collect();
        // The policy drops (NO_SOCKET and SOCKET_FILTER are opt-in) that this kernel has, in
        // its order (by value, as tracefs numbers them).
        let tracefs = tracefs_reasons();
        let mut want: Vec<(u32, &str)> = [
            "NETFILTER_DROP",
            "BPF_CGROUP_EGRESS",
            "TC_EGRESS",
            "XDP",
            "TC_INGRESS",
        ]
        .into_iter()
        .filter_map(|name| {
            tracefs
                .iter()
                .find(|(_, n)| n.as_str() == name)
                .map(|(v, _)| (*v, name))
        })
        .collect();
        want.sort();
        let want: Vec<&str> = want.into_iter().map(|(_, n)| n).collect();
        assert!(want.contains(&"NETFILTER_DROP"), "{want:?}");
        assert_eq!(set, want);
    }

    #[test]
    fn only_reasons_outside_the_policy_set_are_exempted_for_raw_sockets() {
        let r = kernel_reasons();
        let default = r.reject_set(None).unwrap();
        assert_eq!(r.exemptible(&default), Vec::<String>::new());
        let req = ["netfilter_drop", "no_socket", "socket_filter", "TCP_CSUM"].map(String::from);
        let chosen = r.reject_set(Some(&req)).unwrap();
        assert_eq!(r.exemptible(&chosen), ["NO_SOCKET", "TCP_CSUM"]);
    }

    #[test]
    fn requested_reasons_accept_prefix_and_case_and_reject_unknown_names() {
        let r = kernel_reasons();
        let req = vec![
            "netfilter_drop".to_string(),
            "SKB_DROP_REASON_TCP_CSUM".to_string(),
        ];
        let tracefs = tracefs_reasons();
        assert_eq!(
            r.reject_set(Some(&req)).unwrap(),
            BTreeSet::from([
                tracefs_code(&tracefs, "TCP_CSUM"),
                tracefs_code(&tracefs, "NETFILTER_DROP")
            ])
        );
        let e = r
            .reject_set(Some(&["FIREWALL".to_string()]))
            .unwrap_err()
            .to_string();
        // Listed by value, as tracefs numbers them (without the MAX sentinel).
        let names: Vec<&str> = tracefs
            .values()
            .map(String::as_str)
            .filter(|n| *n != "MAX")
            .collect();
        assert_eq!(
            e,
            format!(
                "unknown drop reason \"FIREWALL\" in --reject-reasons; this kernel's reasons are: {}",
                names.join(",")
            )
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn help_documents_the_default_reject_reasons() {
        use clap::CommandFactory as _;
        let cli = crate::cli::Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        let arg = run
            .get_arguments()
            .find(|a| a.get_id() == "reject_reasons")
            .expect("--reject-reasons");
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .expect("help text")
            .to_string();
        // Exactly as --reject-reasons takes it: no space inside the list.
        assert!(
            help.contains(&format!("[default: {}:", DEFAULT_REJECT_REASONS.join(","))),
            "{help}"
        );
    }

    #[test]
    fn enum_without_the_prefix_and_sentinels_is_filtered() {
        let r = DropReasons::from_members(vec![
            ("SKB_NOT_DROPPED_YET".into(), 0),
            ("SKB_CONSUMED".into(), 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED".into(), 2),
            ("SKB_DROP_REASON_NO_SOCKET".into(), 3),
            ("SKB_DROP_REASON_MAX".into(), 4),
            ("SKB_DROP_REASON_SUBSYS_MASK".into(), 0xffff_0000),
        ]);
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            [(2, "NOT_SPECIFIED"), (3, "NO_SOCKET")]
        );
    }
}
