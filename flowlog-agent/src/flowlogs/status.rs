//! `flowlog status`: what the running agent reports about itself through the control socket
//! (the `Status` action). The capture loop keeps a [`StatusBoard`] current (attachments after
//! every change, the window clock and map fill after every cut, the flow logs it runs); a
//! request reads the board, each flow log's spool as it is at that moment, and its delivery
//! error from the registry.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use super::registry::Registry;
use crate::{
    capture::attach::{AttachMode, Capture},
    inventory::discover::Interface,
    publish::spool::Spool,
};

/// The control socket's name for the request.
pub const ACTION: &str = "Status";

/// One attached interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: u32,
    /// The guest's readable id (`web-1.eth0`) when the inventory knows the owner, else `-`.
    pub owner: String,
    /// `tcx` or `netlink`.
    pub attach_mode: String,
    /// `pinned` (links this agent pinned), `adopted` (links an earlier agent pinned, now
    /// running this agent's programs) or `unpinned` (detached when the agent stops).
    pub pinning: String,
}

/// The capture's window clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WindowStatus {
    /// Unix seconds: start of the open cut.
    pub start: u64,
    /// Unix seconds: the next boundary of some flow log (none without flow logs).
    pub next_cut: Option<u64>,
    /// Unix seconds: when the last cut was drained (none before the first).
    pub last_drain_at: Option<u64>,
    /// How long the last flip, drain and clear took.
    pub last_drain_seconds: Option<f64>,
}

/// How full the flow map was in the last closed cut, and what did not fit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapStatus {
    /// `--max-flows`: entries of each of the two flow maps.
    pub max_flows: u32,
    /// Flows drained in the last cut.
    pub last_cut_flows: u64,
    /// `last_cut_flows` as a percentage of `max_flows`.
    pub fill_percent: f64,
    /// Packets that did not fit in the flow map (SKIPDATA) in the last cut, and since start.
    pub last_cut_overflow_packets: u64,
    pub overflow_packets_total: u64,
}

/// One flow log's delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlowLogStatus {
    pub flow_log_id: String,
    pub destination: String,
    /// AWS's `DeliverLogsStatus`: `SUCCESS`, or `FAILED` while the last attempt failed.
    pub delivery_status: String,
    /// Batches and records waiting in the spool (the one being published included).
    pub spool_batches: usize,
    pub spool_records: usize,
    pub spool_bytes: u64,
    /// The last delivery error while delivery fails.
    pub last_error: Option<String>,
}

/// The answer to `Status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentStatus {
    pub interfaces: Vec<InterfaceStatus>,
    pub window: WindowStatus,
    pub flow_map: MapStatus,
    pub flow_logs: Vec<FlowLogStatus>,
}

/// The interfaces `capture` is attached to, with their owners from `host` (the inventory's
/// interfaces).
pub fn interfaces_of(capture: &Capture, host: &BTreeMap<u32, Interface>) -> Vec<InterfaceStatus> {
    let mode = match capture.mode() {
        AttachMode::Tcx => "tcx",
        AttachMode::Netlink => "netlink",
    };
    capture
        .attached()
        .map(|(ifindex, name)| InterfaceStatus {
            name: name.to_string(),
            ifindex,
            owner: host
                .get(&ifindex)
                .and_then(|i| i.guest_id.clone())
                .unwrap_or_else(|| "-".to_string()),
            attach_mode: mode.to_string(),
            pinning: capture.pinning(ifindex).to_string(),
        })
        .collect()
}

/// A running flow log as the board sees it.
struct Running {
    destination: String,
    spool: Arc<Spool>,
}

#[derive(Default)]
struct Board {
    interfaces: Vec<InterfaceStatus>,
    window: WindowStatus,
    flow_map: MapStatus,
    flow_logs: BTreeMap<String, Running>,
}

/// What the capture loop last reported; read by `Status` requests.
#[derive(Default)]
pub struct StatusBoard {
    board: Mutex<Board>,
}

impl StatusBoard {
    fn with<T>(&self, f: impl FnOnce(&mut Board) -> T) -> T {
        // A panic while holding the lock leaves plain data behind: still worth showing.
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut board)
    }

    pub fn set_interfaces(&self, interfaces: Vec<InterfaceStatus>) {
        self.with(|b| b.interfaces = interfaces);
    }

    pub fn set_window(&self, start: u64, next_cut: Option<u64>) {
        self.with(|b| {
            b.window.start = start;
            b.window.next_cut = next_cut;
        });
    }

    /// A cut was drained at `at` (Unix seconds) in `seconds`, holding `flows` flows and
    /// `overflow_packets` packets that did not fit.
    pub fn cut_drained(
        &self,
        at: u64,
        seconds: f64,
        flows: u64,
        max_flows: u32,
        overflow_packets: u64,
    ) {
        self.with(|b| {
            b.window.last_drain_at = Some(at);
            b.window.last_drain_seconds = Some(seconds);
            let m = &mut b.flow_map;
            m.max_flows = max_flows;
            m.last_cut_flows = flows;
            m.fill_percent = if max_flows == 0 {
                0.0
            } else {
                // Two decimals are plenty for a fill level.
                (flows as f64 * 10_000.0 / f64::from(max_flows)).round() / 100.0
            };
            m.last_cut_overflow_packets = overflow_packets;
            m.overflow_packets_total += overflow_packets;
        });
    }

    pub fn set_max_flows(&self, max_flows: u32) {
        self.with(|b| b.flow_map.max_flows = max_flows);
    }

    pub fn flow_log_started(&self, id: &str, destination: &str, spool: Arc<Spool>) {
        self.with(|b| {
            b.flow_logs.insert(
                id.to_string(),
                Running {
                    destination: destination.to_string(),
                    spool,
                },
            )
        });
    }

    pub fn flow_log_stopped(&self, id: &str) {
        self.with(|b| b.flow_logs.remove(id));
    }

    /// The status now: the board, each spool's depth now, delivery errors from `registry`.
    pub fn snapshot(&self, registry: &Registry) -> AgentStatus {
        self.with(|b| AgentStatus {
            interfaces: b.interfaces.clone(),
            window: b.window.clone(),
            flow_map: b.flow_map.clone(),
            flow_logs: b
                .flow_logs
                .iter()
                .map(|(id, r)| {
                    let stats = r.spool.stats();
                    let error = registry.delivery_error(id).map(str::to_string);
                    FlowLogStatus {
                        flow_log_id: id.clone(),
                        destination: r.destination.clone(),
                        delivery_status: if error.is_some() { "FAILED" } else { "SUCCESS" }
                            .to_string(),
                        spool_batches: stats.batches,
                        spool_records: stats.records,
                        spool_bytes: stats.bytes,
                        last_error: error,
                    }
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::metadata::Metadata;

    #[test]
    fn fill_and_overflow_add_up_over_cuts() {
        let board = StatusBoard::default();
        board.cut_drained(100, 0.01, 3, 8, 0);
        board.cut_drained(110, 0.02, 8, 8, 5);
        board.cut_drained(120, 0.02, 1, 8, 2);
        let registry = Registry::new(Vec::new(), None, Metadata::default());
        let s = board.snapshot(&registry);
        assert_eq!(s.window.last_drain_at, Some(120));
        assert_eq!(s.flow_map.last_cut_flows, 1);
        assert_eq!(s.flow_map.fill_percent, 12.5);
        assert_eq!(s.flow_map.last_cut_overflow_packets, 2);
        assert_eq!(s.flow_map.overflow_packets_total, 7);
    }

    #[test]
    fn delivery_errors_come_from_the_registry_and_depth_from_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(&dir.path().join("spool"), 1 << 20).unwrap());
        let board = StatusBoard::default();
        board.flow_log_started("fl-1", "file:/x", spool);
        let mut registry = Registry::new(Vec::new(), None, Metadata::default());
        let s = board.snapshot(&registry);
        assert_eq!(s.flow_logs[0].delivery_status, "SUCCESS");
        assert_eq!(s.flow_logs[0].spool_batches, 0);
        assert_eq!(s.flow_logs[0].last_error, None);
        registry.set_delivery_error("fl-1", Some("Access error: denied".into()));
        let s = board.snapshot(&registry);
        assert_eq!(s.flow_logs[0].delivery_status, "FAILED");
        assert_eq!(
            s.flow_logs[0].last_error.as_deref(),
            Some("Access error: denied")
        );
        board.flow_log_stopped("fl-1");
        assert!(board.snapshot(&registry).flow_logs.is_empty());
    }
}
