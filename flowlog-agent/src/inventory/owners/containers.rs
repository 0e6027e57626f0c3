//! Container names, pods and sandboxes from where the runtimes keep them on the host, and the
//! order containers sharing a namespace are reported in.
//!
//! Sources, all plain files (no runtime API is called, so a hung daemon cannot stall the
//! inventory):
//!
//! - **The OCI bundle's `config.json` annotations** (every runtime): Kubernetes names
//!   (containerd's `io.kubernetes.cri.*`, cri-o's `io.kubernetes.pod.*` /
//!   `io.kubernetes.container.name`), sandbox markers (`io.kubernetes.cri.container-type`,
//!   `io.kubernetes.cri-o.ContainerType`: `sandbox`), the sandbox a container joined
//!   (`io.kubernetes.cri-o.SandboxID`, which podman also writes for pod members,
//!   `io.kubernetes.cri.sandbox-id`), nerdctl's `nerdctl/name`. The bundle is found through the
//!   OCI runtime's state (`runc`'s `state.json` label `bundle=`, `crun`'s `status`) or at the
//!   runtimes' bundle directories.
//! - **containers-storage's `containers.json`** (podman, cri-o): the container's `names`.
//! - **docker's `config.v2.json`**: `Name` and the `Config.Labels` dockershim wrote.
//!
//! Podman keeps pod names only in its own database (BoltDB or SQLite), which is not read: a
//! podman pod member gets the pod's id as `pod_uid` (from its cgroup path) and no pod name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Container, Runtime};

/// What the host's files say about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    /// A pod's infra/pause container (it holds the namespaces, runs no workload).
    pub sandbox: bool,
    /// The sandbox this container joined, when the runtime records it.
    pub sandbox_id: Option<String>,
}

/// Reads what `host_root` (normally `/`) holds about container `id`.
pub fn lookup(host_root: &Path, id: &str, runtime: Runtime) -> ContainerMeta {
    let bundle = find_bundle(host_root, id);
    let annotations = bundle
        .as_deref()
        .map(|b| read_json(&b.join("config.json")))
        .and_then(|config| string_map(config.as_ref()?.get("annotations")?))
        .unwrap_or_default();
    let mut meta = from_annotations(&annotations);

    if meta.name.is_none() && matches!(runtime, Runtime::Docker | Runtime::Unknown) {
        let config =
            read_json(&host_root.join(format!("var/lib/docker/containers/{id}/config.v2.json")));
        if let Some(config) = config {
            let labels = config
                .pointer("/Config/Labels")
                .and_then(string_map)
                .unwrap_or_default();
            let from_labels = from_annotations(&labels);
            meta.name = from_labels.name.or_else(|| {
                config
                    .get("Name")
                    .and_then(Value::as_str)
                    .map(|n| n.trim_start_matches('/').to_string())
                    .filter(|n| !n.is_empty())
            });
            meta.pod_uid = meta.pod_uid.or(from_labels.pod_uid);
            meta.pod_name = meta.pod_name.or(from_labels.pod_name);
            meta.pod_namespace = meta.pod_namespace.or(from_labels.pod_namespace);
            meta.sandbox |=
                labels.get("io.kubernetes.docker.type").map(String::as_str) == Some("podsandbox");
        }
    }
    if meta.name.is_none() && matches!(runtime, Runtime::Podman | Runtime::Crio | Runtime::Unknown)
    {
        meta.name = storage_name(host_root, bundle.as_deref(), id);
    }
    meta
}

/// The names and markers the annotations (or docker labels) carry.
pub fn from_annotations(a: &BTreeMap<String, String>) -> ContainerMeta {
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| a.get(*k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let sandbox = [
        "io.kubernetes.cri.container-type",
        "io.kubernetes.cri-o.ContainerType",
    ]
    .iter()
    .any(|k| a.get(*k).map(String::as_str) == Some("sandbox"));
    ContainerMeta {
        name: first(&[
            "io.kubernetes.cri.container-name",
            "io.kubernetes.container.name",
            "nerdctl/name",
        ])
        // Kubernetes names every sandbox "POD"; the pod name says more.
        .filter(|n| !(sandbox && n == "POD")),
        pod_uid: first(&["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"]),
        pod_name: first(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]),
        pod_namespace: first(&[
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        ]),
        sandbox,
        sandbox_id: first(&[
            "io.kubernetes.cri-o.SandboxID",
            "io.kubernetes.cri.sandbox-id",
        ]),
    }
}

/// The container's OCI bundle directory (holding `config.json`), under `host_root`.
fn find_bundle(host_root: &Path, id: &str) -> Option<PathBuf> {
    // OCI runtime state: runc (podman, cri-o), docker's runc root, containerd's runc roots.
    let mut states = vec![
        host_root.join(format!("run/runc/{id}/state.json")),
        host_root.join(format!("run/docker/runtime-runc/moby/{id}/state.json")),
    ];
    states.extend(
        subdirs(&host_root.join("run/containerd/runc")).map(|ns| ns.join(id).join("state.json")),
    );
    for state in states {
        let bundle = read_json(&state).and_then(|s| {
            s.pointer("/config/labels")?
                .as_array()?
                .iter()
                .find_map(|l| l.as_str()?.strip_prefix("bundle=").map(str::to_string))
        });
        if let Some(bundle) = bundle {
            return Some(under(host_root, &bundle));
        }
    }
    let crun = read_json(&host_root.join(format!("run/crun/{id}/status")))
        .and_then(|s| s.get("bundle")?.as_str().map(str::to_string));
    if let Some(bundle) = crun {
        return Some(under(host_root, &bundle));
    }
    // Bundles at their usual places: containerd's (any namespace: k8s.io, moby, default),
    // containers-storage's (podman's graph root, cri-o's run root).
    let mut dirs: Vec<PathBuf> =
        subdirs(&host_root.join("run/containerd/io.containerd.runtime.v2.task"))
            .map(|ns| ns.join(id))
            .collect();
    for storage in ["var/lib/containers/storage", "run/containers/storage"] {
        dirs.push(host_root.join(format!("{storage}/overlay-containers/{id}/userdata")));
    }
    dirs.into_iter().find(|d| d.join("config.json").is_file())
}

/// The first of `names` in containers-storage's `containers.json` for `id`: next to the bundle
/// (`<root>/overlay-containers/<id>/userdata`), else in the default graph root.
fn storage_name(host_root: &Path, bundle: Option<&Path>, id: &str) -> Option<String> {
    let mut candidates = Vec::new();
    if let Some(overlay_containers) = bundle.and_then(|b| b.parent()?.parent()) {
        candidates.push(overlay_containers.join("containers.json"));
    }
    candidates
        .push(host_root.join("var/lib/containers/storage/overlay-containers/containers.json"));
    candidates.into_iter().find_map(|path| {
        let list = read_json(&path)?;
        list.as_array()?
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))?
            .get("names")?
            .as_array()?
            .first()?
            .as_str()
            .map(str::to_string)
    })
}

/// Orders containers sharing one namespace: workloads by start time (oldest first, then by
/// id), sandboxes (infra/pause containers) last. The first is the one `ecs-container-id`
/// names.
pub fn order(containers: &mut [(Container, u64, bool)]) {
    containers.sort_by(|(a, a_start, a_sandbox), (b, b_start, b_sandbox)| {
        a_sandbox
            .cmp(b_sandbox)
            .then(a_start.cmp(b_start))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// An absolute host path read under `host_root`.
fn under(host_root: &Path, absolute: &str) -> PathBuf {
    host_root.join(absolute.trim_start_matches('/'))
}

fn subdirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.is_dir())
}

fn read_json(path: &Path) -> Option<Value> {
    let text = fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "unreadable runtime state file");
            None
        }
    }
}

/// A JSON object's string values.
fn string_map(v: &Value) -> Option<BTreeMap<String, String>> {
    Some(
        v.as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "53950fb30adfeb7ff2c3f5f899c9fa38ab1fafd51a7462e21acbbce408cb2b0b";
    const INFRA: &str = "a03bb798f544b812031b5908822f476ba95c88c3ec5505a8a1d2bf470892418b";

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn containerd_cri_annotations() {
        let a = map(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.container-name", "nginx"),
            ("io.kubernetes.cri.sandbox-name", "web-7d4b9c"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            (
                "io.kubernetes.cri.sandbox-uid",
                "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            ),
            ("io.kubernetes.cri.sandbox-id", INFRA),
        ]);
        assert_eq!(
            from_annotations(&a),
            ContainerMeta {
                name: Some("nginx".into()),
                pod_uid: Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
                pod_name: Some("web-7d4b9c".into()),
                pod_namespace: Some("shop".into()),
                sandbox: false,
                sandbox_id: Some(INFRA.into()),
            }
        );
    }

    #[test]
    fn crio_sandbox_is_marked_and_not_named_pod() {
        let a = map(&[
            ("io.kubernetes.cri-o.ContainerType", "sandbox"),
            ("io.kubernetes.container.name", "POD"),
            ("io.kubernetes.pod.name", "web-7d4b9c"),
            ("io.kubernetes.pod.namespace", "shop"),
            (
                "io.kubernetes.pod.uid",
                "0a1b2c3d-4e5f-6789-abcd-ef0123456789",
            ),
        ]);
        let meta = from_annotations(&a);
        assert!(meta.sandbox);
        assert_eq!(meta.name, None);
        assert_eq!(meta.pod_name.as_deref(), Some("web-7d4b9c"));
        assert_eq!(meta.pod_namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn podman_bundle_from_runc_state_and_name_from_containers_json() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let bundle = format!("/var/lib/containers/storage/overlay-containers/{ID}/userdata");
        write(
            r,
            &format!("run/runc/{ID}/state.json"),
            &format!(
                r#"{{"id":"{ID}","config":{{"labels":["io.container.manager=libpod","bundle={bundle}"]}}}}"#
            ),
        );
        // As podman 4.3 writes a pod member's annotations (seen on this machine).
        write(
            r,
            &format!("{}/config.json", bundle.trim_start_matches('/')),
            &format!(
                r#"{{"ociVersion":"1.0.2-dev","annotations":{{"io.container.manager":"libpod",
                "io.kubernetes.cri-o.ContainerType":"container",
                "io.kubernetes.cri-o.SandboxID":"{INFRA}"}}}}"#
            ),
        );
        write(
            r,
            "var/lib/containers/storage/overlay-containers/containers.json",
            &format!(
                r#"[{{"id":"{INFRA}","names":["flgpod1-infra"]}},{{"id":"{ID}","names":["flgpa"],"metadata":"{{}}"}}]"#
            ),
        );
        let meta = lookup(r, ID, Runtime::Podman);
        assert_eq!(meta.name.as_deref(), Some("flgpa"));
        assert_eq!(meta.sandbox_id.as_deref(), Some(INFRA));
        assert!(!meta.sandbox);
        assert_eq!(
            lookup(r, INFRA, Runtime::Podman).name.as_deref(),
            Some("flgpod1-infra")
        );
    }

    #[test]
    fn docker_name_from_config_v2() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            &format!("var/lib/docker/containers/{ID}/config.v2.json"),
            r#"{"ID":"x","Name":"/web-1","Config":{"Labels":{"com.example":"1"}}}"#,
        );
        let meta = lookup(root.path(), ID, Runtime::Docker);
        assert_eq!(meta.name.as_deref(), Some("web-1"));
        assert_eq!(meta.pod_name, None);
    }

    #[test]
    fn containerd_bundle_in_its_task_directory() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            r#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox",
                "io.kubernetes.cri.sandbox-name":"web-7d4b9c",
                "io.kubernetes.cri.sandbox-namespace":"shop"}}"#,
        );
        let meta = lookup(root.path(), ID, Runtime::Containerd);
        assert!(meta.sandbox);
        assert_eq!(meta.pod_name.as_deref(), Some("web-7d4b9c"));
    }

    #[test]
    fn nothing_on_the_host_is_no_metadata() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            lookup(root.path(), ID, Runtime::Unknown),
            ContainerMeta::default()
        );
    }

    #[test]
    fn order_is_oldest_workload_first_sandbox_last() {
        let c = |id: &str| Container {
            id: id.to_string(),
            runtime: Runtime::Podman,
            name: None,
            pod_uid: None,
            pod_name: None,
            pod_namespace: None,
        };
        let mut list = vec![
            (c("c"), 30, false),
            (c("infra"), 10, true),
            (c("b"), 20, false),
            (c("a"), 20, false),
        ];
        order(&mut list);
        let ids: Vec<&str> = list.iter().map(|(c, _, _)| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "infra"]);
    }
}
