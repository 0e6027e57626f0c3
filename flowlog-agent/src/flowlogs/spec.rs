//! [`FlowLogSpec`]: what one flow log is, whatever it came from (the `run` flags, a
//! CreateFlowLogs request, the state directory or a `--flow-logs` file). A request names
//! several resources; each becomes one flow log, as in AWS.
//!
//! Validation here is what a request alone decides (syntax, ranges, combinations); whether an
//! ENI, subnet or VPC id exists on this host is [`FlowLogSpec::check_known`], against the
//! instance metadata.

use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use ipnet::IpNet;

use super::api::{
    self, ApiError, CreateFlowLogsRequest, DestinationOptions, FlowLogDescription, Tag, codes,
};
use crate::{
    inventory::discover::Interface,
    inventory::metadata::Metadata,
    inventory::selectors::GuestSelector,
    publish::layout::FileFormat,
    publish::{DestinationSpec, S3Protection},
    records::format::{DEFAULT_FORMAT, LogFormat},
    records::guest::Perspective,
    records::traffic_type::TrafficType,
};

/// AWS's default `MaxAggregationInterval` in a request.
pub const DEFAULT_REQUEST_INTERVAL: u32 = 600;
/// Longest aggregation interval: one day.
pub const MAX_INTERVAL: u32 = 86_400;
/// The resource type of a flow log's tags.
const TAG_RESOURCE_TYPE: &str = "vpc-flow-log";

/// The level a flow log watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Vpc,
    Subnet,
    NetworkInterface,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Vpc => "VPC",
            ResourceType::Subnet => "Subnet",
            ResourceType::NetworkInterface => "NetworkInterface",
        }
    }

    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "VPC" => Ok(ResourceType::Vpc),
            "Subnet" => Ok(ResourceType::Subnet),
            "NetworkInterface" => Ok(ResourceType::NetworkInterface),
            "TransitGateway" | "TransitGatewayAttachment" => Err(ApiError::invalid(format!(
                "ResourceType {s} has no equivalent on a host: use VPC, Subnet or NetworkInterface"
            ))),
            _ => Err(ApiError::invalid(format!(
                "invalid ResourceType {s:?}: use VPC, Subnet or NetworkInterface"
            ))),
        }
    }
}

/// What a resource id names on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `NetworkInterface`: an interface name, or a glob over names (`veth*`).
    InterfaceName(String),
    /// `NetworkInterface`: an ENI id, matched to an interface by MAC through instance metadata.
    Eni(String),
    /// `NetworkInterface`: a MAC address (lowercase, colon-separated).
    Mac(String),
    /// `NetworkInterface`: the interfaces of a container, pod or VM (`container:web-*`,
    /// `pod:shop/cart`, `vm:db`: see [`GuestSelector`]).
    Guest(GuestSelector),
    /// `Subnet`: every interface with an address in this block.
    Cidr(IpNet),
    /// `Subnet`: a subnet id from instance metadata.
    SubnetId(String),
    /// `VPC`: the host's VPC id; every interface except loopback.
    VpcId(String),
    /// `VPC` `*`: every interface except loopback, whatever the VPC.
    AnyVpc,
    /// The `flowlog run` flag form: interfaces whose names match any of these globs (`--iface`),
    /// or, with none, every interface that is up and not loopback.
    RunFlags(Vec<String>),
}

impl Resource {
    /// Whether `iface` is part of this resource now. `meta` matches ENI ids and subnet ids to
    /// interfaces by MAC.
    pub fn covers(&self, iface: &Interface, meta: &Metadata) -> bool {
        let name_matches = |p: &str| glob::Pattern::new(p).is_ok_and(|p| p.matches(&iface.name));
        let mac_is = |mac: &str| iface.mac.as_deref() == Some(mac);
        match self {
            Resource::InterfaceName(p) => name_matches(p),
            Resource::Eni(id) => meta.enis.get(id).is_some_and(|e| mac_is(&e.mac)),
            Resource::Mac(mac) => mac_is(mac),
            Resource::Guest(selector) => selector.matches(iface),
            Resource::Cidr(block) => {
                !iface.loopback && iface.addrs.iter().any(|a| block.contains(a))
            }
            // Without instance metadata, only `--subnet-id` says where this host is: the
            // host's own subnet holds every interface.
            Resource::SubnetId(id) if meta.enis.is_empty() => {
                !iface.loopback && meta.subnet_id == *id
            }
            Resource::SubnetId(id) => meta
                .enis
                .values()
                .any(|e| e.subnet_id.as_ref() == Some(id) && mac_is(&e.mac)),
            Resource::VpcId(_) | Resource::AnyVpc => !iface.loopback,
            Resource::RunFlags(patterns) if patterns.is_empty() => iface.up && !iface.loopback,
            Resource::RunFlags(patterns) => {
                patterns.iter().any(|p| match GuestSelector::parse(p) {
                    Some(selector) => selector.is_ok_and(|s| s.matches(iface)),
                    None => name_matches(p),
                })
            }
        }
    }
}

impl Resource {
    /// Whether this resource names guests (`container:`, `pod:`, `vm:`), whose interfaces
    /// match only once their owner is known.
    pub fn selects_guests(&self) -> bool {
        match self {
            Resource::Guest(_) => true,
            Resource::RunFlags(patterns) => {
                patterns.iter().any(|p| GuestSelector::parse(p).is_some())
            }
            _ => false,
        }
    }

    /// Classifies `id` for `kind`, or says why it cannot name a resource of that kind.
    pub fn parse(kind: ResourceType, id: &str) -> Result<Self, ApiError> {
        let id = id.trim();
        match kind {
            ResourceType::NetworkInterface => {
                if id.starts_with("eni-") {
                    return Ok(Resource::Eni(id.to_string()));
                }
                match GuestSelector::parse(id) {
                    Some(Ok(selector)) => return Ok(Resource::Guest(selector)),
                    Some(Err(e)) => {
                        return Err(ApiError::new(
                            codes::NETWORK_INTERFACE_NOT_FOUND,
                            format!("The networkInterface ID '{id}' is malformed: {e}"),
                        ));
                    }
                    None => {}
                }
                if let Some(mac) = parse_mac(id) {
                    return Ok(Resource::Mac(mac));
                }
                // Linux names: 1-15 bytes, no '/', no whitespace; a glob may be longer only
                // through its metacharacters, which `glob` checks.
                if id.is_empty()
                    || id.contains(|c: char| c == '/' || c.is_whitespace())
                    || glob::Pattern::new(id).is_err()
                {
                    return Err(ApiError::new(
                        codes::NETWORK_INTERFACE_NOT_FOUND,
                        format!(
                            "The networkInterface ID '{id}' is malformed: use an interface name, a glob such as veth*, an ENI id or a MAC address"
                        ),
                    ));
                }
                Ok(Resource::InterfaceName(id.to_string()))
            }
            ResourceType::Subnet => {
                if id.starts_with("subnet-") {
                    return Ok(Resource::SubnetId(id.to_string()));
                }
                match id.parse::<IpNet>() {
                    Ok(net) => Ok(Resource::Cidr(net.trunc())),
                    Err(_) => Err(ApiError::new(
                        codes::SUBNET_NOT_FOUND,
                        format!(
                            "The subnet ID '{id}' is malformed: use a CIDR block (10.88.0.0/16, fd00::/64) or a subnet id"
                        ),
                    )),
                }
            }
            ResourceType::Vpc => match id {
                "*" => Ok(Resource::AnyVpc),
                _ if id.starts_with("vpc-") => Ok(Resource::VpcId(id.to_string())),
                _ => Err(ApiError::new(
                    codes::VPC_NOT_FOUND,
                    format!("The vpc ID '{id}' is malformed: use the host's VPC id or *"),
                )),
            },
        }
    }
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), lowercased; `None` if `s` is not a MAC address.
fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

/// `DestinationOptions`, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    pub file_format: FileFormat,
    pub hive_compatible_partitions: bool,
    pub per_hour_partition: bool,
    /// Encryption and ACL of S3 objects (s3 destinations only).
    pub s3: S3Protection,
}

/// One flow log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLogSpec {
    /// `fl-` and 17 hex digits.
    pub id: String,
    pub resource_type: ResourceType,
    /// The resource id as given (what DescribeFlowLogs shows).
    pub resource_id: String,
    pub resource: Resource,
    pub traffic_type: TrafficType,
    pub destination: DestinationSpec,
    /// The format as given (AWS's default format when none was).
    pub log_format_text: String,
    pub log_format: LogFormat,
    /// Seconds, 1..=86400.
    pub max_aggregation_interval: u32,
    /// For object destinations (file, S3).
    pub options: ObjectOptions,
    pub tags: Vec<Tag>,
    /// Kept to describe; delivery uses the host's credentials.
    pub deliver_logs_permission_arn: Option<String>,
    pub deliver_cross_account_role: Option<String>,
    pub creation_time: DateTime<Utc>,
    /// From whose side the interfaces of containers and VMs are logged (not AWS's).
    pub perspective: Perspective,
}

/// A flow log id: `fl-` and 17 lowercase hex digits, as AWS's.
pub fn new_flow_log_id() -> String {
    format!("fl-{:017x}", fastrand::u128(..) & ((1u128 << 68) - 1))
}

/// Whether `id` has the shape of a flow log id.
pub fn is_flow_log_id(id: &str) -> bool {
    id.strip_prefix("fl-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The result of validating a CreateFlowLogs request: one flow log per accepted resource id,
/// and the refused ones with their error.
#[derive(Debug, Default)]
pub struct Validated {
    pub specs: Vec<FlowLogSpec>,
    pub unsuccessful: Vec<api::UnsuccessfulItem>,
}

impl FlowLogSpec {
    /// Validates `req`. An error about the request as a whole (a missing or invalid member)
    /// is `Err`; a resource id that names nothing of its type goes to `unsuccessful`. Each
    /// accepted resource id gets a new id and `now` as its creation time. A dry run that
    /// would succeed is `Err(DryRunOperation)`, as in AWS.
    pub fn from_request(
        req: &CreateFlowLogsRequest,
        now: DateTime<Utc>,
    ) -> Result<Validated, ApiError> {
        let kind = ResourceType::parse(
            req.resource_type
                .as_deref()
                .ok_or_else(|| ApiError::missing("ResourceType"))?,
        )?;
        if req.resource_ids.is_empty() {
            return Err(ApiError::missing("ResourceIds"));
        }
        let traffic_type = match req.traffic_type.as_deref() {
            None => TrafficType::All,
            Some(t @ ("ACCEPT" | "REJECT" | "ALL")) => t.parse().map_err(|_| {
                ApiError::invalid(format!(
                    "invalid TrafficType {t:?}: use ACCEPT, REJECT or ALL"
                ))
            })?,
            Some(t) => {
                return Err(ApiError::invalid(format!(
                    "invalid TrafficType {t:?}: use ACCEPT, REJECT or ALL"
                )));
            }
        };
        let destination = destination(req)?;
        let options = object_options(req.destination_options.as_ref(), &destination)?;
        let log_format_text = req
            .log_format
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_FORMAT)
            .to_string();
        let log_format: LogFormat = log_format_text
            .parse()
            .map_err(|e: anyhow::Error| ApiError::invalid(format!("LogFormat: {e:#}")))?;
        let max_aggregation_interval = match req.max_aggregation_interval {
            None => DEFAULT_REQUEST_INTERVAL,
            Some(s) if (1..=i64::from(MAX_INTERVAL)).contains(&s) => s as u32,
            Some(s) => {
                return Err(ApiError::invalid(format!(
                    "invalid MaxAggregationInterval {s}: use a whole number of seconds from 1 to {MAX_INTERVAL} (AWS: 60 or 600)"
                )));
            }
        };
        let tags = tags(&req.tag_specifications)?;
        let perspective = match req.perspective.as_deref() {
            None => Perspective::default(),
            Some(p) => p
                .parse()
                .map_err(|e: anyhow::Error| ApiError::invalid(format!("Perspective: {e:#}")))?,
        };
        let mut out = Validated::default();
        for resource_id in &req.resource_ids {
            match Resource::parse(kind, resource_id) {
                Ok(resource) => out.specs.push(FlowLogSpec {
                    id: new_flow_log_id(),
                    resource_type: kind,
                    resource_id: resource_id.trim().to_string(),
                    resource,
                    traffic_type,
                    destination: destination.clone(),
                    log_format_text: log_format_text.clone(),
                    log_format: log_format.clone(),
                    max_aggregation_interval,
                    options: options.clone(),
                    tags: tags.clone(),
                    deliver_logs_permission_arn: req.deliver_logs_permission_arn.clone(),
                    deliver_cross_account_role: req.deliver_cross_account_role.clone(),
                    creation_time: now,
                    perspective,
                }),
                Err(error) => out.unsuccessful.push(api::UnsuccessfulItem {
                    error,
                    resource_id: resource_id.clone(),
                }),
            }
        }
        if req.dry_run == Some(true) && out.unsuccessful.is_empty() {
            return Err(api::dry_run_succeeded());
        }
        Ok(out)
    }

    /// Whether the resource this flow log names exists on this host: ENI, subnet and VPC ids
    /// must be known to instance metadata (or the `--vpc-id`/`--subnet-id` flags). Names,
    /// globs, MAC addresses, CIDR blocks and `*` may match nothing yet: interfaces that appear
    /// later are picked up.
    pub fn check_known(&self, meta: &Metadata) -> Result<(), ApiError> {
        match &self.resource {
            Resource::Eni(id) if !meta.enis.contains_key(id) => Err(ApiError::new(
                codes::NETWORK_INTERFACE_NOT_FOUND,
                format!("The networkInterface ID '{id}' does not exist on this host"),
            )),
            Resource::SubnetId(id)
                if meta.subnet_id != *id
                    && !meta.enis.values().any(|e| e.subnet_id.as_ref() == Some(id)) =>
            {
                Err(ApiError::new(
                    codes::SUBNET_NOT_FOUND,
                    format!("The subnet ID '{id}' does not exist on this host"),
                ))
            }
            Resource::VpcId(id)
                if meta.vpc_id != *id
                    && !meta.enis.values().any(|e| e.vpc_id.as_ref() == Some(id)) =>
            {
                Err(ApiError::new(
                    codes::VPC_NOT_FOUND,
                    format!("The vpc ID '{id}' does not exist on this host"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// AWS's `FlowLogAlreadyExists`: the same resource, traffic type and destination.
    pub fn same_configuration(&self, other: &FlowLogSpec) -> bool {
        self.resource_type == other.resource_type
            && self.resource == other.resource
            && self.traffic_type == other.traffic_type
            && self.destination == other.destination
    }

    /// `LogDestinationType`.
    pub fn log_destination_type(&self) -> &'static str {
        match self.destination {
            DestinationSpec::File(_) => "file",
            DestinationSpec::S3 { .. } => "s3",
            DestinationSpec::CloudWatchLogs { .. } => "cloud-watch-logs",
        }
    }

    /// The flow log as DescribeFlowLogs shows it; `delivery_error` is `None` while delivery
    /// succeeds.
    pub fn describe(&self, delivery_error: Option<&str>) -> FlowLogDescription {
        let (log_destination, log_group_name) = match &self.destination {
            DestinationSpec::File(dir) => (dir.display().to_string(), None),
            DestinationSpec::S3 { bucket, prefix } if prefix.is_empty() => {
                (format!("arn:aws:s3:::{bucket}"), None)
            }
            DestinationSpec::S3 { bucket, prefix } => {
                (format!("arn:aws:s3:::{bucket}/{prefix}"), None)
            }
            DestinationSpec::CloudWatchLogs { group, region } => (
                format!(
                    "arn:aws:logs:{}::log-group:{group}",
                    region.as_deref().unwrap_or("")
                ),
                Some(group.clone()),
            ),
        };
        let destination_options =
            (self.log_destination_type() != "cloud-watch-logs").then(|| DestinationOptions {
                file_format: Some(
                    match self.options.file_format {
                        FileFormat::PlainText => "plain-text",
                        FileFormat::Parquet => "parquet",
                    }
                    .to_string(),
                ),
                hive_compatible_partitions: Some(self.options.hive_compatible_partitions),
                per_hour_partition: Some(self.options.per_hour_partition),
                server_side_encryption: self.options.s3.sse_name().map(str::to_string),
                sse_kms_key_id: self.options.s3.kms_key_id().map(str::to_string),
                acl: self.options.s3.acl.map(|a| a.to_string()),
            });
        FlowLogDescription {
            creation_time: self
                .creation_time
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            deliver_logs_error_message: delivery_error.map(str::to_string),
            deliver_logs_permission_arn: self.deliver_logs_permission_arn.clone(),
            deliver_cross_account_role: self.deliver_cross_account_role.clone(),
            deliver_logs_status: if delivery_error.is_some() {
                "FAILED"
            } else {
                "SUCCESS"
            }
            .to_string(),
            flow_log_id: self.id.clone(),
            flow_log_status: "ACTIVE".to_string(),
            log_group_name,
            resource_id: self.resource_id.clone(),
            traffic_type: match self.traffic_type {
                TrafficType::Accept => "ACCEPT",
                TrafficType::Reject => "REJECT",
                TrafficType::All => "ALL",
            }
            .to_string(),
            log_destination_type: self.log_destination_type().to_string(),
            log_destination,
            log_format: self.log_format_text.clone(),
            tags: self.tags.clone(),
            max_aggregation_interval: self.max_aggregation_interval,
            destination_options,
            perspective: (self.perspective != Perspective::default())
                .then(|| self.perspective.to_string()),
        }
    }
}

/// `LogDestinationType` with `LogDestination` or `LogGroupName`.
fn destination(req: &CreateFlowLogsRequest) -> Result<DestinationSpec, ApiError> {
    let kind = req
        .log_destination_type
        .as_deref()
        .unwrap_or("cloud-watch-logs");
    let dest = req.log_destination.as_deref().map(str::trim);
    let parse = |s: &str| {
        s.parse::<DestinationSpec>()
            .map_err(|e| ApiError::invalid(format!("LogDestination: {e:#}")))
    };
    match kind {
        "cloud-watch-logs" => match (dest, req.log_group_name.as_deref()) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "Please only provide LogGroupName or only provide LogDestination.",
            )),
            (None, None) => Err(ApiError::missing("LogDestination or LogGroupName")),
            (Some(arn), None) if arn.starts_with("arn:") => match parse(arn)? {
                d @ DestinationSpec::CloudWatchLogs { .. } => Ok(d),
                _ => Err(ApiError::invalid(format!(
                    "LogDestination {arn:?} is not a log group ARN (arn:aws:logs:REGION:ACCOUNT:log-group:NAME)"
                ))),
            },
            (Some(other), None) => Err(ApiError::invalid(format!(
                "LogDestination {other:?} is not a log group ARN (arn:aws:logs:REGION:ACCOUNT:log-group:NAME); or give LogGroupName"
            ))),
            (None, Some(group)) => parse(&format!("cloud-watch-logs:{group}")),
        },
        "s3" => {
            if req.log_group_name.is_some() {
                return Err(ApiError::invalid(
                    "LogGroupName applies to cloud-watch-logs destinations only",
                ));
            }
            let arn = dest.ok_or_else(|| ApiError::missing("LogDestination"))?;
            match parse(arn)? {
                d @ DestinationSpec::S3 { .. } => Ok(d),
                _ => Err(ApiError::invalid(format!(
                    "LogDestination {arn:?} is not an S3 bucket ARN (arn:aws:s3:::BUCKET[/PREFIX])"
                ))),
            }
        }
        "file" => {
            if req.log_group_name.is_some() {
                return Err(ApiError::invalid(
                    "LogGroupName applies to cloud-watch-logs destinations only",
                ));
            }
            let dir = dest.ok_or_else(|| ApiError::missing("LogDestination"))?;
            let dir = PathBuf::from(dir.strip_prefix("file:").unwrap_or(dir));
            if !dir.is_absolute() {
                return Err(ApiError::invalid(format!(
                    "LogDestination {:?} for a file destination must be an absolute directory path",
                    dir.display()
                )));
            }
            Ok(DestinationSpec::File(dir))
        }
        "kinesis-data-firehose" => Err(ApiError::invalid(
            "LogDestinationType kinesis-data-firehose is not supported here: use s3, cloud-watch-logs or file",
        )),
        other => Err(ApiError::invalid(format!(
            "invalid LogDestinationType {other:?}: use cloud-watch-logs, s3 or file"
        ))),
    }
}

/// `DestinationOptions`: for object destinations only, as AWS allows them for S3 only.
fn object_options(
    opts: Option<&DestinationOptions>,
    dest: &DestinationSpec,
) -> Result<ObjectOptions, ApiError> {
    let Some(o) = opts else {
        return Ok(ObjectOptions::default());
    };
    if matches!(dest, DestinationSpec::CloudWatchLogs { .. }) {
        return Err(ApiError::invalid(
            "DestinationOptions apply to s3 and file destinations only",
        ));
    }
    let file_format = match o.file_format.as_deref() {
        None | Some("plain-text") => FileFormat::PlainText,
        Some("parquet") => FileFormat::Parquet,
        Some(f) => {
            return Err(ApiError::invalid(format!(
                "invalid DestinationOptions FileFormat {f:?}: use plain-text or parquet"
            )));
        }
    };
    let s3 = S3Protection::new(
        o.server_side_encryption.as_deref(),
        o.sse_kms_key_id.as_deref(),
        o.acl.as_deref(),
    )
    .map_err(|e| ApiError::invalid(format!("DestinationOptions: {e}")))?;
    if !s3.is_empty() && !matches!(dest, DestinationSpec::S3 { .. }) {
        return Err(ApiError::invalid(
            "DestinationOptions ServerSideEncryption, SSEKMSKeyId and ACL apply to s3 destinations only",
        ));
    }
    Ok(ObjectOptions {
        file_format,
        hive_compatible_partitions: o.hive_compatible_partitions.unwrap_or(false),
        per_hour_partition: o.per_hour_partition.unwrap_or(false),
        s3,
    })
}

/// The tags of `TagSpecifications` whose resource type is the flow log's.
fn tags(specs: &[api::TagSpecification]) -> Result<Vec<Tag>, ApiError> {
    let mut tags = Vec::new();
    for s in specs {
        match s.resource_type.as_deref() {
            None | Some(TAG_RESOURCE_TYPE) => tags.extend(s.tags.iter().cloned()),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "invalid TagSpecifications ResourceType {other:?}: flow logs are tagged as {TAG_RESOURCE_TYPE}"
                )));
            }
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlogs::api::parse_request;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_000_000, 123_000_000).unwrap()
    }

    fn create(json: &str) -> Result<Validated, ApiError> {
        FlowLogSpec::from_request(&parse_request(json)?, now())
    }

    fn error(json: &str) -> ApiError {
        create(json).expect_err(json)
    }

    #[test]
    fn one_flow_log_per_resource_id_with_aws_defaults() {
        let v = create(
            r#"{"ResourceType":"NetworkInterface","ResourceIds":["veth*","eth0","0E:12:34:56:78:9A","eni-0a1b2c3d4e5f60718"],
                "LogDestinationType":"file","LogDestination":"/var/log/flowlog"}"#,
        )
        .unwrap();
        assert!(v.unsuccessful.is_empty());
        let resources: Vec<_> = v.specs.iter().map(|s| s.resource.clone()).collect();
        assert_eq!(
            resources,
            [
                Resource::InterfaceName("veth*".into()),
                Resource::InterfaceName("eth0".into()),
                Resource::Mac("0e:12:34:56:78:9a".into()),
                Resource::Eni("eni-0a1b2c3d4e5f60718".into()),
            ]
        );
        let s = &v.specs[0];
        assert_eq!(s.max_aggregation_interval, 600);
        assert_eq!(s.traffic_type, TrafficType::All);
        assert_eq!(s.log_format_text, DEFAULT_FORMAT);
        assert_eq!(
            s.destination,
            DestinationSpec::File("/var/log/flowlog".into())
        );
        let ids: std::collections::BTreeSet<_> = v.specs.iter().map(|s| &s.id).collect();
        assert_eq!(ids.len(), 4, "every flow log has its own id");
        assert!(
            v.specs
                .iter()
                .all(|s| is_flow_log_id(&s.id) && s.id.len() == 20)
        );
    }

    #[test]
    fn describe_shows_what_was_created() {
        let v = create(
            r#"{"ResourceType":"Subnet","ResourceIds":["10.88.0.0/16"],"TrafficType":"REJECT",
                "LogDestinationType":"s3","LogDestination":"arn:aws:s3:::flow-bucket/logs",
                "MaxAggregationInterval":60,"LogFormat":"${version} ${srcaddr} ${action}",
                "DestinationOptions":{"FileFormat":"parquet","HiveCompatiblePartitions":true},
                "TagSpecifications":[{"ResourceType":"vpc-flow-log","Tags":[{"Key":"team","Value":"net"}]}]}"#,
        )
        .unwrap();
        let mut d = serde_json::to_value(v.specs[0].describe(None)).unwrap();
        d["FlowLogId"] = "fl-x".into();
        assert_eq!(
            d,
            serde_json::json!({
                "CreationTime": "2026-11-30T00:53:20.123Z", // date -u -d @1796000000
                "DeliverLogsStatus": "SUCCESS",
                "FlowLogId": "fl-x",
                "FlowLogStatus": "ACTIVE",
                "ResourceId": "10.88.0.0/16",
                "TrafficType": "REJECT",
                "LogDestinationType": "s3",
                "LogDestination": "arn:aws:s3:::flow-bucket/logs",
                "LogFormat": "${version} ${srcaddr} ${action}",
                "Tags": [{"Key": "team", "Value": "net"}],
                "MaxAggregationInterval": 60,
                "DestinationOptions": {"FileFormat": "parquet", "HiveCompatiblePartitions": true, "PerHourPartition": false}
            })
        );
        let failed = v.specs[0].describe(Some("Access error: AccessDenied"));
        assert_eq!(failed.deliver_logs_status, "FAILED");
        assert_eq!(
            failed.deliver_logs_error_message.as_deref(),
            Some("Access error: AccessDenied")
        );
    }

    #[test]
    fn s3_encryption_and_acl_are_described_only_when_set() {
        let v = create(
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"s3",
                "LogDestination":"arn:aws:s3:::flow-bucket",
                "DestinationOptions":{"ServerSideEncryption":"aws:kms","SSEKMSKeyId":"arn:aws:kms:us-east-1:111122223333:key/k1","ACL":"bucket-owner-full-control"}}"#,
        )
        .unwrap();
        let s3 = &v.specs[0].options.s3;
        assert_eq!(s3.sse_name(), Some("aws:kms"));
        assert_eq!(
            s3.kms_key_id(),
            Some("arn:aws:kms:us-east-1:111122223333:key/k1")
        );
        let d = serde_json::to_value(v.specs[0].describe(None)).unwrap();
        assert_eq!(
            d["DestinationOptions"],
            serde_json::json!({"FileFormat": "plain-text", "HiveCompatiblePartitions": false,
                "PerHourPartition": false, "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": "arn:aws:kms:us-east-1:111122223333:key/k1",
                "ACL": "bucket-owner-full-control"})
        );
    }

    #[test]
    fn cloudwatch_by_group_name_or_arn() {
        let v = create(
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"flows","TrafficType":"ACCEPT"}"#,
        )
        .unwrap();
        assert_eq!(v.specs[0].resource, Resource::AnyVpc);
        let d = v.specs[0].describe(None);
        assert_eq!(d.log_destination_type, "cloud-watch-logs");
        assert_eq!(d.log_group_name.as_deref(), Some("flows"));
        assert_eq!(d.destination_options, None);
        let v = create(
            r#"{"ResourceType":"VPC","ResourceIds":["vpc-0123"],"LogDestinationType":"cloud-watch-logs",
                "LogDestination":"arn:aws:logs:us-east-1:123456789012:log-group:flows:*"}"#,
        )
        .unwrap();
        assert_eq!(
            v.specs[0].destination,
            DestinationSpec::CloudWatchLogs {
                group: "flows".into(),
                region: Some("us-east-1".into())
            }
        );
    }

    #[test]
    fn bad_requests_get_aws_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"ResourceIds":["eth0"],"LogGroupName":"g"}"#,
                "MissingParameter",
                "ResourceType",
            ),
            (
                r#"{"ResourceType":"NetworkInterface","LogGroupName":"g"}"#,
                "MissingParameter",
                "ResourceIds",
            ),
            (
                r#"{"ResourceType":"Instance","ResourceIds":["i-1"],"LogGroupName":"g"}"#,
                "InvalidParameter",
                "invalid ResourceType \"Instance\"",
            ),
            (
                r#"{"ResourceType":"TransitGateway","ResourceIds":["tgw-1"],"LogGroupName":"g"}"#,
                "InvalidParameter",
                "no equivalent on a host",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","TrafficType":"all"}"#,
                "InvalidParameter",
                "invalid TrafficType \"all\"",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","MaxAggregationInterval":0}"#,
                "InvalidParameter",
                "invalid MaxAggregationInterval 0",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","MaxAggregationInterval":86401}"#,
                "InvalidParameter",
                "from 1 to 86400",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","LogFormat":"${version} ${srcadr}"}"#,
                "InvalidParameter",
                "LogFormat: unknown field ${srcadr} in the log format (did you mean ${srcaddr}?)",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"s3","LogDestination":"arn:aws:s3:::bucket/AWSLogs"}"#,
                "InvalidParameter",
                "AWSLogs is reserved",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"s3"}"#,
                "MissingParameter",
                "LogDestination",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","LogDestination":"arn:aws:logs:us-east-1:1:log-group:g"}"#,
                "InvalidParameter",
                "only provide LogGroupName",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","DestinationOptions":{"FileFormat":"parquet"}}"#,
                "InvalidParameter",
                "s3 and file destinations only",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"file","LogDestination":"/d","DestinationOptions":{"FileFormat":"orc"}}"#,
                "InvalidParameter",
                "FileFormat \"orc\"",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"file","LogDestination":"/d","DestinationOptions":{"ServerSideEncryption":"AES256"}}"#,
                "InvalidParameter",
                "ServerSideEncryption, SSEKMSKeyId and ACL apply to s3 destinations only",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"s3","LogDestination":"arn:aws:s3:::bucket","DestinationOptions":{"ACL":"public-read"}}"#,
                "InvalidParameter",
                "DestinationOptions: the canned ACL \"public-read\" would let others read flow logs",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"s3","LogDestination":"arn:aws:s3:::bucket","DestinationOptions":{"SSEKMSKeyId":"alias/k"}}"#,
                "InvalidParameter",
                "a KMS key id needs server-side encryption aws:kms",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"file","LogDestination":"relative/dir"}"#,
                "InvalidParameter",
                "absolute directory path",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"kinesis-data-firehose","LogDestination":"arn:aws:firehose:us-east-1:1:deliverystream/x"}"#,
                "InvalidParameter",
                "not supported here",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","TagSpecifications":[{"ResourceType":"instance","Tags":[]}]}"#,
                "InvalidParameter",
                "tagged as vpc-flow-log",
            ),
            (
                r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","DryRun":true}"#,
                "DryRunOperation",
                "Request would have succeeded, but DryRun flag is set.",
            ),
        ];
        for (json, code, message) in cases {
            let e = error(json);
            assert_eq!(e.code, *code, "{json}: {e}");
            assert!(e.message.contains(message), "{json}: {e}");
        }
    }

    #[test]
    fn malformed_resource_ids_are_unsuccessful_and_the_rest_created() {
        let v = create(
            r#"{"ResourceType":"Subnet","ResourceIds":["10.0.0.0/8","10.0.0/8","subnet-0abc"],"LogGroupName":"g"}"#,
        )
        .unwrap();
        assert_eq!(v.specs.len(), 2);
        assert_eq!(
            v.specs[0].resource,
            Resource::Cidr("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            v.specs[1].resource,
            Resource::SubnetId("subnet-0abc".into())
        );
        assert_eq!(v.unsuccessful.len(), 1);
        assert_eq!(v.unsuccessful[0].resource_id, "10.0.0/8");
        assert_eq!(v.unsuccessful[0].error.code, "InvalidSubnetID.NotFound");
        let v = create(r#"{"ResourceType":"VPC","ResourceIds":["default"],"LogGroupName":"g"}"#)
            .unwrap();
        assert_eq!(v.unsuccessful[0].error.code, "InvalidVpcID.NotFound");
        let v = create(
            r#"{"ResourceType":"NetworkInterface","ResourceIds":["a b","x/y"],"LogGroupName":"g"}"#,
        )
        .unwrap();
        assert!(v.specs.is_empty());
        assert!(
            v.unsuccessful
                .iter()
                .all(|u| u.error.code == "InvalidNetworkInterfaceId.NotFound")
        );
    }

    #[test]
    fn ids_unknown_to_this_host_are_not_found() {
        let mut meta = Metadata {
            vpc_id: "vpc-0aaa".into(),
            subnet_id: "subnet-0bbb".into(),
            ..Metadata::default()
        };
        meta.enis.insert(
            "eni-0ccc".into(),
            crate::inventory::imds::Eni {
                mac: "0e:00:00:00:00:01".into(),
                interface_id: "eni-0ccc".into(),
                account_id: None,
                vpc_id: Some("vpc-0aaa".into()),
                subnet_id: Some("subnet-0ddd".into()),
                vpc_cidrs: Vec::new(),
                subnet_cidr: None,
            },
        );
        let check = |kind: &str, id: &str| {
            let v = create(&format!(
                r#"{{"ResourceType":"{kind}","ResourceIds":["{id}"],"LogGroupName":"g"}}"#
            ))
            .unwrap();
            v.specs[0].check_known(&meta).map_err(|e| e.code)
        };
        assert_eq!(check("NetworkInterface", "eni-0ccc"), Ok(()));
        assert_eq!(
            check("NetworkInterface", "eni-0fff"),
            Err("InvalidNetworkInterfaceId.NotFound".into())
        );
        assert_eq!(check("Subnet", "subnet-0bbb"), Ok(()));
        assert_eq!(check("Subnet", "subnet-0ddd"), Ok(()));
        assert_eq!(
            check("Subnet", "subnet-0eee"),
            Err("InvalidSubnetID.NotFound".into())
        );
        assert_eq!(check("VPC", "vpc-0aaa"), Ok(()));
        assert_eq!(
            check("VPC", "vpc-0999"),
            Err("InvalidVpcID.NotFound".into())
        );
        assert_eq!(check("VPC", "*"), Ok(()));
        assert_eq!(check("NetworkInterface", "veth-not-there-yet"), Ok(()));
    }

    #[test]
    fn each_resource_covers_its_interfaces() {
        let mut meta = Metadata {
            subnet_id: "subnet-0host".into(),
            ..Metadata::default()
        };
        let iface = |name: &str, mac: &str, addrs: &[&str], up: bool, loopback: bool| Interface {
            name: name.into(),
            mac: Some(mac.into()),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            up,
            loopback,
            ..Interface::default()
        };
        let lo = iface("lo", "00:00:00:00:00:01", &["127.0.0.1", "::1"], true, true);
        let eth0 = iface(
            "eth0",
            "0e:00:00:00:00:01",
            &["10.0.1.10", "fd00::10"],
            true,
            false,
        );
        let veth = iface("veth3", "02:42:ac:11:00:02", &["172.17.0.1"], true, false);
        let down = iface("eth1", "0e:00:00:00:00:02", &[], false, false);
        let all = [&lo, &eth0, &veth, &down];
        let covered = |r: Resource, meta: &Metadata| -> Vec<String> {
            all.iter()
                .filter(|i| r.covers(i, meta))
                .map(|i| i.name.clone())
                .collect()
        };
        let r = |kind, id: &str| Resource::parse(kind, id).unwrap();
        use ResourceType::*;
        assert_eq!(covered(r(NetworkInterface, "veth*"), &meta), ["veth3"]);
        assert_eq!(covered(r(NetworkInterface, "lo"), &meta), ["lo"]);
        assert_eq!(
            covered(r(NetworkInterface, "0E:00:00:00:00:02"), &meta),
            ["eth1"]
        );
        assert_eq!(covered(r(Subnet, "10.0.0.0/16"), &meta), ["eth0"]);
        assert_eq!(covered(r(Subnet, "fd00::/64"), &meta), ["eth0"]);
        assert_eq!(
            covered(r(Subnet, "127.0.0.0/8"), &meta),
            Vec::<String>::new()
        );
        assert_eq!(
            covered(r(Subnet, "subnet-0host"), &meta),
            ["eth0", "veth3", "eth1"]
        );
        assert_eq!(covered(r(Vpc, "*"), &meta), ["eth0", "veth3", "eth1"]);
        assert_eq!(
            covered(Resource::RunFlags(vec![]), &meta),
            ["eth0", "veth3"]
        );
        assert_eq!(
            covered(Resource::RunFlags(vec!["lo".into(), "eth*".into()]), &meta),
            ["lo", "eth0", "eth1"]
        );
        meta.enis.insert(
            "eni-0a".into(),
            crate::inventory::imds::Eni {
                mac: "0e:00:00:00:00:02".into(),
                interface_id: "eni-0a".into(),
                account_id: None,
                vpc_id: None,
                subnet_id: Some("subnet-0b".into()),
                vpc_cidrs: Vec::new(),
                subnet_cidr: None,
            },
        );
        assert_eq!(covered(r(NetworkInterface, "eni-0a"), &meta), ["eth1"]);
        assert_eq!(covered(r(Subnet, "subnet-0b"), &meta), ["eth1"]);
        // Once instance metadata knows the ENIs, a subnet id covers its ENIs only.
        assert_eq!(
            covered(r(Subnet, "subnet-0host"), &meta),
            Vec::<String>::new()
        );
    }

    #[test]
    fn same_configuration_is_resource_traffic_and_destination() {
        let a = &create(r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g"}"#)
            .unwrap()
            .specs[0];
        let b = &create(
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","LogFormat":"${version}"}"#,
        )
        .unwrap()
        .specs[0];
        let c = &create(
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","TrafficType":"REJECT"}"#,
        )
        .unwrap()
        .specs[0];
        assert!(a.same_configuration(b));
        assert!(!a.same_configuration(c));
    }

    #[test]
    fn guests_are_selected_by_container_pod_or_vm_and_perspective_is_kept() {
        let v = create(
            r#"{"ResourceType":"NetworkInterface","ResourceIds":["container:web-*","pod:shop/cart","vm:db","container:","pod:a/"],
                "LogDestinationType":"file","LogDestination":"/d","Perspective":"host"}"#,
        )
        .unwrap();
        let kinds: Vec<bool> = v
            .specs
            .iter()
            .map(|s| matches!(s.resource, Resource::Guest(_)))
            .collect();
        assert_eq!(kinds, [true, true, true]);
        let bad: Vec<(&str, &str)> = v
            .unsuccessful
            .iter()
            .map(|u| (u.resource_id.as_str(), u.error.code.as_str()))
            .collect();
        assert_eq!(
            bad,
            [
                ("container:", "InvalidNetworkInterfaceId.NotFound"),
                ("pod:a/", "InvalidNetworkInterfaceId.NotFound")
            ]
        );
        let s = &v.specs[0];
        assert!(s.resource.selects_guests());
        assert!(Resource::RunFlags(vec!["eth0".into(), "vm:db".into()]).selects_guests());
        assert!(!Resource::RunFlags(vec!["veth*".into()]).selects_guests());
        assert_eq!(s.perspective, Perspective::Host);
        assert_eq!(s.describe(None).perspective.as_deref(), Some("host"));
        // Stored and read back as the same request.
        let again = FlowLogSpec::from_request(&super::super::store::request_of(s), now())
            .unwrap()
            .specs
            .remove(0);
        assert_eq!(
            (again.resource, again.perspective),
            (s.resource.clone(), Perspective::Host)
        );
        // The default is the guest's side, and describe leaves it out, as AWS shows no such member.
        let v = create(r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g"}"#).unwrap();
        assert_eq!(v.specs[0].perspective, Perspective::Guest);
        assert_eq!(v.specs[0].describe(None).perspective, None);
        let e = error(
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","Perspective":"vm"}"#,
        );
        assert_eq!(e.code, "InvalidParameter");
        assert!(e.message.contains("use guest or host"), "{e}");
    }
}
