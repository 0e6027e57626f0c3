//! SOAK.md and its plots, from what the soak measured. Returns the problems (unexplained loss,
//! a failed agent) that make the soak fail.

use std::{fmt::Write as _, fs, path::Path};

use crate::{
    Sample, Soak,
    svg::{Line, line_chart},
};

/// Least-squares slope of `points` (per x unit).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// The `q`-quantile (nearest rank) of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn yes(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

pub fn write(out: &Path, s: &Soak) -> Vec<String> {
    let mut problems = Vec::new();
    let after: Vec<&Sample> = s
        .samples
        .iter()
        .filter(|x| x.secs >= s.warmup_secs)
        .collect();
    let rss_points: Vec<(f64, f64)> = after
        .iter()
        .map(|x| (x.secs / 3600.0, x.rss_kib as f64 / 1024.0))
        .collect();
    let fd_points: Vec<(f64, f64)> = after
        .iter()
        .map(|x| (x.secs / 3600.0, x.fds as f64))
        .collect();
    let rss_slope = slope(&rss_points);
    let fd_slope = slope(&fd_points);
    let rss_all: Vec<f64> = after.iter().map(|x| x.rss_kib as f64 / 1024.0).collect();
    let (rss_min, rss_max) = (
        rss_all.iter().copied().fold(f64::INFINITY, f64::min),
        rss_all.iter().copied().fold(0.0, f64::max),
    );
    let fds: Vec<u64> = after.iter().map(|x| x.fds).collect();
    let (fd_min, fd_max) = (
        fds.iter().copied().min().unwrap_or(0),
        fds.iter().copied().max().unwrap_or(0),
    );
    let run_end = s.lateness.iter().map(|l| l.end).max().unwrap_or(0);
    let mut late: Vec<f64> = s
        .lateness
        .iter()
        .filter(|l| l.end < run_end)
        .map(|l| l.seconds)
        .collect();
    late.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        quantile(&late, 0.5),
        quantile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN),
    );
    let t = &s.tally;
    let spooled = s
        .metrics
        .get("flowlog_flow_log_records_total")
        .copied()
        .unwrap_or(0.0) as u64;
    let spool_dropped = s
        .metrics
        .get("flowlog_spool_dropped_records_total")
        .copied()
        .unwrap_or(0.0) as u64;
    if s.exit != "0" {
        problems.push(format!("the agent exited with {}", s.exit));
    }
    if t.records + s.left_in_spool != spooled {
        problems.push(format!(
            "records spooled {spooled} but delivered {} (and {} left in the spool)",
            t.records, s.left_in_spool
        ));
    }
    // Packets of flows that did not fit in the flow map: SKIPDATA records, counted here.
    let overflow = s
        .metrics
        .get("flowlog_overflow_packets_total")
        .copied()
        .unwrap_or(0.0) as u64;
    if t.packets + overflow != s.wire_packets {
        problems.push(format!(
            "the interface passed {} packets but the records count {} (+ {overflow} in SKIPDATA)",
            s.wire_packets, t.packets
        ));
    }
    if spool_dropped > 0 {
        problems.push(format!("the spool dropped {spool_dropped} records"));
    }
    if s.links_after.starts_with("PROBLEM") {
        problems.push(s.links_after.clone());
    }
    let churn_rate = s.churn_sent as f64 / s.run_secs;

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Soak\n");
    let _ = writeln!(
        w,
        "`cargo xtask soak --minutes {}`: the release agent on one veth (1 s windows, one S3 \
         object per window, JSON logs) for {:.1} minutes of load, written by \
         tests/src/bin/flowlog-soak. Load, all at once:\n",
        s.minutes,
        s.run_secs / 60.0
    );
    let _ = writeln!(
        w,
        "- flow churn: {} UDP datagrams from a raw socket (`sendmmsg`), each a new flow \
         (258,048 distinct 5-tuples before one repeats), offered at {} flows/s, achieved \
         {churn_rate:.0}/s; {} received by the sockets behind the interface;",
        s.churn_sent, s.offered_rate, s.churn_received
    );
    let _ = writeln!(
        w,
        "- steady traffic: one UDP flow the other way, 100 datagrams/s ({} sent, {} received);",
        s.steady_sent, s.steady_received
    );
    let _ = writeln!(
        w,
        "- interface churn: a veth pair the agent covers created, kept 2 s and deleted, every \
         4 s ({} pairs);",
        s.iface_cycles
    );
    let _ = writeln!(
        w,
        "- the destination flapping: moto behind the fault proxy, one fault episode every 30 s \
         ({} episodes: {}), healthy for the last 30 s.\n",
        s.episodes.len(),
        dedup(&s.episodes).join("; ")
    );

    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(w, "| target | measured | |\n| --- | --- | --- |");
    let _ = writeln!(
        w,
        "| RSS slope < 1 MiB/h after warm-up | {rss_slope:.2} MiB/h (RSS {rss_min:.1} to {rss_max:.1} MiB) | {} |",
        yes(rss_slope < 1.0)
    );
    let _ = writeln!(
        w,
        "| open fds flat | {fd_min} to {fd_max} (slope {fd_slope:.1}/h) | {} |",
        yes(fd_max - fd_min <= 6)
    );
    let series: Vec<u64> = after.iter().map(|x| x.series).collect();
    let _ = writeln!(
        w,
        "| (metric series flat) | {} to {} series in the metrics file | {} |",
        series.iter().min().unwrap_or(&0),
        series.iter().max().unwrap_or(&0),
        yes(series.iter().max().unwrap_or(&0) - series.iter().min().unwrap_or(&0) <= 100)
    );
    let _ = writeln!(
        w,
        "| window lateness p99 < 1 s | p50 {p50:.3} s, p99 {p99:.3} s, max {max:.3} s over {} windows | {} |",
        late.len(),
        yes(p99 < 1.0)
    );
    let _ = writeln!(
        w,
        "| zero unexplained loss | {} | {} |\n",
        if problems.is_empty() {
            format!(
                "every spooled record delivered once; every packet in a record, or counted in \
                 SKIPDATA ({} records, {overflow} packets: counted loss)",
                t.skipdata
            )
        } else {
            problems.join("; ")
        },
        yes(problems.is_empty())
    );
    let _ = writeln!(
        w,
        "Warm-up: the first {:.0} s are left out of the slopes and ranges ({} samples after \
         it, one every 5 s). Lateness: the time from a window's boundary to the moment its \
         records were in the spool (the agent's `lateness_seconds` on each \"flow log window \
         closed\" line; `flowlog_window_lateness_seconds` is the last one); the window the stop \
         flushed is left out.\n",
        s.warmup_secs,
        after.len()
    );

    let _ = writeln!(w, "## Records in, records delivered\n");
    let _ = writeln!(w, "| | count |\n| --- | --- |");
    for (what, v) in [
        (
            "records spooled (`flowlog_flow_log_records_total`)",
            spooled,
        ),
        (
            "records delivered to moto (distinct object keys)",
            t.records,
        ),
        (
            "records left in the spool at exit (delivered at the next start)",
            s.left_in_spool,
        ),
        ("objects delivered", t.objects),
        (
            "objects written again under a key already read (a retried PutObject)",
            t.repeated_keys,
        ),
        ("OK records", t.ok),
        ("NODATA", t.nodata),
        ("SKIPDATA", t.skipdata),
        (
            "packets through the interface (kernel rx+tx counters)",
            s.wire_packets,
        ),
        ("packets in the interface's records", t.packets),
        (
            "packets in SKIPDATA (`flowlog_overflow_packets_total`)",
            overflow,
        ),
        ("churn datagrams sent", s.churn_sent),
        ("churn flows in records (one packet each)", t.churn_records),
        ("churn packets in records", t.churn_packets),
        (
            "spool drops (`flowlog_spool_dropped_records_total`)",
            spool_dropped,
        ),
    ] {
        let _ = writeln!(w, "| {what} | {v} |");
    }
    let _ = writeln!(
        w,
        "\nThe interface's counters are the ground truth for packets (static neighbours and no \
         IPv6: every packet on it is the soak's): packets in records + packets in SKIPDATA \
         must equal them. SKIPDATA is AWS's counted loss: a window whose flows did not fit in \
         the flow map (`--max-flows`, 65,536), which happens when a cut comes late.\n"
    );
    let _ = writeln!(w, "## What the proxy did\n");
    let _ = writeln!(w, "| request | count |\n| --- | --- |");
    for (what, n) in &s.proxy {
        let _ = writeln!(w, "| {what} | {n} |");
    }
    let _ = writeln!(w, "\nAgent: exit status {}; {}.\n", s.exit, s.links_after);
    let _ = writeln!(
        w,
        "## Plots\n\n![RSS](soak-rss.svg)\n\n![open fds](soak-fds.svg)\n\n![lateness](soak-lateness.svg)"
    );
    let _ = writeln!(
        w,
        "\nMetrics at exit: {}",
        [
            "flowlog_publish_retries_total",
            "flowlog_publish_failures_total",
            "flowlog_flow_log_windows_total",
        ]
        .iter()
        .filter_map(|m| s.metrics.get(*m).map(|v| format!("`{m}` {v}")))
        .collect::<Vec<_>>()
        .join(", ")
    );
    fs::write(out.join("SOAK.md"), md).expect("write SOAK.md");

    let minutes = |x: &Sample| x.secs / 60.0;
    let write_svg = |name: &str, svg: String| {
        fs::write(out.join(name), svg).unwrap_or_else(|e| panic!("write {name}: {e}"));
    };
    write_svg(
        "soak-rss.svg",
        line_chart(
            "Agent RSS",
            "minutes",
            "MiB",
            &[Line {
                name: "VmRSS".into(),
                points: s
                    .samples
                    .iter()
                    .map(|x| (minutes(x), x.rss_kib as f64 / 1024.0))
                    .collect(),
            }],
        ),
    );
    write_svg(
        "soak-fds.svg",
        line_chart(
            "Agent open file descriptors",
            "minutes",
            "fds",
            &[Line {
                name: "/proc/<pid>/fd".into(),
                points: s
                    .samples
                    .iter()
                    .map(|x| (minutes(x), x.fds as f64))
                    .collect(),
            }],
        ),
    );
    let first = s.lateness.first().map(|l| l.end).unwrap_or(0);
    write_svg(
        "soak-lateness.svg",
        line_chart(
            "Window lateness (boundary to spooled)",
            "minutes",
            "seconds",
            &[Line {
                name: "lateness".into(),
                points: s
                    .lateness
                    .iter()
                    .filter(|l| l.end < run_end)
                    .map(|l| ((l.end - first) as f64 / 60.0, l.seconds))
                    .collect(),
            }],
        ),
    );
    problems
}

/// The distinct entries of `v`, in first-seen order.
fn dedup(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in v {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}
