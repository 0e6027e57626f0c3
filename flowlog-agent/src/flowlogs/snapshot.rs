//! The `Snapshot` control request (`flowlog top`): the open window as the kernel maps hold it
//! now, read without draining ([`Peeker`]), with each interface's name and owner.
//!
//! Packets and bytes are the window's so far: a flow's ACCEPT counts are what the TC hook
//! counted less its REJECT packets the hook had seen, as its records will say.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use crate::{
    capture::{collect::Direction, peek::Peeker},
    flowlogs::api::ApiError,
    inventory::{
        discover::Interface,
        owners::{Owner, OwnerKind},
    },
    records::key_addr,
};

/// At most this many flows (and as many REJECT entries) are answered, the largest by bytes: an
/// answer stays a few hundred KB with a full map. Interface totals and map fill count them all.
pub const MAX_ENTRIES: usize = 2000;

/// The open window, as `Snapshot` answers it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Snapshot {
    /// Unix seconds: where the open window began.
    pub window_start: u64,
    /// Unix seconds when the maps were read.
    pub now: f64,
    pub interfaces: Vec<InterfaceSummary>,
    /// ACCEPT counts per flow, largest first, at most [`MAX_ENTRIES`] (flows whose every
    /// packet was rejected are left out).
    pub flows: Vec<FlowEntry>,
    /// REJECT counts per flow and kernel drop reason.
    pub rejects: Vec<FlowEntry>,
    pub map: MapFill,
}

/// One watched interface's totals in the open window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceSummary {
    pub ifindex: u32,
    pub name: String,
    /// Who is behind it (`container web-1`, `vm db`, ...), when known.
    pub owner: Option<String>,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub reject_packets: u64,
    pub reject_bytes: u64,
}

/// One flow (one direction on one interface) in the open window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlowEntry {
    pub ifindex: u32,
    pub interface: String,
    pub direction: String,
    pub protocol: u8,
    pub src_addr: String,
    pub dst_addr: String,
    pub src_port: u16,
    pub dst_port: u16,
    pub packets: u64,
    pub bytes: u64,
    /// For a REJECT entry: the kernel's drop reason (`NETFILTER_DROP`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How full the flow and REJECT maps of the open window are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapFill {
    pub flows: u64,
    pub max_flows: u64,
    pub rejects: u64,
    pub max_rejects: u64,
}

/// An interface as a snapshot names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Label {
    name: String,
    owner: Option<String>,
}

/// Who is behind an interface, in a few words.
pub fn owner_label(owner: &Owner) -> Option<String> {
    match &owner.kind {
        OwnerKind::Unknown => None,
        OwnerKind::Containers(cs) => {
            let c = cs.first()?;
            Some(match (&c.pod_namespace, &c.pod_name) {
                (Some(ns), Some(pod)) => format!("pod {ns}/{pod}"),
                _ => format!(
                    "container {}",
                    c.name
                        .clone()
                        .unwrap_or_else(|| c.id.chars().take(12).collect())
                ),
            })
        }
        OwnerKind::Vm(vm) => Some(format!(
            "vm {}",
            vm.name.clone().unwrap_or_else(|| vm.vmm.clone())
        )),
        OwnerKind::Process(p) => Some(format!("process {}[{}]", p.comm, p.pid)),
    }
}

/// What `Snapshot` reads: the peeker, the watched interfaces and the open window's start, the
/// last two kept current by the capture loop.
pub struct SnapshotSource {
    peeker: Mutex<Peeker>,
    interfaces: Mutex<BTreeMap<u32, Label>>,
    window_start: AtomicU64,
}

impl SnapshotSource {
    pub fn new(peeker: Peeker, window_start: u64) -> Self {
        SnapshotSource {
            peeker: Mutex::new(peeker),
            interfaces: Mutex::new(BTreeMap::new()),
            window_start: AtomicU64::new(window_start),
        }
    }

    /// The open window began at `start` (Unix seconds).
    pub fn set_window_start(&self, start: u64) {
        self.window_start.store(start, Ordering::Relaxed);
    }

    /// The interfaces the capture is attached to now (`attached`: ifindex and name), with
    /// their owners from `host`.
    pub fn set_interfaces<'a>(
        &self,
        attached: impl Iterator<Item = (u32, &'a str)>,
        host: &BTreeMap<u32, Interface>,
    ) {
        let labels = attached
            .map(|(i, name)| {
                let owner = host
                    .get(&i)
                    .and_then(|iface| iface.owner.as_deref())
                    .and_then(owner_label);
                (
                    i,
                    Label {
                        name: name.to_string(),
                        owner,
                    },
                )
            })
            .collect();
        if let Ok(mut l) = self.interfaces.lock() {
            *l = labels;
        }
    }

    /// Reads the open window.
    pub fn snapshot(&self) -> Result<Snapshot, ApiError> {
        let internal = |e: String| ApiError::new("InternalError", e);
        let peeker = self
            .peeker
            .lock()
            .map_err(|_| internal("the capture is unavailable".into()))?;
        let peek = peeker
            .peek()
            .map_err(|e| internal(format!("cannot read the window's maps: {e:#}")))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let labels = self
            .interfaces
            .lock()
            .map_err(|_| internal("the interface list is unavailable".into()))?
            .clone();
        let name = |i: u32| {
            labels
                .get(&i)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| format!("if{i}"))
        };
        let entry = |k: &flowlog_common::FlowKey, packets, bytes, reason| FlowEntry {
            ifindex: k.ifindex,
            interface: name(k.ifindex),
            direction: Direction::of_key(k.direction).as_str().to_string(),
            protocol: k.protocol,
            src_addr: key_addr(k.family, k.src_addr).to_string(),
            dst_addr: key_addr(k.family, k.dst_addr).to_string(),
            src_port: k.src_port,
            dst_port: k.dst_port,
            packets,
            bytes,
            reason,
        };
        // REJECT packets the TC hook saw are in the flow's counts too.
        let mut seen_rejected: BTreeMap<flowlog_common::FlowKey, (u64, u64)> = BTreeMap::new();
        let mut rejects = Vec::new();
        let mut ifaces: BTreeMap<u32, InterfaceSummary> = labels
            .iter()
            .map(|(i, l)| {
                (
                    *i,
                    InterfaceSummary {
                        ifindex: *i,
                        name: l.name.clone(),
                        owner: l.owner.clone(),
                        ..InterfaceSummary::default()
                    },
                )
            })
            .collect();
        fn summary(ifaces: &mut BTreeMap<u32, InterfaceSummary>, i: u32) -> &mut InterfaceSummary {
            ifaces.entry(i).or_insert_with(|| InterfaceSummary {
                ifindex: i,
                name: format!("if{i}"),
                ..InterfaceSummary::default()
            })
        }
        for (k, t) in &peek.rejects {
            let seen = seen_rejected.entry(k.flow).or_default();
            seen.0 += t.tc_packets;
            seen.1 += t.tc_bytes;
            let s = summary(&mut ifaces, k.flow.ifindex);
            s.reject_packets += t.packets;
            s.reject_bytes += t.bytes;
            rejects.push(entry(
                &k.flow,
                t.packets,
                t.bytes,
                Some(peeker.reason_name(k.reason)),
            ));
        }
        let mut flows = Vec::new();
        for (k, t) in &peek.flows {
            let (rp, rb) = seen_rejected.get(k).copied().unwrap_or_default();
            let (packets, bytes) = (t.packets.saturating_sub(rp), t.bytes.saturating_sub(rb));
            if packets == 0 {
                continue;
            }
            let s = summary(&mut ifaces, k.ifindex);
            s.flows += 1;
            s.packets += packets;
            s.bytes += bytes;
            flows.push(entry(k, packets, bytes, None));
        }
        let by_bytes = |a: &FlowEntry, b: &FlowEntry| b.bytes.cmp(&a.bytes).then(a.cmp_key(b));
        flows.sort_by(by_bytes);
        rejects.sort_by(by_bytes);
        flows.truncate(MAX_ENTRIES);
        rejects.truncate(MAX_ENTRIES);
        Ok(Snapshot {
            window_start: self.window_start.load(Ordering::Relaxed),
            now,
            interfaces: ifaces.into_values().collect(),
            flows,
            rejects,
            map: MapFill {
                flows: peek.flows.len() as u64,
                max_flows: peek.max_flows.into(),
                rejects: peek.rejects.len() as u64,
                max_rejects: peek.max_rejects.into(),
            },
        })
    }
}

impl FlowEntry {
    /// A stable order among entries of equal counts.
    fn cmp_key(&self, other: &Self) -> std::cmp::Ordering {
        (
            &self.interface,
            &self.direction,
            self.protocol,
            &self.src_addr,
            &self.dst_addr,
            self.src_port,
            self.dst_port,
        )
            .cmp(&(
                &other.interface,
                &other.direction,
                other.protocol,
                &other.src_addr,
                &other.dst_addr,
                other.src_port,
                other.dst_port,
            ))
    }
}
