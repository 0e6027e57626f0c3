//! ECS task data from the ECS container agent's introspection API (normally
//! `http://localhost:51678`): `GET /v1/metadata` (`Cluster`, `ContainerInstanceArn`) and
//! `GET /v1/tasks?dockerid=<id>` (the task's `Arn`, `Family`, `Version`, `Containers`).
//!
//! The API has no service name, so `ecs-service-name` stays `-`. ARNs the records need but
//! the API does not give (cluster, task definition) are built from the ARNs it does give, which
//! carry the partition, region and account.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::EcsTask;

/// How long one request may take: the agent answers from memory on the same host.
const TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    cluster: String,
    container_instance_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Task {
    arn: String,
    family: String,
    version: String,
    #[serde(default)]
    containers: Vec<TaskContainer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TaskContainer {
    docker_id: String,
}

/// The task of the first of `container_ids` the agent knows. Ok(None) when no agent answers
/// at `endpoint` or none of the containers is in a task; Err when the agent answered something
/// that is not its API.
pub fn task_of(endpoint: &str, container_ids: &[&str]) -> Result<Option<EcsTask>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        // The agent is local: never through an HTTP(S)_PROXY from the environment.
        .proxy(None)
        .build()
        .into();
    let base = endpoint.trim_end_matches('/');
    let Some(metadata) = get(&agent, &format!("{base}/v1/metadata"))? else {
        return Ok(None);
    };
    let metadata: Metadata = serde_json::from_str(&metadata)
        .with_context(|| format!("{base}/v1/metadata is not the ECS agent's metadata"))?;
    for id in container_ids {
        let url = format!("{base}/v1/tasks?dockerid={id}");
        let Some(task) = get(&agent, &url)? else {
            continue;
        };
        let task: Task =
            serde_json::from_str(&task).with_context(|| format!("{url} is not an ECS task"))?;
        return Ok(Some(ecs_task(metadata, task)));
    }
    Ok(None)
}

/// The body of a 200 answer; None for no answer at all (nothing listens) or a 4xx (an unknown
/// container: the agent answers 404, or 400 for an ambiguous short id).
fn get(agent: &ureq::Agent, url: &str) -> Result<Option<String>> {
    let mut response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) => {
            tracing::debug!(url, error = %e, "no ECS agent answers");
            return Ok(None);
        }
        Err(ureq::Error::Timeout(_)) => {
            tracing::debug!(url, "the ECS agent did not answer in time");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("GET {url}")),
    };
    let status = response.status().as_u16();
    match status {
        200 => {
            Ok(Some(response.body_mut().read_to_string().with_context(
                || format!("reading the answer of GET {url}"),
            )?))
        }
        400..=499 => Ok(None),
        _ => anyhow::bail!("GET {url}: HTTP {status}"),
    }
}

fn ecs_task(metadata: Metadata, task: Task) -> EcsTask {
    EcsTask {
        task_id: last_part(&task.arn).to_string(),
        task_arn: task.arn,
        family: task.family,
        version: task.version,
        cluster: metadata.cluster,
        container_instance_arn: metadata.container_instance_arn,
        container_ids: task.containers.into_iter().map(|c| c.docker_id).collect(),
    }
}

/// What follows the last `/` (the whole string when there is none).
fn last_part(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// `arn:<partition>:ecs:<region>:<account>:` of an ECS ARN.
fn arn_prefix(arn: &str) -> Option<&str> {
    let mut colons = arn.match_indices(':').map(|(i, _)| i);
    let fifth = colons.nth(4)?;
    arn.starts_with("arn:").then(|| &arn[..=fifth])
}

impl EcsTask {
    /// `ecs-cluster-name`: the agent's `Cluster`, or the name in it when it is an ARN.
    pub fn cluster_name(&self) -> &str {
        match self.cluster.strip_prefix("arn:") {
            Some(_) => last_part(&self.cluster),
            None => &self.cluster,
        }
    }

    /// `ecs-cluster-arn`: the agent's `Cluster` when it is an ARN, else built from the task
    /// ARN's partition, region and account.
    pub fn cluster_arn(&self) -> Option<String> {
        if self.cluster.starts_with("arn:") {
            return Some(self.cluster.clone());
        }
        Some(format!(
            "{}cluster/{}",
            arn_prefix(&self.task_arn)?,
            self.cluster
        ))
    }

    /// `ecs-task-definition-arn`: `arn:...:task-definition/<family>:<version>`.
    pub fn task_definition_arn(&self) -> Option<String> {
        Some(format!(
            "{}task-definition/{}:{}",
            arn_prefix(&self.task_arn)?,
            self.family,
            self.version
        ))
    }

    /// `ecs-container-instance-id`: the last part of the container instance ARN.
    pub fn container_instance_id(&self) -> Option<&str> {
        self.container_instance_arn.as_deref().map(last_part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented answer of `GET /v1/tasks?dockerid=79c796ed2a7f` (Amazon ECS Developer
    /// Guide, "Amazon ECS container introspection").
    const TASK_DOC: &str = r#"{
    "Arn": "arn:aws:ecs:us-west-2:012345678910:task/default/e01d58a8-151b-40e8-bc01-22647b9ecfec",
    "Containers": [
        {
            "DockerId": "79c796ed2a7f864f485c76f83f3165488097279d296a7c05bd5201a1c69b2920",
            "DockerName": "ecs-nginx-efs-2-nginx-9ac0808dd0afa495f001",
            "Name": "nginx"
        }
    ],
    "DesiredStatus": "RUNNING",
    "Family": "nginx-efs",
    "KnownStatus": "RUNNING",
    "Version": "2"
}"#;

    /// The documented answer of `GET /v1/metadata`, with the placeholders filled in.
    const METADATA_DOC: &str = r#"{
    "Cluster": "default",
    "ContainerInstanceArn": "arn:aws:ecs:us-west-2:012345678910:container-instance/default/f9cc75bb-0c94-46b9-bf6d-49d320bc1551",
    "Version": "Amazon ECS Agent - v1.30.0 (02ff320c)"
}"#;

    fn documented() -> EcsTask {
        ecs_task(
            serde_json::from_str(METADATA_DOC).unwrap(),
            serde_json::from_str(TASK_DOC).unwrap(),
        )
    }

    #[test]
    fn documented_answers_make_the_task() {
        let t = documented();
        assert_eq!(
            t.task_arn,
            "arn:aws:ecs:us-west-2:012345678910:task/default/e01d58a8-151b-40e8-bc01-22647b9ecfec"
        );
        assert_eq!(t.task_id, "e01d58a8-151b-40e8-bc01-22647b9ecfec");
        assert_eq!((t.family.as_str(), t.version.as_str()), ("nginx-efs", "2"));
        assert_eq!(t.cluster_name(), "default");
        assert_eq!(
            t.cluster_arn().as_deref(),
            Some("arn:aws:ecs:us-west-2:012345678910:cluster/default")
        );
        assert_eq!(
            t.task_definition_arn().as_deref(),
            Some("arn:aws:ecs:us-west-2:012345678910:task-definition/nginx-efs:2")
        );
        assert_eq!(
            t.container_instance_id(),
            Some("f9cc75bb-0c94-46b9-bf6d-49d320bc1551")
        );
        assert_eq!(
            t.container_ids,
            ["79c796ed2a7f864f485c76f83f3165488097279d296a7c05bd5201a1c69b2920"]
        );
    }

    #[test]
    fn old_task_arn_format_and_cluster_given_as_arn() {
        let mut t = documented();
        t.task_arn =
            "arn:aws:ecs:us-west-2:012345678910:task/090eff9b-1ce3-4db6-848a-a8d14064fd24".into();
        t.cluster = "arn:aws-cn:ecs:cn-north-1:012345678910:cluster/prod".into();
        assert_eq!(
            last_part(&t.task_arn),
            "090eff9b-1ce3-4db6-848a-a8d14064fd24"
        );
        assert_eq!(t.cluster_name(), "prod");
        assert_eq!(
            t.cluster_arn().as_deref(),
            Some("arn:aws-cn:ecs:cn-north-1:012345678910:cluster/prod")
        );
    }

    /// An HTTP server on 127.0.0.1 answering each request with `answer(path)`; returns the
    /// endpoint.
    fn serve(answer: fn(&str) -> (&'static str, &'static str)) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = answer(path);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn an_answer_that_is_not_the_api_is_an_error() {
        let portal = serve(|_| ("200 OK", "<html>captive portal</html>"));
        let e = task_of(&portal, &["79c796ed2a7f"]).unwrap_err();
        assert!(
            format!("{e:#}").contains("/v1/metadata is not the ECS agent's metadata"),
            "{e:#}"
        );
        let broken = serve(|_| ("500 Internal Server Error", "{}"));
        let e = task_of(&broken, &["79c796ed2a7f"]).unwrap_err();
        assert!(format!("{e:#}").contains("HTTP 500"), "{e:#}");
    }

    #[test]
    fn containers_the_agent_does_not_know_are_no_task() {
        let agent = serve(|path| match path {
            "/v1/metadata" => ("200 OK", METADATA_DOC),
            _ => ("404 Not Found", "{}"),
        });
        assert_eq!(
            task_of(&agent, &["79c796ed2a7f", "0123456789ab"]).unwrap(),
            None
        );
        let known = serve(|path| match path {
            "/v1/metadata" => ("200 OK", METADATA_DOC),
            "/v1/tasks?dockerid=0123456789ab" => ("200 OK", TASK_DOC),
            _ => ("404 Not Found", "{}"),
        });
        let task = task_of(&known, &["79c796ed2a7f", "0123456789ab"]).unwrap();
        assert_eq!(task, Some(documented()));
    }

    #[test]
    fn nothing_listening_is_no_task() {
        // A port that was free a moment ago: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let got = task_of(&format!("http://127.0.0.1:{port}"), &["79c796ed2a7f"]);
        assert_eq!(got.unwrap(), None);
    }
}
