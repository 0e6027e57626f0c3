//! Churn: a new flow per packet, end to end. A generator thread in namespace A sends crafted
//! IPv4/UDP frames out of A's veth (AF_PACKET, through its TC egress hook and every packet tap
//! on it), each with its own 5-tuple (source and destination port vary), at a fixed offered
//! rate paced by absolute deadlines.
//! The frames are addressed to a MAC that B's veth does not own, so B drops them on arrival
//! without a reply: A's veth carries only them, one way.
//!
//! The variants of [`crate::e2e`] run interleaved on this traffic, repetition by repetition,
//! measured the same way ([`e2e::measure`]), so the collector CPU of 2. applies unchanged.
//! Every run also says how many flows the collector reported; flowlog's records must hold
//! every flow and every packet sent, exactly (the run fails otherwise).
//!
//! One more flowlog run with `--max-flows` well below the flows offered checks the SKIPDATA
//! accounting: the packets of the OK records plus the packets the agent counted as overflow
//! (its `flowlog_overflow_packets_total`; a SKIPDATA record says *that* packets overflowed,
//! not how many) must equal the packets sent, exactly, and no window may hold more flows
//! than the map does.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::e2e::{self, BpfView, FLOWLOG_OUT, Run, TempDir, Traffic, Variant, Workload};
use crate::frames;
use crate::netns::{self, IF_A, IF_B, NS_A, NS_B, Topology};
use crate::rawsend::RawSender;
use crate::records::{self, V2};

/// Offered rate: well within what one core sends through a veth with any of the collectors
/// attached, so every variant is offered the same traffic and the comparison is of cost.
const RATE_PPS: u64 = 50_000;
/// Flows per destination port: flow i goes from source port [`FIRST_SRC_PORT`] + i % this to
/// destination port [`FIRST_DST_PORT`] + i / this. The ports, not the source address, vary:
/// an egress record's `srcaddr` is the interface's address (as in AWS), not the packet's.
const SRC_PORTS: u64 = 50_000;
const FIRST_SRC_PORT: u16 = 10_000;
const FIRST_DST_PORT: u16 = 1_000;
const SRC: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
/// Where every flow goes (no host has it: B drops the frames anyway, see the module doc).
const DST: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
/// UDP payload: a 60-byte frame, the Ethernet minimum without its FCS.
const PAYLOAD: usize = 18;
/// flowlog's `--max-flows` for the SKIPDATA run, and for the others a capacity above the
/// flows offered (so nothing overflows there).
const SKIP_MAX_FLOWS: u32 = 16_384;
/// The aggregation interval of the agent's default (a SKIPDATA bound is per window).
const WINDOW_SECS: u64 = 60;

pub struct Config {
    pub secs: u32,
    pub reps: usize,
}

impl Config {
    pub fn new(quick: bool) -> Self {
        if quick {
            Config { secs: 2, reps: 1 }
        } else {
            Config { secs: 5, reps: 3 }
        }
    }

    /// Frames (each a new flow) per run.
    fn flows(&self) -> u64 {
        RATE_PPS * u64::from(self.secs)
    }
}

/// The settings of the churn runs and their SKIPDATA check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Churn {
    pub secs: u32,
    pub reps: usize,
    pub rate_pps: u64,
    /// Ethernet frame length, bytes.
    pub frame_bytes: u64,
    /// flowlog's `--max-flows` in the interleaved runs (above the flows offered).
    pub max_flows: u32,
    pub skipdata: SkipCheck,
}

/// The SKIPDATA run: flowlog with `--max-flows` below the flows offered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkipCheck {
    pub max_flows: u32,
    /// Frames the generator sent (each its own flow), and what A's veth says it sent.
    pub packets_sent: u64,
    pub wire_packets: u64,
    /// Packets and distinct flows of the OK records of the generated flows.
    pub ok_packets: u64,
    pub ok_flows: u64,
    /// `flowlog_overflow_packets_total` of A's veth at the agent's exit.
    pub overflow_packets: u64,
    pub skipdata_records: u64,
    /// Aggregation windows the traffic spanned: each holds at most `max_flows` flows.
    pub windows: u64,
}

impl SkipCheck {
    /// The accounting is exact: every packet sent is in an OK record or in the overflow
    /// counter, no window holds more flows than the map, and the overflow was reported.
    pub fn exact(&self) -> bool {
        self.ok_packets + self.overflow_packets == self.packets_sent
            && self.ok_flows <= u64::from(self.max_flows) * self.windows
            && self.skipdata_records >= 1
    }
}

/// The churn runs (workload [`Workload::Churn`]), flowlog's BPF view of the same traffic, and
/// the settings with the SKIPDATA check.
pub struct Outcome {
    pub runs: Vec<Run>,
    pub bpf: BpfView,
    pub churn: Churn,
}

pub fn run(topo: &Topology, agent: &Path, tmp: &TempDir, cfg: &Config) -> anyhow::Result<Outcome> {
    let flows = cfg.flows();
    // Room for every flow of a run in one window's map.
    let max_flows = u32::try_from(flows.next_power_of_two()).context("too many flows")?;
    let flowlog_args = |max: u32| vec!["--max-flows".to_owned(), max.to_string()];
    let mut runs = Vec::new();
    for rep in 0..cfg.reps {
        for variant in Variant::ALL {
            let collector = match variant {
                Variant::Baseline => None,
                v => Some(e2e::start_collector(
                    v,
                    agent,
                    tmp,
                    &flowlog_args(max_flows),
                )?),
            };
            let mut sent = None;
            let mut r = e2e::measure(
                topo,
                collector,
                tmp,
                variant,
                Workload::Churn,
                rep,
                &mut || {
                    let (traffic, s) = offer(flows)?;
                    sent = Some(s);
                    Ok(traffic)
                },
            )
            .with_context(|| format!("churn under {} (repetition {})", variant.label(), rep + 1))?;
            if variant == Variant::Flowlog {
                let sent = sent.context("the generator did not run")?;
                let got = generated_in_records(&tmp.path(FLOWLOG_OUT))?;
                if (got.flows, got.packets) != (flows, sent.frames) {
                    bail!(
                        "churn: flowlog's records hold {} of the {flows} flows sent and {} of the {} packets \
                         (--max-flows {max_flows}: none may be missing)",
                        got.flows,
                        got.packets,
                        sent.frames
                    );
                }
                // The generated flows, as for the check: the records also hold the few other
                // packets of the veth (IPv6 neighbour discovery), which the peers' counts include.
                r.flows_captured = Some(got.flows);
            }
            eprintln!(
                "  rep {} {:<34} {:<20} {:>7.3} Mpkt/s delivered  collector {:.2} s  flows {} of {}",
                rep + 1,
                Workload::Churn.label(),
                variant.label(),
                r.receiver_bps / 8.0 / frame_len() as f64 / 1e6,
                r.cpu_collector,
                r.flows_captured.map_or("-".to_owned(), |f| f.to_string()),
                flows
            );
            runs.push(r);
        }
    }
    let flowlog = e2e::start_collector(Variant::Flowlog, agent, tmp, &flowlog_args(max_flows))?;
    let bpf = e2e::bpf_view_of(topo, flowlog, Workload::Churn, &mut || Ok(offer(flows)?.0))
        .context("BPF run-time view of the churn workload")?;
    eprintln!(
        "  bpf_stats {:<34} {:.1} ns per program run, {} runs",
        Workload::Churn.label(),
        bpf.ns_per_run(),
        bpf.run_cnt
    );
    let skipdata = skipdata_check(agent, tmp, flows).context("churn: the SKIPDATA run")?;
    eprintln!(
        "  skipdata --max-flows {}: {} OK packets ({} flows) + {} overflow = {} of {} sent ({} on the wire), {} SKIPDATA record(s), {} window(s)",
        skipdata.max_flows,
        skipdata.ok_packets,
        skipdata.ok_flows,
        skipdata.overflow_packets,
        skipdata.ok_packets + skipdata.overflow_packets,
        skipdata.packets_sent,
        skipdata.wire_packets,
        skipdata.skipdata_records,
        skipdata.windows
    );
    if !skipdata.exact() {
        bail!("churn: the SKIPDATA accounting is not exact: {skipdata:?}");
    }
    Ok(Outcome {
        runs,
        bpf,
        churn: Churn {
            secs: cfg.secs,
            reps: cfg.reps,
            rate_pps: RATE_PPS,
            frame_bytes: frame_len() as u64,
            max_flows,
            skipdata,
        },
    })
}

/// flowlog with `--max-flows` [`SKIP_MAX_FLOWS`] under `flows` new flows.
fn skipdata_check(agent: &Path, tmp: &TempDir, flows: u64) -> anyhow::Result<SkipCheck> {
    let metrics = tmp.path("churn-metrics.prom");
    let _ = std::fs::remove_file(&metrics);
    let args = [
        "--max-flows".to_owned(),
        SKIP_MAX_FLOWS.to_string(),
        "--metrics-file".to_owned(),
        metrics.display().to_string(),
    ];
    let flowlog = e2e::start_collector(Variant::Flowlog, agent, tmp, &args)?;
    let a0 = netns::counters(NS_A, IF_A)?;
    let w0 = unix_secs();
    let (_, sent) = offer(flows)?;
    let w1 = unix_secs();
    let a1 = netns::counters(NS_A, IF_A)?;
    flowlog.stop()?;
    let got = generated_in_records(&tmp.path(FLOWLOG_OUT))?;
    let text = std::fs::read_to_string(&metrics)
        .with_context(|| format!("flowlog wrote no metrics file {}", metrics.display()))?;
    Ok(SkipCheck {
        max_flows: SKIP_MAX_FLOWS,
        packets_sent: sent.frames,
        wire_packets: a1.tx_packets - a0.tx_packets,
        ok_packets: got.packets,
        ok_flows: got.flows,
        overflow_packets: metric_sum(&text, "flowlog_overflow_packets_total", IF_A)
            .context("reading flowlog's overflow counter")?,
        skipdata_records: got.skipdata_records,
        windows: w1 / WINDOW_SECS - w0 / WINDOW_SECS + 1,
    })
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sum of a Prometheus counter over the series labelled `interface="<iface>"`; an error if
/// there is none.
fn metric_sum(text: &str, name: &str, iface: &str) -> anyhow::Result<u64> {
    let label = format!("interface=\"{iface}\"");
    let values: Vec<u64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name && series.contains(&label)).then(|| value.parse::<f64>().ok())?
        })
        .map(|v| v as u64)
        .collect();
    if values.is_empty() {
        bail!("no {name}{{{label}}} in the metrics file:\n{text}");
    }
    Ok(values.iter().sum())
}

/// What flowlog's records say of the generated flows (those to [`DST`]).
struct InRecords {
    flows: u64,
    packets: u64,
    skipdata_records: u64,
}

fn generated_in_records(dir: &Path) -> anyhow::Result<InRecords> {
    let lines = records::lines(dir)?;
    let parsed: Vec<V2> = lines.iter().filter_map(|l| V2::parse(l)).collect();
    let dst = DST.to_string();
    let ours: Vec<&V2> = parsed
        .iter()
        .filter(|r| r.log_status == "OK" && r.tuple[1] == dst)
        .collect();
    let flows: HashSet<[&str; 5]> = ours.iter().map(|r| r.tuple).collect();
    Ok(InRecords {
        flows: flows.len() as u64,
        packets: ours.iter().filter_map(|r| r.packets).sum(),
        skipdata_records: parsed.iter().filter(|r| r.log_status == "SKIPDATA").count() as u64,
    })
}

/// The generator's account of one run.
#[derive(Debug, Clone, Copy)]
struct Sent {
    frames: u64,
    seconds: f64,
    /// CPU seconds of the sending thread (its softirq work included: the veth, B's receive
    /// path and the TC programs run in it).
    cpu: f64,
}

/// Offers `flows` frames (each a new flow) at [`RATE_PPS`], with B's veth counters around
/// it: the run's [`Traffic`] (received: what B's veth got) and the generator's account.
fn offer(flows: u64) -> anyhow::Result<(Traffic, Sent)> {
    let b0 = netns::counters(NS_B, IF_B)?;
    let sent = std::thread::scope(|s| {
        s.spawn(|| generate(flows))
            .join()
            .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    })?;
    let b1 = netns::counters(NS_B, IF_B)?;
    let bits_per_frame = 8.0 * frame_len() as f64;
    Ok((
        Traffic {
            sender_bps: sent.frames as f64 * bits_per_frame / sent.seconds,
            receiver_bps: (b1.rx_bytes - b0.rx_bytes) as f64 * 8.0 / sent.seconds,
            cpu_client: sent.cpu,
            // Nothing receives: B's stack drops the frames in the sender's softirq.
            cpu_server: 0.0,
            flows_sent: Some(flows),
        },
        sent,
    ))
}

/// Flow `i`'s frame.
fn frame(i: u64) -> Vec<u8> {
    let src_port = FIRST_SRC_PORT + (i % SRC_PORTS) as u16;
    let dst_port = FIRST_DST_PORT + (i / SRC_PORTS) as u16;
    frames::ipv4(SRC, DST)
        .udp(src_port, dst_port)
        .payload(PAYLOAD)
        .build()
        .bytes
}

fn frame_len() -> usize {
    frame(0).len()
}

/// Sends flows 0..`flows` out of A's veth, frame `i` not before `i / RATE_PPS` seconds after
/// the start: each frame has an absolute deadline, so a late wake-up is caught up by the next
/// frames and the average rate holds. Runs on its own thread, which enters namespace A.
fn generate(flows: u64) -> anyhow::Result<Sent> {
    netns::enter(NS_A)?;
    let sender = RawSender::open(IF_A)?;
    let cpu0 = thread_cpu_secs()?;
    let start = Instant::now();
    for i in 0..flows {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / RATE_PPS);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        sender.send(&frame(i))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Sent {
        frames: flows,
        seconds,
        cpu: thread_cpu_secs()? - cpu0,
    })
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_secs() -> anyhow::Result<f64> {
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to our own rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        bail!(
            "getrusage(RUSAGE_THREAD): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(crate::cpu::rusage_secs(&ru))
}

/// The churn part alone, in its own namespaces: for the hidden `flowlog-bench churn`.
pub fn run_alone(agent: &Path, cfg: &Config) -> anyhow::Result<(Vec<Run>, BpfView, Churn)> {
    let tmp = TempDir::new()?;
    let topo = Topology::create().context("creating the benchmark namespaces")?;
    let o = run(&topo, agent, &tmp, cfg)?;
    Ok((o.runs, o.bpf, o.churn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flow_has_its_own_tuple() {
        let n = 3 * SRC_PORTS;
        let tuples: HashSet<Vec<u8>> = (0..n).map(|i| frame(i)[26..38].to_vec()).collect();
        assert_eq!(tuples.len() as u64, n);
        assert_eq!(frame_len(), 60);
    }

    #[test]
    fn skipdata_accounting_must_add_up() {
        let ok = SkipCheck {
            max_flows: 10,
            packets_sent: 100,
            wire_packets: 100,
            ok_packets: 10,
            ok_flows: 10,
            overflow_packets: 90,
            skipdata_records: 1,
            windows: 1,
        };
        assert!(ok.exact());
        assert!(
            !SkipCheck {
                overflow_packets: 89,
                ..ok.clone()
            }
            .exact()
        );
        assert!(
            !SkipCheck {
                ok_flows: 11,
                ..ok.clone()
            }
            .exact()
        );
        assert!(
            !SkipCheck {
                skipdata_records: 0,
                ..ok
            }
            .exact()
        );
    }
}
