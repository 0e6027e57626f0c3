//! A fault-injecting HTTP proxy between the agent (`--endpoint-url`) and moto_server: the faults
//! moto cannot produce (throttling, 5xx, a refused key that later works, a reset connection, a
//! stall, an acknowledgement lost on the way back), scripted per request.
//!
//! Built on hyper (server and client), so no HTTP is parsed here. It listens on 127.0.0.1 of a
//! test namespace (where the agent and moto live) on a thread with its own runtime. A request
//! that no rule matches is passed on to moto unchanged and moto's answer is passed back. A
//! rule matches by method, path prefix and `X-Amz-Target` header, and applies its fault a fixed
//! number of times or until [`FaultProxy::recover`]. Every request is recorded with what was
//! done to it, so a test can count the faults the agent met.

use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd as _, RawFd},
    sync::{Arc, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, oneshot},
};

/// The header naming a CloudWatch Logs operation (`Logs_20140328.PutLogEvents`).
pub const TARGET_HEADER: &str = "x-amz-target";

/// Which requests a rule applies to. Unset parts match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    pub method: Option<String>,
    pub path_prefix: Option<String>,
    pub target: Option<String>,
}

impl Matcher {
    /// S3 PutObject into `bucket` (path-style addressing, as the agent uses with an endpoint).
    pub fn s3_put_object(bucket: &str) -> Self {
        Matcher {
            method: Some("PUT".into()),
            path_prefix: Some(format!("/{bucket}/")),
            target: None,
        }
    }

    /// A CloudWatch Logs operation, e.g. `PutLogEvents`.
    pub fn logs(operation: &str) -> Self {
        Matcher {
            method: Some("POST".into()),
            path_prefix: None,
            target: Some(format!("Logs_20140328.{operation}")),
        }
    }

    pub fn matches(&self, method: &str, path: &str, target: Option<&str>) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self.target.as_deref().is_none_or(|t| target == Some(t))
    }
}

/// What the proxy does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answers itself with this status, headers and body; moto never sees the request.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Reads the request head, then resets the connection (RST) before reading the body: the
    /// client is cut off in the middle of its request. moto never sees it.
    ResetMidRequest,
    /// Reads the whole request and holds it this long before passing it on to moto (the
    /// client has given up by then; moto's answer goes nowhere).
    Stall(Duration),
    /// Passes the request on; moto acts on it, but its answer is not sent back: the connection
    /// is closed instead. An acknowledgement lost on the way.
    DropResponse,
}

impl Fault {
    /// An S3 error as S3 writes it (REST-XML body, `Code` and `Message`).
    pub fn s3_error(status: u16, code: &str, message: &str) -> Self {
        Fault::Respond {
            status,
            headers: vec![("content-type".into(), "application/xml".into())],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>{message}</Message><RequestId>FAULTPROXY</RequestId></Error>"
            ),
        }
    }

    /// A CloudWatch Logs error as the service writes it (awsJson1_1: `__type` and `message`,
    /// and the `x-amzn-ErrorType` header).
    pub fn logs_error(status: u16, error_type: &str, message: &str) -> Self {
        Fault::Respond {
            status,
            headers: vec![
                ("content-type".into(), "application/x-amz-json-1.1".into()),
                ("x-amzn-errortype".into(), error_type.into()),
            ],
            body: format!("{{\"__type\":\"{error_type}\",\"message\":\"{message}\"}}"),
        }
    }
}

/// How often a rule applies its fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    Count(u32),
    /// Until [`FaultProxy::recover`].
    UntilRecovered,
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed on; moto answered with this status, and the answer was passed back.
    Forwarded(u16),
    /// A rule's fault was applied (for [`Fault::DropResponse`] and [`Fault::Stall`], moto's
    /// status, or `None` when it could not be reached).
    Faulted(Fault, Option<u16>),
    /// moto could not be reached: the proxy answered 502.
    UpstreamFailed(String),
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub target: Option<String>,
    /// The request body (empty when the connection was reset before it was read).
    pub body: Bytes,
    pub outcome: Outcome,
}

impl Exchange {
    pub fn matched_by(&self, m: &Matcher) -> bool {
        m.matches(&self.method, &self.path, self.target.as_deref())
    }
}

struct Rule {
    matcher: Matcher,
    fault: Fault,
    /// `None`: until recovered.
    remaining: Option<u32>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    exchanges: Vec<Exchange>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running proxy; stopped on drop.
pub struct FaultProxy {
    port: u16,
    state: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts the proxy on a free port of 127.0.0.1 in `netns` (or the test's own namespace),
    /// passing requests on to `http://127.0.0.1:<upstream_port>` there.
    pub fn start(netns: Option<&str>, upstream_port: u16) -> FaultProxy {
        let state: Shared = Arc::default();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = oneshot::channel();
        let netns = netns.map(str::to_string);
        let serving = state.clone();
        let thread = std::thread::spawn(move || {
            if let Some(ns) = &netns {
                crate::traffic::enter(ns);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .await
                    .expect("proxy listen");
                let port = listener.local_addr().expect("proxy addr").port();
                port_tx.send(port).expect("proxy starter gone");
                let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port));
                tokio::select! {
                    _ = accept_loop(listener, upstream, serving) => {}
                    _ = shutdown_rx => {}
                }
            });
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the proxy did not start");
        FaultProxy {
            port,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, for `--endpoint-url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Applies `fault` to the requests `matcher` matches, `times` times. Rules apply in the
    /// order they were added; a used-up rule is removed.
    pub fn inject(&self, matcher: Matcher, fault: Fault, times: Times) {
        let remaining = match times {
            Times::Count(n) => Some(n),
            Times::UntilRecovered => None,
        };
        lock(&self.state).rules.push(Rule {
            matcher,
            fault,
            remaining,
        });
    }

    /// Removes every rule: from now on every request is passed on.
    pub fn recover(&self) {
        lock(&self.state).rules.clear();
    }

    /// Every request seen so far, in order of arrival.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.state).exchanges.clone()
    }

    /// Every request seen since the last call (or the start), which the proxy then forgets: a
    /// long run (the soak) keeps its memory flat this way.
    pub fn take_exchanges(&self) -> Vec<Exchange> {
        std::mem::take(&mut lock(&self.state).exchanges)
    }

    /// The requests `matcher` matches so far.
    pub fn matching(&self, matcher: &Matcher) -> Vec<Exchange> {
        self.exchanges()
            .into_iter()
            .filter(|e| e.matched_by(matcher))
            .collect()
    }

    /// How many requests matching `matcher` met a fault.
    pub fn faulted(&self, matcher: &Matcher) -> usize {
        self.matching(matcher)
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Faulted(..)))
            .count()
    }

    /// Waits until `done` holds for the requests seen so far; panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[Exchange]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.exchanges();
            if done(&seen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy saw no {what} within {timeout:?}; it saw:\n{seen:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_connection(stream, upstream, state.clone()));
    }
}

/// Serves one client connection (keep-alive: any number of requests). A fault that cuts the
/// connection asks for it through `cut`; the connection is then dropped, which closes the
/// socket (with RST if the fault set a zero linger first).
async fn serve_connection(stream: TcpStream, upstream: SocketAddr, state: Shared) {
    let fd = stream.as_raw_fd();
    let cut = Arc::new(Notify::new());
    let service = {
        let cut = cut.clone();
        service_fn(move |req| handle(req, upstream, state.clone(), fd, cut.clone()))
    };
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = cut.notified() => {}
    }
}

type Answer = Response<Full<Bytes>>;

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    state: Shared,
    fd: RawFd,
    cut: Arc<Notify>,
) -> Result<Answer, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let target = req
        .headers()
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let fault = take_fault(&state, &method, &path, target.as_deref());
    let exchange = |body: Bytes, outcome: Outcome| Exchange {
        method: method.clone(),
        path: path.clone(),
        target: target.clone(),
        body,
        outcome,
    };
    if fault == Some(Fault::ResetMidRequest) {
        record(
            &state,
            exchange(Bytes::new(), Outcome::Faulted(Fault::ResetMidRequest, None)),
        );
        reset_on_close(fd);
        cut.notify_one();
        return std::future::pending().await;
    }
    // Every other answer comes after the whole request was read, as a server's does.
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        // The client went away mid-request: nothing to answer.
        Err(_) => return std::future::pending().await,
    };
    let Some(fault) = fault else {
        return Ok(match forward(parts, body.clone(), upstream).await {
            Ok(resp) => {
                record(
                    &state,
                    exchange(body, Outcome::Forwarded(resp.status().as_u16())),
                );
                resp
            }
            Err(e) => {
                record(&state, exchange(body, Outcome::UpstreamFailed(e.clone())));
                plain(StatusCode::BAD_GATEWAY, e)
            }
        });
    };
    match fault {
        Fault::Respond {
            status,
            ref headers,
            ref body,
        } => {
            let mut resp = Response::new(Full::new(Bytes::from(body.clone())));
            *resp.status_mut() = StatusCode::from_u16(status).expect("fault status");
            for (k, v) in headers {
                resp.headers_mut().insert(
                    HeaderName::try_from(k.as_str()).expect("header name"),
                    HeaderValue::try_from(v.as_str()).expect("header value"),
                );
            }
            record(
                &state,
                exchange(Bytes::new(), Outcome::Faulted(fault, None)),
            );
            Ok(resp)
        }
        Fault::Stall(d) => {
            // Recorded when the stall starts; moto's status is added once it answered. A task
            // of its own: the client hangs up before the stall ends, which drops this handler.
            let at = record(
                &state,
                exchange(body.clone(), Outcome::Faulted(fault.clone(), None)),
            );
            let late = tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let status = forward(parts, body, upstream)
                    .await
                    .ok()
                    .map(|r| r.status().as_u16());
                lock(&state).exchanges[at].outcome = Outcome::Faulted(fault, status);
            });
            let _ = late.await;
            // The client is gone: nobody reads this.
            Ok(plain(StatusCode::GATEWAY_TIMEOUT, "stalled".into()))
        }
        Fault::DropResponse => {
            let status = forward(parts, body.clone(), upstream)
                .await
                .ok()
                .map(|r| r.status().as_u16());
            record(&state, exchange(body, Outcome::Faulted(fault, status)));
            cut.notify_one();
            std::future::pending().await
        }
        Fault::ResetMidRequest => unreachable!("handled above"),
    }
}

/// The fault of the first rule matching the request, if any (a rule with a count is used up).
fn take_fault(state: &Shared, method: &str, path: &str, target: Option<&str>) -> Option<Fault> {
    let mut st = lock(state);
    let i = st
        .rules
        .iter()
        .position(|r| r.matcher.matches(method, path, target))?;
    let fault = st.rules[i].fault.clone();
    if let Some(n) = st.rules[i].remaining.as_mut() {
        *n = n.saturating_sub(1);
        if *n == 0 {
            st.rules.remove(i);
        }
    }
    Some(fault)
}

/// Appends `e` to the exchanges seen; returns its index.
fn record(state: &Shared, e: Exchange) -> usize {
    let mut st = lock(state);
    st.exchanges.push(e);
    st.exchanges.len() - 1
}

fn plain(status: StatusCode, text: String) -> Answer {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp
}

/// Makes the next close of `fd` send RST instead of FIN (SO_LINGER with a zero timeout).
fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on the connection's own socket, which lives until the connection is
    // dropped (after this call); the option value is a valid `linger`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Headers that belong to one connection, not to the request or response: not passed on.
/// `content-length` is set again by hyper from the collected body.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::EXPECT,
    header::UPGRADE,
];

/// Passes the request (`parts` and its whole `body`) on to moto over a new connection and
/// returns its answer, read whole.
async fn forward(
    mut parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
) -> Result<Answer, String> {
    for h in &HOP_BY_HOP {
        parts.headers.remove(h);
    }
    let stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connecting to moto at {upstream}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with moto: {e}"))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| format!("request to moto: {e}"))?;
    let (mut parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading moto's answer: {e}"))?
        .to_bytes();
    for h in &HOP_BY_HOP {
        parts.headers.remove(h);
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}
