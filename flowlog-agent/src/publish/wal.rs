//! Write-ahead log of one open object: the records of every closed window reach disk (fsync)
//! when the window closes, not when the object is finished at its slot's end, so a crash loses
//! at most the window open at the time.
//!
//! One file per open object, `<slot>-<first window>-<part>-<run id>.wal`, in the flow log's
//! spool directory (which the spool lock protects; the spool's own scan only reads `*.batch`).
//! A file is a magic line, then frames: `u32` payload length, `u32` CRC-32 of kind and
//! payload, a kind byte and the payload (all little-endian):
//!
//! - `HEADER` (first frame, JSON [`WalHeader`]): what the object's key and body are made of;
//! - `LINES`: records rendered as text lines (the same lines a text object holds);
//! - `COMMIT`: a window closed: its start and the number of records logged so far.
//!
//! Lines are written as they fill a chunk, but only a `COMMIT` (followed by fsync) makes them
//! count: reading stops at the first short or corrupt frame (a write torn by the crash) and
//! keeps the lines up to the last `COMMIT` before it.

use std::{
    fs,
    io::{ErrorKind, Read as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};

use crate::publish::layout::{FileFormat, ObjectLayout};

const MAGIC: &[u8] = b"flowlog-wal 1\n";
pub const EXTENSION: &str = "wal";
const FRAME_HEAD: usize = 9;
const HEADER: u8 = 1;
const LINES: u8 = 2;
const COMMIT: u8 = 3;
/// A frame longer than this is corrupt (lines are written in chunks far below it).
const MAX_FRAME: u32 = 1 << 30;

/// Everything an object's key and body are made of, so a later run re-creates the object under
/// the key this run would have given it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalHeader {
    pub slot: u64,
    pub first_window: u64,
    pub part: u32,
    pub run_id: u64,
    pub layout: ObjectLayout,
    pub file_format: FileFormat,
    /// `--log-format` as `${field} ...`.
    pub log_format: String,
}

impl WalHeader {
    /// The WAL's file name: unique per open object of any run.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-{}-{:016x}.{EXTENSION}",
            self.slot, self.first_window, self.part, self.run_id
        )
    }
}

/// The WAL of one open object, being appended to.
pub struct WalWriter {
    path: PathBuf,
    file: fs::File,
    /// Records in `LINES` frames so far (committed or not).
    records: u64,
    bytes: u64,
    /// The directory entry is made durable with the first commit.
    dir_synced: bool,
    /// Time spent writing and syncing since [`WalWriter::take_spent`].
    spent: Spent,
}

/// Time a WAL took: all writes and syncs, and the syncs alone.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub total: Duration,
    pub sync: Duration,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, o: Spent) {
        self.total += o.total;
        self.sync += o.sync;
    }
}

impl WalWriter {
    /// Creates the WAL of a new object in `dir` (nothing durable before [`WalWriter::commit`]).
    pub fn create(dir: &Path, header: &WalHeader) -> anyhow::Result<Self> {
        let path = dir.join(header.file_name());
        let file = crate::publish::file_modes::create_new_file(
            &path,
            crate::publish::file_modes::PRIVATE_FILE_MODE,
        )
        .with_context(|| format!("cannot create write-ahead log {}", path.display()))?;
        let mut w = WalWriter {
            path,
            file,
            records: 0,
            bytes: 0,
            dir_synced: false,
            spent: Spent::default(),
        };
        let json = serde_json::to_vec(header).context("cannot encode write-ahead log header")?;
        w.write(MAGIC)?;
        w.frame(HEADER, &json)?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Time spent writing and syncing since the last call.
    pub fn take_spent(&mut self) -> Spent {
        std::mem::take(&mut self.spent)
    }

    /// Appends `records` rendered lines (each ending in `\n`), not yet durable.
    pub fn append(&mut self, lines: &str, records: u64) -> anyhow::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.frame(LINES, lines.as_bytes())?;
        self.records += records;
        Ok(())
    }

    /// Closes the window starting at `window_start`: everything appended is durable on return.
    pub fn commit(&mut self, window_start: u64) -> anyhow::Result<()> {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&window_start.to_le_bytes());
        payload[8..].copy_from_slice(&self.records.to_le_bytes());
        self.frame(COMMIT, &payload)?;
        let started = Instant::now();
        self.file
            .sync_data()
            .with_context(|| format!("cannot fsync write-ahead log {}", self.path.display()))?;
        if !self.dir_synced {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot fsync directory {}", dir.display()))?;
            self.dir_synced = true;
        }
        let took = started.elapsed();
        self.spent.sync += took;
        self.spent.total += took;
        Ok(())
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> anyhow::Result<()> {
        let mut head = [0u8; FRAME_HEAD];
        head[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind]);
        crc.update(payload);
        head[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        head[8] = kind;
        self.write(&head)?;
        self.write(payload)
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let started = Instant::now();
        self.file
            .write_all(bytes)
            .with_context(|| format!("cannot write write-ahead log {}", self.path.display()))?;
        self.spent.total += started.elapsed();
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// What a WAL holds: the committed lines of its closed windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub header: WalHeader,
    /// Lines of the committed windows, each ending in `\n`.
    pub lines: String,
    pub records: u64,
    pub windows: u64,
    /// Bytes after the last commit: lines of the window open at the crash, or a torn frame.
    pub discarded_bytes: u64,
}

/// Reads the WAL at `path`. Fails only if its magic or header is unreadable; a torn or corrupt
/// tail ends the committed part.
pub fn read(path: &Path) -> anyhow::Result<Recovered> {
    let mut raw = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .with_context(|| format!("cannot read write-ahead log {}", path.display()))?;
    ensure!(
        raw.starts_with(MAGIC),
        "{} is not a flowlog write-ahead log (or of another version)",
        path.display()
    );
    let mut at = MAGIC.len();
    let (kind, payload) = next_frame(&raw, &mut at)
        .with_context(|| format!("{} has no intact header", path.display()))?;
    ensure!(
        kind == HEADER,
        "{} does not start with a header",
        path.display()
    );
    let header: WalHeader = serde_json::from_slice(payload)
        .with_context(|| format!("{} has a bad header", path.display()))?;
    let (mut lines, mut records, mut windows) = (String::new(), 0u64, 0u64);
    let mut committed_end = at;
    let mut pending = Vec::<&[u8]>::new();
    while let Some((kind, payload)) = next_frame(&raw, &mut at) {
        match kind {
            LINES => pending.push(payload),
            COMMIT if payload.len() == 16 => {
                let mut total = [0u8; 8];
                total.copy_from_slice(&payload[8..]);
                let total = u64::from_le_bytes(total);
                let mut window = String::new();
                for p in pending.drain(..) {
                    window.push_str(std::str::from_utf8(p).with_context(|| {
                        format!("{} holds lines that are not UTF-8", path.display())
                    })?);
                }
                let in_window = window.bytes().filter(|b| *b == b'\n').count() as u64;
                ensure!(
                    records + in_window == total,
                    "{} is corrupt: {} records up to window {windows}, its commit says {total}",
                    path.display(),
                    records + in_window
                );
                lines.push_str(&window);
                records = total;
                windows += 1;
                committed_end = at;
            }
            _ => break,
        }
    }
    Ok(Recovered {
        header,
        lines,
        records,
        windows,
        discarded_bytes: (raw.len() - committed_end) as u64,
    })
}

/// The frame at `*at`, advancing past it; `None` at the end or at a short or corrupt frame.
fn next_frame<'a>(raw: &'a [u8], at: &mut usize) -> Option<(u8, &'a [u8])> {
    let head = raw.get(*at..*at + FRAME_HEAD)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let kind = head[8];
    let start = *at + FRAME_HEAD;
    let payload = raw.get(start..start + len as usize)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    if h.finalize() != crc {
        return None;
    }
    *at = start + len as usize;
    Some((kind, payload))
}

/// The WAL files in `dir`, oldest object first (by name: slot, first window, part).
pub fn list(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(paths),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot list spool directory {}", dir.display()));
        }
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list spool directory {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == EXTENSION) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Deletes a WAL whose records are now elsewhere (spooled); a WAL already gone is fine.
pub fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete write-ahead log {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> WalHeader {
        WalHeader {
            slot: 1_800_000_000,
            first_window: 1_800_000_010,
            part: 0,
            run_id: 0x1234,
            layout: ObjectLayout {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                flow_log_id: "fl-1".into(),
                hive_compatible_partitions: false,
                per_hour_partition: true,
            },
            file_format: FileFormat::PlainText,
            log_format: "${srcaddr} ${packets}".into(),
        }
    }

    /// Two committed windows, then lines of a third window and a commit frame cut short: every
    /// cut of the tail keeps exactly the two committed windows, and a flipped byte in the
    /// uncommitted part does too.
    #[test]
    fn a_torn_tail_keeps_exactly_the_committed_windows() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), &header()).unwrap();
        w.append("10.0.0.1 3\n10.0.0.2 4\n", 2).unwrap();
        w.commit(1_800_000_010).unwrap();
        w.append("10.0.0.3 5\n", 1).unwrap();
        w.append("10.0.0.4 6\n", 1).unwrap();
        w.commit(1_800_000_011).unwrap();
        let committed = w.bytes() as usize;
        w.append("10.0.0.5 7\n", 1).unwrap();
        w.commit(1_800_000_012).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let full = fs::read(&path).unwrap();
        let all = read(&path).unwrap();
        assert_eq!((all.records, all.windows, all.discarded_bytes), (5, 3, 0));

        let want = "10.0.0.1 3\n10.0.0.2 4\n10.0.0.3 5\n10.0.0.4 6\n";
        for cut in committed..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let r = read(&path).unwrap();
            assert_eq!(r.header, header());
            assert_eq!(r.lines, want, "cut at {cut}");
            assert_eq!((r.records, r.windows), (4, 2), "cut at {cut}");
            assert_eq!(r.discarded_bytes, (cut - committed) as u64);
        }
        let mut flipped = full.clone();
        flipped[committed + FRAME_HEAD + 2] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let r = read(&path).unwrap();
        assert_eq!((r.lines.as_str(), r.records, r.windows), (want, 4, 2));

        // A cut inside the header leaves nothing to recover: an error, not an empty object.
        fs::write(&path, &full[..MAGIC.len() + 5]).unwrap();
        assert!(format!("{:#}", read(&path).unwrap_err()).contains("has no intact header"));
    }

    #[test]
    fn list_finds_only_wal_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["2-0-0-a.wal", "000001-abc.batch", "1-0-0-b.wal", ".lock"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let names: Vec<String> = list(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["1-0-0-b.wal", "2-0-0-a.wal"]);
    }
}
