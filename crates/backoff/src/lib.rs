//! # apollo-backoff
//!
//! The one exponential backoff of the workspace: a delay that starts at `initial` and doubles
//! per consecutive failure up to `max`.
//!
//! - [`Exponential`] is the schedule itself, a pure function of the failure count, for loops
//!   that already count their failures (the gateway's status writer and accept loop, the
//!   controller's per-deployment retries).
//! - [`Backoff`] keeps the count for a retry loop (`next_delay` after a failure, `reset` after
//!   a success), optionally [jittered](Backoff::jittered): each delay scaled by a random factor
//!   in [0.5, 1.0] so that a fleet of agents does not retry in lockstep.
//!
//! The arithmetic saturates: a delay that would overflow is `max`, whatever the failure count.
//! No dependencies (the jitter is seeded from the standard library's randomly keyed hasher),
//! so the kube-free agent uses it too.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// `initial` doubled per failure, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exponential {
    initial: Duration,
    max: Duration,
}

impl Exponential {
    /// A schedule from `initial` up to `max` (raised to `initial` when smaller).
    pub const fn new(initial: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < initial.as_nanos() {
            initial
        } else {
            max
        };
        Exponential { initial, max }
    }

    /// The first delay.
    pub const fn initial(&self) -> Duration {
        self.initial
    }

    /// The longest delay.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The delay after `failures` earlier failures: `initial * 2^failures`, at most `max`
    /// (so `delay(0)` is `initial`). Never overflows: anything past the cap is the cap.
    pub fn delay(&self, failures: u32) -> Duration {
        2u32.checked_pow(failures)
            .and_then(|factor| self.initial.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// The failure count of one retry loop over an [`Exponential`] schedule.
#[derive(Debug, Clone)]
pub struct Backoff {
    schedule: Exponential,
    failures: u32,
    /// xorshift64 state when jittered.
    jitter: Option<u64>,
}

impl Backoff {
    /// Exact delays: `initial`, then doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            schedule: Exponential::new(initial, max),
            failures: 0,
            jitter: None,
        }
    }

    /// Every delay scaled by a random factor in [0.5, 1.0].
    pub fn jittered(mut self) -> Self {
        // Keyed from OS randomness once per thread and advanced per `RandomState`, so two
        // backoffs (and two processes) start from different states. `| 1`: xorshift must not
        // start at zero.
        self.jitter = Some(RandomState::new().hash_one(0u8) | 1);
        self
    }

    /// The next delay, doubling the one after (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.schedule.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        match &mut self.jitter {
            None => base,
            Some(state) => {
                // xorshift64: cheap, good enough for jitter.
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                let factor = 0.5 + (*state >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
                // `base.mul_f64(factor)`, except that it cannot panic near `Duration::MAX`.
                Duration::try_from_secs_f64(base.as_secs_f64() * factor)
                    .map_or(base, |d| d.min(base))
            }
        }
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let s = Exponential::new(ms(500), Duration::from_secs(5));
        let delays: Vec<_> = (0..6).map(|n| s.delay(n)).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000].map(ms));
    }

    #[test]
    fn overflow_saturates_at_the_cap() {
        let s = Exponential::new(ms(100), ms(5000));
        for n in [6, 7, 31, 32, 33, 64, u32::MAX] {
            assert_eq!(s.delay(n), ms(5000), "{n}");
        }
        let huge = Exponential::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(huge.delay(1), Duration::from_secs(u64::MAX / 2 * 2));
        assert_eq!(huge.delay(2), Duration::MAX);
        let mut b = Backoff::new(Duration::MAX, Duration::MAX).jittered();
        for _ in 0..3 {
            assert!(b.next_delay() >= Duration::MAX / 2);
        }
    }

    #[test]
    fn max_below_initial_is_raised() {
        let s = Exponential::new(ms(800), ms(100));
        assert_eq!(s.max(), ms(800));
        assert_eq!(s.delay(0), ms(800));
        assert_eq!(s.delay(3), ms(800));
    }

    #[test]
    fn counts_failures_and_resets() {
        let mut b = Backoff::new(ms(200), ms(5000));
        let delays: Vec<_> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000].map(ms));
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.next_delay(), ms(200));
        let mut b = Backoff::new(ms(1), ms(2));
        b.failures = u32::MAX;
        assert_eq!(b.next_delay(), ms(2));
        assert_eq!(b.failures(), u32::MAX);
    }

    #[test]
    fn jitter_stays_within_half_to_full_and_varies() {
        let mut b = Backoff::new(ms(100), ms(1000)).jittered();
        for base in [100, 200, 400, 800, 1000, 1000] {
            let d = b.next_delay();
            assert!(d >= ms(base) / 2 && d <= ms(base), "{d:?} for base {base}");
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        let mut b = Backoff::new(ms(1000), ms(1000)).jittered();
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10);
    }
}
