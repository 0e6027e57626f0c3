//! `flowlog`: the binary. Parses the command line, sets up logging, runs, and turns any error
//! into one line on stderr and a non-zero exit.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use flowlog_agent::{
    cli::{Cli, Command, ParamError},
    flowlogs::{
        client::{EXIT_PARAM_ERROR, call_and_print},
        control::actions,
    },
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal (never in a journal, file or pipe), and
        // not when NO_COLOR is set (no-color.org).
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let args = match cli.command {
        Command::Run(args) => args,
        Command::CreateFlowLogs(a) => {
            return api_call(
                actions::CREATE_FLOW_LOGS,
                a.request(),
                &a.socket.control_socket,
            );
        }
        Command::DescribeFlowLogs(a) => {
            return api_call(
                actions::DESCRIBE_FLOW_LOGS,
                a.request(),
                &a.socket.control_socket,
            );
        }
        Command::DeleteFlowLogs(a) => {
            return api_call(
                actions::DELETE_FLOW_LOGS,
                a.request(),
                &a.socket.control_socket,
            );
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowlog: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(flowlog_agent::run::run(*args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlog: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One call to the running agent; a parameter refused before sending exits as the AWS CLI does.
fn api_call(
    action: &str,
    request: Result<serde_json::Value, ParamError>,
    socket: &std::path::Path,
) -> ExitCode {
    match request {
        Ok(r) => call_and_print(action, r, socket),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_PARAM_ERROR)
        }
    }
}
