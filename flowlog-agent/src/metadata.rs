//! What a record says that is not in the packet counters: the AWS identity of the host and of
//! each of its ENIs (account, region, AZ id, VPC, subnet, instance, ENI id), the routes that
//! decide `traffic-path`, and AWS's published service ranges for `pkt-*-aws-service`.
//!
//! Each value comes from the first source that knows it: EC2 instance metadata (IMDSv2, see
//! [`crate::imds`]), then the command line, then what AWS writes when it does not know (`-`,
//! and `unknown` for the account).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use anyhow::{Context, bail};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::{aws_ranges::AwsIpRanges, cli::RecordArgs, flowlog::check_token, imds::ImdsInfo};

/// One ENI as instance metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    /// MAC address, lowercase `0e:12:34:56:78:9a`: how an ENI is matched to a Linux interface.
    pub mac: String,
    /// `eni-...`: the `interface-id` of records captured on the matching interface.
    pub interface_id: String,
    /// Owner of the ENI (`account-id`).
    pub account_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    /// CIDR blocks of the ENI's VPC, the primary IPv4 block first.
    pub vpc_cidrs: Vec<IpNet>,
    pub subnet_cidr: Option<IpNet>,
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
    pub fn resolve(args: &RecordArgs, imds: Option<&ImdsInfo>) -> anyhow::Result<Self> {
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
    pub async fn discover(args: &RecordArgs) -> anyhow::Result<Self> {
        let imds = if args.no_imds {
            None
        } else {
            match crate::imds::fetch(&args.imds_endpoint, crate::imds::DEFAULT_TIMEOUT).await {
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
        if let Some(mac) = mac
            && let Some(eni) = self.enis.values().find(|e| e.mac.eq_ignore_ascii_case(mac))
        {
            return eni.interface_id.clone();
        }
        self.interface_ids
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        records: RecordArgs,
    }

    fn args(argv: &[&str]) -> RecordArgs {
        let mut full = vec!["flowlog"];
        full.extend_from_slice(argv);
        Args::try_parse_from(full).unwrap().records
    }

    fn eni(mac: &str, id: &str, vpc: &str) -> Eni {
        Eni {
            mac: mac.into(),
            interface_id: id.into(),
            account_id: Some("123456789012".into()),
            vpc_id: Some(vpc.into()),
            subnet_id: Some("subnet-aaaaaaaa012345678".into()),
            vpc_cidrs: vec![
                "10.0.0.0/16".parse().unwrap(),
                "100.64.0.0/16".parse().unwrap(),
            ],
            subnet_cidr: Some("10.0.1.0/24".parse().unwrap()),
        }
    }

    #[test]
    fn nothing_known_gives_what_aws_writes_when_unknown() {
        let m = Metadata::resolve(&args(&[]), None).unwrap();
        assert_eq!(m, Metadata::default());
    }

    #[test]
    fn flags_fill_in_without_instance_metadata() {
        let m = Metadata::resolve(
            &args(&[
                "--account-id",
                "123456789010",
                "--region",
                "eu-west-1",
                "--az-id",
                "euw1-az2",
                "--vpc-id",
                "vpc-1",
                "--subnet-id",
                "subnet-1",
                "--instance-id",
                "i-1",
                "--interface-id",
                "eth0=eni-0abc",
                "--vpc-cidr",
                "10.1.0.5/16",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            (m.account_id.as_str(), m.region.as_str(), m.az_id.as_str()),
            ("123456789010", "eu-west-1", "euw1-az2")
        );
        assert_eq!(
            (
                m.vpc_id.as_str(),
                m.subnet_id.as_str(),
                m.instance_id.as_str()
            ),
            ("vpc-1", "subnet-1", "i-1")
        );
        assert_eq!(
            m.interface_id("eth0", Some("02:00:00:00:00:01")),
            "eni-0abc"
        );
        assert_eq!(m.interface_id("eth1", None), "eth1");
        assert_eq!(m.vpc_cidrs, vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn instance_metadata_wins_and_enis_match_by_mac() {
        let imds = ImdsInfo {
            instance_id: Some("i-0c50d5961bcb2d47b".into()),
            region: Some("ap-southeast-2".into()),
            az_id: Some("apse2-az3".into()),
            primary_mac: Some("0e:00:00:00:00:01".into()),
            enis: vec![
                eni("0e:00:00:00:00:02", "eni-2", "vpc-b"),
                eni("0e:00:00:00:00:01", "eni-1", "vpc-a"),
            ],
        };
        let m = Metadata::resolve(
            &args(&["--region", "us-east-1", "--account-id", "999"]),
            Some(&imds),
        )
        .unwrap();
        assert_eq!(m.region, "ap-southeast-2");
        assert_eq!(m.account_id, "123456789012");
        assert_eq!(m.vpc_id, "vpc-a", "host values are the primary ENI's");
        assert_eq!(m.instance_id, "i-0c50d5961bcb2d47b");
        assert_eq!(m.interface_id("ens5", Some("0E:00:00:00:00:02")), "eni-2");
        assert_eq!(m.eni("eni-2").unwrap().vpc_id.as_deref(), Some("vpc-b"));
    }

    #[test]
    fn sublocation_blanks_az_id_and_is_validated() {
        let m = Metadata::resolve(
            &args(&[
                "--az-id",
                "usw2-az1",
                "--sublocation-type",
                "outpost",
                "--sublocation-id",
                "op-0123456789abcdef0",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            (m.az_id.as_str(), m.sublocation_type.as_str()),
            ("-", "outpost")
        );
        let e = Metadata::resolve(&args(&["--sublocation-type", "outpost"]), None).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected_with_what_to_do() {
        let e = Metadata::resolve(&args(&["--vpc-id", "vpc 1"]), None).unwrap_err();
        assert!(e.to_string().contains("vpc id"), "{e}");
        let e = Metadata::resolve(&args(&["--interface-id", "eth0"]), None).unwrap_err();
        assert!(e.to_string().contains("NAME=VALUE"), "{e}");
        assert!(parse_traffic_path("0.0.0.0/0=9").is_err());
        assert!(parse_traffic_path("0.0.0.0/33=8").is_err());
        assert_eq!(
            parse_traffic_path("10.2.3.4/8=4").unwrap(),
            ("10.0.0.0/8".parse().unwrap(), 4)
        );
    }

    #[test]
    fn traffic_path_is_local_inside_the_vpc_else_the_longest_route() {
        let m = Metadata::resolve(
            &args(&[
                "--vpc-cidr",
                "10.0.0.0/16",
                "--traffic-path",
                "0.0.0.0/0=8",
                "--traffic-path",
                "192.168.0.0/16=4",
                "--traffic-path",
                "10.0.5.0/24=3",
            ]),
            None,
        )
        .unwrap();
        let tp = |ip: &str| m.traffic_path(None, ip.parse().unwrap());
        assert_eq!(tp("10.0.133.8"), Some(1));
        assert_eq!(
            tp("10.0.5.9"),
            Some(3),
            "a more specific route beats the local route"
        );
        assert_eq!(tp("192.168.3.3"), Some(4));
        assert_eq!(tp("52.95.128.179"), Some(8));
        assert_eq!(tp("2001:db8::1"), None);
        let e = eni("0e:00:00:00:00:01", "eni-1", "vpc-a");
        assert_eq!(
            m.traffic_path(Some(&e), "100.64.9.9".parse().unwrap()),
            Some(1),
            "the ENI's own VPC blocks"
        );
    }
}
