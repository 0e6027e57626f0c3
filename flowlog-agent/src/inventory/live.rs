//! The live inventory: the agent's interfaces from rtnetlink link and address events (no
//! polling), who is behind each (owners, looked up off the event path and cached), and the
//! interfaces deleted during the open window.
//!
//! - Events: one rtnetlink socket subscribed to link and IPv4/IPv6 address groups; a dump at
//!   start, then every message applied in order ([`LinkTable`]). When the kernel reports lost
//!   events (`ENOBUFS`, an overrun), the table is dumped again.
//! - Owners: [`owners::find`] runs in a blocking task for veths whose peer is in another
//!   namespace and for tun/tap/macvtap devices, right after the link appears or changes, then
//!   again after 50, 100, 200 ... 6400 ms (a container's processes join its namespace after
//!   its veth exists, a pod's second container later still), and after a cut when the last
//!   lookup is 10 s old. A lookup that finds no guest keeps the guest already known: a
//!   stopping container keeps its identity.
//! - Deleted interfaces are kept, with their last name, addresses and owner, until the window
//!   that counted them is cut ([`Inventory::forget_deleted`]).
//!
//! Interfaces are keyed by ifindex within the agent's own network namespace (the one its
//! programs attach in); [`Inventory::netns`] names that namespace, so (netns, ifindex) is the
//! host-wide key ([`LinkKey`]).

use std::{
    collections::BTreeMap,
    os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle, MulticastGroup, new_multicast_connection,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::RouteNetlinkMessage,
    sys::AsyncSocket as _,
};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, error, info, warn};

use super::{
    discover::Interface,
    guest_id,
    links::{Applied, LinkKey, LinkTable},
    owners::{self, HostLink, Owner, OwnerOptions},
};

/// Delays between owner lookups after a link appears or changes.
const LOOKUP_BACKOFF: [Duration; 8] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
    Duration::from_millis(3200),
    Duration::from_millis(6400),
];
/// After the backoff, an owner is looked up again at a cut when its last lookup is this old.
const REFRESH_AFTER: Duration = Duration::from_secs(10);
/// Receive buffer of the event socket: room for a burst of thousands of link events (each a
/// few hundred bytes) before the kernel drops any.
const EVENT_BUFFER_BYTES: libc::c_int = 8 << 20;

/// What the lookups and the event task share with [`Inventory`].
struct Shared {
    table: LinkTable,
    /// Deleted interfaces, with when the deletion was seen.
    deleted: Vec<(Instant, Interface)>,
    /// When each candidate's owner is looked up next.
    schedule: OwnerSchedule,
}

/// The agent's interfaces, kept current by a background task.
pub struct Inventory {
    netns: u64,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    refresh: mpsc::UnboundedSender<()>,
    task: tokio::task::JoinHandle<()>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Inventory {
    fn drop(&mut self) {
        self.task.abort();
        self.connection.abort();
    }
}

/// The network namespace this process runs in: the inode of `/proc/self/ns/net`.
pub fn own_netns() -> anyhow::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net")
        .context("cannot read /proc/self/ns/net")?
        .ino())
}

impl Inventory {
    /// Subscribes to link and address events, reads every interface, and starts following
    /// the events. `owner_options`: where owners are looked up.
    pub async fn start(owner_options: OwnerOptions) -> anyhow::Result<Self> {
        let (mut connection, handle, messages) = new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .context("cannot open an rtnetlink socket for link and address events")?;
        let fd = connection.socket_mut().socket_ref().as_raw_fd();
        let size = EVENT_BUFFER_BYTES;
        // SAFETY: setsockopt on an open socket with a pointer to an int of the given size.
        // SO_RCVBUFFORCE (root or CAP_NET_ADMIN) goes beyond net.core.rmem_max.
        let forced = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if forced != 0 {
            debug!(error = %std::io::Error::last_os_error(), "cannot enlarge the rtnetlink event buffer");
        }
        let connection = tokio::spawn(connection);
        let table = dump(&handle).await?;
        let netns = own_netns()?;
        let now = Instant::now();
        let mut schedule = OwnerSchedule::default();
        for (ifindex, iface) in table.iter() {
            if is_owner_candidate(iface) {
                schedule.reset(*ifindex, now);
            }
        }
        // Debug: bad input found after this point must still be the only line a user sees.
        debug!(
            interfaces = table.len(),
            netns, "inventory: following link and address events"
        );
        let shared = Arc::new(Mutex::new(Shared {
            table,
            deleted: Vec::new(),
            schedule,
        }));
        let changed = Arc::new(Notify::new());
        let (refresh, refresh_rx) = mpsc::unbounded_channel();
        let events = EventTask {
            handle,
            messages,
            shared: shared.clone(),
            changed: changed.clone(),
            options: Arc::new(owner_options),
            refresh: refresh_rx,
        };
        let task = tokio::spawn(events.run());
        Ok(Inventory {
            netns,
            shared,
            changed,
            refresh,
            task,
            connection,
        })
    }

    /// The agent's network namespace (inode), the first half of every [`LinkKey`].
    pub fn netns(&self) -> u64 {
        self.netns
    }

    /// The key of the interface `ifindex` of the agent's namespace.
    pub fn key(&self, ifindex: u32) -> LinkKey {
        LinkKey {
            netns: self.netns,
            ifindex,
        }
    }

    /// Every interface now, by ifindex, with each guest's readable id: the live ones, and
    /// those deleted during the open window (`deleted`; a live interface that reuses a
    /// deleted one's ifindex wins). `owner_pending` marks those whose guest may still show up.
    pub fn interfaces(&self) -> BTreeMap<u32, Interface> {
        let mut out = BTreeMap::new();
        if let Ok(s) = self.shared.lock() {
            for (_, iface) in &s.deleted {
                let mut iface = iface.clone();
                iface.deleted = true;
                out.insert(iface.ifindex, iface);
            }
            for (ifindex, iface) in s.table.iter() {
                let mut iface = iface.clone();
                iface.owner_pending = s.schedule.in_backoff(*ifindex)
                    && !iface.owner.as_deref().is_some_and(guest_id::is_guest);
                out.insert(*ifindex, iface);
            }
        }
        guest_id::assign(&mut out);
        out
    }

    /// Resolves when an interface appeared, changed, went away or got its owner since the
    /// last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Forgets the interfaces whose deletion was seen before `cut_started` (taken just before
    /// the capture flipped its maps): everything they counted is in the cut that followed.
    pub fn forget_deleted(&self, cut_started: Instant) {
        if let Ok(mut s) = self.shared.lock() {
            s.deleted.retain(|(at, _)| *at >= cut_started);
        }
    }

    /// Looks up again the owners whose last lookup is old (after a cut: a pod's containers
    /// may have changed without any link event).
    pub fn refresh_owners(&self) {
        let _ = self.refresh.send(());
    }
}

/// Every link and address of the namespace, read with one dump each.
async fn dump(handle: &Handle) -> anyhow::Result<LinkTable> {
    let mut table = LinkTable::default();
    let mut links = handle.link().get().execute();
    while let Some(link) = links
        .try_next()
        .await
        .context("cannot list network interfaces (rtnetlink)")?
    {
        table.apply(&RouteNetlinkMessage::NewLink(link));
    }
    let mut addrs = handle.address().get().execute();
    while let Some(addr) = addrs
        .try_next()
        .await
        .context("cannot list interface addresses (rtnetlink)")?
    {
        table.add_dumped_address(&addr);
    }
    Ok(table)
}

/// Whether someone may be behind `iface`: a veth whose other end is in another namespace, or
/// a tun/tap/macvtap device (held by a VMM).
fn is_owner_candidate(iface: &Interface) -> bool {
    match iface.kind.as_deref() {
        Some("veth") => iface.link_netnsid.is_some(),
        Some("tun" | "macvtap") => true,
        _ => false,
    }
}

/// When each candidate's owner is looked up next.
#[derive(Debug, Default)]
struct OwnerSchedule {
    entries: BTreeMap<u32, ScheduleEntry>,
}

#[derive(Debug, Clone, Copy)]
struct ScheduleEntry {
    /// Lookups since the link appeared or last changed.
    attempts: usize,
    /// `None`: in flight, or done with the backoff.
    due: Option<Instant>,
    last: Option<Instant>,
}

impl OwnerSchedule {
    /// Starts the backoff over: the link appeared or changed.
    fn reset(&mut self, ifindex: u32, now: Instant) {
        let last = self.entries.get(&ifindex).and_then(|e| e.last);
        self.entries.insert(
            ifindex,
            ScheduleEntry {
                attempts: 0,
                due: Some(now),
                last,
            },
        );
    }

    fn remove(&mut self, ifindex: u32) {
        self.entries.remove(&ifindex);
    }

    /// Whether `ifindex` is still in its backoff after appearing or changing: a guest may yet
    /// be found behind it.
    fn in_backoff(&self, ifindex: u32) -> bool {
        self.entries
            .get(&ifindex)
            .is_some_and(|e| e.attempts <= LOOKUP_BACKOFF.len())
    }

    fn next_due(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.due).min()
    }

    /// The links due at `now`, marked in flight.
    fn take_due(&mut self, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        for (ifindex, e) in self.entries.iter_mut() {
            if e.due.is_some_and(|d| d <= now) {
                e.due = None;
                out.push(*ifindex);
            }
        }
        out
    }

    /// `ifindex` was looked up at `now`: the next lookup follows the backoff.
    fn looked_up(&mut self, ifindex: u32, now: Instant) {
        if let Some(e) = self.entries.get_mut(&ifindex) {
            // A change during the lookup already asked for a new one.
            if e.due.is_none() {
                e.due = LOOKUP_BACKOFF.get(e.attempts).map(|d| now + *d);
            }
            e.attempts += 1;
            e.last = Some(now);
        }
    }

    /// Links done with the backoff whose last lookup is older than [`REFRESH_AFTER`] become
    /// due.
    fn refresh_stale(&mut self, now: Instant) {
        for e in self.entries.values_mut() {
            let stale = e
                .last
                .is_none_or(|l| now.saturating_duration_since(l) >= REFRESH_AFTER);
            if e.due.is_none() && e.attempts > LOOKUP_BACKOFF.len() && stale {
                e.due = Some(now);
            }
        }
    }
}

/// What one lookup needs, owned (it runs on a blocking thread).
struct LookupRequest {
    ifindex: u32,
    name: String,
    kind: Option<String>,
    link_netnsid: Option<i32>,
    peer_ifindex: Option<u32>,
}

type LookupResult = (u32, String, anyhow::Result<Option<Owner>>);

struct EventTask {
    handle: Handle,
    messages: futures_channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    options: Arc<OwnerOptions>,
    refresh: mpsc::UnboundedReceiver<()>,
}

impl EventTask {
    async fn run(mut self) {
        let (results_tx, mut results) = mpsc::unbounded_channel::<Vec<LookupResult>>();
        let mut in_flight = false;
        loop {
            let next = if in_flight {
                None
            } else {
                self.shared.lock().ok().and_then(|s| s.schedule.next_due())
            };
            let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                msg = self.messages.next() => {
                    let Some((msg, _)) = msg else {
                        error!("the rtnetlink event socket closed: interfaces that appear from now on are not attached; restart the agent");
                        return;
                    };
                    let mut changed = self.on_message(msg).await;
                    // Apply what else is queued before telling the capture loop.
                    while let Ok((msg, _)) = self.messages.try_recv() {
                        changed |= self.on_message(msg).await;
                    }
                    if changed {
                        self.changed.notify_one();
                    }
                }
                _ = tokio::time::sleep_until(wake.into()), if next.is_some() => {
                    let batch = self.lookup_batch(Instant::now());
                    if !batch.is_empty() {
                        in_flight = true;
                        let options = self.options.clone();
                        let tx = results_tx.clone();
                        tokio::task::spawn_blocking(move || {
                            let _ = tx.send(lookup(&batch, &options));
                        });
                    }
                }
                Some(done) = results.recv() => {
                    in_flight = false;
                    if self.on_lookups(done) {
                        self.changed.notify_one();
                    }
                }
                Some(()) = self.refresh.recv() => {
                    if let Ok(mut s) = self.shared.lock() {
                        s.schedule.refresh_stale(Instant::now());
                    }
                }
            }
        }
    }

    /// Applies one message; whether the interfaces changed.
    async fn on_message(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) -> bool {
        match msg.payload {
            NetlinkPayload::InnerMessage(m) => self.apply(&m),
            NetlinkPayload::Overrun(_) => {
                warn!(
                    "rtnetlink events were lost (socket buffer overrun): reading every interface again"
                );
                self.resync().await
            }
            _ => false,
        }
    }

    fn apply(&mut self, m: &RouteNetlinkMessage) -> bool {
        let now = Instant::now();
        let Ok(mut guard) = self.shared.lock() else {
            return false;
        };
        let s = &mut *guard;
        match s.table.apply(m) {
            Applied::Unchanged => false,
            Applied::Added(ifindex) | Applied::Changed(ifindex) => {
                if let Some(iface) = s.table.get(ifindex) {
                    debug!(iface = %iface.name, ifindex, up = iface.up, kind = ?iface.kind, "link event");
                    if is_owner_candidate(iface) {
                        s.schedule.reset(ifindex, now);
                    }
                }
                true
            }
            Applied::Removed(gone) => {
                debug!(iface = %gone.name, ifindex = gone.ifindex, "link deleted");
                s.schedule.remove(gone.ifindex);
                s.deleted.push((now, *gone));
                true
            }
        }
    }

    async fn resync(&mut self) -> bool {
        let fresh = match dump(&self.handle).await {
            Ok(t) => t,
            Err(e) => {
                error!(error = %format!("{e:#}"), "cannot read the interfaces again");
                return false;
            }
        };
        let now = Instant::now();
        let Ok(mut guard) = self.shared.lock() else {
            return false;
        };
        let s = &mut *guard;
        for gone in s.table.replace(fresh) {
            s.schedule.remove(gone.ifindex);
            s.deleted.push((now, gone));
        }
        for (ifindex, iface) in s.table.iter() {
            if is_owner_candidate(iface) && iface.owner.is_none() {
                s.schedule.reset(*ifindex, now);
            }
        }
        true
    }

    /// The due links' lookup requests.
    fn lookup_batch(&mut self, now: Instant) -> Vec<LookupRequest> {
        let Ok(mut s) = self.shared.lock() else {
            return Vec::new();
        };
        let due = s.schedule.take_due(now);
        due.into_iter()
            .filter_map(|ifindex| s.table.get(ifindex))
            .map(|i| LookupRequest {
                ifindex: i.ifindex,
                name: i.name.clone(),
                kind: i.kind.clone(),
                link_netnsid: i.link_netnsid,
                peer_ifindex: i.peer_ifindex,
            })
            .collect()
    }

    /// Records the lookups' results; whether an owner changed.
    fn on_lookups(&mut self, done: Vec<LookupResult>) -> bool {
        let now = Instant::now();
        let Ok(mut guard) = self.shared.lock() else {
            return false;
        };
        let s = &mut *guard;
        let mut changed = false;
        for (ifindex, name, result) in done {
            s.schedule.looked_up(ifindex, now);
            let Some(iface) = s.table.get_mut(ifindex).filter(|i| i.name == name) else {
                continue; // deleted or renamed meanwhile
            };
            match result {
                // A guest that is gone (its processes exited, the namespace is emptying)
                // keeps its identity: its last flows are still to be written.
                Ok(Some(owner))
                    if iface.owner.as_deref() != Some(&owner)
                        && (guest_id::is_guest(&owner)
                            || !iface.owner.as_deref().is_some_and(guest_id::is_guest)) =>
                {
                    if guest_id::is_guest(&owner) {
                        // Info: who is behind an interface is what an operator reads the log for (the
                        // inventory starts after every check that can refuse a start).
                        info!(iface = %name, ifindex, owner = %describe(&owner), "owner found");
                    } else {
                        debug!(iface = %name, ifindex, owner = %describe(&owner), "no guest behind the interface (yet)");
                    }
                    iface.owner = Some(Arc::new(owner));
                    changed = true;
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(iface = %name, ifindex, error = %format!("{e:#}"), "owner lookup failed")
                }
            }
        }
        changed
    }
}

/// Runs the lookups of one batch (blocking: reads /proc, enters namespaces).
fn lookup(batch: &[LookupRequest], options: &OwnerOptions) -> Vec<LookupResult> {
    batch
        .iter()
        .map(|r| {
            let link = HostLink {
                ifindex: r.ifindex,
                name: &r.name,
                kind: r.kind.as_deref(),
                link_netnsid: r.link_netnsid,
                peer_ifindex: r.peer_ifindex,
            };
            (r.ifindex, r.name.clone(), owners::find(&link, options))
        })
        .collect()
}

/// One line about an owner, for the log.
fn describe(owner: &Owner) -> String {
    use owners::OwnerKind;
    let who = match &owner.kind {
        OwnerKind::Unknown => "no known container".to_string(),
        OwnerKind::Process(p) => format!("process {} (pid {})", p.comm, p.pid),
        OwnerKind::Containers(cs) => cs
            .iter()
            .map(|c| format!("container {} ({})", c.name.as_deref().unwrap_or("-"), c.id))
            .collect::<Vec<_>>()
            .join(", "),
        OwnerKind::Vm(vm) => format!(
            "VM {} (pid {}, {})",
            vm.name.as_deref().or(vm.uuid.as_deref()).unwrap_or("-"),
            vm.pid,
            vm.vmm
        ),
    };
    match &owner.guest_ifname {
        Some(ifname) => format!("{who}, guest interface {ifname}"),
        None => who,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_looked_up_at_once_then_with_backoff_then_on_refresh() {
        let t0 = Instant::now();
        let mut s = OwnerSchedule::default();
        s.reset(7, t0);
        assert_eq!(s.next_due(), Some(t0));
        assert_eq!(s.take_due(t0), [7]);
        assert_eq!(s.next_due(), None, "in flight");
        let mut now = t0;
        for delay in LOOKUP_BACKOFF {
            s.looked_up(7, now);
            assert_eq!(s.next_due(), Some(now + delay));
            assert!(
                s.take_due(now + delay - Duration::from_millis(1))
                    .is_empty()
            );
            now += delay;
            assert_eq!(s.take_due(now), [7]);
        }
        assert!(s.in_backoff(7));
        s.looked_up(7, now);
        assert_eq!(s.next_due(), None, "done with the backoff");
        assert!(!s.in_backoff(7));
        s.refresh_stale(now + Duration::from_secs(1));
        assert_eq!(s.next_due(), None, "looked up recently");
        let later = now + REFRESH_AFTER;
        s.refresh_stale(later);
        assert_eq!(s.take_due(later), [7]);
        // A change starts over.
        s.looked_up(7, later);
        s.reset(7, later);
        assert_eq!(s.take_due(later), [7]);
        s.looked_up(7, later);
        assert_eq!(s.next_due(), Some(later + LOOKUP_BACKOFF[0]));
        s.remove(7);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_change_during_a_lookup_asks_for_a_new_one() {
        let t0 = Instant::now();
        let mut s = OwnerSchedule::default();
        s.reset(3, t0);
        assert_eq!(s.take_due(t0), [3]);
        s.reset(3, t0);
        s.looked_up(3, t0);
        assert_eq!(s.next_due(), Some(t0));
    }

    #[test]
    fn candidates_are_foreign_veths_and_tun_tap_devices() {
        let iface = |kind: &str, netnsid: Option<i32>| Interface {
            kind: Some(kind.into()),
            link_netnsid: netnsid,
            ..Interface::default()
        };
        assert!(is_owner_candidate(&iface("veth", Some(0))));
        assert!(!is_owner_candidate(&iface("veth", None)));
        assert!(is_owner_candidate(&iface("tun", None)));
        assert!(is_owner_candidate(&iface("macvtap", None)));
        assert!(!is_owner_candidate(&iface("bridge", None)));
        assert!(!is_owner_candidate(&Interface::default()));
    }
}
