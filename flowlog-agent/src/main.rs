//! `flowlog`: the binary. Parses the command line, sets up logging, runs, and turns any error
//! into one line on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use flowlog_agent::{
    cli::{Cli, Command, PackagingCommand, ParamError},
    flowlogs::{
        client::{EXIT_PARAM_ERROR, call_and_print},
        control::actions,
    },
    logging,
};

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| PackagingCommand::is_named(&a))
    {
        return generated(PackagingCommand::parse().run());
    }
    let cli = Cli::parse();
    let log_output = cli.log_output;
    logging::init(log_output);
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
        Command::AthenaDdl(a) => return a.run(),
        Command::Top(a) => return a.run(),
        Command::Status(a) => return flowlog_agent::cli::status::run(&a),
        Command::Cleanup(a) => return flowlog_agent::cli::cleanup::run(&a),
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
            let e = anyhow::Error::new(e).context("cannot start the async runtime");
            logging::fatal(log_output, &e);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(flowlog_agent::run::run(*args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::fatal(log_output, &e);
            ExitCode::FAILURE
        }
    }
}

/// Prints the files a packaging command wrote, one per line.
fn generated(files: anyhow::Result<Vec<std::path::PathBuf>>) -> ExitCode {
    match files {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
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
