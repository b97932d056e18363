//! A fast path for the linearizability check: verify one candidate linearization instead of
//! searching for one.
//!
//! The simulator knows where each logged request took effect (the log index and batch position of
//! its first application). That order is a *witness*: if placing every write there, and every
//! read at some point between writes, respects real time and gives every completed operation the
//! output it got, the history is linearizable. The check is O(n log n) per key, where the search
//! of [`crate::linearizability`] is exponential on one hot key with many concurrent clients.
//!
//! A witness that does not fit proves nothing (the log order may be wrong in a way another order
//! would repair, or a request may not be known to the witness): the caller then runs the full
//! search, which decides. So this module can only make a correct history pass faster; it never
//! fails a seed by itself.
//!
//! Reads are served outside the log (ReadIndex), so they have no place in the witness: each is
//! placed greedily at the earliest point between writes that its real-time bounds allow and whose
//! state is the value it read. Reads are placed in return order, and a read never goes before a
//! read that returned before it was called; the earliest choice leaves the most room to the reads
//! placed after it.

use std::collections::BTreeMap;

use crate::linearizability::{Input, Operation, Output};

/// Where a logged operation took effect: (log index, position in its batch entry).
pub type Place = (u64, u32);

/// Whether `history` is linearizable with its writes in the order `places` gives
/// (`places[i]`: where `history[i]` took effect; `None`: it never did, or is a read).
pub fn fits(history: &[Operation], places: &[Option<Place>]) -> bool {
    assert_eq!(history.len(), places.len(), "one place per operation");
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.input.key()).or_default().push(i);
    }
    by_key
        .values()
        .all(|indices| key_fits(history, places, indices))
}

/// One write of the key in witness order, with the state it leaves.
struct Write<'h> {
    call: u64,
    /// `u64::MAX` when the client never got a reply (it bounds nothing).
    ret: u64,
    after: Option<&'h [u8]>,
}

fn key_fits(history: &[Operation], places: &[Option<Place>], indices: &[usize]) -> bool {
    let Some(writes) = ordered_writes(history, places, indices) else {
        return false;
    };
    writes_respect_real_time(&writes) && reads_fit(history, indices, &writes)
}

/// The key's writes in witness order, each applied to the register; `None` if a completed write
/// has no place or its output differs from what the order gives.
fn ordered_writes<'h>(
    history: &'h [Operation],
    places: &[Option<Place>],
    indices: &[usize],
) -> Option<Vec<Write<'h>>> {
    let mut placed: Vec<(Place, usize)> = Vec::new();
    for &i in indices {
        let op = &history[i];
        if matches!(op.input, Input::Get { .. }) {
            continue;
        }
        match places[i] {
            Some(place) => placed.push((place, i)),
            None if op.is_completed() => return None,
            None => {} // never took effect
        }
    }
    placed.sort_unstable();
    let mut state: Option<&[u8]> = None;
    let mut writes = Vec::with_capacity(placed.len());
    for (_, i) in placed {
        let op = &history[i];
        let (output, after) = apply(&op.input, state);
        if op.is_completed() && op.output.as_ref() != Some(&output) {
            return None;
        }
        state = after;
        writes.push(Write {
            call: op.call,
            ret: if op.is_completed() {
                op.ret.expect("completed")
            } else {
                u64::MAX
            },
            after: state,
        });
    }
    Some(writes)
}

/// The register's sequential specification: the output of `input` on `state`, and the state after.
fn apply<'h>(input: &'h Input, state: Option<&'h [u8]>) -> (Output, Option<&'h [u8]>) {
    match input {
        Input::Put { value, .. } => (Output::Put, Some(value)),
        Input::Delete { .. } => (
            Output::Delete {
                existed: state.is_some(),
            },
            None,
        ),
        Input::Cas { expected, new, .. } => {
            let swapped = state == expected.as_deref();
            let after = if swapped { Some(new.as_slice()) } else { state };
            (Output::Cas { swapped }, after)
        }
        Input::Get { .. } => (Output::Get(state.map(<[u8]>::to_vec)), state),
    }
}

/// No write is placed before a write that returned before it was called.
fn writes_respect_real_time(writes: &[Write]) -> bool {
    let mut latest_call = 0;
    for write in writes {
        if write.ret < latest_call {
            return false;
        }
        latest_call = latest_call.max(write.call);
    }
    true
}

/// Places every completed read at a point between writes (point k: after the first k writes).
fn reads_fit(history: &[Operation], indices: &[usize], writes: &[Write]) -> bool {
    let bounds = Bounds::new(writes);
    // The points at which the register holds each value.
    let mut points: BTreeMap<Option<&[u8]>, Vec<usize>> = BTreeMap::new();
    points.entry(None).or_default().push(0);
    for (k, write) in writes.iter().enumerate() {
        points.entry(write.after).or_default().push(k + 1);
    }
    let mut reads: Vec<(u64, u64, Option<&[u8]>)> = indices
        .iter()
        .map(|&i| &history[i])
        .filter(|op| op.is_completed())
        .filter_map(|op| match (&op.input, &op.output) {
            (Input::Get { .. }, Some(Output::Get(value))) => {
                Some((op.ret.expect("completed"), op.call, value.as_deref()))
            }
            _ => None,
        })
        .collect();
    reads.sort_unstable();
    // (return time, point) of the reads placed so far, in return order, with a running maximum.
    let mut placed: Vec<(u64, usize)> = Vec::with_capacity(reads.len());
    for (ret, call, value) in reads {
        let before = placed.partition_point(|&(r, _)| r < call);
        let after_reads = if before == 0 { 0 } else { placed[before - 1].1 };
        let lo = bounds.lowest(call).max(after_reads);
        let hi = bounds.highest(ret, writes.len());
        let Some(candidates) = points.get(&value) else {
            return false;
        };
        let at = candidates.partition_point(|&k| k < lo);
        match candidates.get(at) {
            Some(&k) if k <= hi => {
                let running = k.max(placed.last().map_or(0, |p| p.1));
                placed.push((ret, running));
            }
            _ => return false,
        }
    }
    true
}

/// A read's real-time bounds among the writes, by binary search.
struct Bounds {
    /// (return time, highest rank among writes returned by then), by return time.
    returned: Vec<(u64, usize)>,
    /// (call time, lowest rank among writes called at or after it), by call time.
    called: Vec<(u64, usize)>,
}

impl Bounds {
    fn new(writes: &[Write]) -> Bounds {
        let mut returned: Vec<(u64, usize)> = writes
            .iter()
            .enumerate()
            .filter(|(_, w)| w.ret != u64::MAX)
            .map(|(k, w)| (w.ret, k + 1))
            .collect();
        returned.sort_unstable();
        for i in 1..returned.len() {
            returned[i].1 = returned[i].1.max(returned[i - 1].1);
        }
        let mut called: Vec<(u64, usize)> = writes
            .iter()
            .enumerate()
            .map(|(k, w)| (w.call, k + 1))
            .collect();
        called.sort_unstable();
        for i in (0..called.len().saturating_sub(1)).rev() {
            called[i].1 = called[i].1.min(called[i + 1].1);
        }
        Bounds { returned, called }
    }

    /// The lowest point a read called at `call` may take: after every write that returned
    /// before it.
    fn lowest(&self, call: u64) -> usize {
        let n = self.returned.partition_point(|&(r, _)| r < call);
        if n == 0 {
            0
        } else {
            self.returned[n - 1].1
        }
    }

    /// The highest point a read returned at `ret` may take: before every write called after it.
    fn highest(&self, ret: u64, writes: usize) -> usize {
        let n = self.called.partition_point(|&(c, _)| c <= ret);
        self.called.get(n).map_or(writes, |&(_, rank)| rank - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{check, Budget, Verdict};

    fn op(input: Input, call: u64, ret: Option<u64>, output: Option<Output>) -> Operation {
        Operation {
            client: call,
            input,
            call,
            ret,
            output,
        }
    }

    fn put(v: &str, call: u64, ret: u64) -> Operation {
        let input = Input::Put {
            key: b"k".to_vec(),
            value: v.as_bytes().to_vec(),
        };
        op(input, call, Some(ret), Some(Output::Put))
    }

    fn get(v: Option<&str>, call: u64, ret: u64) -> Operation {
        let output = Output::Get(v.map(|v| v.as_bytes().to_vec()));
        op(
            Input::Get { key: b"k".to_vec() },
            call,
            Some(ret),
            Some(output),
        )
    }

    #[test]
    fn a_sequential_history_fits_its_log_order() {
        let history = [put("a", 1, 2), get(Some("a"), 3, 4), put("b", 5, 6)];
        let places = [Some((1, 0)), None, Some((2, 0))];
        assert!(fits(&history, &places));
    }

    #[test]
    fn a_log_order_against_real_time_does_not_fit() {
        let history = [put("a", 1, 2), put("b", 5, 6)];
        assert!(!fits(&history, &[Some((2, 0)), Some((1, 0))]));
    }

    #[test]
    fn a_stale_read_does_not_fit() {
        // b was written and acknowledged before the read began, yet it saw a.
        let history = [put("a", 1, 2), put("b", 3, 4), get(Some("a"), 5, 6)];
        let places = [Some((1, 0)), Some((2, 0)), None];
        assert!(!fits(&history, &places));
        assert!(matches!(
            check(&history, Budget::default()),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn reads_never_go_back_in_time() {
        // Two concurrent writes; a read sees b, a later read sees a: b must precede a, and the
        // witness says a then b.
        let history = [
            put("a", 1, 10),
            put("b", 1, 10),
            get(Some("b"), 2, 3),
            get(Some("a"), 4, 5),
        ];
        let places = [Some((1, 0)), Some((1, 1)), None, None];
        assert!(!fits(&history, &places));
        let swapped = [Some((1, 1)), Some((1, 0)), None, None];
        assert!(fits(&history, &swapped));
    }

    #[test]
    fn a_completed_write_without_a_place_does_not_fit() {
        assert!(!fits(&[put("a", 1, 2)], &[None]));
    }

    #[test]
    fn an_unacknowledged_write_may_or_may_not_take_effect() {
        let pending = op(
            Input::Put {
                key: b"k".to_vec(),
                value: b"x".to_vec(),
            },
            1,
            None,
            None,
        );
        let history = [pending.clone(), get(None, 2, 3)];
        assert!(fits(&history, &[None, None]));
        let history = [pending, get(Some("x"), 2, 3)];
        assert!(fits(&history, &[Some((1, 0)), None]));
    }

    #[test]
    fn outputs_follow_the_witness() {
        let cas = |expected: Option<&str>, new: &str, swapped: bool, call: u64| {
            let input = Input::Cas {
                key: b"k".to_vec(),
                expected: expected.map(|e| e.as_bytes().to_vec()),
                new: new.as_bytes().to_vec(),
            };
            op(input, call, Some(call + 1), Some(Output::Cas { swapped }))
        };
        let history = [cas(None, "a", true, 1), cas(Some("b"), "c", false, 3)];
        assert!(fits(&history, &[Some((1, 0)), Some((2, 0))]));
        let wrong = [cas(None, "a", true, 1), cas(Some("a"), "c", false, 3)];
        assert!(!fits(&wrong, &[Some((1, 0)), Some((2, 0))]));
    }
}
