//! The `cloud-watch-logs` destination: each batch is one PutLogEvents call to the interface's
//! stream. A missing group or stream is created and the call repeated. Sequence tokens are not
//! sent: the service ignores them now.

use aws_sdk_cloudwatchlogs::{
    Client,
    error::SdkError,
    operation::{
        create_log_group::CreateLogGroupError, create_log_stream::CreateLogStreamError,
        put_log_events::PutLogEventsError,
    },
    types::InputLogEvent,
};
use tracing::{info, warn};

use super::{
    Refused,
    aws::{AwsSettings, explain, require_credentials, single_attempt},
    events::LogEventBatch,
};

pub struct CloudWatchDestination {
    client: Client,
    group: String,
    endpoint: String,
}

impl CloudWatchDestination {
    /// `region` is the log-group ARN's region, if the destination was given as an ARN.
    /// Fails when the standard chain has no credentials at all.
    pub async fn new(
        settings: &AwsSettings,
        group: &str,
        region: Option<&str>,
    ) -> anyhow::Result<Self> {
        let shared = settings.load(region).await;
        let endpoint = settings.endpoint(&shared);
        let destination = CloudWatchDestination {
            client: Client::from_conf(
                aws_sdk_cloudwatchlogs::config::Builder::from(&shared)
                    .retry_config(single_attempt())
                    .build(),
            ),
            group: group.into(),
            endpoint,
        };
        require_credentials(&shared, &destination.describe()).await?;
        Ok(destination)
    }

    /// With a client configured elsewhere (tests give explicit credentials).
    pub fn from_client(client: Client, group: &str, endpoint: &str) -> Self {
        CloudWatchDestination {
            client,
            group: group.into(),
            endpoint: endpoint.into(),
        }
    }

    pub fn describe(&self) -> String {
        format!("cloud-watch-logs:{}", self.group)
    }

    pub async fn put(&self, batch: &LogEventBatch) -> anyhow::Result<()> {
        let what = || {
            format!(
                "cannot put {} events to {}:{}",
                batch.events.len(),
                self.group,
                batch.stream
            )
        };
        let mut events = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            let event = InputLogEvent::builder()
                .timestamp(e.timestamp_ms)
                .message(&e.message)
                .build();
            events.push(
                event.map_err(|err| Refused(format!("{}: invalid log event: {err}", what())))?,
            );
        }
        let mut created = false;
        loop {
            let sent = self
                .client
                .put_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&batch.stream)
                .set_log_events(Some(events.clone()))
                .send()
                .await;
            match sent {
                Ok(out) => {
                    if let Some(r) = out.rejected_log_events_info() {
                        warn!(stream = %batch.stream, too_new_from = ?r.too_new_log_event_start_index(),
                              too_old_until = ?r.too_old_log_event_end_index(),
                              expired_until = ?r.expired_log_event_end_index(),
                              "CloudWatch Logs refused some events of the batch (outside its accepted time range)");
                    }
                    return Ok(());
                }
                Err(SdkError::ServiceError(se))
                    if !created && se.err().is_resource_not_found_exception() =>
                {
                    self.create_stream(&batch.stream).await?;
                    created = true;
                }
                Err(SdkError::ServiceError(se))
                    if se.err().is_data_already_accepted_exception() =>
                {
                    return Ok(());
                }
                Err(SdkError::ServiceError(se)) if se.err().is_invalid_parameter_exception() => {
                    let e = explain::<PutLogEventsError>(
                        SdkError::ServiceError(se),
                        &what(),
                        &self.endpoint,
                    );
                    return Err(Refused(format!("{e:#}")).into());
                }
                Err(e) => return Err(explain(e, &what(), &self.endpoint)),
            }
        }
    }

    /// Creates the group (if missing) and the stream (if missing).
    async fn create_stream(&self, stream: &str) -> anyhow::Result<()> {
        match self
            .client
            .create_log_group()
            .log_group_name(&self.group)
            .send()
            .await
        {
            Ok(_) => info!(group = %self.group, "created log group"),
            Err(SdkError::ServiceError(se)) if se.err().is_resource_already_exists_exception() => {}
            Err(e) => {
                return Err(explain::<CreateLogGroupError>(
                    e,
                    &format!("cannot create log group {}", self.group),
                    &self.endpoint,
                ));
            }
        }
        match self
            .client
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => info!(group = %self.group, stream, "created log stream"),
            Err(SdkError::ServiceError(se)) if se.err().is_resource_already_exists_exception() => {}
            Err(e) => {
                return Err(explain::<CreateLogStreamError>(
                    e,
                    &format!("cannot create log stream {}:{stream}", self.group),
                    &self.endpoint,
                ));
            }
        }
        Ok(())
    }
}
