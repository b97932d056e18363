//! Numbers that must differ between processes and restarts: client ids, data-file
//! incarnations, cluster ids, the seed of a replica's election timeouts. The runtime may use the
//! OS for them; the core never does.
//!
//! In a madsim build the clock is the simulation's and nothing else is mixed in, so that a seed
//! replays exactly: no process id, no counter that outlives one simulated run.

use std::time::{SystemTime, UNIX_EPOCH};

/// A number that differs between calls made at different instants, and between processes.
pub fn entropy() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ process_salt())
}

#[cfg(not(madsim))]
fn process_salt() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    ((std::process::id() as u64) << 40) ^ (CALLS.fetch_add(1, Ordering::Relaxed) << 20)
}

#[cfg(madsim)]
fn process_salt() -> u64 {
    0
}

/// SplitMix64's finalizer: spreads every input bit over the output.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn calls_differ() {
        let a = super::entropy();
        let b = super::entropy();
        assert_ne!(a, b);
    }
}
