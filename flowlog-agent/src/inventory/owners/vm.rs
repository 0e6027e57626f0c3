//! tap/tun and macvtap/ipvtap devices: the process holding the device, and the VM's name and
//! UUID from that process's command line.
//!
//! - A `/dev/net/tun` descriptor attached to an interface shows the interface's name in its
//!   `/proc/<pid>/fdinfo/<fd>` (`iff:\t<name>`), whoever opened it (a VMM, or libvirt passing
//!   it on).
//! - A macvtap/ipvtap interface is a character device; its number is in sysfs
//!   (`/sys/class/net/<name>/{macvtap,ipvtap}/tap<ifindex>/dev`) and the holder is the process
//!   with a descriptor on a character device of that number, whatever its path.
//!
//! Command lines: qemu `-name <name>` or `-name guest=<name>,...` (`,,` is a literal comma)
//! and `-uuid <uuid>`; firecracker (and its jailer) `--id <id>`; cloud-hypervisor has no name
//! option, its `--platform uuid=<uuid>` gives the UUID; kvmtool `--name <name>`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::procs;

/// The VM a command line describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmIdentity {
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// The executable's file name (`qemu-system-x86_64`, `firecracker`, ...).
    pub vmm: String,
    /// The executable is a VMM flowlog knows.
    pub known_vmm: bool,
}

impl VmIdentity {
    /// Whether the process is a VM: a known VMM, or a command line that names a VM.
    pub fn is_vm(&self) -> bool {
        self.known_vmm || self.name.is_some() || self.uuid.is_some()
    }
}

/// Reads the VM name and UUID from a VMM's argv.
pub fn identify(argv: &[String]) -> VmIdentity {
    let vmm = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let known_vmm = vmm.starts_with("qemu")
        || [
            "kvm",
            "firecracker",
            "jailer",
            "cloud-hypervisor",
            "crosvm",
            "lkvm",
        ]
        .contains(&vmm.as_str());
    let args = &argv[argv.len().min(1)..];
    let name = option(args, &["-name", "--name"])
        .and_then(|v| qemu_name(&v))
        .or_else(|| option(args, &["--id"]));
    let uuid = option(args, &["-uuid", "--uuid"])
        .or_else(|| option(args, &["--platform"]).and_then(|p| key_value(&p, "uuid")));
    VmIdentity {
        name: name.filter(|n| !n.is_empty()),
        uuid: uuid.filter(|u| !u.is_empty()),
        vmm,
        known_vmm,
    }
}

/// The value of the first of `names` in `args`: `-opt value` or `-opt=value`.
fn option(args: &[String], names: &[&str]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        names.iter().find_map(|n| {
            if a == n {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(n)?.strip_prefix('=').map(str::to_string)
            }
        })
    })
}

/// qemu's `-name` value: `name`, `name,debug-threads=on` or `guest=name,process=...`; `,,` is
/// an escaped comma.
fn qemu_name(value: &str) -> Option<String> {
    let parts = split_qemu_opts(value);
    parts
        .iter()
        .find_map(|p| p.strip_prefix("guest=").map(str::to_string))
        .or_else(|| parts.first().filter(|p| !p.contains('=')).cloned())
}

/// `key=value` in a comma-separated option list (qemu's escaping).
fn key_value(list: &str, key: &str) -> Option<String> {
    split_qemu_opts(list)
        .into_iter()
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

fn split_qemu_opts(value: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().expect("never empty").push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

/// The processes holding tun/tap interface `ifname` through `/dev/net/tun`.
pub fn tun_holders(proc_root: &Path, ifname: &str) -> std::io::Result<Vec<u32>> {
    Ok(procs::pids(proc_root)?
        .into_iter()
        .filter(|&pid| {
            procs::open_fds(proc_root, pid).iter().any(|fd| {
                fd.target == Path::new("/dev/net/tun")
                    && fs::read_to_string(&fd.info)
                        .ok()
                        .is_some_and(|info| procs::tun_iff(&info) == Some(ifname))
            })
        })
        .collect())
}

/// The character device number of macvtap/ipvtap interface `ifname` (ifindex `ifindex`), from
/// sysfs under `host_root`.
pub fn tap_device_number(host_root: &Path, ifname: &str, ifindex: u32) -> Option<(u32, u32)> {
    let dir = host_root.join("sys/class/net").join(ifname);
    ["macvtap", "ipvtap"].iter().find_map(|kind| {
        let dev =
            fs::read_to_string(dir.join(kind).join(format!("tap{ifindex}")).join("dev")).ok()?;
        let (major, minor) = dev.trim().split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

/// The processes with a descriptor on character device `major:minor`.
pub fn char_device_holders(
    proc_root: &Path,
    (major, minor): (u32, u32),
) -> std::io::Result<Vec<u32>> {
    let wanted = libc::makedev(major, minor);
    Ok(procs::pids(proc_root)?
        .into_iter()
        .filter(|&pid| {
            procs::open_fds(proc_root, pid).iter().any(|fd| {
                // Only paths can be devices (not sockets, pipes or anon inodes).
                fd.target.is_absolute()
                    && fs::metadata(&fd.path)
                        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == wanted)
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn qemu_as_libvirt_starts_it() {
        let id = identify(&argv(
            "/usr/bin/qemu-system-x86_64 -name guest=web-1,debug-threads=on -S \
             -uuid 6c1f3b2a-0d4e-4f5a-9b8c-7d6e5f4a3b2c -machine pc-q35-7.2,usb=off \
             -netdev tap,fd=33,vhost=on,id=hostnet0",
        ));
        assert_eq!(
            id,
            VmIdentity {
                name: Some("web-1".into()),
                uuid: Some("6c1f3b2a-0d4e-4f5a-9b8c-7d6e5f4a3b2c".into()),
                vmm: "qemu-system-x86_64".into(),
                known_vmm: true,
            }
        );
        assert!(id.is_vm());
    }

    #[test]
    fn qemu_plain_name_with_escaped_comma_and_options() {
        assert_eq!(
            identify(&argv(
                "qemu-system-aarch64 -name db,,primary,process=qemu-db"
            ))
            .name,
            Some("db,primary".into())
        );
        assert_eq!(
            identify(&argv("qemu-kvm --name=build -m 512")).name,
            Some("build".into())
        );
        // `-name process=x` alone names no guest.
        assert_eq!(
            identify(&argv("qemu-system-x86_64 -name process=x")).name,
            None
        );
    }

    #[test]
    fn firecracker_id_and_jailer() {
        let fc = identify(&argv(
            "/usr/bin/firecracker --id fc-42 --api-sock /run/fc.sock",
        ));
        assert_eq!((fc.name.as_deref(), fc.known_vmm), (Some("fc-42"), true));
        let jailer = identify(&argv(
            "jailer --id fc-43 --exec-file /usr/bin/firecracker --uid 123 --gid 100",
        ));
        assert_eq!(jailer.name.as_deref(), Some("fc-43"));
        assert_eq!(
            identify(&argv("firecracker --id=fc-44")).name.as_deref(),
            Some("fc-44")
        );
    }

    #[test]
    fn cloud_hypervisor_uuid_from_platform() {
        let ch = identify(&argv(
            "cloud-hypervisor --api-socket path=/run/ch.sock --kernel vmlinux \
             --platform serial_number=abc,uuid=1b4e28ba-2fa1-11d2-883f-0016d3cca427 \
             --net tap=vmtap0,mac=12:34:56:78:90:ab",
        ));
        assert_eq!(ch.name, None);
        assert_eq!(
            ch.uuid.as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
        assert!(ch.is_vm());
    }

    #[test]
    fn other_programs_are_not_vms() {
        let vpn = identify(&argv("/usr/sbin/openvpn --config /etc/openvpn/client.conf"));
        assert!(!vpn.is_vm());
        assert_eq!(vpn.vmm, "openvpn");
        assert!(!identify(&[]).is_vm());
        // An unknown program that names a VM the qemu way counts as a VMM.
        assert!(identify(&argv("/opt/vmm/bin/myvmm -name guest=test-vm")).is_vm());
    }
}
