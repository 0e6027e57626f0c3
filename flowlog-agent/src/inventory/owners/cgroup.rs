//! Container ids from `/proc/<pid>/cgroup` lines: which runtime made the cgroup, the container's
//! full id, and the Kubernetes pod UID where the path has one. Pure parsing.
//!
//! Layouts covered (cgroupfs and systemd drivers, v1 and v2 lines alike):
//!
//! | runtime                | path component                                              |
//! |------------------------|-------------------------------------------------------------|
//! | podman                 | `libpod-<id>` or `libpod-<id>.scope` (`/libpod_parent/[<pod>/]libpod-<id>`, `machine.slice/libpod-<id>.scope`) |
//! | docker                 | `docker-<id>.scope`, or `<id>` under a `docker` directory (`/docker/<id>`) |
//! | containerd (CRI)       | `cri-containerd-<id>.scope`                                 |
//! | containerd (nerdctl)   | `nerdctl-<id>.scope`                                        |
//! | cri-o                  | `crio-<id>.scope` (`crio-conmon-<id>.scope` is the monitor, not the container) |
//! | Kubernetes, cgroupfs   | `kubepods/<qos>/pod<uid>/<id>`: the runtime is not in the path |
//!
//! Pod UIDs: `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd).
//! Podman pods: `/libpod_parent/<pod id>/libpod-<id>` or `machine-libpod_pod_<pod id>.slice`;
//! the pod id is reported as the pod UID.

use super::Runtime;

/// The container a cgroup path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupContainer {
    /// Full 64-hex id.
    pub id: String,
    pub runtime: Runtime,
    /// Kubernetes pod UID (`-` separated) or podman pod id.
    pub pod_uid: Option<String>,
}

/// The container named by a `/proc/<pid>/cgroup` file (all its lines). Lines are tried in
/// order; the first that names a container wins (on hybrid hosts the v1 and v2 lines agree,
/// and a v2 `0::/` line of a v1-managed process names nothing).
pub fn container_of(cgroup_file: &str) -> Option<CgroupContainer> {
    cgroup_file.lines().find_map(|line| {
        // "hierarchy-id:controllers:path"; the path may itself contain ':'.
        let mut parts = line.splitn(3, ':');
        let _hierarchy = parts.next()?;
        let _controllers = parts.next()?;
        container_of_path(parts.next()?)
    })
}

/// The container named by one cgroup path. The innermost (last) container component wins, so
/// a container nested in another (docker-in-docker) is the inner one.
pub fn container_of_path(path: &str) -> Option<CgroupContainer> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (at, id, runtime) = parts.iter().enumerate().rev().find_map(|(i, part)| {
        let parent = i.checked_sub(1).map(|p| parts[p]);
        component_id(part, parent).map(|(id, rt)| (i, id, rt))
    })?;
    let above = &parts[..at];
    let pod_uid = above.iter().rev().find_map(|p| kube_pod_uid(p));
    let pod_uid = match pod_uid {
        Some(uid) => Some(uid),
        None if runtime == Runtime::Podman => above.iter().rev().find_map(|p| podman_pod_id(p)),
        None => None,
    };
    Some(CgroupContainer {
        id: id.to_string(),
        runtime,
        pod_uid,
    })
}

/// The id and runtime one path component names, given the component above it.
fn component_id<'a>(part: &'a str, parent: Option<&str>) -> Option<(&'a str, Runtime)> {
    let scoped = part.strip_suffix(".scope").unwrap_or(part);
    let prefixed = [
        ("libpod-", Runtime::Podman),
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("nerdctl-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
    ];
    for (prefix, runtime) in prefixed {
        if let Some(id) = scoped.strip_prefix(prefix)
            && is_full_id(id)
        {
            return Some((id, runtime));
        }
    }
    if is_full_id(part) {
        let runtime = match parent {
            Some("docker") => Runtime::Docker,
            // `/libpod_parent/<pod id>` is a pod's directory, not a container: its containers
            // are `libpod-<id>` below it. A bare id there is conmon's cgroup or the like.
            Some("libpod_parent") => return None,
            _ => Runtime::Unknown,
        };
        // A bare id counts only where a runtime or Kubernetes puts containers: under `docker`
        // or a `pod<uid>` directory.
        let under_pod = parent.is_some_and(|p| kube_pod_uid(p).is_some());
        if runtime == Runtime::Docker || under_pod {
            return Some((part, runtime));
        }
    }
    None
}

/// A full container id: 64 lowercase hex digits.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The pod UID of a kubepods path component: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd), with `_` turned back to `-`.
fn kube_pod_uid(part: &str) -> Option<String> {
    let uid = if let Some(slice) = part.strip_suffix(".slice") {
        if !slice.starts_with("kubepods") {
            return None;
        }
        &slice[slice.rfind("-pod")? + "-pod".len()..]
    } else {
        part.strip_prefix("pod")?
    };
    let uid = uid.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

/// A podman pod's id in `machine-libpod_pod_<id>.slice` (systemd) or a bare 64-hex directory
/// (cgroupfs, under `libpod_parent`).
fn podman_pod_id(part: &str) -> Option<String> {
    let id = part
        .strip_prefix("machine-libpod_pod_")
        .and_then(|p| p.strip_suffix(".slice"))
        .unwrap_or(part);
    is_full_id(id).then(|| id.to_string())
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "03b5af3df0379b8475891db64008743120847a1fd14796bd372ae92764fb4b46";
    const ID2: &str = "96821bcfbb60f6c5da16a522c101010d90685cde6bc307829619d5aca4b6342d";
    const POD: &str = "edad3ed13b98f7bcbe181ef703c4fe4683c423419e28f073b237f5020dd732ce";

    fn found(id: &str, runtime: Runtime, pod_uid: Option<&str>) -> Option<CgroupContainer> {
        Some(CgroupContainer {
            id: id.to_string(),
            runtime,
            pod_uid: pod_uid.map(str::to_string),
        })
    }

    #[test]
    fn podman_cgroupfs_hybrid_file_as_on_this_machine() {
        let file = format!(
            "9:name=systemd:/libpod_parent/libpod-{ID}\n\
             8:pids:/libpod_parent/libpod-{ID}\n\
             4:memory:/libpod_parent/libpod-{ID}\n\
             0::/libpod_parent/libpod-{ID}\n"
        );
        assert_eq!(container_of(&file), found(ID, Runtime::Podman, None));
    }

    #[test]
    fn podman_pod_member_carries_the_pod_id() {
        let file = format!("0::/libpod_parent/{POD}/libpod-{ID2}\n");
        assert_eq!(container_of(&file), found(ID2, Runtime::Podman, Some(POD)));
        let systemd = format!(
            "0::/machine.slice/machine-libpod_pod_{POD}.slice/libpod-{ID2}.scope/container\n"
        );
        assert_eq!(
            container_of(&systemd),
            found(ID2, Runtime::Podman, Some(POD))
        );
    }

    #[test]
    fn podman_systemd_scope_and_conmon_is_not_a_container() {
        assert_eq!(
            container_of(&format!("0::/machine.slice/libpod-{ID}.scope\n")),
            found(ID, Runtime::Podman, None)
        );
        assert_eq!(
            container_of(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n")),
            None
        );
        assert_eq!(container_of(&format!("0::/libpod_parent/{POD}\n")), None);
        assert_eq!(container_of("0::/libpod_parent/conmon\n"), None);
    }

    #[test]
    fn docker_systemd_and_cgroupfs() {
        assert_eq!(
            container_of(&format!("0::/system.slice/docker-{ID}.scope\n")),
            found(ID, Runtime::Docker, None)
        );
        assert_eq!(
            container_of(&format!(
                "12:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"
            )),
            found(ID, Runtime::Docker, None)
        );
        // docker-in-docker: the inner container.
        assert_eq!(
            container_of(&format!("0::/docker/{ID}/docker/{ID2}\n")),
            found(ID2, Runtime::Docker, None)
        );
    }

    #[test]
    fn containerd_cri_systemd_with_pod_uid() {
        let line = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/\
             kubepods-besteffort-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/\
             cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            container_of(&line),
            found(
                ID,
                Runtime::Containerd,
                Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")
            )
        );
        // Guaranteed QoS pods sit directly under kubepods.slice.
        let guaranteed = format!(
            "0::/kubepods.slice/kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/\
             cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            container_of(&guaranteed).and_then(|c| c.pod_uid),
            Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".to_string())
        );
    }

    #[test]
    fn kubepods_cgroupfs_bare_id_under_pod_directory() {
        let line = format!(
            "11:cpu,cpuacct:/kubepods/burstable/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}\n"
        );
        assert_eq!(
            container_of(&line),
            found(
                ID,
                Runtime::Unknown,
                Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")
            )
        );
    }

    #[test]
    fn crio_scope_and_its_conmon() {
        let line = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/crio-{ID}.scope\n"
        );
        assert_eq!(
            container_of(&line),
            found(
                ID,
                Runtime::Crio,
                Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")
            )
        );
        assert_eq!(
            container_of(&format!("0::/machine.slice/crio-conmon-{ID}.scope\n")),
            None
        );
    }

    #[test]
    fn nerdctl_scope() {
        assert_eq!(
            container_of(&format!("0::/system.slice/nerdctl-{ID}.scope\n")),
            found(ID, Runtime::Containerd, None)
        );
    }

    #[test]
    fn hybrid_file_whose_v2_line_is_root_uses_the_v1_lines() {
        let file = format!("0::/\n9:name=systemd:/docker/{ID}\n");
        assert_eq!(container_of(&file), found(ID, Runtime::Docker, None));
    }

    #[test]
    fn host_processes_and_malformed_lines_name_no_container() {
        for file in [
            "0::/\n",
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "4:memory:/process_api/04811b85653941b724380082919796a9\n",
            "0::/system.slice/docker.service\n",
            // Short ids, upper case and non-hex are not container ids.
            "0::/docker/03b5af3df037\n",
            "0::/system.slice/docker-03B5AF3DF0379B8475891DB64008743120847A1FD14796BD372AE92764FB4B46.scope\n",
            "garbage\n",
            "",
            // A bare id outside docker/pod directories.
            &format!("0::/somewhere/{ID}\n"),
        ] {
            assert_eq!(container_of(file), None, "{file:?}");
        }
    }
}
