//! `flowlog athena-ddl`: the Athena table and named queries for a flow log of the running agent
//! (by id, through the control socket), or for the flow log the `run` flags define.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;

use super::{OutputArgs, RecordArgs, api::SocketArgs, flag_flow_log};
use crate::{
    flowlogs::{
        athena::{GetAthenaDdlRequest, GetAthenaDdlResponse, TableOptions, TableSource, script},
        client::EXIT_SERVICE_ERROR,
        control::{CallError, actions, call},
    },
    inventory::metadata::Metadata,
};

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  # A flow log of the running agent (see describe-flow-logs)
  flowlog athena-ddl fl-0123456789abcdef0

  # The flow log these `run` flags define, for files synced to S3
  flowlog athena-ddl --destination file:/var/log/flowlog --file-format parquet \\
      --hive-compatible-partitions --account-id 123456789012 --region eu-west-1 \\
      --location s3://my-bucket/flowlog")]
pub struct AthenaDdlArgs {
    /// A flow log of the running agent. Without it, the flow log that the `run` flags given
    /// here define (--destination, --log-format, --file-format, --hive-compatible-partitions,
    /// --per-hour-partition, --account-id, --region, ...).
    #[arg(value_name = "FLOW_LOG_ID")]
    pub id: Option<String>,
    /// Table name.
    #[arg(long, value_name = "NAME", default_value = "vpc_flow_logs")]
    pub table: String,
    /// Where AWSLogs/ is, instead of the flow log's destination (e.g. s3://bucket/prefix for a
    /// file destination copied to S3).
    #[arg(long, value_name = "URI")]
    pub location: Option<String>,
    /// First day that partition projection covers (default: the flow log's creation day).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = crate::flowlogs::athena::parse_since)]
    pub since: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub socket: SocketArgs,
    #[command(flatten)]
    pub records: RecordArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl AthenaDdlArgs {
    /// Prints the script: the agent's answer for an id, else built from the flags.
    pub fn run(self) -> ExitCode {
        match &self.id {
            Some(id) => self.ask_agent(id),
            None => match self.build_from_flags() {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flowlog: error: {e:#}");
                    ExitCode::FAILURE
                }
            },
        }
    }

    fn ask_agent(&self, id: &str) -> ExitCode {
        let request = GetAthenaDdlRequest {
            flow_log_id: id.to_string(),
            table_name: Some(self.table.clone()),
            location: self.location.clone(),
            since: self.since.map(|d| d.format("%Y-%m-%d").to_string()),
        };
        let answer = serde_json::to_value(&request)
            .map_err(|e| CallError::BadAnswer {
                path: self.socket.control_socket.clone(),
                detail: e.to_string(),
            })
            .and_then(|r| call(&self.socket.control_socket, actions::GET_ATHENA_DDL, r));
        let answer = answer.and_then(|v| {
            serde_json::from_value::<GetAthenaDdlResponse>(v).map_err(|e| CallError::BadAnswer {
                path: self.socket.control_socket.clone(),
                detail: e.to_string(),
            })
        });
        match answer {
            Ok(a) => {
                print!("{}", a.ddl);
                ExitCode::SUCCESS
            }
            Err(CallError::Api(e)) => {
                eprintln!(
                    "An error occurred ({}) when calling the {} operation: {}",
                    e.code,
                    actions::GET_ATHENA_DDL,
                    e.message
                );
                ExitCode::from(EXIT_SERVICE_ERROR)
            }
            Err(e) => {
                eprintln!("flowlog: error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn build_from_flags(&self) -> anyhow::Result<String> {
        let id = flag_flow_log::flow_log_id(&self.records, &self.output)?;
        let options = flag_flow_log::object_options(&self.output)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let meta = runtime.block_on(Metadata::discover(&self.records.metadata_config()))?;
        let opts = TableOptions {
            table: Some(self.table.clone()),
            location: self.location.clone(),
            since: self.since,
        };
        let src = TableSource::from_parts(
            &id,
            self.records.log_format.fields(),
            &self.output.destination(),
            &options,
            Utc::now(),
            &meta,
            &opts,
        )?;
        Ok(script(&src))
    }
}
