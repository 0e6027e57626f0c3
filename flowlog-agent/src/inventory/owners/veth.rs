//! The guest behind a veth: the peer's namespace, the peer interface's name and addresses in
//! it, and the containers whose processes live in it.
//!
//! 1. The host end's `IFLA_LINK_NETNSID` names the peer namespace (as an nsid of the agent's
//!    namespace) and `IFLA_LINK` the peer's ifindex there.
//! 2. The peer link and its addresses are read with that nsid as the request's target
//!    namespace (see [`super::rtnl`]).
//! 3. The namespace's processes: every `/proc/<pid>/ns/net` (and `/run/netns/*`) distinct
//!    namespace is asked for its nsid (`RTM_GETNSID` by fd) until one has the peer's nsid;
//!    the processes with that namespace are the guest's.
//! 4. Their cgroups name the containers ([`super::cgroup`]); the runtimes' files their names
//!    and pods ([`super::containers`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;

use anyhow::{Context, Result};

use super::rtnl::{Link, Rtnl};
use super::{Container, HostLink, Owner, OwnerKind, OwnerOptions, cgroup, containers, procs};

/// The owner of a veth whose peer is in another namespace; None when the peer is in the
/// agent's own namespace (a veth pair between two host interfaces has no guest).
pub fn find(rtnl: &mut Rtnl, link: &HostLink<'_>, opts: &OwnerOptions) -> Result<Option<Owner>> {
    let (netnsid, peer_ifindex) = match (link.link_netnsid, link.peer_ifindex) {
        (Some(nsid), peer) => (nsid, peer),
        (None, _) => {
            // The caller may not have read them: ask once.
            let Some(here) = rtnl.link(link.ifindex, None)? else {
                return Ok(None);
            };
            match here.link_netnsid {
                Some(nsid) => (nsid, here.link),
                None => return Ok(None),
            }
        }
    };

    let guest_link = guest_link(rtnl, link.ifindex, netnsid, peer_ifindex)?;
    let guest_addrs = match &guest_link {
        Some(l) => rtnl
            .addresses(netnsid, l.ifindex)
            .with_context(|| format!("reading the addresses of {} in nsid {netnsid}", l.name))?,
        None => Vec::new(),
    };

    let pids = namespace_processes(rtnl, opts, netnsid)?;
    let containers = containers_of(opts, &pids);
    Ok(Some(Owner {
        kind: if containers.is_empty() {
            OwnerKind::Unknown
        } else {
            OwnerKind::Containers(containers)
        },
        guest_ifname: guest_link.map(|l| l.name),
        guest_addrs,
        ecs: None,
    }))
}

/// The peer link in namespace `netnsid`: the one at `peer_ifindex` when its IFLA_LINK points
/// back at the host end, else the one whose IFLA_LINK does.
fn guest_link(
    rtnl: &mut Rtnl,
    host_ifindex: u32,
    netnsid: i32,
    peer_ifindex: Option<u32>,
) -> Result<Option<Link>> {
    if let Some(peer) = peer_ifindex
        && let Some(l) = rtnl
            .link(peer, Some(netnsid))
            .with_context(|| format!("reading link {peer} in nsid {netnsid}"))?
        && l.link == Some(host_ifindex)
    {
        return Ok(Some(l));
    }
    let links = rtnl
        .links(netnsid)
        .with_context(|| format!("listing the links of nsid {netnsid}"))?;
    Ok(links
        .into_iter()
        .find(|l| l.link == Some(host_ifindex) && l.link_netnsid.is_some()))
}

/// The processes in the namespace the agent's namespace calls `netnsid` (empty when no process
/// lives there: a namespace kept only by a bind mount, with no containers).
fn namespace_processes(rtnl: &mut Rtnl, opts: &OwnerOptions, netnsid: i32) -> Result<Vec<u32>> {
    let by_ns = procs::processes_by_netns(&opts.proc_root)
        .with_context(|| format!("listing processes in {}", opts.proc_root.display()))?;
    let own = procs::net_ns_of(&opts.proc_root, "self");
    for (ino, pids) in by_ns {
        if Some(ino) == own {
            continue;
        }
        // Any of its processes opens the namespace; the first that has not exited.
        let fd = pids
            .iter()
            .find_map(|pid| File::open(opts.proc_root.join(pid.to_string()).join("ns/net")).ok());
        let Some(fd) = fd else { continue };
        if rtnl.nsid_of(fd.as_fd())? == Some(netnsid) {
            return Ok(pids);
        }
    }
    Ok(Vec::new())
}

/// The containers the processes belong to, in [`containers::order`].
fn containers_of(opts: &OwnerOptions, pids: &[u32]) -> Vec<Container> {
    // id -> (container, earliest process start)
    let mut found: BTreeMap<String, (cgroup::CgroupContainer, u64)> = BTreeMap::new();
    for &pid in pids {
        let Some(c) = procs::cgroup(&opts.proc_root, pid)
            .as_deref()
            .and_then(cgroup::container_of)
        else {
            continue;
        };
        let start = procs::start_time(&opts.proc_root, pid).unwrap_or(u64::MAX);
        let entry = found.entry(c.id.clone()).or_insert((c, start));
        entry.1 = entry.1.min(start);
    }
    let metas: BTreeMap<String, containers::ContainerMeta> = found
        .values()
        .map(|(c, _)| {
            (
                c.id.clone(),
                containers::lookup(&opts.host_root, &c.id, c.runtime),
            )
        })
        .collect();
    // A container another one names as its sandbox is an infra container too.
    let named_sandboxes: Vec<&str> = metas
        .values()
        .filter_map(|m| m.sandbox_id.as_deref())
        .collect();
    let mut list: Vec<(Container, u64, bool)> = found
        .into_values()
        .map(|(c, start)| {
            let meta = metas.get(&c.id).cloned().unwrap_or_default();
            let sandbox = meta.sandbox || named_sandboxes.contains(&c.id.as_str());
            let container = Container {
                runtime: c.runtime,
                name: meta.name,
                pod_uid: meta.pod_uid.or(c.pod_uid),
                pod_name: meta.pod_name,
                pod_namespace: meta.pod_namespace,
                id: c.id,
            };
            (container, start, sandbox)
        })
        .collect();
    containers::order(&mut list);
    list.into_iter().map(|(c, _, _)| c).collect()
}
