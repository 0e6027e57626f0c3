//! `flowlog generate-man DIR` and `flowlog generate-completions DIR`: the manual pages and
//! shell completions the Debian package ships (`cargo xtask deb`), generated from this very
//! command line definition so they cannot drift from `--help`.
//!
//! They are a parser of their own, not subcommands of [`Cli`]: clap's completion generators
//! list hidden subcommands too, and these have no place in a user's completions or pages.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use clap_complete::Shell;

use super::Cli;

/// The packaging commands.
#[derive(Debug, Parser)]
#[command(
    name = "flowlog",
    about = "Files for packaging flowlog, generated from its command line."
)]
pub enum PackagingCommand {
    /// Write the manual pages (flowlog.1, flowlog-run.1, ...) into DIR.
    GenerateMan {
        /// Output directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write bash, zsh and fish completion scripts into DIR.
    GenerateCompletions {
        /// Output directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

impl PackagingCommand {
    /// Whether `first_arg` (the word after the program name) names a packaging command.
    pub fn is_named(first_arg: &str) -> bool {
        matches!(first_arg, "generate-man" | "generate-completions")
    }

    /// Writes the files; returns their paths.
    pub fn run(&self) -> anyhow::Result<Vec<PathBuf>> {
        match self {
            PackagingCommand::GenerateMan { dir } => man_pages(dir),
            PackagingCommand::GenerateCompletions { dir } => completions(dir),
        }
    }
}

/// Shells that get a completion script, and where Debian looks for each.
pub const SHELLS: &[Shell] = &[Shell::Bash, Shell::Zsh, Shell::Fish];

fn create(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Every page below `dir` (created if missing): `flowlog.1` and one `flowlog-<command>.1` per
/// visible subcommand. Returns the files written.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    create(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write manual pages to {}", dir.display()))?;
    written(dir, ".1")
}

/// `flowlog.bash`, `_flowlog` and `flowlog.fish` in `dir` (created if missing). Returns the
/// files written.
pub fn completions(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    create(dir)?;
    let mut files = Vec::new();
    for shell in SHELLS {
        let mut cmd = Cli::command();
        let path = clap_complete::generate_to(*shell, &mut cmd, "flowlog", dir)
            .with_context(|| format!("cannot write {shell} completions to {}", dir.display()))?;
        files.push(path);
    }
    Ok(files)
}

fn written(dir: &Path, suffix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[PathBuf]) -> Vec<String> {
        files
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn one_page_per_visible_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = man_pages(dir.path()).expect("pages");
        assert_eq!(
            names(&pages),
            [
                "flowlog-athena-ddl.1",
                "flowlog-cleanup.1",
                "flowlog-create-flow-logs.1",
                "flowlog-delete-flow-logs.1",
                "flowlog-describe-flow-logs.1",
                "flowlog-run.1",
                "flowlog-status.1",
                "flowlog-top.1",
                "flowlog.1",
            ]
        );
        let run = std::fs::read_to_string(dir.path().join("flowlog-run.1")).expect("run page");
        assert!(
            run.starts_with(".ie"),
            "not roff: {}",
            &run[..80.min(run.len())]
        );
        assert!(run.contains("aggregation\\-interval"), "{run}");
    }

    #[test]
    fn completions_for_three_shells_without_hidden_commands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = completions(dir.path()).expect("completions");
        assert_eq!(names(&files), ["flowlog.bash", "_flowlog", "flowlog.fish"]);
        for f in &files {
            let text = std::fs::read_to_string(f).expect("read");
            assert!(text.contains("create-flow-logs"), "{}", f.display());
            assert!(text.contains("aggregation-interval"), "{}", f.display());
            assert!(!text.contains("generate-"), "{}", f.display());
        }
    }
}
