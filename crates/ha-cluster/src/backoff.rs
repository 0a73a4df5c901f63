//! Exponential backoff with jitter from a seeded generator, so simulations replay.

use std::time::Duration;

/// Delays `min, 2·min, 4·min, … ≤ max`, each drawn from `[d/2, d]`.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff { min, max, failures: 0, rng: seed | 1 }
    }

    /// The next delay after a failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.min.saturating_mul(1 << self.failures.min(16)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        base / 2 + base.mul_f64(self.unit() / 2.0)
    }

    /// A success: the next failure starts from `min` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// A small random fraction of `d` (up to 1/8), to spread periodic work.
    pub(crate) fn spread(&mut self, d: Duration) -> Duration {
        d.mul_f64(self.unit() / 8.0)
    }

    /// Uniform in [0, 1): splitmix64.
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), 7);
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        for (d, base) in d.iter().zip([100, 200, 400, 800, 1000, 1000]) {
            assert!(*d >= ms(base / 2) && *d <= ms(base), "{d:?} for base {base}");
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        let mut again = Backoff::new(ms(100), ms(1000), 7);
        assert_eq!(again.next_delay(), d[0], "same seed, same delays");
    }
}
