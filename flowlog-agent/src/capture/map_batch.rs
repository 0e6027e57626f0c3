//! `BPF_MAP_LOOKUP_BATCH` (a cut's read, `flowlog top`'s peek), `BPF_MAP_DELETE_BATCH`
//! (clearing a recorded slot by the keys its read returned) and
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (clearing a slot whose keys are not known) for per-CPU
//! hash maps.
//!
//! aya 0.14 has no batch map operations; its iterator costs three syscalls per flow
//! (get-next-key, lookup, delete), which is ~3 million syscalls for a 1M-flow window. One batch
//! call moves thousands of entries, so the drain of a full window is a few hundred syscalls.
//! The command exists since Linux 5.6; callers fall back to the iterator when it is refused.

use std::{
    borrow::Borrow,
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData, PerCpuHashMap},
};
use aya_obj::generated::{bpf_attr, bpf_cmd};

use crate::capture::bpf_syscall::bpf;

/// Entries moved per syscall at first; grown when a hash bucket holds more (ENOSPC).
const INITIAL_BATCH: usize = 4096;

/// Reads and deletes every entry of an idle per-CPU hash map, calling `each(key, per_cpu)`
/// with the values of all possible CPUs. `Err` with `ErrorKind::Unsupported` means the kernel
/// refused the batch command before anything was deleted.
pub fn lookup_and_delete_all<T: Borrow<MapData>, K: Pod, V: Pod>(
    map: &PerCpuHashMap<T, K, V>,
    nr_cpus: usize,
    each: impl FnMut(K, &[V]),
) -> io::Result<usize> {
    batch_all(bpf_cmd::BPF_MAP_LOOKUP_AND_DELETE_BATCH, map, nr_cpus, each)
}

/// Reads every entry of a per-CPU hash map without changing it, as
/// [`lookup_and_delete_all`] does (same `Unsupported` fallback contract). On a map the
/// datapath writes to, an entry added during the walk may or may not be read.
pub fn lookup_all<T: Borrow<MapData>, K: Pod, V: Pod>(
    map: &PerCpuHashMap<T, K, V>,
    nr_cpus: usize,
    each: impl FnMut(K, &[V]),
) -> io::Result<usize> {
    batch_all(bpf_cmd::BPF_MAP_LOOKUP_BATCH, map, nr_cpus, each)
}

/// Deletes `keys` from a hash map, thousands per syscall (`BPF_MAP_DELETE_BATCH`): unlike
/// [`lookup_and_delete_all`], no value is copied out (a per-CPU entry's value is one copy per
/// possible CPU). A key already gone is skipped. Returns how many were deleted; `Err` with
/// `ErrorKind::Unsupported` means the kernel refused the command before deleting anything.
pub fn delete_keys<T: Borrow<MapData>, K: Pod, V: Pod>(
    map: &PerCpuHashMap<T, K, V>,
    keys: &[K],
) -> io::Result<usize> {
    let fd = map.map().fd().as_fd().as_raw_fd() as u32;
    let mut deleted = 0;
    let mut rest = keys;
    let mut first = true;
    while !rest.is_empty() {
        // SAFETY: an all-zero bpf_attr is the documented way to start a command.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the `batch` member of a zeroed union.
        unsafe {
            let b = &mut attr.batch;
            b.keys = rest.as_ptr() as u64;
            b.count = rest.len().min(u32::MAX as usize) as u32;
            b.map_fd = fd;
        }
        // SAFETY: `attr` points at `count` keys of the map's key size; the kernel only reads
        // them.
        let err = unsafe { bpf(bpf_cmd::BPF_MAP_DELETE_BATCH, &mut attr) }.err();
        // SAFETY: reading back the count the kernel filled in (keys deleted before any error).
        let n = (unsafe { attr.batch.count } as usize).min(rest.len());
        deleted += n;
        rest = &rest[n..];
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None => {}
            // The key at `n` was not in the map: skip it.
            Some(libc::ENOENT) => rest = &rest[1.min(rest.len())..],
            Some(e) if first && n == 0 && refused_batch(e) => return Err(unsupported()),
            Some(_) => return Err(err.unwrap_or_else(io::Error::last_os_error)),
        }
        first = false;
    }
    Ok(deleted)
}

/// Whether a map has no entry (one `BPF_MAP_GET_NEXT_KEY` from no key).
pub fn is_empty<K: Pod, V: Pod>(map: &PerCpuHashMap<MapData, K, V>) -> io::Result<bool> {
    match map.keys().next() {
        None => Ok(true),
        Some(Ok(_)) => Ok(false),
        Some(Err(e)) => Err(io::Error::other(e)),
    }
}

fn batch_all<T: Borrow<MapData>, K: Pod, V: Pod>(
    cmd: bpf_cmd,
    map: &PerCpuHashMap<T, K, V>,
    nr_cpus: usize,
    mut each: impl FnMut(K, &[V]),
) -> io::Result<usize> {
    // The kernel lays per-CPU values out at 8-byte strides.
    let stride = size_of::<V>().next_multiple_of(8);
    assert_eq!(
        stride,
        size_of::<V>(),
        "per-CPU map values must be a multiple of 8 bytes"
    );
    let fd = map.map().fd().as_fd().as_raw_fd() as u32;
    let mut batch = INITIAL_BATCH;
    let mut keys: Vec<K> = Vec::new();
    let mut values: Vec<V> = Vec::new();
    // Opaque position tokens: u32 bucket indexes for hash maps (8 bytes of room to be safe).
    let mut in_token = 0u64;
    let mut out_token = 0u64;
    let mut first = true;
    let mut total = 0;
    loop {
        // SAFETY: `K`/`V` are Pod; zeroed buffers are valid values the kernel overwrites.
        keys.resize(batch, unsafe { std::mem::zeroed() });
        values.resize(batch * nr_cpus, unsafe { std::mem::zeroed() });
        // SAFETY: an all-zero bpf_attr is the documented way to start a command.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the `batch` member of a zeroed union.
        unsafe {
            let b = &mut attr.batch;
            b.in_batch = if first {
                0
            } else {
                &in_token as *const u64 as u64
            };
            b.out_batch = &mut out_token as *mut u64 as u64;
            b.keys = keys.as_mut_ptr() as u64;
            b.values = values.as_mut_ptr() as u64;
            b.count = batch as u32;
            b.map_fd = fd;
        }
        // SAFETY: `attr` points at buffers sized for `count` keys and `count * nr_cpus` values.
        let err = unsafe { bpf(cmd, &mut attr) }.err();
        // SAFETY: reading back the count the kernel filled in.
        let n = unsafe { attr.batch.count } as usize;
        for i in 0..n.min(batch) {
            each(keys[i], &values[i * nr_cpus..(i + 1) * nr_cpus]);
        }
        total += n;
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None => {}
            Some(libc::ENOENT) => return Ok(total),
            // A bucket with more entries than `batch`: retry from the same position, bigger.
            Some(libc::ENOSPC) if n == 0 => {
                batch *= 2;
                continue;
            }
            Some(e) if first && n == 0 && refused_batch(e) => return Err(unsupported()),
            Some(_) => return Err(err.unwrap_or_else(io::Error::last_os_error)),
        }
        first = false;
        in_token = out_token;
    }
}

/// Reads every entry of an idle per-CPU map and sums each over CPUs: in batches of thousands
/// per syscall where the kernel supports it (>= 5.6), else through aya's iterator.
pub fn read_all<K: aya::Pod + Copy, V: aya::Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    cpus: usize,
    sum: impl Fn(&[V]) -> T,
) -> anyhow::Result<Vec<(K, T)>> {
    let mut out = Vec::new();
    match lookup_all(map, cpus, |k, v| out.push((k, sum(v)))) {
        Ok(_) => return Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => return Err(anyhow::Error::from(e).context("BPF_MAP_LOOKUP_BATCH failed")),
    }
    for entry in map.iter() {
        let (key, values) = entry?;
        out.push((key, sum(&values)));
    }
    Ok(out)
}

/// Whether errno `e` from the first batch call, before anything moved, means the kernel does
/// not know the batch command (524 is the kernel-internal ENOTSUPP that bpf(2) can leak).
fn refused_batch(e: i32) -> bool {
    matches!(e, libc::EINVAL | 524 | libc::EOPNOTSUPP)
}

/// The error callers take as "fall back to the iterator".
fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "batch map operations")
}
