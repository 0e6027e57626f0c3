//! The kernel's drop reasons by name (from its BTF), and which of them are REJECT.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;
use flowlog_common::MAX_REJECT_REASON;

use crate::capture::reject::btf::KernelBtf;

/// Prefix of every member of `enum skb_drop_reason` that is a drop reason.
const REASON_PREFIX: &str = "SKB_DROP_REASON_";

/// Drop reasons that are a policy's decision, as AWS's REJECT is a security group's or network
/// ACL's decision:
/// - `NETFILTER_DROP`: an nftables/iptables rule (any hook, any family).
/// - `TC_INGRESS`, `TC_EGRESS`: a TC program or filter that runs after flowlog's.
/// - `XDP`: a generic-mode XDP program (native XDP drops happen before any skb exists and are
///   invisible to the kernel's drop tracepoint).
/// - `BPF_CGROUP_EGRESS`: a cgroup egress program (e.g. systemd's `IPAddressDeny=`).
/// - `SOCKET_FILTER`: a cgroup ingress program (the kernel reports it as SOCKET_FILTER), but
///   also any socket's own filter, see [`DEFAULT_REJECT_REASONS`].
///
/// A drop for one of these is REJECT (when in the REJECT set) even if a raw or packet socket had
/// received a copy of the packet; other reasons are exempted then (see the kfree_skb program).
pub const POLICY_REASONS: &[&str] = &[
    "NETFILTER_DROP",
    "TC_INGRESS",
    "TC_EGRESS",
    "XDP",
    "BPF_CGROUP_EGRESS",
    "SOCKET_FILTER",
];

/// The reasons that are REJECT unless `--reject-reasons` says otherwise: the
/// [`POLICY_REASONS`] without `SOCKET_FILTER`. Names this kernel does not have are left out.
///
/// - Not `SOCKET_FILTER`: besides cgroup ingress programs, the kernel gives that reason when a
///   socket's own filter refuses a packet, and raw sockets get private copies: iputils `ping`
///   attaches a filter to its raw socket that refuses every ICMP message meant for another
///   ping, so with two pings running, each one's replies would be REJECT (and taken out of
///   ACCEPT) although they were delivered. Hosts with cgroup ingress firewalls opt in.
/// - Not `NO_SOCKET` (nor the other "nobody listened" reasons): a packet to a closed port is
///   the host answering, and AWS logs it as ACCEPT; REJECT there means a security group or
///   network ACL refused it. Opt in with `--reject-reasons` to see closed-port traffic as
///   REJECT.
pub const DEFAULT_REJECT_REASONS: &[&str] = &[
    "NETFILTER_DROP",
    "TC_INGRESS",
    "TC_EGRESS",
    "XDP",
    "BPF_CGROUP_EGRESS",
];

/// The kernel's drop reasons by value, decoded from its BTF (never from a table here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReasons {
    names: BTreeMap<u32, String>,
}

impl DropReasons {
    /// Members of `enum skb_drop_reason` named `SKB_DROP_REASON_*`, below `..._MAX`, without the
    /// prefix (`NETFILTER_DROP`). `SKB_NOT_DROPPED_YET` and `SKB_CONSUMED` are not drops.
    pub fn from_btf(btf: &KernelBtf) -> anyhow::Result<Self> {
        let members = btf.enum_members("skb_drop_reason")?;
        Ok(Self::from_members(members))
    }

    /// From `enum skb_drop_reason`'s (name, value) members.
    pub fn from_members(members: Vec<(String, u32)>) -> Self {
        let max = members
            .iter()
            .find(|(n, _)| n == "SKB_DROP_REASON_MAX")
            .map(|(_, v)| *v)
            .unwrap_or(u32::MAX);
        let names = members
            .into_iter()
            .filter(|(_, v)| *v < max)
            .filter_map(|(n, v)| n.strip_prefix(REASON_PREFIX).map(|s| (v, s.to_string())))
            .collect();
        DropReasons { names }
    }

    /// The name of reason `code`; a value this kernel's BTF did not list (a subsystem reason,
    /// `subsystem << 16 | n`) is written as `DROP_REASON_<code>`.
    pub fn name(&self, code: u32) -> String {
        match self.names.get(&code) {
            Some(n) => n.clone(),
            None => format!("DROP_REASON_{code}"),
        }
    }

    /// Whether the kernel's BTF listed no drop reason at all.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn code(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(c, _)| *c)
    }

    /// Every reason, by value.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().map(|(c, n)| (*c, n.as_str()))
    }

    /// The REJECT set: `requested` names (case-insensitive, with or without the
    /// `SKB_DROP_REASON_` prefix), or [`DEFAULT_REJECT_REASONS`] where this kernel has them.
    /// An unknown name is an error that lists the valid ones.
    pub fn reject_set(&self, requested: Option<&[String]>) -> anyhow::Result<BTreeSet<u32>> {
        let Some(requested) = requested else {
            return Ok(DEFAULT_REJECT_REASONS
                .iter()
                .filter_map(|n| self.code(n))
                .collect());
        };
        let mut set = BTreeSet::new();
        for raw in requested {
            let upper = raw.trim().to_ascii_uppercase();
            let name = upper.strip_prefix(REASON_PREFIX).unwrap_or(&upper);
            match self.code(name) {
                Some(c) if c < MAX_REJECT_REASON => {
                    set.insert(c);
                }
                _ => {
                    let valid: Vec<&str> = self.names.values().map(String::as_str).collect();
                    bail!(
                        "unknown drop reason {raw:?} in --reject-reasons; this kernel's reasons are: {}",
                        valid.join(",")
                    );
                }
            }
        }
        Ok(set)
    }
}

impl DropReasons {
    /// The [`POLICY_REASONS`] this kernel has.
    pub fn policy_set(&self) -> BTreeSet<u32> {
        POLICY_REASONS.iter().filter_map(|n| self.code(n)).collect()
    }

    /// Names of the reasons in `reject` that are not a policy's: their drops are not REJECT
    /// when a raw or packet socket received a copy of the packet.
    pub fn exemptible(&self, reject: &BTreeSet<u32>) -> Vec<String> {
        reject
            .difference(&self.policy_set())
            .map(|r| self.name(*r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::capture::reject::btf::VMLINUX_BTF;

    fn kernel_reasons() -> DropReasons {
        DropReasons::from_btf(&KernelBtf::open(Path::new(VMLINUX_BTF)).expect("kernel BTF"))
            .expect("drop reasons")
    }

    /// The tracefs format file of `skb:kfree_skb` prints reasons with the kernel's own
    /// `{ value, "NAME" }` table: an independent ground truth for the BTF decoding.
    fn tracefs_reasons() -> BTreeMap<u32, String> {
        let format = [
            "/sys/kernel/tracing/events/skb/kfree_skb/format",
            "/sys/kernel/debug/tracing/events/skb/kfree_skb/format",
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .expect("tracefs is mounted (mount -t tracefs tracefs /sys/kernel/tracing)");
        let table = format
            .split("__print_symbolic(REC->reason,")
            .nth(1)
            .expect("a symbolic reason table");
        let mut out = BTreeMap::new();
        for entry in table.split('{').skip(1) {
            let (value, rest) = entry.split_once(',').expect("{ value, \"NAME\" }");
            let name = rest.split('"').nth(1).expect("quoted name");
            out.insert(
                value.trim().parse::<u32>().expect("numeric value"),
                name.to_string(),
            );
        }
        out
    }

    #[test]
    fn reason_names_decoded_from_btf_match_the_kernels_own_table() {
        let btf = kernel_reasons();
        let mut tracefs = tracefs_reasons();
        // The trace table also prints the MAX sentinel, which is not a reason.
        let max = tracefs
            .iter()
            .find(|(_, n)| n.as_str() == "MAX")
            .map(|(v, _)| *v)
            .expect("MAX entry");
        tracefs.remove(&max);
        let decoded: BTreeMap<u32, String> = btf.iter().map(|(c, n)| (c, n.to_string())).collect();
        assert_eq!(decoded, tracefs);
        let netfilter_drop = tracefs_code(&tracefs, "NETFILTER_DROP");
        assert_eq!(btf.code("NETFILTER_DROP"), Some(netfilter_drop));
        assert_eq!(
            btf.code("NO_SOCKET"),
            Some(tracefs_code(&tracefs, "NO_SOCKET"))
        );
        assert_eq!(btf.name(netfilter_drop), "NETFILTER_DROP");
        // A subsystem's reason (high 16 bits set) that this kernel does not name.
        assert_eq!(btf.name(0x0003_0001), "DROP_REASON_196609");
    }

    /// The value tracefs gives reason `name` on this kernel.
    fn tracefs_code(tracefs: &BTreeMap<u32, String>, name: &str) -> u32 {
        tracefs
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(v, _)| *v)
            .unwrap_or_else(|| panic!("this kernel has no drop reason {name}"))
    }

    #[test]
    fn default_reject_set_is_the_policy_drops_this_kernel_has() {
        let r = kernel_reasons();
        let set: Vec<String> = r
            .reject_set(None)
            .unwrap()
            .into_iter()
            .map(|c| r.name(c))
            .collect();
        // The policy drops (NO_SOCKET and SOCKET_FILTER are opt-in) that this kernel has, in
        // its order (by value, as tracefs numbers them).
        let tracefs = tracefs_reasons();
        let mut want: Vec<(u32, &str)> = [
            "NETFILTER_DROP",
            "BPF_CGROUP_EGRESS",
            "TC_EGRESS",
            "XDP",
            "TC_INGRESS",
        ]
        .into_iter()
        .filter_map(|name| {
            tracefs
                .iter()
                .find(|(_, n)| n.as_str() == name)
                .map(|(v, _)| (*v, name))
        })
        .collect();
        want.sort();
        let want: Vec<&str> = want.into_iter().map(|(_, n)| n).collect();
        assert!(want.contains(&"NETFILTER_DROP"), "{want:?}");
        assert_eq!(set, want);
    }

    #[test]
    fn only_reasons_outside_the_policy_set_are_exempted_for_raw_sockets() {
        let r = kernel_reasons();
        let default = r.reject_set(None).unwrap();
        assert_eq!(r.exemptible(&default), Vec::<String>::new());
        let req = ["netfilter_drop", "no_socket", "socket_filter", "TCP_CSUM"].map(String::from);
        let chosen = r.reject_set(Some(&req)).unwrap();
        assert_eq!(r.exemptible(&chosen), ["NO_SOCKET", "TCP_CSUM"]);
    }

    #[test]
    fn requested_reasons_accept_prefix_and_case_and_reject_unknown_names() {
        let r = kernel_reasons();
        let req = vec![
            "netfilter_drop".to_string(),
            "SKB_DROP_REASON_TCP_CSUM".to_string(),
        ];
        let tracefs = tracefs_reasons();
        assert_eq!(
            r.reject_set(Some(&req)).unwrap(),
            BTreeSet::from([
                tracefs_code(&tracefs, "TCP_CSUM"),
                tracefs_code(&tracefs, "NETFILTER_DROP")
            ])
        );
        let e = r
            .reject_set(Some(&["FIREWALL".to_string()]))
            .unwrap_err()
            .to_string();
        // Listed by value, as tracefs numbers them (without the MAX sentinel).
        let names: Vec<&str> = tracefs
            .values()
            .map(String::as_str)
            .filter(|n| *n != "MAX")
            .collect();
        assert_eq!(
            e,
            format!(
                "unknown drop reason \"FIREWALL\" in --reject-reasons; this kernel's reasons are: {}",
                names.join(",")
            )
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn enum_without_the_prefix_and_sentinels_is_filtered() {
        let r = DropReasons::from_members(vec![
            ("SKB_NOT_DROPPED_YET".into(), 0),
            ("SKB_CONSUMED".into(), 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED".into(), 2),
            ("SKB_DROP_REASON_NO_SOCKET".into(), 3),
            ("SKB_DROP_REASON_MAX".into(), 4),
            ("SKB_DROP_REASON_SUBSYS_MASK".into(), 0xffff_0000),
        ]);
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            [(2, "NOT_SPECIFIED"), (3, "NO_SOCKET")]
        );
    }
}
