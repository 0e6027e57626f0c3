//! The client side of `flowlog create-flow-logs`, `describe-flow-logs` and `delete-flow-logs`:
//! one call to the agent, its answer printed as the AWS CLI prints it.

use std::{path::Path, process::ExitCode};

use super::control::{CallError, call};

/// The AWS CLI's exit code for a parameter it refused before sending anything.
pub const EXIT_PARAM_ERROR: u8 = 252;
/// The AWS CLI's exit code for an error answer from the service.
pub const EXIT_SERVICE_ERROR: u8 = 254;

/// Sends `request` for `action` to the agent on `socket`: the response JSON on stdout (exit 0),
/// or `An error occurred (Code) when calling the Action operation: ...` on stderr (exit 254).
/// No agent, or no permission, is one line and exit 1.
pub fn call_and_print(action: &str, request: serde_json::Value, socket: &Path) -> ExitCode {
    match call(socket, action, request) {
        Ok(answer) => {
            let mut out = Vec::new();
            let pretty = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, pretty);
            match serde::Serialize::serialize(&answer, &mut ser) {
                Ok(()) => {
                    println!("{}", String::from_utf8_lossy(&out));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flowlog: error: cannot print the answer: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(CallError::Api(e)) => {
            eprintln!(
                "An error occurred ({}) when calling the {action} operation: {}",
                e.code, e.message
            );
            ExitCode::from(EXIT_SERVICE_ERROR)
        }
        Err(e) => {
            eprintln!("flowlog: error: {e}");
            ExitCode::FAILURE
        }
    }
}
