//! Records to objects: one object per flow log per 5-minute slot (by each record's `end`),
//! started anew at 75 MB, keyed exactly as AWS keys its S3 delivery. An object is gzip text
//! (a header line, then one record per line: `.log.gz`) or Parquet (`.log.parquet`), as AWS's
//! `DestinationOptions.FileFormat` chooses.
//!
//! Object names are fixed per batch (flow log, slot, first window, part, agent run) when the batch
//! is finished, and travel with it through the spool, so publishing the same batch twice
//! overwrites instead of duplicating.
//!
//! With [`Batcher::recover`] called, every open object also has a write-ahead log
//! ([`crate::publish::wal`]) that holds its records as the same text lines, written as they fill a chunk
//! and made durable per window by [`Batcher::commit_window`]: each record is rendered once.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use tracing::{error, info, warn};

use crate::{
    capture::clock::slot_start,
    inventory::metadata::Metadata,
    metrics,
    publish::wal::{self, WalHeader, WalWriter},
    publish::{
        layout::{FileFormat, ObjectLayout},
        parquet_object::ParquetObject,
    },
    records::FlowRecord,
    records::format::{ColumnType, LogFormat, Value},
};

/// AWS starts a new file at 75 MB.
pub const MAX_OBJECT_BYTES: usize = 75 * 1024 * 1024;
/// AWS publishes a file every 5 minutes.
pub const DEFAULT_ROLLOVER_SECS: u64 = 300;
/// Gzip level of text objects: the output only has to be valid gzip, and compression is the
/// largest single cost of a streamed window's records. With the zlib-rs backend, the 85 MiB of
/// text of 1M streamed (unsorted) records of the drain bench took, in CPU time: level 2
/// (`deflate_fast`) 0.26 s for 10.35 MB, level 3 (`deflate_medium`) 0.37 s for 9.74 MB, level 1
/// (`deflate_quick`, static Huffman codes only) 0.20 s for 13.69 MB. Level 2 keeps most of the
/// saving for 6 % more bytes; level 1 would cost 41 % more (2026-12-02, 2 shared cores). Before
/// that: of 1M synthetic records of varied traffic (95 MiB), level 3 0.40 s for 17.6 MiB, the
/// default level 6 0.68 s for 17.2 MiB.
pub const GZIP_LEVEL: u32 = 2;
/// Text is rendered into a buffer of about this size per object and compressed (and appended to
/// the write-ahead log) a buffer at a time: one compressor call per record costs more than the
/// compression itself. A text object's compressed size grows a buffer at a time, so it can pass
/// 75 MB by one buffer's compressed bytes.
const TEXT_CHUNK_BYTES: usize = 128 * 1024;

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
    /// Gzip text: the header and every chunk of lines written so far.
    Text(Box<GzEncoder<Vec<u8>>>),
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

/// Distinguishes this agent process in object names, so two agents that share a flow log id,
/// slot and first window (same host, same destination, started in the same second) never
/// overwrite each other's objects. A name is fixed when its batch is finished and spooled, so
/// a replay by a later process still overwrites rather than duplicates; an object recovered
/// from a write-ahead log keeps the run id of the run that opened it.
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

/// What an object's name is made of besides the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ObjectId {
    slot: u64,
    /// Start of the first window written into it.
    first_window: u64,
    part: u32,
    run_id: u64,
}

impl ObjectId {
    fn key(&self, layout: &ObjectLayout, file_format: FileFormat) -> String {
        let mut h = crc32fast::Hasher::new();
        h.update(layout.flow_log_id.as_bytes());
        h.update(&self.slot.to_le_bytes());
        h.update(&self.first_window.to_le_bytes());
        h.update(&self.part.to_le_bytes());
        h.update(&self.run_id.to_le_bytes());
        layout.key(self.slot, h.finalize(), file_format.extension())
    }
}

struct OpenObject {
    id: ObjectId,
    body: Body,
    records: usize,
    /// Lines rendered since the last chunk went out (to the WAL and, for text, to the
    /// compressor), each ending in `\n`, and how many.
    lines: String,
    lines_records: u64,
    /// Where the records of its closed windows are durable (`None`: no WAL, or it failed).
    wal: Option<WalWriter>,
    /// The WAL's path, deleted once the finished object is spooled (kept after a WAL failure,
    /// so a partial WAL is never recovered over the complete object).
    wal_path: Option<PathBuf>,
    /// Records added since the last commit.
    uncommitted: bool,
}

impl OpenObject {
    /// Sends the pending lines to the WAL (not yet durable) and, for text, to the compressor.
    fn flush_lines(&mut self, to_wal: bool) {
        if to_wal
            && let Some(w) = &mut self.wal
            && let Err(e) = w.append(&self.lines, self.lines_records)
        {
            self.wal_failed(e);
        }
        if let Body::Text(gz) = &mut self.body {
            // Writing into a Vec cannot fail.
            let _ = gz.write_all(self.lines.as_bytes());
        }
        self.lines.clear();
        self.lines_records = 0;
    }

    /// Makes every record added so far durable in the WAL, as the window starting at
    /// `window_start`.
    fn commit(&mut self, window_start: u64) {
        self.flush_lines(true);
        if let Some(w) = &mut self.wal
            && let Err(e) = w.commit(window_start)
        {
            self.wal_failed(e);
        }
        self.uncommitted = false;
    }

    /// A WAL that cannot be written is given up for this object (its records stay in memory
    /// and reach the spool when it is finished, as without a WAL): a partial WAL is deleted so
    /// no later start recovers it.
    fn wal_failed(&mut self, e: anyhow::Error) {
        error!(error = %format!("{e:#}"), records = self.records,
               "write-ahead log failed: this object's records are kept in memory only until it is finished (a crash loses them)");
        metrics::counter_add(
            "flowlog_wal_failures_total",
            "Write-ahead logs given up because they could not be written or synced.",
            &[],
            1,
        );
        self.wal = None;
        if let Some(p) = &self.wal_path
            && let Err(e) = wal::remove(p)
        {
            error!(error = %format!("{e:#}"), "cannot delete a failed write-ahead log");
        }
    }
}

/// How this flow log's objects are made, shared by every open object.
struct Shape {
    layout: ObjectLayout,
    format: LogFormat,
    file_format: FileFormat,
    /// Where write-ahead logs go (the spool directory); `None`: no WAL.
    wal_dir: Option<PathBuf>,
}

impl Shape {
    fn open(&self, slot: u64, first_window: u64, part: u32) -> OpenObject {
        let id = ObjectId {
            slot,
            first_window,
            part,
            run_id: run_id(),
        };
        let body = match self.file_format {
            FileFormat::PlainText => Body::Text(Box::new(text_body(&self.format))),
            // `with_file_format` checked that the format's schema builds.
            FileFormat::Parquet => match ParquetObject::new(&self.format) {
                Ok(p) => Body::Parquet(Box::new(p)),
                Err(e) => unreachable!("Parquet schema of a parsed format: {e:#}"),
            },
        };
        let mut wal_path = None;
        let wal = self.wal_dir.as_deref().and_then(|dir| {
            let header = WalHeader {
                slot,
                first_window,
                part,
                run_id: id.run_id,
                layout: self.layout.clone(),
                file_format: self.file_format,
                log_format: format_spec(&self.format),
            };
            wal_path = Some(dir.join(header.file_name()));
            match WalWriter::create(dir, &header) {
                Ok(w) => Some(w),
                Err(e) => {
                    error!(error = %format!("{e:#}"),
                           "cannot start a write-ahead log: this object's records are kept in memory only until it is finished (a crash loses them)");
                    metrics::counter_add(
                        "flowlog_wal_failures_total",
                        "Write-ahead logs given up because they could not be written or synced.",
                        &[],
                        1,
                    );
                    None
                }
            }
        });
        OpenObject {
            id,
            body,
            records: 0,
            lines: String::with_capacity(TEXT_CHUNK_BYTES + 4096),
            lines_records: 0,
            wal,
            wal_path,
            uncommitted: false,
        }
    }
}

/// A text object's compressor, header line written.
fn text_body(format: &LogFormat) -> GzEncoder<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL));
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(format!("{}\n", format.header()).as_bytes());
    gz
}

/// `format` as `--log-format` takes it, for a WAL header.
fn format_spec(format: &LogFormat) -> String {
    format
        .fields()
        .iter()
        .map(|f| format!("${{{}}}", f.name()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What [`Batcher::recover`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStats {
    pub objects: usize,
    pub records: u64,
    pub windows: u64,
}

/// Collects formatted records into per-slot objects.
pub struct Batcher {
    /// Boxed: keeps `Batcher` near the size of the CloudWatch packer it shares an enum with.
    shape: Box<Shape>,
    meta: Metadata,
    rollover_secs: u64,
    max_bytes: usize,
    open: BTreeMap<u64, OpenObject>,
    /// WALs of finished objects, by key, until the object is spooled ([`Batcher::take_wal`]).
    finished_wals: HashMap<String, PathBuf>,
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
            shape: Box::new(Shape {
                layout,
                format,
                file_format: FileFormat::PlainText,
                wal_dir: None,
            }),
            meta,
            rollover_secs: rollover_secs.max(1),
            max_bytes: MAX_OBJECT_BYTES,
            open: BTreeMap::new(),
            finished_wals: HashMap::new(),
            line: String::with_capacity(256),
        }
    }

    /// Writes `file_format` objects (default: plain text). Fails if the log format has no
    /// Parquet schema (it always has one: names and types are fixed per field).
    pub fn with_file_format(mut self, file_format: FileFormat) -> anyhow::Result<Self> {
        if file_format == FileFormat::Parquet {
            crate::publish::parquet_object::schema(&self.shape.format)?;
        }
        self.shape.file_format = file_format;
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

    /// From now on, every open object has a write-ahead log in `dir` (see [`crate::publish::wal`]),
    /// committed by [`Batcher::commit_window`]. First finishes the objects whose WALs an
    /// earlier run left in `dir` (it crashed or was killed), under the keys that run would have
    /// given them, except those `spooled` says are already in the spool (a crash between
    /// spooling an object and deleting its WAL). Their WALs are deleted once they are spooled
    /// too ([`Batcher::take_wal`]).
    ///
    /// A recovered object is finished at once rather than kept open for the slot's next
    /// windows: its key carries the crashed run's id, and an object that both runs fill could,
    /// after a second crash, be described by two WALs at once. Finished at once, each record is
    /// written exactly once, and its object gets the key the crashed run would have given it;
    /// the cost is one more (smaller) object for that slot.
    pub fn recover(
        &mut self,
        dir: &Path,
        spooled: impl Fn(&str) -> bool,
    ) -> anyhow::Result<(Vec<FinishedObject>, RecoveryStats)> {
        let mut done = Vec::new();
        let mut stats = RecoveryStats::default();
        let mut discarded_bytes = 0;
        for path in wal::list(dir)? {
            let recovered = match wal::read(&path).and_then(|r| {
                let object = recovered_object(&r)?;
                Ok((r, object))
            }) {
                Ok(r) => r,
                Err(e) => {
                    let aside = path.with_extension("wal.rejected");
                    error!(file = %path.display(), set_aside = %aside.display(), error = %format!("{e:#}"),
                           "unreadable write-ahead log: its records are not recovered (the file is kept)");
                    if let Err(e) = std::fs::rename(&path, &aside) {
                        error!(file = %path.display(), error = %e, "cannot rename a write-ahead log to *.rejected");
                    }
                    continue;
                }
            };
            let (r, object) = recovered;
            discarded_bytes += r.discarded_bytes;
            match object {
                Some(o) if !spooled(&o.key) => {
                    stats.objects += 1;
                    stats.records += r.records;
                    stats.windows += r.windows;
                    self.finished_wals.insert(o.key.clone(), path);
                    done.push(o);
                }
                // Nothing committed, or the finished object is already spooled.
                _ => wal::remove(&path)?,
            }
        }
        if stats.objects > 0 || discarded_bytes > 0 {
            info!(dir = %dir.display(), objects = stats.objects, records = stats.records, windows = stats.windows,
                  discarded_bytes, "recovered the closed windows of objects an earlier run left open (it did not shut down cleanly); the window open at the crash is lost");
        }
        metrics::counter_add(
            "flowlog_recovered_records_total",
            "Records of closed windows recovered from write-ahead logs an earlier run left.",
            &[],
            stats.records,
        );
        self.shape.wal_dir = Some(dir.to_path_buf());
        Ok((done, stats))
    }

    /// The WAL of the finished object `key`, to delete once the object is spooled.
    pub fn take_wal(&mut self, key: &str) -> Option<PathBuf> {
        self.finished_wals.remove(key)
    }

    /// Adds a window's records (from the window starting at `window_start`). Returns objects
    /// that reached the size limit.
    pub fn add(&mut self, records: &[FlowRecord], window_start: u64) -> Vec<FinishedObject> {
        let mut full = Vec::new();
        let with_wal = self.shape.wal_dir.is_some();
        for rec in records {
            let slot = slot_start(rec.end, self.rollover_secs);
            let shape = &self.shape;
            let obj = self
                .open
                .entry(slot)
                .or_insert_with(|| shape.open(slot, window_start, 0));
            match &mut obj.body {
                Body::Text(_) => shape.format.render_into(rec, &self.meta, &mut obj.lines),
                Body::Parquet(p) => {
                    let row = shape.format.values(rec, &self.meta);
                    if let Err(e) = p.push(&row, &mut self.line) {
                        // Only a value beyond its column's range gets here (none can today).
                        error!(error = %format!("{e:#}"), "record left out of the Parquet object");
                        continue;
                    }
                    // The WAL holds Parquet rows as text lines too: each column's text is the
                    // value Parquet stores (a `-` in an integer column is a null).
                    if with_wal {
                        for (i, v) in row.iter().enumerate() {
                            if i > 0 {
                                obj.lines.push(' ');
                            }
                            v.write_text(&mut obj.lines);
                        }
                    }
                }
            }
            if with_wal || matches!(obj.body, Body::Text(_)) {
                obj.lines.push('\n');
                obj.lines_records += 1;
            }
            obj.records += 1;
            obj.uncommitted = true;
            if obj.lines.len() >= TEXT_CHUNK_BYTES {
                obj.flush_lines(true);
            }
            if obj.body.size() >= self.max_bytes {
                let next = shape.open(slot, window_start, obj.id.part + 1);
                let done = std::mem::replace(obj, next);
                full.extend(finish(shape, &mut self.finished_wals, done));
            }
        }
        full
    }

    /// Makes the records of every open object durable in its WAL (write and fsync), as the
    /// window starting at `window_start`: call after [`Batcher::close_until`], so objects
    /// finished now go to the spool without a WAL sync first. Returns the WAL bytes written
    /// so far by the open objects.
    pub fn commit_window(&mut self, window_start: u64) -> u64 {
        if self.shape.wal_dir.is_none() {
            return 0;
        }
        let mut spent = wal::Spent::default();
        for obj in self.open.values_mut() {
            if obj.uncommitted {
                obj.commit(window_start);
            }
            if let Some(w) = &mut obj.wal {
                spent += w.take_spent();
            }
        }
        metrics::gauge_set(
            "flowlog_wal_last_window_seconds",
            "Time the last window's write-ahead log writes and fsyncs took.",
            &[],
            spent.total.as_secs_f64(),
        );
        metrics::gauge_set(
            "flowlog_wal_last_fsync_seconds",
            "Time the last window's write-ahead log fsyncs took.",
            &[],
            spent.sync.as_secs_f64(),
        );
        let bytes = self
            .open
            .values()
            .filter_map(|o| o.wal.as_ref().map(WalWriter::bytes))
            .sum();
        metrics::gauge_set(
            "flowlog_wal_bytes",
            "Bytes in the write-ahead logs of open objects (not counted in --spool-max-bytes).",
            &[],
            bytes as f64,
        );
        bytes
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
        finish(&self.shape, &mut self.finished_wals, obj)
    }
}

/// The object's key and body. Its WAL is kept (in `finished_wals`) until the object is spooled.
fn finish(
    shape: &Shape,
    finished_wals: &mut HashMap<String, PathBuf>,
    mut obj: OpenObject,
) -> Option<FinishedObject> {
    obj.flush_lines(false);
    drop(obj.wal.take());
    let key = obj.id.key(&shape.layout, shape.file_format);
    let records = obj.records;
    if records == 0 {
        if let Some(p) = &obj.wal_path
            && let Err(e) = wal::remove(p)
        {
            warn!(error = %format!("{e:#}"), "cannot delete an empty write-ahead log");
        }
        return None;
    }
    let body = match obj.body {
        Body::Text(gz) => gz.finish().unwrap_or_default(),
        Body::Parquet(p) => match p.finish() {
            Ok(b) => b,
            Err(e) => {
                error!(key, records, error = %format!("{e:#}"), "cannot finish a Parquet object: records lost");
                return None;
            }
        },
    };
    if let Some(p) = obj.wal_path {
        finished_wals.insert(key.clone(), p);
    }
    Some(FinishedObject {
        key,
        body: Bytes::from(body),
        records,
    })
}

/// The object a WAL describes, finished (`None` if no window was committed).
fn recovered_object(r: &wal::Recovered) -> anyhow::Result<Option<FinishedObject>> {
    if r.records == 0 {
        return Ok(None);
    }
    let h = &r.header;
    let format: LogFormat = h
        .log_format
        .parse()
        .context("the write-ahead log's --log-format")?;
    let id = ObjectId {
        slot: h.slot,
        first_window: h.first_window,
        part: h.part,
        run_id: h.run_id,
    };
    let body = match h.file_format {
        FileFormat::PlainText => {
            let mut gz = text_body(&format);
            // Writing into a Vec cannot fail.
            let _ = gz.write_all(r.lines.as_bytes());
            gz.finish().unwrap_or_default()
        }
        FileFormat::Parquet => {
            let mut p = ParquetObject::new(&format)?;
            let mut scratch = String::new();
            let mut row = Vec::with_capacity(format.fields().len());
            for line in r.lines.lines() {
                row.clear();
                let tokens = line.split(' ').count();
                ensure!(
                    tokens == format.fields().len(),
                    "a line has {tokens} of {} fields",
                    format.fields().len()
                );
                for (field, token) in format.fields().iter().zip(line.split(' ')) {
                    row.push(match (field.column_type(), token) {
                        (ColumnType::String, t) => Value::Text(t),
                        (_, "-") => Value::Missing,
                        (_, t) => Value::Int(
                            t.parse()
                                .with_context(|| format!("bad ${{{}}} {t:?}", field.name()))?,
                        ),
                    });
                }
                p.push(&row, &mut scratch)?;
            }
            p.finish()?
        }
    };
    Ok(Some(FinishedObject {
        key: id.key(&h.layout, h.file_format),
        body: Bytes::from(body),
        records: r.records as usize,
    }))
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read as _,
        net::{IpAddr, Ipv4Addr},
    };

    use super::*;
    use crate::{
        capture::{collect::Direction, reject::verdict::Action},
        records::{LogStatus, Traffic},
    };

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
        // The expected text is written out here, field by field in AWS's default order, not
        // rendered by the format under test.
        let line = |i: u32, end: u64| {
            format!(
                "2 unknown eth0 {} 10.255.0.1 {} 443 6 {i} {} {} {end} ACCEPT OK",
                Ipv4Addr::from(0x0a00_0000 + i),
                i % 60_000,
                u64::from(i) * 60,
                end - 30,
            )
        };
        assert_eq!(
            line(1, slot_a + 10),
            "2 unknown eth0 10.0.0.1 10.255.0.1 1 443 6 1 60 1799999980 1800000010 ACCEPT OK"
        );
        let mut want = BTreeMap::<u64, String>::new();
        for (i, r) in (0..).zip(&records) {
            let text = want.entry(slot_start(r.end, 300)).or_insert_with(|| {
                "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets \
                 bytes start end action log-status\n"
                    .to_string()
            });
            text.push_str(&line(i, r.end));
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

    fn layout() -> ObjectLayout {
        ObjectLayout {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            flow_log_id: "fl-1".into(),
            hive_compatible_partitions: false,
            per_hour_partition: false,
        }
    }

    fn batcher(file_format: FileFormat) -> Batcher {
        let format: LogFormat = "${version} ${srcaddr} ${dstaddr} ${srcport} ${packets} ${bytes} ${start} ${end} ${action} ${log-status} ${traffic-path}"
            .parse()
            .unwrap();
        Batcher::new(layout(), format, Metadata::default(), 300)
            .with_file_format(file_format)
            .unwrap()
    }

    /// Windows of records of one 5-minute slot, several chunks each.
    fn windows(slot: u64) -> Vec<Vec<FlowRecord>> {
        (0..4u32)
            .map(|w| {
                (0..3_000)
                    .map(|i| record(w * 3_000 + i + 1, slot + 10 + u64::from(w)))
                    .collect()
            })
            .collect()
    }

    /// A crash (the batcher dropped without finishing) after three committed windows and in
    /// the middle of a fourth: the next run's recovery finishes exactly the object an orderly
    /// shutdown after the third window would have written, under the same key, in both file
    /// formats; nothing of the fourth window.
    #[test]
    fn recovery_rebuilds_the_object_of_the_committed_windows_under_its_key() {
        let slot = 1_800_000_000;
        let w = windows(slot);
        for ff in [FileFormat::PlainText, FileFormat::Parquet] {
            // What an orderly run finishes after the first three windows.
            let mut orderly = batcher(ff);
            for (i, records) in w[..3].iter().enumerate() {
                orderly.add(records, slot + i as u64);
            }
            let want = orderly.close_all();
            assert_eq!(want.len(), 1);

            let dir = tempfile::tempdir().unwrap();
            let mut crashed = batcher(ff);
            let (none, _) = crashed.recover(dir.path(), |_| false).unwrap();
            assert!(none.is_empty());
            for (i, records) in w[..3].iter().enumerate() {
                assert!(crashed.add(records, slot + i as u64).is_empty());
                assert!(crashed.close_until(slot + i as u64 + 1).is_empty());
                crashed.commit_window(slot + i as u64);
            }
            crashed.add(&w[3], slot + 3);
            // The fourth window's lines partly reached the WAL (several chunks), uncommitted.
            let wals = wal::list(dir.path()).unwrap();
            assert_eq!(wals.len(), 1);
            let wal_bytes = std::fs::metadata(&wals[0]).unwrap().len();
            drop(crashed);

            let mut next = batcher(ff);
            let (got, stats) = next.recover(dir.path(), |_| false).unwrap();
            assert_eq!(
                stats,
                RecoveryStats {
                    objects: 1,
                    records: 9_000,
                    windows: 3
                }
            );
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].records, 9_000, "{ff:?}");
            assert_eq!(got[0].body, want[0].body, "{ff:?}: body");
            // Same slot, first window, part and run: the key the crashed run would have used.
            assert_eq!(got[0].key, want[0].key, "{ff:?}: key");
            assert!(wal_bytes > 4 * TEXT_CHUNK_BYTES as u64, "{wal_bytes}");
            // The WAL stays until the recovered object is spooled.
            assert_eq!(next.take_wal(&got[0].key), Some(wals[0].clone()));
            assert!(wals[0].exists());
        }
    }

    /// A crash after the finished object was spooled but before its WAL was deleted: the next
    /// start re-creates the object under the same key (so publishing it overwrites), or, when
    /// the spool says it holds that key, only deletes the WAL.
    #[test]
    fn a_wal_left_after_its_object_was_spooled_gives_the_same_key_or_nothing() {
        let slot = 1_800_000_000;
        let w = windows(slot);
        let dir = tempfile::tempdir().unwrap();
        let mut first = batcher(FileFormat::PlainText);
        first.recover(dir.path(), |_| false).unwrap();
        for (i, records) in w.iter().enumerate() {
            first.add(records, slot + i as u64);
            first.commit_window(slot + i as u64);
        }
        let finished = first.close_until(slot + 300);
        assert_eq!(finished.len(), 1);
        let wal_path = first.take_wal(&finished[0].key).unwrap();
        assert!(wal_path.exists(), "kept until the object is spooled");
        drop(first);

        let (again, _) = batcher(FileFormat::PlainText)
            .recover(dir.path(), |_| false)
            .unwrap();
        assert_eq!(again, finished, "same key, same body");
        let (none, stats) = batcher(FileFormat::PlainText)
            .recover(dir.path(), |k| k == finished[0].key)
            .unwrap();
        assert_eq!((none.len(), stats), (0, RecoveryStats::default()));
        assert!(!wal_path.exists(), "deleted: its object is in the spool");
    }

    /// Objects rolled over at the size limit: each part has its own WAL; a finished part's WAL
    /// waits for the spool, the open part's is recovered as that part.
    #[test]
    fn each_part_has_its_own_wal_and_key() {
        let slot = 1_800_000_000;
        let w = windows(slot);
        let dir = tempfile::tempdir().unwrap();
        let mut b = batcher(FileFormat::PlainText).with_max_bytes(5_000);
        b.recover(dir.path(), |_| false).unwrap();
        let mut full = Vec::new();
        for (i, records) in w.iter().enumerate() {
            full.extend(b.add(records, slot + i as u64));
            b.commit_window(slot + i as u64);
        }
        assert!(full.len() > 1, "{} parts finished", full.len());
        let open_records = 12_000 - full.iter().map(|o| o.records).sum::<usize>();
        for o in &full {
            // Spooled: the WAL goes.
            std::fs::remove_file(b.take_wal(&o.key).unwrap()).unwrap();
        }
        drop(b);
        let (got, stats) = batcher(FileFormat::PlainText)
            .recover(dir.path(), |_| false)
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(stats.records, open_records as u64);
        assert!(full.iter().all(|o| o.key != got[0].key));
    }
}
