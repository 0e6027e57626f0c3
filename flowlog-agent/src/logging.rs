//! The agent's own log lines on stderr: text for people (the default), or one JSON object per
//! line for log shippers (`--log-output json`). The filter is `RUST_LOG` (default `info`) in
//! both forms.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `--log-output`: how the agent writes its own logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogOutput {
    /// Human-readable lines; colour only when stderr is a terminal and NO_COLOR is unset.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level, never colour codes.
    Json,
}

/// Installs the process-wide subscriber for `output`. Call once, first thing in `main`.
pub fn init(output: LogOutput) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match output {
        LogOutput::Text => builder
            // Colour codes only for a person at a terminal (never in a journal, file or pipe),
            // and not when NO_COLOR is set (no-color.org).
            .with_ansi(
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            )
            .init(),
        LogOutput::Json => builder
            .json()
            // Fields beside `message`, not nested under `fields`: what shippers index.
            .flatten_event(true)
            .with_ansi(false)
            .init(),
    }
}

/// The one line an error exit prints: `flowlog: error: ...` as text, or an ERROR event (still
/// one line, still JSON) so a log shipper does not choke on the agent's last words.
pub fn fatal(output: LogOutput, err: &anyhow::Error) {
    match output {
        LogOutput::Text => eprintln!("flowlog: error: {err:#}"),
        LogOutput::Json => tracing::error!(target: "flowlog", exit = "failure", "{err:#}"),
    }
}
