//! What one flow log's publishing tells operators: its metrics, labelled `flow_log_id` (so two
//! flow logs of one agent never share a sample), and the spool-full episodes, logged once each.
//!
//! - `flowlog_spool_{batches,records,bytes}{flow_log_id}`: what waits in the flow log's spool;
//! - `flowlog_spool_dropped_{batches,records}_total{flow_log_id}`: dropped because it was full;
//! - `flowlog_spool_write_failed_records_total{flow_log_id}`: lost, their batch not spoolable;
//! - `flowlog_published_{batches,records}_total{flow_log_id,destination}`: acknowledged;
//! - `flowlog_publish_failures_total{flow_log_id,destination}`: failed attempts (each retried);
//! - `flowlog_rejected_records_total{flow_log_id,destination}`: refused for good (`*.rejected`);
//! - `flowlog_last_publish_seconds{flow_log_id,destination}`: duration of the last publish.
//!
//! Every counter is exported at 0 when the flow log starts, so alerts can be written before the
//! first event.

use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::spool::{Dropped, SpoolStats};
use crate::metrics;

const SPOOL_BATCHES: &str = "flowlog_spool_batches";
const SPOOL_RECORDS: &str = "flowlog_spool_records";
const SPOOL_BYTES: &str = "flowlog_spool_bytes";
const DROPPED_BATCHES: &str = "flowlog_spool_dropped_batches_total";
const DROPPED_RECORDS: &str = "flowlog_spool_dropped_records_total";
const WRITE_FAILED_RECORDS: &str = "flowlog_spool_write_failed_records_total";
const PUBLISHED_BATCHES: &str = "flowlog_published_batches_total";
const PUBLISHED_RECORDS: &str = "flowlog_published_records_total";
const PUBLISH_FAILURES: &str = "flowlog_publish_failures_total";
const REJECTED_RECORDS: &str = "flowlog_rejected_records_total";
const LAST_PUBLISH: &str = "flowlog_last_publish_seconds";

const DROPPED_BATCHES_HELP: &str = "Batches dropped unpublished because the spool was full.";
const DROPPED_RECORDS_HELP: &str = "Records dropped unpublished because the spool was full.";
const WRITE_FAILED_HELP: &str =
    "Records lost because their batch could not be written to the spool.";
const PUBLISHED_BATCHES_HELP: &str = "Batches the destination acknowledged.";
const PUBLISHED_RECORDS_HELP: &str = "Records the destination acknowledged.";
const FAILURES_HELP: &str = "Failed publish attempts (each retried with backoff).";
const REJECTED_HELP: &str =
    "Records in batches the destination refused for good (kept as *.rejected).";

/// The metric labels of one flow log and its destination.
#[derive(Debug, Clone)]
pub struct PublishReport {
    flow_log_id: String,
    destination: String,
}

impl PublishReport {
    pub fn new(flow_log_id: &str, destination: &str) -> Self {
        PublishReport {
            flow_log_id: flow_log_id.to_string(),
            destination: destination.to_string(),
        }
    }

    fn flow_log(&self) -> [(&str, &str); 1] {
        [("flow_log_id", self.flow_log_id.as_str())]
    }

    fn flow_log_and_destination(&self) -> [(&str, &str); 2] {
        [
            ("flow_log_id", self.flow_log_id.as_str()),
            ("destination", self.destination.as_str()),
        ]
    }

    /// At start: the spool as found, and every counter at 0 (adding 0 keeps a running count).
    pub fn export_start(&self, spool: &SpoolStats) {
        self.spool(spool);
        let f = self.flow_log();
        metrics::counter_add(DROPPED_BATCHES, DROPPED_BATCHES_HELP, &f, 0);
        metrics::counter_add(DROPPED_RECORDS, DROPPED_RECORDS_HELP, &f, 0);
        metrics::counter_add(WRITE_FAILED_RECORDS, WRITE_FAILED_HELP, &f, 0);
        let fd = self.flow_log_and_destination();
        metrics::counter_add(PUBLISHED_BATCHES, PUBLISHED_BATCHES_HELP, &fd, 0);
        metrics::counter_add(PUBLISHED_RECORDS, PUBLISHED_RECORDS_HELP, &fd, 0);
        metrics::counter_add(PUBLISH_FAILURES, FAILURES_HELP, &fd, 0);
        metrics::counter_add(REJECTED_RECORDS, REJECTED_HELP, &fd, 0);
    }

    /// The spool's size now.
    pub fn spool(&self, s: &SpoolStats) {
        let f = self.flow_log();
        metrics::gauge_set(
            SPOOL_BATCHES,
            "Batches in the spool, waiting for the destination.",
            &f,
            s.batches as f64,
        );
        metrics::gauge_set(
            SPOOL_RECORDS,
            "Records in the spool, waiting for the destination.",
            &f,
            s.records as f64,
        );
        metrics::gauge_set(SPOOL_BYTES, "Bytes of the spool files.", &f, s.bytes as f64);
    }

    /// The destination acknowledged a batch of `records` after `took`.
    pub fn published(&self, records: usize, took: Duration) {
        let fd = self.flow_log_and_destination();
        metrics::counter_add(PUBLISHED_BATCHES, PUBLISHED_BATCHES_HELP, &fd, 1);
        metrics::counter_add(
            PUBLISHED_RECORDS,
            PUBLISHED_RECORDS_HELP,
            &fd,
            records as u64,
        );
        metrics::gauge_set(
            LAST_PUBLISH,
            "Duration of the last successful publish.",
            &fd,
            took.as_secs_f64(),
        );
    }

    /// One publish attempt failed (it is retried).
    pub fn failed_attempt(&self) {
        metrics::counter_add(
            PUBLISH_FAILURES,
            FAILURES_HELP,
            &self.flow_log_and_destination(),
            1,
        );
    }

    /// The destination refused a batch of `records` for good.
    pub fn rejected(&self, records: usize) {
        metrics::counter_add(
            REJECTED_RECORDS,
            REJECTED_HELP,
            &self.flow_log_and_destination(),
            records as u64,
        );
    }

    /// A batch of `records` could not be written to the spool: lost.
    pub fn unspooled(&self, records: usize) {
        metrics::counter_add(
            WRITE_FAILED_RECORDS,
            WRITE_FAILED_HELP,
            &self.flow_log(),
            records as u64,
        );
    }

    /// Batches the spool dropped to make room.
    pub fn dropped(&self, d: &Dropped) {
        let f = self.flow_log();
        metrics::counter_add(DROPPED_BATCHES, DROPPED_BATCHES_HELP, &f, d.batches);
        metrics::counter_add(DROPPED_RECORDS, DROPPED_RECORDS_HELP, &f, d.records);
    }
}

/// A spool-full episode: from the first batch dropped to make room until the spool is back
/// under half its bound (the destination caught up). One error line when it starts, one info
/// line with the totals when it ends; the metrics count every drop.
#[derive(Debug, Default)]
pub struct SpoolFullEpisodes {
    current: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    since: Instant,
    batches: u64,
    records: u64,
}

impl SpoolFullEpisodes {
    /// After a batch was spooled: `dropped` is what made room for it, `stats` the spool now.
    pub fn after_put(
        &mut self,
        flow_log_id: &str,
        dropped: &Dropped,
        stats: &SpoolStats,
        max_bytes: u64,
    ) {
        if dropped.batches > 0 {
            match &mut self.current {
                None => {
                    error!(
                        flow_log_id,
                        dropped_batches = dropped.batches,
                        dropped_records = dropped.records,
                        max_bytes,
                        pending_batches = stats.batches,
                        "spool full: dropping the oldest undelivered batches until the destination catches up \
                            (counted in flowlog_spool_dropped_records_total; raise --spool-max-bytes or fix the destination)"
                    );
                    self.current = Some(Episode {
                        since: Instant::now(),
                        batches: dropped.batches,
                        records: dropped.records,
                    });
                }
                Some(ep) => {
                    ep.batches += dropped.batches;
                    ep.records += dropped.records;
                    debug!(
                        flow_log_id,
                        dropped_batches = dropped.batches,
                        dropped_records = dropped.records,
                        "spool still full: dropped the oldest batches"
                    );
                }
            }
        } else if stats.bytes <= max_bytes / 2
            && let Some(ep) = self.current.take()
        {
            info!(
                flow_log_id,
                dropped_batches = ep.batches,
                dropped_records = ep.records,
                secs = ep.since.elapsed().as_secs(),
                "spool has room again: batches were dropped while it was full (see above)"
            );
        }
    }

    pub fn in_episode(&self) -> bool {
        self.current.is_some()
    }
}

/// Batches that could not be written to the spool (read-only or vanished directory, I/O
/// error): their records are lost. One error line when it starts, one warning with the total
/// when a batch is spooled again; the run exits non-zero at the end (see `run`).
#[derive(Debug, Default)]
pub struct SpoolWriteFailures {
    /// Records lost in the current episode, and when it began.
    current: Option<(Instant, usize)>,
}

impl SpoolWriteFailures {
    /// A batch of `records` could not be spooled because of `error`.
    pub fn failed(&mut self, flow_log_id: &str, spool: &str, records: usize, error: &str) {
        match &mut self.current {
            None => {
                error!(
                    flow_log_id,
                    spool,
                    records,
                    error,
                    "cannot write to the spool: finished batches are lost until it is writable again \
                     (counted in flowlog_spool_write_failed_records_total; the run will exit non-zero)"
                );
                self.current = Some((Instant::now(), records));
            }
            Some((_, lost)) => {
                *lost += records;
                debug!(
                    flow_log_id,
                    records, error, "cannot write to the spool: batch lost"
                );
            }
        }
    }

    /// A batch was spooled.
    pub fn spooled(&mut self, flow_log_id: &str) {
        if let Some((since, lost)) = self.current.take() {
            warn!(
                flow_log_id,
                lost_records = lost,
                secs = since.elapsed().as_secs(),
                "the spool is writable again: records of the batches in between were lost (see above)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(bytes: u64) -> SpoolStats {
        SpoolStats {
            bytes,
            ..SpoolStats::default()
        }
    }

    #[test]
    fn an_episode_lasts_from_the_first_drop_until_the_spool_is_half_empty() {
        let mut e = SpoolFullEpisodes::default();
        let none = Dropped::default();
        let one = Dropped {
            batches: 1,
            records: 7,
        };
        e.after_put("fl-1", &none, &stats(900), 1_000);
        assert!(!e.in_episode());
        e.after_put("fl-1", &one, &stats(990), 1_000);
        assert!(e.in_episode());
        // A batch that fit without a drop, but the spool is still nearly full: same episode.
        e.after_put("fl-1", &none, &stats(700), 1_000);
        assert!(e.in_episode());
        e.after_put("fl-1", &one, &stats(990), 1_000);
        assert_eq!(
            e.current.as_ref().map(|c| (c.batches, c.records)),
            Some((2, 14))
        );
        e.after_put("fl-1", &none, &stats(500), 1_000);
        assert!(!e.in_episode());
    }
}
