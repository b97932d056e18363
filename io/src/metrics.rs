//! Latency histograms with Prometheus's fixed buckets, cheap enough to record on every command
//! and every `fdatasync`. Atomics, so connection tasks on any thread record into a shared one.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket upper bounds in seconds (Prometheus's `le`), from 50 µs to 2.5 s.
const BOUNDS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when written).
    buckets: [AtomicU64; BOUNDS.len()],
    /// Observations above the last bound.
    over: AtomicU64,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn record(&self, nanos: u64) {
        let seconds = nanos as f64 / 1e9;
        match BOUNDS.iter().position(|&bound| seconds <= bound) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the histogram as Prometheus text; `labels` is empty or `key="value",...`.
    pub fn write_prometheus(&self, name: &str, help: &str, labels: &str, out: &mut String) {
        if !help.is_empty() {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        }
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.over.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

impl Clone for Histogram {
    /// A snapshot of the counts now.
    fn clone(&self) -> Histogram {
        let load = |a: &AtomicU64| AtomicU64::new(a.load(Ordering::Relaxed));
        Histogram {
            buckets: std::array::from_fn(|i| load(&self.buckets[i])),
            over: load(&self.over),
            count: load(&self.count),
            sum_nanos: load(&self.sum_nanos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.record(40_000); // 40 µs: the first bucket
        h.record(2_000_000); // 2 ms
        h.record(10_000_000_000); // 10 s: above every bound
        let mut out = String::new();
        h.write_prometheus("t", "a test", "cmd=\"get\"", &mut out);
        assert!(
            out.contains("t_bucket{cmd=\"get\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_bucket{cmd=\"get\",le=\"0.0025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_bucket{cmd=\"get\",le=\"2.5\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_bucket{cmd=\"get\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("t_count{cmd=\"get\"} 3\n"), "{out}");
        assert!(out.contains("t_sum{cmd=\"get\"} 10.00204\n"), "{out}");
        assert_eq!(h.clone().count(), 3);
    }
}
