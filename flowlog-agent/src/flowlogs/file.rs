//! `flowlog run --flow-logs FILE`: flow logs from a file that configuration tools own. The file
//! is a JSON list of CreateFlowLogs requests (or `{"FlowLogs": [...]}`), each as
//! `aws ec2 create-flow-logs --cli-input-json` takes it. It is read at start and again on
//! SIGHUP: entries that appeared are created, entries that went away are deleted, the rest run
//! on untouched.
//!
//! An entry has no id of its own, so each of its flow logs gets one derived from what it is
//! (the request for that one resource): the same entry keeps its id across reloads and
//! restarts, and a changed entry is a new flow log, as AWS flow logs cannot change either.

use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use super::{api::CreateFlowLogsRequest, spec::FlowLogSpec, store::request_of};

/// The flow logs `path` defines. Any entry that does not validate fails the whole file, naming
/// the entry: a half-applied file would leave flow logs silently missing.
pub fn load(path: &Path, now: DateTime<Utc>) -> anyhow::Result<Vec<FlowLogSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --flow-logs file {}", path.display()))?;
    let shape = || {
        format!(
            "--flow-logs file {} is not a JSON list of CreateFlowLogs requests (or {{\"FlowLogs\": [...]}})",
            path.display()
        )
    };
    let entries = match serde_json::from_str(&text).with_context(shape)? {
        serde_json::Value::Array(entries) => entries,
        serde_json::Value::Object(mut o) if o.len() == 1 => match o.remove("FlowLogs") {
            Some(serde_json::Value::Array(entries)) => entries,
            _ => bail!("{}", shape()),
        },
        _ => bail!("{}", shape()),
    };
    let mut specs: Vec<FlowLogSpec> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let at = || format!("--flow-logs file {}, entry {i}", path.display());
        let req: CreateFlowLogsRequest = serde_json::from_value(entry)
            .with_context(|| format!("{}: not a CreateFlowLogs request", at()))?;
        if req.dry_run == Some(true) {
            bail!("{}: DryRun has no meaning in a file; remove it", at());
        }
        let validated =
            FlowLogSpec::from_request(&req, now).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        if let Some(u) = validated.unsuccessful.first() {
            bail!("{}: resource {:?}: {}", at(), u.resource_id, u.error);
        }
        for mut spec in validated.specs {
            spec.id = derived_id(&spec);
            if let Some(twin) = specs.iter().find(|s| s.same_configuration(&spec)) {
                bail!(
                    "{}: resource {:?} is already logged to the same destination with the same traffic type ({})",
                    at(),
                    spec.resource_id,
                    twin.id
                );
            }
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// `fl-` and 17 hex digits of a hash of the flow log's own request: 128-bit FNV-1a over its JSON
/// (serde writes members in a fixed order). Written out because the id must be the same in
/// every build, which std's hasher does not promise, and a crate for these few lines is not
/// worth one.
fn derived_id(spec: &FlowLogSpec) -> String {
    let canonical = serde_json::to_string(&request_of(spec)).unwrap_or_default();
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in canonical.as_bytes() {
        h ^= u128::from(*b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    format!("fl-{:017x}", h & ((1u128 << 68) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_000_000, 0).unwrap()
    }

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("flow-logs.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn entries_keep_their_ids_and_a_changed_entry_is_a_new_flow_log() {
        let dir = tempfile::tempdir().unwrap();
        let a = r#"{"ResourceType":"NetworkInterface","ResourceIds":["veth*","eth0"],"TrafficType":"REJECT","LogGroupName":"alerts"}"#;
        let b = r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"file","LogDestination":"/var/log/fl"}"#;
        let first = load(&write(dir.path(), &format!("[{a},{b}]")), now()).unwrap();
        assert_eq!(first.len(), 3);
        let ids: Vec<_> = first.iter().map(|s| s.id.clone()).collect();
        assert!(
            ids.iter()
                .all(|id| super::super::spec::is_flow_log_id(id) && id.len() == 20)
        );
        // The object form, read again later: the same ids.
        let again = load(
            &write(dir.path(), &format!(r#"{{"FlowLogs": [{a}, {b}]}}"#)),
            now() + chrono::Duration::hours(1),
        )
        .unwrap();
        assert_eq!(again.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), ids);
        // The VPC entry changed (another format): a new id; the others keep theirs.
        let b2 = b.replace("}", r#","LogFormat":"${version} ${srcaddr}"}"#);
        let changed = load(&write(dir.path(), &format!("[{a},{b2}]")), now()).unwrap();
        assert_eq!(changed[0].id, ids[0]);
        assert_eq!(changed[1].id, ids[1]);
        assert_ne!(changed[2].id, ids[2]);
    }

    #[test]
    fn a_bad_entry_fails_the_file_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let ok = r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g"}"#;
        let cases = [
            (
                format!(
                    r#"[{ok}, {{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","MaxAggregationInterval":0}}]"#
                ),
                "entry 1: (InvalidParameter) invalid MaxAggregationInterval 0",
            ),
            (
                format!(
                    r#"[{ok}, {{"ResourceType":"Subnet","ResourceIds":["10.0.0/8"],"LogGroupName":"g"}}]"#
                ),
                "entry 1: resource \"10.0.0/8\": (InvalidSubnetID.NotFound)",
            ),
            (
                format!("[{ok}, {ok}]"),
                "entry 1: resource \"*\" is already logged",
            ),
            (
                r#"[{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","DryRun":true}]"#
                    .to_string(),
                "entry 0: DryRun has no meaning in a file",
            ),
            (
                "{\"ResourceType\": \"VPC\"}".to_string(),
                "is not a JSON list of CreateFlowLogs requests",
            ),
            (
                "[".to_string(),
                "is not a JSON list of CreateFlowLogs requests",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", load(&write(dir.path(), &text), now()).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = format!(
            "{:#}",
            load(&dir.path().join("missing.json"), now()).unwrap_err()
        );
        assert!(e.starts_with("cannot read --flow-logs file"), "{e}");
    }
}
