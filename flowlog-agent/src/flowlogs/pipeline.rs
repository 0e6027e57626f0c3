//! One running flow log: its definition, its window over the shared capture, its records and
//! objects ([`FlowLog`]), its spool and the publisher that ships the spool to its destination.
//! The capture loop hands every cut to every pipeline; a pipeline takes the part on its own
//! interfaces ([`FlowLogWindow`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

use super::{
    spec::FlowLogSpec,
    window::{FlowLogWindow, part_of},
};
use flowlog_common::FlowKey;

use crate::{
    capture::collect::{DrainedWindow, FlowTotals, Window},
    flowlogs::flow_log::{FlowLog, OpenWindow, RecordOptions},
    inventory::discover::Interface,
    inventory::metadata::Metadata,
    metrics,
    publish::file_modes::OutputModes,
    publish::{
        self, AwsSettings, Batch, DeliveryStatus, Destination, PublishReport, Spool,
        SpoolFullEpisodes, SpoolWriteFailures, WriterLock, writer_lock,
    },
};

/// How long stopping a flow log keeps publishing what is spooled before leaving the rest for
/// the next start.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(20);

/// What every pipeline of this agent shares.
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub records: RecordOptions,
    pub endpoint_url: Option<String>,
    /// `--publish-timeout`: longest wait for one request to the destination.
    pub publish_timeout: Option<Duration>,
    pub spool_root: PathBuf,
    pub spool_max_bytes: u64,
    pub runtime_dir: PathBuf,
    /// Modes of every file destination's objects and directories.
    pub output_modes: OutputModes,
}

pub struct Pipeline {
    pub spec: FlowLogSpec,
    flow_log: FlowLog,
    window: FlowLogWindow,
    spool: Arc<Spool>,
    /// `--spool-dir` named it: kept even when empty.
    spool_given: bool,
    destination: String,
    publisher: JoinHandle<()>,
    stop_publishing: watch::Sender<bool>,
    _writer_lock: WriterLock,
    /// Records whose batches could not be spooled (lost, and said so at the end).
    unspooled_records: usize,
    /// This flow log's publish and spool metrics.
    report: PublishReport,
    spool_full: SpoolFullEpisodes,
    spool_write_failures: SpoolWriteFailures,
    /// The interfaces this flow log covered in the cuts of its open window, as they were last
    /// seen: one deleted after an earlier cut keeps its identity until the window closes.
    window_interfaces: BTreeMap<u32, Interface>,
}

/// One flow log's part of a cut being drained ([`Pipeline::begin_cut`]).
pub struct CutShare {
    members: BTreeSet<u32>,
    taken: Taken,
}

enum Taken {
    /// The cut is a whole window of the flow log: its records are being written. Boxed: one
    /// per flow log per cut, and much larger than the other variant.
    Records(Box<OpenWindow>),
    /// Part of a longer window: kept, to merge with the window's other cuts.
    Kept(DrainedWindow),
}

/// How a stopped pipeline ended.
#[derive(Debug, Default)]
pub struct Outcome {
    pub unspooled_records: usize,
    pub spool: PathBuf,
}

impl Pipeline {
    /// Starts `spec`: connects its destination, opens (and locks) its spool, finishes what an
    /// earlier run's write-ahead logs left, and starts its publisher. `spool_dir` overrides the
    /// default spool (`<root>/<id>-<hash of the destination>`). `delivery` learns how
    /// publishing goes.
    pub async fn start(
        spec: FlowLogSpec,
        host: &HostSettings,
        meta: Metadata,
        spool_dir: Option<PathBuf>,
        delivery: DeliveryStatus,
    ) -> anyhow::Result<Self> {
        let settings = AwsSettings {
            endpoint_url: host.endpoint_url.clone(),
            fallback_region: Some(meta.region.clone()).filter(|r| r != "-"),
            attempt_timeout: host.publish_timeout,
        };
        let mut flow_log = FlowLog::from_spec(&spec, host.records, meta)?;
        let dest = Destination::connect(
            &spec.destination,
            &settings,
            host.output_modes,
            &spec.options.s3,
        )
        .await?;
        let destination = dest.describe();
        let spool_given = spool_dir.is_some();
        let dir = spool_dir
            .unwrap_or_else(|| default_spool_dir(&host.spool_root, &spec.id, &spec.destination));
        let spool = Arc::new(Spool::open(&dir, host.spool_max_bytes)?);
        // After the spool's own lock, so agents sharing a spool are told about the spool.
        let writer_lock = WriterLock::acquire(
            &host.runtime_dir,
            &spec.id,
            &writer_lock::canonical_destination(&spec.destination, host.endpoint_url.as_deref()),
        )?;
        // Before any new window: the closed windows an earlier run left in write-ahead logs.
        let recovered = tokio::task::block_in_place(|| {
            flow_log.recover(spool.dir(), |key| spool.holds_object(key))
        })?;
        let report = PublishReport::new(&spec.id, &destination);
        report.export_start(&spool.stats());
        let (stop_publishing, stop_rx) = watch::channel(false);
        let publisher = tokio::spawn(publish::publisher(
            dest,
            spool.clone(),
            stop_rx,
            delivery,
            report.clone(),
        ));
        let mut pipeline = Pipeline {
            window: FlowLogWindow::new(u64::from(spec.max_aggregation_interval)),
            spec,
            flow_log,
            spool,
            spool_given,
            destination,
            publisher,
            stop_publishing,
            _writer_lock: writer_lock,
            unspooled_records: 0,
            report,
            spool_full: SpoolFullEpisodes::default(),
            spool_write_failures: SpoolWriteFailures::default(),
            window_interfaces: BTreeMap::new(),
        };
        for batch in recovered {
            pipeline.spool_batch(&batch);
        }
        Ok(pipeline)
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn interval(&self) -> u64 {
        self.window.interval()
    }

    pub fn destination(&self) -> &str {
        &self.destination
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The spool, shared (`flowlog status` reads its depth).
    pub fn spool_handle(&self) -> Arc<Spool> {
        self.spool.clone()
    }

    /// The interfaces of `interfaces` this flow log covers now.
    pub fn members(
        &self,
        interfaces: &BTreeMap<u32, Interface>,
        meta: &Metadata,
    ) -> BTreeMap<u32, Interface> {
        interfaces
            .iter()
            .filter(|(_, i)| self.spec.resource.covers(i, meta))
            .map(|(k, i)| (*k, i.clone()))
            .collect()
    }

    /// Starts taking this flow log's part of one cut, whose flows come next
    /// ([`Pipeline::cut_flows`], then [`Pipeline::end_cut`]). `cut`: the cut's counters but its
    /// flows. `watched`: the interfaces of the cut that this flow log covers. A cut that is a
    /// whole window of this flow log becomes records as its flows arrive; any other is kept
    /// and merged into the open window.
    pub fn begin_cut(
        &mut self,
        cut: &DrainedWindow,
        watched: &BTreeMap<u32, Interface>,
    ) -> CutShare {
        let members: BTreeSet<u32> = watched.keys().copied().collect();
        for iface in watched.values() {
            super::members::update_view(&mut self.window_interfaces, iface.clone());
        }
        let part = part_of(cut, &members);
        let taken = if self.window.whole_window(cut.window.end) {
            let interfaces = std::mem::take(&mut self.window_interfaces);
            Taken::Records(Box::new(self.flow_log.open_window(
                &part,
                &interfaces,
                true,
            )))
        } else {
            Taken::Kept(part)
        };
        CutShare { members, taken }
    }

    /// The next flows of the cut: those on this flow log's interfaces.
    pub fn cut_flows(&mut self, share: &mut CutShare, flows: &[(FlowKey, FlowTotals)]) {
        let members = &share.members;
        let mine = flows.iter().filter(|(k, _)| members.contains(&k.ifindex));
        match &mut share.taken {
            Taken::Records(w) => self.flow_log.add_flows(w, mine),
            Taken::Kept(part) => part.flows.extend(mine.copied()),
        }
    }

    /// Every flow of the cut is in: when the cut ends this flow log's window, the window's
    /// records go to the spool.
    pub fn end_cut(&mut self, share: CutShare) {
        match share.taken {
            Taken::Records(w) => {
                let window = w.window();
                let batches = self.flow_log.close_window(*w);
                self.spool_window(window, batches);
            }
            Taken::Kept(part) => {
                if let Some(window) = self.window.push(part) {
                    let interfaces = std::mem::take(&mut self.window_interfaces);
                    self.close_window(&window, &interfaces);
                }
            }
        }
    }

    fn close_window(&mut self, window: &DrainedWindow, watched: &BTreeMap<u32, Interface>) {
        let batches = self.flow_log.on_window(window, watched);
        self.spool_window(window.window, batches);
    }

    /// Spools the batches a closed window completed.
    fn spool_window(&mut self, window: Window, batches: Vec<Batch>) {
        let records: usize = batches.iter().map(Batch::records).sum();
        metrics::counter_add(
            "flowlog_flow_log_windows_total",
            "Aggregation windows a flow log closed.",
            &[("flow_log_id", self.spec.id.as_str())],
            1,
        );
        for batch in batches {
            self.spool_batch(&batch);
        }
        // How long after its boundary the window's records were spooled (written down durably).
        let lateness = crate::capture::clock::unix_now() - window.end as f64;
        metrics::gauge_set(
            "flowlog_window_lateness_seconds",
            "How long after its boundary the last closed window's records were spooled.",
            &[("flow_log_id", self.spec.id.as_str())],
            lateness,
        );
        tracing::debug!(flow_log_id = %self.spec.id, start = window.start, end = window.end,
                        records_in_finished_batches = records, lateness_seconds = lateness,
                        "flow log window closed");
    }

    /// Writes a finished batch to the spool, deleting the write-ahead log it replaces. A batch
    /// that cannot be spooled (disk full, I/O error) is lost: logged, counted, and reported in
    /// the [`Outcome`].
    fn spool_batch(&mut self, batch: &Batch) {
        let wal = self.flow_log.take_wal(batch);
        let put = tokio::task::block_in_place(|| self.spool.put_replacing(batch, wal.as_deref()));
        match put {
            Ok(dropped) => {
                self.spool_write_failures.spooled(&self.spec.id);
                self.report.dropped(&dropped);
                self.spool_full.after_put(
                    &self.spec.id,
                    &dropped,
                    &self.spool.stats(),
                    self.spool.max_bytes(),
                );
            }
            Err(e) => {
                self.unspooled_records += batch.records();
                self.spool_write_failures.failed(
                    &self.spec.id,
                    &self.spool.dir().display().to_string(),
                    batch.records(),
                    &format!("{e:#}"),
                );
                self.report.unspooled(batch.records());
            }
        }
        metrics::counter_add(
            "flowlog_flow_log_records_total",
            "Records a flow log spooled for delivery.",
            &[("flow_log_id", self.spec.id.as_str())],
            batch.records() as u64,
        );
        self.report.spool(&self.spool.stats());
    }

    /// Stops the flow log: its open window (already cut by the caller) becomes records, open
    /// objects are finished, and what is spooled is delivered for at most [`SHUTDOWN_DRAIN`];
    /// the rest stays in the spool for the next start.
    pub async fn finish(mut self, watched: &BTreeMap<u32, Interface>) -> Outcome {
        if let Some(window) = self.window.flush() {
            let mut interfaces = std::mem::take(&mut self.window_interfaces);
            for iface in watched.values() {
                super::members::update_view(&mut interfaces, iface.clone());
            }
            self.close_window(&window, &interfaces);
        }
        for batch in self.flow_log.close_all() {
            self.spool_batch(&batch);
        }
        let _ = self.stop_publishing.send(true);
        if tokio::time::timeout(SHUTDOWN_DRAIN, &mut self.publisher)
            .await
            .is_err()
        {
            self.publisher.abort();
        }
        let left = self.spool.stats();
        self.report.spool(&left);
        if left.batches > 0 {
            warn!(flow_log_id = %self.spec.id, batches = left.batches, records = left.records,
                  spool = %self.spool.dir().display(), destination = %self.destination,
                  "not delivered before exit: the batches stay in the spool and are delivered at the next start");
        } else if !self.spool_given {
            self.spool.remove_if_empty();
        }
        info!(flow_log_id = %self.spec.id, "flow log stopped");
        Outcome {
            unspooled_records: self.unspooled_records,
            spool: self.spool.dir().to_path_buf(),
        }
    }
}

/// `<root>/<flow log id>-<crc32 of the destination>`: a file destination by its absolute path.
pub fn default_spool_dir(
    root: &std::path::Path,
    flow_log_id: &str,
    destination: &publish::DestinationSpec,
) -> PathBuf {
    let dest = match destination {
        publish::DestinationSpec::File(dir) => {
            publish::DestinationSpec::File(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()))
        }
        other => other.clone(),
    };
    let hash = crc32fast::hash(dest.to_string().as_bytes());
    root.join(format!("{flow_log_id}-{hash:08x}"))
}
