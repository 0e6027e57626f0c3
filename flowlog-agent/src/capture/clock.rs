//! Time: window arithmetic on wall-clock seconds, and conversion of the datapath's stamps (the
//! kernel's jiffies, in the TC and the drop programs) to Unix seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{ClockId, clock_gettime};

/// Unix seconds now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The first window boundary strictly after `now` (Unix seconds): the next multiple of
/// `interval`.
pub fn next_boundary(now: f64, interval: u64) -> u64 {
    let interval = interval.max(1);
    (now.max(0.0) as u64 / interval + 1) * interval
}

/// The 5-minute (or other) slot that Unix second `t` falls in: its start.
pub fn slot_start(t: u64, slot_seconds: u64) -> u64 {
    t - t % slot_seconds.max(1)
}

/// When the first object of an agent started at `now` is finished (Unix seconds): its first
/// window ends at the next multiple of `interval`, its records fall in the `rollover`-second
/// slot holding that end, and the slot's object is finished at the first window end at or
/// after the slot's end.
pub fn first_object_at(now: f64, interval: u64, rollover: u64) -> u64 {
    let interval = interval.max(1);
    let slot_end = slot_start(next_boundary(now, interval), rollover) + rollover.max(1);
    slot_end.div_ceil(interval) * interval
}

/// Converts the datapath's stamps (`bpf_jiffies64()`, in every flow and REJECT map) to Unix
/// seconds. Built per cut ([`Calibrator`](super::calibrate::Calibrator)) from two readings of
/// jiffies and CLOCK_MONOTONIC taken together, the first of the maps' life and the latest, and
/// the offset of CLOCK_REALTIME from CLOCK_MONOTONIC at the cut.
///
/// Exact to a tick: the kernel derives jiffies from CLOCK_MONOTONIC (each jiffy starts exactly
/// one tick, 1/CONFIG_HZ s, after the one before), so the two never drift apart and a straight
/// line through two readings is the relation. A reading's CLOCK_MONOTONIC lies in its jiffy's
/// tick, so the line puts every jiffy between the two readings inside its own tick, and a
/// packet stamped with it was counted in that tick too: a converted stamp is less than one
/// tick (1-10 ms) from the packet's time, either way. Every stamp a cut reads lies between the
/// two readings: the first is taken before the programs can count, the latest after the flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JiffiesClock {
    /// (jiffies, CLOCK_MONOTONIC ns) of the first reading and of the latest.
    first: (u64, u64),
    latest: (u64, u64),
    /// Unix ns minus CLOCK_MONOTONIC ns at the moment of the cut (i64 holds Unix ns until 2262;
    /// the fields stay small: every cut and flow log window carries a clock).
    offset_ns: i64,
}

impl JiffiesClock {
    /// From two (jiffies, CLOCK_MONOTONIC ns) readings, the first no later than `latest`.
    pub fn new(first: (u64, u64), latest: (u64, u64), offset_ns: i64) -> Self {
        JiffiesClock {
            first,
            latest,
            offset_ns,
        }
    }

    /// Unix ns minus CLOCK_MONOTONIC ns now.
    pub fn monotonic_offset_ns() -> i64 {
        let ns = |c| clock_gettime(c).map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec());
        let mono = ns(ClockId::CLOCK_MONOTONIC).unwrap_or(0);
        let real = ns(ClockId::CLOCK_REALTIME).unwrap_or(0);
        real - mono
    }

    /// For tests: one jiffy per ns, jiffy 0 at Unix ns `offset_ns` (so a stamp of `s`
    /// converts as `offset_ns + s` ns).
    pub fn one_ns_per_jiffy(offset_ns: i64) -> Self {
        JiffiesClock::new((0, 0), (1, 1), offset_ns)
    }

    /// CLOCK_MONOTONIC ns (rounded down) of a stamp: on the line through the two readings.
    /// With both readings in one jiffy, every stamp the maps hold was taken in that jiffy.
    pub fn monotonic_ns(&self, jiffies: u64) -> i128 {
        let wide = |(j, t): (u64, u64)| (i128::from(j), i128::from(t));
        let (j0, t0) = wide(self.first);
        let (j1, t1) = wide(self.latest);
        let dj = j1 - j0;
        if dj == 0 {
            return t1;
        }
        t0 + ((i128::from(jiffies) - j0) * (t1 - t0)).div_euclid(dj)
    }

    /// Unix seconds (floored) of a stamp.
    pub fn unix_secs(&self, jiffies: u64) -> u64 {
        let unix = self.monotonic_ns(jiffies) + i128::from(self.offset_ns);
        (unix.max(0) / 1_000_000_000) as u64
    }
}

/// How long to sleep until Unix second `t`.
pub fn until(t: u64) -> Duration {
    let now = unix_now();
    Duration::from_secs_f64((t as f64 - now).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_object_waits_for_the_window_end_after_its_slot() {
        // Window 60 s, objects 300 s: started 10:01:30 (36_090), the first window ends at
        // 36_120, slot 36_000..36_300, finished at the window end 36_300.
        assert_eq!(first_object_at(36_090.5, 60, 300), 36_300);
        // Window 7 s, objects 60 s: the first window ends at 105, slot 60..120, and the
        // first window end at or after 120 is 126.
        assert_eq!(first_object_at(100.0, 7, 60), 126);
        // Started just before a slot ends: the first window ends at 120, in slot 120..180.
        assert_eq!(first_object_at(119.0, 10, 60), 180);
    }

    #[test]
    fn boundaries_are_wall_clock_multiples() {
        assert_eq!(next_boundary(1_000.0, 60), 1_020);
        assert_eq!(
            next_boundary(1_020.0, 60),
            1_080,
            "a boundary exactly now is the past"
        );
        assert_eq!(next_boundary(1_019.999, 60), 1_020);
        assert_eq!(next_boundary(7.5, 1), 8);
        assert_eq!(next_boundary(1_431_280_876.0, 600), 1_431_281_400);
    }

    #[test]
    fn slots_round_down_to_five_minutes() {
        // 2018-06-20T16:24:59Z is in the 16:20 slot, 16:25:00 starts the next one.
        assert_eq!(slot_start(1_529_511_899, 300), 1_529_511_600);
        assert_eq!(slot_start(1_529_511_900, 300), 1_529_511_900);
    }

    #[test]
    fn one_ns_per_jiffy_converts_stamps_as_ns() {
        let c = JiffiesClock::one_ns_per_jiffy(1_600_000_000_000_000_000);
        assert_eq!(c.unix_secs(0), 1_600_000_000);
        assert_eq!(c.unix_secs(1_999_999_999), 1_600_000_001);
    }

    #[test]
    fn jiffies_convert_on_the_line_through_two_readings() {
        // HZ = 250 (4 ms ticks): jiffy 4_294_892_296 read at 5.001 s, 15_000 jiffies (60 s)
        // later read at 65.003 s: 60.002 s / 15_000 = 4_000_133 ns per jiffy on this line.
        let j0 = 4_294_892_296;
        let c = JiffiesClock::new(
            (j0, 5_001_000_000),
            (j0 + 15_000, 65_003_000_000),
            1_700_000_000_000_000_000,
        );
        assert_eq!(c.monotonic_ns(j0), 5_001_000_000);
        assert_eq!(c.monotonic_ns(j0 + 15_000), 65_003_000_000);
        // 7_500 jiffies in: halfway, 35.002 s.
        assert_eq!(c.monotonic_ns(j0 + 7_500), 35_002_000_000);
        // One jiffy in: 5.001 s + 60.002 s / 15_000, rounded down.
        assert_eq!(c.monotonic_ns(j0 + 1), 5_005_000_133);
        assert_eq!(c.unix_secs(j0 + 7_500), 1_700_000_035);
        // Before the first reading (not expected in the maps), the same line.
        assert_eq!(c.monotonic_ns(j0 - 250), 4_000_966_666);
    }

    #[test]
    fn readings_in_one_jiffy_give_the_latest_time() {
        let c = JiffiesClock::new((100, 1_000), (100, 1_500), 0);
        assert_eq!(c.monotonic_ns(100), 1_500);
    }
}
