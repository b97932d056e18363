//! The simulator's seeded PRNG. Every decision of a run comes from one of these, derived from the
//! run's seed; probabilities are integer ratios, so no floating point enters a decision.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

pub struct Prng(ChaCha8Rng);

/// A probability as parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ppm(pub u32);

impl Ppm {
    pub const NEVER: Ppm = Ppm(0);
    pub const ALWAYS: Ppm = Ppm(1_000_000);

    pub fn percent(p: u32) -> Ppm {
        assert!(p <= 100);
        Ppm(p * 10_000)
    }
}

impl std::fmt::Display for Ppm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ppm", self.0)
    }
}

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A child generator, so that one component's draws do not shift another's.
    pub fn fork(&mut self) -> Prng {
        Prng::new(self.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        let span = high - low + 1;
        if span == 0 {
            return self.next_u64();
        }
        // Rejection sampling: no modulo bias.
        let zone = u64::MAX - (u64::MAX % span);
        loop {
            let x = self.next_u64();
            if x < zone {
                return low + x % span;
            }
        }
    }

    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0);
        self.range(0, len as u64 - 1) as usize
    }

    pub fn chance(&mut self, p: Ppm) -> bool {
        p.0 > 0 && self.range(0, 999_999) < p.0 as u64
    }

    pub fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let x = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_ranges_hold() {
        let mut a = Prng::new(7);
        let mut b = Prng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        for _ in 0..1000 {
            let x = a.range(3, 9);
            assert!((3..=9).contains(&x));
        }
        assert!(!a.chance(Ppm::NEVER));
        assert!(a.chance(Ppm::ALWAYS));
    }
}
