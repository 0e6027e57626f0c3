//! The `file` destination: a directory laid out exactly like the S3 key layout.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use crate::publish::batch::FinishedObject;

pub struct FileDestination {
    root: PathBuf,
}

impl FileDestination {
    /// Creates `root` if needed and checks that it is a writable directory.
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        if let Ok(meta) = fs::metadata(root)
            && !meta.is_dir()
        {
            bail!(
                "output directory {} is not a directory: point --destination file: at a directory (it is created if missing)",
                root.display()
            );
        }
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create output directory {}", root.display()))?;
        let probe = root.join(".flowlog-write-test");
        fs::write(&probe, b"")
            .with_context(|| format!("output directory {} is not writable", root.display()))?;
        let _ = fs::remove_file(probe);
        Ok(FileDestination {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the object atomically: a temporary file, fsync, rename.
    pub async fn put(&self, obj: &FinishedObject) -> anyhow::Result<()> {
        let path = self.root.join(&obj.key);
        let body = obj.body.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &body))
            .await
            .context("file writer task failed")?
    }
}

fn write_atomically(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("object key has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .context("object key has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
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
        let err = format!("{:#}", FileDestination::new(&file).err().expect("refused"));
        assert_eq!(
            err,
            format!(
                "output directory {} is not a directory: point --destination file: at a directory (it is created if missing)",
                file.display()
            )
        );
    }
}
