//! Time: window arithmetic on wall-clock seconds, and conversion of the kernel's monotonic
//! clock (what the datapath stamps packets with: CLOCK_MONOTONIC_COARSE in the TC programs,
//! CLOCK_MONOTONIC in the drop program) to Unix seconds.

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

/// Converts the datapath's CLOCK_MONOTONIC stamps to Unix time, sampled once per drain.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    /// Unix ns minus monotonic ns at the moment of sampling.
    offset_ns: i128,
}

impl MonotonicClock {
    pub fn sample() -> Self {
        let ns =
            |c| clock_gettime(c).map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128);
        let mono = ns(ClockId::CLOCK_MONOTONIC).unwrap_or(0);
        let real = ns(ClockId::CLOCK_REALTIME).unwrap_or(0);
        MonotonicClock {
            offset_ns: real - mono,
        }
    }

    /// For tests: a clock whose monotonic time 0 is Unix time `offset_ns`.
    pub fn with_offset(offset_ns: i128) -> Self {
        MonotonicClock { offset_ns }
    }

    /// Unix seconds (floored) of a monotonic stamp.
    pub fn unix_secs(&self, mono_ns: u64) -> u64 {
        let unix = mono_ns as i128 + self.offset_ns;
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
    fn monotonic_stamps_convert_to_unix_seconds() {
        let c = MonotonicClock::with_offset(1_600_000_000_000_000_000);
        assert_eq!(c.unix_secs(0), 1_600_000_000);
        assert_eq!(c.unix_secs(1_999_999_999), 1_600_000_001);
    }
}
