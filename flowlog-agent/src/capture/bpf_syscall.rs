//! The one raw `bpf(2)` call, for the commands aya 0.14 does not offer: batch map operations
//! (`map_batch`), a test run through a kept program descriptor (`calibrate`) and a program's
//! run counters (`prog_info`).

use std::{io, mem::size_of};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// Runs `cmd` with `attr`; the kernel's error as `io::Error`.
///
/// # Safety
/// Every pointer in `attr` must point at memory valid for what `cmd` reads or writes there,
/// for the lengths `attr` gives, until this returns.
pub unsafe fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<()> {
    // SAFETY: the caller vouches for the pointers in `attr`; the size passed is its own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
