//! flowlog's task runner: `cargo xtask <command>` (alias in .cargo/config.toml).
//!
//! The eBPF crate needs a special toolchain (shared/docs/toolchain.md); these commands
//! install it, build the eBPF object and the agent embedding it, and run the tests.

mod bench;
mod build_cmd;
mod clippy;
mod deb;
mod ebpf;
mod fuzz;
mod guest_kernel;
mod image;
mod podman;
mod run;
mod setup;
mod soak;
mod test;
mod util;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use build_cmd::Profile;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "flowlog developer and CI tasks",
    long_about = "flowlog developer and CI tasks.\n\n\
        build, run, test and bench run `setup` first when something it installs is missing \
        (set FLOWLOG_SKIP_SETUP=1 to skip that check). run, test and bench need root and \
        re-run themselves through `sudo -E` when started as another user.",
    after_help = "Environment: FLOWLOG_EBPF_ROUTE=debian|nightly forces how the eBPF object \
        is built (default: rustup nightly + build-std when it has rust-src and bpf-linker's LLVM \
        is new enough, else Debian's /usr/bin/rustc)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent)
    ///
    /// Steps: Debian packages (rustc-web, libstd-rust-web-dev-bpf, llvm-22-dev,
    /// libpolly-22-dev, zlib1g-dev, libzstd-dev, iproute2, iputils-ping, iperf3, softflowd,
    /// pmacct, nftables, tcpdump, ethtool, tmux, python3-venv, python3-pip, podman, runc, systemd,
    /// man-db, binutils, ca-certificates; apt-get needs root), bpf-linker 0.13
    /// built against LLVM 22 and cargo-deb (cargo install), a .venv in the workspace with moto[server] and duckdb, and bpffs at /sys/fs/bpf
    /// and tracefs at /sys/kernel/tracing. Prints each step and whether it was already there.
    Setup,
    /// Build the eBPF object and the agent embedding it; print the binary's path
    ///
    /// The eBPF object is target/bpfel-unknown-none/release/flowlog-ebpf; the agent
    /// (target/release/flowlog, or target/debug/flowlog with --debug) is built with
    /// FLOWLOG_EBPF_OBJECT pointing at it.
    Build {
        /// Build the agent with the dev profile (the eBPF object is always optimised).
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run target/release/flowlog as root with ARGS (default: `run`)
    ///
    /// Uses `sudo -E` when not root. flowlog replaces the xtask process, so Ctrl-C reaches it
    /// and its exit code is returned.
    ///
    /// Example: cargo xtask run -- run --help
    Run {
        /// Arguments for flowlog (after `--`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Run the test suite as root against the real eBPF object
    ///
    /// Builds the eBPF object and target/debug/flowlog, then runs
    /// `cargo test --workspace --exclude flowlog-ebpf [CARGO_TEST_ARGS]` with
    /// FLOWLOG_EBPF_OBJECT, FLOWLOG_BIN, FLOWLOG_MOTO_SERVER and FLOWLOG_XTASK set. Re-runs itself through
    /// `sudo -E` when not root. Exits with cargo test's exit code.
    ///
    /// Example: cargo xtask test -- -p flowlog-tests flow_ -- --nocapture
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO_TEST_ARGS"
        )]
        extra: Vec<OsString>,
    },
    /// Build, then run the flowlog-bench package (release) as root
    ///
    /// Builds the eBPF object, the reference programs (flowlog-floor) and target/release/flowlog,
    /// then runs `cargo run --release -p flowlog-bench -- [--quick] [--out DIR]` with
    /// FLOWLOG_EBPF_OBJECT, FLOWLOG_FLOOR_OBJECT, FLOWLOG_BIN and FLOWLOG_MOTO_SERVER set. Writes
    /// BENCHMARKS.md, SVG plots and results.json (default: docs/bench/).
    Bench {
        /// Short smoke run (under two minutes) instead of the full benchmark.
        #[arg(long)]
        quick: bool,
        /// Directory for the report (default: docs/bench/ in the workspace).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Soak the release agent: flow churn, interface churn and a flapping S3 destination
    ///
    /// Builds target/release/flowlog, then runs the flowlog-soak harness (tests crate) for
    /// MINUTES: >= 20k new flows/s, steady traffic, a veth pair created and deleted every 4 s,
    /// S3 faults through the fault proxy in front of moto. Writes SOAK.md (RSS and fd slopes,
    /// window lateness, records in against delivered) and SVG plots; fails on unexplained loss.
    Soak {
        /// How long the load runs (the quick form is 5).
        #[arg(long, value_name = "N", default_value_t = 5)]
        minutes: u64,
        /// Directory for the report (default: docs/bench/ in the workspace).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Build flowlog_<version>_<arch>.deb with cargo-deb; print its path
    ///
    /// Holds /usr/bin/flowlog, the systemd unit (enabled on install) and its system user, the
    /// default /etc/flowlog/flow-logs.json and /etc/default/flowlog, manual pages and bash, zsh
    /// and fish completions. Install with `dpkg -i`.
    Deb {
        /// Package this already-built flowlog instead of building target/release/flowlog.
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
        /// Directory for the package (default: target/debian/).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Lighter compression: a larger package, built faster.
        #[arg(long)]
        fast: bool,
    },
    /// Build the OCI image (podman, from scratch) that deploy/kubernetes/daemonset.yaml runs
    ///
    /// The image holds /usr/bin/flowlog, the shared libraries it links (per ldd) and the CA
    /// certificates; its entrypoint is flowlog. Prints the tag. Needs root (rootful podman, the
    /// storage the DaemonSet test runs from).
    Image {
        /// Put this already-built flowlog in the image instead of building target/release/flowlog.
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
        /// Image name and tag (default: localhost/flowlog:<version>).
        #[arg(long, value_name = "NAME:TAG")]
        tag: Option<String>,
    },
    /// Fuzz the packet parser for longer: random and mutated frames through the loaded TC
    /// programs, each checked against etherparse
    ///
    /// Runs tests/tests/parser_fuzz.rs (which `cargo xtask test` runs with 100000 frames and a
    /// fixed seed) with FLOWLOG_FUZZ_FRAMES and FLOWLOG_FUZZ_SEED, as root. A failure prints
    /// the frames that differ and the seed that reproduces them.
    Fuzz {
        /// Frames through the programs.
        #[arg(long, value_name = "N", default_value_t = fuzz::DEFAULT_FRAMES)]
        frames: u64,
        /// Seed of the frame generator (default: a fresh one, printed).
        #[arg(long, value_name = "SEED", value_parser = fuzz::parse_seed)]
        seed: Option<u64>,
    },
    /// Lint the userspace crates with clippy (-D warnings)
    ///
    /// Runs `cargo clippy --workspace --exclude flowlog-ebpf --all-targets -- -D warnings`;
    /// the eBPF crate is only built (when its toolchain is present), not linted.
    Clippy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Setup => setup::run().map(|()| 0),
        Cmd::Build { debug } => {
            setup::ensure()?;
            let profile = if debug {
                Profile::Debug
            } else {
                Profile::Release
            };
            let built = build_cmd::build(profile)?;
            println!("{}", built.agent.display());
            Ok(0)
        }
        Cmd::Run { args } => run::run(args),
        Cmd::Test { extra } => test::run(extra),
        Cmd::Bench { quick, out } => bench::run(quick, out.as_deref()),
        Cmd::Soak { minutes, out } => soak::run(minutes, out.as_deref()),
        Cmd::Fuzz { frames, seed } => fuzz::run(frames, seed),
        Cmd::Clippy => clippy::run(),
        Cmd::Deb { binary, out, fast } => deb::run(binary, out, fast),
        Cmd::Image { binary, tag } => image::run(binary, tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cmd {
        let argv = std::iter::once("xtask").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(err) => panic!("parsing {args:?}: {err}"),
        }
    }

    fn strings(v: &[OsString]) -> Vec<&str> {
        v.iter()
            .map(|s| s.to_str().unwrap_or("<non-utf8>"))
            .collect()
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_cargo_test_args_through() {
        match parse(&["test", "--", "-p", "tests", "flow_", "--", "--nocapture"]) {
            Cmd::Test { extra } => {
                assert_eq!(
                    strings(&extra),
                    ["-p", "tests", "flow_", "--", "--nocapture"]
                )
            }
            _ => panic!("not test"),
        }
        match parse(&["test"]) {
            Cmd::Test { extra } => assert!(extra.is_empty()),
            _ => panic!("not test"),
        }
    }

    #[test]
    fn run_passes_flowlog_args_through() {
        match parse(&["run", "--", "run", "--iface", "eth0", "-v"]) {
            Cmd::Run { args } => assert_eq!(strings(&args), ["run", "--iface", "eth0", "-v"]),
            _ => panic!("not run"),
        }
    }

    #[test]
    fn fuzz_takes_frames_and_a_seed() {
        match parse(&["fuzz", "--frames", "200", "--seed", "0x2a"]) {
            Cmd::Fuzz { frames, seed } => assert_eq!((frames, seed), (200, Some(42))),
            _ => panic!("not fuzz"),
        }
        match parse(&["fuzz"]) {
            Cmd::Fuzz { frames, seed } => assert_eq!((frames, seed), (fuzz::DEFAULT_FRAMES, None)),
            _ => panic!("not fuzz"),
        }
    }

    #[test]
    fn build_and_bench_flags() {
        assert!(matches!(
            parse(&["build", "--debug"]),
            Cmd::Build { debug: true }
        ));
        assert!(matches!(parse(&["build"]), Cmd::Build { debug: false }));
        assert!(matches!(
            parse(&["bench", "--quick"]),
            Cmd::Bench {
                quick: true,
                out: None
            }
        ));
        match parse(&["bench", "--quick", "--out", "target/bench-quick"]) {
            Cmd::Bench {
                quick: true,
                out: Some(out),
            } => {
                assert_eq!(out, std::path::Path::new("target/bench-quick"))
            }
            _ => panic!("not bench --quick --out"),
        }
    }
}
