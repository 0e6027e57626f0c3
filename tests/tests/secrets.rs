//! Secrets stay secret (issue 15, item 5). Two agents run at debug log level with known AWS
//! credentials in their environment (an access key id, a secret key and a session token, each
//! unique to this run): one against a moto_server that refuses every request (HTTP 403: it
//! checks credentials against its own, empty IAM), one against a closed port. Each has an S3 flow log (the run flags) and a CloudWatch Logs one (created through
//! the control socket), real traffic, and fails to deliver for a while. Then the secret key
//! and the session token must appear nowhere in what the agents wrote: their logs (stdout and
//! stderr), their metrics (file and HTTP), their spool and state files, and
//! describe-flow-logs' answers. Root only. Namespaces `flsc`, 10.213.233.0/24.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use flowlog_tests::{
    agent::{flowlog_bin, read_log, sigterm_and_wait, wait_for_log_line},
    moto::Moto,
    netns::{Namespaces, Setup, Side},
    publish::send_udp_flows,
    traffic::in_ns,
};

/// Credentials unique to this run, recognisable anywhere.
struct Secrets {
    access_key_id: String,
    secret_key: String,
    session_token: String,
}

impl Secrets {
    fn new() -> Self {
        let tag = format!("{:016x}", fastrand::u64(..));
        Secrets {
            access_key_id: format!("ASIAFLOWLOG{}", &tag[..9].to_uppercase()),
            secret_key: format!("flowlogSecretKey{tag}/Do+Not+Log"),
            session_token: format!("flowlogSessionToken{tag}IQoJb3JpZ2luX2VjEDontLogMe=="),
        }
    }

    /// What must never be written: the secrets whole, and their distinctive halves.
    fn needles(&self) -> Vec<(&'static str, String)> {
        vec![
            ("secret key", self.secret_key.clone()),
            ("secret key (first half)", self.secret_key[..20].to_string()),
            (
                "secret key (second half)",
                self.secret_key[16..].to_string(),
            ),
            ("session token", self.session_token.clone()),
            (
                "session token (first half)",
                self.session_token[..30].to_string(),
            ),
            (
                "session token (second half)",
                self.session_token[19..].to_string(),
            ),
        ]
    }
}

/// A free TCP port of 127.0.0.1 in `netns` that nothing listens on.
fn closed_port(netns: &str) -> u16 {
    in_ns(netns, || {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        l.local_addr().expect("addr").port()
    })
}

/// One agent: S3 through the flags, CloudWatch Logs through the control socket.
struct SecretAgent {
    child: Option<Child>,
    dir: PathBuf,
    metrics_addr: SocketAddr,
}

impl SecretAgent {
    fn start(side: &Side, dir: &Path, endpoint: &str, secrets: &Secrets) -> Self {
        fs::create_dir_all(dir).expect("agent dir");
        let metrics_port = closed_port(&side.netns);
        let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port));
        let log = fs::File::create(dir.join("agent.log")).expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &side.netns])
            .arg(flowlog_bin())
            .args(["run", "--iface", &side.iface])
            .args([
                "--aggregation-interval",
                "1",
                "--file-rollover-seconds",
                "1",
            ])
            .args([
                "--account-id",
                "123456789012",
                "--region",
                "us-east-1",
                "--no-imds",
            ])
            .args([
                "--destination",
                "s3://flowlog-secrets/prefix",
                "--endpoint-url",
                endpoint,
            ])
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .arg("--metrics-file")
            .arg(dir.join("metrics.prom"))
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env("AWS_ACCESS_KEY_ID", &secrets.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &secrets.secret_key)
            .env("AWS_SESSION_TOKEN", &secrets.session_token)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        let mut child = Some(cmd.spawn().expect("start flowlog"));
        wait_for_log_line(
            &mut child,
            &dir.join("agent.log"),
            0,
            "capturing",
            Duration::from_secs(30),
        );
        let agent = SecretAgent {
            child,
            dir: dir.to_path_buf(),
            metrics_addr,
        };
        let request = format!(
            r#"{{"ResourceType":"NetworkInterface","ResourceIds":["{}"],"LogGroupName":"flowlog-secrets","MaxAggregationInterval":1}}"#,
            side.iface
        );
        let out = agent.cli("create-flow-logs", &["--cli-input-json", &request]);
        assert!(
            out.0,
            "create-flow-logs: {}\nagent log:\n{}",
            out.1,
            agent.log()
        );
        agent
    }

    fn cli(&self, command: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(flowlog_bin())
            .arg(command)
            .arg("--control-socket")
            .arg(self.dir.join("control.sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("flowlog client");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn log(&self) -> String {
        read_log(&self.dir.join("agent.log"))
    }

    /// The Prometheus text the agent serves.
    fn scrape(&self, netns: &str) -> String {
        let addr = self.metrics_addr;
        in_ns(netns, move || {
            let mut s = TcpStream::connect(addr).expect("connect to metrics");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .expect("request");
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("answer");
            answer
        })
    }

    fn stop(&mut self) {
        let child = self.child.take().expect("running");
        let status = sigterm_and_wait(child, &self.dir.join("agent.log"), Duration::from_secs(60));
        assert!(
            status.success(),
            "flowlog exited {status}; log:\n{}",
            self.log()
        );
    }
}

impl Drop for SecretAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every file under `dir`, with its bytes (read once the agents have stopped).
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            let ty = e.file_type().expect("file type");
            if ty.is_dir() {
                todo.push(p);
            } else if ty.is_file() {
                let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                out.push((p, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn credentials_appear_in_no_log_metric_spool_or_answer() {
    let ns = Namespaces::new(Setup::new(233).prefix("flsc").ipv4_only());
    let secrets = Secrets::new();
    let moto = Moto::start_refusing_everyone(Some(&ns.a.netns));
    moto.start_recording();
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = format!("http://127.0.0.1:{}", closed_port(&ns.a.netns));
    let mut agents = [
        SecretAgent::start(&ns.a, &dir.path().join("moto"), &moto.endpoint(), &secrets),
        SecretAgent::start(&ns.a, &dir.path().join("closed"), &refused, &secrets),
    ];
    let sent = send_udp_flows(&ns.a, &ns.b, 7004, 3, 2, 50);
    assert_eq!(sent.len(), 3);

    // Until every flow log of both agents has failed to deliver and has spooled batches.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answers = Vec::new();
    for agent in &agents {
        loop {
            let (ok, describe) = agent.cli("describe-flow-logs", &[]);
            assert!(ok, "describe-flow-logs: {describe}");
            let v: serde_json::Value = serde_json::from_str(&describe).expect("describe JSON");
            let flow_logs = v["FlowLogs"].as_array().expect("FlowLogs");
            let all_failed = flow_logs.len() == 2
                && flow_logs.iter().all(|f| f["DeliverLogsStatus"] == "FAILED");
            // Names only: the running agent deletes write-ahead logs as their objects finish.
            let spooled = fs::read_dir(agent.dir.join("spool")).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "batch"))
            });
            if all_failed && spooled && agent.log().contains("cannot publish") {
                answers.push(describe);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the flow logs did not all fail: {describe}\nlog:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let scraped: Vec<String> = agents.iter().map(|a| a.scrape(&ns.a.netns)).collect();
    for agent in &mut agents {
        agent.stop();
    }

    // The credentials were in play: moto received them (its own recording, not ours).
    let received = moto.recorded_requests();
    assert!(
        received.iter().any(|r| {
            r["headers"]
                .as_object()
                .is_some_and(|h| h.values().any(|v| v == secrets.session_token.as_str()))
        }),
        "moto never received the session token: {} requests",
        received.len()
    );
    // And the search below finds a secret where one is (moto's recording, not ours).
    let recording = serde_json::to_vec(&received).expect("JSON");
    assert!(
        secrets
            .needles()
            .iter()
            .any(|(_, n)| contains(&recording, n))
    );
    // The errors were those of refused credentials (moto's CloudWatch 403 body is not in the
    // shape the SDK parses codes from, so that line names the status) and of a closed port.
    let moto_log = agents[0].log();
    for (what, answer) in [
        ("cannot put s3://", "answered InvalidAccessKeyId (HTTP 403)"),
        ("cannot put 1 events", "answered HTTP 403"),
    ] {
        assert!(
            moto_log
                .lines()
                .any(|l| l.contains(what) && l.contains(answer)),
            "{what}: {moto_log}"
        );
    }
    assert!(
        agents[1].log().contains("cannot reach"),
        "{}",
        agents[1].log()
    );
    for (agent, answer) in agents.iter().zip(&answers) {
        assert!(
            answer.contains("Access error") || answer.contains("Unknown error"),
            "{answer}"
        );
        assert!(
            agent.log().contains(" DEBUG "),
            "the agent logged at debug level"
        );
    }

    // Nowhere: logs, metrics (file and HTTP), spool, state, sockets' directories, answers.
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    for agent in &agents {
        for (path, bytes) in files_under(&agent.dir) {
            places.push((path.display().to_string(), bytes));
        }
    }
    for (i, text) in scraped.iter().enumerate() {
        assert!(text.contains("flowlog_publish_failures_total"), "{text}");
        places.push((
            format!("metrics of agent {i} over HTTP"),
            text.clone().into_bytes(),
        ));
    }
    for (i, text) in answers.iter().enumerate() {
        places.push((
            format!("describe-flow-logs of agent {i}"),
            text.clone().into_bytes(),
        ));
    }
    let spool_files = places.iter().filter(|(p, _)| p.ends_with(".batch")).count();
    assert!(spool_files >= 2, "spool files to check: {spool_files}");
    let mut leaks = Vec::new();
    for (place, bytes) in &places {
        for (what, needle) in secrets.needles() {
            if contains(bytes, &needle) {
                leaks.push(format!("{what} in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "credentials leaked: {leaks:#?}");
    eprintln!(
        "secrets: checked {} files and answers ({} spool files), {} log bytes",
        places.len(),
        spool_files,
        agents.iter().map(|a| a.log().len()).sum::<usize>()
    );
}
