//! `flowlog create-flow-logs`, `describe-flow-logs` and `delete-flow-logs`: the inputs of
//! `aws ec2 create-flow-logs` and friends (the request JSON through `--cli-input-json`, and the
//! same members as flags, which win over the JSON as in the AWS CLI), sent to the running
//! agent's control socket. The answer is AWS's response JSON on stdout.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Map, Value};

use super::DEFAULT_CONTROL_SOCKET;
use crate::flowlogs::api::{ApiError, parse_shorthand};

/// Where the agent listens (every subcommand).
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// The running agent's control socket (its `flowlog run --control-socket`).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  flowlog create-flow-logs --resource-type NetworkInterface --resource-ids 'veth*' \\
      --traffic-type REJECT --log-group-name flow-alerts
  flowlog create-flow-logs --resource-type Subnet --resource-ids 10.88.0.0/16 --log-destination-type s3 \\
      --log-destination arn:aws:s3:::my-bucket/flows \\
      --destination-options FileFormat=parquet,HiveCompatiblePartitions=true --max-aggregation-interval 60
  flowlog create-flow-logs --cli-input-json file://request.json")]
pub struct CreateFlowLogsArgs {
    /// The request as JSON, or file://PATH: the same document `aws ec2 create-flow-logs
    /// --cli-input-json` takes. Flags below override its members.
    #[arg(long, value_name = "JSON")]
    pub cli_input_json: Option<String>,
    /// VPC (ids: the host's VPC id, or *), Subnet (a CIDR block or a subnet id) or
    /// NetworkInterface (interface names, globs such as 'veth*', ENI ids, MAC addresses, or
    /// guests: container:NAME|ID|GLOB, pod:NAMESPACE/NAME, vm:NAME).
    #[arg(long, value_name = "TYPE")]
    pub resource_type: Option<String>,
    /// One flow log is created per resource id.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub resource_ids: Vec<String>,
    /// ACCEPT, REJECT or ALL [default: ALL].
    #[arg(long, value_name = "TYPE")]
    pub traffic_type: Option<String>,
    /// cloud-watch-logs (AWS's default), s3 or file.
    #[arg(long, value_name = "TYPE")]
    pub log_destination_type: Option<String>,
    /// A log group ARN, an S3 bucket ARN (arn:aws:s3:::BUCKET[/PREFIX]) or, for file, an
    /// absolute directory.
    #[arg(long, value_name = "DEST")]
    pub log_destination: Option<String>,
    /// CloudWatch Logs group name (instead of --log-destination).
    #[arg(long, value_name = "NAME")]
    pub log_group_name: Option<String>,
    /// `${field} ${field} ...` [default: AWS's version 2 format].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Seconds, 1 to 86400 [default: 600, as AWS].
    #[arg(long, value_name = "SECONDS")]
    pub max_aggregation_interval: Option<i64>,
    /// FileFormat=plain-text|parquet,HiveCompatiblePartitions=true|false,PerHourPartition=true|false
    /// (or the JSON object); for s3 also flowlog's ServerSideEncryption=AES256|aws:kms,
    /// SSEKMSKeyId=KEY and ACL=bucket-owner-full-control|bucket-owner-read|private.
    #[arg(long, value_name = "OPTIONS")]
    pub destination_options: Option<String>,
    /// ResourceType=vpc-flow-log,Tags=[{Key=K,Value=V},...] (or the JSON list).
    #[arg(long, value_name = "TAGS")]
    pub tag_specifications: Option<String>,
    /// Kept and shown by describe-flow-logs; the agent delivers with the host's credentials.
    #[arg(long, value_name = "ARN")]
    pub deliver_logs_permission_arn: Option<String>,
    /// Idempotency token: the same request with the same token creates nothing more.
    #[arg(long, value_name = "TOKEN")]
    pub client_token: Option<String>,
    /// Check the request without creating anything (answers DryRunOperation when it would
    /// succeed).
    #[arg(long)]
    pub dry_run: bool,
    /// Not AWS's: guest (the default) logs a container's or VM's interface from the guest's
    /// side (what it sent is egress, its address is srcaddr, interface-id is e.g. web-1.eth0);
    /// host keeps the host side's view. The request member is Perspective.
    #[arg(long, value_name = "guest|host")]
    pub perspective: Option<String>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  flowlog describe-flow-logs
  flowlog describe-flow-logs --filter Name=traffic-type,Values=REJECT
  flowlog describe-flow-logs --flow-log-ids fl-0123456789abcdef0")]
pub struct DescribeFlowLogsArgs {
    /// The request as JSON, or file://PATH.
    #[arg(long, value_name = "JSON")]
    pub cli_input_json: Option<String>,
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub flow_log_ids: Vec<String>,
    /// Name=NAME,Values=V1,V2 (repeatable). Names: deliver-log-status, log-destination-type,
    /// flow-log-id, log-group-name, resource-id, traffic-type, tag-key, tag:KEY.
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteFlowLogsArgs {
    /// The request as JSON, or file://PATH.
    #[arg(long, value_name = "JSON")]
    pub cli_input_json: Option<String>,
    /// The flow logs to delete: each flushes and delivers its partial window, then stops.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub flow_log_ids: Vec<String>,
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// A parameter the AWS CLI would refuse before sending anything (its exit code 252).
#[derive(Debug, thiserror::Error)]
#[error("Error parsing parameter '{param}': {detail}")]
pub struct ParamError {
    pub param: &'static str,
    pub detail: String,
}

fn param(param: &'static str) -> impl Fn(String) -> ParamError {
    move |detail| ParamError { param, detail }
}

/// `--cli-input-json`: inline JSON or `file://PATH`, an object.
fn input_json(v: Option<&str>) -> Result<Map<String, Value>, ParamError> {
    let p = param("--cli-input-json");
    let Some(v) = v else {
        return Ok(Map::new());
    };
    let text = match v.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| p(format!("Unable to load paramfile {v}: {e}")))?,
        None => v.to_string(),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(p("Invalid JSON: the input must be a JSON object".into())),
        Err(e) => Err(p(format!("Invalid JSON: {e}"))),
    }
}

/// A structure given as shorthand or JSON.
fn structure(name: &'static str, v: &str) -> Result<Value, ParamError> {
    let v = v.trim();
    if v.starts_with('{') || v.starts_with('[') {
        return serde_json::from_str(v).map_err(|e| param(name)(format!("Invalid JSON: {e}")));
    }
    parse_shorthand(v)
        .map(Value::Object)
        .map_err(|e: ApiError| param(name)(e.message))
}

/// `ResourceType=vpc-flow-log,Tags=[{Key=a,Value=b},{Key=c,Value=d}]` or the JSON list.
fn tag_specifications(v: &str) -> Result<Value, ParamError> {
    let p = param("--tag-specifications");
    let v = v.trim();
    if v.starts_with('[') || v.starts_with('{') {
        let parsed: Value = serde_json::from_str(v).map_err(|e| p(format!("Invalid JSON: {e}")))?;
        return Ok(match parsed {
            Value::Array(_) => parsed,
            one => Value::Array(vec![one]),
        });
    }
    let (head, tags) = match v.split_once("Tags=") {
        Some((head, tags)) => (head.trim_end_matches(','), tags),
        None => (v, "[]"),
    };
    let mut spec = if head.is_empty() {
        Map::new()
    } else {
        parse_shorthand(head).map_err(|e| p(e.message))?
    };
    let inner = tags
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| p("write Tags=[{Key=K,Value=V},...]".into()))?;
    let mut list = Vec::new();
    for tag in inner.split('}').map(|t| t.trim_start_matches(',').trim()) {
        if tag.is_empty() {
            continue;
        }
        let body = tag
            .strip_prefix('{')
            .ok_or_else(|| p(format!("malformed tag {tag:?}: write {{Key=K,Value=V}}")))?;
        list.push(Value::Object(
            parse_shorthand(body).map_err(|e| p(e.message))?,
        ));
    }
    spec.insert("Tags".into(), Value::Array(list));
    Ok(Value::Array(vec![Value::Object(spec)]))
}

impl CreateFlowLogsArgs {
    /// The request the agent gets: `--cli-input-json`, then every flag given.
    pub fn request(&self) -> Result<Value, ParamError> {
        let mut m = input_json(self.cli_input_json.as_deref())?;
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        };
        set("ResourceType", self.resource_type.clone().map(Value::from));
        set(
            "ResourceIds",
            (!self.resource_ids.is_empty()).then(|| self.resource_ids.clone().into()),
        );
        set("TrafficType", self.traffic_type.clone().map(Value::from));
        set(
            "LogDestinationType",
            self.log_destination_type.clone().map(Value::from),
        );
        set(
            "LogDestination",
            self.log_destination.clone().map(Value::from),
        );
        set("LogGroupName", self.log_group_name.clone().map(Value::from));
        set("LogFormat", self.log_format.clone().map(Value::from));
        set(
            "MaxAggregationInterval",
            self.max_aggregation_interval.map(Value::from),
        );
        set(
            "DeliverLogsPermissionArn",
            self.deliver_logs_permission_arn.clone().map(Value::from),
        );
        set("ClientToken", self.client_token.clone().map(Value::from));
        set("DryRun", self.dry_run.then_some(Value::Bool(true)));
        set("Perspective", self.perspective.clone().map(Value::from));
        if let Some(o) = &self.destination_options {
            m.insert(
                "DestinationOptions".into(),
                structure("--destination-options", o)?,
            );
        }
        if let Some(t) = &self.tag_specifications {
            m.insert("TagSpecifications".into(), tag_specifications(t)?);
        }
        Ok(Value::Object(m))
    }
}

impl DescribeFlowLogsArgs {
    pub fn request(&self) -> Result<Value, ParamError> {
        let mut m = input_json(self.cli_input_json.as_deref())?;
        if !self.flow_log_ids.is_empty() {
            m.insert("FlowLogIds".into(), self.flow_log_ids.clone().into());
        }
        if !self.filter.is_empty() {
            let filters = self
                .filter
                .iter()
                .map(|f| structure("--filter", f))
                .collect::<Result<Vec<_>, _>>()?;
            m.insert("Filter".into(), Value::Array(filters));
        }
        if self.dry_run {
            m.insert("DryRun".into(), Value::Bool(true));
        }
        Ok(Value::Object(m))
    }
}

impl DeleteFlowLogsArgs {
    pub fn request(&self) -> Result<Value, ParamError> {
        let mut m = input_json(self.cli_input_json.as_deref())?;
        if !self.flow_log_ids.is_empty() {
            m.insert("FlowLogIds".into(), self.flow_log_ids.clone().into());
        }
        if self.dry_run {
            m.insert("DryRun".into(), Value::Bool(true));
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use serde_json::json;

    use crate::cli::{Cli, Command};

    fn create(args: &[&str]) -> serde_json::Value {
        let argv = ["flowlog", "create-flow-logs"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::CreateFlowLogs(a) => a.request().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_make_the_aws_request_and_override_the_json() {
        let r = create(&[
            "--cli-input-json",
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"TrafficType":"ALL","LogGroupName":"g"}"#,
            "--traffic-type",
            "REJECT",
            "--destination-options",
            "FileFormat=parquet,HiveCompatiblePartitions=true",
            "--tag-specifications",
            "ResourceType=vpc-flow-log,Tags=[{Key=team,Value=net},{Key=env,Value=prod}]",
            "--max-aggregation-interval",
            "60",
        ]);
        assert_eq!(
            r,
            json!({
                "ResourceType": "VPC", "ResourceIds": ["*"], "TrafficType": "REJECT", "LogGroupName": "g",
                "MaxAggregationInterval": 60,
                "DestinationOptions": {"FileFormat": "parquet", "HiveCompatiblePartitions": true},
                "TagSpecifications": [{"ResourceType": "vpc-flow-log",
                                       "Tags": [{"Key": "team", "Value": "net"}, {"Key": "env", "Value": "prod"}]}]
            })
        );
        let r = create(&[
            "--resource-type",
            "NetworkInterface",
            "--resource-ids",
            "veth*",
            "eth0",
        ]);
        assert_eq!(r["ResourceIds"], json!(["veth*", "eth0"]));
    }

    #[test]
    fn a_request_file_is_read_and_bad_json_is_a_parameter_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req.json");
        std::fs::write(
            &path,
            r#"{"ResourceType":"Subnet","ResourceIds":["10.0.0.0/8"]}"#,
        )
        .unwrap();
        let r = create(&["--cli-input-json", &format!("file://{}", path.display())]);
        assert_eq!(r["ResourceIds"], json!(["10.0.0.0/8"]));
        let argv = [
            "flowlog",
            "create-flow-logs",
            "--cli-input-json",
            "{\"ResourceType\": ",
        ];
        let Command::CreateFlowLogs(a) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!()
        };
        let e = a.request().unwrap_err().to_string();
        assert!(
            e.starts_with("Error parsing parameter '--cli-input-json': Invalid JSON: EOF"),
            "{e}"
        );
    }

    #[test]
    fn describe_filters_and_delete_ids() {
        let argv = [
            "flowlog",
            "describe-flow-logs",
            "--filter",
            "Name=traffic-type,Values=ACCEPT,REJECT",
            "--filter",
            "Name=tag:team,Values=net",
        ];
        let Command::DescribeFlowLogs(a) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!()
        };
        assert_eq!(
            a.request().unwrap(),
            json!({"Filter": [{"Name": "traffic-type", "Values": ["ACCEPT", "REJECT"]},
                              {"Name": "tag:team", "Values": ["net"]}]})
        );
        let argv = [
            "flowlog",
            "delete-flow-logs",
            "--flow-log-ids",
            "fl-1",
            "fl-2",
        ];
        let Command::DeleteFlowLogs(a) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!()
        };
        assert_eq!(
            a.request().unwrap(),
            json!({"FlowLogIds": ["fl-1", "fl-2"]})
        );
    }
}
