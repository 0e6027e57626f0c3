//! Flow log definitions on disk, so they come back with the same ids after a restart: one
//! file per flow log, `<state-dir>/flow-logs/<flow-log-id>.json`, holding the id, the creation
//! time and the CreateFlowLogs request for its one resource. Loading validates the request
//! again, so a definition on disk is never trusted more than one sent over the socket.
//!
//! A file is written to a temporary name, fsynced, renamed and the directory fsynced: a crash
//! leaves the old definition or the new one, never half of one.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{
    api::CreateFlowLogsRequest,
    spec::{FlowLogSpec, is_flow_log_id},
};
use crate::{publish::DestinationSpec, publish::file_modes};

const SUBDIR: &str = "flow-logs";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Stored {
    flow_log_id: String,
    /// RFC 3339, as DescribeFlowLogs shows it.
    creation_time: String,
    request: CreateFlowLogsRequest,
}

/// The definitions directory of one agent: the agent that holds the control socket (see
/// [`super::control::ControlSocket::claim`]), so two agents never share it.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) `<state_dir>/flow-logs`. Both are private (0700, see
    /// [`file_modes::private_dir`]): definitions name destinations, and the spools under the
    /// state directory hold records.
    pub fn open(state_dir: &Path) -> anyhow::Result<Self> {
        let dir = state_dir.join(SUBDIR);
        for d in [state_dir, dir.as_path()] {
            file_modes::private_dir(d, "state directory (--state-dir)")?;
        }
        Ok(Store { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `spec` durably.
    pub fn save(&self, spec: &FlowLogSpec) -> anyhow::Result<()> {
        let stored = Stored {
            flow_log_id: spec.id.clone(),
            creation_time: spec
                .creation_time
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            request: request_of(spec),
        };
        let body = serde_json::to_vec_pretty(&stored)?;
        let path = self.path(&spec.id);
        let tmp = self.dir.join(format!(".{}.json.tmp", spec.id));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("cannot save flow log {} to {}", spec.id, path.display()))
    }

    /// Removes `id`'s definition (durably). A definition that is not there is not an error.
    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove flow log {id}'s definition"));
            }
        }
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", self.dir.display()))
    }

    /// Every stored definition, by id. A file that does not read or validate is an error naming
    /// it: the agent must not start with a flow log silently missing.
    pub fn load(&self) -> anyhow::Result<Vec<FlowLogSpec>> {
        let mut specs = Vec::new();
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') {
                if name.ends_with(".tmp") {
                    // A save interrupted before its rename: the old definition (if any) stands.
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                warn!(file = %path.display(), "not a flow log definition; ignored");
                continue;
            };
            specs.push(load_one(&path, id)?);
        }
        Ok(specs)
    }
}

fn load_one(path: &Path, id: &str) -> anyhow::Result<FlowLogSpec> {
    let what = || {
        format!(
            "flow log definition {} is damaged: fix or remove it",
            path.display()
        )
    };
    let text = fs::read_to_string(path).with_context(what)?;
    let stored: Stored = serde_json::from_str(&text).with_context(what)?;
    if stored.flow_log_id != id || !is_flow_log_id(id) {
        bail!(
            "{}: it holds flow log {:?}, not {id:?}",
            what(),
            stored.flow_log_id
        );
    }
    if stored.request.resource_ids.len() != 1 {
        bail!("{}: it must name exactly one resource", what());
    }
    let created: DateTime<Utc> = DateTime::parse_from_rfc3339(&stored.creation_time)
        .with_context(what)?
        .into();
    let mut v = FlowLogSpec::from_request(&stored.request, created)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(what)?;
    match (v.specs.pop(), v.unsuccessful.pop()) {
        (Some(mut spec), None) => {
            spec.id = stored.flow_log_id;
            Ok(spec)
        }
        (_, Some(u)) => bail!("{}: {}", what(), u.error),
        (None, None) => bail!("{}: no resource", what()),
    }
}

/// The CreateFlowLogs request that creates `spec` again (for its one resource).
pub fn request_of(spec: &FlowLogSpec) -> CreateFlowLogsRequest {
    let description = spec.describe(None);
    let (log_destination_type, log_destination, log_group_name) = match &spec.destination {
        DestinationSpec::File(dir) => ("file", Some(dir.display().to_string()), None),
        DestinationSpec::S3 { .. } => ("s3", Some(description.log_destination.clone()), None),
        DestinationSpec::CloudWatchLogs {
            group,
            region: None,
        } => ("cloud-watch-logs", None, Some(group.clone())),
        DestinationSpec::CloudWatchLogs { .. } => (
            "cloud-watch-logs",
            Some(description.log_destination.clone()),
            None,
        ),
    };
    CreateFlowLogsRequest {
        dry_run: None,
        client_token: None,
        deliver_logs_permission_arn: spec.deliver_logs_permission_arn.clone(),
        deliver_cross_account_role: spec.deliver_cross_account_role.clone(),
        log_group_name,
        resource_ids: vec![spec.resource_id.clone()],
        resource_type: Some(spec.resource_type.as_str().into()),
        traffic_type: Some(description.traffic_type),
        log_destination_type: Some(log_destination_type.into()),
        log_destination,
        log_format: Some(spec.log_format_text.clone()),
        tag_specifications: if spec.tags.is_empty() {
            Vec::new()
        } else {
            vec![super::api::TagSpecification {
                resource_type: Some("vpc-flow-log".into()),
                tags: spec.tags.clone(),
            }]
        },
        max_aggregation_interval: Some(i64::from(spec.max_aggregation_interval)),
        destination_options: description.destination_options,
        perspective: description.perspective,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlogs::api::parse_request;

    fn specs(json: &str) -> Vec<FlowLogSpec> {
        let req = parse_request(json).unwrap();
        let now = DateTime::from_timestamp(1_796_000_000, 0).unwrap();
        FlowLogSpec::from_request(&req, now).unwrap().specs
    }

    #[test]
    fn definitions_come_back_with_their_ids_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut created = specs(
            r#"{"ResourceType":"NetworkInterface","ResourceIds":["veth*"],"TrafficType":"REJECT","LogGroupName":"alerts",
                "MaxAggregationInterval":60,"TagSpecifications":[{"ResourceType":"vpc-flow-log","Tags":[{"Key":"k","Value":"v"}]}]}"#,
        );
        created.extend(specs(
            r#"{"ResourceType":"Subnet","ResourceIds":["10.88.0.0/16"],"LogDestinationType":"s3",
                "LogDestination":"arn:aws:s3:::bucket/pre","DestinationOptions":{"FileFormat":"parquet","HiveCompatiblePartitions":true}}"#,
        ));
        created.extend(specs(
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestinationType":"file","LogDestination":"/var/log/fl",
                "LogFormat":"${version} ${vpc-id} ${flow-direction}"}"#,
        ));
        created.extend(specs(
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogDestination":"arn:aws:logs:eu-west-1:123456789012:log-group:g"}"#,
        ));
        {
            let store = Store::open(dir.path()).unwrap();
            for s in &created {
                store.save(s).unwrap();
            }
        }
        let store = Store::open(dir.path()).unwrap();
        let mut loaded = store.load().unwrap();
        loaded.sort_by(|a, b| a.id.cmp(&b.id));
        created.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(loaded, created);
        store.remove(&created[0].id).unwrap();
        store.remove(&created[0].id).unwrap();
        assert_eq!(store.load().unwrap().len(), 3);
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&dir.path().join(SUBDIR)), 0o700);
        assert_eq!(mode(&store.path(&created[1].id)), 0o600);
    }

    #[test]
    fn a_damaged_definition_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let path = dir.path().join(SUBDIR).join("fl-0123456789abcdef0.json");
        fs::write(&path, "{\"FlowLogId\": ").unwrap();
        let e = format!("{:#}", store.load().unwrap_err());
        assert!(
            e.starts_with(&format!(
                "flow log definition {} is damaged: fix or remove it",
                path.display()
            )),
            "{e}"
        );
        fs::write(
            &path,
            r#"{"FlowLogId":"fl-0123456789abcdef0","CreationTime":"2026-11-30T00:53:20Z",
                "Request":{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","MaxAggregationInterval":0}}"#,
        )
        .unwrap();
        let e = format!("{:#}", store.load().unwrap_err());
        assert!(
            e.contains("(InvalidParameter) invalid MaxAggregationInterval 0"),
            "{e}"
        );
        // An interrupted save leaves a temporary file: it is removed, the rest loads.
        fs::remove_file(&path).unwrap();
        fs::write(dir.path().join(SUBDIR).join(".fl-1.json.tmp"), "{").unwrap();
        assert!(store.load().unwrap().is_empty());
        assert!(!dir.path().join(SUBDIR).join(".fl-1.json.tmp").exists());
    }
}
