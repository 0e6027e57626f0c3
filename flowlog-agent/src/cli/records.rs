//! Options of the record stages: what a record says and which records a flow log keeps.
//!
//! Identity values (account, region, AZ, VPC, subnet, instance, ENI ids) come from EC2 instance
//! metadata when it answers; the flags below fill in what it does not say (off EC2: all of it).

use std::path::PathBuf;

use clap::Args;
use ipnet::IpNet;

use crate::{
    inventory::{
        imds::DEFAULT_ENDPOINT,
        metadata::{MetadataConfig, parse_traffic_path},
    },
    records::format::LogFormat,
};

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Records")]
pub struct RecordArgs {
    /// Fields of each record, AWS's LogFormat syntax: `${field}` tokens separated by spaces,
    /// any of versions 2-10 in any order, e.g. '${version} ${srcaddr} ${dstaddr} ${tcp-flags}'.
    /// The `version` field is the highest version among the fields used. Version 9-10 fields
    /// (resource-id, encryption-status) are accepted and written as `-`. The field names are
    /// listed at the end of this help.
    /// [default: the 14 version-2 fields]
    #[arg(long, value_name = "FORMAT", default_value = crate::records::format::DEFAULT_FORMAT,
          hide_default_value = true, value_parser = clap::value_parser!(LogFormat))]
    pub log_format: LogFormat,

    /// Which records to emit, as AWS's TrafficType: ACCEPT (traffic seen and not rejected),
    /// REJECT (packets the kernel dropped for a --reject-reasons reason) or ALL. NODATA and
    /// SKIPDATA records are emitted with every type.
    #[arg(long, value_name = "TYPE", default_value = "ALL",
          value_parser = clap::value_parser!(crate::records::traffic_type::TrafficType))]
    pub traffic_type: crate::records::traffic_type::TrafficType,

    /// Kernel drop reasons that make REJECT records, comma-separated, as the kernel names them
    /// without SKB_DROP_REASON_ (its enum skb_drop_reason, read from BTF); the record's
    /// reject-reason is that name. Drops for other reasons stay in ACCEPT and are counted in
    /// the flowlog_kernel_drops_total metric. The default is the policy drops, as AWS's REJECT
    /// is a security group's or network ACL's decision: firewall rules, TC programs, generic
    /// XDP and cgroup egress programs. Packets to a closed port are ACCEPT, as in AWS; add
    /// NO_SOCKET to see them as REJECT, and SOCKET_FILTER for cgroup ingress programs. A packet
    /// a raw or packet socket received (e.g. root's ping's replies) is never REJECT for a reason
    /// other than these policy ones (flowlog_kernel_drops_delivered_to_socket_total counts them).
    /// [default: NETFILTER_DROP,TC_INGRESS,TC_EGRESS,XDP,BPF_CGROUP_EGRESS: the policy drops]
    #[arg(long, value_name = "REASON,...", value_delimiter = ',')]
    pub reject_reasons: Option<Vec<String>>,

    /// Account id for the account-id field and the object keys when instance metadata does not
    /// give one. [default: unknown, as AWS writes]
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,

    /// Region for the region field and the object keys when instance metadata does not give
    /// one. [default: -]
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// AZ id (e.g. apse2-az3) for the az-id field when instance metadata does not give one.
    /// [default: -]
    #[arg(long, value_name = "AZ_ID")]
    pub az_id: Option<String>,

    /// VPC id for the vpc-id field when instance metadata does not give one. [default: -]
    #[arg(long, value_name = "ID")]
    pub vpc_id: Option<String>,

    /// Subnet id for the subnet-id field when instance metadata does not give one.
    /// [default: -]
    #[arg(long, value_name = "ID")]
    pub subnet_id: Option<String>,

    /// Instance id for the instance-id field when instance metadata does not give one.
    /// [default: -]
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,

    /// interface-id for one interface, as IFACE=ID (e.g. eth0=eni-0123456789abcdef0).
    /// Repeatable. Interfaces whose MAC matches an ENI in instance metadata get that ENI's id;
    /// others not named here get their interface name.
    #[arg(long = "interface-id", value_name = "IFACE=ID")]
    pub interface_ids: Vec<String>,

    /// sublocation-type of this host: wavelength, outpost or localzone. With it, az-id is
    /// written as `-`, as AWS does. Needs --sublocation-id.
    #[arg(long, value_name = "TYPE", value_parser = ["wavelength", "outpost", "localzone"])]
    pub sublocation_type: Option<String>,

    /// sublocation-id of this host (the Wavelength Zone, Outpost or Local Zone id).
    #[arg(long, value_name = "ID")]
    pub sublocation_id: Option<String>,

    /// CIDR block of this host's VPC, when instance metadata does not give them. Repeatable;
    /// the first is the primary block. Egress to them has traffic-path 1, and traffic to the
    /// Amazon DNS resolver (primary block base + 2) is left out like AWS does.
    #[arg(long = "vpc-cidr", value_name = "CIDR")]
    pub vpc_cidrs: Vec<IpNet>,

    /// A route that decides traffic-path for egress records, as CIDR=CODE with AWS's codes
    /// 1-8 (e.g. 0.0.0.0/0=8 when the default route is an internet gateway). Repeatable; the
    /// longest prefix wins; destinations in the VPC's blocks are 1. Without a route holding the
    /// destination, traffic-path is `-`.
    #[arg(long = "traffic-path", value_name = "CIDR=CODE", value_parser = parse_traffic_path)]
    pub traffic_paths: Vec<(IpNet, u8)>,

    /// AWS's ip-ranges.json (published by AWS) for the pkt-src-aws-service and
    /// pkt-dst-aws-service fields. Without it those fields are `-`.
    #[arg(long, value_name = "PATH")]
    pub aws_ip_ranges: Option<PathBuf>,

    /// Keep traffic AWS never logs: instance metadata (169.254.169.254), Amazon Time Sync
    /// (169.254.169.123), the Amazon DNS resolver (169.254.169.253, VPC base + 2), the VPC
    /// router (subnet base + 1), their fd00:ec2:: IPv6 twins, and DHCP/DHCPv6. Left out (and
    /// counted) by default.
    #[arg(long)]
    pub include_aws_internal_traffic: bool,

    /// EC2 instance metadata endpoint (IMDSv2) to read the account, region, AZ, VPC, subnet,
    /// instance and ENI ids from. Off EC2 the lookup gives up after 1 s.
    #[arg(long, value_name = "URL", env = "AWS_EC2_METADATA_SERVICE_ENDPOINT",
          default_value = DEFAULT_ENDPOINT, value_parser = parse_imds_endpoint)]
    pub imds_endpoint: String,

    /// Do not ask EC2 instance metadata; use only the flags.
    #[arg(long, env = "AWS_EC2_METADATA_DISABLED")]
    pub no_imds: bool,

    /// From whose side the interfaces of containers and VMs are logged. guest: as AWS logs an
    /// ENI, the guest's network card (what the container sent is egress, its address is
    /// srcaddr, interface-id is <container>.<ifname>, e.g. web-1.eth0); host: the host side
    /// of the veth or tap as the host sees it (what the container sent is ingress,
    /// interface-id is the host-side name). Owner fields (ecs-*, container-name, ...) are
    /// filled either way.
    #[arg(long, value_name = "guest|host", default_value = "guest",
          value_parser = clap::value_parser!(crate::records::guest::Perspective))]
    pub perspective: crate::records::guest::Perspective,

    /// Flow log id used in file names (`fl-` + hex). Default: derived from the host name and
    /// destination, so it stays the same across restarts.
    #[arg(long, value_name = "ID")]
    pub flow_log_id: Option<String>,
}

/// `--imds-endpoint` must be an http URL with a host.
fn parse_imds_endpoint(s: &str) -> anyhow::Result<String> {
    match s.strip_prefix("http://") {
        Some(host) if !host.is_empty() && !host.starts_with('/') => {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => anyhow::bail!(
            "invalid instance metadata endpoint {s:?}: write it as http://HOST[:PORT]"
        ),
    }
}

impl RecordArgs {
    /// The identity flags, for [`Metadata::discover`](crate::inventory::metadata::Metadata).
    pub fn metadata_config(&self) -> MetadataConfig {
        MetadataConfig {
            account_id: self.account_id.clone(),
            region: self.region.clone(),
            az_id: self.az_id.clone(),
            vpc_id: self.vpc_id.clone(),
            subnet_id: self.subnet_id.clone(),
            instance_id: self.instance_id.clone(),
            interface_ids: self.interface_ids.clone(),
            sublocation_type: self.sublocation_type.clone(),
            sublocation_id: self.sublocation_id.clone(),
            vpc_cidrs: self.vpc_cidrs.clone(),
            traffic_paths: self.traffic_paths.clone(),
            aws_ip_ranges: self.aws_ip_ranges.clone(),
            imds_endpoint: self.imds_endpoint.clone(),
            no_imds: self.no_imds,
        }
    }
}

#[cfg(test)]
mod metadata_from_flags {
    use clap::Parser;

    use super::*;
    use crate::inventory::{
        imds::{Eni, ImdsInfo},
        metadata::*,
    };

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        records: RecordArgs,
    }

    fn args(argv: &[&str]) -> MetadataConfig {
        let mut full = vec!["flowlog"];
        full.extend_from_slice(argv);
        Args::try_parse_from(full)
            .unwrap()
            .records
            .metadata_config()
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
