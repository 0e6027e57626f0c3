//! Command line: `flowlog run ...`.

mod capture;
mod operations;
mod output;
mod records;

use clap::{Args, Parser, Subcommand};

pub use capture::CaptureArgs;
pub use operations::OperationsArgs;
pub use output::OutputArgs;
pub use records::RecordArgs;

#[derive(Debug, Parser)]
#[command(
    name = "flowlog",
    version,
    about = "AWS VPC Flow Logs for any Linux host, counted in the kernel with eBPF.",
    long_about = "AWS VPC Flow Logs for any Linux host.\n\nAn eBPF program on TC ingress and egress of each \
                  selected interface counts packets and bytes per flow; at every aggregation interval \
                  the agent turns the counts into records byte-compatible with AWS VPC Flow Logs \
                  (default version 2 format, NODATA and SKIPDATA included) and writes them as \
                  gzip text files laid out like AWS's S3 delivery.\n\nNeeds root (or CAP_BPF, \
                  CAP_PERFMON and CAP_NET_ADMIN) and Linux >= 5.11 (TCX links on >= 6.6)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture flows and write flow log records until interrupted (Ctrl-C / SIGTERM flush the
    /// current partial window first).
    Run(RunArgs),
}

/// `flowlog run` options, one group per stage that owns them.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub records: RecordArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub operations: OperationsArgs,
}
