//! Command line: `flowlog run ...`.

mod api;
mod athena;
mod capture;
pub mod cleanup;
mod definitions;
pub mod flag_flow_log;
mod generate;
mod operations;
mod output;
mod records;
pub mod status;
mod top;
mod top_view;

use clap::{Args, Parser, Subcommand};

pub use api::{CreateFlowLogsArgs, DeleteFlowLogsArgs, DescribeFlowLogsArgs, ParamError};
pub use athena::AthenaDdlArgs;
pub use capture::CaptureArgs;
pub use definitions::{DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR, DefinitionArgs};
pub use generate::{PackagingCommand, completions, man_pages};
pub use operations::OperationsArgs;
pub use output::OutputArgs;
pub use records::RecordArgs;
pub use top::TopArgs;

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
                  CAP_PERFMON and CAP_NET_ADMIN) and Linux >= 5.11 (TCX links on >= 6.6).",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// How the agent writes its own log lines on stderr: text for people, or json (one object
    /// per line: timestamp, level, target, message and the event's fields) for log shippers.
    #[arg(long, global = true, value_enum, value_name = "FORMAT",
          default_value_t = crate::logging::LogOutput::Text)]
    pub log_output: crate::logging::LogOutput,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture flows and write flow log records until interrupted (Ctrl-C / SIGTERM flush the
    /// current partial window first).
    #[command(after_help = run_after_help())]
    Run(Box<RunArgs>),
    /// Create flow logs in the running agent, as `aws ec2 create-flow-logs` does in AWS: one
    /// per resource id, live, kept across restarts. Prints AWS's response JSON.
    CreateFlowLogs(Box<CreateFlowLogsArgs>),
    /// Describe the running agent's flow logs, as `aws ec2 describe-flow-logs`.
    DescribeFlowLogs(DescribeFlowLogsArgs),
    /// Delete flow logs from the running agent, as `aws ec2 delete-flow-logs`: each delivers
    /// its partial window, then stops.
    DeleteFlowLogs(DeleteFlowLogsArgs),
    /// Print the Athena table (CREATE EXTERNAL TABLE with partition projection matching the
    /// object keys) and named queries for a flow log, as AWS's Athena integration makes them.
    AthenaDdl(Box<AthenaDdlArgs>),
    /// A live view of the running agent's open window: top flows and talkers, interfaces with
    /// owners, REJECT reasons, map fill (read without draining anything).
    Top(TopArgs),
    /// How the running agent is doing: attached interfaces, the window clock, flow map fill
    /// and overflow, and each flow log's delivery and spool. `--json` for scripts.
    Status(status::StatusArgs),
    /// Detach and unpin what agents left pinned (their programs keep counting after they stop
    /// until this runs or an agent adopts them). Refuses state a running agent holds.
    Cleanup(cleanup::CleanupArgs),
}

/// A few complete command lines, for `--help`.
const EXAMPLES: &str = "\
Examples:
  # Every interface that is up, 60 s windows, files under /var/log/flowlog
  flowlog run --destination file:/var/log/flowlog

  # REJECT records only, to S3 as Parquet in hourly Hive-compatible partitions
  flowlog run --traffic-type REJECT --destination s3://my-bucket/flow-logs \\
      --file-format parquet --hive-compatible-partitions --per-hour-partition

  # CloudWatch Logs (one stream per interface), interfaces eth0, eth1, ...
  flowlog run --iface 'eth*' --destination cloud-watch-logs:/vpc/flow-logs

  # A custom format (fields separated by spaces), 10 s windows, a file every minute
  flowlog run --aggregation-interval 10 --file-rollover-seconds 60 \\
      --log-format '${version} ${srcaddr} ${dstaddr} ${tcp-flags} ${action} ${reject-reason}'";

/// `flowlog run --help`'s epilogue: the examples and every `${field}` of `--log-format`, by the
/// flow log version that introduced it.
fn run_after_help() -> String {
    use std::fmt::Write as _;

    use crate::records::format::Field;

    let mut text = format!(
        "{EXAMPLES}\n\nFields for --log-format, written ${{name}}, in any order (by the flow log version that added them):\n"
    );
    let mut versions: Vec<u8> = Field::ALL.iter().map(|f| f.version()).collect();
    versions.dedup();
    for v in versions {
        let names: Vec<&str> = Field::ALL
            .iter()
            .filter(|f| f.version() == v)
            .map(|f| f.name())
            .collect();
        let _ = writeln!(text, "  v{v}: {}", names.join(" "));
    }
    let extensions: Vec<&str> = Field::EXTENSIONS.iter().map(|f| f.name()).collect();
    let _ = writeln!(
        text,
        "  beyond AWS (containers and VMs; version unchanged): {}",
        extensions.join(" ")
    );
    text.trim_end().to_string()
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
    #[command(flatten)]
    pub definitions: DefinitionArgs,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn help_documents_the_default_reject_reasons() {
        use clap::CommandFactory as _;
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        let arg = run
            .get_arguments()
            .find(|a| a.get_id() == "reject_reasons")
            .expect("--reject-reasons");
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .expect("help text")
            .to_string();
        // Exactly as --reject-reasons takes it: no space inside the list.
        assert!(
            help.contains(&format!(
                "[default: {}:",
                crate::capture::reject::reasons::DEFAULT_REJECT_REASONS.join(",")
            )),
            "{help}"
        );
    }

    /// Shell words of one command line: spaces separate, single quotes group.
    fn words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let (mut word, mut quoted, mut any) = (String::new(), false, false);
        for c in line.chars() {
            match c {
                '\'' => (quoted, any) = (!quoted, true),
                ' ' if !quoted => {
                    if any {
                        words.push(std::mem::take(&mut word));
                    }
                    any = false;
                }
                c => (word, any) = (word + &c.to_string(), true),
            }
        }
        if any {
            words.push(word);
        }
        words
    }

    #[test]
    fn every_example_parses() {
        let commands: Vec<String> = EXAMPLES
            .replace("\\\n", " ")
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("flowlog "))
            .map(str::to_string)
            .collect();
        assert_eq!(commands.len(), 4, "{EXAMPLES}");
        for c in commands {
            if let Err(e) = Cli::try_parse_from(words(&c)) {
                panic!("{c}: {e}");
            }
        }
    }

    #[test]
    fn run_help_lists_every_field() {
        let help = Cli::command()
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        use crate::records::format::Field;
        for f in Field::ALL.iter().chain(Field::EXTENSIONS) {
            assert!(
                help.split_whitespace().any(|w| w == f.name()),
                "{} not in run --help",
                f.name()
            );
        }
    }
}
