//! Loading the eBPF object and attaching its TC programs to interfaces.
//!
//! On kernels >= 6.6 each program is attached as a TCX link placed *first*, so it sees every
//! packet before other tools' programs (Cilium, Calico) decide; it returns TCX_NEXT so they
//! still run. Older kernels get a clsact qdisc and a direct-action netlink filter.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use anyhow::{Context, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{
            self, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcError,
        },
    },
    util::KernelVersion,
};
use flowlog_common::{
    FLOW_MAPS, FLOW4_MAPS, PROG_TC_EGRESS, PROG_TC_EGRESS_L3, PROG_TC_INGRESS, PROG_TC_INGRESS_L3,
};
use tracing::{debug, info, warn};

use crate::{capture::pins::Pins, inventory::discover::Interface};

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

/// How this agent holds one of its links.
enum Hold {
    /// Owned by the program: detached when the agent stops.
    Owned(&'static str, SchedClassifierLinkId),
    /// Pinned at this path: stays attached after the agent, until unpinned.
    Pinned(PathBuf),
}

struct Attached {
    name: String,
    /// The ingress and egress links.
    links: [Hold; 2],
    /// The links were pinned by an earlier agent; this one's programs replaced theirs.
    adopted: bool,
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
    /// Pinned state (TCX only): links are pinned, and adopted when an earlier agent left them.
    pins: Option<Pins>,
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
        Self::load_pinned(object, max_flows, None, configure)
    }

    /// [`Self::load_with`], with the window maps pinned in (or adopted from) `pins`.
    pub fn load_pinned<'a>(
        object: &[u8],
        max_flows: u32,
        pins: Option<Pins>,
        configure: impl FnOnce(&mut EbpfLoader<'a>),
    ) -> anyhow::Result<Self> {
        let mut loader = EbpfLoader::new();
        if let Some(p) = &pins {
            p.configure(&mut loader);
        }
        // `--max-flows` sizes each flow map: the IPv4 and the IPv6 maps of both slots.
        for name in FLOW_MAPS.into_iter().chain(FLOW4_MAPS) {
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
            pins,
        })
    }

    /// The pinned state, when there is one.
    pub fn pins(&self) -> Option<&Pins> {
        self.pins.as_ref()
    }

    /// After the first attachments: unpins (detaches) the links an earlier agent left on
    /// interfaces no flow log covers now, and removes state of other layouts.
    pub fn finish_adoption(&mut self) {
        let keep: BTreeSet<u32> = self.attached.keys().copied().collect();
        if let Some(p) = self.pins.as_mut() {
            p.unpin_links_except(&keep);
            p.discard_stale();
        }
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

    /// How `ifindex`'s links outlive this agent: `pinned`, `adopted` (pinned by an earlier
    /// agent) or `unpinned`.
    pub fn pinning(&self, ifindex: u32) -> &'static str {
        match self.attached.get(&ifindex) {
            Some(a) if a.adopted => "adopted",
            Some(Attached {
                links: [Hold::Pinned(_), _],
                ..
            }) => "pinned",
            _ => "unpinned",
        }
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
        let (ingress, ingress_adopted) =
            self.attach_one(ingress_prog, iface, TcAttachType::Ingress)?;
        let (egress, egress_adopted) =
            match self.attach_one(egress_prog, iface, TcAttachType::Egress) {
                Ok(l) => l,
                Err(e) => {
                    self.release(ingress);
                    return Err(e);
                }
            };
        let adopted = ingress_adopted && egress_adopted;
        let pinning = match (&ingress, adopted) {
            (_, true) => "adopted",
            (Hold::Pinned(_), false) => "pinned",
            _ => "unpinned",
        };
        info!(iface = %iface.name, ifindex = iface.ifindex, mode = ?self.mode, pinning,
              link_header = if iface.is_l3() { "none" } else { "ethernet" }, "attached");
        self.attached.insert(
            iface.ifindex,
            Attached {
                name: iface.name.clone(),
                links: [ingress, egress],
                adopted,
            },
        );
        Ok(())
    }

    /// Detaches one link: a pinned one by removing its pin (no descriptor is kept open).
    fn release(&mut self, hold: Hold) {
        let result = match hold {
            Hold::Owned(prog, link) => {
                classifier(&mut self.ebpf, prog).and_then(|p| Ok(p.detach(link)?))
            }
            Hold::Pinned(path) => std::fs::remove_file(&path)
                .with_context(|| format!("cannot unpin {}", path.display())),
        };
        if let Err(e) = result {
            // The kernel already removed the link with the interface.
            debug!(error = %format!("{e:#}"), "detach");
        }
    }

    /// Replaces the program of the link pinned at `path` with `prog`, atomically: every packet
    /// runs either the old program or the new one, both counting into the same pinned maps.
    fn adopt_link(&mut self, prog: &str, path: &std::path::Path) -> anyhow::Result<()> {
        let pinned = PinnedLink::from_pin(path)
            .with_context(|| format!("cannot open the pinned link {}", path.display()))?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned))
            .with_context(|| format!("{} is not a TCX link", path.display()))?;
        let p = classifier(&mut self.ebpf, prog)?;
        let id = p
            .attach_to_link(link)
            .with_context(|| format!("cannot replace the program of {}", path.display()))?;
        // Closing this descriptor leaves the link attached: the pin holds it.
        drop(p.take_link(id)?);
        Ok(())
    }

    /// Attaches `prog` to `iface`'s `at` hook; with pins (TCX), adopts the link an earlier
    /// agent pinned there (true), or pins the new one.
    fn attach_one(
        &mut self,
        prog: &'static str,
        iface: &Interface,
        at: TcAttachType,
    ) -> anyhow::Result<(Hold, bool)> {
        let pin = match (&self.pins, self.mode) {
            (Some(p), AttachMode::Tcx) => Some(p.link_path(iface.ifindex, at)),
            _ => None,
        };
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            match self.adopt_link(prog, path) {
                Ok(()) => return Ok((Hold::Pinned(path.clone()), true)),
                Err(e) => {
                    // Its interface went away (the link is defunct): attach anew.
                    info!(iface = %iface.name, error = %format!("{e:#}"), "a pinned link cannot be adopted; attaching anew");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let options = match self.mode {
            AttachMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::first()),
            AttachMode::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
        };
        let p = classifier(&mut self.ebpf, prog)?;
        let id = p
            .attach_with_options(&iface.name, at, options)
            .with_context(|| format!("cannot attach {prog} to {} ({at:?})", iface.name))?;
        let Some(path) = pin else {
            return Ok((Hold::Owned(prog, id), false));
        };
        let link = FdLink::try_from(p.take_link(id)?)
            .with_context(|| format!("the link of {prog} on {} is not a TCX link", iface.name))?;
        // Dropping the pinned link closes this descriptor only: the pin keeps it attached.
        link.pin(&path)
            .with_context(|| format!("cannot pin the link at {}", path.display()))?;
        Ok((Hold::Pinned(path), false))
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
            for hold in a.links {
                self.release(hold);
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
