//! Where a cut's flows go as they are drained: to every flow log's pipeline (each takes those
//! on its interfaces) and to the capture's per-interface tally for the window metrics.

use std::collections::BTreeMap;

use flowlog_common::FlowKey;

use crate::{
    capture::{
        collect::{DrainedWindow, FlowTotals},
        flow_sink::FlowSink,
        window_metrics::FlowTally,
    },
    flowlogs::pipeline::{CutShare, Pipeline},
    inventory::discover::Interface,
};

/// Hands one cut to every pipeline: [`FlowSink::begin`] starts each one's share, the flows
/// follow, and [`CutSink::finish`] closes them (spooling the windows that end with the cut).
pub struct CutSink<'a> {
    pipelines: Vec<(
        &'a mut Pipeline,
        &'a BTreeMap<u32, Interface>,
        Option<CutShare>,
    )>,
    /// The cut's flows per interface and direction, for the window metrics.
    pub tally: FlowTally,
}

impl<'a> CutSink<'a> {
    /// `members`: per flow log id, the interfaces of the cut that it covers.
    pub fn new(
        pipelines: impl IntoIterator<Item = (&'a String, &'a mut Pipeline)>,
        members: &'a BTreeMap<String, BTreeMap<u32, Interface>>,
        none: &'a BTreeMap<u32, Interface>,
    ) -> Self {
        CutSink {
            pipelines: pipelines
                .into_iter()
                .map(|(id, p)| (p, members.get(id).unwrap_or(none), None))
                .collect(),
            tally: FlowTally::default(),
        }
    }

    /// Every flow is in (or the drain failed: what was handed over is kept): each pipeline
    /// ends its share of the cut.
    pub fn finish(self) {
        for (p, _, share) in self.pipelines {
            if let Some(share) = share {
                p.end_cut(share);
            }
        }
    }
}

impl FlowSink for CutSink<'_> {
    fn begin(&mut self, window: &DrainedWindow) {
        for (p, watched, share) in &mut self.pipelines {
            *share = Some(p.begin_cut(window, watched));
        }
    }

    fn flows(&mut self, flows: &[(FlowKey, FlowTotals)]) {
        self.tally.add(flows);
        for (p, _, share) in &mut self.pipelines {
            if let Some(share) = share {
                p.cut_flows(share, flows);
            }
        }
    }
}
