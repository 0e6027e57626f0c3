//! Instance metadata against a real HTTP server on 127.0.0.1 that speaks IMDSv2 (token PUT,
//! token-checked GETs, 404 for absent keys), and against endpoints that never answer or refuse.

mod support;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use flowlog_agent::{inventory::imds, inventory::metadata::Metadata};
use support::record_args;

const TOKEN: &str = "AQAEAFakeTokenForTests==";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
    ttl: Option<String>,
}

/// A minimal IMDSv2 server: `PUT /latest/api/token` with a TTL header returns a token; every
/// `GET` must carry it (else 401); unknown paths are 404. One request per connection.
struct FakeImds {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn serve(paths: BTreeMap<String, String>) -> FakeImds {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            handle(conn, &paths, &log);
        }
    });
    FakeImds { url, seen }
}

fn handle(mut conn: TcpStream, paths: &BTreeMap<String, String>, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut token, mut ttl) = (None, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.trim_end().split_once(':').unwrap_or(("", ""));
        match name.to_ascii_lowercase().as_str() {
            "x-aws-ec2-metadata-token" => token = Some(value.trim().to_string()),
            "x-aws-ec2-metadata-token-ttl-seconds" => ttl = Some(value.trim().to_string()),
            _ => {}
        }
    }
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        token: token.clone(),
        ttl: ttl.clone(),
    });
    // Like the real service, the token response echoes the TTL it granted.
    let mut extra = String::new();
    let (status, body) = match (method.as_str(), path.as_str()) {
        ("PUT", "/latest/api/token") if ttl.is_some() => {
            extra = format!(
                "X-Aws-Ec2-Metadata-Token-Ttl-Seconds: {}\r\n",
                ttl.as_deref().unwrap_or_default()
            );
            ("200 OK", TOKEN.to_string())
        }
        ("PUT", _) => ("400 Bad Request", String::new()),
        ("GET", _) if token.as_deref() != Some(TOKEN) => ("401 Unauthorized", String::new()),
        ("GET", p) => match paths.get(p) {
            Some(b) => ("200 OK", b.clone()),
            None => ("404 Not Found", String::new()),
        },
        _ => ("405 Method Not Allowed", String::new()),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

fn ec2_paths() -> BTreeMap<String, String> {
    let m = "/latest/meta-data/";
    let mut p = BTreeMap::new();
    let mut put = |k: &str, v: &str| p.insert(format!("{m}{k}"), v.to_string());
    put("instance-id", "i-0c50d5961bcb2d47b");
    put("placement/region", "ap-southeast-2");
    put("placement/availability-zone-id", "apse2-az3");
    put("mac", "0e:aa:00:00:00:01");
    put(
        "network/interfaces/macs/",
        "0e:aa:00:00:00:01/\n0e:aa:00:00:00:02/",
    );
    let eni = "network/interfaces/macs/0e:aa:00:00:00:01/";
    put(&format!("{eni}interface-id"), "eni-1235b8ca123456789");
    put(&format!("{eni}owner-id"), "123456789012");
    put(&format!("{eni}vpc-id"), "vpc-abcdefab012345678");
    put(&format!("{eni}subnet-id"), "subnet-aaaaaaaa012345678");
    put(&format!("{eni}vpc-ipv4-cidr-block"), "10.0.0.0/16");
    put(
        &format!("{eni}vpc-ipv4-cidr-blocks"),
        "10.0.0.0/16\n100.64.0.0/16",
    );
    put(
        &format!("{eni}vpc-ipv6-cidr-blocks"),
        "2600:1f18:aaaa:bb00::/56",
    );
    put(&format!("{eni}subnet-ipv4-cidr-block"), "10.0.1.0/24");
    let eni2 = "network/interfaces/macs/0e:aa:00:00:00:02/";
    put(&format!("{eni2}interface-id"), "eni-0222222222222222b");
    put(&format!("{eni2}owner-id"), "210987654321");
    put(&format!("{eni2}vpc-id"), "vpc-abcdefab012345678");
    put(&format!("{eni2}subnet-id"), "subnet-bbbbbbbb012345678");
    put(&format!("{eni2}vpc-ipv4-cidr-block"), "10.0.0.0/16");
    put(
        &format!("{eni2}vpc-ipv4-cidr-blocks"),
        "10.0.0.0/16\n100.64.0.0/16",
    );
    put(&format!("{eni2}subnet-ipv4-cidr-block"), "100.64.3.0/24");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_identity_comes_from_imdsv2_with_a_token_on_every_get() {
    let server = serve(ec2_paths());
    let args = record_args(&["--imds-endpoint", &server.url, "--region", "us-east-1"]);
    // `record_args` adds --no-imds; this test wants the lookup.
    let args = flowlog_agent::cli::RecordArgs {
        no_imds: false,
        ..args
    };
    let meta = Metadata::discover(&args.metadata_config()).await.unwrap();
    assert_eq!(meta.account_id, "123456789012");
    assert_eq!(
        meta.region, "ap-southeast-2",
        "instance metadata wins over --region"
    );
    assert_eq!(meta.az_id, "apse2-az3");
    assert_eq!(meta.instance_id, "i-0c50d5961bcb2d47b");
    assert_eq!(meta.vpc_id, "vpc-abcdefab012345678");
    assert_eq!(meta.subnet_id, "subnet-aaaaaaaa012345678");
    assert_eq!(
        meta.vpc_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        ["10.0.0.0/16", "100.64.0.0/16", "2600:1f18:aaaa:bb00::/56"]
    );
    assert_eq!(meta.enis.len(), 2);
    assert_eq!(
        meta.interface_id("ens5", Some("0e:aa:00:00:00:01")),
        "eni-1235b8ca123456789"
    );
    assert_eq!(
        meta.interface_id("ens6", Some("0e:aa:00:00:00:02")),
        "eni-0222222222222222b"
    );
    assert_eq!(
        meta.interface_id("docker0", Some("02:42:ac:11:00:01")),
        "docker0"
    );
    let second = meta.eni("eni-0222222222222222b").unwrap();
    assert_eq!(
        (second.account_id.as_deref(), second.subnet_id.as_deref()),
        (Some("210987654321"), Some("subnet-bbbbbbbb012345678"))
    );
    assert_eq!(
        second.subnet_cidr.map(|c| c.to_string()).as_deref(),
        Some("100.64.3.0/24")
    );
    // The resolver (VPC base + 2) and both subnet routers (base + 1) are AWS-internal.
    let internal = flowlog_agent::records::aws_internal::AwsInternal::new(&meta);
    let addrs: Vec<String> = internal.addresses().iter().map(|a| a.to_string()).collect();
    for a in ["10.0.0.2", "10.0.1.1", "100.64.3.1", "169.254.169.254"] {
        assert!(addrs.contains(&a.to_string()), "{a} in {addrs:?}");
    }
    assert_eq!(addrs.len(), 9);

    let seen = server.seen.lock().unwrap().clone();
    let puts: Vec<&Seen> = seen.iter().filter(|s| s.method == "PUT").collect();
    assert_eq!(puts.len(), 1, "one token for the whole lookup: {seen:?}");
    assert_eq!(puts[0].path, "/latest/api/token");
    assert!(
        puts[0]
            .ttl
            .as_deref()
            .is_some_and(|t| t.parse::<u32>().is_ok()),
        "{:?}",
        puts[0]
    );
    let gets: Vec<&Seen> = seen.iter().filter(|s| s.method == "GET").collect();
    assert!(
        gets.iter().all(|g| g.token.as_deref() == Some(TOKEN)),
        "{gets:?}"
    );
    // 5 instance paths + 8 per ENI (the second ENI's IPv6 blocks are a 404).
    assert_eq!(gets.len(), 5 + 8 + 8, "{gets:?}");
    assert_eq!(seen[0].method, "PUT", "the token comes first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_never_answers_costs_at_most_the_timeout() {
    // Accepts connections (the kernel completes the handshake) and never replies.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let args = flowlog_agent::cli::RecordArgs {
        no_imds: false,
        ..record_args(&["--imds-endpoint", &url, "--account-id", "123456789010"])
    };
    let started = Instant::now();
    let meta = Metadata::discover(&args.metadata_config()).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= imds::DEFAULT_TIMEOUT && took < imds::DEFAULT_TIMEOUT + Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(meta.account_id, "123456789010", "the flag fills in");
    assert_eq!(meta.region, "-");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_falls_back_at_once() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = flowlog_agent::cli::RecordArgs {
        no_imds: false,
        ..record_args(&["--imds-endpoint", &format!("http://127.0.0.1:{port}")])
    };
    let started = Instant::now();
    let meta = Metadata::discover(&args.metadata_config()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(meta, Metadata::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_imds_does_not_connect() {
    let server = serve(ec2_paths());
    let meta =
        Metadata::discover(&record_args(&["--imds-endpoint", &server.url]).metadata_config())
            .await
            .unwrap();
    assert_eq!(meta, Metadata::default());
    assert_eq!(server.seen.lock().unwrap().len(), 0);
}

#[test]
fn a_bad_endpoint_is_a_usage_error() {
    use clap::Parser;
    #[derive(Parser)]
    struct A {
        #[command(flatten)]
        r: flowlog_agent::cli::RecordArgs,
    }
    let e = A::try_parse_from(["flowlog", "--imds-endpoint", "169.254.169.254"])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("write it as http://HOST[:PORT]"), "{e}");
}
