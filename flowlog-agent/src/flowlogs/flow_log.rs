//! One flow log: what its records say (metadata, format) and how they are cut into delivery
//! units: objects of the S3 key layout (file, S3) or per-stream log event batches (CloudWatch).
//! Several flow logs could share one capture; `run` feeds each the same drained windows.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::bail;

use flowlog_common::FlowKey;
use tracing::debug;

use crate::{
    capture::collect::DrainedWindow,
    flowlogs::spec::{FlowLogSpec, ObjectOptions},
    inventory::{discover::Interface, metadata::Metadata},
    metrics,
    publish::{
        Batch, DeliveryUnit, DestinationSpec, batch::Batcher, events::LogEventPacker,
        layout::ObjectLayout,
    },
    records::{
        self, WatchedInterface, aws_internal::AwsInternal, format::LogFormat,
        traffic_type::TrafficType,
    },
};

pub struct FlowLog {
    pub id: String,
    packer: Packer,
    meta: Metadata,
    /// Traffic AWS does not log, left out of the records (`None`: kept).
    aws_internal: Option<AwsInternal>,
    /// `--traffic-type`: which of ACCEPT/REJECT records this flow log emits.
    traffic_type: TrafficType,
}

/// How records become delivery units, as the destination takes them.
enum Packer {
    Objects(Batcher),
    LogEvents(LogEventPacker),
}

/// What every flow log of this agent shares: the `run` flags that are not a flow log's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOptions {
    /// `--include-aws-internal-traffic`.
    pub include_aws_internal_traffic: bool,
    /// `--file-rollover-seconds`.
    pub file_rollover_seconds: u64,
}

impl FlowLog {
    /// A flow log as its definition says.
    pub fn from_spec(
        spec: &FlowLogSpec,
        host: RecordOptions,
        meta: Metadata,
    ) -> anyhow::Result<Self> {
        Self::new(
            spec.id.clone(),
            spec.traffic_type,
            spec.log_format.clone(),
            &spec.destination,
            spec.options.clone(),
            host,
            meta,
        )
    }

    pub fn new(
        id: String,
        traffic_type: TrafficType,
        format: LogFormat,
        destination: &DestinationSpec,
        options: ObjectOptions,
        host: RecordOptions,
        meta: Metadata,
    ) -> anyhow::Result<Self> {
        let layout = ObjectLayout {
            account_id: meta.account_id.clone(),
            region: meta.region.clone(),
            flow_log_id: id.clone(),
            hive_compatible_partitions: options.hive_compatible_partitions,
            per_hour_partition: options.per_hour_partition,
        };
        let packer = match destination.delivery_unit() {
            DeliveryUnit::LogEvents => {
                if options != ObjectOptions::default() {
                    bail!(
                        "--file-format parquet, --hive-compatible-partitions and --per-hour-partition apply to \
                           file and S3 destinations only (as AWS's DestinationOptions): drop them for CloudWatch Logs"
                    );
                }
                Packer::LogEvents(LogEventPacker::new(format, meta.clone()))
            }
            DeliveryUnit::Objects => Packer::Objects(
                Batcher::new(layout, format, meta.clone(), host.file_rollover_seconds)
                    .with_file_format(options.file_format)?,
            ),
        };
        let aws_internal = (!host.include_aws_internal_traffic).then(|| AwsInternal::new(&meta));
        Ok(FlowLog {
            id,
            packer,
            meta,
            aws_internal,
            traffic_type,
        })
    }

    /// What the records say beyond the packets (resolved identity, ranges).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// What records need per watched interface: its `interface-id` (ENI id by MAC, else
    /// `--interface-id`, else the name) and primary addresses.
    fn watched(&self, interfaces: &BTreeMap<u32, Interface>) -> BTreeMap<u32, WatchedInterface> {
        interfaces
            .iter()
            .map(|(&ifindex, i)| {
                let w = WatchedInterface {
                    interface_id: self.meta.interface_id(&i.name, i.mac.as_deref()),
                    primary_ipv4: i.ipv4,
                    primary_ipv6: i.ipv6,
                };
                (ifindex, w)
            })
            .collect()
    }

    /// Turns one drained window into records and returns the batches it completed: objects
    /// whose slot ended, or the window's log events.
    /// `interfaces`: those the programs were attached to during the window, by ifindex.
    pub fn on_window(
        &mut self,
        drained: &DrainedWindow,
        interfaces: &BTreeMap<u32, Interface>,
    ) -> Vec<Batch> {
        let watched = self.watched(interfaces);
        let internal = self.aws_internal.as_ref();
        let excluded = |k: &FlowKey| internal.is_some_and(|x| x.matches(k));
        let mut records = records::build(drained, &watched, &excluded);
        records.retain(|r| self.traffic_type.keeps(r));
        let (flows, packets) = drained
            .flows
            .iter()
            .filter(|(k, t)| t.packets > 0 && excluded(k))
            .fold((0u64, 0u64), |(f, p), (_, t)| (f + 1, p + t.packets));
        if flows > 0 {
            debug!(
                flows,
                packets,
                "left out traffic AWS does not log (--include-aws-internal-traffic keeps it)"
            );
            metrics::counter_add(
                "flowlog_aws_internal_excluded_packets_total",
                "Packets to or from AWS-internal services (instance metadata, time sync, Amazon DNS, DHCP) left out as AWS does.",
                &[],
                packets,
            );
        }
        match &mut self.packer {
            Packer::Objects(batcher) => {
                let mut objects = batcher.add(&records, drained.window.start);
                objects.extend(batcher.close_until(drained.window.end));
                // The objects still open now hold this closed window durably (their WALs);
                // those just finished reach disk through the spool.
                batcher.commit_window(drained.window.start);
                objects.into_iter().map(Batch::Object).collect()
            }
            Packer::LogEvents(packer) => packer
                .pack(&records)
                .into_iter()
                .map(Batch::LogEvents)
                .collect(),
        }
    }

    /// Keeps the open objects' closed windows durable in write-ahead logs in `dir` (the
    /// spool directory) from now on, and returns the objects an earlier run's WALs there
    /// describe, finished (see [`Batcher::recover`]); `spooled` tells which object keys the
    /// spool already holds. CloudWatch Logs batches are spooled per window and need no WAL.
    pub fn recover(
        &mut self,
        dir: &Path,
        spooled: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<Batch>> {
        match &mut self.packer {
            Packer::Objects(batcher) => {
                let (objects, _) = batcher.recover(dir, spooled)?;
                Ok(objects.into_iter().map(Batch::Object).collect())
            }
            Packer::LogEvents(_) => Ok(Vec::new()),
        }
    }

    /// The write-ahead log a finished batch replaces: to delete once the batch is spooled.
    pub fn take_wal(&mut self, batch: &Batch) -> Option<PathBuf> {
        match (&mut self.packer, batch) {
            (Packer::Objects(batcher), Batch::Object(o)) => batcher.take_wal(&o.key),
            _ => None,
        }
    }

    /// Finishes every open object (shutdown).
    pub fn close_all(&mut self) -> Vec<Batch> {
        match &mut self.packer {
            Packer::Objects(batcher) => {
                batcher.close_all().into_iter().map(Batch::Object).collect()
            }
            Packer::LogEvents(_) => Vec::new(),
        }
    }
}
