//! Options of the capture stages: which interfaces, window length, map capacity.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Capture")]
pub struct CaptureArgs {
    /// Interfaces to watch: a name or a glob such as 'veth*', or a guest:
    /// container:NAME|ID|GLOB, pod:NAMESPACE/NAME (or pod:NAME), vm:NAME|UUID. Repeatable.
    /// Default: every non-loopback interface that is up. Interfaces that appear later and
    /// match are attached as they appear (rtnetlink events), a guest's once its owner is found.
    #[arg(long = "iface", value_name = "GLOB")]
    pub ifaces: Vec<String>,

    /// The ECS container agent's introspection API, asked which task a container belongs to
    /// (ecs-task-*, ecs-cluster-*, ecs-container-instance-* fields). Empty: do not ask.
    #[arg(long, value_name = "URL", default_value = "http://localhost:51678")]
    pub ecs_agent_url: String,

    /// Length of one aggregation window in seconds. Windows are aligned to wall-clock
    /// multiples of it. AWS uses 60 (Nitro) or 600. [range: 1..=86400]
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub aggregation_interval: u64,

    /// Capacity of each in-kernel flow map (flows per window). IPv4 and IPv6 flows have a map
    /// each, so a window holds up to N flows of each family. Packets of flows that do not fit
    /// are counted per interface and reported as SKIPDATA, never dropped silently.
    /// [range: 1..=16777216]
    #[arg(long, value_name = "N", default_value_t = flowlog_common::DEFAULT_MAX_FLOWS,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_flows: u32,

    /// Capacity of the in-kernel REJECT map: distinct (flow, drop reason) pairs per window.
    /// A rejected packet that does not fit is never lost: one the TC hook had not counted is
    /// SKIPDATA, one it had counted stays in ACCEPT and is counted in
    /// flowlog_reject_overflow_accept_packets_total. [range: 1..=16777216]
    #[arg(long, value_name = "N", default_value_t = flowlog_common::MAX_REJECT_FLOWS,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_reject_flows: u32,

    /// Load the eBPF object from this file instead of the one embedded at build time.
    #[arg(long, value_name = "PATH")]
    pub ebpf_object: Option<PathBuf>,

    /// The running kernel's BTF, for REJECT records (sk_buff layout, drop reason names).
    /// Without readable BTF the agent emits ACCEPT records only and says why.
    #[arg(long, value_name = "PATH", default_value = crate::capture::reject::btf::VMLINUX_BTF)]
    pub kernel_btf: PathBuf,

    /// Pin the window maps and TCX links under this bpffs directory (in a subdirectory per
    /// network namespace and map layout): when the agent stops or crashes the programs keep
    /// counting, and the next agent adopts them, so a restart or an upgrade loses no packet.
    /// The default is used only when it can be (bpffs mounted, no other agent on it); a
    /// named one must be. [default: /sys/fs/bpf/flowlog]
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,

    /// Pin nothing: the programs detach when the agent stops (packets until the next agent
    /// attaches are not counted).
    #[arg(long, conflicts_with = "pin_dir")]
    pub no_pin: bool,

    /// Test only: pretend the map layout differs (another binary's pinned state).
    #[arg(long, hide = true, default_value_t = 0)]
    pub pin_layout_salt: u32,
}
