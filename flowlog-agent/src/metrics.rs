//! Operational metrics in the Prometheus text exposition format (0.0.4): written to
//! `--metrics-file` after every window (node_exporter's textfile collector reads it) and served
//! on `--metrics-addr` (loopback by default).
//!
//! Hand-written rather than prometheus-client: that crate emits OpenMetrics (counter families
//! without `_total`, `# EOF`), which the textfile collector's 0.0.4 parser does not expect, and the
//! format itself is a few lines. Any module records a value with [`counter_add`] or
//! [`gauge_set`]; nothing has to be registered first.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    sync::{Mutex, OnceLock},
};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    help: &'static str,
    kind: Kind,
    /// Rendered label set (`{a="x",b="y"}` or empty) → value.
    samples: BTreeMap<String, f64>,
}

#[derive(Default)]
struct Registry {
    families: BTreeMap<&'static str, Family>,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Registry::default()))
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

fn update(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    pairs: &[(&str, &str)],
    f: impl FnOnce(&mut f64),
) {
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let family = reg.families.entry(name).or_insert_with(|| Family {
        help,
        kind,
        samples: BTreeMap::new(),
    });
    f(family.samples.entry(labels(pairs)).or_insert(0.0));
}

/// Adds `v` to a counter (name should end in `_total`).
pub fn counter_add(name: &'static str, help: &'static str, pairs: &[(&str, &str)], v: u64) {
    update(name, help, Kind::Counter, pairs, |x| *x += v as f64);
}

/// Sets a gauge.
pub fn gauge_set(name: &'static str, help: &'static str, pairs: &[(&str, &str)], v: f64) {
    update(name, help, Kind::Gauge, pairs, |x| *x = v);
}

/// Removes every sample, of every metric, whose labels include `key="value"`: the series of an
/// interface that is gone, so interfaces that come and go (containers) do not pile up series.
pub fn forget_label(key: &str, value: &str) {
    let rendered = labels(&[(key, value)]);
    let pair = &rendered[1..rendered.len() - 1];
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    for family in reg.families.values_mut() {
        family.samples.retain(|l, _| {
            let inner = l.trim_start_matches('{').trim_end_matches('}');
            !inner.split(',').any(|p| p == pair)
        });
    }
}

/// Current value of a sample, for tests and status output.
pub fn value(name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    reg.families.get(name)?.samples.get(&labels(pairs)).copied()
}

/// Everything in the text exposition format.
pub fn render() -> String {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    for (name, fam) in &reg.families {
        let kind = match fam.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", fam.help);
        for (l, v) in &fam.samples {
            let _ = writeln!(out, "{name}{l} {v}");
        }
    }
    out
}

/// Writes [`render`] to `path` atomically (temporary file + rename), as the textfile collector
/// requires.
pub fn write_file(path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, render()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))
}

/// Serves the metrics over HTTP on `addr` until the task is aborted: `/healthz` and `/readyz`
/// answer the probes ([`crate::lifecycle`]), any other path the metrics. One small response per
/// request; no HTTP framework needed for that.
pub async fn serve(addr: std::net::SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut conn, peer)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    read_head(&mut conn, &mut buf),
                )
                .await
                .unwrap_or(0);
                let (status, content_type, body) = match request_path(&buf[..n]) {
                    Some("/healthz") => probe(crate::lifecycle::AGENT.liveness()),
                    Some("/readyz") => probe(crate::lifecycle::AGENT.readiness()),
                    _ => ("200 OK", "text/plain; version=0.0.4", render()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = conn.write_all(resp.as_bytes()).await {
                    debug!(%peer, error = %e, "metrics client went away");
                }
            });
        }
    }))
}

/// Reads a request's head (up to the blank line, or as much of it as fits in `buf`), so that
/// closing the connection after the answer never leaves request bytes unread (the kernel would
/// answer them with a reset that discards the response). Returns the bytes read.
async fn read_head(conn: &mut tokio::net::TcpStream, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match conn.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    n
}

/// The path of an HTTP request's first line (`GET /readyz HTTP/1.1`), without a query string.
fn request_path(request: &[u8]) -> Option<&str> {
    let line = std::str::from_utf8(request).ok()?.lines().next()?;
    let target = line.split(' ').nth(1)?;
    target.split('?').next()
}

fn probe(p: crate::lifecycle::Probe) -> (&'static str, &'static str, String) {
    (p.status, "text/plain; charset=utf-8", p.body)
}

/// Says once, at start, where the metrics can be read.
pub fn announce(addr: Option<std::net::SocketAddr>, file: Option<&Path>) {
    let http = addr.map(|a| format!("http://{a}/metrics"));
    let file = file.map(|f| f.display().to_string());
    match (&http, &file) {
        (None, None) => {
            info!("metrics are not exported: add --metrics-addr ADDR or --metrics-file PATH")
        }
        _ => info!(
            http = %http.as_deref().unwrap_or("-"),
            file = %file.as_deref().unwrap_or("-"),
            "metrics served over HTTP (any path but /healthz and /readyz, the probes) and/or written to the file after every window"
        ),
    }
}

/// Writes the metrics file if one is configured, logging (not failing) on error.
pub fn flush_to(path: Option<&Path>) {
    if let Some(Err(e)) = path.map(write_file) {
        warn!(error = %format!("{e:#}"), "cannot write metrics file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_labelled_samples() {
        counter_add(
            "flowlog_test_packets_total",
            "Test packets.",
            &[("interface", "eth0"), ("direction", "ingress")],
            3,
        );
        counter_add(
            "flowlog_test_packets_total",
            "Test packets.",
            &[("interface", "eth0"), ("direction", "ingress")],
            4,
        );
        gauge_set("flowlog_test_fill_ratio", "Test gauge.", &[], 0.5);
        let text = render();
        assert!(text.contains("# HELP flowlog_test_packets_total Test packets.\n# TYPE flowlog_test_packets_total counter\n"));
        assert!(
            text.contains(
                "flowlog_test_packets_total{interface=\"eth0\",direction=\"ingress\"} 7\n"
            )
        );
        assert!(text.contains("flowlog_test_fill_ratio 0.5\n"));
        assert_eq!(
            value(
                "flowlog_test_packets_total",
                &[("interface", "eth0"), ("direction", "ingress")]
            ),
            Some(7.0)
        );
    }

    #[test]
    fn forgetting_an_interface_removes_only_its_series() {
        let m = "flowlog_test_forget_total";
        for iface in ["vethgone", "vethgone2", "eth0"] {
            counter_add(
                m,
                "Test.",
                &[("interface", iface), ("direction", "egress")],
                1,
            );
        }
        gauge_set(
            "flowlog_test_forget_gauge",
            "Test.",
            &[("interface", "vethgone")],
            1.0,
        );
        forget_label("interface", "vethgone");
        let text = render();
        assert!(!text.contains("\"vethgone\""), "{text}");
        assert!(text.contains(
            "flowlog_test_forget_total{interface=\"vethgone2\",direction=\"egress\"} 1\n"
        ));
        assert!(
            text.contains("flowlog_test_forget_total{interface=\"eth0\",direction=\"egress\"} 1\n")
        );
    }

    #[test]
    fn request_paths() {
        assert_eq!(
            request_path(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n"),
            Some("/readyz")
        );
        assert_eq!(
            request_path(b"GET /healthz?verbose HTTP/1.1\r\n"),
            Some("/healthz")
        );
        assert_eq!(request_path(b"GET"), None);
        assert_eq!(request_path(b""), None);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\z")]), "{a=\"x\\\"y\\\\z\"}");
    }
}
