//! The bounds that keep the [`super::control`] socket from being knocked over by its clients:
//! how large a request may be, how long a client may take to send it and to read the answer,
//! and how many connections are served at once. A connection beyond the cap is answered at
//! once with `RequestLimitExceeded` (EC2's throttling code) and closed: nothing waits in a
//! queue of the agent's, so a flood costs at most [`MAX_CONNECTIONS`] request buffers.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::api::ApiError;

/// A request line longer than this is refused (a create request is a few hundred bytes).
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// The whole request line must arrive within this time of the connection being accepted,
/// however slowly it trickles in.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that does not take its answer within this time is disconnected.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are refused with [`busy`].
pub const MAX_CONNECTIONS: usize = 64;
/// At most one warning about refused connections per this period.
const WARNING_PERIOD: Duration = Duration::from_secs(10);

/// `RequestLimitExceeded`: EC2's answer to a client that sends too many requests.
pub const REQUEST_LIMIT_EXCEEDED: &str = "RequestLimitExceeded";
/// `RequestTimeout`: the request did not arrive in time (S3's code for the same thing).
pub const REQUEST_TIMEOUT_CODE: &str = "RequestTimeout";

/// The answer to a connection beyond [`MAX_CONNECTIONS`].
pub fn busy() -> ApiError {
    ApiError::new(
        REQUEST_LIMIT_EXCEEDED,
        format!(
            "Request limit exceeded: the agent already serves {MAX_CONNECTIONS} connections; retry shortly"
        ),
    )
}

/// The answer to a client that did not send a whole request line in time.
pub fn too_slow() -> ApiError {
    ApiError::new(
        REQUEST_TIMEOUT_CODE,
        format!(
            "no whole request received within {} s: send one JSON line",
            REQUEST_TIMEOUT.as_secs()
        ),
    )
}

/// The answer to a request line longer than [`MAX_REQUEST_BYTES`].
pub fn too_large() -> ApiError {
    ApiError::invalid(format!(
        "the request is larger than {MAX_REQUEST_BYTES} bytes"
    ))
}

/// Admits at most [`MAX_CONNECTIONS`] connections at once and says (rate-limited) when it
/// refuses some.
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
    refused: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Default for ConnectionGate {
    fn default() -> Self {
        ConnectionGate {
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            refused: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }
}

impl ConnectionGate {
    /// A permit to serve one connection (held until it is closed), or `None` when
    /// [`MAX_CONNECTIONS`] are being served: the caller answers [`busy`] and closes.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                self.warn_refused(refused);
                None
            }
        }
    }

    fn warn_refused(&self, refused_total: u64) {
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARNING_PERIOD) {
            return;
        }
        *last = Some(now);
        warn!(
            max_connections = MAX_CONNECTIONS,
            refused_total, "control socket: too many connections at once, refusing the excess"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_again_after_a_release() {
        let gate = ConnectionGate::default();
        let mut held: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|i| gate.admit().unwrap_or_else(|| panic!("refused #{i}")))
            .collect();
        assert!(gate.admit().is_none());
        assert!(gate.admit().is_none());
        assert_eq!(gate.refused.load(Ordering::Relaxed), 2);
        held.pop();
        assert!(gate.admit().is_some());
    }
}
