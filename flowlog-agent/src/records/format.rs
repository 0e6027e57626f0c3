//! Where a record is formatted: the `${field}` catalogue of AWS VPC Flow Logs (versions 2-10),
//! format-string parsing, the `version` value, the text header line, and each field's value in
//! one record, written as text (one line of space-separated fields) or typed for Parquet.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use anyhow::bail;

use crate::{
    capture::collect::Direction,
    inventory::{imds::Eni, metadata::Metadata},
    records::FlowRecord,
};

macro_rules! fields {
    (
        aws { $($variant:ident = $name:literal, $version:literal;)* }
        extensions { $($xvariant:ident = $xname:literal;)* }
    ) => {
        /// One `${field}` of a flow log format.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Field { $($variant,)* $($xvariant,)* }

        impl Field {
            /// Every field of AWS's, in AWS's table order.
            pub const ALL: &'static [Field] = &[$(Field::$variant),*];

            /// Fields beyond AWS's (opt-in: no default format has them).
            pub const EXTENSIONS: &'static [Field] = &[$(Field::$xvariant),*];

            /// The name inside `${...}`.
            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* $(Field::$xvariant => $xname,)* }
            }

            /// The flow log version that introduced the field. Extensions count as 2 (the
            /// lowest): `version` stays the highest AWS version a format uses.
            pub fn version(self) -> u8 {
                match self { $(Field::$variant => $version,)* $(Field::$xvariant => 2,)* }
            }
        }
    };
}

fields! {
    aws {
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
    extensions {
    ContainerName = "container-name";
    PodName = "pod-name";
    PodNamespace = "pod-namespace";
    VmName = "vm-name";
    }
}

/// The Parquet column type AWS gives a field (spec §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int32,
    Int64,
    String,
}

impl Field {
    /// Parquet column type: INT_32 for version, ports, protocol, tcp-flags and traffic-path;
    /// INT_64 for packets, bytes, start and end; STRING for everything else.
    pub fn column_type(self) -> ColumnType {
        match self {
            Field::Version
            | Field::SrcPort
            | Field::DstPort
            | Field::Protocol
            | Field::TcpFlags
            | Field::TrafficPath => ColumnType::Int32,
            Field::Packets | Field::Bytes | Field::Start | Field::End => ColumnType::Int64,
            _ => ColumnType::String,
        }
    }

    /// Parquet/Athena column name: the field name with `-` turned into `_`.
    pub fn column_name(self) -> String {
        self.name().replace('-', "_")
    }
}

impl FromStr for Field {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> anyhow::Result<Self> {
        let known = || Field::ALL.iter().chain(Field::EXTENSIONS);
        if let Some(f) = known().find(|f| f.name() == name) {
            return Ok(*f);
        }
        let closest = known()
            .map(|f| (strsim::levenshtein(name, f.name()), f.name()))
            .min()
            .filter(|(d, _)| *d <= 3)
            .map(|(_, n)| format!(" (did you mean ${{{n}}}?)"))
            .unwrap_or_default();
        let valid: Vec<&str> = known().map(|f| f.name()).collect();
        bail!(
            "unknown field ${{{name}}} in the log format{closest}; valid fields are: {}",
            valid.join(" ")
        )
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
        // AWS's LogFormat has no commas; `${a},${b}` is the most common slip.
        if s.contains(',') {
            bail!(
                "the log format has commas: separate fields with spaces, e.g. '${{srcaddr}} ${{dstaddr}} ${{action}}'"
            );
        }
        let mut fields = Vec::new();
        for token in s.split_whitespace() {
            let Some(name) = token.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
                bail!(
                    "malformed log format token {token:?}: write each field as ${{field-name}}, separated by spaces"
                );
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

/// One field's value in one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Does not apply or is not known: `-` (null in a Parquet integer column).
    Missing,
    Int(u64),
    Text(&'a str),
    Addr(IpAddr),
}

impl Value<'_> {
    /// Writes the value as AWS's text records show it. Numbers and IPv4 addresses are written
    /// without `fmt` (itoa; a window can be millions of fields); IPv6 through `Display`, whose
    /// RFC 5952 form (and `::ffff:a.b.c.d` for IPv4-mapped) is the one AWS shows.
    pub fn write_text(&self, out: &mut String) {
        match self {
            Value::Missing => out.push('-'),
            Value::Int(n) => out.push_str(itoa::Buffer::new().format(*n)),
            Value::Text(s) => out.push_str(if s.is_empty() { "-" } else { s }),
            Value::Addr(IpAddr::V4(a)) => write_ipv4(*a, out),
            // `write!` into a String cannot fail.
            Value::Addr(IpAddr::V6(a)) => {
                let _ = write!(out, "{a}");
            }
        }
    }
}

/// `a.b.c.d`, as `Ipv4Addr`'s `Display` writes it.
fn write_ipv4(a: Ipv4Addr, out: &mut String) {
    let mut buf = itoa::Buffer::new();
    let [a, b, c, d] = a.octets();
    out.push_str(buf.format(a));
    out.push('.');
    out.push_str(buf.format(b));
    out.push('.');
    out.push_str(buf.format(c));
    out.push('.');
    out.push_str(buf.format(d));
}

/// What rendering one record needs beyond the record: the metadata and the record's ENI.
struct RecordView<'a> {
    rec: &'a FlowRecord,
    meta: &'a Metadata,
    eni: Option<&'a Eni>,
    version: u8,
}

impl<'a> RecordView<'a> {
    fn value(&self, field: Field) -> Value<'a> {
        let (rec, meta, eni) = (self.rec, self.meta, self.eni);
        let t = rec.traffic.as_ref();
        let int = |v: Option<u64>| v.map_or(Value::Missing, Value::Int);
        let text = |v: &'a str| Value::Text(v);
        let per_eni = |get: fn(&'a Eni) -> Option<&'a String>, host: &'a String| {
            Value::Text(eni.and_then(get).unwrap_or(host))
        };
        let guest = rec.interface_id.guest();
        let ecs = guest.and_then(|g| g.ecs.as_ref());
        let opt = |v: Option<&'a str>| v.map_or(Value::Missing, Value::Text);
        let aws_service = |ip: IpAddr| {
            meta.aws_ip_ranges
                .as_deref()
                .and_then(|r| r.service(ip))
                .map_or(Value::Missing, Value::Text)
        };
        match field {
            Field::Version => Value::Int(u64::from(self.version)),
            Field::AccountId => per_eni(|e| e.account_id.as_ref(), &meta.account_id),
            Field::InterfaceId => text(&rec.interface_id),
            Field::SrcAddr => t.map_or(Value::Missing, |t| Value::Addr(t.src)),
            Field::DstAddr => t.map_or(Value::Missing, |t| Value::Addr(t.dst)),
            Field::SrcPort => int(t.map(|t| u64::from(t.src_port))),
            Field::DstPort => int(t.map(|t| u64::from(t.dst_port))),
            Field::Protocol => int(t.map(|t| u64::from(t.protocol))),
            Field::Packets => int(t.map(|t| t.packets)),
            Field::Bytes => int(t.map(|t| t.bytes)),
            Field::Start => Value::Int(rec.start),
            Field::End => Value::Int(rec.end),
            Field::Action => t.map_or(Value::Missing, |t| text(t.action.as_str())),
            Field::LogStatus => text(rec.log_status.as_str()),
            Field::VpcId => per_eni(|e| e.vpc_id.as_ref(), &meta.vpc_id),
            Field::SubnetId => per_eni(|e| e.subnet_id.as_ref(), &meta.subnet_id),
            // A VM's interface names the VM; everything else runs on this instance.
            Field::InstanceId => text(
                guest
                    .and_then(|g| g.instance_id.as_deref())
                    .unwrap_or(&meta.instance_id),
            ),
            // Non-TCP flows carry 0: the datapath only sets bits for TCP.
            Field::TcpFlags => int(t.map(|t| u64::from(t.tcp_flags))),
            Field::Type => t.map_or(Value::Missing, |t| {
                text(if t.pkt_src.is_ipv4() { "IPv4" } else { "IPv6" })
            }),
            Field::PktSrcAddr => t.map_or(Value::Missing, |t| Value::Addr(t.pkt_src)),
            Field::PktDstAddr => t.map_or(Value::Missing, |t| Value::Addr(t.pkt_dst)),
            Field::Region => text(&meta.region),
            Field::AzId => text(&meta.az_id),
            Field::SublocationType => text(&meta.sublocation_type),
            Field::SublocationId => text(&meta.sublocation_id),
            Field::PktSrcAwsService => t.map_or(Value::Missing, |t| aws_service(t.pkt_src)),
            Field::PktDstAwsService => t.map_or(Value::Missing, |t| aws_service(t.pkt_dst)),
            Field::FlowDirection => t.map_or(Value::Missing, |t| text(t.direction.as_str())),
            // Egress only, and only where the path is known: inside the VPC's blocks, or by a
            // `--traffic-path` route.
            Field::TrafficPath => int(t
                .filter(|t| t.direction == Direction::Egress)
                .and_then(|t| meta.traffic_path(eni, t.pkt_dst))
                .map(u64::from)),
            // REJECT records carry the kernel's drop reason (`NETFILTER_DROP`, ...): a
            // host-specific value where AWS documents `BPA`; `-` for everything else, as AWS.
            Field::RejectReason => t
                .and_then(|t| t.reject_reason.as_deref())
                .map_or(Value::Missing, text),
            // The containers in the interface's namespace (first and second, as AWS names
            // a task's), and the ECS agent's task data when it answered; else `-`.
            Field::EcsContainerId => opt(guest.and_then(|g| g.container_id.as_deref())),
            Field::EcsSecondContainerId => {
                opt(guest.and_then(|g| g.second_container_id.as_deref()))
            }
            Field::EcsClusterArn => opt(ecs.and_then(|e| e.cluster_arn.as_deref())),
            Field::EcsClusterName => opt(ecs.map(|e| e.cluster_name.as_str())),
            Field::EcsContainerInstanceArn => {
                opt(ecs.and_then(|e| e.container_instance_arn.as_deref()))
            }
            Field::EcsContainerInstanceId => {
                opt(ecs.and_then(|e| e.container_instance_id.as_deref()))
            }
            Field::EcsTaskDefinitionArn => opt(ecs.and_then(|e| e.task_definition_arn.as_deref())),
            Field::EcsTaskArn => opt(ecs.map(|e| e.task_arn.as_str())),
            Field::EcsTaskId => opt(ecs.map(|e| e.task_id.as_str())),
            Field::ContainerName => opt(guest.and_then(|g| g.container_name.as_deref())),
            Field::PodName => opt(guest.and_then(|g| g.pod_name.as_deref())),
            Field::PodNamespace => opt(guest.and_then(|g| g.pod_namespace.as_deref())),
            Field::VmName => opt(guest.and_then(|g| g.vm_name.as_deref())),
            // The ECS agent's v1 introspection API does not say which service started a task;
            // resource ids and encryption status are AWS-side facts. `-`, as AWS writes when
            // none applies.
            Field::EcsServiceName | Field::ResourceId | Field::EncryptionStatus => Value::Missing,
        }
    }
}

impl LogFormat {
    /// The format as `--log-format` and LogFormat spell it: `${field} ${field} ...`.
    pub fn spec_text(&self) -> String {
        self.fields
            .iter()
            .map(|f| format!("${{{}}}", f.name()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The `version` value: the highest version among the fields used.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The first line of a text file: the field names, space-separated.
    pub fn header(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn view<'a>(&self, rec: &'a FlowRecord, meta: &'a Metadata) -> RecordView<'a> {
        RecordView {
            rec,
            meta,
            eni: meta.eni(&rec.interface_id),
            version: self.version,
        }
    }

    /// The record's values, one per field of the format, in format order.
    pub fn values<'a>(&self, rec: &'a FlowRecord, meta: &'a Metadata) -> Vec<Value<'a>> {
        let view = self.view(rec, meta);
        self.fields.iter().map(|f| view.value(*f)).collect()
    }

    /// One record as one line (no newline).
    pub fn render(&self, rec: &FlowRecord, meta: &Metadata) -> String {
        let mut line = String::with_capacity(128);
        self.render_into(rec, meta, &mut line);
        line
    }

    /// Appends one record to `out` (no newline).
    pub fn render_into(&self, rec: &FlowRecord, meta: &Metadata, out: &mut String) {
        let view = self.view(rec, meta);
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            view.value(*field).write_text(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_versions_2_to_10_parses_and_the_version_is_the_highest_used() {
        assert_eq!(Field::ALL.len(), 42);
        let all: String = Field::ALL
            .iter()
            .map(|f| format!("${{{}}}", f.name()))
            .collect::<Vec<_>>()
            .join(" ");
        let f: LogFormat = all.parse().unwrap();
        assert_eq!(f.version(), 10);
        assert_eq!(f.header().split(' ').count(), 42);
        for (fmt, v) in [
            ("${srcaddr}", 2),
            ("${version} ${vpc-id} ${region}", 4),
            ("${tcp-flags} ${srcaddr}", 3),
            ("${flow-direction}", 5),
            ("${ecs-task-id} ${version}", 7),
            ("${reject-reason}", 8),
            ("${resource-id}", 9),
            ("${encryption-status} ${srcaddr}", 10),
        ] {
            assert_eq!(fmt.parse::<LogFormat>().unwrap().version(), v, "{fmt}");
        }
        assert_eq!(
            LogFormat::default().header(),
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status"
        );
    }

    #[test]
    fn unknown_or_misspelled_fields_are_rejected_listing_the_valid_names() {
        let e = "${version} ${scraddr}"
            .parse::<LogFormat>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field ${scraddr}"), "{e}");
        assert!(e.contains("did you mean ${srcaddr}?"), "{e}");
        assert!(e.contains("valid fields are: version account-id"), "{e}");
        assert!(e.contains("encryption-status"), "{e}");
        let e = "${bogus-thing-entirely}"
            .parse::<LogFormat>()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("did you mean"), "{e}");
        assert!("${version}${srcaddr}".parse::<LogFormat>().is_err());
        assert!("version srcaddr".parse::<LogFormat>().is_err());
        assert!("  ".parse::<LogFormat>().is_err());
    }

    #[test]
    fn commas_between_fields_say_to_use_spaces() {
        for f in [
            "${srcaddr},${dstaddr}",
            "${srcaddr}, ${dstaddr}",
            "${version} ${srcaddr},",
        ] {
            let e = f.parse::<LogFormat>().unwrap_err().to_string();
            assert!(e.contains("separate fields with spaces"), "{f}: {e}");
        }
    }

    #[test]
    fn text_values_are_written_exactly_as_display_writes_them() {
        use std::net::Ipv6Addr;

        let text = |v: Value<'_>| {
            let mut s = String::new();
            v.write_text(&mut s);
            s
        };
        for n in [0, 7, 10, 99, 100, 65_535, 1_700_000_000, u64::MAX] {
            assert_eq!(text(Value::Int(n)), n.to_string());
        }
        let v4 = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "1.22.133.4",
            "169.254.169.254",
        ];
        let v6 = [
            "::",
            "::1",
            "fd00:ec2::254",
            "2600:1f18:0:0:1::",
            "fe80::1:0:0:2",
            "::ffff:10.0.0.1",
        ];
        for a in v4
            .iter()
            .map(|a| a.parse::<Ipv4Addr>().unwrap().into())
            .chain(v6.iter().map(|a| a.parse::<Ipv6Addr>().unwrap().into()))
        {
            assert_eq!(text(Value::Addr(a)), a.to_string());
        }
        assert_eq!(
            text(Value::Addr("2600:1f18:0:0:1::".parse().unwrap())),
            "2600:1f18:0:0:1::"
        );
        assert_eq!(text(Value::Missing), "-");
        assert_eq!(text(Value::Text("")), "-");
        assert_eq!(text(Value::Text("eni-1")), "eni-1");
    }

    #[test]
    fn parquet_types_and_names_follow_the_spec() {
        use ColumnType::*;
        let int32: Vec<&str> = Field::ALL
            .iter()
            .filter(|f| f.column_type() == Int32)
            .map(|f| f.name())
            .collect();
        assert_eq!(
            int32,
            [
                "version",
                "srcport",
                "dstport",
                "protocol",
                "tcp-flags",
                "traffic-path"
            ]
        );
        let int64: Vec<&str> = Field::ALL
            .iter()
            .filter(|f| f.column_type() == Int64)
            .map(|f| f.name())
            .collect();
        assert_eq!(int64, ["packets", "bytes", "start", "end"]);
        assert_eq!(Field::PktSrcAwsService.column_name(), "pkt_src_aws_service");
        assert_eq!(Field::LogStatus.column_name(), "log_status");
    }
}
