//! Latency recording: one HdrHistogram per task, merged at the end.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies in microseconds, 3 significant digits, up to 10 minutes.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid bounds"))
    }
}

impl Latency {
    /// Records one duration (saturating at the upper bound).
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(micros);
    }

    /// Adds another recording into this one.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1).
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.0.value_at_quantile(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_merge() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        for micros in 1..=5_000u64 {
            a.record(Duration::from_micros(micros));
        }
        for micros in 5_001..=10_000u64 {
            b.record(Duration::from_micros(micros));
        }
        a.merge(&b);
        assert_eq!(a.count(), 10_000);
        let p50 = a.quantile(0.5).as_micros() as f64;
        let p99 = a.quantile(0.99).as_micros() as f64;
        assert!((p50 - 5000.0).abs() < 10.0, "p50 {p50}");
        assert!((p99 - 9900.0).abs() < 20.0, "p99 {p99}");
    }
}
