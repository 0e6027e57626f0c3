//! The `--destination` value: which kind of destination, and where. Parsed (and so checked) when
//! the command line is read, so a bad value is one line and a non-zero exit before anything is
//! attached.

use std::{fmt, path::PathBuf, str::FromStr};

use anyhow::{bail, ensure};

/// What a user can write after `--destination`.
pub const DESTINATION_SYNTAX: &str = "file:DIR, s3://BUCKET[/PREFIX], arn:aws:s3:::BUCKET[/PREFIX], \
     cloud-watch-logs:LOG-GROUP or arn:aws:logs:REGION:ACCOUNT:log-group:LOG-GROUP";

/// A parsed `--destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationSpec {
    /// `file:DIR`: a directory laid out like the S3 key layout.
    File(PathBuf),
    /// `s3://bucket[/prefix]` or `arn:aws:s3:::bucket[/prefix]`. `prefix` has no leading or
    /// trailing `/` and may be empty.
    S3 { bucket: String, prefix: String },
    /// `cloud-watch-logs:GROUP` or a log-group ARN (whose region, when given, is where the
    /// group lives).
    CloudWatchLogs {
        group: String,
        region: Option<String>,
    },
}

/// The delivery unit a destination takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryUnit {
    /// Gzip text (or Parquet) files keyed as AWS keys its S3 delivery: `file` and `s3`.
    Objects,
    /// One log event per record, one stream per interface: `cloud-watch-logs`.
    LogEvents,
}

impl DestinationSpec {
    pub fn delivery_unit(&self) -> DeliveryUnit {
        match self {
            DestinationSpec::File(_) | DestinationSpec::S3 { .. } => DeliveryUnit::Objects,
            DestinationSpec::CloudWatchLogs { .. } => DeliveryUnit::LogEvents,
        }
    }
}

impl fmt::Display for DestinationSpec {
    /// The canonical spelling (`s3://` and `cloud-watch-logs:` forms).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestinationSpec::File(dir) => write!(f, "file:{}", dir.display()),
            DestinationSpec::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            DestinationSpec::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            DestinationSpec::CloudWatchLogs { group, .. } => write!(f, "cloud-watch-logs:{group}"),
        }
    }
}

impl FromStr for DestinationSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Some(dir) = s.strip_prefix("file:") {
            ensure!(
                !dir.is_empty(),
                "file: needs a directory, e.g. file:/var/log/flowlog"
            );
            return Ok(DestinationSpec::File(PathBuf::from(dir)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            return s3(rest, s);
        }
        if let Some(group) = s.strip_prefix("cloud-watch-logs:") {
            check_log_group(group)?;
            return Ok(DestinationSpec::CloudWatchLogs {
                group: group.to_string(),
                region: None,
            });
        }
        if let Some(arn) = s.strip_prefix("arn:") {
            return parse_arn(arn, s);
        }
        bail!("unknown destination {s:?}: use one of {DESTINATION_SYNTAX}")
    }
}

/// `arn:PARTITION:s3:::bucket/prefix` or `arn:PARTITION:logs:REGION:ACCOUNT:log-group:NAME[:*]`.
fn parse_arn(arn: &str, whole: &str) -> anyhow::Result<DestinationSpec> {
    let parts: Vec<&str> = arn.splitn(5, ':').collect();
    let [partition, service, region, account, resource] = parts[..] else {
        bail!("malformed ARN {whole:?}: use one of {DESTINATION_SYNTAX}");
    };
    ensure!(
        partition.starts_with("aws"),
        "malformed ARN {whole:?}: the partition must be aws, aws-cn or aws-us-gov"
    );
    match service {
        "s3" => {
            ensure!(
                region.is_empty() && account.is_empty(),
                "malformed S3 ARN {whole:?}: a bucket ARN has no region or account (arn:aws:s3:::BUCKET/PREFIX)"
            );
            s3(resource, whole)
        }
        "logs" => {
            let Some(group) = resource.strip_prefix("log-group:") else {
                bail!(
                    "{whole:?} is not a log-group ARN: use arn:aws:logs:REGION:ACCOUNT:log-group:LOG-GROUP"
                );
            };
            // Console ARNs end with `:*` (all streams of the group).
            let group = group.strip_suffix(":*").unwrap_or(group);
            check_log_group(group)?;
            let region = (!region.is_empty()).then(|| region.to_string());
            Ok(DestinationSpec::CloudWatchLogs {
                group: group.to_string(),
                region,
            })
        }
        other => bail!(
            "flow logs cannot be delivered to {other:?} ARNs ({whole:?}): use one of {DESTINATION_SYNTAX}"
        ),
    }
}

/// `bucket[/prefix]` of an S3 destination.
fn s3(rest: &str, whole: &str) -> anyhow::Result<DestinationSpec> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    check_bucket(bucket, whole)?;
    let prefix = prefix.trim_matches('/');
    // AWS reserves the folder name; its own keys start with it after the prefix.
    ensure!(
        prefix != "AWSLogs" && !prefix.starts_with("AWSLogs/"),
        "invalid S3 prefix in {whole:?}: AWSLogs is reserved for the key layout; choose another folder"
    );
    ensure!(
        !prefix.contains("//"),
        "invalid S3 prefix in {whole:?}: it contains an empty folder (//)"
    );
    Ok(DestinationSpec::S3 {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    })
}

/// S3 bucket naming rules: 3-63 characters of lowercase letters, digits, `.` and `-`, starting
/// and ending with a letter or digit.
fn check_bucket(bucket: &str, whole: &str) -> anyhow::Result<()> {
    let ok_chars = bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    let ok_ends = bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    ensure!(
        (3..=63).contains(&bucket.len()) && ok_chars && ok_ends,
        "invalid S3 bucket name {bucket:?} in {whole:?}: bucket names are 3-63 lowercase letters, digits, '.' or '-'"
    );
    Ok(())
}

/// CloudWatch Logs group naming rules: 1-512 characters of `[A-Za-z0-9_\-/.#]`.
fn check_log_group(group: &str) -> anyhow::Result<()> {
    let ok_chars = group
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.' | '#'));
    ensure!(
        (1..=512).contains(&group.len()) && ok_chars,
        "invalid log group name {group:?}: log group names are 1-512 characters of letters, digits, '_', '-', '/', '.' or '#'"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DestinationSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    fn error(s: &str) -> String {
        format!("{:#}", s.parse::<DestinationSpec>().expect_err(s))
    }

    #[test]
    fn file_s3_and_cloudwatch_forms_parse() {
        assert_eq!(
            parse("file:./flowlogs"),
            DestinationSpec::File("./flowlogs".into())
        );
        let s3 = |b: &str, p: &str| DestinationSpec::S3 {
            bucket: b.into(),
            prefix: p.into(),
        };
        assert_eq!(parse("s3://my-bucket"), s3("my-bucket", ""));
        assert_eq!(parse("s3://my-bucket/"), s3("my-bucket", ""));
        assert_eq!(parse("s3://my-bucket/my-logs/"), s3("my-bucket", "my-logs"));
        assert_eq!(parse("s3://my.bucket/a/b"), s3("my.bucket", "a/b"));
        assert_eq!(
            parse("arn:aws:s3:::my-bucket/my-logs/"),
            s3("my-bucket", "my-logs")
        );
        assert_eq!(parse("arn:aws-cn:s3:::my-bucket"), s3("my-bucket", ""));
        assert_eq!(
            parse("cloud-watch-logs:/vpc/flow-logs"),
            DestinationSpec::CloudWatchLogs {
                group: "/vpc/flow-logs".into(),
                region: None
            }
        );
        assert_eq!(
            parse("arn:aws:logs:eu-west-1:123456789012:log-group:my-flow-logs:*"),
            DestinationSpec::CloudWatchLogs {
                group: "my-flow-logs".into(),
                region: Some("eu-west-1".into())
            }
        );
        assert_eq!(
            parse("arn:aws:logs:eu-west-1:123456789012:log-group:my-flow-logs"),
            DestinationSpec::CloudWatchLogs {
                group: "my-flow-logs".into(),
                region: Some("eu-west-1".into())
            }
        );
    }

    #[test]
    fn canonical_spelling_round_trips() {
        for s in [
            "file:/tmp/x",
            "s3://b-1/p/q",
            "s3://bucket",
            "cloud-watch-logs:g",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
        assert_eq!(parse("arn:aws:s3:::bkt/pre/").to_string(), "s3://bkt/pre");
    }

    #[test]
    fn bad_destinations_say_what_to_write() {
        assert!(
            error("/tmp/out").starts_with("unknown destination \"/tmp/out\": use one of file:DIR")
        );
        assert!(error("s3://Bad_Bucket").contains("invalid S3 bucket name \"Bad_Bucket\""));
        assert!(error("s3://ab").contains("invalid S3 bucket name"));
        assert!(error("s3://").contains("invalid S3 bucket name \"\""));
        assert!(error("s3://bucket/AWSLogs").contains("AWSLogs is reserved"));
        assert!(error("s3://bucket/a//b").contains("empty folder"));
        assert!(error("file:").contains("file: needs a directory"));
        assert!(error("cloud-watch-logs:").contains("invalid log group name \"\""));
        assert!(error("cloud-watch-logs:a b").contains("invalid log group name \"a b\""));
        assert!(error("arn:aws:s3:us-east-1:123:bucket").contains("has no region or account"));
        assert!(error("arn:aws:logs:us-east-1:123:stream:x").contains("is not a log-group ARN"));
        assert!(
            error("arn:aws:sqs:us-east-1:123:q").contains("cannot be delivered to \"sqs\" ARNs")
        );
        assert!(error("arn:aws").contains("malformed ARN"));
    }

    #[test]
    fn delivery_unit_follows_the_kind() {
        assert_eq!(parse("file:x").delivery_unit(), DeliveryUnit::Objects);
        assert_eq!(parse("s3://bucket").delivery_unit(), DeliveryUnit::Objects);
        assert_eq!(
            parse("cloud-watch-logs:g").delivery_unit(),
            DeliveryUnit::LogEvents
        );
    }
}
