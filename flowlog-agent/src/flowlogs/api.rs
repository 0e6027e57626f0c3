//! The EC2 flow-log API as the host speaks it: the request and response shapes of
//! CreateFlowLogs, DescribeFlowLogs and DeleteFlowLogs, with AWS's member names, so a request
//! file written for `aws ec2 create-flow-logs --cli-input-json` reads unchanged; and AWS-style
//! errors (`Code` and `Message`).
//!
//! Nothing here knows the agent: [`super::spec`] turns a request into flow log definitions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An error answer, as AWS gives one: a code clients match on and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// `InvalidParameter`: a value AWS would refuse, or one this host cannot serve.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMETER, message)
    }

    /// `MissingParameter`: a required member is absent.
    pub fn missing(member: &str) -> Self {
        Self::new(
            codes::MISSING_PARAMETER,
            format!("The request must contain the parameter {member}"),
        )
    }
}

impl fmt::Display for ApiError {
    /// The AWS CLI's wording, without the operation name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// AWS's error codes for these operations.
pub mod codes {
    pub const INVALID_PARAMETER: &str = "InvalidParameter";
    pub const MISSING_PARAMETER: &str = "MissingParameter";
    pub const DRY_RUN_OPERATION: &str = "DryRunOperation";
    pub const FLOW_LOG_ALREADY_EXISTS: &str = "FlowLogAlreadyExists";
    pub const FLOW_LOG_NOT_FOUND: &str = "InvalidFlowLogId.NotFound";
    pub const NETWORK_INTERFACE_NOT_FOUND: &str = "InvalidNetworkInterfaceId.NotFound";
    pub const SUBNET_NOT_FOUND: &str = "InvalidSubnetID.NotFound";
    pub const VPC_NOT_FOUND: &str = "InvalidVpcID.NotFound";
}

/// What AWS answers a dry run that would have succeeded.
pub fn dry_run_succeeded() -> ApiError {
    ApiError::new(
        codes::DRY_RUN_OPERATION,
        "Request would have succeeded, but DryRun flag is set.",
    )
}

/// `Tags[]` member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// `TagSpecifications[]` member: tags for the resource type `vpc-flow-log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TagSpecification {
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// `DestinationOptions`, as requested (every member optional) and as described (all present).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DestinationOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hive_compatible_partitions: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour_partition: Option<bool>,
    /// flowlog's own members (not AWS's: its delivery uses the bucket's default encryption
    /// and always `bucket-owner-full-control`), named as S3 PutObject names them: the
    /// server-side encryption (`AES256`, `aws:kms`), its KMS key and a canned ACL of every
    /// object (see [`crate::publish::s3_protection`]). Described only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<String>,
    #[serde(
        default,
        rename = "SSEKMSKeyId",
        skip_serializing_if = "Option::is_none"
    )]
    pub sse_kms_key_id: Option<String>,
    #[serde(default, rename = "ACL", skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
}

/// CreateFlowLogs input: the members of `aws ec2 create-flow-logs --generate-cli-skeleton`.
/// Unknown members are refused, as the AWS CLI refuses them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateFlowLogsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// Kept and described; credentials come from the host's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_logs_permission_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_cross_account_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_destination_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_specifications: Vec<TagSpecification>,
    /// Signed so that a negative value is an AWS-style error, not a JSON one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_aggregation_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_options: Option<DestinationOptions>,
    /// Not AWS's: `guest` (the default) or `host`, from whose side the interfaces of
    /// containers and VMs are logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perspective: Option<String>,
}

/// `Unsuccessful[]` member: a resource id (or flow log id) the operation refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UnsuccessfulItem {
    pub error: ApiError,
    pub resource_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFlowLogsResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    pub flow_log_ids: Vec<String>,
    pub unsuccessful: Vec<UnsuccessfulItem>,
}

/// `Filters[]` member of DescribeFlowLogs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Filter {
    pub name: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DescribeFlowLogsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<Filter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow_log_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One flow log as DescribeFlowLogs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlowLogDescription {
    pub creation_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_logs_error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_logs_permission_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_cross_account_role: Option<String>,
    pub deliver_logs_status: String,
    pub flow_log_id: String,
    pub flow_log_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group_name: Option<String>,
    pub resource_id: String,
    pub traffic_type: String,
    pub log_destination_type: String,
    pub log_destination: String,
    pub log_format: String,
    pub tags: Vec<Tag>,
    pub max_aggregation_interval: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_options: Option<DestinationOptions>,
    /// Not AWS's: shown when it is `host` (the default, `guest`, is left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perspective: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeFlowLogsResponse {
    pub flow_logs: Vec<FlowLogDescription>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeleteFlowLogsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub flow_log_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteFlowLogsResponse {
    pub unsuccessful: Vec<UnsuccessfulItem>,
}

/// Parses a request body: JSON with AWS's member names. A syntax error or an unknown member is
/// an `InvalidParameter` naming what is wrong, never a panic or a dropped connection.
pub fn parse_request<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ApiError> {
    serde_json::from_str(json).map_err(|e| ApiError::invalid(format!("malformed request: {e}")))
}

/// Parses the AWS CLI's shorthand `Key=Value,Key=Value` (`--destination-options
/// FileFormat=parquet,PerHourPartition=true`) into a JSON object whose values are strings,
/// `true`/`false`, or, after `Values=`, every following bare value up to the next `Key=`
/// (`--filter Name=traffic-type,Values=ACCEPT,REJECT`).
pub fn parse_shorthand(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    use serde_json::Value;
    let mut out = serde_json::Map::new();
    let mut list_key: Option<String> = None;
    for part in s.split(',') {
        match part.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                let key = key.trim().to_string();
                if out.contains_key(&key) {
                    return Err(ApiError::invalid(format!(
                        "malformed shorthand {s:?}: {key} is given twice"
                    )));
                }
                let value = value.trim();
                if key == "Values" {
                    out.insert(key.clone(), Value::Array(vec![value.into()]));
                    list_key = Some(key);
                } else {
                    let v = match value {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        _ => Value::String(value.to_string()),
                    };
                    out.insert(key, v);
                    list_key = None;
                }
            }
            _ => match list_key.as_ref().and_then(|k| out.get_mut(k)) {
                Some(Value::Array(values)) if !part.is_empty() => {
                    values.push(part.trim().into());
                }
                _ => {
                    return Err(ApiError::invalid(format!(
                        "malformed shorthand {s:?}: write Key=Value pairs separated by commas"
                    )));
                }
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request file of AWS's documentation example (create-flow-logs with S3 and
    /// DestinationOptions), as `--cli-input-json` takes it.
    #[test]
    fn an_aws_cli_request_file_reads_unchanged() {
        let json = r#"{
            "DryRun": false,
            "ResourceIds": ["vpc-00112233344556677"],
            "ResourceType": "VPC",
            "TrafficType": "ALL",
            "LogDestinationType": "s3",
            "LogDestination": "arn:aws:s3:::flow-log-bucket/my-custom-flow-logs/",
            "LogFormat": "${version} ${vpc-id} ${subnet-id} ${instance-id} ${srcaddr} ${dstaddr}",
            "MaxAggregationInterval": 60,
            "DestinationOptions": {"FileFormat": "parquet", "HiveCompatiblePartitions": true, "PerHourPartition": true},
            "TagSpecifications": [{"ResourceType": "vpc-flow-log", "Tags": [{"Key": "Name", "Value": "my-flow-log"}]}]
        }"#;
        let r: CreateFlowLogsRequest = parse_request(json).unwrap();
        assert_eq!(r.resource_ids, ["vpc-00112233344556677"]);
        assert_eq!(r.resource_type.as_deref(), Some("VPC"));
        assert_eq!(r.max_aggregation_interval, Some(60));
        assert_eq!(
            r.destination_options,
            Some(DestinationOptions {
                file_format: Some("parquet".into()),
                hive_compatible_partitions: Some(true),
                per_hour_partition: Some(true),
                ..Default::default()
            })
        );
        assert_eq!(r.tag_specifications[0].tags[0].value, "my-flow-log");
    }

    #[test]
    fn unknown_members_and_bad_json_are_invalid_parameter() {
        let e = parse_request::<CreateFlowLogsRequest>(r#"{"ResourceIDs": ["x"]}"#).unwrap_err();
        assert_eq!(e.code, "InvalidParameter");
        assert!(e.message.contains("unknown field `ResourceIDs`"), "{e}");
        let e = parse_request::<CreateFlowLogsRequest>("{\"ResourceIds\": [").unwrap_err();
        assert_eq!(e.code, "InvalidParameter");
        assert!(e.message.starts_with("malformed request: EOF"), "{e}");
    }

    #[test]
    fn responses_use_aws_member_names() {
        let r = CreateFlowLogsResponse {
            client_token: Some("t".into()),
            flow_log_ids: vec!["fl-0123456789abcdef0".into()],
            unsuccessful: vec![UnsuccessfulItem {
                error: ApiError::new(codes::NETWORK_INTERFACE_NOT_FOUND, "no such ENI"),
                resource_id: "eni-1".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ClientToken":"t","FlowLogIds":["fl-0123456789abcdef0"],"Unsuccessful":[{"Error":{"Code":"InvalidNetworkInterfaceId.NotFound","Message":"no such ENI"},"ResourceId":"eni-1"}]}"#
        );
    }

    #[test]
    fn shorthand_reads_options_and_filters() {
        let m = parse_shorthand(
            "FileFormat=parquet,HiveCompatiblePartitions=true,PerHourPartition=false",
        )
        .unwrap();
        let o: DestinationOptions = serde_json::from_value(m.into()).unwrap();
        assert_eq!(o.file_format.as_deref(), Some("parquet"));
        assert_eq!(o.hive_compatible_partitions, Some(true));
        assert_eq!(o.per_hour_partition, Some(false));
        let f: Filter = serde_json::from_value(
            parse_shorthand("Name=traffic-type,Values=ACCEPT,REJECT")
                .unwrap()
                .into(),
        )
        .unwrap();
        assert_eq!(f.name, "traffic-type");
        assert_eq!(f.values, ["ACCEPT", "REJECT"]);
        assert_eq!(
            parse_shorthand("FileFormat").unwrap_err().code,
            "InvalidParameter"
        );
        assert!(
            parse_shorthand("A=1,A=2")
                .unwrap_err()
                .message
                .contains("A is given twice")
        );
    }
}
