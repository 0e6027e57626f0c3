//! The Debian package (`cargo xtask deb`), installed with dpkg into a fresh directory root:
//! the files where Debian wants them, the conffiles, the service user its postinst creates,
//! the installed binary's `--version` and `--help`, the unit verified by `systemd-analyze
//! verify` against that root, then removal and purge. Root only (dpkg --root runs the
//! maintainer scripts chrooted into the root).
//!
//! The fresh root holds only what the maintainer scripts run: a shell and systemd-sysusers
//! (the package depends on it), copied from this host with their libraries, and /dev/null.
//! The root has no package records for libc6 and systemd-sysusers (the package's
//! dependencies), so dpkg is told `--force-depends`; it must name those two and nothing else.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use flowlog_tests::{
    agent::{flowlog_bin, require_root},
    deploy::{copy_with_libraries, debian_arch, read_deploy_file, run_ok, run_xtask},
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the package must install (besides directories), with their modes.
const FILES: &[(&str, u32)] = &[
    ("usr/bin/flowlog", 0o755),
    ("usr/lib/systemd/system/flowlog.service", 0o644),
    ("usr/lib/sysusers.d/flowlog.conf", 0o644),
    ("etc/flowlog/flow-logs.json", 0o644),
    ("etc/default/flowlog", 0o644),
    ("usr/share/man/man1/flowlog.1.gz", 0o644),
    ("usr/share/man/man1/flowlog-run.1.gz", 0o644),
    ("usr/share/man/man1/flowlog-create-flow-logs.1.gz", 0o644),
    ("usr/share/man/man1/flowlog-describe-flow-logs.1.gz", 0o644),
    ("usr/share/man/man1/flowlog-delete-flow-logs.1.gz", 0o644),
    ("usr/share/man/man1/flowlog-athena-ddl.1.gz", 0o644),
    ("usr/share/man/man1/flowlog-top.1.gz", 0o644),
    ("usr/share/man/man1/flowlog-status.1.gz", 0o644),
    ("usr/share/man/man1/flowlog-cleanup.1.gz", 0o644),
    ("usr/share/bash-completion/completions/flowlog", 0o644),
    ("usr/share/zsh/vendor-completions/_flowlog", 0o644),
    ("usr/share/fish/vendor_completions.d/flowlog.fish", 0o644),
    ("usr/share/doc/flowlog/copyright", 0o644),
];

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()));
    cmd
}

/// An empty dpkg database, /dev/null, /bin/sh and systemd-sysusers under `root`.
fn fresh_root(root: &Path) {
    let db = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        fs::create_dir_all(db.join(d)).expect("dpkg database directories");
    }
    fs::write(db.join("status"), "").expect("status");
    fs::write(db.join("available"), "").expect("available");
    fs::create_dir_all(root.join("dev")).expect("dev");
    run_ok(
        Command::new("mknod")
            .arg(root.join("dev/null"))
            .args(["c", "1", "3"]),
    );
    fs::set_permissions(root.join("dev/null"), fs::Permissions::from_mode(0o666)).expect("chmod");
    copy_with_libraries(Path::new("/usr/bin/systemd-sysusers"), root);
    copy_with_libraries(Path::new("/bin/dash"), root);
    fs::create_dir_all(root.join("bin")).expect("bin");
    fs::rename(root.join("bin/dash"), root.join("bin/sh")).expect("sh");
}

fn gunzip(path: &Path) -> String {
    let raw = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut s = String::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_string(&mut s)
        .unwrap_or_else(|e| panic!("{} is not gzip text: {e}", path.display()));
    s
}

#[test]
fn package_installs_into_a_fresh_root_and_its_unit_verifies() {
    let _serial = crate::serial();
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("fldeb-")
        .tempdir()
        .expect("tempdir");
    let bin = flowlog_bin();
    let deb = PathBuf::from(run_xtask(&[
        "deb",
        "--binary",
        bin.to_str().expect("utf-8 path"),
        "--out",
        dir.path().join("out").to_str().expect("utf-8 path"),
        "--fast",
    ]));
    assert_eq!(
        deb.file_name().and_then(|n| n.to_str()),
        Some(format!("flowlog_{VERSION}_{}.deb", debian_arch()).as_str())
    );

    // The control fields.
    let field = |name: &str| {
        let out = run_ok(
            Command::new("dpkg-deb")
                .args(["--field"])
                .arg(&deb)
                .arg(name),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "flowlog");
    assert_eq!(field("Version"), VERSION);
    let depends = field("Depends");
    assert!(
        depends.contains("libc6") && depends.contains("systemd-sysusers"),
        "Depends: {depends}"
    );

    // Install.
    let root = dir.path().join("root");
    fresh_root(&root);
    let out = dpkg(&root)
        .args(["--force-depends", "--install"])
        .arg(&deb)
        .output()
        .expect("run dpkg");
    let said = text(&out);
    assert!(out.status.success(), "dpkg --install failed:\n{said}");
    assert!(said.contains("Setting up flowlog"), "{said}");
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("depends on") || l.contains("is not installed"))
        .collect();
    assert!(
        !complaints.is_empty()
            && complaints
                .iter()
                .all(|l| l.contains("libc6") || l.contains("systemd-sysusers")),
        "only the dependencies the fresh root has no package record of may be missing:\n{said}"
    );
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).expect("status");
    assert!(
        status.contains("Package: flowlog\nStatus: install ok installed\n"),
        "{status}"
    );

    // The files, their modes, and the ones that are ours verbatim.
    for (path, mode) in FILES {
        let p = root.join(path);
        let meta = fs::metadata(&p).unwrap_or_else(|e| panic!("{path} not installed: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "mode of {path}");
    }
    for (installed, ours) in [
        (
            "usr/lib/systemd/system/flowlog.service",
            "systemd/flowlog.service",
        ),
        (
            "usr/lib/sysusers.d/flowlog.conf",
            "systemd/flowlog.sysusers",
        ),
        ("etc/flowlog/flow-logs.json", "systemd/flow-logs.json"),
        ("etc/default/flowlog", "systemd/flowlog.default"),
    ] {
        assert_eq!(
            fs::read_to_string(root.join(installed)).expect("installed file"),
            read_deploy_file(ours),
            "{installed} is deploy/{ours}"
        );
    }
    let conffiles =
        fs::read_to_string(root.join("var/lib/dpkg/info/flowlog.conffiles")).expect("conffiles");
    let mut conffiles: Vec<&str> = conffiles.lines().collect();
    conffiles.sort();
    assert_eq!(
        conffiles,
        ["/etc/default/flowlog", "/etc/flowlog/flow-logs.json"]
    );
    let run_page = gunzip(&root.join("usr/share/man/man1/flowlog-run.1.gz"));
    assert!(run_page.contains(".TH flowlog-run 1"), "{run_page}");
    assert!(run_page.contains("aggregation\\-interval"), "{run_page}");
    let bash = fs::read_to_string(root.join("usr/share/bash-completion/completions/flowlog"))
        .expect("bash completion");
    assert!(bash.contains("complete -F _flowlog"), "{bash}");

    // The postinst created the service user, chrooted into the root.
    let passwd = fs::read_to_string(root.join("etc/passwd")).expect("etc/passwd in the root");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("flowlog:"))
        .unwrap_or_else(|| panic!("no flowlog user:\n{passwd}"));
    assert!(
        user.ends_with(":/var/lib/flowlog:/usr/sbin/nologin"),
        "{user}"
    );

    // The installed binary runs.
    let installed = root.join("usr/bin/flowlog");
    let version = run_ok(Command::new(&installed).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("flowlog {VERSION}")
    );
    let help = run_ok(Command::new(&installed).arg("--help"));
    let help = String::from_utf8_lossy(&help.stdout);
    for word in [
        "run",
        "create-flow-logs",
        "describe-flow-logs",
        "delete-flow-logs",
        "status",
        "cleanup",
    ] {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(word)),
            "{word} not in --help:\n{help}"
        );
    }

    verify_unit(&root);

    // Remove keeps the conffiles; purge removes them too.
    let out = dpkg(&root)
        .args(["--remove", "flowlog"])
        .output()
        .expect("dpkg");
    assert!(out.status.success(), "dpkg --remove:\n{}", text(&out));
    assert!(
        !root.join("usr/bin/flowlog").exists(),
        "binary left after remove"
    );
    assert!(
        root.join("etc/flowlog/flow-logs.json").exists(),
        "conffile removed by remove"
    );
    let out = dpkg(&root)
        .args(["--purge", "flowlog"])
        .output()
        .expect("dpkg");
    assert!(out.status.success(), "dpkg --purge:\n{}", text(&out));
    for conffile in ["etc/flowlog/flow-logs.json", "etc/default/flowlog"] {
        assert!(!root.join(conffile).exists(), "{conffile} left after purge");
    }
}

/// `systemd-analyze verify` of the installed unit against the root: with the host's systemd
/// targets and the two programs the unit calls besides flowlog (install, kill) in it, as on any
/// systemd host, and MANPATH on the root's pages so the unit's Documentation= is checked
/// against the installed manual pages. Warnings count as failures (verify exits 0 on an
/// unknown or misspelled setting).
fn verify_unit(root: &Path) {
    let units = root.join("usr/lib/systemd/system");
    for entry in fs::read_dir("/lib/systemd/system").expect("the host's units") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "target") {
            let name = path.file_name().expect("name");
            fs::copy(&path, units.join(name)).expect("copy a target");
        }
    }
    for (program, inside) in [
        ("/usr/bin/install", "usr/bin/install"),
        ("/bin/kill", "bin/kill"),
    ] {
        let to = root.join(inside);
        fs::create_dir_all(to.parent().expect("parent")).expect("dirs");
        fs::copy(program, &to).expect("copy program");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/usr/lib/systemd/system/flowlog.service")
        .env("MANPATH", root.join("usr/share/man"))
        .output()
        .expect("systemd-analyze (Debian's systemd package; `cargo xtask setup` installs it)");
    let said = text(&out);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        out.status
    );
}
