//! `flowlog run`: one capture for every flow log. It loads and attaches the programs to the
//! union of the flow logs' interfaces, cuts the capture at every boundary of any flow log
//! (and when one is deleted), hands each cut to every flow log's [`Pipeline`], applies
//! created and deleted flow logs live (control socket, SIGHUP for `--flow-logs`), and owns the
//! shutdown sequence (flush the partial windows, publish, detach, exit 0).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    capture::attach::{AttachMode, Capture, spawn_ebpf_logger},
    capture::attach_limits,
    capture::clock::{first_object_at, unix_now, until},
    capture::collect::{Collector, DrainedWindow, IdleSlot, Window},
    capture::flow_sink::{self, FlowSink as _},
    capture::object,
    capture::peek::Peeker,
    capture::pins::{DEFAULT_PIN_DIR, Layout, Pins, Unpinned},
    capture::reject::drops,
    capture::window_metrics::{FlowTally, export_zero_counters, report_window},
    cli::{CaptureArgs, RunArgs, flag_flow_log},
    flowlogs::{
        control::{ClaimedSocket, ControlSocket, RegistryService, SocketInUse},
        cut_sink::CutSink,
        file,
        members::CutMembers,
        pipeline::{HostSettings, Outcome, Pipeline},
        registry::{Change, Registry},
        snapshot::SnapshotSource,
        spec::{FlowLogSpec, Resource, ResourceType},
        status::{StatusBoard, interfaces_of},
        store::Store,
        window::due_cut,
    },
    inventory::discover::{Interface, Selector},
    inventory::live::Inventory,
    inventory::metadata::Metadata,
    inventory::owners::OwnerOptions,
    lifecycle, metrics, privileges,
    publish::{self, DeliveryStatus},
};

/// Lets the kernel charge BPF maps to a locked-memory budget large enough for them (kernels
/// before 5.11 account map memory against RLIMIT_MEMLOCK).
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK (only matters on kernels before 5.11)");
    }
}

/// The flow log the `run` flags define: the one-flow-log form of `flowlog run`.
fn flag_flow_log(args: &RunArgs) -> anyhow::Result<FlowLogSpec> {
    let ifaces = &args.capture.ifaces;
    Ok(FlowLogSpec {
        id: flag_flow_log::flow_log_id(&args.records, &args.output)?,
        resource_type: ResourceType::NetworkInterface,
        resource_id: if ifaces.is_empty() {
            "*".to_string()
        } else {
            ifaces.join(",")
        },
        resource: Resource::RunFlags(ifaces.clone()),
        traffic_type: args.records.traffic_type,
        destination: args.output.destination(),
        log_format_text: args.records.log_format.spec_text(),
        log_format: args.records.log_format.clone(),
        max_aggregation_interval: args.capture.aggregation_interval as u32,
        options: flag_flow_log::object_options(&args.output)?,
        tags: Vec::new(),
        deliver_logs_permission_arn: None,
        deliver_cross_account_role: None,
        creation_time: Utc::now(),
        perspective: args.records.perspective,
    })
}

/// The `--iface` names the flags ask for must exist (globs may match nothing yet), and without
/// `--iface` some interface must be up.
fn check_flag_interfaces(patterns: &[String]) -> anyhow::Result<()> {
    let initial = Selector::new(patterns)?.select(true)?;
    if initial.is_empty() {
        if patterns.is_empty() {
            bail!(
                "no network interface other than loopback is up: bring one up or name one with --iface"
            );
        }
        warn!(patterns = ?patterns, "no interface matches yet; attaching when one appears");
    }
    Ok(())
}

/// The pinned state this agent uses, if any: `--no-pin`, a kernel without TCX, or a default
/// directory it cannot use (no bpffs there, another agent on it) mean none; a named
/// `--pin-dir` that cannot be used is an error.
fn open_pins(cap: &CaptureArgs, reject: &drops::RejectSupport) -> anyhow::Result<Option<Pins>> {
    if cap.no_pin {
        return Ok(None);
    }
    if AttachMode::for_running_kernel() == AttachMode::Netlink {
        info!(
            "TC programs are netlink filters on this kernel (Linux < 6.6), which cannot be pinned: \
               they detach when the agent stops"
        );
        return Ok(None);
    }
    let dir = cap
        .pin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR));
    let layout = Layout {
        max_flows: cap.max_flows,
        max_reject_flows: matches!(reject, drops::RejectSupport::Ready(_))
            .then_some(cap.max_reject_flows),
        salt: cap.pin_layout_salt,
    };
    match Pins::open(&dir, layout)? {
        Ok(pins) => {
            info!(dir = %pins.dir().display(), adopted = pins.adopted,
                  "pinned state: the programs keep counting across restarts");
            Ok(Some(pins))
        }
        Err(Unpinned(why)) if cap.pin_dir.is_some() => {
            bail!(
                "cannot use --pin-dir {}: {why} (or run with --no-pin)",
                dir.display()
            )
        }
        Err(Unpinned(why)) => {
            info!(
                "not pinning: {why}; the programs detach when the agent stops (give --pin-dir a bpffs directory to keep them)"
            );
            Ok(None)
        }
    }
}

/// The API's state: its definitions directory and its socket, when this agent has them.
struct ApiState {
    store: Store,
    socket: ClaimedSocket,
}

/// Claims the control socket and opens the state directory, unless another agent serves the
/// API. When neither was named, that is not an error: this agent then runs only its flag and
/// file flow logs (`Ok(None)`).
fn open_api_state(args: &RunArgs) -> anyhow::Result<Option<ApiState>> {
    let defs = &args.definitions;
    let socket = match ControlSocket::claim(&defs.control_socket()) {
        Ok(s) => s,
        Err(e) if !defs.api_named() && e.downcast_ref::<SocketInUse>().is_some() => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let store = Store::open(&defs.state_dir())?;
    Ok(Some(ApiState { store, socket }))
}

/// The flow logs that run, the capture under them, and what is needed to start more.
struct Agent {
    pipelines: BTreeMap<String, Pipeline>,
    registry: Arc<Mutex<Registry>>,
    host: HostSettings,
    meta: Metadata,
    /// `--spool-dir`: the flag flow log's spool.
    flag_spool_dir: Option<(String, PathBuf)>,
    /// Ids of the flow logs that came from `--flow-logs` (a reload replaces them).
    from_file: BTreeSet<String>,
    /// What `flowlog status` reports.
    board: Arc<StatusBoard>,
}

impl Agent {
    /// Tells the registry how `id`'s delivery goes.
    fn delivery_status(&self, id: &str) -> DeliveryStatus {
        let registry = self.registry.clone();
        let id = id.to_string();
        let label = id.clone();
        Arc::new(move |error: Option<String>| {
            metrics::gauge_set(
                "flowlog_flow_log_delivery_failing",
                "1 while a flow log's last delivery attempt failed (DeliverLogsStatus FAILED).",
                &[("flow_log_id", label.as_str())],
                if error.is_some() { 1.0 } else { 0.0 },
            );
            if let Ok(mut r) = registry.lock() {
                r.set_delivery_error(&id, error);
            }
        })
    }

    /// Starts `spec`'s pipeline. `required`: a failure is the run's error (the flag flow log at
    /// start); otherwise it is logged and shown by describe-flow-logs as a delivery failure.
    async fn start(&mut self, spec: FlowLogSpec, required: bool) -> anyhow::Result<()> {
        let id = spec.id.clone();
        let spool_dir = self
            .flag_spool_dir
            .as_ref()
            .filter(|(flag_id, _)| *flag_id == id)
            .map(|(_, dir)| dir.clone());
        let status = self.delivery_status(&id);
        match Pipeline::start(
            spec,
            &self.host,
            self.meta.clone(),
            spool_dir,
            status.clone(),
        )
        .await
        {
            Ok(p) => {
                info!(flow_log_id = %id, interval = p.interval(), destination = %p.destination(),
                      spool = %p.spool().dir().display(), "flow log running");
                self.board
                    .flow_log_started(&id, p.destination(), p.spool_handle());
                self.pipelines.insert(id, p);
                Ok(())
            }
            Err(e) if required => Err(e),
            Err(e) => {
                error!(flow_log_id = %id, error = %format!("{e:#}"), "cannot start the flow log");
                status(Some(format!("Unknown error: {e:#}")));
                Ok(())
            }
        }
    }

    /// Whether some flow log selects guests (containers, pods, VMs) rather than interfaces.
    fn selects_guests(&self) -> bool {
        self.pipelines
            .values()
            .any(|p| p.spec.resource.selects_guests())
    }

    /// Every interface of the host (`inventory`'s), and those each flow log covers, by flow
    /// log id.
    fn membership(
        &self,
        inventory: &Inventory,
    ) -> (
        BTreeMap<u32, Interface>,
        BTreeMap<String, BTreeMap<u32, Interface>>,
    ) {
        let host = inventory.interfaces();
        let members = self
            .pipelines
            .iter()
            .map(|(id, p)| (id.clone(), p.members(&host, &self.meta)))
            .collect();
        (host, members)
    }
}

/// The capture and its window clock.
struct Cutter {
    capture: Capture,
    collector: Collector,
    rejects: Option<drops::DropCapture>,
    max_flows: u32,
    /// Start of the capture's open cut.
    start: u64,
    /// When the last cut began (just before its flip): interfaces deleted before then have
    /// all their flows in a cut already.
    last_flip: Instant,
    /// Every flow log's members since the last cut: one that left (renamed, down) still gets
    /// what was counted for it.
    members: CutMembers,
    /// Interfaces that went away since the last cut, and those that went away before it (their
    /// last window is reported): the latter's metric series are removed at the next cut, so
    /// interfaces that come and go do not pile up series.
    vanished: (Vec<String>, Vec<String>),
    metrics_file: Option<PathBuf>,
    /// Attached interfaces whose metric series were exported at zero already.
    zero_exported: BTreeSet<String>,
    board: Arc<StatusBoard>,
}

impl Cutter {
    /// Cuts the capture at `end` and hands the cut to every pipeline. `watched`: the
    /// interfaces each pipeline covers now.
    fn cut(
        &mut self,
        end: u64,
        pipelines: &mut BTreeMap<String, Pipeline>,
        watched: &BTreeMap<String, BTreeMap<u32, Interface>>,
    ) -> anyhow::Result<DrainedWindow> {
        let end = end.max(self.start);
        let window = Window {
            start: self.start,
            end,
        };
        let attached = self.attached_names();
        let drain_started = Instant::now();
        let cut_members = self.members.for_cut(watched);
        let empty = BTreeMap::new();
        // Each pipeline turns the flows into records as they are drained.
        let mut sink = CutSink::new(pipelines.iter_mut(), &cut_members, &empty);
        let cut = match tokio::task::block_in_place(|| self.collector.cut_into(window, &mut sink)) {
            Ok(cut) => cut,
            Err(e) => {
                // The flows drained before the failure still reach the spool.
                sink.finish();
                return Err(e);
            }
        };
        let tally = std::mem::take(&mut sink.tally);
        self.last_flip = drain_started;
        self.board.cut_drained(
            unix_now() as u64,
            drain_started.elapsed().as_secs_f64(),
            tally.flows,
            self.max_flows,
            cut.ifaces.values().map(|c| c.overflow_packets).sum(),
        );
        self.members.cut_done(watched);
        metrics::gauge_set(
            "flowlog_last_drain_seconds",
            "Time to flip, drain and clear the last window's maps, and to turn its flows into records (they overlap).",
            &[],
            drain_started.elapsed().as_secs_f64(),
        );
        self.start = end;
        lifecycle::window_cut();
        self.finish_cut(sink, &cut, &tally, &attached)?;
        Ok(cut)
    }

    /// Attached interfaces' names, by ifindex.
    fn attached_names(&self) -> BTreeMap<u32, String> {
        self.capture
            .attached()
            .map(|(i, n)| (i, n.to_string()))
            .collect()
    }

    /// Ends a cut whose flows are all in `sink`: the window's metrics, then every pipeline's
    /// part of it, then (its records on disk) the collector may clear its slot.
    fn finish_cut(
        &mut self,
        sink: CutSink<'_>,
        cut: &DrainedWindow,
        tally: &FlowTally,
        attached: &BTreeMap<u32, String>,
    ) -> anyhow::Result<()> {
        self.report(cut, tally, attached);
        // After the window's metrics, as before the drain streamed: what reads a window's
        // records finds its counters already there.
        sink.finish();
        // Spooled or in a write-ahead log by now (a flow log whose window spans several cuts
        // holds this one in memory until its window closes): the slot can go.
        tokio::task::block_in_place(|| self.collector.recorded())?;
        metrics::flush_to(self.metrics_file.as_deref());
        Ok(())
    }

    /// The window's metrics and log lines, and the metric series of vanished interfaces.
    fn report(&mut self, cut: &DrainedWindow, tally: &FlowTally, attached: &BTreeMap<u32, String>) {
        report_window(cut, tally, attached, self.max_flows);
        drops::report_window(self.rejects.as_mut(), cut, attached);
        let reported = std::mem::take(&mut self.vanished.0);
        for name in std::mem::replace(&mut self.vanished.1, reported) {
            // Unless an interface of the same name is attached again.
            if !attached.values().any(|n| *n == name) {
                metrics::forget_label("interface", &name);
            }
        }
    }

    /// The window an earlier agent was cutting when it stopped (pinned maps), its records
    /// not yet on disk: handed to the flow logs now, before this agent's first cut.
    fn hand_out_carried(
        &mut self,
        pipelines: &mut BTreeMap<String, Pipeline>,
        watched: &BTreeMap<String, BTreeMap<u32, Interface>>,
    ) -> anyhow::Result<()> {
        let Some(mut carried) = self.collector.take_carried() else {
            return Ok(());
        };
        let flows = std::mem::take(&mut carried.flows);
        info!(
            start = carried.window.start,
            end = carried.window.end,
            flows = flows.len(),
            "the last agent stopped while cutting this window: its counts go out as that window now"
        );
        let attached = self.attached_names();
        let cut_members = self.members.for_cut(watched);
        let empty = BTreeMap::new();
        let mut sink = CutSink::new(pipelines.iter_mut(), &cut_members, &empty);
        sink.begin(&carried);
        flow_sink::hand_over(&flows, &mut sink);
        let tally = std::mem::take(&mut sink.tally);
        self.finish_cut(sink, &carried, &tally, &attached)
    }

    /// Attaches to every interface some flow log covers, and detaches from the rest. `host`:
    /// the host's interfaces now. With `guests` (a flow log selects containers, pods or VMs),
    /// interfaces whose guest is still being looked up are attached too: a container's first
    /// packets come before its processes can be told apart. Their flows reach only the flow
    /// logs that turn out to cover them (each takes its members' part of a cut).
    fn sync_attachments(
        &mut self,
        host: &BTreeMap<u32, Interface>,
        watched: &BTreeMap<String, BTreeMap<u32, Interface>>,
        guests: bool,
    ) {
        self.members.remember(watched);
        // Deleted interfaces stay in `watched` until their window is cut (their flows keep
        // their identity); there is nothing to attach to.
        let wanted: BTreeMap<u32, &Interface> = watched
            .values()
            .flat_map(|m| m.iter().map(|(k, i)| (*k, i)))
            .chain(
                host.iter()
                    .filter(|(_, i)| guests && i.owner_pending)
                    .map(|(k, i)| (*k, i)),
            )
            .filter(|(_, i)| !i.deleted)
            .collect();
        let live: BTreeMap<u32, Interface> = host
            .iter()
            .filter(|(_, i)| !i.deleted)
            .map(|(k, i)| (*k, i.clone()))
            .collect();
        let vanished = self
            .capture
            .keep_only(&wanted.keys().copied().collect(), &live);
        self.vanished.0.extend(vanished);
        attach_limits::attach_within_limits(&mut self.capture, wanted.values().copied());
        drops::sync(&mut self.rejects, self.capture.attached().map(|(i, _)| i));
        // Only for interfaces not exported yet: with 1,000 interfaces, exporting all of them
        // again on every link event was a good part of the agent's CPU.
        let now: BTreeSet<String> = self
            .capture
            .attached()
            .map(|(_, n)| n.to_string())
            .collect();
        let names: Vec<String> = now.difference(&self.zero_exported).cloned().collect();
        self.zero_exported = now;
        self.board
            .set_interfaces(interfaces_of(&self.capture, host));
        export_zero_counters(names.iter().map(String::as_str));
        drops::export_zero_counters(self.rejects.as_ref(), names.iter().map(String::as_str));
    }
}

/// What `flowlog top` reads (none when the maps cannot be reopened: `top` then says so).
fn snapshot_source(collector: &Collector, start: u64) -> Option<Arc<SnapshotSource>> {
    match Peeker::of(collector) {
        Ok(p) => Some(Arc::new(SnapshotSource::new(p, start))),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "flowlog top will have nothing to show");
            None
        }
    }
}

/// Keeps `flowlog top`'s window start and interface names current.
fn refresh_snapshots(
    snapshots: Option<&SnapshotSource>,
    cutter: &Cutter,
    host: &BTreeMap<u32, Interface>,
) {
    if let Some(s) = snapshots {
        s.set_window_start(cutter.start);
        s.set_interfaces(cutter.capture.attached(), host);
    }
}

/// What woke the capture loop.
enum Event {
    Boundary(u64),
    Stop,
    Reload,
    Changed(Change),
    /// An interface appeared, changed, went away or got its owner.
    Interfaces,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let cap = &args.capture;
    // Local checks first: bad input fails before anything is logged or looked up over the
    // network, with exactly one line.
    let flag_spec = if args.definitions.flag_flow_log() {
        check_flag_interfaces(&cap.ifaces)?;
        Some(flag_flow_log(&args)?)
    } else {
        None
    };
    let file_specs = match &args.definitions.flow_logs {
        Some(path) => file::load(path, Utc::now())?,
        None => Vec::new(),
    };
    privileges::check()?;
    let object = object::load(cap.ebpf_object.as_deref())?;
    let reject_support = drops::prepare(args.records.reject_reasons.as_deref(), &cap.kernel_btf)?;
    let meta = Metadata::discover(&args.records.metadata_config()).await?;
    args.output.warn_deprecated();
    let api = open_api_state(&args)?;
    let stored = match &api {
        Some(a) => a.store.load()?,
        None => Vec::new(),
    };

    let mut initial: Vec<(FlowLogSpec, bool)> = Vec::new();
    if let Some(spec) = &flag_spec {
        initial.push((spec.clone(), true));
    }
    initial.extend(file_specs.iter().cloned().map(|s| (s, false)));
    initial.extend(stored.into_iter().map(|s| (s, false)));
    let registry = Registry::new(
        initial.iter().map(|(s, _)| s.clone()).collect(),
        api.as_ref().map(|a| a.store.clone()),
        meta.clone(),
    );
    let mut agent = Agent {
        pipelines: BTreeMap::new(),
        registry: Arc::new(Mutex::new(registry)),
        host: HostSettings {
            records: flag_flow_log::record_options(&args.records, &args.output),
            endpoint_url: args.output.endpoint_url.clone(),
            publish_timeout: args
                .output
                .publish_timeout
                .map(std::time::Duration::from_secs),
            // The default state directory's spool is the default spool root.
            spool_root: args.definitions.state_dir().join("spool"),
            spool_max_bytes: args.output.spool_max_bytes,
            runtime_dir: args.operations.runtime_dir.clone(),
            output_modes: args.output.output_modes(),
        },
        meta,
        flag_spool_dir: flag_spec
            .as_ref()
            .zip(args.output.spool_dir.clone())
            .map(|(s, dir)| (s.id.clone(), dir)),
        from_file: file_specs.iter().map(|s| s.id.clone()).collect(),
        board: Arc::new(StatusBoard::default()),
    };
    agent.board.set_max_flows(cap.max_flows);
    for (spec, required) in initial {
        agent.start(spec, required).await?;
    }

    if let Some(spec) = &flag_spec {
        announce_first_file(
            &spec.destination,
            cap.aggregation_interval,
            args.output.file_rollover_seconds,
        );
    }

    raise_memlock();
    attach_limits::raise_open_files_limit();
    let pins = open_pins(cap, &reject_support)?;
    let adopted = pins.as_ref().is_some_and(|p| p.adopted);
    let mut capture = Capture::load_pinned(&object, cap.max_flows, pins, |l| {
        drops::configure(&reject_support, cap.max_reject_flows, l)
    })?;
    let _logger = spawn_ebpf_logger(capture.ebpf_mut());
    let mut collector = if adopted {
        let (c, idle) = Collector::adopt(capture.ebpf_mut())?;
        info!(
            slot = c.active_slot(),
            "adopted the pinned maps: counts since the last agent's last cut go into the first window"
        );
        match idle {
            IdleSlot::Empty => {}
            IdleSlot::Recorded { flows } => info!(
                flows,
                "the last agent's last cut had reached disk before it stopped: its slot cleared, not repeated"
            ),
            IdleSlot::Carried { flows } => info!(
                flows,
                "the last agent stopped before its last cut reached disk: that window goes out once the flow logs run"
            ),
        }
        c
    } else {
        Collector::new(capture.ebpf_mut())?
    };
    let rejects = drops::start(reject_support, capture.ebpf_mut(), &mut collector);
    let snapshots = snapshot_source(&collector, unix_now() as u64);
    let mut cutter = Cutter {
        capture,
        collector,
        rejects,
        max_flows: cap.max_flows,
        start: unix_now() as u64,
        last_flip: Instant::now(),
        members: CutMembers::default(),
        vanished: Default::default(),
        metrics_file: args.operations.metrics_file.clone(),
        zero_exported: BTreeSet::new(),
        board: agent.board.clone(),
    };
    // After everything that can refuse bad input: its log lines would come before the error.
    let inventory = Inventory::start(OwnerOptions {
        ecs_endpoint: Some(cap.ecs_agent_url.clone()).filter(|u| !u.is_empty()),
        ..OwnerOptions::default()
    })
    .await?;
    let (host, watched) = agent.membership(&inventory);
    for (id, members) in &watched {
        // The flag flow log's named interfaces must attach now; others may come later.
        if flag_spec.as_ref().is_some_and(|s| s.id == *id) {
            for iface in members.values() {
                cutter.capture.attach(iface)?;
            }
        }
    }
    cutter.sync_attachments(&host, &watched, agent.selects_guests());
    refresh_snapshots(snapshots.as_deref(), &cutter, &host);
    cutter.capture.finish_adoption();
    cutter.hand_out_carried(&mut agent.pipelines, &watched)?;
    let _metrics_server = match args.operations.metrics_addr {
        Some(addr) => Some(metrics::serve(addr).await?),
        None => None,
    };
    metrics::flush_to(cutter.metrics_file.as_deref());
    metrics::announce(args.operations.metrics_addr, cutter.metrics_file.as_deref());

    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let _control = match api {
        Some(a) => Some(ControlSocket::serve(
            a.socket,
            Arc::new({
                let service = RegistryService::new(agent.registry.clone(), changes_tx)
                    .with_status(agent.board.clone());
                match &snapshots {
                    Some(s) => service.with_snapshots(s.clone()),
                    None => service,
                }
            }),
        )),
        None => {
            info!(socket = %args.definitions.control_socket().display(),
                  "another agent serves the flow log API on this host: this one runs its own flow logs only \
                   (give it --control-socket and --state-dir of its own to manage it through the API)");
            None
        }
    };
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    // Loaded and attached: from here on the agent only attaches and reads.
    privileges::drop_after_attach()?;
    let interfaces: Vec<String> = cutter
        .capture
        .attached()
        .map(|(_, n)| n.to_string())
        .collect();
    let flow_logs: Vec<&String> = agent.pipelines.keys().collect();
    let mode = cutter.capture.mode();
    // The flag flow log, when there is one, as this line always showed it.
    match flag_spec.as_ref().and_then(|s| agent.pipelines.get(&s.id)) {
        Some(p) => info!(
            ?interfaces, ?flow_logs, interval = p.interval(), flow_log_id = %p.id(),
            destination = %p.destination(), spool = %p.spool().dir().display(), ?mode, "capturing"
        ),
        None => info!(?interfaces, ?flow_logs, ?mode, "capturing"),
    }
    lifecycle::attached(&format!(
        "capturing on {} interface(s) for {} flow log(s)",
        interfaces.len(),
        flow_logs.len()
    ));

    let mut drain_failure = None;
    loop {
        let now = unix_now();
        let intervals: Vec<u64> = agent.pipelines.values().map(Pipeline::interval).collect();
        let next = due_cut(cutter.start, now, &intervals);
        agent.board.set_window(cutter.start, next);
        if next.is_none() {
            // No flow log, so no window to wait for: ready to take API calls.
            lifecycle::window_cut();
        }
        // Without flow logs nothing is cut: the loop waits for one to be created.
        let idle_until = now as u64 + 86_400;
        let event = tokio::select! {
            _ = tokio::time::sleep(until(next.unwrap_or(idle_until))), if next.is_some() => {
                Event::Boundary(next.unwrap_or(idle_until))
            }
            _ = sigterm.recv() => Event::Stop,
            _ = sigint.recv() => Event::Stop,
            _ = sighup.recv() => Event::Reload,
            Some(change) = changes.recv() => Event::Changed(change),
            _ = inventory.changed() => Event::Interfaces,
        };
        let (host, watched) = agent.membership(&inventory);
        // A boundary changes no flow log: the same listing serves the attachments below.
        let flow_logs_change = matches!(event, Event::Reload | Event::Changed(_));
        let is_boundary = matches!(event, Event::Boundary(_));
        let result = match event {
            Event::Boundary(end) => cutter.cut(end, &mut agent.pipelines, &watched).map(|_| ()),
            Event::Stop => {
                lifecycle::stopping();
                let end = (unix_now().ceil() as u64).max(cutter.start);
                match cutter.cut(end, &mut agent.pipelines, &watched) {
                    Ok(_) => info!("shutting down: flushed the partial window"),
                    Err(e) => drain_failure = Some(e),
                }
                break;
            }
            Event::Reload => reload(&args, &mut agent, &mut cutter, &watched).await,
            Event::Changed(change) => apply(change, &mut agent, &mut cutter, &watched).await,
            Event::Interfaces => Ok(()),
        };
        if is_boundary {
            // A pod's containers may change without a link event.
            inventory.refresh_owners();
        }
        inventory.forget_deleted(cutter.last_flip);
        if let Err(e) = result {
            // The kernel maps cannot be read: stop, but through the normal shutdown so every
            // batch already open is still spooled and delivered; the run then fails.
            error!(error = %format!("{e:#}"), "cannot drain the window's maps; shutting down");
            lifecycle::failed();
            drain_failure = Some(e);
            break;
        }
        let (host, watched) = if flow_logs_change {
            agent.membership(&inventory)
        } else {
            (host, watched)
        };
        cutter.sync_attachments(&host, &watched, agent.selects_guests());
        refresh_snapshots(snapshots.as_deref(), &cutter, &host);
    }

    let (_, watched) = agent.membership(&inventory);
    let outcomes = finish_all(std::mem::take(&mut agent.pipelines), &watched).await;
    drop(cutter);
    metrics::flush_to(args.operations.metrics_file.as_deref());
    if let Some(e) = drain_failure {
        return Err(e.context("the window's flows could not be read from the kernel"));
    }
    let lost: usize = outcomes.iter().map(|o| o.unspooled_records).sum();
    if lost > 0 {
        let spools: Vec<String> = outcomes
            .iter()
            .filter(|o| o.unspooled_records > 0)
            .map(|o| o.spool.display().to_string())
            .collect();
        bail!(
            "{lost} records were lost because their batches could not be written to the spool {}: \
               check that it is writable and has space (see the errors above)",
            spools.join(", ")
        );
    }
    Ok(())
}

/// Runs the flow logs' last deliveries side by side and collects how each ended.
async fn finish_all(
    pipelines: BTreeMap<String, Pipeline>,
    watched: &BTreeMap<String, BTreeMap<u32, Interface>>,
) -> Vec<Outcome> {
    let mut set = tokio::task::JoinSet::new();
    for (id, p) in pipelines {
        let members = watched.get(&id).cloned().unwrap_or_default();
        set.spawn(async move { p.finish(&members).await });
    }
    let mut outcomes = Vec::new();
    while let Some(o) = set.join_next().await {
        match o {
            Ok(o) => outcomes.push(o),
            Err(e) => error!(error = %e, "a flow log's shutdown failed"),
        }
    }
    outcomes
}

/// A created flow log starts with the capture's open cut; a deleted one gets a cut of its own
/// now, delivers its partial window and stops. The other flow logs merge that extra cut into
/// their windows: their totals stay exact.
async fn apply(
    change: Change,
    agent: &mut Agent,
    cutter: &mut Cutter,
    watched: &BTreeMap<String, BTreeMap<u32, Interface>>,
) -> anyhow::Result<()> {
    match change {
        Change::Created(spec) => agent.start(*spec, false).await,
        Change::Deleted(id) => {
            if !agent.pipelines.contains_key(&id) {
                return Ok(());
            }
            cutter.cut(unix_now() as u64, &mut agent.pipelines, watched)?;
            agent.board.flow_log_stopped(&id);
            if let Some(p) = agent.pipelines.remove(&id) {
                let members = watched.get(&id).cloned().unwrap_or_default();
                agent.from_file.remove(&id);
                // Its last delivery runs beside the capture.
                tokio::spawn(async move {
                    let outcome = p.finish(&members).await;
                    if outcome.unspooled_records > 0 {
                        error!(flow_log_id = %id, records = outcome.unspooled_records,
                               "records of the deleted flow log were lost: its batches could not be spooled");
                    }
                });
            }
            Ok(())
        }
    }
}

/// SIGHUP: reads `--flow-logs` again; entries that appeared are created, those that went away
/// deleted. A file that does not read or validate changes nothing (one error line).
async fn reload(
    args: &RunArgs,
    agent: &mut Agent,
    cutter: &mut Cutter,
    watched: &BTreeMap<String, BTreeMap<u32, Interface>>,
) -> anyhow::Result<()> {
    let Some(path) = &args.definitions.flow_logs else {
        info!("SIGHUP: no --flow-logs file to read again");
        return Ok(());
    };
    let specs = match file::load(path, Utc::now()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %format!("{e:#}"), "SIGHUP: the flow logs file was not applied; the running flow logs stay as they are");
            return Ok(());
        }
    };
    let new: BTreeSet<String> = specs.iter().map(|s| s.id.clone()).collect();
    let gone: Vec<String> = agent.from_file.difference(&new).cloned().collect();
    let added: Vec<FlowLogSpec> = specs
        .into_iter()
        .filter(|s| !agent.from_file.contains(&s.id))
        .collect();
    info!(file = %path.display(), created = added.len(), deleted = gone.len(), "SIGHUP: flow logs file applied");
    for id in gone {
        if let Ok(mut r) = agent.registry.lock() {
            r.forget(&id);
        }
        apply(Change::Deleted(id), agent, cutter, watched).await?;
    }
    for spec in added {
        agent.from_file.insert(spec.id.clone());
        if let Ok(mut r) = agent.registry.lock() {
            r.adopt(spec.clone());
        }
        agent.start(spec, false).await?;
    }
    Ok(())
}

/// With a file destination whose objects collect several windows, says when the first file can
/// appear (so an empty directory after the first window is not a surprise) and how to change it.
fn announce_first_file(spec: &publish::DestinationSpec, interval: u64, rollover: u64) {
    let publish::DestinationSpec::File(dir) = spec else {
        return;
    };
    if interval >= rollover {
        return;
    }
    let at = first_object_at(unix_now(), interval, rollover);
    let at = chrono::DateTime::from_timestamp(at as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| at.to_string());
    info!(
        first_file_at = %at, file_rollover_seconds = rollover, dir = %dir.display(),
        "a file collects {rollover} s of records (as AWS does): the first appears at {at} if there is traffic \
         before then; set --file-rollover-seconds lower to see files sooner"
    );
}
