//! Clocks for timestamps that outlive a process.
//!
//! The wall clock steps (NTP at boot is common on cloud VMs) and can be set
//! to anything, so a wall-clock timestamp can stay "fresh" forever. Stored
//! timestamps (job creation, cache fetches, record departures) use
//! `CLOCK_BOOTTIME` instead: it never steps, counts time spent suspended,
//! and restarts at boot, exactly when `/run` (the state dir) is emptied.
//! Durations inside one process use [`std::time::Instant`] (monotonic).
//! Wall-clock time ([`crate::state::now_ms`]) is only for humans (the
//! journal's `ts_ms`).

use nix::time::{ClockId, clock_gettime};

/// Milliseconds since boot (`CLOCK_BOOTTIME`).
pub fn boot_ms() -> u64 {
    // CLOCK_BOOTTIME exists on every kernel we run on (2.6.39+); should it
    // ever fail, CLOCK_MONOTONIC is the next best clock that never steps.
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .expect("clock_gettime(CLOCK_MONOTONIC) cannot fail");
    let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// How long ago `stored` was, both in [`boot_ms`] terms; `None` when
/// `stored` lies in the future (written in an earlier boot, or forged),
/// which callers must treat as expired or stale, never as fresh.
pub fn age_ms(stored: u64, now: u64) -> Option<u64> {
    now.checked_sub(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_advances_and_never_goes_back() {
        let a = boot_ms();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = boot_ms();
        assert!(a > 0);
        assert!(b > a, "{a} then {b}");
    }

    #[test]
    fn a_future_stamp_has_no_age() {
        assert_eq!(age_ms(100, 250), Some(150));
        assert_eq!(age_ms(250, 250), Some(0));
        assert_eq!(age_ms(251, 250), None);
        assert_eq!(age_ms(u64::MAX, 0), None);
    }
}
