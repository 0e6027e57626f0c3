//! A real S3 and CloudWatch Logs endpoint for the publish tests: `moto_server` (PyPI
//! `moto[server]`, installed by `cargo xtask setup`) as a child process on 127.0.0.1, killed on
//! drop. It can run inside a test namespace, where the agent (which must live there to see the
//! veth) reaches it over that namespace's loopback; the test then talks to it from a thread that
//! joined the namespace, with the same SDK clients and HTTP stack as the agent.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aws_sdk_s3::config::Credentials;
use flowlog_agent::publish::AwsSettings;

use crate::netns::in_netns;

/// Region and credentials moto accepts (any).
pub const REGION: &str = "us-east-1";

/// The environment an agent needs to talk to moto: dummy credentials, a region, and no
/// instance-metadata lookups (there is no IMDS here; probing it only costs time).
pub fn agent_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// `FLOWLOG_MOTO_SERVER` (set by `cargo xtask test` to the workspace venv's), else
/// `moto_server` from PATH. Panics (never skips) when neither exists.
pub fn moto_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOWLOG_MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "FLOWLOG_MOTO_SERVER={} is not a file: run `cargo xtask setup`",
            p.display()
        );
        return p;
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("moto_server not found: run `cargo xtask setup` (it installs moto[server]) or set FLOWLOG_MOTO_SERVER")
    })
}

/// A running moto_server; killed (SIGKILL) on drop.
pub struct Moto {
    child: Option<Child>,
    netns: Option<String>,
    port: u16,
    dir: tempfile::TempDir,
    starts: u32,
    /// Extra environment of the moto_server process.
    env: Vec<(String, String)>,
}

impl Moto {
    /// Starts moto on a free port of 127.0.0.1 in `netns` (or the test's own namespace).
    pub fn start(netns: Option<&str>) -> Moto {
        Self::start_with_env(netns, &[])
    }

    /// A moto that checks every request's credentials against its own IAM (none exist, so
    /// every S3 and CloudWatch Logs call is refused: InvalidAccessKeyId,
    /// UnrecognizedClientException).
    pub fn start_refusing_everyone(netns: Option<&str>) -> Moto {
        Self::start_with_env(netns, &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with_env(netns: Option<&str>, env: &[(&str, &str)]) -> Moto {
        let port = on_thread_in(netns, || {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
            l.local_addr().expect("local addr").port()
        });
        let dir = tempfile::Builder::new()
            .prefix("flit-moto-")
            .tempdir()
            .expect("temp dir");
        let mut moto = Moto {
            child: None,
            netns: netns.map(str::to_string),
            port,
            dir,
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        moto.launch();
        moto
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "moto is already running");
        self.starts += 1;
        let log = fs::File::create(self.dir.path().join(format!("moto-{}.log", self.starts)))
            .expect("moto log");
        let bin = moto_server_bin();
        let mut cmd = match &self.netns {
            Some(ns) => in_netns(ns, &bin.to_string_lossy()),
            None => Command::new(&bin),
        };
        cmd.args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            // Where requests go once `start_recording` turned moto's recorder on.
            .env("MOTO_RECORDER_FILEPATH", self.recording_path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        self.child = Some(child);
        self.wait_until_answering(Duration::from_secs(30));
    }

    /// Waits until an HTTP request gets an HTTP answer.
    fn wait_until_answering(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let answered = on_thread_in(self.netns.as_deref(), || {
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 12];
                s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    .is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && buf.starts_with(b"HTTP/1.")
            });
            if answered {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "moto_server exited ({status}) before answering; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within {timeout:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, for `--endpoint-url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(format!("moto-{}.log", self.starts)))
            .unwrap_or_default()
    }

    fn recording_path(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// Turns moto's request recorder on: from now on every request it receives (method, URL,
    /// headers, body) is appended to a file that [`Moto::recorded_requests`] reads.
    pub fn start_recording(&self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let answer = on_thread_in(self.netns.as_deref(), || {
            let mut s = TcpStream::connect(addr).expect("connect to moto");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(
                b"POST /moto-api/recorder/start-recording HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
            )
            .expect("ask moto to record");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        });
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "moto refused to record: {answer}"
        );
    }

    /// The requests recorded since [`Moto::start_recording`], in order: JSON objects with
    /// `method`, `url` and `headers`.
    pub fn recorded_requests(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.recording_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a recorded request is JSON"))
            .collect()
    }

    /// Kills moto (SIGKILL: an endpoint that vanishes). Its state (buckets, logs) is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts moto again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Runs `f` with S3 and CloudWatch Logs clients for this moto, on a thread inside moto's
    /// namespace with its own runtime.
    pub fn with_clients<T: Send>(&self, f: impl AsyncFnOnce(Clients) -> T + Send) -> T {
        let endpoint = self.endpoint();
        on_thread_in(self.netns.as_deref(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let clients = Clients::new(&endpoint).await;
                f(clients).await
            })
        })
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SDK clients pointed at moto with dummy credentials.
#[derive(Clone)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl Clients {
    pub async fn new(endpoint: &str) -> Clients {
        let settings = AwsSettings {
            endpoint_url: Some(endpoint.to_string()),
            fallback_region: Some(REGION.into()),
            ..AwsSettings::default()
        };
        let shared = settings.load(Some(REGION)).await;
        let creds = Credentials::new("test", "test", None, None, "flowlog-tests");
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .credentials_provider(creds.clone())
            .force_path_style(true)
            .build();
        let logs = aws_sdk_cloudwatchlogs::config::Builder::from(&shared)
            .credentials_provider(creds)
            .build();
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(logs),
        }
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.s3
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    }

    /// Every object in `bucket`: key → body.
    pub async fn objects(&self, bucket: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("list {bucket}: {e:?}"));
            for obj in page.contents() {
                let key = obj.key().expect("object key").to_string();
                let got = self.s3.get_object().bucket(bucket).key(&key).send().await;
                let body = got
                    .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
                    .body
                    .collect()
                    .await;
                out.insert(key, body.expect("object body").into_bytes().to_vec());
            }
        }
        out
    }

    /// Every event of every stream in `group`: stream → (timestamp ms, message), in the
    /// order GetLogEvents returns them. An absent group reads as empty.
    pub async fn log_events(
        &self,
        group: &str,
    ) -> std::collections::BTreeMap<String, Vec<(i64, String)>> {
        let mut out = std::collections::BTreeMap::new();
        let mut streams = Vec::new();
        let mut pages = self
            .logs
            .describe_log_streams()
            .log_group_name(group)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => streams.extend(
                    page.log_streams()
                        .iter()
                        .filter_map(|s| s.log_stream_name().map(str::to_string)),
                ),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    return out;
                }
                Err(e) => panic!("describe streams of {group}: {e:?}"),
            }
        }
        for stream in streams {
            let mut events = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .logs
                    .get_log_events()
                    .log_group_name(group)
                    .log_stream_name(&stream)
                    .start_from_head(true)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("get events of {group}:{stream}: {e:?}"));
                let got = page.events();
                events.extend(got.iter().map(|e| {
                    (
                        e.timestamp().unwrap_or(-1),
                        e.message().unwrap_or("").to_string(),
                    )
                }));
                let next = page.next_forward_token().map(str::to_string);
                // GetLogEvents signals the end by returning the token it was given.
                if got.is_empty() || next.is_none() || next == token {
                    break;
                }
                token = next;
            }
            out.insert(stream, events);
        }
        out
    }
}

/// Runs `f` on a new thread, inside `netns` when given.
fn on_thread_in<T: Send>(netns: Option<&str>, f: impl FnOnce() -> T + Send) -> T {
    match netns {
        Some(ns) => crate::traffic::in_ns(ns, f),
        None => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
    }
}
