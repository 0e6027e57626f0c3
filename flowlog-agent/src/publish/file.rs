//! The `file` destination: a directory laid out exactly like the S3 key layout. Objects get
//! `--file-mode` (0640) and the directories the agent creates `--dir-mode` (0750): see
//! [`crate::publish::file_modes`].

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use crate::publish::{
    batch::FinishedObject,
    file_modes::{self, OutputModes},
};

pub struct FileDestination {
    root: PathBuf,
    modes: OutputModes,
}

impl FileDestination {
    /// Creates `root` if needed (with `modes.dir`) and checks that it is a writable directory.
    pub fn new(root: &Path, modes: OutputModes) -> anyhow::Result<Self> {
        if let Ok(meta) = fs::metadata(root)
            && !meta.is_dir()
        {
            bail!(
                "output directory {} is not a directory: point --destination file: at a directory (it is created if missing)",
                root.display()
            );
        }
        file_modes::create_dirs(root, modes.dir)
            .with_context(|| format!("cannot create output directory {}", root.display()))?;
        let probe = root.join(".flowlog-write-test");
        fs::write(&probe, b"")
            .with_context(|| format!("output directory {} is not writable", root.display()))?;
        let _ = fs::remove_file(probe);
        Ok(FileDestination {
            root: root.to_path_buf(),
            modes,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the object atomically: a temporary file, fsync, rename.
    pub async fn put(&self, obj: &FinishedObject) -> anyhow::Result<()> {
        let path = self.root.join(&obj.key);
        let body = obj.body.clone();
        let modes = self.modes;
        tokio::task::spawn_blocking(move || write_atomically(&path, &body, modes))
            .await
            .context("file writer task failed")?
    }
}

fn write_atomically(path: &Path, body: &[u8], modes: OutputModes) -> anyhow::Result<()> {
    let dir = path.parent().context("object key has no directory")?;
    file_modes::create_dirs(dir, modes.dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .context("object key has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = file_modes::create_file(&tmp, modes.file)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(body)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot fsync {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_not_a_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("flowlogs");
        fs::write(&file, b"").expect("write");
        let err = format!(
            "{:#}",
            FileDestination::new(&file, OutputModes::default())
                .err()
                .expect("refused")
        );
        assert_eq!(
            err,
            format!(
                "output directory {} is not a directory: point --destination file: at a directory (it is created if missing)",
                file.display()
            )
        );
    }

    #[test]
    fn objects_and_the_directories_created_for_them_are_private_by_default() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let mode = |p: &Path| fs::metadata(p).expect("metadata").mode() & 0o7777;
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("out");
        let dest = FileDestination::new(&root, OutputModes::default()).expect("destination");
        let key = "AWSLogs/1/vpcflowlogs/r/2026/12/01/x.log.gz";
        write_atomically(&dest.root().join(key), b"gz", dest.modes).expect("write");
        assert_eq!(mode(&root), 0o750);
        let mut dir = root.clone();
        for part in ["AWSLogs", "1", "vpcflowlogs", "r", "2026", "12", "01"] {
            dir.push(part);
            assert_eq!(mode(&dir), 0o750, "{}", dir.display());
        }
        assert_eq!(mode(&root.join(key)), 0o640);

        // Other modes when asked; a root that exists keeps its own.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let modes = OutputModes {
            file: 0o600,
            dir: 0o2770,
        };
        let dest = FileDestination::new(&root, modes).expect("destination");
        let key = "AWSLogs/2/x.log.gz";
        write_atomically(&dest.root().join(key), b"gz", modes).expect("write");
        assert_eq!(mode(&root), 0o755);
        assert_eq!(mode(&root.join("AWSLogs/2")), 0o2770);
        assert_eq!(mode(&root.join(key)), 0o600);
    }
}
