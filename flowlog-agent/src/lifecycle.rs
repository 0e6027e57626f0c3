//! What supervisors see of the agent's life: systemd's notifications (`Type=notify`: READY=1
//! once the programs are attached and the flow logs run, STOPPING=1 at shutdown) and the
//! answers of `/healthz` and `/readyz` on the metrics address (Kubernetes probes).
//!
//! The stages only move forward: starting → attached → ready (a window was cut) → stopping →
//! failed. Live (`/healthz`) unless failed; ready (`/readyz`) only while ready.

use std::sync::atomic::{AtomicU8, Ordering};

use sd_notify::NotifyState;
use tracing::warn;

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// Loading, reading definitions, attaching.
    Starting = 0,
    /// The programs are attached and the flow logs run; no window cut yet.
    Attached = 1,
    /// A window was cut: the capture works end to end.
    Ready = 2,
    /// SIGTERM/SIGINT: the last partial window is being flushed and delivered.
    Stopping = 3,
    /// The kernel maps could not be drained; the agent is shutting down with an error.
    Failed = 4,
}

impl Stage {
    fn from_u8(v: u8) -> Stage {
        match v {
            0 => Stage::Starting,
            1 => Stage::Attached,
            2 => Stage::Ready,
            3 => Stage::Stopping,
            _ => Stage::Failed,
        }
    }
}

/// An HTTP answer for a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Status line text after `HTTP/1.1 `, e.g. `200 OK`.
    pub status: &'static str,
    pub body: String,
}

/// A stage that only moves forward.
#[derive(Debug, Default)]
pub struct Lifecycle {
    stage: AtomicU8,
}

impl Lifecycle {
    pub const fn new() -> Self {
        Lifecycle {
            stage: AtomicU8::new(Stage::Starting as u8),
        }
    }

    pub fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Acquire))
    }

    /// Moves to `stage` unless the agent is already further; returns whether it moved.
    pub fn advance(&self, stage: Stage) -> bool {
        self.stage.fetch_max(stage as u8, Ordering::AcqRel) < stage as u8
    }

    /// `/healthz`: the agent runs (it may be starting or stopping), or it failed.
    pub fn liveness(&self) -> Probe {
        match self.stage() {
            Stage::Failed => Probe {
                status: "503 Service Unavailable",
                body: "failed: the kernel maps could not be drained\n".into(),
            },
            s => Probe {
                status: "200 OK",
                body: format!("ok: {}\n", describe(s)),
            },
        }
    }

    /// `/readyz`: attached and at least one window cut, not stopping.
    pub fn readiness(&self) -> Probe {
        match self.stage() {
            Stage::Ready => Probe {
                status: "200 OK",
                body: format!("ready: {}\n", describe(Stage::Ready)),
            },
            s => Probe {
                status: "503 Service Unavailable",
                body: format!("not ready: {}\n", describe(s)),
            },
        }
    }
}

fn describe(stage: Stage) -> &'static str {
    match stage {
        Stage::Starting => "starting (the programs are not attached yet)",
        Stage::Attached => "attached, waiting for the first window to be cut",
        Stage::Ready => "attached and cutting windows",
        Stage::Stopping => "stopping (flushing the last window)",
        Stage::Failed => "failed",
    }
}

/// The agent's own lifecycle.
pub static AGENT: Lifecycle = Lifecycle::new();

/// The programs are attached and the flow logs run: tells systemd READY=1 (with `status` as
/// the unit's status text). Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.
pub fn attached(status: &str) {
    AGENT.advance(Stage::Attached);
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A window was cut: `/readyz` answers 200 from now on.
pub fn window_cut() {
    AGENT.advance(Stage::Ready);
}

/// Shutdown began: `/readyz` answers 503 and systemd is told STOPPING=1.
pub fn stopping() {
    if AGENT.advance(Stage::Stopping) {
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("flushing the last window"),
        ]);
    }
}

/// The capture failed: `/healthz` answers 503.
pub fn failed() {
    AGENT.advance(Stage::Failed);
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, socket = ?std::env::var_os("NOTIFY_SOCKET"),
              "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_only_move_forward_and_probes_follow_them() {
        let l = Lifecycle::new();
        assert_eq!(l.readiness().status, "503 Service Unavailable");
        assert_eq!(l.liveness().status, "200 OK");
        assert!(l.advance(Stage::Attached));
        assert_eq!(l.readiness().status, "503 Service Unavailable");
        assert!(l.advance(Stage::Ready));
        assert_eq!(l.readiness().status, "200 OK");
        // A late "attached" does not undo readiness.
        assert!(!l.advance(Stage::Attached));
        assert_eq!(l.stage(), Stage::Ready);
        assert!(l.advance(Stage::Stopping));
        assert_eq!(l.readiness().status, "503 Service Unavailable");
        assert_eq!(l.liveness().status, "200 OK");
        assert!(l.advance(Stage::Failed));
        assert_eq!(l.liveness().status, "503 Service Unavailable");
        assert!(!l.advance(Stage::Stopping));
        assert_eq!(l.stage(), Stage::Failed);
    }
}
