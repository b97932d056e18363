//! Zipfian item chooser after Gray et al., "Quickly Generating Billion-Record Synthetic
//! Databases" (SIGMOD 1994), as YCSB implements it: item 0 is the most popular. The item count
//! may grow (inserts); zeta is then extended incrementally rather than recomputed.

use crate::rng::Rng;

/// YCSB's default skew.
pub const THETA: f64 = 0.99;

pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta2: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Self {
        assert!(items >= 1 && theta > 0.0 && theta < 1.0);
        let mut z = Zipfian {
            items: 0,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2: zeta_range(0, 2, theta),
            zetan: 0.0,
            eta: 0.0,
        };
        z.grow(items);
        z
    }

    /// Extends the item range to `0..items` (it never shrinks).
    pub fn grow(&mut self, items: u64) {
        if items <= self.items {
            return;
        }
        self.zetan += zeta_range(self.items, items, self.theta);
        self.items = items;
        let n = items as f64;
        self.eta = (1.0 - (2.0 / n).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan);
    }

    /// An item in `0..items`, small ones far more often.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let spread = self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (spread as u64).min(self.items - 1)
    }
}

/// `sum(1 / i^theta)` for `i` in `from+1..=to`.
fn zeta_range(from: u64, to: u64, theta: f64) -> f64 {
    (from + 1..=to).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(z: &Zipfian, samples: usize) -> Vec<usize> {
        let mut rng = Rng::new(7);
        let mut counts = vec![0; z.items as usize];
        for _ in 0..samples {
            counts[z.next(&mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn skewed_like_zipf() {
        let n = 1000;
        let samples = 200_000;
        let z = Zipfian::new(n, THETA);
        let counts = histogram(&z, samples);
        let share = |i: usize| counts[i] as f64 / samples as f64;
        // Item i should get about 1 / (zeta(n) * (i+1)^theta) of the draws.
        let zetan = zeta_range(0, n, THETA);
        let expected0 = 1.0 / zetan;
        assert!(
            (share(0) - expected0).abs() < 0.1 * expected0,
            "item 0: {}",
            share(0)
        );
        let expected1 = expected0 / 2f64.powf(THETA);
        assert!(
            (share(1) - expected1).abs() < 0.1 * expected1,
            "item 1: {}",
            share(1)
        );
        // Popularity falls with rank; the top 1% of items take about 40% of the draws.
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
        let top10: usize = counts[..10].iter().sum();
        let top10_share = top10 as f64 / samples as f64;
        assert!((0.35..0.45).contains(&top10_share), "top 10: {top10_share}");
        // The tail is still reached.
        assert!(counts[n as usize / 2..].iter().sum::<usize>() > 0);
    }

    #[test]
    fn growing_matches_fresh() {
        let mut grown = Zipfian::new(10, THETA);
        grown.grow(5000);
        let fresh = Zipfian::new(5000, THETA);
        assert!((grown.zetan - fresh.zetan).abs() < 1e-9);
        assert!((grown.eta - fresh.eta).abs() < 1e-12);
    }
}
