//! What a record says that is not in the packet counters: the AWS identity of the host and of
//! each of its ENIs (account, region, AZ id, VPC, subnet, instance, ENI id), the routes that
//! decide `traffic-path`, and AWS's published service ranges for `pkt-*-aws-service`.
//!
//! Each value comes from the first source that knows it: EC2 instance metadata (IMDSv2, see
//! [`crate::inventory::imds`]), then the command line, then what AWS writes when it does not know (`-`,
//! and `unknown` for the account).

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::{
    inventory::aws_ranges::AwsIpRanges,
    inventory::imds::{Eni, ImdsInfo},
};

/// What the command line says about the host's identity, for the values instance metadata
/// does not give (the `run` flags of the same names).
#[derive(Debug, Clone, Default)]
pub struct MetadataConfig {
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub az_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub instance_id: Option<String>,
    /// `IFACE=ID` pairs.
    pub interface_ids: Vec<String>,
    pub sublocation_type: Option<String>,
    pub sublocation_id: Option<String>,
    pub vpc_cidrs: Vec<IpNet>,
    pub traffic_paths: Vec<(IpNet, u8)>,
    pub aws_ip_ranges: Option<PathBuf>,
    pub imds_endpoint: String,
    pub no_imds: bool,
}

/// A value that lands in a record or a key must be one token.
pub fn check_token(what: &str, v: &str) -> anyhow::Result<()> {
    if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '/') {
        bail!("invalid {what} {v:?}: it must be one word without spaces or '/'");
    }
    Ok(())
}

/// `sublocation-type` values AWS writes.
pub const SUBLOCATION_TYPES: [&str; 3] = ["wavelength", "outpost", "localzone"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Host-wide values (those of the primary ENI where they are per ENI).
    pub account_id: String,
    pub region: String,
    pub az_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub instance_id: String,
    pub sublocation_type: String,
    pub sublocation_id: String,
    /// CIDR blocks of the host's VPC, primary IPv4 block first: destinations inside them have
    /// `traffic-path` 1, and the Amazon DNS resolver is the primary block's base + 2.
    pub vpc_cidrs: Vec<IpNet>,
    /// `--traffic-path CIDR=CODE` routes, longest prefix first.
    pub traffic_paths: Vec<(IpNet, u8)>,
    /// ENIs from instance metadata, by ENI id.
    pub enis: BTreeMap<String, Eni>,
    /// `--interface-id NAME=ID`: interface ids for interfaces no ENI matches.
    pub interface_ids: BTreeMap<String, String>,
    /// AWS's ip-ranges.json, when `--aws-ip-ranges` was given.
    pub aws_ip_ranges: Option<Arc<AwsIpRanges>>,
}

impl Default for Metadata {
    fn default() -> Self {
        let dash = || "-".to_string();
        Metadata {
            account_id: "unknown".into(),
            region: dash(),
            az_id: dash(),
            vpc_id: dash(),
            subnet_id: dash(),
            instance_id: dash(),
            sublocation_type: dash(),
            sublocation_id: dash(),
            vpc_cidrs: Vec::new(),
            traffic_paths: Vec::new(),
            enis: BTreeMap::new(),
            interface_ids: BTreeMap::new(),
            aws_ip_ranges: None,
        }
    }
}

/// Parses `NAME=VALUE`.
fn split_pair<'a>(flag: &str, v: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    match v.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
        _ => bail!("invalid {flag} {v:?}: write it as NAME=VALUE"),
    }
}

/// Parses `--traffic-path CIDR=CODE`.
pub fn parse_traffic_path(v: &str) -> anyhow::Result<(IpNet, u8)> {
    let (cidr, code) = split_pair("--traffic-path", v)?;
    let net: IpNet = cidr
        .parse()
        .with_context(|| format!("invalid --traffic-path {v:?}: {cidr:?} is not a CIDR block"))?;
    match code.parse::<u8>() {
        Ok(c @ 1..=8) => Ok((net.trunc(), c)),
        _ => bail!("invalid --traffic-path {v:?}: the code must be 1-8 (AWS's traffic-path codes)"),
    }
}

impl Metadata {
    /// Combines instance metadata (if it answered) with the command line.
    pub fn resolve(args: &MetadataConfig, imds: Option<&ImdsInfo>) -> anyhow::Result<Self> {
        let primary = imds.and_then(ImdsInfo::primary_eni);
        let pick = |flag: &str,
                    from_imds: Option<&String>,
                    given: &Option<String>,
                    unknown: &str| match (from_imds, given) {
            (Some(i), Some(g)) if i != g => {
                warn!(flag, instance_metadata = %i, given = %g,
                          "instance metadata and the flag disagree: using instance metadata");
                i.clone()
            }
            (Some(i), _) => i.clone(),
            (None, Some(g)) => g.clone(),
            (None, None) => unknown.to_string(),
        };
        let mut meta = Metadata {
            account_id: pick(
                "--account-id",
                primary.and_then(|e| e.account_id.as_ref()),
                &args.account_id,
                "unknown",
            ),
            region: pick(
                "--region",
                imds.and_then(|i| i.region.as_ref()),
                &args.region,
                "-",
            ),
            az_id: pick(
                "--az-id",
                imds.and_then(|i| i.az_id.as_ref()),
                &args.az_id,
                "-",
            ),
            vpc_id: pick(
                "--vpc-id",
                primary.and_then(|e| e.vpc_id.as_ref()),
                &args.vpc_id,
                "-",
            ),
            subnet_id: pick(
                "--subnet-id",
                primary.and_then(|e| e.subnet_id.as_ref()),
                &args.subnet_id,
                "-",
            ),
            instance_id: pick(
                "--instance-id",
                imds.and_then(|i| i.instance_id.as_ref()),
                &args.instance_id,
                "-",
            ),
            sublocation_type: args.sublocation_type.clone().unwrap_or_else(|| "-".into()),
            sublocation_id: args.sublocation_id.clone().unwrap_or_else(|| "-".into()),
            vpc_cidrs: match primary {
                Some(e) if !e.vpc_cidrs.is_empty() => e.vpc_cidrs.clone(),
                _ => args.vpc_cidrs.iter().map(IpNet::trunc).collect(),
            },
            traffic_paths: args.traffic_paths.clone(),
            enis: imds
                .map(|i| {
                    i.enis
                        .iter()
                        .map(|e| (e.interface_id.clone(), e.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            interface_ids: BTreeMap::new(),
            aws_ip_ranges: None,
        };
        for pair in &args.interface_ids {
            let (name, id) = split_pair("--interface-id", pair)?;
            check_token("--interface-id", id)?;
            meta.interface_ids.insert(name.to_string(), id.to_string());
        }
        // AWS writes `-` for az-id when the ENI sits in a sublocation.
        if meta.sublocation_type != "-" {
            meta.az_id = "-".into();
        }
        meta.traffic_paths
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        meta.check()?;
        if let Some(path) = &args.aws_ip_ranges {
            let ranges = AwsIpRanges::load(path)?;
            let (v4, v6) = ranges.len();
            info!(path = %path.display(), ipv4_prefixes = v4, ipv6_prefixes = v6, "AWS ip ranges loaded");
            meta.aws_ip_ranges = Some(Arc::new(ranges));
        }
        Ok(meta)
    }

    /// Asks instance metadata (unless `--no-imds`), then resolves. Off EC2 this costs at most
    /// the IMDS timeout.
    pub async fn discover(args: &MetadataConfig) -> anyhow::Result<Self> {
        let imds = if args.no_imds {
            None
        } else {
            match crate::inventory::imds::fetch(
                &args.imds_endpoint,
                crate::inventory::imds::DEFAULT_TIMEOUT,
            )
            .await
            {
                Ok(info) => {
                    info!(endpoint = %args.imds_endpoint, instance_id = ?info.instance_id,
                          enis = info.enis.len(), "instance metadata found");
                    Some(info)
                }
                Err(e) => {
                    info!(endpoint = %args.imds_endpoint, reason = %format!("{e:#}"),
                          "no EC2 instance metadata: using the values given on the command line \
                           (in a container on EC2, raise the IMDS hop limit to 2)");
                    None
                }
            }
        };
        Self::resolve(args, imds.as_ref())
    }

    /// Every value that lands in a record or an object key must be one token.
    fn check(&self) -> anyhow::Result<()> {
        for (what, v) in [
            ("account id", &self.account_id),
            ("region", &self.region),
            ("az id", &self.az_id),
            ("vpc id", &self.vpc_id),
            ("subnet id", &self.subnet_id),
            ("instance id", &self.instance_id),
            ("sublocation id", &self.sublocation_id),
        ] {
            check_token(what, v)?;
        }
        if self.sublocation_type != "-"
            && !SUBLOCATION_TYPES.contains(&self.sublocation_type.as_str())
        {
            bail!(
                "invalid --sublocation-type {:?}: use one of {}",
                self.sublocation_type,
                SUBLOCATION_TYPES.join(", ")
            );
        }
        if (self.sublocation_type == "-") != (self.sublocation_id == "-") {
            bail!("--sublocation-type and --sublocation-id go together: give both or neither");
        }
        for eni in self.enis.values() {
            for v in [
                Some(&eni.interface_id),
                eni.account_id.as_ref(),
                eni.vpc_id.as_ref(),
                eni.subnet_id.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                check_token("instance metadata value", v)?;
            }
        }
        Ok(())
    }

    /// The ENI a record's `interface-id` names, if instance metadata described it.
    pub fn eni(&self, interface_id: &str) -> Option<&Eni> {
        self.enis.get(interface_id)
    }

    /// `interface-id` for a Linux interface: the ENI with its MAC, else `--interface-id`,
    /// else the interface name.
    pub fn interface_id(&self, name: &str, mac: Option<&str>) -> String {
        self.configured_interface_id(name, mac)
            .unwrap_or_else(|| name.to_string())
    }

    /// The `interface-id` instance metadata (the ENI with its MAC) or `--interface-id` gives
    /// an interface, if any.
    pub fn configured_interface_id(&self, name: &str, mac: Option<&str>) -> Option<String> {
        if let Some(mac) = mac
            && let Some(eni) = self.enis.values().find(|e| e.mac.eq_ignore_ascii_case(mac))
        {
            return Some(eni.interface_id.clone());
        }
        self.interface_ids.get(name).cloned()
    }

    /// `traffic-path` of an egress packet to `dst` leaving through `eni`: 1 inside the VPC's
    /// CIDR blocks, else the longest `--traffic-path` route holding it, else none (`-`).
    pub fn traffic_path(&self, eni: Option<&Eni>, dst: IpAddr) -> Option<u8> {
        let vpc = eni
            .map(|e| e.vpc_cidrs.as_slice())
            .filter(|c| !c.is_empty())
            .unwrap_or(&self.vpc_cidrs);
        let in_vpc = vpc
            .iter()
            .filter(|n| n.contains(&dst))
            .map(|n| n.prefix_len())
            .max();
        let routed = self.traffic_paths.iter().find(|(n, _)| n.contains(&dst));
        match (in_vpc, routed) {
            // The VPC's local route wins over any other route of the same or shorter prefix.
            (Some(v), Some((n, code))) if n.prefix_len() > v => Some(*code),
            (Some(_), _) => Some(1),
            (None, Some((_, code))) => Some(*code),
            (None, None) => None,
        }
    }
}
