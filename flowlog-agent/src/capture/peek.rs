//! Reads the open window's maps without changing them (`flowlog top`): lookups only, never a
//! delete or an update, so the next cut drains exactly what it would have drained.
//!
//! The handles are duplicates of the [`Collector`](super::collect::Collector)'s file
//! descriptors, so a peek runs on the control socket's thread while the capture loop owns the
//! collector. A flip between reading `WINDOW` and walking the slot makes one peek read the slot
//! being drained: its counts are then partial, and the next peek reads the new window.

use std::{os::fd::AsFd as _, sync::Arc};

use anyhow::Context;
use aya::maps::{Array, IterableMap, Map, MapData, PerCpuHashMap};
use flowlog_common::{
    FLOW_MAPS, FLOW4_MAPS, FlowKey, FlowKey4, FlowStats, REJECT_MAPS, RejectKey, RejectStats,
    WINDOW_MAP,
};

use crate::capture::{
    collect::{Collector, FlowTotals, RejectTotals},
    map_batch,
    reject::reasons::DropReasons,
};

/// The open window as the maps hold it now.
#[derive(Debug, Clone, Default)]
pub struct Peek {
    /// Every flow's counters as the TC hooks counted them (REJECT packets the hook saw
    /// included; see [`RejectTotals::tc_packets`]).
    pub flows: Vec<(FlowKey, FlowTotals)>,
    pub rejects: Vec<(RejectKey, RejectTotals)>,
    /// Capacity of each flow map (IPv4 and IPv6 have one each) and of the REJECT map
    /// (entries).
    pub max_flows: u32,
    pub max_rejects: u32,
}

/// Read-only handles on both slots of the flow and REJECT maps, and on `WINDOW`.
pub struct Peeker {
    window: Array<MapData, u32>,
    flows: [PerCpuHashMap<MapData, FlowKey, FlowStats>; 2],
    flows4: [PerCpuHashMap<MapData, FlowKey4, FlowStats>; 2],
    rejects: [PerCpuHashMap<MapData, RejectKey, RejectStats>; 2],
    drop_reasons: Option<Arc<DropReasons>>,
    /// Possible CPUs: the number of values of each per-CPU entry.
    cpus: usize,
}

/// Every entry of `map`, summed over CPUs: batched where the kernel can (>= 5.6), else aya's
/// iterator (two syscalls per entry).
fn read_all<K: aya::Pod, V: aya::Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    cpus: usize,
    sum: impl Fn(&[V]) -> T,
) -> anyhow::Result<Vec<(K, T)>> {
    let mut out = Vec::new();
    match map_batch::lookup_all(map, cpus, |k, v| out.push((k, sum(v)))) {
        Ok(_) => return Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => return Err(e).context("BPF_MAP_LOOKUP_BATCH failed"),
    }
    // aya's walk already skips an entry deleted between its key and its lookup.
    for entry in map.iter() {
        let (key, values) = entry?;
        out.push((key, sum(&values)));
    }
    Ok(out)
}

/// A second handle on the map behind `data`.
fn duplicate(data: &MapData, name: &str) -> anyhow::Result<Map> {
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("cannot duplicate the descriptor of {name}"))?;
    let data = MapData::from_fd(fd).with_context(|| format!("cannot reopen {name}"))?;
    Map::from_map_data(data).with_context(|| format!("map {name} has an unknown type"))
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    data: &MapData,
    name: &str,
) -> anyhow::Result<T> {
    T::try_from(duplicate(data, name)?).with_context(|| format!("map {name} has another type"))
}

impl Peeker {
    /// Handles on the same maps as the collector's (`window`, `flows`, `rejects` slots).
    /// Read-only handles on `collector`'s maps (duplicated descriptors).
    pub fn of(collector: &Collector) -> anyhow::Result<Self> {
        let m = collector.map_handles();
        Peeker::new(m.window, m.flows, m.flows4, m.rejects, m.drop_reasons)
    }

    pub fn new(
        window: &MapData,
        flows: [&MapData; 2],
        flows4: [&MapData; 2],
        rejects: [&MapData; 2],
        drop_reasons: Option<Arc<DropReasons>>,
    ) -> anyhow::Result<Self> {
        Ok(Peeker {
            window: typed(window, WINDOW_MAP)?,
            flows: [
                typed(flows[0], FLOW_MAPS[0])?,
                typed(flows[1], FLOW_MAPS[1])?,
            ],
            flows4: [
                typed(flows4[0], FLOW4_MAPS[0])?,
                typed(flows4[1], FLOW4_MAPS[1])?,
            ],
            rejects: [
                typed(rejects[0], REJECT_MAPS[0])?,
                typed(rejects[1], REJECT_MAPS[1])?,
            ],
            drop_reasons,
            cpus: aya::util::nr_cpus()
                .map_err(|(_, e)| e)
                .context("cannot read the number of possible CPUs")?,
        })
    }

    /// Name of a kernel drop reason (as records name it).
    pub fn reason_name(&self, code: u32) -> String {
        match &self.drop_reasons {
            Some(names) => names.name(code),
            None => format!("DROP_REASON_{code}"),
        }
    }

    /// Reads the active slot.
    pub fn peek(&self) -> anyhow::Result<Peek> {
        let active = self
            .window
            .get(&0, 0)
            .context("cannot read the WINDOW map")? as usize
            & 1;
        let mut flows = read_all(&self.flows[active], self.cpus, |v| FlowTotals::sum(v))
            .with_context(|| format!("cannot read {}", FLOW_MAPS[active]))?;
        let flows4 = read_all(&self.flows4[active], self.cpus, |v| FlowTotals::sum(v))
            .with_context(|| format!("cannot read {}", FLOW4_MAPS[active]))?;
        flows.extend(flows4.into_iter().map(|(k, t)| (k.to_flow_key(), t)));
        Ok(Peek {
            max_flows: self.flows[active].map().info()?.max_entries(),
            max_rejects: self.rejects[active].map().info()?.max_entries(),
            flows,
            rejects: read_all(&self.rejects[active], self.cpus, |v| RejectTotals::sum(v))
                .with_context(|| format!("cannot read {}", REJECT_MAPS[active]))?,
        })
    }
}
