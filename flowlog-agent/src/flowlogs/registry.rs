//! The registry: the flow logs this agent runs. It answers CreateFlowLogs, DescribeFlowLogs
//! and DeleteFlowLogs as AWS answers them, keeps the definitions in the [`Store`] before it
//! answers, and reports each change ([`Change`]) to whoever runs the flow logs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tracing::info;

use super::{
    api::{
        self, ApiError, CreateFlowLogsRequest, CreateFlowLogsResponse, DeleteFlowLogsRequest,
        DeleteFlowLogsResponse, DescribeFlowLogsRequest, DescribeFlowLogsResponse, Filter,
        FlowLogDescription, UnsuccessfulItem, codes,
    },
    spec::FlowLogSpec,
    store::Store,
};
use crate::inventory::metadata::Metadata;

/// What changed, for the part of the agent that runs the flow logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(Box<FlowLogSpec>),
    /// The flow log with this id is gone: flush its partial window, deliver, stop.
    Deleted(String),
}

/// AWS answers a repeated ClientToken with the first answer; a token reused for another
/// request is an error.
struct Idempotent {
    request: CreateFlowLogsRequest,
    response: CreateFlowLogsResponse,
}

pub struct Registry {
    flow_logs: BTreeMap<String, FlowLogSpec>,
    /// Delivery errors by flow log id (`DeliverLogsErrorMessage`); absent: delivering.
    delivery_errors: BTreeMap<String, String>,
    tokens: BTreeMap<String, Idempotent>,
    store: Option<Store>,
    meta: Metadata,
}

impl Registry {
    /// A registry holding `existing` (from the store or the `run` flags). `store`: where
    /// definitions are kept; `None` keeps them in memory only.
    pub fn new(existing: Vec<FlowLogSpec>, store: Option<Store>, meta: Metadata) -> Self {
        Registry {
            flow_logs: existing.into_iter().map(|s| (s.id.clone(), s)).collect(),
            delivery_errors: BTreeMap::new(),
            tokens: BTreeMap::new(),
            store,
            meta,
        }
    }

    /// Runs `spec`, which came from elsewhere than the API (a `--flow-logs` file): shown by
    /// describe, not stored.
    pub fn adopt(&mut self, spec: FlowLogSpec) {
        self.flow_logs.insert(spec.id.clone(), spec);
    }

    /// Forgets `id` (gone from a `--flow-logs` file).
    pub fn forget(&mut self, id: &str) {
        self.flow_logs.remove(id);
        self.delivery_errors.remove(id);
    }

    pub fn flow_logs(&self) -> impl Iterator<Item = &FlowLogSpec> {
        self.flow_logs.values()
    }

    /// The identity every flow log's records carry (account, region, ...).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// Records how delivery of `id` goes: `None` after a success, the one-line error after a
    /// failure (AWS's `Access error`, `Rate limited` or `Unknown error`, then our detail).
    pub fn set_delivery_error(&mut self, id: &str, error: Option<String>) {
        match error {
            Some(e) => self.delivery_errors.insert(id.to_string(), e),
            None => self.delivery_errors.remove(id),
        };
    }

    /// The last delivery error of `id`, while its delivery fails.
    pub fn delivery_error(&self, id: &str) -> Option<&str> {
        self.delivery_errors.get(id).map(String::as_str)
    }

    /// CreateFlowLogs. Each accepted resource becomes a flow log, stored before the answer.
    pub fn create(
        &mut self,
        req: &CreateFlowLogsRequest,
        now: DateTime<Utc>,
    ) -> Result<(CreateFlowLogsResponse, Vec<Change>), ApiError> {
        if let Some(token) = &req.client_token
            && let Some(seen) = self.tokens.get(token)
        {
            if seen.request == *req {
                return Ok((seen.response.clone(), Vec::new()));
            }
            return Err(ApiError::new(
                "IdempotentParameterMismatch",
                format!("ClientToken {token:?} was used for a different request"),
            ));
        }
        let validated = FlowLogSpec::from_request(req, now)?;
        let mut response = CreateFlowLogsResponse {
            client_token: req.client_token.clone(),
            flow_log_ids: Vec::new(),
            unsuccessful: validated.unsuccessful,
        };
        let mut changes = Vec::new();
        for spec in validated.specs {
            let refused = |error| UnsuccessfulItem {
                error,
                resource_id: spec.resource_id.clone(),
            };
            if let Err(e) = spec.check_known(&self.meta) {
                response.unsuccessful.push(refused(e));
                continue;
            }
            if let Some(existing) = self
                .flow_logs
                .values()
                .find(|s| s.same_configuration(&spec))
            {
                response.unsuccessful.push(refused(ApiError::new(
                    codes::FLOW_LOG_ALREADY_EXISTS,
                    format!(
                        "Error. There is an existing Flow Log with the same configuration and log destination: {}",
                        existing.id
                    ),
                )));
                continue;
            }
            if let Some(store) = &self.store
                && let Err(e) = store.save(&spec)
            {
                response
                    .unsuccessful
                    .push(refused(ApiError::new("InternalError", format!("{e:#}"))));
                continue;
            }
            info!(flow_log_id = %spec.id, resource_type = spec.resource_type.as_str(),
                  resource_id = %spec.resource_id, destination = %spec.destination, "flow log created");
            response.flow_log_ids.push(spec.id.clone());
            changes.push(Change::Created(Box::new(spec.clone())));
            self.flow_logs.insert(spec.id.clone(), spec);
        }
        if let Some(token) = &req.client_token {
            self.tokens.insert(
                token.clone(),
                Idempotent {
                    request: req.clone(),
                    response: response.clone(),
                },
            );
        }
        Ok((response, changes))
    }

    /// DescribeFlowLogs: the flow logs named by `FlowLogIds` (all when empty) that pass every
    /// filter (a filter passes when any of its values matches).
    pub fn describe(
        &self,
        req: &DescribeFlowLogsRequest,
    ) -> Result<DescribeFlowLogsResponse, ApiError> {
        for f in &req.filter {
            check_filter(f)?;
        }
        if req.dry_run == Some(true) {
            return Err(api::dry_run_succeeded());
        }
        let flow_logs = self
            .flow_logs
            .values()
            .filter(|s| req.flow_log_ids.is_empty() || req.flow_log_ids.contains(&s.id))
            .map(|s| s.describe(self.delivery_errors.get(&s.id).map(String::as_str)))
            .filter(|d| req.filter.iter().all(|f| filter_matches(f, d)))
            .collect();
        Ok(DescribeFlowLogsResponse { flow_logs })
    }

    /// DeleteFlowLogs. Ids this agent does not run come back in `Unsuccessful`.
    pub fn delete(
        &mut self,
        req: &DeleteFlowLogsRequest,
    ) -> Result<(DeleteFlowLogsResponse, Vec<Change>), ApiError> {
        if req.flow_log_ids.is_empty() {
            return Err(ApiError::missing("FlowLogIds"));
        }
        if req.dry_run == Some(true) {
            return Err(api::dry_run_succeeded());
        }
        let mut response = DeleteFlowLogsResponse::default();
        let mut changes = Vec::new();
        for id in &req.flow_log_ids {
            if !self.flow_logs.contains_key(id) {
                response.unsuccessful.push(UnsuccessfulItem {
                    error: ApiError::new(
                        codes::FLOW_LOG_NOT_FOUND,
                        format!("Flow log {id} does not exist"),
                    ),
                    resource_id: id.clone(),
                });
                continue;
            }
            if let Some(store) = &self.store
                && let Err(e) = store.remove(id)
            {
                response.unsuccessful.push(UnsuccessfulItem {
                    error: ApiError::new("InternalError", format!("{e:#}")),
                    resource_id: id.clone(),
                });
                continue;
            }
            self.flow_logs.remove(id);
            self.delivery_errors.remove(id);
            info!(flow_log_id = %id, "flow log deleted");
            changes.push(Change::Deleted(id.clone()));
        }
        Ok((response, changes))
    }
}

/// The DescribeFlowLogs filter names AWS documents.
const FILTERS: &[&str] = &[
    "deliver-log-status",
    "log-destination-type",
    "flow-log-id",
    "log-group-name",
    "resource-id",
    "traffic-type",
    "tag-key",
];

fn check_filter(f: &Filter) -> Result<(), ApiError> {
    if FILTERS.contains(&f.name.as_str())
        || f.name.strip_prefix("tag:").is_some_and(|k| !k.is_empty())
    {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "The filter '{}' is invalid: use one of {}, tag:<key>",
        f.name,
        FILTERS.join(", ")
    )))
}

fn filter_matches(f: &Filter, d: &FlowLogDescription) -> bool {
    let any = |v: &str| f.values.iter().any(|x| x == v);
    match f.name.as_str() {
        "deliver-log-status" => any(&d.deliver_logs_status),
        "log-destination-type" => any(&d.log_destination_type),
        "flow-log-id" => any(&d.flow_log_id),
        "log-group-name" => d.log_group_name.as_deref().is_some_and(any),
        "resource-id" => any(&d.resource_id),
        "traffic-type" => any(&d.traffic_type),
        "tag-key" => d.tags.iter().any(|t| any(&t.key)),
        name => {
            let key = name.strip_prefix("tag:").unwrap_or_default();
            d.tags.iter().any(|t| t.key == key && any(&t.value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlogs::api::parse_request;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_000_000, 0).unwrap()
    }

    fn registry(dir: &std::path::Path) -> Registry {
        let meta = Metadata {
            vpc_id: "vpc-0aaa".into(),
            ..Metadata::default()
        };
        Registry::new(Vec::new(), Some(Store::open(dir).unwrap()), meta)
    }

    fn create(r: &mut Registry, json: &str) -> CreateFlowLogsResponse {
        let (resp, _) = r.create(&parse_request(json).unwrap(), now()).unwrap();
        resp
    }

    fn describe(r: &Registry, json: &str) -> Vec<String> {
        r.describe(&parse_request(json).unwrap())
            .unwrap()
            .flow_logs
            .into_iter()
            .map(|d| d.resource_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn create_describe_delete_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let a = create(
            &mut r,
            r#"{"ResourceType":"NetworkInterface","ResourceIds":["veth*","eni-0nope"],"TrafficType":"REJECT","LogGroupName":"alerts",
                "TagSpecifications":[{"ResourceType":"vpc-flow-log","Tags":[{"Key":"team","Value":"sec"}]}]}"#,
        );
        assert_eq!(a.flow_log_ids.len(), 1);
        assert_eq!(a.unsuccessful.len(), 1);
        assert_eq!(a.unsuccessful[0].resource_id, "eni-0nope");
        assert_eq!(
            a.unsuccessful[0].error.code,
            "InvalidNetworkInterfaceId.NotFound"
        );
        let b = create(
            &mut r,
            r#"{"ResourceType":"VPC","ResourceIds":["vpc-0aaa","vpc-0bbb"],"LogDestinationType":"file","LogDestination":"/var/log/fl"}"#,
        );
        assert_eq!(b.flow_log_ids.len(), 1);
        assert_eq!(b.unsuccessful[0].error.code, "InvalidVpcID.NotFound");
        // The same resource, traffic type and destination again.
        let again = create(
            &mut r,
            r#"{"ResourceType":"VPC","ResourceIds":["vpc-0aaa"],"LogDestinationType":"file","LogDestination":"/var/log/fl","LogFormat":"${version}"}"#,
        );
        assert!(again.flow_log_ids.is_empty());
        assert_eq!(again.unsuccessful[0].error.code, "FlowLogAlreadyExists");

        assert_eq!(describe(&r, "{}"), ["veth*", "vpc-0aaa"]);
        assert_eq!(
            describe(
                &r,
                r#"{"Filter":[{"Name":"traffic-type","Values":["REJECT"]}]}"#
            ),
            ["veth*"]
        );
        assert_eq!(
            describe(&r, r#"{"Filter":[{"Name":"tag:team","Values":["sec"]}]}"#),
            ["veth*"]
        );
        assert_eq!(
            describe(
                &r,
                r#"{"Filter":[{"Name":"log-destination-type","Values":["file","s3"]}]}"#
            ),
            ["vpc-0aaa"]
        );
        assert_eq!(
            describe(
                &r,
                &format!(r#"{{"FlowLogIds":["{}"]}}"#, b.flow_log_ids[0])
            ),
            ["vpc-0aaa"]
        );
        r.set_delivery_error(
            &a.flow_log_ids[0],
            Some("Access error: AccessDenied".into()),
        );
        assert_eq!(
            describe(
                &r,
                r#"{"Filter":[{"Name":"deliver-log-status","Values":["FAILED"]}]}"#
            ),
            ["veth*"]
        );
        let e = r
            .describe(&parse_request(r#"{"Filter":[{"Name":"color","Values":["x"]}]}"#).unwrap())
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameter");

        // What a new agent on the same state directory would run.
        let stored = r.store.as_ref().unwrap().load().unwrap();
        let mut ids: Vec<_> = stored.iter().map(|s| s.id.clone()).collect();
        ids.sort();
        let mut want = vec![a.flow_log_ids[0].clone(), b.flow_log_ids[0].clone()];
        want.sort();
        assert_eq!(ids, want);

        let (resp, changes) = r
            .delete(
                &parse_request(&format!(
                    r#"{{"FlowLogIds":["{}","fl-00000000000000000"]}}"#,
                    a.flow_log_ids[0]
                ))
                .unwrap(),
            )
            .unwrap();
        assert_eq!(changes, [Change::Deleted(a.flow_log_ids[0].clone())]);
        assert_eq!(resp.unsuccessful.len(), 1);
        assert_eq!(resp.unsuccessful[0].error.code, "InvalidFlowLogId.NotFound");
        assert_eq!(describe(&r, "{}"), ["vpc-0aaa"]);
        drop(r);
        let after_restart = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(after_restart.len(), 1);
        assert_eq!(after_restart[0].id, b.flow_log_ids[0]);
    }

    #[test]
    fn a_client_token_makes_create_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let req =
            r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","ClientToken":"t1"}"#;
        let first = create(&mut r, req);
        let (second, changes) = r.create(&parse_request(req).unwrap(), now()).unwrap();
        assert_eq!(first, second);
        assert!(changes.is_empty());
        assert_eq!(r.flow_logs().count(), 1);
        let e = r
            .create(
                &parse_request(
                    r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"other","ClientToken":"t1"}"#,
                )
                .unwrap(),
                now(),
            )
            .unwrap_err();
        assert_eq!(e.code, "IdempotentParameterMismatch");
    }

    #[test]
    fn dry_runs_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = registry(dir.path());
        let e = r
            .create(
                &parse_request(r#"{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","DryRun":true}"#)
                    .unwrap(),
                now(),
            )
            .unwrap_err();
        assert_eq!(e.code, "DryRunOperation");
        assert_eq!(r.flow_logs().count(), 0);
        assert!(r.store.as_ref().unwrap().load().unwrap().is_empty());
        let e = r
            .delete(&parse_request(r#"{"FlowLogIds":[]}"#).unwrap())
            .unwrap_err();
        assert_eq!(e.code, "MissingParameter");
    }
}
