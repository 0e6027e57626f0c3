//! Command line: `flowlog run ...`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
                  CAP_PERFMON and CAP_NET_ADMIN) and Linux >= 5.8 (TCX links on >= 6.6)."
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

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Interfaces to watch: a name or a glob such as 'veth*'. Repeatable. Default: every
    /// non-loopback interface that is up. Interfaces matching a glob that appear later are
    /// attached at the next window.
    #[arg(long = "iface", value_name = "GLOB")]
    pub ifaces: Vec<String>,

    /// Length of one aggregation window in seconds. Windows are aligned to wall-clock
    /// multiples of it. AWS uses 60 (Nitro) or 600.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub aggregation_interval: u64,

    /// Directory that receives the records, laid out as AWS's S3 key layout
    /// (AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD/...log.gz).
    #[arg(long, value_name = "DIR", default_value = "./flowlogs")]
    pub output_dir: PathBuf,

    /// Capacity of the in-kernel flow map (flows per window). Packets of flows that do not fit
    /// are counted per interface and reported as SKIPDATA, never dropped silently.
    #[arg(long, value_name = "N", default_value_t = flowlog_common::DEFAULT_MAX_FLOWS,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_flows: u32,

    /// Value of the account-id field (AWS writes `unknown` when it has none).
    #[arg(long, value_name = "ID", default_value = "unknown")]
    pub account_id: String,

    /// Region used in the S3 key layout and the region field (`-` when unknown).
    #[arg(long, value_name = "REGION", default_value = "-")]
    pub region: String,

    /// Flow log id used in file names (`fl-` + hex). Default: derived from the host name and
    /// output directory, so it stays the same across restarts.
    #[arg(long, value_name = "ID")]
    pub flow_log_id: Option<String>,

    /// Seconds one output file collects records before it is written (AWS: 300). Files are
    /// also closed at 75 MB and on shutdown.
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub file_rollover_seconds: u64,

    /// Load the eBPF object from this file instead of the one embedded at build time.
    #[arg(long, value_name = "PATH")]
    pub ebpf_object: Option<PathBuf>,
}
