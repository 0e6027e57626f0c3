//! Records to objects: one object per flow log per 5-minute slot (by each record's `end`),
//! started anew at 75 MB, keyed exactly as AWS keys its S3 delivery. An object is gzip text
//! (a header line, then one record per line: `.log.gz`) or Parquet (`.log.parquet`), as AWS's
//! `DestinationOptions.FileFormat` chooses.
//!
//! Object names are fixed per batch (flow log, slot, first window, part, agent run) when the batch
//! is finished, and travel with it through the spool, so publishing the same batch twice
//! overwrites instead of duplicating.

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
/// Gzip level of text objects. With the zlib-rs backend, level 3 of 1M synthetic records of
/// varied traffic (95 MiB of text) takes 0.40 s for 17.6 MiB, against 0.68 s for 17.2 MiB at the
/// default level 6 and 0.20 s for 25.9 MiB at level 1.
pub const GZIP_LEVEL: u32 = 3;
/// Text is rendered into a buffer of about this size per object and compressed a buffer at
/// a time: one compressor call per record costs more than the compression itself. The size
/// limit is checked after each buffer, so a text object can pass 75 MB by one buffer's
/// compressed bytes.
const TEXT_CHUNK_BYTES: usize = 128 * 1024;

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
    Text(Box<TextBody>),
    Parquet(Box<ParquetObject>),
}

impl Body {
    fn size(&self) -> usize {
        match self {
            Body::Text(t) => t.gz.get_ref().len(),
            Body::Parquet(p) => p.size_estimate(),
        }
    }
}

/// Gzip text: lines rendered into `pending`, compressed [`TEXT_CHUNK_BYTES`] at a time.
struct TextBody {
    gz: GzEncoder<Vec<u8>>,
    pending: String,
}

impl TextBody {
    fn new(header: &str) -> Self {
        let mut pending = String::with_capacity(TEXT_CHUNK_BYTES + 4096);
        pending.push_str(header);
        pending.push('\n');
        TextBody {
            gz: GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL)),
            pending,
        }
    }

    /// Compresses what is pending.
    fn flush(&mut self) {
        // Writing into a Vec cannot fail.
        let _ = self.gz.write_all(self.pending.as_bytes());
        self.pending.clear();
    }

    fn finish(mut self: Box<Self>) -> Vec<u8> {
        self.flush();
        // Finishing a gzip stream into a Vec cannot fail.
        self.gz.finish().unwrap_or_default()
    }
}

/// Distinguishes this agent process in object names, so two agents that share a flow log id,
/// slot and first window (same host, same destination, started in the same second) never
/// overwrite each other's objects. A name is fixed when its batch is finished and spooled, so
/// a replay by a later process still overwrites rather than duplicates.
fn run_id() -> u64 {
    static RUN_ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RUN_ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        nanos ^ (u64::from(std::process::id()) << 32)
    })
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
    /// Scratch text of a Parquet row.
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
                Body::Text(text) => {
                    self.format.render_into(rec, &self.meta, &mut text.pending);
                    text.pending.push('\n');
                    obj.records += 1;
                    if text.pending.len() < TEXT_CHUNK_BYTES {
                        continue;
                    }
                    text.flush();
                }
                Body::Parquet(p) => {
                    let row = self.format.values(rec, &self.meta);
                    if let Err(e) = p.push(&row, &mut self.line) {
                        // Only a value beyond its column's range gets here (none can today).
                        error!(error = %format!("{e:#}"), "record left out of the Parquet object");
                        continue;
                    }
                    obj.records += 1;
                }
            }
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
        h.update(&run_id().to_le_bytes());
        let key = self
            .layout
            .key(slot, h.finalize(), self.file_format.extension());
        let records = obj.records;
        let body = match obj.body {
            Body::Text(text) => text.finish(),
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
        FileFormat::PlainText => Body::Text(Box::new(TextBody::new(&format.header()))),
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

#[cfg(test)]
mod tests {
    use std::{
        io::Read as _,
        net::{IpAddr, Ipv4Addr},
    };

    use super::*;
    use crate::records::{Action, Direction, LogStatus, Traffic};

    fn record(i: u32, end: u64) -> FlowRecord {
        let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let b = IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1));
        FlowRecord {
            interface_id: "eth0".into(),
            log_status: LogStatus::Ok,
            start: end - 30,
            end,
            traffic: Some(Traffic {
                direction: Direction::Ingress,
                src: a,
                dst: b,
                pkt_src: a,
                pkt_dst: b,
                src_port: (i % 60_000) as u16,
                dst_port: 443,
                protocol: 6,
                packets: u64::from(i),
                bytes: u64::from(i) * 60,
                tcp_flags: 2,
                action: Action::Accept,
                reject_reason: None,
            }),
        }
    }

    /// Text goes through the compressor a chunk at a time: objects of two slots filled in
    /// turns, each several chunks long, hold exactly their header and their records' lines in
    /// order.
    #[test]
    fn text_objects_hold_every_line_in_order_across_chunks_and_slots() {
        let layout = ObjectLayout {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            flow_log_id: "fl-1".into(),
            hive_compatible_partitions: false,
            per_hour_partition: false,
        };
        let (format, meta) = (LogFormat::default(), Metadata::default());
        let mut b = Batcher::new(layout, format.clone(), meta.clone(), 300);
        let (slot_a, slot_b) = (1_800_000_000, 1_800_000_300);
        let records: Vec<FlowRecord> = (0..20_000)
            .map(|i| record(i, if i % 3 == 0 { slot_b + 10 } else { slot_a + 10 }))
            .collect();
        let mut want = BTreeMap::<u64, String>::new();
        for r in &records {
            let text = want
                .entry(slot_start(r.end, 300))
                .or_insert_with(|| format.header() + "\n");
            text.push_str(&format.render(r, &meta));
            text.push('\n');
        }
        assert!(
            want.values().all(|t| t.len() > 4 * TEXT_CHUNK_BYTES),
            "each object spans chunks"
        );
        assert!(b.add(&records[..7_000], slot_a).is_empty());
        assert!(b.add(&records[7_000..], slot_a).is_empty());
        let objects = b.close_all();
        assert_eq!(objects.len(), 2);
        for (o, (slot, want)) in objects.iter().zip(&want) {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&o.body[..])
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(o.records, want.lines().count() - 1, "slot {slot}");
            assert!(
                text == *want,
                "slot {slot}: the object's text differs from its records' lines"
            );
        }
        assert_eq!(objects[0].records + objects[1].records, 20_000);
    }
}
