//! Jittered exponential backoff: the delay doubles from `initial` up to `max`; each delay
//! returned is scaled by a random factor in [0.5, 1.0] so a fleet does not retry in lockstep.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// Backoff state of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let mut seed = [0u8; 8];
        // A failed system generator only makes the jitter predictable, nothing worse.
        let _ = SystemRandom::new().fill(&mut seed);
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
            rng: u64::from_le_bytes(seed) | 1,
        }
    }

    /// The next delay (jittered), doubling the base for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        // xorshift64: cheap, good enough for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        base.mul_f64(factor)
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_max_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let bases = [100, 200, 400, 800, 1000, 1000];
        for base in bases {
            let d = b.next_delay();
            assert!(d >= ms(base) / 2 && d <= ms(base), "{d:?} for base {base}");
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        // Jitter actually varies.
        let mut b = Backoff::new(ms(1000), ms(1000));
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10);
    }
}
