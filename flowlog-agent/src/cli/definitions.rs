//! Options of `flowlog run` that say which flow logs run: the one the flags define, those in a
//! `--flow-logs` file, and those created through the control socket (kept in `--state-dir`).

use std::path::PathBuf;

use clap::Args;

/// Where flow logs created through the API are kept unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flowlog";
/// Where the agent listens for create-flow-logs, describe-flow-logs and delete-flow-logs.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/flowlog/control.sock";

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Flow log definitions")]
pub struct DefinitionArgs {
    /// Also run the flow logs of this file: a JSON list of CreateFlowLogs requests (as `aws ec2
    /// create-flow-logs --cli-input-json` takes them), applied again on SIGHUP (new entries
    /// created, removed ones deleted). The flags above then define no flow log of their own.
    #[arg(long, value_name = "FILE")]
    pub flow_logs: Option<PathBuf>,

    /// Run no flow log from the flags: only those created through the control socket (and
    /// those of --flow-logs).
    #[arg(long)]
    pub no_flag_flow_log: bool,

    /// Where flow logs created with `flowlog create-flow-logs` are kept (flow-logs/<id>.json,
    /// mode 0700), so they come back with the same ids after a restart.
    /// [default: /var/lib/flowlog]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// The control socket `flowlog create-flow-logs`, `describe-flow-logs` and
    /// `delete-flow-logs` talk to (mode 0600; callers must be root or hold CAP_NET_ADMIN).
    /// When the default one is served by another agent, this one runs without it.
    /// [default: /run/flowlog/control.sock]
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
}

impl DefinitionArgs {
    /// Whether the flags define a flow log.
    pub fn flag_flow_log(&self) -> bool {
        !self.no_flag_flow_log && self.flow_logs.is_none()
    }

    /// Whether the API's state directory and socket were named (then not getting them is an
    /// error, not a reason to run without them).
    pub fn api_named(&self) -> bool {
        self.state_dir.is_some() || self.control_socket.is_some()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    pub fn control_socket(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
    }
}
