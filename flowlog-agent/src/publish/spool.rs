//! The spool: every finished batch is written to disk (file and directory fsynced) before it is
//! published, and removed only once the destination acknowledged it. A restarted agent finds
//! what an earlier one could not deliver and publishes it first.
//!
//! One file per batch, `<sequence>-<crc32 of the batch's identity>.batch`: names sort in the
//! order batches were spooled, so "oldest" is the first name. A file is a magic line, a JSON
//! header line (kind, identity, record count, body length and CRC-32) and the body: the object's
//! bytes, or one `<timestamp-ms> <message>` line per log event.
//!
//! The spool is bounded: when a new batch takes it over `max_bytes`, or the filesystem is full
//! before that, the oldest batches (never the one being published, never the new one) are
//! deleted and returned to the caller, which counts and logs them.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use super::{
    Batch,
    events::{LogEvent, LogEventBatch},
};
use crate::{
    publish::batch::FinishedObject,
    publish::file_modes,
    publish::pid_lock::{self, Attempt},
};

/// `--spool-max-bytes` default: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

const MAGIC: &[u8] = b"flowlog-spool 1\n";
/// The lock file in a spool directory: locked (flock) by the agent that owns the spool, and
/// holding its process id for the message another agent gives.
const LOCK_FILE: &str = ".lock";
/// How often [`lock`] starts over when the lock file or the directory vanished under it. Each
/// try is a few syscalls. 20 tries all lost to an agent removing and re-creating its empty
/// spool in a tight loop (the unit test below) in 2 of 8 runs; the bound is now far above any
/// real race, and a thousand tries take milliseconds.
const LOCK_ATTEMPTS: u32 = 1000;
const EXTENSION: &str = "batch";
/// Suffix given to a batch the destination refused for good, so it is kept but not retried.
const REJECTED_SUFFIX: &str = "rejected";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Header {
    Object {
        key: String,
        records: usize,
        body_bytes: u64,
        crc32: u32,
    },
    LogEvents {
        stream: String,
        records: usize,
        body_bytes: u64,
        crc32: u32,
    },
}

impl Header {
    fn records(&self) -> usize {
        match self {
            Header::Object { records, .. } | Header::LogEvents { records, .. } => *records,
        }
    }
}

/// A spooled batch handed to the publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    seq: u64,
    pub path: PathBuf,
    pub records: usize,
}

/// Counts for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Batches waiting to be delivered (including the one being published).
    pub batches: usize,
    pub records: usize,
    pub bytes: u64,
    /// Batches (and their records) deleted unpublished because the spool was full.
    pub dropped_batches: u64,
    pub dropped_records: u64,
    /// Batches the destination refused for good, kept as `*.rejected`.
    pub rejected_batches: u64,
    pub rejected_records: u64,
}

/// What a [`Spool::put`] dropped to make room: the oldest undelivered batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub records: u64,
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// The object key of an object batch.
    key: Option<String>,
    bytes: u64,
    records: usize,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    next_seq: u64,
    in_flight: Option<u64>,
    stats: SpoolStats,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    changed: Notify,
    /// Held (flock) while the agent runs, so two agents never share a spool (see [`lock`]).
    _lock: fs::File,
}

impl Spool {
    /// Opens (creating) the spool in `dir` and indexes the batches an earlier agent left.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        let lock = lock(dir)?;
        let mut state = State::default();
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir)
            .with_context(|| format!("cannot list spool directory {}", dir.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot list spool directory {}", dir.display()))?
                .path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A batch whose write was interrupted: it was never published nor acknowledged
                // as spooled, so the agent that wrote it lost it along with its window.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(&format!(".{EXTENSION}")) else {
                continue;
            };
            let Some(seq) = stem.split('-').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            names.push((seq, path));
        }
        names.sort();
        for (seq, path) in names {
            state.next_seq = state.next_seq.max(seq + 1);
            let indexed = fs::metadata(&path)
                .map_err(anyhow::Error::from)
                .and_then(|m| read_header(&path).map(|(h, _)| (m.len(), h)));
            match indexed {
                Ok((bytes, header)) => {
                    state.stats.records += header.records();
                    state.stats.bytes += bytes;
                    let key = match &header {
                        Header::Object { key, .. } => Some(key.clone()),
                        Header::LogEvents { .. } => None,
                    };
                    state.entries.insert(
                        seq,
                        Entry {
                            path,
                            key,
                            bytes,
                            records: header.records(),
                        },
                    );
                }
                Err(e) => {
                    error!(file = %path.display(), error = %format!("{e:#}"), "unreadable spool file set aside as *.rejected");
                    set_aside(&path);
                }
            }
        }
        state.stats.batches = state.entries.len();
        if !state.entries.is_empty() {
            info!(dir = %dir.display(), batches = state.stats.batches, records = state.stats.records,
                  "spool holds batches an earlier run did not deliver: publishing them first");
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(state),
            changed: Notify::new(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `--spool-max-bytes`.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `batch` durably (temporary file, fsync, rename, directory fsync), then makes room
    /// by dropping the oldest batches if the spool is over its bound (returned: the caller
    /// reports them).
    pub fn put(&self, batch: &Batch) -> anyhow::Result<Dropped> {
        self.put_replacing(batch, None)
    }

    /// [`Spool::put`], deleting `replaced` (the write-ahead log of the object `batch` finishes)
    /// once the batch is durable and before the publisher can see it: so a WAL left by a crash
    /// in between means its object is still in the spool, never that it was already delivered
    /// (recovering it then would overwrite the delivered object with fewer records).
    pub fn put_replacing(&self, batch: &Batch, replaced: Option<&Path>) -> anyhow::Result<Dropped> {
        let seq = {
            let mut st = self.state();
            st.next_seq += 1;
            st.next_seq - 1
        };
        let name = format!(
            "{seq:012}-{:08x}.{EXTENSION}",
            crc32fast::hash(batch.identity().as_bytes())
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut dropped = Dropped::default();
        let bytes = loop {
            match write_durably(&tmp, &path, batch) {
                Ok(bytes) => break bytes,
                // The filesystem filled up before the bound did: make room the same way, by
                // dropping the oldest batches, and write again.
                Err(e) if is_storage_full(&e) && self.drop_oldest(seq, &mut dropped) => {}
                Err(e) => {
                    return Err(e.context(format!(
                        "cannot spool batch {} to {}",
                        batch.identity(),
                        self.dir.display()
                    )));
                }
            }
        };
        if let Some(wal) = replaced
            && let Err(e) = fs::remove_file(wal)
            && e.kind() != ErrorKind::NotFound
        {
            // Left behind, the next start would deliver its closed windows again under the
            // same key: over the complete object if that was delivered by then.
            error!(file = %wal.display(), error = %e,
                   "cannot delete the write-ahead log of a spooled object: delete it before the next start");
        }
        let key = match batch {
            Batch::Object(o) => Some(o.key.clone()),
            Batch::LogEvents(_) => None,
        };
        let mut st = self.state();
        st.entries.insert(
            seq,
            Entry {
                path,
                key,
                bytes,
                records: batch.records(),
            },
        );
        st.stats.batches += 1;
        st.stats.records += batch.records();
        st.stats.bytes += bytes;
        drop(st);
        while self.stats().bytes > self.max_bytes && self.drop_oldest(seq, &mut dropped) {}
        self.changed.notify_one();
        Ok(dropped)
    }

    /// Deletes the oldest batch that is neither being published nor `keep` (the one being
    /// added), adding it to `dropped`. False when there is none.
    fn drop_oldest(&self, keep: u64, dropped: &mut Dropped) -> bool {
        let mut st = self.state();
        let in_flight = st.in_flight;
        let Some(oldest) = st
            .entries
            .keys()
            .copied()
            .find(|s| Some(*s) != in_flight && *s != keep)
        else {
            return false;
        };
        let Some(e) = st.entries.remove(&oldest) else {
            return false;
        };
        if let Err(err) = fs::remove_file(&e.path) {
            warn!(file = %e.path.display(), error = %err, "cannot delete dropped spool file");
        }
        st.stats.batches -= 1;
        st.stats.records -= e.records;
        st.stats.bytes -= e.bytes;
        st.stats.dropped_batches += 1;
        st.stats.dropped_records += e.records as u64;
        dropped.batches += 1;
        dropped.records += e.records as u64;
        // The owner reports drops once per episode (publish::report); each file is here.
        debug!(file = %e.path.display(), records = e.records, max_bytes = self.max_bytes,
               "spool full: dropped the oldest undelivered batch");
        true
    }

    /// Whether an object batch with this key waits in the spool.
    pub fn holds_object(&self, key: &str) -> bool {
        self.state()
            .entries
            .values()
            .any(|e| e.key.as_deref() == Some(key))
    }

    /// The oldest batch not yet delivered, marked as being published.
    pub fn claim(&self) -> Option<Claim> {
        let mut st = self.state();
        let (&seq, e) = st.entries.iter().next()?;
        let claim = Claim {
            seq,
            path: e.path.clone(),
            records: e.records,
        };
        st.in_flight = Some(seq);
        Some(claim)
    }

    /// The destination acknowledged the batch: delete it.
    pub fn ack(&self, claim: &Claim) -> anyhow::Result<()> {
        self.forget(claim);
        match fs::remove_file(&claim.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| {
                format!(
                    "cannot delete delivered spool file {}",
                    claim.path.display()
                )
            }),
            _ => Ok(()),
        }
    }

    /// Publishing failed: the batch stays first in line.
    pub fn release(&self, claim: &Claim) {
        let mut st = self.state();
        if st.in_flight == Some(claim.seq) {
            st.in_flight = None;
        }
    }

    /// The destination refused the batch for good (or it cannot be read): keep the file as
    /// `*.rejected` for a human and go on with the next one.
    pub fn reject(&self, claim: &Claim) {
        self.forget(claim);
        set_aside(&claim.path);
        let mut st = self.state();
        st.stats.rejected_batches += 1;
        st.stats.rejected_records += claim.records as u64;
    }

    fn forget(&self, claim: &Claim) {
        let mut st = self.state();
        if st.in_flight == Some(claim.seq) {
            st.in_flight = None;
        }
        if let Some(e) = st.entries.remove(&claim.seq) {
            st.stats.batches -= 1;
            st.stats.records -= e.records;
            st.stats.bytes -= e.bytes;
        }
    }

    /// At a clean exit with nothing left: removes the lock file and the directory (kept if it
    /// holds anything else, such as `*.rejected` files), so per-destination default spools do
    /// not pile up.
    pub fn remove_if_empty(&self) {
        if self.state().entries.is_empty() {
            // Deleted while still locked: an agent that opened it before is told by [`lock`]
            // that it holds a file no longer in the directory, and starts over.
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = fs::remove_dir(&self.dir);
        }
    }

    pub fn stats(&self) -> SpoolStats {
        self.state().stats
    }

    /// Resolves after the next [`Spool::put`] (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// Takes the lock of the spool directory `dir` (creating both), for as long as the returned
/// file is open, and writes this process's id into it.
///
/// An agent that exits with an empty default spool deletes the lock file and the directory
/// while it still holds the lock. So a lock only counts if the locked file is still the one
/// at `dir/.lock`; otherwise (and when the directory or file vanished between the steps) this
/// starts over. Without that check, an agent that opened the file just before it was deleted
/// would hold a lock that keeps no one out, or fail with a misleading error.
fn lock(dir: &Path) -> anyhow::Result<fs::File> {
    let path = dir.join(LOCK_FILE);
    for _ in 0..LOCK_ATTEMPTS {
        match file_modes::create_dirs(dir, file_modes::PRIVATE_DIR_MODE) {
            Ok(()) => {}
            // Removed again between create_dir_all's mkdir and its check.
            Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot create spool directory {}: choose another with --spool-dir",
                        dir.display()
                    )
                });
            }
        }
        match pid_lock::attempt(&path) {
            Attempt::Locked(file) => {
                // Batches and write-ahead logs are records: the agent's user only.
                file_modes::tighten(dir, "spool directory")?;
                return Ok(file);
            }
            Attempt::Retry => continue,
            Attempt::Busy(owner) => bail!(
                "spool directory {} is in use by {owner}: stop that agent first, or give each agent its own --spool-dir",
                dir.display()
            ),
            Attempt::Open(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "spool directory {} is not writable: choose another with --spool-dir",
                        dir.display()
                    )
                });
            }
            Attempt::Lock(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot lock {}: choose another spool directory with --spool-dir",
                        path.display()
                    )
                });
            }
            Attempt::Write(e) => {
                return Err(e).with_context(|| format!("cannot write {}", path.display()));
            }
        }
    }
    bail!(
        "cannot lock spool directory {}: its lock file keeps disappearing (is something deleting it?): choose another with --spool-dir",
        dir.display()
    )
}

/// Reads a spooled batch back, checking its length and CRC-32.
pub fn load(path: &Path) -> anyhow::Result<Batch> {
    let (header, mut reader) = read_header(path)?;
    let (body_bytes, crc32) = match &header {
        Header::Object {
            body_bytes, crc32, ..
        }
        | Header::LogEvents {
            body_bytes, crc32, ..
        } => (*body_bytes, *crc32),
    };
    // The header is not covered by the CRC: preallocate no more than the file can hold.
    let file_bytes = reader.get_ref().metadata().map_or(0, |m| m.len());
    let mut body = Vec::with_capacity(body_bytes.min(file_bytes) as usize);
    reader
        .read_to_end(&mut body)
        .with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        body.len() as u64 == body_bytes,
        "{} is truncated: {} of {body_bytes} body bytes",
        path.display(),
        body.len()
    );
    ensure!(
        crc32fast::hash(&body) == crc32,
        "{} is corrupt: CRC-32 mismatch",
        path.display()
    );
    Ok(match header {
        Header::Object { key, records, .. } => Batch::Object(FinishedObject {
            key,
            body: Bytes::from(body),
            records,
        }),
        Header::LogEvents {
            stream, records, ..
        } => {
            let text = String::from_utf8(body)
                .with_context(|| format!("{} is corrupt: not UTF-8", path.display()))?;
            let mut events = Vec::with_capacity(records);
            for line in text.lines() {
                let (ts, message) = line
                    .split_once(' ')
                    .context("log event line without a timestamp")?;
                let timestamp_ms = ts.parse().with_context(|| {
                    format!("{} is corrupt: bad timestamp {ts:?}", path.display())
                })?;
                events.push(LogEvent {
                    timestamp_ms,
                    message: message.to_string(),
                });
            }
            ensure!(
                events.len() == records,
                "{} is corrupt: {} events, header says {records}",
                path.display(),
                events.len()
            );
            Batch::LogEvents(LogEventBatch { stream, events })
        }
    })
}

fn read_header(path: &Path) -> anyhow::Result<(Header, BufReader<fs::File>)> {
    let f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(f);
    let mut magic = vec![0; MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        magic == MAGIC,
        "{} is not a flowlog spool file (or of another version)",
        path.display()
    );
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header = serde_json::from_str(line.trim_end())
        .with_context(|| format!("{} has a bad header", path.display()))?;
    Ok((header, reader))
}

/// Whether `e` is a full filesystem (or quota).
fn is_storage_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        })
    })
}

/// Writes the spool file for `batch` at `path` via `tmp`; returns its size. A failed write
/// leaves nothing behind (a partial `tmp` would hold space a retry needs).
fn write_durably(tmp: &Path, path: &Path, batch: &Batch) -> anyhow::Result<u64> {
    let written = write_file(tmp, path, batch);
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written
}

fn write_file(tmp: &Path, path: &Path, batch: &Batch) -> anyhow::Result<u64> {
    let (header, body): (Header, std::borrow::Cow<'_, [u8]>) = match batch {
        Batch::Object(o) => (
            Header::Object {
                key: o.key.clone(),
                records: o.records,
                body_bytes: o.body.len() as u64,
                crc32: crc32fast::hash(&o.body),
            },
            (&o.body[..]).into(),
        ),
        Batch::LogEvents(b) => {
            let mut text =
                String::with_capacity(b.events.iter().map(|e| e.message.len() + 16).sum());
            for e in &b.events {
                text.push_str(&e.timestamp_ms.to_string());
                text.push(' ');
                text.push_str(&e.message);
                text.push('\n');
            }
            let body = text.into_bytes();
            let header = Header::LogEvents {
                stream: b.stream.clone(),
                records: b.events.len(),
                body_bytes: body.len() as u64,
                crc32: crc32fast::hash(&body),
            };
            (header, body.into())
        }
    };
    let mut f = file_modes::create_file(tmp, file_modes::PRIVATE_FILE_MODE)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut head = serde_json::to_vec(&header).context("cannot encode spool header")?;
    head.push(b'\n');
    f.write_all(MAGIC)
        .and_then(|()| f.write_all(&head))
        .and_then(|()| f.write_all(&body))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot fsync {}", tmp.display()))?;
    fs::rename(tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot fsync directory {}", dir.display()))?;
    }
    Ok((MAGIC.len() + head.len() + body.len()) as u64)
}

fn set_aside(path: &Path) {
    let target = path.with_extension(REJECTED_SUFFIX);
    if let Err(e) = fs::rename(path, &target) {
        error!(file = %path.display(), error = %e, "cannot rename spool file to *.rejected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, records: usize, body_len: usize) -> Batch {
        Batch::Object(FinishedObject {
            key: key.into(),
            body: Bytes::from(vec![7u8; body_len]),
            records,
        })
    }

    fn events(stream: &str, n: i64) -> Batch {
        Batch::LogEvents(LogEventBatch {
            stream: stream.into(),
            events: (0..n)
                .map(|i| LogEvent {
                    timestamp_ms: 1_000 * i,
                    message: format!("2 123 eth0 record {i}"),
                })
                .collect(),
        })
    }

    fn batch_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn batches_round_trip_and_survive_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (object("AWSLogs/1/x.log.gz", 3, 100), events("eth0-all", 4));
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            spool.put(&a).unwrap();
            spool.put(&b).unwrap();
            assert_eq!(spool.stats().batches, 2);
            assert_eq!(spool.stats().records, 7);
            let second = Spool::open(dir.path(), 1 << 20)
                .err()
                .expect("a second agent cannot share the spool");
            assert_eq!(
                format!("{second:#}"),
                format!(
                    "spool directory {} is in use by flowlog agent pid {}: stop that agent first, or give each agent its own --spool-dir",
                    dir.path().display(),
                    std::process::id()
                )
            );
        }
        let names = batch_files(dir.path());
        assert_eq!(names.len(), 2);
        assert!(
            names[0].starts_with("000000000000-") && names[1].starts_with("000000000001-"),
            "{names:?}"
        );

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats().records, 7);
        let first = spool.claim().unwrap();
        assert_eq!(load(&first.path).unwrap(), a);
        spool.ack(&first).unwrap();
        let second = spool.claim().unwrap();
        assert_eq!(second.records, 4);
        assert_eq!(load(&second.path).unwrap(), b);
        spool.release(&second);
        assert_eq!(
            spool.claim().unwrap(),
            second,
            "a failed batch stays first in line"
        );
        spool.ack(&second).unwrap();
        assert_eq!(spool.claim(), None);
        assert_eq!(batch_files(dir.path()), Vec::<String>::new());
        spool.put(&a).unwrap();
        assert!(
            batch_files(dir.path())[0].starts_with("000000000002-"),
            "sequence goes on after a restart"
        );
    }

    /// The write-ahead log an object replaces is gone once the object is spooled, and the
    /// spool knows the key (also after a restart) until the object is delivered.
    #[test]
    fn put_replacing_deletes_the_wal_and_the_key_is_known_until_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("1-1-0-00000000000000ab.wal");
        fs::write(&wal, b"wal").unwrap();
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            assert!(!spool.holds_object("k0"));
            spool
                .put_replacing(&object("k0", 1, 10), Some(&wal))
                .unwrap();
            assert!(!wal.exists());
            assert!(spool.holds_object("k0"));
            assert!(!spool.holds_object("k1"));
            // A WAL already gone is no error.
            spool
                .put_replacing(&object("k1", 1, 10), Some(&wal))
                .unwrap();
        }
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(spool.holds_object("k0") && spool.holds_object("k1"));
        let first = spool.claim().unwrap();
        spool.ack(&first).unwrap();
        assert!(!spool.holds_object("k0"));
        assert!(spool.holds_object("k1"));
    }

    #[test]
    fn a_full_spool_drops_the_oldest_batch_but_not_the_one_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        // Each file is the magic, a ~100-byte header and a 1000-byte body.
        let spool = Spool::open(dir.path(), 3_500).unwrap();
        spool.put(&object("k0", 10, 1_000)).unwrap();
        spool.put(&object("k1", 11, 1_000)).unwrap();
        assert_eq!(
            spool.put(&object("k2", 12, 1_000)).unwrap(),
            Dropped::default()
        );
        assert_eq!(spool.stats().dropped_batches, 0);
        let in_flight = spool.claim().unwrap();
        assert_eq!(in_flight.records, 10);
        assert_eq!(
            spool.put(&object("k3", 13, 1_000)).unwrap(),
            Dropped {
                batches: 1,
                records: 11
            },
            "k1 made room (k0 is in flight)"
        );
        let st = spool.stats();
        assert_eq!(
            (
                st.batches,
                st.records,
                st.dropped_batches,
                st.dropped_records
            ),
            (3, 10 + 12 + 13, 1, 11)
        );
        spool.ack(&in_flight).unwrap();
        let next = spool.claim().unwrap();
        assert_eq!(load(&next.path).unwrap(), object("k2", 12, 1_000));
    }

    #[test]
    fn a_full_filesystem_is_told_apart_from_other_write_errors() {
        let full = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context("cannot write x");
        let quota = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::EDQUOT));
        let read_only = anyhow::Error::from(std::io::Error::from_raw_os_error(libc::EROFS))
            .context("cannot create x");
        assert!(is_storage_full(&full) && is_storage_full(&quota));
        assert!(!is_storage_full(&read_only));
    }

    #[test]
    fn corrupt_files_are_set_aside_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path(), 1 << 20).unwrap();
            spool.put(&object("k0", 1, 10)).unwrap();
            spool.put(&object("k1", 2, 10)).unwrap();
        }
        let names = batch_files(dir.path());
        fs::write(dir.path().join(&names[0]), b"garbage").unwrap();
        fs::write(dir.path().join(".000000000009-00000000.batch.tmp"), b"half").unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.stats().records, 2);
        let mut names = batch_files(dir.path());
        names.sort_by_key(|n| n.ends_with(".rejected"));
        assert!(
            names[0].ends_with(".batch") && names[1].ends_with(".rejected"),
            "{names:?}"
        );
        // A flipped body byte is caught by the CRC.
        let claim = spool.claim().unwrap();
        let mut raw = fs::read(&claim.path).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        fs::write(&claim.path, raw).unwrap();
        assert!(format!("{:#}", load(&claim.path).unwrap_err()).contains("CRC-32 mismatch"));
    }

    /// An agent exiting with an empty spool deletes the lock file and the directory while
    /// another agent opens them. Whatever the interleaving, the opener either gets the spool,
    /// holding the lock of the file that is at `.lock` (so a third agent is kept out), or is
    /// told the spool is in use; never a misleading "not writable" or "cannot list" error.
    #[test]
    fn opening_while_another_agent_removes_its_empty_spool_is_safe() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        let done = std::sync::atomic::AtomicBool::new(false);
        let (mut opened, mut in_use, mut failure) = (0u32, 0u32, None);
        std::thread::scope(|s| {
            // The other agent: starts, finds the spool empty at exit, cleans up; again and again.
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(other) = Spool::open(&dir, 1 << 20) {
                        other.remove_if_empty();
                    }
                }
            });
            // No panic in here: the other thread must be told to stop first.
            for _ in 0..20_000 {
                match Spool::open(&dir, 1 << 20) {
                    Ok(spool) if !pid_lock::is_at(&spool._lock, &dir.join(LOCK_FILE)) => {
                        failure = Some(format!(
                            "after {opened} opens: holds a lock file that is no longer the spool's"
                        ));
                        break;
                    }
                    Ok(spool) => {
                        opened += 1;
                        spool.remove_if_empty();
                    }
                    Err(e) if format!("{e:#}").contains(" is in use by ") => in_use += 1,
                    Err(e) => {
                        failure = Some(format!("after {opened} opens: {e:#}"));
                        break;
                    }
                }
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(failure, None);
        assert_eq!(opened + in_use, 20_000);
    }

    #[test]
    fn a_huge_length_in_a_corrupt_header_is_an_error_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000000000000-00000000.batch");
        let header = r#"{"kind":"object","key":"k","records":1,"body_bytes":18000000000000000000,"crc32":0}"#;
        fs::write(&path, [MAGIC, header.as_bytes(), b"\nbody"].concat()).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(
            e.ends_with("is truncated: 4 of 18000000000000000000 body bytes"),
            "{e}"
        );
    }
}
