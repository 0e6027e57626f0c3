//! `cargo xtask bench`: what capture costs, against the physical floor and against peers.
//!
//! Sections, each its own module:
//! - [`datapath`]: `BPF_PROG_TEST_RUN` of the real TC program against reference programs
//!   (no-op, minimal per-CPU counter, ...) on crafted frames, flow map pre-filled;
//! - [`e2e`]: iperf3 between two network namespaces, with flowlog, softflowd or pmacctd
//!   capturing the same veth, interleaved; throughput and CPU; plus the kernel's own
//!   `run_time_ns/run_cnt` of the programs under that traffic;
//! - [`drain`]: flip, drain, format and gzip windows of 10k..4M flows, streamed as the agent
//!   does and collected first (each step alone), each in a child process for its peak RSS;
//! - [`attach`]: how long after an interface is created its first packet is counted.
//!
//! [`report`] turns the results into BENCHMARKS.md and [`svg`] plots ([`scaling`]: the
//! streamed drain's targets and the scaling plots). Nothing here asserts a
//! timing: a benchmark reports, the targets are compared in the report. What it does check
//! exactly is that the programs counted what they were fed and that drains return every flow.

mod attach;
mod churn;
mod cpu;
mod datapath;
mod drain;
mod e2e;
// The crafted-frame builder of the tests crate (std only, made to be included like this), so
// the benchmark feeds the programs the same frames the datapath tests do. Skipped by rustfmt:
// that file belongs to the tests crate.
#[path = "../../tests/src/frames.rs"]
#[allow(dead_code)]
#[rustfmt::skip]
mod frames;
mod machine;
mod netns;
mod rawsend;
mod records;
mod report;
mod report_churn;
mod report_datapath;
mod scaling;
mod stats;
mod svg;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// Environment variables `cargo xtask bench` sets.
pub const OBJECT_ENV: &str = "FLOWLOG_EBPF_OBJECT";
pub const FLOOR_ENV: &str = "FLOWLOG_FLOOR_OBJECT";
pub const BIN_ENV: &str = "FLOWLOG_BIN";

#[derive(Parser)]
#[command(
    name = "flowlog-bench",
    about = "flowlog benchmarks: datapath (test_run), end to end with peers, drain",
    long_about = "flowlog benchmarks. Run through `cargo xtask bench [--quick]`, which builds \
        the eBPF objects and the agent and passes them in FLOWLOG_EBPF_OBJECT, \
        FLOWLOG_FLOOR_OBJECT and FLOWLOG_BIN. Needs root (BPF, network namespaces)."
)]
struct Cli {
    /// Reduced set (smoke run, well under two minutes): fewer repetitions, shorter runs, no
    /// 1M-flow cases.
    #[arg(long)]
    quick: bool,
    /// Directory for BENCHMARKS.md, the SVG plots and results.json.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Rewrite BENCHMARKS.md and the SVG plots from a results.json (no measuring): for a
    /// changed report layout, the numbers of the run that wrote the file.
    Report {
        /// results.json of a run; the report is written next to it.
        #[arg(value_name = "RESULTS_JSON")]
        results: PathBuf,
    },
    /// Internal: one drain measurement in a fresh process (for its peak RSS).
    #[command(hide = true)]
    DrainChild {
        #[arg(long)]
        flows: u32,
        /// Only the streamed cut (and the gzip levels of its objects), for work on the drain.
        #[arg(long)]
        streamed_only: bool,
    },
    /// The datapath section alone, at the given fills (for work on the programs): prints its
    /// tables and writes datapath.json into --out (default: the current directory).
    #[command(hide = true)]
    Datapath {
        /// Flows pre-filled, comma-separated (default: the quick or full run's).
        #[arg(long, value_delimiter = ',')]
        fills: Vec<u32>,
    },
    /// Internal: only the attach-latency measurement, printed as JSON (for iterating on it).
    #[command(hide = true)]
    Attach {
        /// veths created one after another (default: the quick or full run's).
        #[arg(long)]
        interfaces: Option<usize>,
    },
    /// Internal: only the churn workload (a new flow per packet, every variant, and the
    /// SKIPDATA check), printed as JSON; fails if flowlog's accounting is not exact.
    #[command(hide = true)]
    Churn,
}

/// Everything one run measured; written as results.json and rendered as BENCHMARKS.md.
#[derive(Serialize, Deserialize)]
pub struct Results {
    pub quick: bool,
    pub machine: machine::Machine,
    pub datapath: datapath::Datapath,
    pub e2e: e2e::EndToEnd,
    pub drain: Vec<drain::DrainResult>,
    /// Absent in results.json files written before it was measured.
    #[serde(default)]
    pub attach: Option<attach::AttachLatency>,
    pub wall_seconds: f64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::DrainChild {
            flows,
            streamed_only,
        }) => drain::child(flows, streamed_only),
        Some(Command::Report { results }) => rewrite_report(&results),
        Some(Command::Datapath { fills }) => datapath_only(cli.quick, fills, cli.out),
        Some(Command::Attach { interfaces }) => attach_only(cli.quick, interfaces),
        Some(Command::Churn) => churn_only(cli.quick),
        None => run(cli.quick, cli.out),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlog-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn attach_only(quick: bool, interfaces: Option<usize>) -> anyhow::Result<()> {
    let mut cfg = attach::Config::new(quick);
    if let Some(n) = interfaces {
        cfg.interfaces = n;
    }
    let result = attach::run(&agent_binary()?, &cfg)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

fn churn_only(quick: bool) -> anyhow::Result<()> {
    let (runs, bpf, churn) = churn::run_alone(&agent_binary()?, &churn::Config::new(quick))?;
    let json = serde_json::json!({ "runs": runs, "bpf": bpf, "churn": churn });
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

fn run(quick: bool, out: Option<PathBuf>) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the benchmarks load BPF programs and create network namespaces: run as root (`cargo xtask bench`)"
        );
    }
    let started = Instant::now();
    let out = out.unwrap_or_else(|| workspace_root().join("docs").join("bench"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let object = read_env_file(OBJECT_ENV)?;
    let floor = read_env_file(FLOOR_ENV)?;
    let agent = agent_binary()?;
    let mode = if quick { "quick" } else { "full" };
    eprintln!("flowlog-bench: {mode} run; output in {}", out.display());

    let machine = machine::Machine::describe();
    eprintln!("flowlog-bench: datapath (BPF_PROG_TEST_RUN)");
    let datapath = datapath::run(&object, &floor, &datapath::Config::new(quick))?;
    eprintln!(
        "flowlog-bench: end to end (iperf3 over veth, then churn; flowlog, softflowd, pmacctd)"
    );
    let e2e = e2e::run(&agent, &e2e::Config::new(quick))?;
    eprintln!("flowlog-bench: drain");
    let drain = drain::run(&drain::sizes(quick))?;
    eprintln!("flowlog-bench: attach latency (interface created -> first packet counted)");
    let attach = attach::run(&agent, &attach::Config::new(quick))?;

    let mut machine = machine;
    machine.finish();
    let results = Results {
        quick,
        machine,
        datapath,
        e2e,
        drain,
        attach: Some(attach),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&results)?;
    write(&out.join("results.json"), &json)?;
    write_report(&results, &out)?;
    eprintln!(
        "flowlog-bench: done in {:.0} s: {}",
        results.wall_seconds,
        out.join("BENCHMARKS.md").display()
    );
    Ok(())
}

fn datapath_only(quick: bool, fills: Vec<u32>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let object = read_env_file(OBJECT_ENV)?;
    let floor = read_env_file(FLOOR_ENV)?;
    let mut cfg = datapath::Config::new(quick);
    if !fills.is_empty() {
        cfg.fills = fills;
    }
    let d = datapath::run(&object, &floor, &cfg)?;
    let out = out.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    write(
        &out.join("datapath.json"),
        &serde_json::to_string_pretty(&d)?,
    )?;
    print!("{}", report::datapath_tables(&d));
    Ok(())
}

/// BENCHMARKS.md and the SVG plots of `results` into `out`.
fn write_report(results: &Results, out: &Path) -> anyhow::Result<()> {
    for (name, body) in report::plots(results) {
        write(&out.join(name), &body)?;
    }
    write(&out.join("BENCHMARKS.md"), &report::markdown(results))
}

fn rewrite_report(results_json: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(results_json)
        .with_context(|| format!("cannot read {}", results_json.display()))?;
    let results: Results = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a results.json this version can read: run `cargo xtask bench` again",
            results_json.display()
        )
    })?;
    let out = results_json.parent().unwrap_or(Path::new("."));
    write_report(&results, out)?;
    eprintln!(
        "flowlog-bench: rewrote {}",
        out.join("BENCHMARKS.md").display()
    );
    Ok(())
}

fn write(path: &Path, body: &str) -> anyhow::Result<()> {
    std::fs::write(path, body).with_context(|| format!("cannot write {}", path.display()))
}

pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// Bytes of the file an environment variable names.
pub fn read_env_file(var: &str) -> anyhow::Result<Vec<u8>> {
    let Some(path) = std::env::var_os(var) else {
        bail!(
            "{var} is not set: run the benchmarks through `cargo xtask bench`, which builds the eBPF objects and sets it"
        );
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read {var}={}", Path::new(&path).display()))?;
    if bytes.is_empty() {
        bail!(
            "{var}={} is empty: rebuild with `cargo xtask bench`",
            Path::new(&path).display()
        );
    }
    Ok(bytes)
}

/// The agent binary: `FLOWLOG_BIN`, else target/release/flowlog.
fn agent_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root()
                .join("target")
                .join("release")
                .join("flowlog")
        });
    if !path.is_file() {
        bail!(
            "flowlog agent binary {} not found: set {BIN_ENV} or run `cargo xtask bench`",
            path.display()
        );
    }
    Ok(path)
}
