//! The one flow log the `run` flags define (the shortcut for hosts without definitions).

use anyhow::bail;

use crate::{
    cli::{OutputArgs, RecordArgs},
    flowlogs::{
        flow_log::{FlowLog, RecordOptions},
        spec::ObjectOptions,
    },
    inventory::metadata::{Metadata, check_token},
    publish::DestinationSpec,
};

/// Stable default flow log id: `fl-` and 17 hex digits derived from the host name and the
/// destination, so a restarted agent keeps writing under the same id.
fn default_flow_log_id(destination: &str) -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut h = crc32fast::Hasher::new();
    h.update(host.as_bytes());
    let hi = h.clone().finalize();
    h.update(destination.as_bytes());
    let lo = h.finalize();
    format!(
        "fl-{:017x}",
        ((hi as u128) << 32 | lo as u128) & 0x1_ffff_ffff_ffff_ffff
    )
}

/// What the default flow log id is derived from: the directory for `file` (as before
/// `--destination` existed), else the canonical destination.
fn destination_seed(dest: &DestinationSpec) -> String {
    match dest {
        DestinationSpec::File(dir) => dir.to_string_lossy().into_owned(),
        other => other.to_string(),
    }
}

/// The id of the flow log the `run` flags define: `--flow-log-id`, else one derived from the
/// host name and the destination.
pub fn flow_log_id(rec: &RecordArgs, out: &OutputArgs) -> anyhow::Result<String> {
    let id = match &rec.flow_log_id {
        Some(id) => id.clone(),
        None => default_flow_log_id(&destination_seed(&out.destination())),
    };
    check_token("--flow-log-id", &id)?;
    Ok(id)
}

/// The `DestinationOptions` the `run` flags give. The S3 flags need an S3 destination.
pub fn object_options(out: &OutputArgs) -> anyhow::Result<ObjectOptions> {
    let s3 = out.s3_protection()?;
    if !s3.is_empty() && !matches!(out.destination(), DestinationSpec::S3 { .. }) {
        bail!(
            "--s3-sse, --s3-sse-kms-key-id and --s3-acl apply to s3 destinations only: drop them or use --destination s3://BUCKET[/PREFIX]"
        );
    }
    Ok(ObjectOptions {
        file_format: out.file_format,
        hive_compatible_partitions: out.hive_compatible_partitions,
        per_hour_partition: out.per_hour_partition,
        s3,
    })
}

/// What the `run` flags say every flow log of the agent shares.
pub fn record_options(rec: &RecordArgs, out: &OutputArgs) -> RecordOptions {
    RecordOptions {
        include_aws_internal_traffic: rec.include_aws_internal_traffic,
        file_rollover_seconds: out.file_rollover_seconds,
    }
}

/// The flow log the `run` flags define. `meta` comes from [`Metadata::discover`] (instance
/// metadata, then `rec`'s flags).
pub fn flow_log(rec: &RecordArgs, out: &OutputArgs, meta: Metadata) -> anyhow::Result<FlowLog> {
    FlowLog::new(
        flow_log_id(rec, out)?,
        rec.traffic_type,
        rec.log_format.clone(),
        &out.destination(),
        object_options(out)?,
        record_options(rec, out),
        meta,
    )
}
