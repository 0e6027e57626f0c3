//! Readings of the jiffies the datapath stamps with, against CLOCK_MONOTONIC: the program
//! `flowlog_clock` reads both at one moment when the agent runs it with `BPF_PROG_TEST_RUN`,
//! at load and at every cut. The first reading of the maps' life stays in the pinned `CLOCK`
//! array, so an agent that adopts the maps converts the stamps the agent before it left with
//! the same line ([`JiffiesClock`]). Jiffies and CLOCK_MONOTONIC count from boot for the whole
//! system, and pinned maps do not outlive a boot, so any agent's readings fit any stamp.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::{Context, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{ProgramFd, SchedClassifier},
};
use aya_obj::generated::{bpf_attr, bpf_cmd};
use flowlog_common::{CLOCK_FIRST, CLOCK_LATEST, CLOCK_MAP, ClockSample, PROG_CLOCK};

use crate::capture::{bpf_syscall::bpf, clock::JiffiesClock};

/// Readings whose jiffies changed while CLOCK_MONOTONIC was read are taken again, this many
/// times at most (a tick lasts milliseconds, a reading well under one).
const ATTEMPTS: usize = 8;

/// The smallest frame a TC program's test run accepts (an Ethernet header); never parsed.
const FRAME: [u8; 14] = [0; 14];

/// Takes readings and builds the clock that converts a cut's stamps.
pub struct Calibrator {
    program: ProgramFd,
    samples: Array<MapData, ClockSample>,
    first: ClockSample,
}

impl Calibrator {
    /// Loads `flowlog_clock` and takes the `CLOCK` array out of `ebpf`. `fresh`: the maps are
    /// new (no stamp in them yet), so this reading becomes the first; else the first reading
    /// is the one in the (adopted) array, or this one if the array has none.
    pub fn new(ebpf: &mut Ebpf, fresh: bool) -> anyhow::Result<Self> {
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROG_CLOCK)
            .with_context(|| format!("program {PROG_CLOCK} missing from the eBPF object"))?
            .try_into()
            .with_context(|| format!("program {PROG_CLOCK} is not a TC classifier"))?;
        program
            .load()
            .with_context(|| format!("the kernel rejected program {PROG_CLOCK}"))?;
        let program = program
            .fd()
            .with_context(|| format!("program {PROG_CLOCK} has no descriptor"))?
            .try_clone()
            .with_context(|| format!("cannot hold program {PROG_CLOCK}"))?;
        let map = ebpf
            .take_map(CLOCK_MAP)
            .with_context(|| format!("map {CLOCK_MAP} missing from the eBPF object"))?;
        let samples: Array<MapData, ClockSample> =
            Array::try_from(map).with_context(|| format!("map {CLOCK_MAP} has another type"))?;
        let mut c = Calibrator {
            program,
            samples,
            first: ClockSample::default(),
        };
        let kept = if fresh {
            ClockSample::default()
        } else {
            c.samples
                .get(&CLOCK_FIRST, 0)
                .with_context(|| format!("cannot read the {CLOCK_MAP} map"))?
        };
        c.first = if kept.jiffies == 0 {
            let now = c.read()?;
            c.samples
                .set(CLOCK_FIRST, now, 0)
                .with_context(|| format!("cannot write the {CLOCK_MAP} map"))?;
            now
        } else {
            kept
        };
        Ok(c)
    }

    /// The clock for the stamps the maps hold now: a new reading with the first one, and
    /// CLOCK_REALTIME's offset now.
    pub fn clock(&self) -> anyhow::Result<JiffiesClock> {
        let latest = self.read()?;
        Ok(JiffiesClock::new(
            (self.first.jiffies, self.first.mono_ns),
            (latest.jiffies, latest.mono_ns),
            JiffiesClock::monotonic_offset_ns(),
        ))
    }

    /// One reading taken within one jiffy.
    fn read(&self) -> anyhow::Result<ClockSample> {
        for _ in 0..ATTEMPTS {
            test_run(&self.program).with_context(|| format!("cannot run {PROG_CLOCK}"))?;
            let s = self
                .samples
                .get(&CLOCK_LATEST, 0)
                .with_context(|| format!("cannot read the {CLOCK_MAP} map"))?;
            if s.jiffies != 0 && s.jiffies == s.jiffies_after {
                return Ok(s);
            }
        }
        bail!("{PROG_CLOCK}: the jiffies changed during each of {ATTEMPTS} readings")
    }
}

/// One `BPF_PROG_TEST_RUN` of `program` over [`FRAME`]. (aya runs a test only through the
/// program object, which stays in the `Ebpf`; the collector keeps a descriptor.)
fn test_run(program: &ProgramFd) -> io::Result<()> {
    // SAFETY: an all-zero bpf_attr is the documented way to start a command.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the `test` member of a zeroed union.
    unsafe {
        let t = &mut attr.test;
        t.prog_fd = program.as_fd().as_raw_fd() as u32;
        t.data_in = FRAME.as_ptr() as u64;
        t.data_size_in = FRAME.len() as u32;
        t.repeat = 1;
    }
    // SAFETY: `attr` points at FRAME, which the kernel only reads, for `data_size_in` bytes.
    unsafe { bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr) }
}
