//! One agent per flow log and destination on a host. Two agents writing the same flow log id to
//! the same destination would each publish every record (their object names differ by the
//! per-run hash), so the second is refused, naming the first, as the spool lock does for a
//! shared spool. The lock is a file under the runtime directory (`/run/flowlog` by default),
//! named after the flow log id and a hash of the canonical destination, locked with flock(2)
//! for as long as the agent runs and holding its pid.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use super::DestinationSpec;
use crate::publish::pid_lock::{self, Attempt};

/// Where the lock files are unless `--runtime-dir` says otherwise.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/flowlog";
/// How often [`WriterLock::acquire`] starts over when the file it locked was removed under it.
const ATTEMPTS: usize = 100;

/// Held while the agent runs; removed at a clean exit.
#[derive(Debug)]
pub struct WriterLock {
    file: fs::File,
    path: PathBuf,
}

/// The destination as one string that is the same however it was written: a `file:`
/// directory canonicalized (it exists by now), S3 and CloudWatch in their canonical form, and
/// the endpoint they are sent to.
pub fn canonical_destination(spec: &DestinationSpec, endpoint_url: Option<&str>) -> String {
    match spec {
        DestinationSpec::File(dir) => {
            let dir = fs::canonicalize(dir)
                .or_else(|_| std::path::absolute(dir))
                .unwrap_or_else(|_| dir.clone());
            format!("file:{}", dir.display())
        }
        other => format!("{other} via {}", endpoint_url.unwrap_or("AWS")),
    }
}

impl WriterLock {
    /// Takes the lock of (`flow_log_id`, `destination`) in `runtime_dir`, or fails with one line
    /// naming the agent that holds it.
    pub fn acquire(
        runtime_dir: &Path,
        flow_log_id: &str,
        destination: &str,
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(runtime_dir).with_context(|| {
            format!(
                "cannot create runtime directory {}: choose another with --runtime-dir",
                runtime_dir.display()
            )
        })?;
        let hash = crc32fast::hash(destination.as_bytes());
        let path = runtime_dir.join(format!("{flow_log_id}-{hash:08x}.lock"));
        for _ in 0..ATTEMPTS {
            match pid_lock::attempt(&path) {
                Attempt::Locked(file) => return Ok(WriterLock { file, path }),
                Attempt::Retry => continue,
                Attempt::Busy(owner) => bail!(
                    "flow log {flow_log_id} is already written to {destination} by {owner} (lock {}): \
                     a second agent would duplicate every record; stop that agent, or give this one \
                     another --flow-log-id",
                    path.display()
                ),
                Attempt::Open(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot open {}: choose another runtime directory with --runtime-dir",
                            path.display()
                        )
                    });
                }
                Attempt::Lock(e) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
                Attempt::Write(e) => {
                    return Err(e).with_context(|| format!("cannot write {}", path.display()));
                }
            }
        }
        bail!(
            "cannot lock {}: the file keeps disappearing (is something deleting it?)",
            path.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WriterLock {
    /// Removes the file while still holding its lock; an agent that opened it just before
    /// sees that it is no longer the file at the path and starts over.
    fn drop(&mut self) {
        if pid_lock::is_at(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_flow_log_and_destination_names_the_holder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = WriterLock::acquire(dir.path(), "fl-1", "file:/x").expect("first");
        assert_eq!(
            fs::read_to_string(first.path()).expect("lock file"),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to the open file: a second open in this process conflicts too.
        let err = WriterLock::acquire(dir.path(), "fl-1", "file:/x").expect_err("second");
        let err = format!("{err:#}");
        assert!(
            err.starts_with("flow log fl-1 is already written to file:/x by flowlog agent pid ")
                && err.contains(&format!("pid {} ", std::process::id())),
            "{err}"
        );
        // Another flow log id, or another destination, is another lock.
        let _other_id = WriterLock::acquire(dir.path(), "fl-2", "file:/x").expect("other id");
        let _other_dest = WriterLock::acquire(dir.path(), "fl-1", "file:/y").expect("other dest");
        let path = first.path().to_path_buf();
        drop(first);
        assert!(!path.exists(), "removed at exit");
        let _again = WriterLock::acquire(dir.path(), "fl-1", "file:/x").expect("free again");
    }

    #[test]
    fn the_same_directory_written_two_ways_is_one_destination() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = DestinationSpec::File(dir.path().to_path_buf());
        let b = DestinationSpec::File(
            dir.path().join(".").join("..").join(
                dir.path()
                    .file_name()
                    .expect("temp dir has a name")
                    .to_string_lossy()
                    .as_ref(),
            ),
        );
        assert_eq!(
            canonical_destination(&a, None),
            canonical_destination(&b, None)
        );
        let s3: DestinationSpec = "s3://bucket/p".parse().expect("s3");
        assert_ne!(
            canonical_destination(&s3, Some("http://127.0.0.1:5000")),
            canonical_destination(&s3, Some("http://127.0.0.1:5001"))
        );
    }
}
