//! An agent publishing to S3 or CloudWatch Logs through the fault proxy to moto, all in the
//! agent's namespace, with a control socket and a metrics file: the rig of the fault and spool
//! tests.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    fault_proxy::{Exchange, FaultProxy, Matcher, Outcome},
    moto::Moto,
    netns::{Namespaces, Setup},
    publish::{AgentProcess, event_record, records_of_objects, summed_per_tuple},
    records::{Record, Tuple},
};

pub const BUCKET: &str = "flowlog-test";
pub const PREFIX: &str = "my-logs";
pub const GROUP: &str = "/flowlog/faults";
pub const FLOW_LOG_ID: &str = "fl-0fa0170000000000a";
pub const ACCOUNT: &str = "123456789012";
/// Generous: the machine is shared with other builds.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Which destination the agent publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3,
    Logs,
}

impl Kind {
    pub fn destination(self) -> String {
        match self {
            Kind::S3 => format!("s3://{BUCKET}/{PREFIX}"),
            Kind::Logs => format!("cloud-watch-logs:{GROUP}"),
        }
    }

    /// The publishing call faults are injected into.
    pub fn publish_call(self) -> Matcher {
        match self {
            Kind::S3 => Matcher::s3_put_object(BUCKET),
            Kind::Logs => Matcher::logs("PutLogEvents"),
        }
    }
}

/// One agent (1 s windows, one object per window) publishing through the proxy to moto, with
/// a control socket and a metrics file. Dropped in field order: the agent first.
pub struct ProxiedAgent {
    pub agent: AgentProcess,
    pub proxy: FaultProxy,
    pub moto: Moto,
    pub ns: Namespaces,
    /// The agent's files: spool (unless given), metrics, control socket, state.
    pub dir: tempfile::TempDir,
    pub kind: Kind,
}

impl ProxiedAgent {
    /// Starts moto (with the bucket for S3), the proxy and the agent on `setup`'s side `a`.
    /// `spool_dir`: where the spool goes (default: in [`ProxiedAgent::dir`]); `extra`: more
    /// `flowlog run` options.
    pub fn start(
        setup: Setup,
        kind: Kind,
        spool_dir: Option<&Path>,
        extra: &[&str],
    ) -> ProxiedAgent {
        let ns = Namespaces::new(setup);
        let moto = Moto::start(Some(&ns.a.netns));
        // moto's first call of a service loads it (seconds on a busy machine): made here, so
        // the agent's calls are answered at their usual pace.
        moto.with_clients(async |c| match kind {
            Kind::S3 => c.create_bucket(BUCKET).await,
            Kind::Logs => {
                let _ = c.logs.describe_log_groups().send().await;
            }
        });
        let proxy = FaultProxy::start(Some(&ns.a.netns), moto.port());
        let dir = tempfile::Builder::new()
            .prefix("flfp-")
            .tempdir()
            .expect("temp dir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let spool = spool_dir.map_or_else(|| path("spool"), |d| d.display().to_string());
        let args: Vec<String> = [
            "--aggregation-interval",
            "1",
            "--file-rollover-seconds",
            "1",
            "--flow-log-id",
            FLOW_LOG_ID,
            "--account-id",
            ACCOUNT,
            "--region",
            "us-east-1",
            "--no-imds",
            "--destination",
            &kind.destination(),
            "--endpoint-url",
            &proxy.endpoint(),
            "--spool-dir",
            &spool,
            "--metrics-file",
            &path("flowlog.prom"),
            "--control-socket",
            &path("control.sock"),
            "--state-dir",
            &path("state"),
            "--runtime-dir",
            &path("run"),
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let agent = AgentProcess::start(&ns.a, &args);
        ProxiedAgent {
            agent,
            proxy,
            moto,
            ns,
            dir,
            kind,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    pub fn metrics_file(&self) -> PathBuf {
        self.dir.path().join("flowlog.prom")
    }

    /// The publishing calls moto acknowledged and whose answer reached the agent.
    pub fn acknowledged(&self) -> Vec<Exchange> {
        self.proxy
            .matching(&self.kind.publish_call())
            .into_iter()
            .filter(|e| e.outcome == Outcome::Forwarded(200))
            .collect()
    }

    /// The publishing calls moto carried out, whether or not the agent heard of it.
    pub fn accepted_by_moto(&self) -> Vec<Exchange> {
        self.proxy
            .matching(&self.kind.publish_call())
            .into_iter()
            .filter(|e| {
                matches!(
                    e.outcome,
                    Outcome::Forwarded(200) | Outcome::Faulted(_, Some(200))
                )
            })
            .collect()
    }

    /// Every record delivered so far (S3: the objects' records; CloudWatch: one per event).
    pub fn delivered(&self) -> Vec<Record> {
        match self.kind {
            Kind::S3 => {
                records_of_objects(&self.moto.with_clients(async |c| c.objects(BUCKET).await))
            }
            Kind::Logs => self
                .moto
                .with_clients(async |c| c.log_events(GROUP).await)
                .values()
                .flatten()
                .map(|(_, message)| event_record(message))
                .collect(),
        }
    }

    /// Polls the destination until the traffic in `expected` is all there (each tuple's
    /// packets and bytes summed over distinct records).
    pub fn wait_until_delivered(&self, expected: &BTreeMap<Tuple, (u64, u64)>) {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let records = self.delivered();
            let distinct: BTreeMap<&str, &Record> =
                records.iter().map(|r| (r.line.as_str(), r)).collect();
            let ok: Vec<&Record> = distinct
                .values()
                .filter(|r| r.tuple.is_some_and(|t| expected.contains_key(&t)))
                .copied()
                .collect();
            if summed_per_tuple(&ok) == *expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the traffic was not delivered within {DEADLINE:?}; agent log:\n{}",
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
