//! Options of the record stages: what a record says and which records a flow log keeps.

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Records")]
pub struct RecordArgs {
    /// Value of the account-id field (AWS writes `unknown` when it has none).
    #[arg(long, value_name = "ID", default_value = "unknown")]
    pub account_id: String,

    /// Region used in the S3 key layout and the region field (`-` when unknown).
    #[arg(long, value_name = "REGION", default_value = "-")]
    pub region: String,

    /// Flow log id used in file names (`fl-` + hex). Default: derived from the host name and
    /// destination, so it stays the same across restarts.
    #[arg(long, value_name = "ID")]
    pub flow_log_id: Option<String>,
}
