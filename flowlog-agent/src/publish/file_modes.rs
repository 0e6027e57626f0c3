//! Who may read what the agent writes. Flow logs say who talks to whom, so everything is
//! private by default:
//!
//! - the file destination's objects are 0640 and the directories the agent creates for them
//!   0750 (`--file-mode`, `--dir-mode`), owned by the agent's user;
//! - the agent's own directories (spool, state directory) are 0700 and the files in them 0600.
//!
//! Modes are set with chmod after creation, so the process umask cannot widen or narrow them.

use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::Path,
};

use anyhow::{Context as _, bail};
use tracing::{debug, warn};

/// Default mode of the file destination's objects.
pub const DEFAULT_FILE_MODE: u32 = 0o640;
/// Default mode of the directories the file destination creates.
pub const DEFAULT_DIR_MODE: u32 = 0o750;
/// The spool and the state directory: the agent's user only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Files in the spool and the state directory.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

const SETGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;

/// Modes of the file destination's objects and of the directories it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputModes {
    pub file: u32,
    pub dir: u32,
}

impl Default for OutputModes {
    fn default() -> Self {
        OutputModes {
            file: DEFAULT_FILE_MODE,
            dir: DEFAULT_DIR_MODE,
        }
    }
}

/// A mode as `ls` users write it: `0640`.
pub fn display_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

/// `--file-mode`: octal permission bits (`640`, `0640` or `0o640`) that let the owner read and
/// write.
pub fn parse_file_mode(s: &str) -> anyhow::Result<u32> {
    let mode = parse_octal(s, "--file-mode", 0o777, "0640")?;
    if mode & 0o600 != 0o600 {
        bail!(
            "invalid --file-mode {s:?}: the owner (the agent's user) must keep read and write (u+rw), e.g. 0640 or 0600"
        );
    }
    Ok(mode)
}

/// `--dir-mode`: octal permission bits, optionally with the setgid bit (`2750`: objects take
/// the directory's group), that give the owner rwx.
pub fn parse_dir_mode(s: &str) -> anyhow::Result<u32> {
    let mode = parse_octal(s, "--dir-mode", 0o777 | SETGID, "0750")?;
    if mode & 0o700 != 0o700 {
        bail!(
            "invalid --dir-mode {s:?}: the owner (the agent's user) must keep rwx (u+rwx) to write objects, e.g. 0750 or 0700"
        );
    }
    Ok(mode)
}

fn parse_octal(s: &str, flag: &str, allowed: u32, example: &str) -> anyhow::Result<u32> {
    let digits = s.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    let parsed = (!digits.is_empty() && digits.len() <= 5)
        .then(|| u32::from_str_radix(digits, 8).ok())
        .flatten();
    match parsed {
        Some(mode) if mode & !allowed == 0 => Ok(mode),
        Some(_) => bail!(
            "invalid {flag} {s:?}: only permission bits{} are allowed, e.g. {example}",
            if allowed & SETGID != 0 {
                " and setgid (2000)"
            } else {
                " (no setuid, setgid or sticky bit)"
            }
        ),
        None => bail!("invalid {flag} {s:?}: write an octal mode such as {example}"),
    }
}

/// `mkdir -p` where every directory this call creates gets exactly `mode`; directories that
/// already exist are left as they are.
pub fn create_dirs(path: &Path, mode: u32) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", path.display()),
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(mode & 0o777).create(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(mode)),
        // Created meanwhile by someone else (another flow log's writer): theirs to keep.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates (or truncates) `path` for writing with exactly `mode`.
pub fn create_file(path: &Path, mode: u32) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // The umask narrowed the mode of a new file, and an old file keeps its own: set it.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Creates `path` for writing with exactly `mode`; fails if it exists.
pub fn create_new_file(path: &Path, mode: u32) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Makes `dir` a directory only the agent's user can enter: created (with missing parents)
/// 0700, and with group's and others' permissions taken away when it exists with them. A
/// directory the agent's user does not own, or a shared one with the sticky bit (`/tmp`), is
/// never changed: that is a warning.
pub fn private_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    create_dirs(dir, PRIVATE_DIR_MODE)
        .with_context(|| format!("cannot create the {what} {}", dir.display()))?;
    tighten(dir, what)
}

/// Takes group's and others' permissions away from the existing directory `dir` (see
/// [`private_dir`]).
pub fn tighten(dir: &Path, what: &str) -> anyhow::Result<()> {
    let meta =
        fs::metadata(dir).with_context(|| format!("cannot read the {what} {}", dir.display()))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid || mode & STICKY != 0 {
        warn!(dir = %dir.display(), mode = %display_mode(mode),
              "the {what} is readable by other users and is not the agent's to change: \
               give the agent a directory of its own");
        return Ok(());
    }
    // Only group's and others' bits go: what the owner may do stays as it was.
    let private = mode & 0o700;
    fs::set_permissions(dir, fs::Permissions::from_mode(private)).with_context(|| {
        format!(
            "cannot make the {what} {} private (chmod go-rwx)",
            dir.display()
        )
    })?;
    // Debug, not info: a start that then fails must still say one line (the error).
    debug!(dir = %dir.display(), was = %display_mode(mode), now = %display_mode(private),
           "made the {what} private");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).expect("metadata").mode() & 0o7777
    }

    #[test]
    fn modes_parse_as_octal_and_are_validated() {
        assert_eq!(parse_file_mode("640").unwrap(), 0o640);
        assert_eq!(parse_file_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_file_mode("0o644").unwrap(), 0o644);
        assert_eq!(parse_dir_mode("0750").unwrap(), 0o750);
        assert_eq!(parse_dir_mode("2750").unwrap(), 0o2750);
        let err = |r: anyhow::Result<u32>| format!("{:#}", r.expect_err("refused"));
        assert_eq!(
            err(parse_file_mode("rw-r-----")),
            "invalid --file-mode \"rw-r-----\": write an octal mode such as 0640"
        );
        assert_eq!(
            err(parse_file_mode("0648")),
            "invalid --file-mode \"0648\": write an octal mode such as 0640"
        );
        assert_eq!(
            err(parse_file_mode("")),
            "invalid --file-mode \"\": write an octal mode such as 0640"
        );
        assert_eq!(
            err(parse_file_mode("4640")),
            "invalid --file-mode \"4640\": only permission bits (no setuid, setgid or sticky bit) are allowed, e.g. 0640"
        );
        assert_eq!(
            err(parse_dir_mode("1777")),
            "invalid --dir-mode \"1777\": only permission bits and setgid (2000) are allowed, e.g. 0750"
        );
        assert!(err(parse_file_mode("0440")).contains("must keep read and write (u+rw)"));
        assert!(err(parse_dir_mode("0650")).contains("must keep rwx (u+rwx)"));
    }

    #[test]
    fn created_dirs_and_files_get_exactly_the_mode_whatever_the_umask() {
        let tmp = tempfile::tempdir().expect("temp dir");
        // Group-writable modes with setgid: the usual umask (022) would clear the group write
        // bits and mkdir(2) ignores setgid, so only an explicit chmod gives these modes.
        let nested = tmp.path().join("a/b/c");
        create_dirs(&nested, 0o2770).expect("create");
        let file = nested.join("f");
        drop(create_file(&file, 0o664).expect("file"));
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode_of(&tmp.path().join(d)), 0o2770, "{d}");
        }
        assert_eq!(mode_of(&file), 0o664);
        // An existing directory is left alone; an existing file gets the mode again.
        fs::set_permissions(tmp.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        create_dirs(&nested, 0o700).expect("exists");
        drop(create_file(&file, 0o640).expect("file"));
        assert_eq!(mode_of(&tmp.path().join("a")), 0o755);
        assert_eq!(mode_of(&file), 0o640);
        assert!(
            create_new_file(&file, 0o600).is_err(),
            "create_new on an existing file"
        );
        let new = nested.join("g");
        drop(create_new_file(&new, 0o660).expect("new file"));
        assert_eq!(mode_of(&new), 0o660);
    }

    #[test]
    fn private_dir_creates_0700_and_tightens_its_own_dirs_only() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let fresh = tmp.path().join("state/spool");
        private_dir(&fresh, "spool directory").expect("private");
        assert_eq!(mode_of(&tmp.path().join("state")), 0o700);
        assert_eq!(mode_of(&fresh), 0o700);
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&fresh, "spool directory").expect("private");
        assert_eq!(mode_of(&fresh), 0o700, "an old 0755 spool is tightened");
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o555)).unwrap();
        private_dir(&fresh, "spool directory").expect("private");
        assert_eq!(mode_of(&fresh), 0o500, "the owner's bits stay as they were");
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o700)).unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        private_dir(&shared, "spool directory").expect("warned, not failed");
        assert_eq!(
            mode_of(&shared),
            0o1777,
            "a sticky shared directory is not changed"
        );
    }
}
