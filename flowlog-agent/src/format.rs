//! Where a record is formatted: the `${field}` catalogue of AWS VPC Flow Logs (versions 2-10),
//! format-string parsing, the `version` value, the text header line, and rendering one record
//! as one line of space-separated fields.

use std::{fmt::Write as _, str::FromStr};

use anyhow::bail;

use crate::{
    metadata::Metadata,
    records::{FlowRecord, Traffic},
};

macro_rules! fields {
    ($($variant:ident = $name:literal, $version:literal;)*) => {
        /// One `${field}` of a flow log format.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Field { $($variant),* }

        impl Field {
            /// Every field in AWS's table order.
            pub const ALL: &'static [Field] = &[$(Field::$variant),*];

            /// The name inside `${...}`.
            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name),* }
            }

            /// The flow log version that introduced the field.
            pub fn version(self) -> u8 {
                match self { $(Field::$variant => $version),* }
            }
        }
    };
}

fields! {
    Version = "version", 2;
    AccountId = "account-id", 2;
    InterfaceId = "interface-id", 2;
    SrcAddr = "srcaddr", 2;
    DstAddr = "dstaddr", 2;
    SrcPort = "srcport", 2;
    DstPort = "dstport", 2;
    Protocol = "protocol", 2;
    Packets = "packets", 2;
    Bytes = "bytes", 2;
    Start = "start", 2;
    End = "end", 2;
    Action = "action", 2;
    LogStatus = "log-status", 2;
    VpcId = "vpc-id", 3;
    SubnetId = "subnet-id", 3;
    InstanceId = "instance-id", 3;
    TcpFlags = "tcp-flags", 3;
    Type = "type", 3;
    PktSrcAddr = "pkt-srcaddr", 3;
    PktDstAddr = "pkt-dstaddr", 3;
    Region = "region", 4;
    AzId = "az-id", 4;
    SublocationType = "sublocation-type", 4;
    SublocationId = "sublocation-id", 4;
    PktSrcAwsService = "pkt-src-aws-service", 5;
    PktDstAwsService = "pkt-dst-aws-service", 5;
    FlowDirection = "flow-direction", 5;
    TrafficPath = "traffic-path", 5;
    EcsClusterArn = "ecs-cluster-arn", 7;
    EcsClusterName = "ecs-cluster-name", 7;
    EcsContainerInstanceArn = "ecs-container-instance-arn", 7;
    EcsContainerInstanceId = "ecs-container-instance-id", 7;
    EcsContainerId = "ecs-container-id", 7;
    EcsSecondContainerId = "ecs-second-container-id", 7;
    EcsServiceName = "ecs-service-name", 7;
    EcsTaskDefinitionArn = "ecs-task-definition-arn", 7;
    EcsTaskArn = "ecs-task-arn", 7;
    EcsTaskId = "ecs-task-id", 7;
    RejectReason = "reject-reason", 8;
    ResourceId = "resource-id", 9;
    EncryptionStatus = "encryption-status", 10;
}

impl FromStr for Field {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> anyhow::Result<Self> {
        match Field::ALL.iter().find(|f| f.name() == name) {
            Some(f) => Ok(*f),
            None => {
                let valid: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                bail!("unknown field ${{{name}}} in the log format; valid fields are: {}", valid.join(" "))
            }
        }
    }
}

/// AWS's default format: the 14 version-2 fields in table order.
pub const DEFAULT_FORMAT: &str = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} \
    ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status}";

/// A parsed `${field} ${field} ...` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    fields: Vec<Field>,
    version: u8,
}

impl Default for LogFormat {
    fn default() -> Self {
        DEFAULT_FORMAT.parse().expect("the default format parses")
    }
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;

    /// Fields are `${name}` tokens separated by whitespace; at least one is needed.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut fields = Vec::new();
        for token in s.split_whitespace() {
            let Some(name) = token.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
                bail!("malformed log format token {token:?}: write each field as ${{field-name}}, separated by spaces");
            };
            fields.push(name.parse::<Field>()?);
        }
        if fields.is_empty() {
            bail!("the log format is empty: give at least one ${{field}}");
        }
        let version = fields.iter().map(|f| f.version()).max().unwrap_or(2);
        Ok(LogFormat { fields, version })
    }
}

impl LogFormat {
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The `version` value: the highest version among the fields used.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The first line of a text file: the field names, space-separated.
    pub fn header(&self) -> String {
        self.fields.iter().map(|f| f.name()).collect::<Vec<_>>().join(" ")
    }

    /// One record as one line (no newline).
    pub fn render(&self, rec: &FlowRecord, meta: &Metadata) -> String {
        let mut line = String::with_capacity(128);
        self.render_into(rec, meta, &mut line);
        line
    }

    /// Appends one record to `out` (no newline).
    pub fn render_into(&self, rec: &FlowRecord, meta: &Metadata, out: &mut String) {
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            self.render_field(*field, rec, meta, out);
        }
    }

    fn render_field(&self, field: Field, rec: &FlowRecord, meta: &Metadata, out: &mut String) {
        let t: Option<&Traffic> = rec.traffic.as_ref();
        // `write!` into a String cannot fail.
        let _ = match field {
            Field::Version => write!(out, "{}", self.version),
            Field::AccountId => text(out, &meta.account_id),
            Field::InterfaceId => text(out, &rec.interface_id),
            Field::SrcAddr => opt(out, t.map(|t| t.src)),
            Field::DstAddr => opt(out, t.map(|t| t.dst)),
            Field::SrcPort => opt(out, t.map(|t| t.src_port)),
            Field::DstPort => opt(out, t.map(|t| t.dst_port)),
            Field::Protocol => opt(out, t.map(|t| t.protocol)),
            Field::Packets => opt(out, t.map(|t| t.packets)),
            Field::Bytes => opt(out, t.map(|t| t.bytes)),
            Field::Start => write!(out, "{}", rec.start),
            Field::End => write!(out, "{}", rec.end),
            Field::Action => opt(out, t.map(|t| t.action.as_str())),
            Field::LogStatus => text(out, rec.log_status.as_str()),
            Field::VpcId => text(out, &meta.vpc_id),
            Field::SubnetId => text(out, &meta.subnet_id),
            Field::InstanceId => text(out, &meta.instance_id),
            Field::TcpFlags => opt(out, t.map(|t| t.tcp_flags)),
            Field::Type => opt(out, t.map(|t| if t.pkt_src.is_ipv4() { "IPv4" } else { "IPv6" })),
            Field::PktSrcAddr => opt(out, t.map(|t| t.pkt_src)),
            Field::PktDstAddr => opt(out, t.map(|t| t.pkt_dst)),
            Field::Region => text(out, &meta.region),
            Field::AzId => text(out, &meta.az_id),
            Field::SublocationType => text(out, &meta.sublocation_type),
            Field::SublocationId => text(out, &meta.sublocation_id),
            Field::FlowDirection => opt(out, t.map(|t| t.direction.as_str())),
            // Not derivable on a Linux host without AWS's view of the VPC: `-`, as AWS writes
            // when none applies.
            Field::PktSrcAwsService
            | Field::PktDstAwsService
            | Field::TrafficPath
            | Field::EcsClusterArn
            | Field::EcsClusterName
            | Field::EcsContainerInstanceArn
            | Field::EcsContainerInstanceId
            | Field::EcsContainerId
            | Field::EcsSecondContainerId
            | Field::EcsServiceName
            | Field::EcsTaskDefinitionArn
            | Field::EcsTaskArn
            | Field::EcsTaskId
            | Field::RejectReason
            | Field::ResourceId
            | Field::EncryptionStatus => text(out, "-"),
        };
    }
}

fn text(out: &mut String, s: &str) -> std::fmt::Result {
    out.push_str(if s.is_empty() { "-" } else { s });
    Ok(())
}

fn opt<T: std::fmt::Display>(out: &mut String, v: Option<T>) -> std::fmt::Result {
    match v {
        Some(v) => write!(out, "{v}"),
        None => text(out, "-"),
    }
}
