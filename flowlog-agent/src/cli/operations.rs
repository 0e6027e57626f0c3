//! Options for operating the agent: metrics, the runtime directory.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operations")]
pub struct OperationsArgs {
    /// Write Prometheus metrics (packets, overflow, records, publishing) to this file after every
    /// window, atomically, for node_exporter's textfile collector.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Serve Prometheus metrics over HTTP on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Directory of the host-wide lock files that keep a second agent from writing the same
    /// flow log id to the same destination (it would duplicate every record).
    #[arg(long, value_name = "DIR",
          default_value = crate::publish::writer_lock::DEFAULT_RUNTIME_DIR)]
    pub runtime_dir: PathBuf,
}
