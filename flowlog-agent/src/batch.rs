//! Records to objects: one object per flow log per 5-minute slot (by each record's `end`),
//! started anew at 75 MB, keyed exactly as AWS keys its S3 delivery. An object is gzip text
//! (a header line, then one record per line: `.log.gz`) or Parquet (`.log.parquet`), as AWS's
//! `DestinationOptions.FileFormat` chooses.
//!
//! Object names are deterministic per batch (flow log, slot, first window, part), so publishing
//! the same batch twice overwrites instead of duplicating.

use std::{collections::BTreeMap, io::Write as _};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::{Compression, write::GzEncoder};

use tracing::error;

use crate::{
    clock::slot_start, format::LogFormat, metadata::Metadata, parquet_object::ParquetObject,
    records::FlowRecord,
};

/// AWS starts a new file at 75 MB.
pub const MAX_OBJECT_BYTES: usize = 75 * 1024 * 1024;
/// AWS publishes a file every 5 minutes.
pub const DEFAULT_ROLLOVER_SECS: u64 = 300;

/// `DestinationOptions.FileFormat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// Gzip text with a header line (`.log.gz`).
    #[default]
    PlainText,
    /// Parquet with GZIP-compressed columns (`.log.parquet`).
    Parquet,
}

impl FileFormat {
    /// File name extension after the hash.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::PlainText => "log.gz",
            FileFormat::Parquet => "log.parquet",
        }
    }
}

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
            format!(
                "AWSLogs/{acct}/vpcflowlogs/{region}/{}/",
                t.format("%Y/%m/%d")
            )
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

/// An object's body being filled.
enum Body {
    Text(GzEncoder<Vec<u8>>),
    Parquet(Box<ParquetObject>),
}

impl Body {
    fn size(&self) -> usize {
        match self {
            Body::Text(gz) => gz.get_ref().len(),
            Body::Parquet(p) => p.size_estimate(),
        }
    }
}

struct OpenObject {
    body: Body,
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
    file_format: FileFormat,
    rollover_secs: u64,
    max_bytes: usize,
    open: BTreeMap<u64, OpenObject>,
    line: String,
}

impl Batcher {
    pub fn new(
        layout: ObjectLayout,
        format: LogFormat,
        meta: Metadata,
        rollover_secs: u64,
    ) -> Self {
        Batcher {
            layout,
            format,
            meta,
            file_format: FileFormat::PlainText,
            rollover_secs: rollover_secs.max(1),
            max_bytes: MAX_OBJECT_BYTES,
            open: BTreeMap::new(),
            line: String::with_capacity(256),
        }
    }

    /// Writes `file_format` objects (default: plain text). Fails if the log format has no
    /// Parquet schema (it always has one: names and types are fixed per field).
    pub fn with_file_format(mut self, file_format: FileFormat) -> anyhow::Result<Self> {
        if file_format == FileFormat::Parquet {
            crate::parquet_object::schema(&self.format)?;
        }
        self.file_format = file_format;
        Ok(self)
    }

    /// The records' metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
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
            let (format, ff) = (&self.format, self.file_format);
            let obj = self
                .open
                .entry(slot)
                .or_insert_with(|| new_object(format, ff, window_start, 0));
            match &mut obj.body {
                Body::Text(gz) => {
                    self.line.clear();
                    self.format.render_into(rec, &self.meta, &mut self.line);
                    self.line.push('\n');
                    // Writing into a Vec cannot fail.
                    let _ = gz.write_all(self.line.as_bytes());
                }
                Body::Parquet(p) => {
                    let row = self.format.values(rec, &self.meta);
                    if let Err(e) = p.push(&row, &mut self.line) {
                        // Only a value beyond its column's range gets here (none can today).
                        error!(error = %format!("{e:#}"), "record left out of the Parquet object");
                        continue;
                    }
                }
            }
            obj.records += 1;
            if obj.body.size() >= self.max_bytes {
                let next = new_object(&self.format, self.file_format, window_start, obj.part + 1);
                let done = std::mem::replace(obj, next);
                full.extend(self.finish(slot, done));
            }
        }
        full
    }

    /// Finishes every slot that ends at or before `t`: no later window can add to it.
    pub fn close_until(&mut self, t: u64) -> Vec<FinishedObject> {
        let due: Vec<u64> = self
            .open
            .keys()
            .filter(|s| **s + self.rollover_secs <= t)
            .copied()
            .collect();
        due.into_iter().filter_map(|s| self.close_slot(s)).collect()
    }

    /// Finishes every open object (shutdown).
    pub fn close_all(&mut self) -> Vec<FinishedObject> {
        let all: Vec<u64> = self.open.keys().copied().collect();
        all.into_iter().filter_map(|s| self.close_slot(s)).collect()
    }

    fn close_slot(&mut self, slot: u64) -> Option<FinishedObject> {
        let obj = self.open.remove(&slot)?;
        if obj.records > 0 {
            self.finish(slot, obj)
        } else {
            None
        }
    }

    fn finish(&self, slot: u64, obj: OpenObject) -> Option<FinishedObject> {
        let mut h = crc32fast::Hasher::new();
        h.update(self.layout.flow_log_id.as_bytes());
        h.update(&slot.to_le_bytes());
        h.update(&obj.first_window.to_le_bytes());
        h.update(&obj.part.to_le_bytes());
        let key = self
            .layout
            .key(slot, h.finalize(), self.file_format.extension());
        let records = obj.records;
        let body = match obj.body {
            // Finishing a gzip stream into a Vec cannot fail.
            Body::Text(gz) => gz.finish().unwrap_or_default(),
            Body::Parquet(p) => match p.finish() {
                Ok(b) => b,
                Err(e) => {
                    error!(key, records, error = %format!("{e:#}"), "cannot finish a Parquet object: records lost");
                    return None;
                }
            },
        };
        Some(FinishedObject {
            key,
            body: Bytes::from(body),
            records,
        })
    }
}

fn new_object(
    format: &LogFormat,
    file_format: FileFormat,
    first_window: u64,
    part: u32,
) -> OpenObject {
    let body = match file_format {
        FileFormat::PlainText => {
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            let _ = gz.write_all(format.header().as_bytes());
            let _ = gz.write_all(b"\n");
            Body::Text(gz)
        }
        // `with_file_format` checked that the format's schema builds.
        FileFormat::Parquet => match ParquetObject::new(format) {
            Ok(p) => Body::Parquet(Box::new(p)),
            Err(e) => unreachable!("Parquet schema of a parsed format: {e:#}"),
        },
    };
    OpenObject {
        body,
        records: 0,
        first_window,
        part,
    }
}
