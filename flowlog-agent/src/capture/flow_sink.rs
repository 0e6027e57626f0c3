//! A window's flows handed over in batches as the kernel returns them, instead of one `Vec` of
//! every flow ([`Collector::cut_into`](super::collect::Collector::cut_into)).
//!
//! The flow map is read on a second thread while the caller's thread takes the batches
//! (records, rendering, gzip): the two overlap, and at most [`IN_FLIGHT`] + 2 batches of
//! [`FLOW_BATCH`] flows exist at any time, whatever the number of flows in the window.

use std::sync::mpsc;

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuHashMap};
use flowlog_common::{FlowKey, FlowStats};

use crate::capture::{
    drained::{DrainedWindow, FlowTotals},
    map_batch,
    read_keys::ReadKeys,
};

/// Flows per batch: what one `BPF_MAP_LOOKUP_BATCH` call returns at first.
pub const FLOW_BATCH: usize = 4096;
/// Batches read ahead of the consumer before the reader waits for it.
pub const IN_FLIGHT: usize = 4;

/// Takes one cut's flows batch by batch.
pub trait FlowSink {
    /// Everything the window counted except its flows (interface counters, drops, REJECT
    /// drops, clock), read before them: called once, before any [`FlowSink::flows`].
    fn begin(&mut self, window: &DrainedWindow);
    /// The next flows, each exactly once over the cut.
    fn flows(&mut self, flows: &[(FlowKey, FlowTotals)]);
}

/// Collects every flow into the window (what [`Collector::cut`](super::collect::Collector::cut)
/// returns).
#[derive(Default)]
pub struct CollectFlows(pub Vec<(FlowKey, FlowTotals)>);

impl FlowSink for CollectFlows {
    fn begin(&mut self, _: &DrainedWindow) {}

    fn flows(&mut self, flows: &[(FlowKey, FlowTotals)]) {
        self.0.extend_from_slice(flows);
    }
}

/// Hands flows already read (a carried slot merged into them) to `sink` in batches of
/// [`FLOW_BATCH`].
pub fn hand_over(ready: &[(FlowKey, FlowTotals)], sink: &mut dyn FlowSink) -> usize {
    for batch in ready.chunks(FLOW_BATCH) {
        sink.flows(batch);
    }
    ready.len()
}

/// Reads and sums over CPUs every entry of an idle flow map on a second thread, handing the
/// flows to `sink` on this one as they come; the map is left as it is (the collector clears it
/// once the window's records are on disk, by the map keys pushed onto `keys`). Returns how many
/// there were.
pub fn read_into<K: aya::Pod + Copy + Send + Sync>(
    map: &PerCpuHashMap<MapData, K, FlowStats>,
    cpus: usize,
    to_key: impl Fn(K) -> FlowKey + Send + Copy,
    sink: &mut dyn FlowSink,
    keys: &mut ReadKeys<K>,
) -> anyhow::Result<usize> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Vec<(FlowKey, FlowTotals)>>(IN_FLIGHT);
    // Emptied batches go back to the reader, so the batches are allocated once per cut.
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<(FlowKey, FlowTotals)>>();
    std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("flowlog-drain".into())
            .spawn_scoped(s, move || -> anyhow::Result<usize> {
                let fresh = || Vec::with_capacity(FLOW_BATCH);
                let mut batch = fresh();
                let read = map_batch::lookup_all(map, cpus, |k, v| {
                    keys.push(k);
                    batch.push((to_key(k), FlowTotals::sum(v)));
                    if batch.len() == FLOW_BATCH {
                        let next = empty_rx.try_recv().unwrap_or_else(|_| fresh());
                        // A closed channel means the consumer panicked: the scope re-raises it.
                        let _ = full_tx.send(std::mem::replace(&mut batch, next));
                    }
                });
                match read {
                    Ok(n) => {
                        let _ = full_tx.send(batch);
                        Ok(n)
                    }
                    // Refused: aya's iterator, all at once.
                    Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                        let all = map_batch::read_all(map, cpus, |v| FlowTotals::sum(v))?;
                        let n = all.len();
                        for (k, _) in &all {
                            keys.push(*k);
                        }
                        for chunk in all.chunks(FLOW_BATCH) {
                            let _ =
                                full_tx.send(chunk.iter().map(|(k, t)| (to_key(*k), *t)).collect());
                        }
                        Ok(n)
                    }
                    Err(e) => {
                        // What was read before the failure is still handed over.
                        let _ = full_tx.send(batch);
                        Err(e).context("BPF_MAP_LOOKUP_BATCH failed")
                    }
                }
            })
            .context("cannot start the drain thread")?;
        for mut batch in full_rx {
            if !batch.is_empty() {
                sink.flows(&batch);
            }
            batch.clear();
            let _ = empty_tx.send(batch);
        }
        match reader.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
