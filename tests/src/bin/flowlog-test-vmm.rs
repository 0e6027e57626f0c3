//! A "VMM-like" process for the tests: holds a tap device the way a VMM does and writes the
//! Ethernet frames it is given into it (what a guest sends).
//!
//! ```text
//! flowlog-test-vmm --tap NAME | --char-dev PATH  [anything a VMM has on its command line]
//! ```
//!
//! `--tap NAME` creates (or attaches to) tap `NAME` through `/dev/net/tun` (IFF_TAP |
//! IFF_NO_PI); `--char-dev PATH` opens a macvtap/ipvtap character device. The other arguments
//! are ignored: they are there to be read from `/proc/<pid>/cmdline` (`-name guest=test-vm`,
//! `-uuid ...`). Prints `ready` once the device is open, then writes each stdin line of hex
//! digits as one frame; exits at end of input.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, Write},
    os::fd::AsRawFd,
};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mut device = match (value("--tap"), value("--char-dev")) {
        (Some(tap), _) => open_tap(&tap),
        (None, Some(path)) => OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| die(&format!("cannot open {path}: {e}"))),
        (None, None) => die("usage: flowlog-test-vmm --tap NAME | --char-dev PATH [args...]"),
    };
    println!("ready");
    std::io::stdout().flush().ok();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|e| die(&format!("reading stdin: {e}")));
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let frame = hex(line).unwrap_or_else(|| die(&format!("not hex: {line:?}")));
        device
            .write_all(&frame)
            .unwrap_or_else(|e| die(&format!("writing a frame: {e}")));
    }
}

fn open_tap(name: &str) -> File {
    if name.len() >= libc::IFNAMSIZ {
        die(&format!("tap name {name:?} is longer than 15 bytes"));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| die(&format!("cannot open /dev/net/tun: {e}")));
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq lays out (name, then
    // the flags union member, padded to the union's 24 bytes).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
    if rc != 0 {
        die(&format!(
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    file
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn die(msg: &str) -> ! {
    eprintln!("flowlog-test-vmm: {msg}");
    std::process::exit(1);
}
