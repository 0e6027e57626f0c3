//! One flow log: what its records say (metadata, format) and how they are cut into objects.
//! Several flow logs could share one capture; `run` feeds each the same drained windows.

use std::collections::BTreeMap;

use anyhow::bail;

use crate::{
    batch::{Batcher, FinishedObject, ObjectLayout},
    cli::{OutputArgs, RecordArgs},
    collect::DrainedWindow,
    format::LogFormat,
    metadata::Metadata,
    records,
};

/// A value that lands in a record or a key must be one token.
pub fn check_token(what: &str, v: &str) -> anyhow::Result<()> {
    if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '/') {
        bail!("invalid {what} {v:?}: it must be one word without spaces or '/'");
    }
    Ok(())
}

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
    format!("fl-{:017x}", ((hi as u128) << 32 | lo as u128) & 0x1_ffff_ffff_ffff_ffff)
}

pub struct FlowLog {
    pub id: String,
    batcher: Batcher,
}

impl FlowLog {
    pub fn from_args(rec: &RecordArgs, out: &OutputArgs) -> anyhow::Result<Self> {
        check_token("--account-id", &rec.account_id)?;
        check_token("--region", &rec.region)?;
        let id = match &rec.flow_log_id {
            Some(id) => id.clone(),
            None => default_flow_log_id(&out.output_dir.to_string_lossy()),
        };
        check_token("--flow-log-id", &id)?;
        let meta = Metadata {
            account_id: rec.account_id.clone(),
            region: rec.region.clone(),
            ..Metadata::default()
        };
        let layout = ObjectLayout {
            account_id: meta.account_id.clone(),
            region: meta.region.clone(),
            flow_log_id: id.clone(),
            hive_compatible_partitions: false,
            per_hour_partition: false,
        };
        let batcher = Batcher::new(layout, LogFormat::default(), meta, out.file_rollover_seconds);
        Ok(FlowLog { id, batcher })
    }

    /// Turns one drained window into records and returns the objects it completed.
    pub fn on_window(
        &mut self,
        drained: &DrainedWindow,
        watched: &BTreeMap<u32, String>,
    ) -> Vec<FinishedObject> {
        let records = records::build(drained, watched);
        let mut objects = self.batcher.add(&records, drained.window.start);
        objects.extend(self.batcher.close_until(drained.window.end));
        objects
    }

    /// Finishes every open object (shutdown).
    pub fn close_all(&mut self) -> Vec<FinishedObject> {
        self.batcher.close_all()
    }
}
