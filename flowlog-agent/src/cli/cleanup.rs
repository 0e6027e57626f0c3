//! `flowlog cleanup`: detaches and unpins what agents left pinned under `--pin-dir`.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use crate::capture::pins::{DEFAULT_PIN_DIR, cleanup};

#[derive(Debug, Clone, Args)]
pub struct CleanupArgs {
    /// The agents' `--pin-dir`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// Removes every pinned link and map no running agent holds; exit 1 if one does.
pub fn run(args: &CleanupArgs) -> ExitCode {
    match cleanup(&args.pin_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlog: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
