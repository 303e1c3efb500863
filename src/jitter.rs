//! Jitter for waits: the breaker's recovery period, the notifier's retries, the cluster's slot-map back-off.
//!
//! Sidecars that failed together must not all retry at the same instant, so each wait is stretched by a random
//! fraction. Cryptographic quality is not needed; determinism is: each user seeds its own generator, and a test
//! that fixes the seed gets the same waits every run.

/// A small deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Jitter {
        // xorshift never leaves zero; an odd seed keeps it away from it.
        Jitter(seed | 1)
    }

    /// A number in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_stay_in_range_spread_out_and_repeat_for_a_seed() {
        let draws = |seed| {
            let mut j = Jitter::new(seed);
            (0..1000).map(|_| j.unit()).collect::<Vec<_>>()
        };
        let a = draws(7);
        assert!(a.iter().all(|u| (0.0..1.0).contains(u)));
        assert_eq!(a, draws(7), "the same seed gives the same waits");
        assert_ne!(a, draws(8));
        // Each tenth of [0, 1) gets a fair share of 1,000 draws.
        for decile in 0..10 {
            let n = a.iter().filter(|u| (**u * 10.0) as usize == decile).count();
            assert!((50..=150).contains(&n), "decile {decile}: {n} draws");
        }
        assert!(Jitter::new(0).unit() > 0.0, "a zero seed does not get stuck at zero");
    }
}
