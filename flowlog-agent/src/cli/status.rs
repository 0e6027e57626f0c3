//! `flowlog status`: asks the running agent how it is doing (control socket, `Status`) and
//! prints it for people, or as JSON with `--json`. No agent: one line, exit 1.

use std::{fmt::Write as _, process::ExitCode};

use clap::Args;

use super::api::SocketArgs;
use crate::flowlogs::{
    control::{CallError, call},
    status::{ACTION, AgentStatus},
};

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Print the agent's answer as JSON (for scripts) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Calls the agent and prints its status.
pub fn run(args: &StatusArgs) -> ExitCode {
    let answer = match call(&args.socket.control_socket, ACTION, serde_json::json!({})) {
        Ok(a) => a,
        Err(CallError::Api(e)) => {
            eprintln!(
                "flowlog: error: the agent on {} cannot report its status ({}: {}): is it older than this client?",
                args.socket.control_socket.display(),
                e.code,
                e.message
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("flowlog: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&answer) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("flowlog: error: cannot print the answer: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    match serde_json::from_value::<AgentStatus>(answer) {
        Ok(status) => {
            print!("{}", human(&status));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flowlog: error: the agent's status does not read ({e}): try --json");
            ExitCode::FAILURE
        }
    }
}

/// Unix seconds as `2026-12-02T04:05:00Z`.
fn time(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// A table: columns padded to their widest cell, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The status as people read it.
pub fn human(s: &AgentStatus) -> String {
    let mut out = String::new();
    let w = &s.window;
    let _ = write!(out, "window: open since {}", time(w.start));
    match w.next_cut {
        Some(next) => {
            let _ = write!(out, ", next cut {}", time(next));
        }
        None => out.push_str(", no flow log to cut for"),
    }
    out.push('\n');
    match (w.last_drain_at, w.last_drain_seconds) {
        (Some(at), Some(secs)) => {
            let _ = writeln!(out, "last drain: {} (took {:.3} s)", time(at), secs);
        }
        _ => out.push_str("last drain: none yet\n"),
    }
    let m = &s.flow_map;
    let _ = writeln!(
        out,
        "flow map: {} of {} flows in the last cut ({}%); overflow: {} packets in the last cut, {} since start",
        m.last_cut_flows,
        m.max_flows,
        m.fill_percent,
        m.last_cut_overflow_packets,
        m.overflow_packets_total
    );
    out.push('\n');
    if s.interfaces.is_empty() {
        out.push_str("interfaces: none attached\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .interfaces
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.ifindex.to_string(),
                    i.owner.clone(),
                    format!("{} {}", i.attach_mode, i.pinning),
                ]
            })
            .collect();
        out.push_str(&table(&["INTERFACE", "IFINDEX", "OWNER", "MODE"], &rows));
    }
    out.push('\n');
    if s.flow_logs.is_empty() {
        out.push_str("flow logs: none\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .flow_logs
            .iter()
            .map(|f| {
                vec![
                    f.flow_log_id.clone(),
                    f.delivery_status.clone(),
                    format!(
                        "{} batches, {} records, {} bytes",
                        f.spool_batches, f.spool_records, f.spool_bytes
                    ),
                    f.destination.clone(),
                    f.last_error.clone().unwrap_or_else(|| "-".to_string()),
                ]
            })
            .collect();
        out.push_str(&table(
            &["FLOW LOG", "DELIVERY", "SPOOL", "DESTINATION", "LAST ERROR"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlogs::status::{FlowLogStatus, InterfaceStatus, MapStatus, WindowStatus};

    #[test]
    fn human_output_reads_as_a_report() {
        let s = AgentStatus {
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                ifindex: 2,
                owner: "-".into(),
                attach_mode: "tcx".into(),
                pinning: "adopted".into(),
            }],
            window: WindowStatus {
                start: 1_796_184_000,
                next_cut: Some(1_796_184_060),
                last_drain_at: Some(1_796_184_000),
                last_drain_seconds: Some(0.0125),
            },
            flow_map: MapStatus {
                max_flows: 1000,
                last_cut_flows: 25,
                fill_percent: 2.5,
                last_cut_overflow_packets: 0,
                overflow_packets_total: 3,
            },
            flow_logs: vec![FlowLogStatus {
                flow_log_id: "fl-1".into(),
                destination: "file:/var/log/flowlog".into(),
                delivery_status: "FAILED".into(),
                spool_batches: 2,
                spool_records: 40,
                spool_bytes: 900,
                last_error: Some("Access error: denied".into()),
            }],
        };
        let expected = "\
window: open since 2026-12-02T04:00:00Z, next cut 2026-12-02T04:01:00Z
last drain: 2026-12-02T04:00:00Z (took 0.013 s)
flow map: 25 of 1000 flows in the last cut (2.5%); overflow: 0 packets in the last cut, 3 since start

INTERFACE  IFINDEX  OWNER  MODE
eth0       2        -      tcx adopted

FLOW LOG  DELIVERY  SPOOL                             DESTINATION            LAST ERROR
fl-1      FAILED    2 batches, 40 records, 900 bytes  file:/var/log/flowlog  Access error: denied
";
        assert_eq!(human(&s), expected);
    }
}
