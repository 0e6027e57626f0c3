//! Options of the publish stages: where records go and how objects are cut.

use std::path::PathBuf;

use clap::Args;
use tracing::warn;

use crate::{
    publish::file_modes::{self, OutputModes},
    publish::{DestinationSpec, S3Protection},
};

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Where records go: file:DIR (a directory laid out as AWS's S3 key layout,
    /// AWSLogs/<account>/vpcflowlogs/<region>/YYYY/MM/DD/...log.gz), s3://BUCKET[/PREFIX] or
    /// arn:aws:s3:::BUCKET[/PREFIX] (the same keys in a bucket), cloud-watch-logs:LOG-GROUP or
    /// arn:aws:logs:REGION:ACCOUNT:log-group:LOG-GROUP (one event per record, one stream per
    /// interface). AWS credentials and region come from the standard chain (environment,
    /// profile, instance metadata). [default: file:./flowlogs]
    #[arg(long, value_name = "DEST", conflicts_with = "output_dir")]
    pub destination: Option<DestinationSpec>,

    /// Deprecated: the same as --destination file:DIR.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Send S3 or CloudWatch Logs requests to this S3- or CloudWatch-compatible endpoint
    /// (e.g. http://127.0.0.1:5000) instead of AWS's (S3 then uses path-style addressing).
    #[arg(long, value_name = "URL", value_parser = parse_endpoint_url)]
    pub endpoint_url: Option<String>,

    /// Longest wait for one S3 or CloudWatch Logs request before it counts as failed and is
    /// retried. Hidden: the default (120 s) fits a 75 MB upload; the fault tests lower it to
    /// meet a stalled endpoint in seconds. [range: 1..=3600]
    #[arg(long, value_name = "SECONDS", hide = true,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub publish_timeout: Option<u64>,

    /// Directory where finished batches wait (fsynced) until the destination acknowledged
    /// them; batches left by a previous run are delivered first.
    /// Flow logs created through the API always have one under --state-dir.
    /// [default: <state-dir>/spool/<flow-log-id>-<hash of the destination>, with the state
    /// directory /var/lib/flowlog by default]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Bound of the spool. When a new batch does not fit, the oldest undelivered batches are
    /// dropped, counted and logged. [range: 1..]
    #[arg(long, value_name = "BYTES", default_value_t = crate::publish::spool::DEFAULT_SPOOL_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub spool_max_bytes: u64,

    /// Format of the objects written to file and S3 destinations (AWS DestinationOptions
    /// FileFormat): plain-text is gzip text with a header line (.log.gz); parquet is a Parquet
    /// file with GZIP-compressed columns named like the fields with `_` for `-` (.log.parquet).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = crate::publish::layout::FileFormat::PlainText)]
    pub file_format: crate::publish::layout::FileFormat,

    /// Hive-compatible S3 prefixes (AWS DestinationOptions HiveCompatiblePartitions):
    /// AWSLogs/aws-account-id=<account>/aws-service=vpcflowlogs/aws-region=<region>/year=YYYY/month=MM/day=DD/.
    #[arg(long)]
    pub hive_compatible_partitions: bool,

    /// One more prefix level per hour (AWS DestinationOptions PerHourPartition): .../DD/HH/, or
    /// .../day=DD/hour=HH/ with --hive-compatible-partitions.
    #[arg(long)]
    pub per_hour_partition: bool,

    /// Seconds one output file collects records before it is written (AWS: 300). Files are
    /// also closed at 75 MB and on shutdown. [range: 1..=3600]
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub file_rollover_seconds: u64,

    /// Mode (octal) of the objects file destinations write, owned by the agent's user. Flow
    /// logs are security data: group members may read them, others may not. Applies to every
    /// file destination of this agent, API ones too.
    #[arg(long, value_name = "MODE", default_value = "0640", value_parser = file_modes::parse_file_mode)]
    pub file_mode: u32,

    /// Mode (octal; 2750 adds setgid so objects take the directory's group) of the
    /// directories file destinations create. Existing directories keep theirs.
    #[arg(long, value_name = "MODE", default_value = "0750", value_parser = file_modes::parse_dir_mode)]
    pub dir_mode: u32,

    /// S3 server-side encryption of every object (PutObject x-amz-server-side-encryption):
    /// AES256 (SSE-S3) or aws:kms (SSE-KMS). [default: none sent: the bucket's default
    /// encryption applies, SSE-S3 unless the bucket names a KMS key]
    #[arg(long, value_name = "ALGORITHM", value_parser = ["AES256", "aws:kms"])]
    pub s3_sse: Option<String>,

    /// KMS key of --s3-sse aws:kms: a key ARN, key id or alias/NAME. [default: the account's
    /// AWS managed key for S3, aws/s3]
    #[arg(long, value_name = "KEY")]
    pub s3_sse_kms_key_id: Option<String>,

    /// Canned ACL of every S3 object (PutObject x-amz-acl): bucket-owner-full-control lets the
    /// owner of a bucket in another account own the objects (AWS's own flow log delivery always
    /// sends it); bucket-owner-read or private. Public ACLs are refused. [default: none sent]
    #[arg(long, value_name = "ACL", value_parser = parse_s3_acl)]
    pub s3_acl: Option<String>,
}

impl OutputArgs {
    /// `--destination`, or `--output-dir DIR` as `file:DIR`, or the default `file:./flowlogs`.
    pub fn destination(&self) -> DestinationSpec {
        match (&self.destination, &self.output_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(dir)) => DestinationSpec::File(dir.clone()),
            (None, None) => DestinationSpec::File(PathBuf::from("./flowlogs")),
        }
    }

    /// `--file-mode` and `--dir-mode`.
    pub fn output_modes(&self) -> OutputModes {
        OutputModes {
            file: self.file_mode,
            dir: self.dir_mode,
        }
    }

    /// `--s3-sse`, `--s3-sse-kms-key-id` and `--s3-acl`, checked together.
    pub fn s3_protection(&self) -> anyhow::Result<S3Protection> {
        S3Protection::new(
            self.s3_sse.as_deref(),
            self.s3_sse_kms_key_id.as_deref(),
            self.s3_acl.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Logs the deprecated options in use (once, at startup).
    pub fn warn_deprecated(&self) {
        if let Some(dir) = &self.output_dir {
            warn!(
                "--output-dir is deprecated: use --destination file:{}",
                dir.display()
            );
        }
    }
}

/// `--endpoint-url` must be an http or https URL.
fn parse_endpoint_url(s: &str) -> anyhow::Result<String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(s.to_string()),
        _ => anyhow::bail!(
            "invalid endpoint URL {s:?}: write it as http://HOST[:PORT] or https://HOST[:PORT]"
        ),
    }
}

/// `--s3-acl`: one of the canned ACLs that keep objects private.
fn parse_s3_acl(s: &str) -> Result<String, String> {
    s.parse::<crate::publish::s3_protection::S3Acl>()
        .map(|a| a.to_string())
}
