//! Loading the eBPF object and attaching its TC programs to interfaces.
//!
//! On kernels >= 6.6 each program is attached as a TCX link placed *first*, so it sees every
//! packet before other tools' programs (Cilium, Calico) decide; it returns TCX_NEXT so they
//! still run. Older kernels get a clsact qdisc and a direct-action netlink filter.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError},
    },
    util::KernelVersion,
};
use flowlog_common::{
    FLOW_MAPS, PROG_TC_EGRESS, PROG_TC_EGRESS_L3, PROG_TC_INGRESS, PROG_TC_INGRESS_L3,
};
use tracing::{debug, info, warn};

use crate::inventory::discover::Interface;

/// How programs are attached on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX links (Linux >= 6.6).
    Tcx,
    /// clsact qdisc + netlink filter.
    Netlink,
}

impl AttachMode {
    pub fn for_running_kernel() -> Self {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => AttachMode::Tcx,
            _ => AttachMode::Netlink,
        }
    }
}

struct Attached {
    name: String,
    /// The ingress and egress programs, each with its link.
    links: [(&'static str, SchedClassifierLinkId); 2],
}

/// The ingress and egress programs for `iface`: the `_l3` pair when its frames have no
/// link-layer header.
fn programs_for(iface: &Interface) -> [&'static str; 2] {
    if iface.is_l3() {
        [PROG_TC_INGRESS_L3, PROG_TC_EGRESS_L3]
    } else {
        [PROG_TC_INGRESS, PROG_TC_EGRESS]
    }
}

/// The loaded eBPF object with its programs attached to the selected interfaces.
/// Dropping it detaches every program.
pub struct Capture {
    ebpf: Ebpf,
    mode: AttachMode,
    attached: BTreeMap<u32, Attached>,
}

impl Capture {
    /// Loads `object` with flow maps of `max_flows` entries and loads (not yet attaches) the
    /// programs.
    pub fn load(object: &[u8], max_flows: u32) -> anyhow::Result<Self> {
        Self::load_with(object, max_flows, |_| {})
    }

    /// [`Self::load`], letting `configure` set more load-time values first (the drop
    /// program's globals).
    pub fn load_with<'a>(
        object: &[u8],
        max_flows: u32,
        configure: impl FnOnce(&mut EbpfLoader<'a>),
    ) -> anyhow::Result<Self> {
        let mut loader = EbpfLoader::new();
        for name in FLOW_MAPS {
            loader.map_max_entries(name, max_flows);
        }
        configure(&mut loader);
        let mut ebpf = loader.load(object).map_err(|e| {
            anyhow!(
                "cannot load the eBPF object into the kernel: {e} (needs root and Linux >= 5.11)"
            )
        })?;
        for name in [
            PROG_TC_INGRESS,
            PROG_TC_EGRESS,
            PROG_TC_INGRESS_L3,
            PROG_TC_EGRESS_L3,
        ] {
            classifier(&mut ebpf, name)?
                .load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        Ok(Capture {
            ebpf,
            mode: AttachMode::for_running_kernel(),
            attached: BTreeMap::new(),
        })
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Interfaces with programs attached, by ifindex.
    pub fn attached(&self) -> impl Iterator<Item = (u32, &str)> {
        self.attached.iter().map(|(i, a)| (*i, a.name.as_str()))
    }

    /// Attaches ingress and egress programs to `iface` (no-op if already attached).
    pub fn attach(&mut self, iface: &Interface) -> anyhow::Result<()> {
        if self.attached.contains_key(&iface.ifindex) {
            return Ok(());
        }
        if self.mode == AttachMode::Netlink {
            match tc::qdisc_add_clsact(&iface.name) {
                Ok(()) => {}
                Err(TcError::NetlinkError(e)) if e.to_string().contains("exists") => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot add clsact qdisc to {}", iface.name));
                }
            }
        }
        let [ingress_prog, egress_prog] = programs_for(iface);
        let ingress = self.attach_one(ingress_prog, iface, TcAttachType::Ingress)?;
        let egress = match self.attach_one(egress_prog, iface, TcAttachType::Egress) {
            Ok(l) => l,
            Err(e) => {
                let _ = classifier(&mut self.ebpf, ingress_prog).map(|p| p.detach(ingress));
                return Err(e);
            }
        };
        info!(iface = %iface.name, ifindex = iface.ifindex, mode = ?self.mode,
              link_header = if iface.is_l3() { "none" } else { "ethernet" }, "attached");
        self.attached.insert(
            iface.ifindex,
            Attached {
                name: iface.name.clone(),
                links: [(ingress_prog, ingress), (egress_prog, egress)],
            },
        );
        Ok(())
    }

    fn attach_one(
        &mut self,
        prog: &str,
        iface: &Interface,
        at: TcAttachType,
    ) -> anyhow::Result<SchedClassifierLinkId> {
        let options = match self.mode {
            AttachMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::first()),
            AttachMode::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
        };
        classifier(&mut self.ebpf, prog)?
            .attach_with_options(&iface.name, at, options)
            .with_context(|| format!("cannot attach {prog} to {} ({at:?})", iface.name))
    }

    /// Detaches from every interface whose ifindex is not in `wanted`: it vanished (it is not in
    /// `present`, the host's interfaces now), or no flow log covers it any more. Returns the
    /// names of those that vanished.
    pub fn keep_only(
        &mut self,
        wanted: &std::collections::BTreeSet<u32>,
        present: &BTreeMap<u32, Interface>,
    ) -> Vec<String> {
        let mut vanished = Vec::new();
        let gone: Vec<u32> = self
            .attached
            .keys()
            .filter(|i| !wanted.contains(i))
            .copied()
            .collect();
        for ifindex in gone {
            let Some(a) = self.attached.remove(&ifindex) else {
                continue;
            };
            for (prog, link) in a.links {
                if let Err(e) = classifier(&mut self.ebpf, prog).and_then(|p| Ok(p.detach(link)?)) {
                    // The kernel already removed the link with the interface.
                    debug!(iface = %a.name, error = %e, "detach after interface removal");
                }
            }
            if present.get(&ifindex).is_none_or(|i| i.name != a.name) {
                // Containers come and go: not a warning.
                info!(iface = %a.name, ifindex, "interface went away; detached");
                vanished.push(a.name);
            } else {
                info!(iface = %a.name, ifindex, "no flow log covers the interface any more; detached");
            }
        }
        vanished
    }
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program {name} is not a TC classifier"))
}

/// Forwards the eBPF programs' aya-log messages to `tracing` from a background task. The
/// returned handle keeps the logger (and so its map fd) alive; aborting it stops forwarding.
pub fn spawn_ebpf_logger(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "no eBPF log map");
            return None;
        }
    };
    // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd holds the logger.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "cannot poll the eBPF log map");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
