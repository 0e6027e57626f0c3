//! Where a window is cut: flip the slot the datapath writes to, wait until no program can
//! still be writing to the old slot, then read it; once the window's records are on disk,
//! [`Collector::recorded`] clears it.
//!
//! Two copies of every per-window map exist (slot A and slot B). The programs read the active
//! slot from the `WINDOW` array on every packet, so after a flip each packet lands in exactly
//! one window: none is counted between a read and a delete, and none twice.
//!
//! A crash at any point of a cut loses nothing when the maps are pinned: the idle slot keeps
//! its counts until they are durable, and the `CUTS` array says which window it holds and
//! whether that window was recorded. The next agent ([`Collector::adopt`]) hands an
//! unrecorded slot to the flow logs once ([`Collector::take_carried`]) and clears a recorded
//! one.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};
use flowlog_common::{
    CUT_IDLE_END, CUT_IDLE_SEQ, CUT_IDLE_START, CUT_RECORDED_SEQ, CUTS_LEN, CUTS_MAP, DROP_MAPS,
    DropCounters, DropReasonKey, FLOW_MAPS, FLOW4_MAPS, FlowKey, FlowKey4, FlowStats, IFACE_MAPS,
    IfaceCounters, IfaceKey, LOST_MAP, REJECT_MAPS, RejectKey, RejectStats, WINDOW_MAP,
};

pub use crate::capture::drained::{Direction, DrainedWindow, FlowTotals, RejectTotals, Window};
use crate::capture::{
    calibrate::Calibrator,
    clock::JiffiesClock,
    flow_sink::{self, CollectFlows, FlowSink},
    map_batch,
    read_keys::ReadKeys,
    reject::reasons::DropReasons,
};

/// Longer than any single program run. The datapath programs are straight-line code of a few
/// hundred instructions that run with preemption disabled (softirq or RCU read side), so a
/// program that read the old slot index finishes within microseconds of the flip.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(20);

fn sum_counters<'a>(per_cpu: impl IntoIterator<Item = &'a IfaceCounters>) -> IfaceCounters {
    per_cpu
        .into_iter()
        .fold(IfaceCounters::default(), |mut a, c| {
            a.add(c);
            a
        })
}

/// Borrowed handles on a [`Collector`]'s maps ([`Collector::map_handles`]).
pub struct MapHandles<'a> {
    pub window: &'a MapData,
    pub flows: [&'a MapData; 2],
    pub flows4: [&'a MapData; 2],
    pub rejects: [&'a MapData; 2],
    pub drop_reasons: Option<Arc<DropReasons>>,
}

/// A slot that was read but whose window's records are not yet known to be on disk.
#[derive(Debug, Clone, Copy)]
struct Unrecorded {
    slot: usize,
    /// The cut's number in `CUTS`.
    seq: u64,
}

/// What [`Collector::adopt`] found in the slot the earlier agent was cutting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleSlot {
    /// Empty: the earlier agent finished its last cut (or never cut).
    Empty,
    /// Its window's records had reached disk before the agent stopped: cleared, not repeated.
    Recorded { flows: usize },
    /// The agent stopped before its records reached disk: handed to the flow logs as that
    /// window ([`Collector::take_carried`]).
    Carried { flows: usize },
}

/// The window maps, taken out of the loaded object.
pub struct Collector {
    window: Array<MapData, u32>,
    cuts: Array<MapData, u64>,
    flows: [PerCpuHashMap<MapData, FlowKey, FlowStats>; 2],
    /// The IPv4 flows of each slot, under the compact key.
    flows4: [PerCpuHashMap<MapData, FlowKey4, FlowStats>; 2],
    ifaces: [PerCpuHashMap<MapData, IfaceKey, IfaceCounters>; 2],
    lost: PerCpuArray<MapData, IfaceCounters>,
    rejects: [PerCpuHashMap<MapData, RejectKey, RejectStats>; 2],
    other_drops: [PerCpuHashMap<MapData, DropReasonKey, DropCounters>; 2],
    drop_reasons: Option<Arc<DropReasons>>,
    /// Counts an earlier agent left unrecorded in the idle slot (it stopped between a flip and
    /// its records reaching disk), the window they belong to, and the clock for their stamps.
    carried: Option<(Window, Drained, JiffiesClock)>,
    /// Readings for the clock that converts each cut's stamps.
    calibrator: Calibrator,
    /// The slot read by the last cut (or holding the carried counts), until [`Self::recorded`].
    unrecorded: Option<Unrecorded>,
    /// Number of the last cut (kept in `CUTS` across agents).
    seq: u64,
    active: u32,
    grace: Duration,
    /// Possible CPUs: the number of values of each per-CPU map entry.
    cpus: usize,
    /// Per slot, the flow map keys its last read returned: what clearing it deletes.
    keys: [SlotKeys; 2],
}

/// The keys one slot's flow maps held when they were read ([`Collector::clear_slot`]).
#[derive(Debug, Default)]
struct SlotKeys {
    flows: ReadKeys<FlowKey>,
    flows4: ReadKeys<FlowKey4>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// One slot's contents.
#[derive(Debug, Default)]
struct Drained {
    flows: Vec<(FlowKey, FlowTotals)>,
    ifaces: Vec<(IfaceKey, IfaceCounters)>,
    lost: IfaceCounters,
    rejects: Vec<(RejectKey, RejectTotals)>,
    other_drops: Vec<(DropReasonKey, DropCounters)>,
}

/// Adds `more` into `into`, merging values of equal keys with `merge`.
fn merge_into<K: Ord + Copy, V>(
    into: &mut Vec<(K, V)>,
    more: Vec<(K, V)>,
    merge: impl Fn(&mut V, V),
) {
    let mut all: BTreeMap<K, V> = std::mem::take(into).into_iter().collect();
    for (k, v) in more {
        match all.get_mut(&k) {
            Some(old) => merge(old, v),
            None => {
                all.insert(k, v);
            }
        }
    }
    *into = all.into_iter().collect();
}

/// The earliest non-zero of two first-seen stamps.
fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

impl Drained {
    fn is_empty(&self) -> bool {
        self.flows.is_empty()
            && self.ifaces.is_empty()
            && self.lost == IfaceCounters::default()
            && self.rejects.is_empty()
            && self.other_drops.is_empty()
    }

    /// Adds an earlier slot's counts, as per-CPU values are summed.
    fn absorb(&mut self, other: Drained) {
        merge_into(&mut self.flows, other.flows, |a, b| {
            a.packets += b.packets;
            a.bytes += b.bytes;
            a.tcp_flags |= b.tcp_flags;
            a.first_seen_jiffies = earliest(a.first_seen_jiffies, b.first_seen_jiffies);
            a.last_seen_jiffies = a.last_seen_jiffies.max(b.last_seen_jiffies);
        });
        merge_into(&mut self.ifaces, other.ifaces, |a, b| a.add(&b));
        self.lost.add(&other.lost);
        merge_into(&mut self.rejects, other.rejects, |a, b| {
            a.packets += b.packets;
            a.bytes += b.bytes;
            a.tc_packets += b.tc_packets;
            a.tc_bytes += b.tc_bytes;
            a.tcp_flags |= b.tcp_flags;
            a.first_seen_jiffies = earliest(a.first_seen_jiffies, b.first_seen_jiffies);
            a.last_seen_jiffies = a.last_seen_jiffies.max(b.last_seen_jiffies);
        });
        merge_into(&mut self.other_drops, other.other_drops, |a, b| {
            a.packets += b.packets;
            a.bytes += b.bytes;
        });
    }
}

impl Collector {
    /// Takes fresh maps: the programs start in slot 0.
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let mut c = Self::take_maps(ebpf, true)?;
        c.window
            .set(0, 0, 0)
            .context("cannot reset the WINDOW map")?;
        for i in 0..CUTS_LEN {
            c.cuts.set(i, 0, 0).context("cannot reset the CUTS map")?;
        }
        Ok(c)
    }

    /// Takes maps an earlier agent pinned, its programs still counting into them: carries on
    /// with the slot they write to now (its counts go into this agent's first window). The
    /// other slot holds what the earlier agent was cutting when it stopped, if anything:
    /// cleared if its records had reached disk, else kept for [`Self::take_carried`]. Nothing
    /// writes to that slot until this agent's first flip.
    pub fn adopt(ebpf: &mut Ebpf) -> anyhow::Result<(Self, IdleSlot)> {
        let mut c = Self::take_maps(ebpf, false)?;
        c.active = c.window.get(&0, 0).context("cannot read the WINDOW map")? & 1;
        let cut = |i| c.cuts.get(&i, 0).context("cannot read the CUTS map");
        let (start, end, seq, recorded) = (
            cut(CUT_IDLE_START)?,
            cut(CUT_IDLE_END)?,
            cut(CUT_IDLE_SEQ)?,
            cut(CUT_RECORDED_SEQ)?,
        );
        c.seq = seq;
        let idle = c.active as usize ^ 1;
        let held = c.read_slot(idle)?;
        let flows = held.flows.len();
        let found = if held.is_empty() {
            IdleSlot::Empty
        } else if seq != 0 && recorded >= seq {
            c.clear_slot(idle)?;
            IdleSlot::Recorded { flows }
        } else {
            c.carried = Some((Window { start, end }, held, c.calibrator.clock()?));
            c.unrecorded = Some(Unrecorded { slot: idle, seq });
            IdleSlot::Carried { flows }
        };
        Ok((c, found))
    }

    /// The window an earlier agent was cutting when it stopped, its records not yet on disk
    /// ([`IdleSlot::Carried`]), once: hand it to the flow logs, then call [`Self::recorded`].
    pub fn take_carried(&mut self) -> Option<DrainedWindow> {
        let (window, d, clock) = self.carried.take()?;
        Some(DrainedWindow {
            window,
            flows: d.flows,
            ifaces: d.ifaces.into_iter().collect(),
            lost: d.lost,
            clock,
            rejects: d.rejects,
            other_drops: d.other_drops,
            drop_reasons: self.drop_reasons.clone(),
        })
    }

    /// The slot the programs write to now (0 or 1).
    pub fn active_slot(&self) -> u32 {
        self.active
    }

    /// `fresh`: the maps are new, not adopted (see [`Calibrator::new`]).
    fn take_maps(ebpf: &mut Ebpf, fresh: bool) -> anyhow::Result<Self> {
        let window: Array<MapData, u32> = take(ebpf, WINDOW_MAP)?;
        Ok(Collector {
            window,
            cuts: take(ebpf, CUTS_MAP)?,
            flows: [take(ebpf, FLOW_MAPS[0])?, take(ebpf, FLOW_MAPS[1])?],
            flows4: [take(ebpf, FLOW4_MAPS[0])?, take(ebpf, FLOW4_MAPS[1])?],
            ifaces: [take(ebpf, IFACE_MAPS[0])?, take(ebpf, IFACE_MAPS[1])?],
            lost: take(ebpf, LOST_MAP)?,
            rejects: [take(ebpf, REJECT_MAPS[0])?, take(ebpf, REJECT_MAPS[1])?],
            other_drops: [take(ebpf, DROP_MAPS[0])?, take(ebpf, DROP_MAPS[1])?],
            drop_reasons: None,
            carried: None,
            calibrator: Calibrator::new(ebpf, fresh)?,
            unrecorded: None,
            seq: 0,
            active: 0,
            grace: DEFAULT_GRACE,
            cpus: nr_cpus()
                .map_err(|(_, e)| e)
                .context("cannot read the number of possible CPUs")?,
            keys: Default::default(),
        })
    }

    /// Names for the drop reasons of the windows from now on (set once the drop program runs).
    pub fn set_drop_reasons(&mut self, reasons: Arc<DropReasons>) {
        self.drop_reasons = Some(reasons);
    }

    /// The maps of both slots and the drop-reason names, for readers that must not drain
    /// (`flowlog top`'s [`Peeker`](super::peek::Peeker)).
    pub fn map_handles(&self) -> MapHandles<'_> {
        use aya::maps::IterableMap as _;
        MapHandles {
            window: self.window.map(),
            flows: [self.flows[0].map(), self.flows[1].map()],
            flows4: [self.flows4[0].map(), self.flows4[1].map()],
            rejects: [self.rejects[0].map(), self.rejects[1].map()],
            drop_reasons: self.drop_reasons.clone(),
        }
    }

    /// Ends `window`: new packets go to the other slot from now on, and everything the old
    /// slot counted is returned. The old slot keeps its counts until [`Self::recorded`] (call
    /// it once the window's records are on disk); the next cut calls it if the caller did not.
    pub fn cut(&mut self, window: Window) -> anyhow::Result<DrainedWindow> {
        let mut all = CollectFlows::default();
        let mut d = self.cut_into(window, &mut all)?;
        d.flows = all.0;
        Ok(d)
    }

    /// As [`Collector::cut`], but the flows go to `sink` in batches as they are read (see
    /// [`flow_sink`]) instead of into the returned window, whose `flows` is empty. The other
    /// maps (small) are read first and given to `sink.begin`. On an error, the flows read
    /// before it have been handed over.
    pub fn cut_into(
        &mut self,
        window: Window,
        sink: &mut dyn FlowSink,
    ) -> anyhow::Result<DrainedWindow> {
        let carried = self.carried.take();
        // The slot about to become active must be empty.
        self.recorded()?;
        let idle = self.active as usize;
        self.seq += 1;
        // Which window the slot about to go idle holds, written before the flip: an agent that
        // adopts the maps after a crash reads it.
        for (i, v) in [
            (CUT_IDLE_START, window.start),
            (CUT_IDLE_END, window.end),
            (CUT_IDLE_SEQ, self.seq),
        ] {
            self.cuts
                .set(i, v, 0)
                .context("cannot write the CUTS map")?;
        }
        self.active ^= 1;
        self.window
            .set(0, self.active, 0)
            .context("cannot flip the WINDOW map")?;
        std::thread::sleep(self.grace);
        // After the flip and the grace: every stamp in the slot is older than this reading.
        let clock = self.calibrator.clock()?;
        let mut d = self.read_rest(idle)?;
        self.unrecorded = Some(Unrecorded {
            slot: idle,
            seq: self.seq,
        });
        // Only when the caller did not take it (Self::take_carried): counted with this window
        // rather than lost.
        let carried_flows = carried.map(|(_, mut carry, _)| {
            let flows = std::mem::take(&mut carry.flows);
            d.absorb(carry);
            flows
        });
        let header = DrainedWindow {
            window,
            flows: Vec::new(),
            ifaces: d.ifaces.into_iter().collect(),
            lost: d.lost,
            clock,
            rejects: d.rejects,
            other_drops: d.other_drops,
            drop_reasons: self.drop_reasons.clone(),
        };
        sink.begin(&header);
        if let Some(flows) = carried_flows {
            flow_sink::hand_over(&flows, sink);
        }
        self.read_flows_into(idle, sink)?;
        Ok(header)
    }

    /// Hands both flow maps of slot `idle` (IPv6 and the compact IPv4 keys) to `sink`, leaving
    /// them as they are. The programs chose the slot once per packet, so no packet is in the
    /// other slot's maps.
    /// Their keys are kept until the slot is cleared.
    fn read_flows_into(&mut self, idle: usize, sink: &mut dyn FlowSink) -> anyhow::Result<()> {
        let keys = &mut self.keys[idle];
        *keys = SlotKeys::default();
        flow_sink::read_into(&self.flows[idle], self.cpus, |k| k, sink, &mut keys.flows)
            .with_context(|| format!("cannot read {}", FLOW_MAPS[idle]))?;
        flow_sink::read_into(
            &self.flows4[idle],
            self.cpus,
            |k: FlowKey4| k.to_flow_key(),
            sink,
            &mut keys.flows4,
        )
        .with_context(|| format!("cannot read {}", FLOW4_MAPS[idle]))?;
        Ok(())
    }

    /// The last cut's records (or the carried window's) are on disk: marks it recorded in
    /// `CUTS`, then clears its slot. A crash between the two leaves a slot the next agent
    /// clears; a crash before the mark, one it hands out again.
    pub fn recorded(&mut self) -> anyhow::Result<()> {
        let Some(u) = self.unrecorded.take() else {
            return Ok(());
        };
        self.cuts
            .set(CUT_RECORDED_SEQ, u.seq, 0)
            .context("cannot write the CUTS map")?;
        self.clear_slot(u.slot)
    }

    /// Reads slot `idle` (no program may be writing to it), leaving it as it is.
    fn read_slot(&mut self, idle: usize) -> anyhow::Result<Drained> {
        let mut all = CollectFlows::default();
        self.read_flows_into(idle, &mut all)?;
        Ok(Drained {
            flows: all.0,
            ..self.read_rest(idle)?
        })
    }

    /// Reads every map of slot `idle` but the flows, leaving them as they are.
    fn read_rest(&mut self, idle: usize) -> anyhow::Result<Drained> {
        let cpus = self.cpus;
        let ifaces = map_batch::read_all(&self.ifaces[idle], cpus, |v| sum_counters(v))
            .with_context(|| format!("cannot read {}", IFACE_MAPS[idle]))?;
        let lost = sum_counters(
            self.lost
                .get(&(idle as u32), 0)
                .context("cannot read the LOST map")?
                .iter(),
        );
        let rejects = map_batch::read_all(&self.rejects[idle], cpus, |v| RejectTotals::sum(v))
            .with_context(|| format!("cannot read {}", REJECT_MAPS[idle]))?;
        let other_drops = map_batch::read_all(&self.other_drops[idle], cpus, |v| {
            v.iter().fold(DropCounters::default(), |a, c| DropCounters {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            })
        })
        .with_context(|| format!("cannot read {}", DROP_MAPS[idle]))?;
        Ok(Drained {
            flows: Vec::new(),
            ifaces,
            lost,
            rejects,
            other_drops,
        })
    }

    /// Empties slot `idle` (no program may be writing to it). The flow maps, by far the
    /// largest, by the keys their last read returned.
    fn clear_slot(&mut self, idle: usize) -> anyhow::Result<()> {
        let cpus = self.cpus;
        let keys = std::mem::take(&mut self.keys[idle]);
        clear_read(&mut self.flows[idle], &keys.flows, cpus)
            .with_context(|| format!("cannot clear {}", FLOW_MAPS[idle]))?;
        clear_read(&mut self.flows4[idle], &keys.flows4, cpus)
            .with_context(|| format!("cannot clear {}", FLOW4_MAPS[idle]))?;
        drop(keys);
        clear_all(&mut self.ifaces[idle], cpus)
            .with_context(|| format!("cannot clear {}", IFACE_MAPS[idle]))?;
        self.clear_lost(idle as u32)?;
        clear_all(&mut self.rejects[idle], cpus)
            .with_context(|| format!("cannot clear {}", REJECT_MAPS[idle]))?;
        clear_all(&mut self.other_drops[idle], cpus)
            .with_context(|| format!("cannot clear {}", DROP_MAPS[idle]))
    }

    fn clear_lost(&mut self, slot: u32) -> anyhow::Result<()> {
        let values = self
            .lost
            .get(&slot, 0)
            .context("cannot read the LOST map")?;
        if sum_counters(values.iter()) != IfaceCounters::default() {
            let zeros = PerCpuValues::try_from(vec![IfaceCounters::default(); self.cpus])?;
            self.lost
                .set(slot, zeros, 0)
                .context("cannot reset the LOST map")?;
        }
        Ok(())
    }
}

/// Empties an idle flow map whose entries were read into `keys`: deletes those keys in batches
/// (no value is copied out, unlike [`clear_all`]), then, if anything is left (keys not known,
/// as for a slot adopted from an earlier agent; a read that failed part way; a kernel without
/// batch operations), every entry.
fn clear_read<K: aya::Pod + Copy, V: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    keys: &ReadKeys<K>,
    cpus: usize,
) -> anyhow::Result<()> {
    if !keys.is_empty() {
        for chunk in keys.chunks() {
            match map_batch::delete_keys(map, chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => break,
                Err(e) => return Err(e).context("BPF_MAP_DELETE_BATCH failed"),
            }
        }
        if map_batch::is_empty(map).context("cannot look for entries left")? {
            return Ok(());
        }
    }
    clear_all(map, cpus)
}

/// Deletes every entry of an idle per-CPU map, in batches where the kernel supports it.
/// Keys are gathered before any delete in the fallback: deleting while iterating restarts the
/// kernel's walk.
fn clear_all<K: aya::Pod + Copy, V: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    cpus: usize,
) -> anyhow::Result<()> {
    match map_batch::lookup_and_delete_all(map, cpus, |_, _| {}) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => return Err(e).context("BPF_MAP_LOOKUP_AND_DELETE_BATCH failed"),
    }
    let keys: Vec<K> = map.keys().collect::<Result<_, _>>()?;
    for key in &keys {
        map.remove(key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn per_cpu_reject_stats_sum() {
        let a = RejectStats {
            packets: 2,
            bytes: 20,
            tc_packets: 1,
            tc_bytes: 10,
            first_seen_jiffies: 50,
            last_seen_jiffies: 60,
            tcp_flags: 2,
            _pad: [0; 7],
        };
        let b = RejectStats {
            packets: 1,
            bytes: 10,
            tc_packets: 1,
            tc_bytes: 10,
            first_seen_jiffies: 40,
            last_seen_jiffies: 45,
            tcp_flags: 4,
            _pad: [0; 7],
        };
        let t = RejectTotals::sum([a, RejectStats::default(), b].iter());
        assert_eq!(
            t,
            RejectTotals {
                packets: 3,
                bytes: 30,
                tc_packets: 2,
                tc_bytes: 20,
                first_seen_jiffies: 40,
                last_seen_jiffies: 60,
                tcp_flags: 6
            }
        );
    }

    use super::*;

    fn stats(packets: u64, first: u64, last: u64, flags: u8) -> FlowStats {
        FlowStats {
            packets,
            bytes: packets * 100,
            first_seen_jiffies: first,
            last_seen_jiffies: last,
            tcp_flags: flags,
            _pad: [0; 7],
        }
    }

    #[test]
    fn per_cpu_values_sum_with_earliest_first_and_latest_last() {
        let cpus = [
            stats(2, 50, 90, 2),
            FlowStats::default(),
            stats(3, 40, 70, 16 | 2),
        ];
        let t = FlowTotals::sum(cpus.iter());
        assert_eq!(
            t,
            FlowTotals {
                packets: 5,
                bytes: 500,
                first_seen_jiffies: 40,
                last_seen_jiffies: 90,
                tcp_flags: 18
            }
        );
    }

    #[test]
    fn a_carried_slot_merges_into_the_first_cut_by_key() {
        let key = |port: u16| FlowKey {
            ifindex: 2,
            direction: 0,
            family: 4,
            protocol: 17,
            _pad: 0,
            src_addr: [0; 16],
            dst_addr: [0; 16],
            src_port: port,
            dst_port: 53,
        };
        let totals = |packets, first, last, flags| FlowTotals {
            packets,
            bytes: packets * 100,
            first_seen_jiffies: first,
            last_seen_jiffies: last,
            tcp_flags: flags,
        };
        let mut cut = Drained {
            flows: vec![
                (key(1), totals(2, 50, 90, 16)),
                (key(2), totals(1, 70, 70, 0)),
            ],
            lost: IfaceCounters {
                overflow_packets: 1,
                ..IfaceCounters::default()
            },
            ..Drained::default()
        };
        let carry = Drained {
            flows: vec![(key(1), totals(3, 10, 40, 2)), (key(3), totals(4, 5, 6, 0))],
            lost: IfaceCounters {
                overflow_packets: 2,
                ..IfaceCounters::default()
            },
            ..Drained::default()
        };
        cut.absorb(carry);
        assert_eq!(
            cut.flows,
            vec![
                (key(1), totals(5, 10, 90, 18)),
                (key(2), totals(1, 70, 70, 0)),
                (key(3), totals(4, 5, 6, 0)),
            ]
        );
        assert_eq!(cut.lost.overflow_packets, 3);
    }

    #[test]
    fn idle_cpus_do_not_pull_first_seen_to_zero() {
        let cpus = [FlowStats::default(), stats(1, 10, 10, 0)];
        assert_eq!(FlowTotals::sum(cpus.iter()).first_seen_jiffies, 10);
    }
}
