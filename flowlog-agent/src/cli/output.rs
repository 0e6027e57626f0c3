//! Options of the publish stages: where records go and how objects are cut.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Directory that receives the records, laid out as AWS's S3 key layout
    /// (AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD/...log.gz).
    #[arg(long, value_name = "DIR", default_value = "./flowlogs")]
    pub output_dir: PathBuf,

    /// Seconds one output file collects records before it is written (AWS: 300). Files are
    /// also closed at 75 MB and on shutdown.
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub file_rollover_seconds: u64,
}
