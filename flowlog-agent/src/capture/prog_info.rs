//! What the kernel counts about a loaded program, from `BPF_OBJ_GET_INFO_BY_FD`.
//!
//! aya 0.14's `ProgramInfo` keeps `bpf_prog_info` private and has no accessor for
//! `recursion_misses`: the runs the kernel skipped because the program was already running on
//! that CPU. A tracing program (our `kfree_skb` one) is skipped that way when an interrupt's
//! softirq drops a packet while the program handles a drop in process context on the same CPU.
//! Such a drop is not attributed: it stays in ACCEPT, and only this counter shows it.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

use crate::capture::bpf_syscall::bpf;

/// Runs of the program behind `fd` that the kernel skipped as recursive (since it was loaded).
pub fn recursion_misses(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: all-zero is a valid bpf_prog_info (plain integers and pointers the kernel only
    // fills in when their length fields ask for it).
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: an all-zero bpf_attr is the documented way to start a command.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_prog_info>() as u32;
    attr.info.info = (&raw mut info) as u64;
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most `info_len` bytes into `info`, which lives
    // until after the call; the kernel accepts a longer struct whose tail it does not know
    // when that tail is zero.
    unsafe { bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info.recursion_misses)
}
