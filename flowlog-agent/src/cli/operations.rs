//! Options for operating the agent: metrics.

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
}
