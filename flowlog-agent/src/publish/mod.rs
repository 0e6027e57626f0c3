//! Where batches are shipped. Every finished batch is first written to the [`spool`]; the
//! [`publisher`] task publishes spooled batches oldest first and deletes each only once the
//! destination acknowledged it. Failures are retried with backoff and jitter for as long as the
//! agent runs; what is left at shutdown stays spooled for the next start.
//!
//! Records become delivery units in [`batch`] (objects of the S3 key layout, text or
//! [`parquet_object`]) and [`events`] (CloudWatch Logs event batches); an open object's records
//! are made durable as they are added by its write-ahead log ([`wal`]).

pub mod aws;
pub mod batch;
pub mod cloudwatch;
pub mod destination;
pub mod events;
pub mod file;
pub mod file_modes;
pub mod layout;
pub mod parquet_object;
pub mod pid_lock;
pub mod report;
pub mod s3;
pub mod s3_protection;
pub mod spool;
pub mod wal;
pub mod writer_lock;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::publish::{batch::FinishedObject, file_modes::OutputModes};

pub use aws::AwsSettings;
pub use cloudwatch::CloudWatchDestination;
pub use destination::{DeliveryUnit, DestinationSpec};
pub use events::{LogEvent, LogEventBatch};
pub use file::FileDestination;
pub use report::{PublishReport, SpoolFullEpisodes, SpoolWriteFailures};
pub use s3::S3Destination;
pub use s3_protection::S3Protection;
pub use spool::{Spool, SpoolStats};
pub use writer_lock::WriterLock;

/// One delivery unit: spooled, published and acknowledged as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// A file of the S3 key layout (`file` and `s3` destinations).
    Object(FinishedObject),
    /// One PutLogEvents call (`cloud-watch-logs`).
    LogEvents(LogEventBatch),
}

impl Batch {
    pub fn records(&self) -> usize {
        match self {
            Batch::Object(o) => o.records,
            Batch::LogEvents(b) => b.events.len(),
        }
    }

    /// Names the batch in logs and spool file names: the object key, or stream, first
    /// timestamp and event count.
    pub fn identity(&self) -> String {
        match self {
            Batch::Object(o) => o.key.clone(),
            Batch::LogEvents(b) => {
                let first = b.events.first().map_or(0, |e| e.timestamp_ms);
                format!("{}@{first}+{}", b.stream, b.events.len())
            }
        }
    }
}

/// The destination refused a batch in a way no retry can fix (the batch itself is invalid for
/// it). The batch is set aside in the spool as `*.rejected` rather than retried forever.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A place batches are published to.
pub enum Destination {
    File(FileDestination),
    S3(S3Destination),
    CloudWatchLogs(CloudWatchDestination),
}

impl Destination {
    /// Builds the destination's client. Nothing is sent yet (see [`Destination::check`]).
    /// `modes`: of a file destination's objects and directories; `s3`: the headers of an S3
    /// destination's objects.
    pub async fn connect(
        spec: &DestinationSpec,
        settings: &AwsSettings,
        modes: OutputModes,
        s3: &S3Protection,
    ) -> anyhow::Result<Self> {
        Ok(match spec {
            DestinationSpec::File(dir) => {
                if settings.endpoint_url.is_some() {
                    warn!(
                        "--endpoint-url is ignored: it applies to s3 and cloud-watch-logs destinations only"
                    );
                }
                Destination::File(FileDestination::new(dir, modes)?)
            }
            DestinationSpec::S3 { bucket, prefix } => {
                Destination::S3(S3Destination::new(settings, bucket, prefix, s3.clone()).await?)
            }
            DestinationSpec::CloudWatchLogs { group, region } => Destination::CloudWatchLogs(
                CloudWatchDestination::new(settings, group, region.as_deref()).await?,
            ),
        })
    }

    /// A cheap call that tells early whether the destination is usable (S3: the bucket exists
    /// and the credentials reach it). CloudWatch Logs creates what is missing on first use.
    pub async fn check(&self) -> anyhow::Result<()> {
        match self {
            Destination::S3(d) => d.check().await,
            Destination::File(_) | Destination::CloudWatchLogs(_) => Ok(()),
        }
    }

    pub async fn put(&self, batch: &Batch) -> anyhow::Result<()> {
        match (self, batch) {
            (Destination::File(d), Batch::Object(o)) => d.put(o).await,
            (Destination::S3(d), Batch::Object(o)) => d.put(o).await,
            (Destination::CloudWatchLogs(d), Batch::LogEvents(b)) => d.put(b).await,
            (d, b) => Err(Refused(format!(
                "batch {} was spooled for another kind of destination and cannot go to {}",
                b.identity(),
                d.describe()
            ))
            .into()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Destination::File(d) => format!("file:{}", d.root().display()),
            Destination::S3(d) => d.describe(),
            Destination::CloudWatchLogs(d) => d.describe(),
        }
    }
}

/// Told how a flow log's delivery goes (see [`publisher`]).
pub type DeliveryStatus = Arc<dyn Fn(Option<String>) + Send + Sync>;

/// Exponential backoff with "equal jitter": the n-th wait is uniform in [d/2, d] with d
/// doubling from `first` up to `max`. Jitter keeps many agents that lost the same endpoint from
/// retrying in lockstep. Written by hand (a few lines) because the retry loop must also watch
/// the spool and the shutdown signal, which the retry crates' closures do not fit.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d / 2 + d.mul_f64(fastrand::f64() / 2.0)
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// First and longest wait between attempts while a destination fails.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// While a destination keeps failing, its latest error is repeated this often (not per attempt).
const FAILURE_REMINDER: Duration = Duration::from_secs(300);

/// A failure episode: from the first failed attempt to the next success.
struct Episode {
    since: Instant,
    attempts: u64,
    /// When the current cause was last logged, and what it is.
    logged: Instant,
    cause: String,
}

/// Publishes spooled batches, oldest first, until `stop` turns true; then delivers what it
/// still can and returns at the first failure or when the spool is empty. Never gives up on a
/// batch while running: failed attempts are retried with [`Backoff`].
/// `delivery` hears how publishing goes: `None` after each acknowledged batch, the
/// `DeliverLogsErrorMessage` after each failure; `report` counts it in the flow log's metrics.
pub async fn publisher(
    dest: Destination,
    spool: Arc<Spool>,
    mut stop: watch::Receiver<bool>,
    delivery: DeliveryStatus,
    report: PublishReport,
) {
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut episode: Option<Episode> = None;
    let destination = dest.describe();
    if let Err(e) = dest.check().await {
        warn!(destination = %destination, error = %format!("{e:#}"),
              "startup check of the destination failed: records are spooled until it accepts them");
    }
    loop {
        let stopping = *stop.borrow_and_update();
        let Some(claim) = spool.claim() else {
            if stopping {
                return;
            }
            tokio::select! {
                _ = spool.changed() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            continue;
        };
        let path = claim.path.clone();
        let loaded = tokio::task::spawn_blocking(move || spool::load(&path)).await;
        let batch = match loaded {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                error!(file = %claim.path.display(), records = claim.records, error = %format!("{e:#}"),
                       "unreadable spool file set aside as *.rejected");
                spool.reject(&claim);
                continue;
            }
            Err(e) => {
                error!(error = %e, "spool reader task failed");
                spool.release(&claim);
                tokio::time::sleep(backoff.delay()).await;
                continue;
            }
        };
        let started = Instant::now();
        match dest.put(&batch).await {
            Ok(()) => {
                delivery(None);
                if let Err(e) = spool.ack(&claim) {
                    warn!(error = %format!("{e:#}"), "delivered, but the spool file stays: it will be published again (same key)");
                }
                if let Some(ep) = episode.take() {
                    info!(destination = %destination, failed_attempts = ep.attempts,
                          outage_secs = ep.since.elapsed().as_secs(), pending_batches = spool.stats().batches,
                          "destination accepts batches again: delivering the spool");
                }
                backoff.reset();
                report.published(batch.records(), started.elapsed());
                report.spool(&spool.stats());
                info!(batch = %batch.identity(), records = batch.records(),
                      ms = started.elapsed().as_millis() as u64, "published");
            }
            Err(e) if e.downcast_ref::<Refused>().is_some() => {
                delivery(Some(aws::delivery_error(&e)));
                error!(destination = %destination, records = claim.records, file = %claim.path.display(),
                       error = %format!("{e:#}"), "destination refused the batch for good: kept in the spool as *.rejected");
                spool.reject(&claim);
                report.rejected(claim.records);
                report.spool(&spool.stats());
            }
            Err(e) => {
                delivery(Some(aws::delivery_error(&e)));
                spool.release(&claim);
                report.failed_attempt();
                // One error line per cause while it lasts (and a reminder every few minutes),
                // not one per attempt.
                let stats = spool.stats();
                let cause = aws::cause(&e);
                let now = Instant::now();
                let ep = episode.get_or_insert_with(|| Episode {
                    since: now,
                    attempts: 0,
                    logged: now,
                    cause: String::new(),
                });
                ep.attempts += 1;
                if ep.attempts == 1 || ep.cause != cause || ep.logged.elapsed() >= FAILURE_REMINDER
                {
                    error!(destination = %destination, failed_attempts = ep.attempts,
                           outage_secs = ep.since.elapsed().as_secs(), pending_batches = stats.batches,
                           pending_records = stats.records, error = %format!("{e:#}"),
                           "cannot publish: the records stay in the spool; retrying with backoff");
                    ep.logged = now;
                    ep.cause = cause;
                } else {
                    debug!(error = %format!("{e:#}"), attempt = ep.attempts, "publish failed again");
                }
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.delay()) => {}
                    // Shutting down: one last attempt right away, then stop.
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let caps = [1, 2, 4, 8, 8, 8];
        for cap in caps {
            let d = b.delay();
            let cap = Duration::from_secs(cap);
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.delay() <= Duration::from_secs(1));
    }
}
