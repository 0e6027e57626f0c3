//! The control socket: how `flowlog create-flow-logs`, `describe-flow-logs` and
//! `delete-flow-logs` reach the running agent.
//!
//! A Unix stream socket (`flowlog run --control-socket`, mode 0600). One request per
//! connection, one JSON line each way: `{"Action": "CreateFlowLogs", "Input": {...}}`, answered
//! by `{"Output": {...}}` or `{"Error": {"Code": ..., "Message": ...}}`. The peer must be root or
//! hold CAP_NET_ADMIN (checked from its credentials, beyond the file mode). A bad request gets
//! an AWS-style error and the agent carries on: nothing a client sends can stop it. Size, time
//! and concurrent connections are bounded ([`super::control_limits`]).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader as AsyncBufReader,
    },
    net::{UnixListener, UnixStream},
    sync::mpsc,
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{
    api::{ApiError, parse_request},
    registry::{Change, Registry},
    snapshot::SnapshotSource,
    status::{self, StatusBoard},
};
use crate::privileges;

use super::control_limits::{
    ANSWER_TIMEOUT, ConnectionGate, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, busy, too_large, too_slow,
};

/// The actions the socket serves, by their EC2 API names.
pub mod actions {
    pub const CREATE_FLOW_LOGS: &str = "CreateFlowLogs";
    pub const DESCRIBE_FLOW_LOGS: &str = "DescribeFlowLogs";
    pub const DELETE_FLOW_LOGS: &str = "DeleteFlowLogs";
    /// flowlog's own: `flowlog athena-ddl FLOW_LOG_ID` ([`super::super::athena`]).
    pub const GET_ATHENA_DDL: &str = "GetAthenaDdl";
    /// flowlog's own: the open window, read without draining (`flowlog top`).
    pub const SNAPSHOT: &str = "Snapshot";
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ControlRequest {
    pub action: String,
    #[serde(default)]
    pub input: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlAnswer {
    Output(serde_json::Value),
    Error(ApiError),
}

/// Serves the registry: decodes the input of each action, applies it, and hands the changes to
/// the part of the agent that runs the flow logs.
pub struct RegistryService {
    registry: Arc<Mutex<Registry>>,
    changes: mpsc::UnboundedSender<Change>,
    /// Serves `Snapshot` when set.
    snapshots: Option<Arc<SnapshotSource>>,
    /// Answers `Status` (`flowlog status`) when set.
    status: Option<Arc<StatusBoard>>,
}

impl RegistryService {
    pub fn new(registry: Arc<Mutex<Registry>>, changes: mpsc::UnboundedSender<Change>) -> Self {
        RegistryService {
            registry,
            changes,
            snapshots: None,
            status: None,
        }
    }

    /// Also serves `Snapshot` from `source`.
    pub fn with_snapshots(mut self, source: Arc<SnapshotSource>) -> Self {
        self.snapshots = Some(source);
        self
    }

    /// Also answers `Status` from `board`.
    pub fn with_status(mut self, board: Arc<StatusBoard>) -> Self {
        self.status = Some(board);
        self
    }

    /// Answers one request. Called on a blocking thread: creating and deleting fsync.
    pub fn handle(&self, request: &str) -> ControlAnswer {
        match self.dispatch(request) {
            Ok(output) => ControlAnswer::Output(output),
            Err(e) => ControlAnswer::Error(e),
        }
    }

    fn dispatch(&self, request: &str) -> Result<serde_json::Value, ApiError> {
        let request: ControlRequest = parse_request(request)?;
        if request.action == actions::SNAPSHOT {
            let source = self.snapshots.as_ref().ok_or_else(|| {
                ApiError::new("InternalError", "this agent has no capture to read")
            })?;
            return serde_json::to_value(source.snapshot()?).map_err(|e| {
                ApiError::new("InternalError", format!("cannot encode the answer: {e}"))
            });
        }
        let input = if request.input.is_null() {
            "{}".to_string()
        } else {
            request.input.to_string()
        };
        let mut registry = self
            .registry
            .lock()
            .map_err(|_| ApiError::new("InternalError", "the registry is unavailable"))?;
        let (output, changes) = match request.action.as_str() {
            actions::CREATE_FLOW_LOGS => {
                let (out, changes) = registry.create(&parse_request(&input)?, Utc::now())?;
                (serde_json::to_value(out), changes)
            }
            actions::DESCRIBE_FLOW_LOGS => {
                let out = registry.describe(&parse_request(&input)?)?;
                (serde_json::to_value(out), Vec::new())
            }
            actions::DELETE_FLOW_LOGS => {
                let (out, changes) = registry.delete(&parse_request(&input)?)?;
                (serde_json::to_value(out), changes)
            }
            actions::GET_ATHENA_DDL => {
                let out = super::athena::serve(&registry, &parse_request(&input)?)?;
                (serde_json::to_value(out), Vec::new())
            }
            status::ACTION if self.status.is_some() => {
                let board = self.status.as_ref().map(|b| b.snapshot(&registry));
                (serde_json::to_value(board), Vec::new())
            }
            other => {
                return Err(ApiError::new(
                    "InvalidAction",
                    format!(
                        "The action {other} is not valid for this web service: use {}, {} or {}",
                        actions::CREATE_FLOW_LOGS,
                        actions::DESCRIBE_FLOW_LOGS,
                        actions::DELETE_FLOW_LOGS
                    ),
                ));
            }
        };
        for change in changes {
            // The receiver lives as long as the agent's main loop; after it, nothing runs
            // flow logs any more and the change has nowhere to go.
            let _ = self.changes.send(change);
        }
        output.map_err(|e| ApiError::new("InternalError", format!("cannot encode the answer: {e}")))
    }
}

/// The listening socket; the file is removed when this is dropped.
pub struct ControlSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Listens on `path` and serves `service` there (see [`ControlSocket::claim`]).
    pub async fn bind(path: &Path, service: Arc<RegistryService>) -> anyhow::Result<Self> {
        Ok(Self::serve(Self::claim(path)?, service))
    }

    /// Takes `path` (mode 0600, its directory created) before anything is served on it: the
    /// agent that holds the socket owns the flow log API of this host. A socket file left by an
    /// agent that is gone is replaced; one another agent listens on is [`SocketInUse`].
    pub fn claim(path: &Path) -> anyhow::Result<ClaimedSocket> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("cannot create {} for the control socket", dir.display())
            })?;
        }
        for _ in 0..3 {
            match UnixListener::bind(path) {
                Ok(listener) => {
                    // Bound with the umask's mode (root's 022 already keeps others from
                    // connecting); the peer check in `serve` is the real gate.
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| {
                            format!(
                                "cannot set the mode of the control socket {}",
                                path.display()
                            )
                        })?;
                    return Ok(ClaimedSocket {
                        listener: Some(listener),
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if StdUnixStream::connect(path).is_ok() {
                        return Err(SocketInUse(path.to_path_buf()).into());
                    }
                    // Left by an agent that is gone (SIGKILL).
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot replace the stale control socket {}", path.display())
                    })?;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot listen on the control socket {}", path.display())
                    });
                }
            }
        }
        bail!(
            "cannot listen on the control socket {}: it keeps being replaced (is another agent starting?)",
            path.display()
        )
    }

    /// Starts answering requests on a claimed socket.
    pub fn serve(mut claimed: ClaimedSocket, service: Arc<RegistryService>) -> Self {
        info!(socket = %claimed.path.display(), "control socket listening (create-flow-logs, describe-flow-logs, delete-flow-logs)");
        let task = match claimed.listener.take() {
            Some(listener) => tokio::spawn(accept_loop(listener, service)),
            None => tokio::spawn(async {}),
        };
        ControlSocket {
            path: claimed.path.clone(),
            task,
        }
    }
}

/// A control socket this agent holds, not served yet; its file is removed if it never is.
pub struct ClaimedSocket {
    /// Taken by [`ControlSocket::serve`].
    listener: Option<UnixListener>,
    path: PathBuf,
}

impl Drop for ClaimedSocket {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Another agent listens on the control socket.
#[derive(Debug, thiserror::Error)]
#[error(
    "another flowlog agent is listening on the control socket {0}: stop it, or give this one its own --control-socket and --state-dir"
)]
pub struct SocketInUse(pub PathBuf);

async fn accept_loop(listener: UnixListener, service: Arc<RegistryService>) {
    let gate = ConnectionGate::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match gate.admit() {
                Some(permit) => {
                    let service = service.clone();
                    tokio::spawn(async move {
                        serve(stream, service).await;
                        drop(permit);
                    });
                }
                // Answered without waiting: a new socket's send buffer is empty.
                None => {
                    let _ = stream.try_write(answer_line(&ControlAnswer::Error(busy())).as_bytes());
                }
            },
            Err(e) => {
                warn!(error = %e, "control socket: cannot accept a connection");
                // EMFILE and friends: give the system a moment instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, service: Arc<RegistryService>) {
    let peer = stream.peer_cred().ok();
    let (read, mut write) = stream.into_split();
    let answer = match peer {
        Some(p) if peer_may_administer(p.uid(), p.pid()) => {
            let mut line = String::new();
            let mut reader = AsyncBufReader::new(read.take(MAX_REQUEST_BYTES));
            match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
                Err(_) => ControlAnswer::Error(too_slow()),
                Ok(Err(e)) => {
                    ControlAnswer::Error(ApiError::invalid(format!("cannot read the request: {e}")))
                }
                Ok(Ok(_)) if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST_BYTES => {
                    ControlAnswer::Error(too_large())
                }
                Ok(Ok(_)) => {
                    let service = service.clone();
                    tokio::task::spawn_blocking(move || service.handle(&line))
                        .await
                        .unwrap_or_else(|e| {
                            ControlAnswer::Error(ApiError::new(
                                "InternalError",
                                format!("the request failed: {e}"),
                            ))
                        })
                }
            }
        }
        _ => ControlAnswer::Error(ApiError::new(
            "UnauthorizedOperation",
            "You are not authorized to perform this operation: the control socket needs root or CAP_NET_ADMIN",
        )),
    };
    if let ControlAnswer::Error(e) = &answer {
        debug!(code = %e.code, message = %e.message, "control request refused");
    }
    let text = answer_line(&answer);
    let sent = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let _ = write.write_all(text.as_bytes()).await;
        let _ = write.shutdown().await;
    });
    if sent.await.is_err() {
        debug!("control socket: the client did not take its answer in time");
    }
}

/// One answer as the JSON line sent to the client.
fn answer_line(answer: &ControlAnswer) -> String {
    let mut text = serde_json::to_string(answer).unwrap_or_default();
    text.push('\n');
    text
}

/// Root, or a process holding CAP_NET_ADMIN in its effective set.
fn peer_may_administer(uid: u32, pid: Option<i32>) -> bool {
    uid == 0 || pid.is_some_and(privileges::process_has_net_admin)
}

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "no flowlog agent is listening on {0}: start one with `flowlog run` (or point --control-socket at its socket)"
    )]
    NoAgent(PathBuf),
    #[error("permission denied on the control socket {0}: run as root (or with CAP_NET_ADMIN)")]
    PermissionDenied(PathBuf),
    #[error("talking to the agent on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent on {path} gave an answer that is not one: {detail}")]
    BadAnswer { path: PathBuf, detail: String },
    /// The agent answered with an AWS-style error.
    #[error("{0}")]
    Api(ApiError),
}

/// Sends one request to the agent on `socket` and waits for its answer.
pub fn call(
    socket: &Path,
    action: &str,
    input: serde_json::Value,
) -> Result<serde_json::Value, CallError> {
    let io = |source| CallError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = StdUnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            CallError::NoAgent(socket.to_path_buf())
        }
        std::io::ErrorKind::PermissionDenied => CallError::PermissionDenied(socket.to_path_buf()),
        _ => io(e),
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(io)?;
    let mut line = serde_json::to_string(&ControlRequest {
        action: action.to_string(),
        input,
    })
    .map_err(|e| io(std::io::Error::other(e)))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream.take(64 << 20))
        .read_line(&mut answer)
        .map_err(io)?;
    match serde_json::from_str::<ControlAnswer>(&answer) {
        Ok(ControlAnswer::Output(v)) => Ok(v),
        Ok(ControlAnswer::Error(e)) if e.code == "UnauthorizedOperation" => {
            Err(CallError::PermissionDenied(socket.to_path_buf()))
        }
        Ok(ControlAnswer::Error(e)) => Err(CallError::Api(e)),
        Err(e) => Err(CallError::BadAnswer {
            path: socket.to_path_buf(),
            detail: format!("{e}: {:?}", answer.trim_end()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        flowlogs::{api::codes, store::Store},
        inventory::metadata::Metadata,
    };

    async fn agent(dir: &Path) -> (ControlSocket, mpsc::UnboundedReceiver<Change>) {
        let registry = Registry::new(
            Vec::new(),
            Some(Store::open(dir).unwrap()),
            Metadata::default(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let service = Arc::new(RegistryService::new(Arc::new(Mutex::new(registry)), tx));
        let socket = ControlSocket::bind(&dir.join("run/control.sock"), service)
            .await
            .unwrap();
        (socket, rx)
    }

    fn raw(socket: &Path, bytes: &[u8]) -> ControlAnswer {
        let mut s = StdUnixStream::connect(socket).unwrap();
        // The agent answers a request that is too large without reading all of it, so the
        // write may fail; the answer is there all the same.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // One line, as the client reads it: after a request left partly unread, the agent's
        // close turns the read after the answer into ECONNRESET instead of end-of-file.
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    }

    fn code(a: ControlAnswer) -> String {
        match a {
            ControlAnswer::Error(e) => e.code,
            ControlAnswer::Output(o) => panic!("expected an error, got {o}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn create_describe_delete_through_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, mut changes) = agent(dir.path()).await;
        let path = socket.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let created = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                call(
                    &path,
                    actions::CREATE_FLOW_LOGS,
                    serde_json::json!({"ResourceType": "NetworkInterface", "ResourceIds": ["veth*"],
                                       "LogDestinationType": "file", "LogDestination": "/tmp/fl"}),
                )
            }
        })
        .await
        .unwrap()
        .unwrap();
        let id = created["FlowLogIds"][0].as_str().unwrap().to_string();
        assert!(matches!(changes.recv().await, Some(Change::Created(s)) if s.id == id));
        let described = tokio::task::spawn_blocking({
            let path = path.clone();
            move || call(&path, actions::DESCRIBE_FLOW_LOGS, serde_json::json!({}))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(described["FlowLogs"][0]["FlowLogId"], id.as_str());
        assert_eq!(described["FlowLogs"][0]["ResourceId"], "veth*");
        let deleted = tokio::task::spawn_blocking({
            let (path, id) = (path.clone(), id.clone());
            move || {
                call(
                    &path,
                    actions::DELETE_FLOW_LOGS,
                    serde_json::json!({"FlowLogIds": [id]}),
                )
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(deleted, serde_json::json!({"Unsuccessful": []}));
        assert_eq!(changes.recv().await, Some(Change::Deleted(id)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_requests_get_errors_and_the_socket_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, _changes) = agent(dir.path()).await;
        let path = socket.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            assert_eq!(code(raw(&path, b"{not json\n")), "InvalidParameter");
            assert_eq!(code(raw(&path, b"")), "InvalidParameter");
            assert_eq!(
                code(raw(&path, b"{\"Action\":\"RunInstances\",\"Input\":{}}\n")),
                "InvalidAction"
            );
            assert_eq!(
                code(raw(
                    &path,
                    br#"{"Action":"CreateFlowLogs","Input":{"ResourceType":"VPC","ResourceIds":["*"],"LogGroupName":"g","MaxAggregationInterval":0}}"#
                )),
                "InvalidParameter"
            );
            assert_eq!(
                code(raw(
                    &path,
                    br#"{"Action":"CreateFlowLogs","Input":{"ResourceType":"Instance","ResourceIds":["i-1"],"LogGroupName":"g"}}"#
                )),
                "InvalidParameter"
            );
            let big = vec![b'x'; (MAX_REQUEST_BYTES + 10) as usize];
            assert_eq!(code(raw(&path, &big)), "InvalidParameter");
            // Still serving.
            let out = call(&path, actions::DESCRIBE_FLOW_LOGS, serde_json::json!({})).unwrap();
            assert_eq!(out, serde_json::json!({"FlowLogs": []}));
            let e = call(&path, actions::DELETE_FLOW_LOGS, serde_json::json!({"FlowLogIds": ["fl-1"]}))
                .unwrap();
            assert_eq!(
                e["Unsuccessful"][0]["Error"]["Code"],
                codes::FLOW_LOG_NOT_FOUND
            );
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_agent_cannot_take_the_socket_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _c) = agent(dir.path()).await;
        let registry = Registry::new(Vec::new(), None, Metadata::default());
        let (tx, _rx) = mpsc::unbounded_channel();
        let service = Arc::new(RegistryService::new(Arc::new(Mutex::new(registry)), tx));
        let e = ControlSocket::bind(first.path(), service.clone())
            .await
            .err()
            .unwrap();
        assert!(
            format!("{e:#}")
                .starts_with("another flowlog agent is listening on the control socket"),
            "{e:#}"
        );
        let path = first.path().to_path_buf();
        drop(first);
        assert!(matches!(
            call(&path, actions::DESCRIBE_FLOW_LOGS, serde_json::json!({})),
            Err(CallError::NoAgent(_))
        ));
        // A socket file nobody listens on (an agent killed with SIGKILL).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let second = ControlSocket::bind(&path, service).await.unwrap();
        let p = second.path().to_path_buf();
        let out = tokio::task::spawn_blocking(move || {
            call(&p, actions::DESCRIBE_FLOW_LOGS, serde_json::json!({}))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(out, serde_json::json!({"FlowLogs": []}));
    }
}
