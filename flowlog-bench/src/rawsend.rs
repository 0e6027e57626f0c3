//! Crafted Ethernet frames out of one interface through an AF_PACKET socket: they leave
//! through the interface's TC egress hook (and every packet tap on it) like any other
//! traffic, with headers the benchmark chose.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context, bail};

pub struct RawSender {
    sock: OwnedFd,
    addr: libc::sockaddr_ll,
    ifname: String,
}

impl RawSender {
    /// A sender on `ifname` of the calling thread's network namespace.
    pub fn open(ifname: &str) -> anyhow::Result<Self> {
        let c_name = std::ffi::CString::new(ifname).context("interface name with a NUL")?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}");
        }
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is closed only by this OwnedFd.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(RawSender {
            sock,
            addr,
            ifname: ifname.to_owned(),
        })
    }

    /// Sends one whole frame (Ethernet header included).
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        // SAFETY: sendto with a buffer and address that outlive the call.
        let n = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const self.addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            bail!(
                "sending through {}: {}",
                self.ifname,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }
}
