//! Records to objects: one gzip text object per flow log per 5-minute slot (by each record's
//! `end`), started anew at 75 MB, keyed exactly as AWS keys its S3 delivery.
//!
//! Object names are deterministic per batch (flow log, slot, first window, part), so publishing
//! the same batch twice overwrites instead of duplicating.

use std::{collections::BTreeMap, io::Write as _};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::{Compression, write::GzEncoder};

use crate::{clock::slot_start, format::LogFormat, metadata::Metadata, records::FlowRecord};

/// AWS starts a new file at 75 MB.
pub const MAX_OBJECT_BYTES: usize = 75 * 1024 * 1024;
/// AWS publishes a file every 5 minutes.
pub const DEFAULT_ROLLOVER_SECS: u64 = 300;

/// Where objects go under the destination root, as `DestinationOptions` shape it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLayout {
    pub account_id: String,
    pub region: String,
    pub flow_log_id: String,
    pub hive_compatible_partitions: bool,
    pub per_hour_partition: bool,
}

impl ObjectLayout {
    /// `AWSLogs/...` key of the object for the slot starting at `slot` (Unix seconds).
    pub fn key(&self, slot: u64, hash: u32, extension: &str) -> String {
        let t: DateTime<Utc> = DateTime::from_timestamp(slot as i64, 0).unwrap_or_default();
        let (acct, region) = (&self.account_id, &self.region);
        let mut key = if self.hive_compatible_partitions {
            format!(
                "AWSLogs/aws-account-id={acct}/aws-service=vpcflowlogs/aws-region={region}/year={}/month={}/day={}/",
                t.format("%Y"),
                t.format("%m"),
                t.format("%d")
            )
        } else {
            format!("AWSLogs/{acct}/vpcflowlogs/{region}/{}/", t.format("%Y/%m/%d"))
        };
        if self.per_hour_partition {
            if self.hive_compatible_partitions {
                key.push_str(&format!("hour={}/", t.format("%H")));
            } else {
                key.push_str(&format!("{}/", t.format("%H")));
            }
        }
        key.push_str(&format!(
            "{acct}_vpcflowlogs_{region}_{}_{}_{hash:08x}.{extension}",
            self.flow_log_id,
            t.format("%Y%m%dT%H%MZ")
        ));
        key
    }
}

/// A finished object, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedObject {
    /// Key relative to the destination root (`AWSLogs/...`).
    pub key: String,
    pub body: Bytes,
    pub records: usize,
}

struct OpenObject {
    gz: GzEncoder<Vec<u8>>,
    records: usize,
    /// Start of the first window written into it: part of the name's hash.
    first_window: u64,
    part: u32,
}

/// Collects formatted records into per-slot gzip text objects.
pub struct Batcher {
    layout: ObjectLayout,
    format: LogFormat,
    meta: Metadata,
    rollover_secs: u64,
    max_bytes: usize,
    open: BTreeMap<u64, OpenObject>,
    line: String,
}

impl Batcher {
    pub fn new(layout: ObjectLayout, format: LogFormat, meta: Metadata, rollover_secs: u64) -> Self {
        Batcher {
            layout,
            format,
            meta,
            rollover_secs: rollover_secs.max(1),
            max_bytes: MAX_OBJECT_BYTES,
            open: BTreeMap::new(),
            line: String::with_capacity(256),
        }
    }

    /// For tests: roll objects over at `bytes` instead of 75 MB.
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Adds a window's records (from the window starting at `window_start`). Returns objects
    /// that reached the size limit.
    pub fn add(&mut self, records: &[FlowRecord], window_start: u64) -> Vec<FinishedObject> {
        let mut full = Vec::new();
        for rec in records {
            let slot = slot_start(rec.end, self.rollover_secs);
            self.line.clear();
            self.format.render_into(rec, &self.meta, &mut self.line);
            self.line.push('\n');
            let header = &self.format;
            let obj = self.open.entry(slot).or_insert_with(|| new_object(header, window_start, 0));
            // Writing into a Vec cannot fail.
            let _ = obj.gz.write_all(self.line.as_bytes());
            obj.records += 1;
            if obj.gz.get_ref().len() >= self.max_bytes {
                let next = new_object(&self.format, window_start, obj.part + 1);
                let done = std::mem::replace(obj, next);
                full.push(self.finish(slot, done));
            }
        }
        full
    }

    /// Finishes every slot that ends at or before `t`: no later window can add to it.
    pub fn close_until(&mut self, t: u64) -> Vec<FinishedObject> {
        let due: Vec<u64> =
            self.open.keys().filter(|s| **s + self.rollover_secs <= t).copied().collect();
        due.into_iter().filter_map(|s| self.close_slot(s)).collect()
    }

    /// Finishes every open object (shutdown).
    pub fn close_all(&mut self) -> Vec<FinishedObject> {
        let all: Vec<u64> = self.open.keys().copied().collect();
        all.into_iter().filter_map(|s| self.close_slot(s)).collect()
    }

    fn close_slot(&mut self, slot: u64) -> Option<FinishedObject> {
        let obj = self.open.remove(&slot)?;
        (obj.records > 0).then(|| self.finish(slot, obj))
    }

    fn finish(&self, slot: u64, obj: OpenObject) -> FinishedObject {
        let mut h = crc32fast::Hasher::new();
        h.update(self.layout.flow_log_id.as_bytes());
        h.update(&slot.to_le_bytes());
        h.update(&obj.first_window.to_le_bytes());
        h.update(&obj.part.to_le_bytes());
        let key = self.layout.key(slot, h.finalize(), "log.gz");
        let records = obj.records;
        // Finishing a gzip stream into a Vec cannot fail.
        let body = obj.gz.finish().unwrap_or_default();
        FinishedObject { key, body: Bytes::from(body), records }
    }
}

fn new_object(format: &LogFormat, first_window: u64, part: u32) -> OpenObject {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    let _ = gz.write_all(format.header().as_bytes());
    let _ = gz.write_all(b"\n");
    OpenObject { gz, records: 0, first_window, part }
}
