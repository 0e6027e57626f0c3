//! The datapath parts of BENCHMARKS.md section 1.1 that break flowlog's cost down: where each
//! nanosecond of a packet goes (from the floor programs' differences), and the first packet of
//! a flow against the insert floors.

use std::fmt::Write as _;

use crate::datapath::{Datapath, FLOWLOG};
use crate::stats::{median, ratio};

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".to_owned()
    }
}

/// One row of the per-part table: what part, how it is measured, ns.
pub struct Part {
    pub part: &'static str,
    pub measured_as: &'static str,
    pub ns: f64,
}

/// flowlog's per-packet time split into parts, from medians over `frames` at `fill`. The
/// parts add up to flowlog exactly (the last one is the rest). Floors: no-op = N, counter =
/// N + A (per-CPU array add), parse = N + P + A, key = N + P + K + A, clock = N + C + A,
/// window = N + W + A, update = N + P + K + C + H.
pub fn parts(d: &Datapath, fill: u32, frames: &[&str]) -> Vec<Part> {
    let m = |program: &str| {
        median(
            &frames
                .iter()
                .map(|fr| d.median(fill, fr, program))
                .collect::<Vec<_>>(),
        )
    };
    let (noop, counter, parse, key, clock, window, update, flowlog) = (
        m("no-op"),
        m("counter"),
        m("parse"),
        m("key"),
        m("clock"),
        m("window"),
        m("update"),
        m(FLOWLOG),
    );
    let array_add = counter - noop;
    let clock_ns = clock - counter;
    let window_ns = window - counter;
    vec![
        Part {
            part: "test-run loop and program call",
            measured_as: "no-op",
            ns: noop,
        },
        Part {
            part: "parsing (SkbBytes reader, Ethernet to L4)",
            measured_as: "parse - counter",
            ns: parse - counter,
        },
        Part {
            part: "building the flow key from the parsed headers",
            measured_as: "key - parse",
            ns: key - parse,
        },
        Part {
            part: "clock (`bpf_jiffies64`, inlined: one load)",
            measured_as: "clock - counter",
            ns: clock_ns,
        },
        Part {
            part: "flow lookup and counter update, one map named at the call",
            measured_as: "update - key - (clock - counter) + (counter - no-op)",
            ns: update - key - clock_ns + array_add,
        },
        Part {
            part: "WINDOW slot read (one-element array, inlined lookup)",
            measured_as: "window - counter",
            ns: window_ns,
        },
        Part {
            part: "the rest: choosing the slot's map at run time, GSO check",
            measured_as: "flowlog - update - (window - counter)",
            ns: flowlog - update - window_ns,
        },
        Part {
            part: "**flowlog**",
            measured_as: "flowlog",
            ns: flowlog,
        },
    ]
}

/// The per-part table of the largest fill, over all frames and per address family. Nothing
/// for results written before the part floors existed.
pub fn parts_section(s: &mut String, d: &Datapath, fill: u32, fill_label: &str) {
    if !d.programs.iter().any(|p| p == "window") {
        return;
    }
    let all: Vec<&str> = d.frames.iter().map(String::as_str).collect();
    let v4: Vec<&str> = all
        .iter()
        .copied()
        .filter(|f| f.starts_with("IPv4"))
        .collect();
    let v6: Vec<&str> = all
        .iter()
        .copied()
        .filter(|f| f.starts_with("IPv6"))
        .collect();
    let _ = writeln!(
        s,
        "Where flowlog's time per packet goes ({fill_label} flows in the map, medians over frames, ns). \
         Each part is the difference of two programs of this run that differ by that part only; the \
         reference programs are in `flowlog-ebpf/src/bin/floor.rs`: **window** (the counter plus a \
         one-element array read like WINDOW), **clock** (the counter plus `bpf_jiffies64`, flowlog's \
         clock; **clock, coarse** is the same with `bpf_ktime_get_coarse_ns`, the helper call it \
         replaced, for reference, not a part), **key** \
         (the parser plus building the flow key, stored in a per-CPU array), **update** (parser, key, \
         clock and flowlog's own `flow::count` in one pre-filled per-CPU hash map named at the call). \
         The parts add up to flowlog's time; a part within 1-2 ns of zero is below what this \
         measurement resolves.\n"
    );
    let groups = [
        (format!("all {} frames", all.len()), all),
        ("IPv4 frames".to_owned(), v4),
        ("IPv6 frames".to_owned(), v6),
    ];
    let tables: Vec<Vec<Part>> = groups.iter().map(|(_, g)| parts(d, fill, g)).collect();
    let _ = write!(s, "| part | measured as |");
    for (name, _) in &groups {
        let _ = write!(s, " {name} |");
    }
    let _ = writeln!(s, "\n|---|---|---|---|---|");
    for (i, p) in tables[0].iter().enumerate() {
        let _ = write!(s, "| {} | {} |", p.part, p.measured_as);
        for t in &tables {
            let _ = write!(s, " {} |", f(t[i].ns, 1));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
}

/// Issue 13's datapath targets at `fill`: hit path per family against the `hash` floor (one
/// per-CPU hash lookup on the 44-byte key), first packet against the hit path and the
/// insert floor. Nothing for results without the insert floor.
pub fn targets_section(s: &mut String, d: &Datapath, fill: u32, fill_label: &str) {
    let Some(first) = d.new_flow.iter().find(|n| n.fill == fill) else {
        return;
    };
    if first.floor("insert").is_nan() {
        return;
    }
    let family = |prefix: &str| -> (f64, f64) {
        let frames: Vec<&String> = d.frames.iter().filter(|f| f.starts_with(prefix)).collect();
        let of = |program: &str| {
            median(
                &frames
                    .iter()
                    .map(|fr| d.median(fill, fr, program))
                    .collect::<Vec<_>>(),
            )
        };
        (of(FLOWLOG), of("hash"))
    };
    let met = |ok: bool| if ok { "met" } else { "**missed**" };
    let _ = writeln!(
        s,
        "Issue 13's datapath targets, {fill_label} flows in the map (medians over the family's \
         frames; the `hash` floor is one per-CPU hash lookup and update on the 44-byte key in its \
         own small map):\n"
    );
    let _ = writeln!(s, "| target | measured | |\n|---|---|---|");
    for (prefix, max) in [("IPv4", 1.0), ("IPv6", 1.15)] {
        let (ours, hash) = family(prefix);
        let x = ratio(ours, hash);
        let _ = writeln!(
            s,
            "| hit path, {prefix}: at most {max:.2}x the `hash` floor | {}x (flowlog {} ns, hash {} ns) | {} |",
            f(x, 2),
            f(ours, 1),
            f(hash, 1),
            met(x <= max)
        );
    }
    let hit = median(
        &d.frames
            .iter()
            .filter(|f| f.starts_with("IPv4 UDP"))
            .map(|fr| d.median(fill, fr, FLOWLOG))
            .collect::<Vec<_>>(),
    );
    let first_ns =
        first.flowlog_median_ns - first.noop_median_ns + d.median_over_frames(fill, "no-op");
    let (x_hit, x_insert) = (
        ratio(first_ns, hit),
        ratio(first.flowlog_median_ns, first.floor("insert")),
    );
    let _ = writeln!(
        s,
        "| first packet of a flow (IPv4 UDP): at most 2x the hit path, or within 1.2x the bare insert floor | \
         {}x the IPv4 UDP hit path ({} ns, single-run timer overhead replaced by the repeated runs'; hit {} ns); \
         {}x the insert floor ({} ns against {} ns, single runs) | {} |\n",
        f(x_hit, 2),
        f(first_ns, 0),
        f(hit, 1),
        f(x_insert, 2),
        f(first.flowlog_median_ns, 0),
        f(first.floor("insert"), 0),
        met(x_hit <= 2.0 || x_insert <= 1.2)
    );
}

/// The first packet of a flow: flowlog against the insert floors, per fill.
pub fn first_packet_section(s: &mut String, d: &Datapath, fill_label: &dyn Fn(u32) -> String) {
    let _ = writeln!(
        s,
        "First packet of a flow (insert into the flow map): distinct IPv4/UDP frames, one run each \
         (`repeat = 1`, so each time includes one clock read of the test-run timer, shown by the \
         no-op's single runs)."
    );
    let floors = d.new_flow.iter().any(|n| !n.floors.is_empty());
    if floors {
        let _ = writeln!(
            s,
            " In the same runs, interleaved frame by frame: **insert** (one bare insert of a fresh \
             key per run, no parsing and no lookup: the floor for creating a flow) and the **update** \
             floor (parser, key, clock, lookup miss and insert of the initialised value, as flowlog) \
             on a per-CPU hash map preallocated or with `BPF_F_NO_PREALLOC`, and on a shared \
             (not per-CPU) hash map whose counters are added atomically, each map pre-filled like \
             FLOWS_A. *First / hit* compares flowlog's first packet, its single-run timer overhead \
             replaced by the repeated runs' (first - no-op single + no-op repeated), with its hit \
             path at the same fill (1.1, median over frames).\n"
        );
    } else {
        let _ = writeln!(s);
    }
    let labels: Vec<String> = d
        .new_flow
        .iter()
        .flat_map(|n| n.floors.iter().map(|(l, _)| l.clone()))
        .fold(Vec::new(), |mut v, l| {
            if !v.contains(&l) {
                v.push(l);
            }
            v
        });
    let _ = write!(s, "| flows in map | new flows | flowlog, ns | no-op, ns |");
    for l in &labels {
        let _ = write!(s, " {l}, ns |");
    }
    let _ = write!(s, " flowlog - no-op, ns |");
    if floors {
        let _ = write!(s, " flowlog / insert | first / hit |");
    }
    let cols = 5 + labels.len() + if floors { 2 } else { 0 };
    let _ = writeln!(s, "\n|{}", "---|".repeat(cols));
    for n in &d.new_flow {
        let _ = write!(
            s,
            "| {} | {} | {} | {} |",
            fill_label(n.fill),
            n.flows,
            f(n.flowlog_median_ns, 0),
            f(n.noop_median_ns, 0)
        );
        for l in &labels {
            let _ = write!(s, " {} |", f(n.floor(l), 0));
        }
        let _ = write!(s, " {} |", f(n.flowlog_median_ns - n.noop_median_ns, 0));
        if floors {
            let hit = d.median_over_frames(n.fill, FLOWLOG);
            let first =
                n.flowlog_median_ns - n.noop_median_ns + d.median_over_frames(n.fill, "no-op");
            let _ = write!(
                s,
                " {} | {} |",
                f(ratio(n.flowlog_median_ns, n.floor("insert")), 2),
                f(ratio(first, hit), 2)
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s);
    if floors {
        map_kind_verdict(s, d, fill_label);
    }
}

/// Which flow map kind the first packet favours at the largest fill, and why flowlog keeps
/// per-CPU preallocated maps.
fn map_kind_verdict(s: &mut String, d: &Datapath, fill_label: &dyn Fn(u32) -> String) {
    let Some(n) = d.new_flow.iter().max_by_key(|n| n.fill) else {
        return;
    };
    let fill = n.fill;
    let (pcpu, pcpu_np, shared, shared_np) = (
        n.floor("update"),
        n.floor("update, no prealloc"),
        n.floor("update shared"),
        n.floor("update shared, no prealloc"),
    );
    let _ = writeln!(
        s,
        "Flow map kinds at {} flows, first packet (single runs, ns): per-CPU preallocated {}, per-CPU \
         without preallocation {} ({}x), shared preallocated {} ({}x), shared without preallocation {} \
         ({}x); hit path (1.1, median over frames): per-CPU {} ns, shared with atomic adds {} ns. \
         flowlog keeps **per-CPU, preallocated** maps. A per-CPU map without preallocation allocates \
         each new flow's per-CPU values from the kernel's BPF memory allocator, whose per-CPU caches \
         are refilled asynchronously (irq_work): slower, and a burst of new flows can get ENOMEM while \
         the map still has room (the pre-fill of this benchmark has to retry for that), which would \
         turn those packets into SKIPDATA. A shared map is exact only with atomic read-modify-writes \
         on every field: atomic adds for packets and bytes (measured here), an atomic OR for the TCP \
         flags and min/max for first/last seen (BPF_ATOMIC fetch-or needs BPF CPU v3 and Linux >= 5.12; \
         min/max need a compare-and-swap loop), and under traffic from several CPUs each flow's \
         counters move between their caches, which one-CPU test runs cannot show. Per-CPU values are \
         exact without atomics; their cost grows with the number of possible CPUs only on the first \
         packet (the kernel zeroes the other CPUs' values) and in the drain.\n",
        fill_label(fill),
        f(pcpu, 0),
        f(pcpu_np, 0),
        f(ratio(pcpu_np, pcpu), 2),
        f(shared, 0),
        f(ratio(shared, pcpu), 2),
        f(shared_np, 0),
        f(ratio(shared_np, pcpu), 2),
        f(d.median_over_frames(fill, "update"), 0),
        f(d.median_over_frames(fill, "update shared"), 0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{Cell, NewFlow};

    fn datapath() -> Datapath {
        let frames = vec!["IPv4 UDP".to_owned(), "IPv6 UDP".to_owned()];
        // IPv6 frames 10 ns slower in the key build and in flowlog.
        let programs = [
            ("no-op", 30.0, 0.0),
            ("counter", 32.0, 0.0),
            ("hash", 80.0, 0.0),
            ("parse", 38.0, 0.0),
            ("window", 33.0, 0.0),
            ("clock", 40.0, 0.0),
            ("key", 45.0, 10.0),
            ("update", 100.0, 10.0),
            (FLOWLOG, 120.0, 10.0),
        ];
        let mut cells = Vec::new();
        for fr in &frames {
            for (p, ns, v6) in programs {
                let ns = if fr.starts_with("IPv6") { ns + v6 } else { ns };
                cells.push(Cell {
                    fill: 1000,
                    frame: fr.clone(),
                    program: p.to_owned(),
                    median_ns: ns,
                    samples_ns: vec![ns],
                });
            }
        }
        Datapath {
            repeat: 10,
            runs: 1,
            fills: vec![1000],
            frames,
            programs: programs.iter().map(|(p, _, _)| (*p).to_owned()).collect(),
            cells,
            new_flow: vec![NewFlow {
                fill: 1000,
                flows: 10,
                flowlog_median_ns: 400.0,
                noop_median_ns: 70.0,
                floors: vec![("insert".to_owned(), 250.0)],
            }],
            counted_packets: 0,
            fed_packets: 0,
        }
    }

    #[test]
    fn parts_are_floor_differences_that_add_up_to_flowlog() {
        let d = datapath();
        let p = parts(&d, 1000, &["IPv4 UDP"]);
        let ns: Vec<f64> = p.iter().map(|p| p.ns).collect();
        // no-op 30; parse 38 - 32 = 6; key 45 - 38 = 7; clock 40 - 32 = 8; lookup and update
        // 100 - 45 - 8 + 2 = 49; window 33 - 32 = 1; rest 120 - 100 - 1 = 19; flowlog 120.
        assert_eq!(ns, [30.0, 6.0, 7.0, 8.0, 49.0, 1.0, 19.0, 120.0]);
        assert_eq!(ns[..7].iter().sum::<f64>(), ns[7]);
        let mut md = String::new();
        parts_section(&mut md, &d, 1000, "1k");
        assert!(
            md.contains("| building the flow key from the parsed headers | key - parse | 12.0 | 7.0 | 17.0 |"),
            "{md}"
        );
    }

    #[test]
    fn first_packet_is_compared_with_the_insert_floor_and_the_hit_path() {
        let d = datapath();
        let mut md = String::new();
        first_packet_section(&mut md, &d, &|n| n.to_string());
        // 400 / 250 = 1.60; first 400 - 70 + 30 = 360 against a hit path of 125 (median of
        // 120 and 130): 2.88.
        assert!(
            md.contains("| 1000 | 10 | 400 | 70 | 250 | 330 | 1.60 | 2.88 |"),
            "{md}"
        );
    }

    #[test]
    fn targets_compare_each_family_with_the_hash_floor() {
        let d = datapath();
        let mut md = String::new();
        targets_section(&mut md, &d, 1000, "1k");
        // IPv4 120 / 80 = 1.50x; IPv6 130 / 80 = 1.62x.
        assert!(
            md.contains("| hit path, IPv4: at most 1.00x the `hash` floor | 1.50x (flowlog 120.0 ns, hash 80.0 ns) | **missed** |"),
            "{md}"
        );
        assert!(
            md.contains("| hit path, IPv6: at most 1.15x the `hash` floor | 1.62x (flowlog 130.0 ns, hash 80.0 ns) | **missed** |"),
            "{md}"
        );
        // First packet 400 - 70 + 30 = 360 ns against the IPv4 UDP hit path of 120: 3.00x;
        // 400 / 250 = 1.60x the insert floor: both missed.
        assert!(md.contains("3.00x the IPv4 UDP hit path (360 ns,"), "{md}");
        assert!(
            md.contains(
                "1.60x the insert floor (400 ns against 250 ns, single runs) | **missed** |"
            ),
            "{md}"
        );
    }

    #[test]
    fn results_without_part_floors_have_no_part_table() {
        let mut d = datapath();
        d.programs.retain(|p| p != "window");
        let mut md = String::new();
        parts_section(&mut md, &d, 1000, "1k");
        assert!(md.is_empty());
    }
}
