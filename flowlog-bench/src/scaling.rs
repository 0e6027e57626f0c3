//! Issue 13's drain targets and the scaling plots: the streamed drain against its time and
//! memory targets and its memory budget, and how the costs grow with flows in the map, flows
//! in a window and flow logs sharing a cut.

use std::fmt::Write as _;

use crate::Results;
use crate::datapath::FLOWLOG;
use crate::drain::{BUDGET_BYTES_PER_FLOW, BUDGET_FIXED_KIB, DrainResult};
use crate::svg::{Line, line_chart};

/// Issue 13: a 1M-flow window from the flip to every record written, and its peak RSS.
pub const STREAM_1M_MAX_S: f64 = 0.5;
pub const STREAM_1M_MAX_RSS_MIB: f64 = 128.0;

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".to_owned()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn label(n: u32) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// Whether a streamed drain stayed within its memory budget (None: not streamed).
pub fn within_budget(x: &DrainResult) -> Option<bool> {
    let (hwm, budget) = (x.stream_hwm_kib?, x.budget_kib?);
    Some(hwm <= x.hwm_before_kib + budget)
}

/// The targets table's rows for the streamed drain.
pub fn target_rows(s: &mut String, d: &[DrainResult]) {
    match d
        .iter()
        .find(|x| x.flows == 1_000_000 && x.stream_s.is_some())
    {
        Some(x) => {
            let (t, rss) = (
                x.stream_s.unwrap_or(f64::NAN),
                mib(x.stream_hwm_kib.unwrap_or(0)),
            );
            let _ = writeln!(
                s,
                "| a 1M-flow window streamed (flip to every object finished) in at most {STREAM_1M_MAX_S} s, \
                 peak RSS at most {STREAM_1M_MAX_RSS_MIB:.0} MiB | {} s, {} MiB | {} |",
                f(t, 3),
                f(rss, 1),
                if t <= STREAM_1M_MAX_S && rss <= STREAM_1M_MAX_RSS_MIB {
                    "met".to_owned()
                } else {
                    format!(
                        "**missed** by {} s and {} MiB",
                        f((t - STREAM_1M_MAX_S).max(0.0), 3),
                        f((rss - STREAM_1M_MAX_RSS_MIB).max(0.0), 1)
                    )
                }
            );
        }
        None => {
            let _ = writeln!(
                s,
                "| a 1M-flow window streamed in at most {STREAM_1M_MAX_S} s, peak RSS at most \
                 {STREAM_1M_MAX_RSS_MIB:.0} MiB | not measured in this run | - |"
            );
        }
    }
    let checked: Vec<String> = d
        .iter()
        .filter(|x| x.flows >= 1_000_000)
        .filter_map(|x| {
            let ok = within_budget(x)?;
            Some(format!(
                "{}: {} MiB over {} MiB before, budget {} MiB ({})",
                label(x.flows),
                f(
                    mib(x
                        .stream_hwm_kib
                        .unwrap_or(0)
                        .saturating_sub(x.hwm_before_kib)),
                    1
                ),
                f(mib(x.hwm_before_kib), 1),
                f(mib(x.budget_kib.unwrap_or(0)), 1),
                if ok { "within" } else { "**over**" }
            ))
        })
        .collect();
    let all_ok = d
        .iter()
        .filter(|x| x.flows >= 1_000_000)
        .all(|x| within_budget(x).unwrap_or(false));
    let _ = writeln!(
        s,
        "| the streamed drain within its memory budget ({} MiB + {BUDGET_BYTES_PER_FLOW} bytes per flow) at 1M and 4M flows | {} | {} |",
        BUDGET_FIXED_KIB / 1024,
        if checked.is_empty() {
            "not measured in this run".to_owned()
        } else {
            checked.join("; ")
        },
        if checked.is_empty() {
            "-"
        } else if all_ok && checked.len() >= 2 {
            "met"
        } else if all_ok {
            "met where measured"
        } else {
            "**missed**"
        }
    );
}

/// Section 3's streamed part: the agent's path per size, where the time goes, and the cost
/// per flow log.
pub fn drain_streamed(s: &mut String, d: &[DrainResult]) {
    if !d.iter().any(|x| x.stream_s.is_some()) {
        return;
    }
    let _ = writeln!(
        s,
        "### The agent's path: streamed\n\n\
         `flowlog run` drains the idle flow map on a second thread, in batches of 4096 flows, while \
         its own thread turns each batch into records, text and gzip in the open objects of every \
         flow log (`Collector::cut_into`, `FlowLog::add_flows`): no window's flows or records are \
         held, and records are written unsorted (AWS does not order them). The times run from the \
         flip to every object finished. Then, the records being on disk, the slot is cleared \
         (`Collector::recorded`): `BPF_MAP_DELETE_BATCH` of the keys the drain read, shown apart, \
         with the `BPF_MAP_LOOKUP_AND_DELETE_BATCH` of every entry it replaced (which copies each \
         per-CPU value out again) on the same flows for comparison. Peak RSS is VmHWM after the \
         clear, before the collected measurement below. The memory budget over the RSS before the \
         drain is {} MiB (batches in flight, one batch's records, a 128 KiB text chunk, allocator \
         slack) + {BUDGET_BYTES_PER_FLOW} bytes per flow: the finished objects' gzip, held until \
         spooled (up to 16 bytes: about 10 bytes per unsorted record of the default format, more \
         while the buffer grows), and the flow's map key, kept until the clear (40 bytes here: the \
         bench's flows are all in the IPv6-keyed map; the agent keeps an IPv4 flow's 20-byte key).\n",
        BUDGET_FIXED_KIB / 1024
    );
    let _ = writeln!(s, "![drain scaling](drain-scaling.svg)\n");
    let _ = writeln!(
        s,
        "| flows | streamed: flip to objects finished, s | of which records, text, gzip busy, s | then the clear, s (by key / lookup-and-delete) | peak RSS before / streamed, MiB | budget, MiB | within | collected first: total, s | peak RSS, MiB | of it: flip + drain + clear, s | records unsorted, s | records sorted, s | gzip alone, s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for x in d.iter().filter(|x| x.stream_s.is_some()) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            label(x.flows),
            f(x.stream_s.unwrap_or(f64::NAN), 3),
            f(x.stream_busy_s.unwrap_or(f64::NAN), 3),
            match (x.stream_clear_s, x.clear_lookup_delete_s) {
                (Some(k), Some(l)) => format!("{} / {}", f(k, 3), f(l, 3)),
                // Older results: the clear was inside the streamed time.
                _ => "in the time".to_owned(),
            },
            f(mib(x.hwm_before_kib), 1),
            f(mib(x.stream_hwm_kib.unwrap_or(0)), 1),
            f(mib(x.budget_kib.unwrap_or(0)), 1),
            match within_budget(x) {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            },
            f(x.total_s, 3),
            f(mib(x.hwm_after_kib), 1),
            f(x.cut_s, 3),
            f(x.records_s.unwrap_or(f64::NAN), 3),
            f(x.build_sorted_s.unwrap_or(f64::NAN), 3),
            f(x.gzip_s.unwrap_or(f64::NAN), 3),
        );
    }
    if let Some(x) = d
        .iter()
        .filter(|x| x.stream_s.is_some())
        .max_by_key(|x| x.flows)
    {
        let render =
            x.format_s - x.build_sorted_s.unwrap_or(f64::NAN) - x.gzip_s.unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "\nWhere the {} flows' time goes, collected first (each step alone): flip + drain + clear {} s \
             (of which the grace period {} s and the clear {} s), records {} s unsorted and {} s sorted, rendering about {} s, \
             gzip {} s. Streamed, the drain and the rest overlap on two threads: {} s to every object finished.",
            label(x.flows),
            f(x.cut_s, 3),
            f(x.grace_s, 3),
            f(x.clear_s.unwrap_or(f64::NAN), 3),
            f(x.records_s.unwrap_or(f64::NAN), 3),
            f(x.build_sorted_s.unwrap_or(f64::NAN), 3),
            f(render, 3),
            f(x.gzip_s.unwrap_or(f64::NAN), 3),
            f(x.stream_s.unwrap_or(f64::NAN), 3),
        );
    }
    if let Some(x) = d
        .iter()
        .filter(|x| !x.streamed_flow_logs_s.is_empty())
        .max_by_key(|x| x.flows)
    {
        let one = x
            .streamed_flow_logs_s
            .iter()
            .find(|(k, _)| *k == 1)
            .map_or(f64::NAN, |(_, t)| *t);
        let parts: Vec<String> = x
            .streamed_flow_logs_s
            .iter()
            .map(|(k, t)| format!("{k}: {} s ({}x)", f(*t, 3), f(t / one, 2)))
            .collect();
        let _ = writeln!(
            s,
            "\n![flow logs](flow-logs.svg)\n\nFlow logs sharing one cut (each drained batch handed to every \
             flow log, each writing its own objects; the drain itself, once per cut, not included), {} \
             flows: {}.",
            label(x.flows),
            parts.join(", ")
        );
    }
    let _ = writeln!(s);
}

/// drain-scaling.svg, flow-logs.svg and datapath-scaling.svg.
pub fn plots(r: &Results) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let d: Vec<&DrainResult> = r.drain.iter().filter(|x| x.stream_s.is_some()).collect();
    if !d.is_empty() {
        let per = |name: &str, v: &dyn Fn(&DrainResult) -> f64| Line {
            name: name.to_owned(),
            points: d.iter().map(|x| (f64::from(x.flows) / 1e6, v(x))).collect(),
        };
        out.push((
            "drain-scaling.svg".to_owned(),
            line_chart(
                "Drain time against flows in the window",
                "flows in the window, millions",
                "seconds",
                &[
                    per("streamed (the agent's path)", &|x| {
                        x.stream_s.unwrap_or(f64::NAN)
                    }),
                    per("collected first: total", &|x| x.total_s),
                    per("flip + drain + clear alone", &|x| x.cut_s),
                ],
            ),
        ));
    }
    if let Some(x) = r
        .drain
        .iter()
        .filter(|x| !x.streamed_flow_logs_s.is_empty())
        .max_by_key(|x| x.flows)
    {
        out.push((
            "flow-logs.svg".to_owned(),
            line_chart(
                &format!(
                    "Records for N flow logs sharing one cut of {} flows",
                    label(x.flows)
                ),
                "flow logs",
                "seconds",
                &[Line {
                    name: "records + text + gzip, all flow logs".into(),
                    points: x
                        .streamed_flow_logs_s
                        .iter()
                        .map(|(k, t)| (f64::from(*k), *t))
                        .collect(),
                }],
            ),
        ));
    }
    let dp = &r.datapath;
    if dp.fills.len() >= 2 {
        let lines: Vec<Line> = dp
            .frames
            .iter()
            .map(|fr| Line {
                name: fr.clone(),
                points: dp
                    .fills
                    .iter()
                    .map(|&fl| (f64::from(fl) / 1e6, dp.median(fl, fr, FLOWLOG)))
                    .collect(),
            })
            .collect();
        out.push((
            "datapath-scaling.svg".to_owned(),
            line_chart(
                "Datapath: ns per packet against flows in the map (flowlog, hit path)",
                "flows in the map, millions",
                "ns per packet",
                &lines,
            ),
        ));
    }
    out
}
