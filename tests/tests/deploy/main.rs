//! How flowlog is deployed and supervised, one test binary (they share nothing but the link
//! time): the systemd unit ([`systemd`]), the Debian package ([`deb`]), the container image
//! run as the DaemonSet says ([`image`]), and what supervisors and log shippers see of a
//! running agent ([`supervision`]). Root only.
//!
//! Run one part with e.g. `cargo xtask test -- -p flowlog-tests --test deploy image::`.

mod deb;
mod image;
mod supervision;
mod systemd;

/// One test of this binary at a time: the package and image builds (stripping a debug
/// binary, compressing, podman) would otherwise share the machine's two cores with the agents
/// the other tests start and wait for.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
