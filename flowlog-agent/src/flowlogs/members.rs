//! Which interfaces each flow log's part of a cut comes from: every interface that was the flow
//! log's member at any moment since the last cut, not only those that are members at the cut.
//! An interface renamed out of a flow log, or gone down under a flow log of the interfaces that
//! are up, is detached at once, but what its programs counted before is still in the maps: the
//! cut must still hand those flows to the flow log (with the interface as it was while it was
//! a member), or they would be lost without a trace.
//!
//! It also keeps, per interface, the primary addresses it had earlier in the open window
//! ([`Interface::earlier_primaries`]): flows sent from an address that was the primary when
//! they were counted keep it in their records (see `WatchedInterface::local_address`).

use std::{collections::BTreeMap, net::IpAddr};

use crate::inventory::discover::Interface;

/// Members by flow log id, then ifindex.
pub type Membership = BTreeMap<String, BTreeMap<u32, Interface>>;

/// The members of each flow log since the last cut.
#[derive(Debug, Default)]
pub struct CutMembers {
    since_cut: Membership,
}

impl CutMembers {
    /// Notes the members now (call on every change of membership).
    pub fn remember(&mut self, now: &Membership) {
        for (id, members) in now {
            let kept = self.since_cut.entry(id.clone()).or_default();
            for iface in members.values() {
                update_view(kept, iface.clone());
            }
        }
    }

    /// The members a cut taken now hands each flow log: today's, plus those that left since
    /// the last cut (as they were when last seen).
    pub fn for_cut(&self, now: &Membership) -> Membership {
        let mut out = self.since_cut.clone();
        for (id, members) in now {
            let kept = out.entry(id.clone()).or_default();
            for iface in members.values() {
                update_view(kept, iface.clone());
            }
        }
        out.retain(|id, _| now.contains_key(id));
        out
    }

    /// A cut was taken: the next one starts from today's members `now`. (Each flow log's
    /// window keeps the earlier primaries of a window that spans several cuts.)
    pub fn cut_done(&mut self, now: &Membership) {
        self.since_cut = now.clone();
    }
}

/// Puts `fresh`, the latest view of an interface, into `views`; primary addresses the earlier
/// view had (and those it had carried) and `fresh` has not become
/// [`Interface::earlier_primaries`] of the new view.
pub fn update_view(views: &mut BTreeMap<u32, Interface>, mut fresh: Interface) {
    if let Some(old) = views.get(&fresh.ifindex) {
        let mut earlier = old.earlier_primaries.clone();
        earlier.extend(primaries(old).into_iter().flatten());
        for a in fresh.earlier_primaries.drain(..) {
            if !earlier.contains(&a) {
                earlier.push(a);
            }
        }
        let current = primaries(&fresh);
        earlier.retain(|a| !current.contains(&Some(*a)));
        let mut seen = Vec::new();
        earlier.retain(|a| {
            let first = !seen.contains(a);
            seen.push(*a);
            first
        });
        fresh.earlier_primaries = earlier;
    }
    views.insert(fresh.ifindex, fresh);
}

fn primaries(i: &Interface) -> [Option<IpAddr>; 2] {
    [i.ipv4.map(IpAddr::V4), i.ipv6.map(IpAddr::V6)]
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn iface(ifindex: u32, name: &str, v4: Option<[u8; 4]>) -> Interface {
        Interface {
            name: name.into(),
            ifindex,
            ipv4: v4.map(Ipv4Addr::from),
            ..Interface::default()
        }
    }

    fn one(id: &str, ifaces: &[Interface]) -> Membership {
        [(
            id.to_string(),
            ifaces.iter().map(|i| (i.ifindex, i.clone())).collect(),
        )]
        .into()
    }

    #[test]
    fn an_interface_that_left_stays_in_the_cut_as_it_was() {
        let mut m = CutMembers::default();
        let before = one("fl", &[iface(4, "eth1", None), iface(5, "eth2", None)]);
        m.remember(&before);
        // eth2 renamed out of the flow log.
        let now = one("fl", &[iface(4, "eth1", None)]);
        m.remember(&now);
        let cut = m.for_cut(&now);
        assert_eq!(cut["fl"].keys().copied().collect::<Vec<_>>(), [4, 5]);
        assert_eq!(cut["fl"][&5].name, "eth2");
        m.cut_done(&now);
        assert_eq!(
            m.for_cut(&now),
            now,
            "the next cut has only today's members"
        );
    }

    #[test]
    fn a_deleted_flow_log_gets_no_part() {
        let mut m = CutMembers::default();
        m.remember(&one("fl", &[iface(4, "eth1", None)]));
        assert!(m.for_cut(&Membership::new()).is_empty());
    }

    #[test]
    fn a_changed_primary_is_kept_as_an_earlier_one() {
        let mut views = BTreeMap::new();
        update_view(&mut views, iface(4, "eth1", Some([10, 0, 0, 1])));
        update_view(&mut views, iface(4, "eth1", None));
        update_view(&mut views, iface(4, "eth1", Some([10, 0, 0, 3])));
        let ip = |d| IpAddr::V4(Ipv4Addr::new(10, 0, 0, d));
        assert_eq!(views[&4].earlier_primaries, [ip(1)]);
        // Back to .1: .3 becomes the earlier one, .1 is current.
        update_view(&mut views, iface(4, "eth1", Some([10, 0, 0, 1])));
        assert_eq!(views[&4].earlier_primaries, [ip(3)]);
        // Nothing changes: nothing is added.
        update_view(&mut views, iface(4, "eth1", Some([10, 0, 0, 1])));
        assert_eq!(views[&4].earlier_primaries, [ip(3)]);
    }
}
