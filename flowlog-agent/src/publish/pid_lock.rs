//! Lock files that name their holder: a file locked with flock(2) for as long as an agent runs,
//! holding the agent's pid so a second agent is refused with a line that names the first. The
//! spool and the writer lock use them.
//!
//! A holder may delete its lock file on the way out while it still holds the lock. So a lock
//! only counts if the locked file is still the one at the path; otherwise (and when the file
//! vanished between the steps) [`attempt`] says to start over. Without that check, an agent
//! that opened the file just before it was deleted would hold a lock that keeps no one out.

use std::{
    fs::{self, TryLockError},
    io::{self, ErrorKind, Read as _, Write as _},
    os::unix::fs::MetadataExt as _,
    path::Path,
};

/// How one try at a lock file went.
pub enum Attempt {
    /// Locked, with this process's id written into it.
    Locked(fs::File),
    /// The file vanished or was replaced meanwhile: try again.
    Retry,
    /// Another live agent holds it: "flowlog agent pid N" (or "another flowlog agent").
    Busy(String),
    /// The file cannot be opened (a directory that is not writable, ...).
    Open(io::Error),
    /// It opened, but could not be locked.
    Lock(io::Error),
    /// Locked, but this process's id could not be written into it.
    Write(io::Error),
}

/// One try at the lock file `path`: created if missing (never truncated: while another agent
/// holds it, it names that agent), locked without waiting, checked to still be the file at
/// `path`, and given this process's id.
///
/// The lock is held through a read-only descriptor (flock does not need write access; the pid
/// goes in through a short-lived one): a lock file open for writing would keep its filesystem
/// from being remounted read-only (EBUSY), so a spool whose filesystem goes read-only could not
/// even be tested.
pub fn attempt(path: &Path) -> Attempt {
    if let Err(e) = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        return match e.kind() {
            ErrorKind::NotFound => Attempt::Retry,
            _ => Attempt::Open(e),
        };
    }
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Attempt::Retry,
        Err(e) => return Attempt::Open(e),
    };
    match file.try_lock() {
        Ok(()) if is_at(&file, path) => {
            // Only a holder deletes the file, and the holder is us: `path` is this file.
            let written = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .and_then(|mut w| w.write_all(format!("{}\n", std::process::id()).as_bytes()));
            match written {
                Ok(()) => Attempt::Locked(file),
                Err(e) => Attempt::Write(e),
            }
        }
        // Removed by its holder on the way out after we opened it: the next one is free.
        Ok(()) => Attempt::Retry,
        Err(TryLockError::WouldBlock) if !is_at(&file, path) => Attempt::Retry,
        Err(TryLockError::WouldBlock) => {
            let mut owner = String::new();
            let _ = (&file).read_to_string(&mut owner);
            Attempt::Busy(match owner.trim().parse::<u32>() {
                Ok(pid) => format!("flowlog agent pid {pid}"),
                Err(_) => "another flowlog agent".to_string(),
            })
        }
        Err(TryLockError::Error(e)) => Attempt::Lock(e),
    }
}

/// Whether the open `file` is the file at `path` now (not one deleted or replaced since).
pub fn is_at(file: &fs::File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}
