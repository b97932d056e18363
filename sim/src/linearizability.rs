//! Linearizability checking of key-value histories, black-box: only what clients asked, when, and
//! what they were told.
//!
//! The algorithm is Porcupine's (Wing & Gong's search with Lowe's memoization):
//!
//! - **Partition by key.** Operations on different keys commute, and linearizability is local
//!   (Herlihy & Wing): a history is linearizable iff each per-key sub-history is. This turns one
//!   search exponential in the whole history into many small ones.
//! - **Search.** Per key, the call and return events are a doubly linked list in time order. At
//!   each step one of the "minimal" operations (called before the first pending return) is
//!   linearized: applied to the model, its call and return lifted out of the list; when none fits,
//!   the last choice is undone (unlifted) and the next is tried.
//! - **Memoization.** A search node is (set of linearized operations, model state); a node seen
//!   before is not explored again. The set is a bitset of `u64` words, hashed incrementally
//!   (Zobrist), compared exactly on a hash hit.
//!
//! Operations without a reply (`ret` or `output` is `None`: timed out, client crashed) may have
//! taken effect at any time after their call, or never. They return at +infinity, so they never
//! precede anything, and the search succeeds as soon as every *completed* operation is placed:
//! an operation that never took effect is indistinguishable from one that took effect after the
//! end of the history.
//!
//! Left alone, such operations blow up the search: each can be placed almost anywhere, and every
//! placement is a new set of linearized operations. So the search narrows where it places them,
//! losing no linearization (each reduction's comment says why):
//!
//! - values no operation observes collapse into one state (`ValueId`);
//! - interchangeable operations without a reply are used in call order (`same_step_before`);
//! - one is placed only right before an operation it makes a difference to
//!   (`Search::admissible`);
//! - a memoized node also stands for nodes with more of them linearized (`Cache`).
//!
//! Limit: proving a violation means exhausting the search, and on one long key with many
//! operations without a reply the placements still multiply: the benchmark's 10,000 operations
//! on a single key with 2% timeouts and a violation at the end exceed the default budget
//! (unknown), while the same spread over 50 keys takes milliseconds.
//!
//! Real-time order: operation A precedes operation B iff `A.ret < B.call`, strictly. Equal times
//! overlap: an operation that returns at tick t is concurrent with one called at tick t.
//!
//! Determinism: keys are checked in byte order (`BTreeMap`), and candidates are tried in a fixed
//! order, so the verdict and its explanation depend only on the history. The one `HashMap` is the
//! memo cache, which is only ever probed, never iterated, and uses a fixed hash, so it cannot
//! leak an order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Compare-and-swap: sets `new` iff the current value equals `expected` (`None`: the key is
    /// absent).
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl Input {
    pub fn key(&self) -> &[u8] {
        match self {
            Input::Put { key, .. }
            | Input::Get { key }
            | Input::Delete { key }
            | Input::Cas { key, .. } => key,
        }
    }
}

/// What a client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Put,
    Get(Option<Vec<u8>>),
    Delete { existed: bool },
    Cas { swapped: bool },
}

/// One client operation. `call` and `ret` are logical times (ticks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub input: Input,
    pub call: u64,
    /// `None`: the client never got a reply.
    pub ret: Option<u64>,
    /// `None`: the client never got a reply. An operation is *completed* iff both `ret` and
    /// `output` are `Some`; otherwise it may have taken effect at any time after its call, or
    /// never, and its output (if any) is ignored.
    pub output: Option<Output>,
}

impl Operation {
    /// Whether the client saw the outcome: only then does the operation constrain the search.
    pub fn is_completed(&self) -> bool {
        self.ret.is_some() && self.output.is_some()
    }
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization of the operations on `key` exists.
    NotLinearizable {
        key: Vec<u8>,
        explanation: String,
    },
    /// The search for `key` gave up (budget exhausted, or a malformed history): no claim either
    /// way. A definite violation on another key takes precedence over this.
    Unknown {
        key: Vec<u8>,
        reason: String,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable { explanation, .. } => {
                write!(f, "not linearizable: {explanation}")
            }
            Verdict::Unknown { key, reason } => {
                write!(f, "unknown for key {}: {reason}", Bytes(key))
            }
        }
    }
}

/// Bounds the search, so that a pathological history cannot hang the simulator.
///
/// A state is one memoized search node; memory is roughly 100 bytes per state plus a bit per
/// operation of the key in flight at that point, so the default (2^20 states per key) is at
/// most on the order of 100 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub max_states_per_key: u64,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            max_states_per_key: 1 << 20,
        }
    }
}

/// How much work a check did, for benchmarks and for judging how close a history is to its
/// budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub keys: usize,
    pub operations: usize,
    /// Search nodes explored, over all keys.
    pub states: u64,
    /// The most search nodes explored for a single key.
    pub max_states_per_key: u64,
}

/// Checks that `history` is linearizable with respect to a key-value map.
pub fn check(history: &[Operation], budget: Budget) -> Verdict {
    check_with_stats(history, budget).0
}

/// [`check`], also reporting how much search it took.
///
/// Keys are checked in byte order; the first key that is definitely not linearizable is
/// reported. Otherwise the first key whose search was cut short is reported as unknown.
pub fn check_with_stats(history: &[Operation], budget: Budget) -> (Verdict, Stats) {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        by_key.entry(op.input.key()).or_default().push(index);
    }
    let mut stats = Stats {
        keys: by_key.len(),
        operations: history.len(),
        ..Stats::default()
    };
    let mut unknown = None;
    for (key, indices) in by_key {
        let unknown_verdict = |reason| Verdict::Unknown {
            key: key.to_vec(),
            reason,
        };
        let key_history = match KeyHistory::build(key, history, &indices) {
            Ok(key_history) => key_history,
            Err(reason) => {
                unknown.get_or_insert(unknown_verdict(reason));
                continue;
            }
        };
        let mut search = Search::new(&key_history);
        let outcome = search.run(budget);
        stats.states += search.states;
        stats.max_states_per_key = stats.max_states_per_key.max(search.states);
        match outcome {
            Outcome::Linearizable => {}
            Outcome::Violation { prefix } => {
                let explanation = key_history.explain(&prefix);
                let verdict = Verdict::NotLinearizable {
                    key: key.to_vec(),
                    explanation,
                };
                return (verdict, stats);
            }
            Outcome::OutOfBudget => {
                let reason = format!(
                    "search gave up after {} states (budget {} per key), {} operations on the key",
                    search.states,
                    budget.max_states_per_key,
                    key_history.ops.len()
                );
                unknown.get_or_insert(unknown_verdict(reason));
            }
        }
    }
    (unknown.unwrap_or(Verdict::Linearizable), stats)
}

/// Interned value, so that a model state is a `u32`, compared and hashed in O(1).
///
/// Only values some operation observes (a get returned it, a cas expected it) get their own id.
/// Every other value written is [`UNSEEN`]: no operation behaves differently on two such values,
/// so telling them apart would only multiply the search's states.
type ValueId = u32;
const ABSENT: ValueId = 0;
const UNSEEN: ValueId = 1;

/// An operation compiled against the interned values of its key. A completed operation's output
/// is part of its step; an operation without a reply has `None` where the output would be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Put {
        value: ValueId,
    },
    Get {
        saw: ValueId,
    },
    Delete {
        existed: Option<bool>,
    },
    Cas {
        expected: ValueId,
        new: ValueId,
        swapped: Option<bool>,
    },
}

impl Step {
    /// The model: the state after this step from `state`, or `None` if the observed output
    /// contradicts `state`.
    fn apply(self, state: ValueId) -> Option<ValueId> {
        match self {
            Step::Put { value } => Some(value),
            Step::Get { saw } => (saw == state).then_some(state),
            Step::Delete { existed } => match existed {
                Some(existed) if existed != (state != ABSENT) => None,
                _ => Some(ABSENT),
            },
            Step::Cas {
                expected,
                new,
                swapped,
            } => {
                let swaps = state == expected;
                match swapped {
                    Some(swapped) if swapped != swaps => None,
                    _ => Some(if swaps { new } else { state }),
                }
            }
        }
    }
}

/// One operation of a key, ready for the search.
struct KeyOp {
    /// Position in the checked history, for explanations.
    index: usize,
    call: u64,
    /// `u64::MAX` for an operation without a reply.
    ret: u64,
    step: Step,
}

/// The operations on one key: completed ones first (in call order), then those without a reply
/// (in call order). Operations without a reply that cannot change the state (gets) are dropped:
/// they neither constrain nor affect anything.
struct KeyHistory<'h> {
    key: &'h [u8],
    history: &'h [Operation],
    ops: Vec<KeyOp>,
    completed: usize,
    /// For each operation without a reply (`ops[completed + j]`), the previous one in call
    /// order with the same step, if any (as an index into `ops`).
    same_step_before: Vec<Option<u32>>,
}

impl<'h> KeyHistory<'h> {
    fn build(
        key: &'h [u8],
        history: &'h [Operation],
        indices: &[usize],
    ) -> Result<KeyHistory<'h>, String> {
        let ids = observed_values(history, indices);
        let mut completed = Vec::with_capacity(indices.len());
        let mut pending = Vec::new();
        for &index in indices {
            let op = &history[index];
            let Some(step) = compile(index, op, &ids)? else {
                continue;
            };
            let key_op = KeyOp {
                index,
                call: op.call,
                ret: op.ret.filter(|_| op.is_completed()).unwrap_or(u64::MAX),
                step,
            };
            if op.is_completed() {
                completed.push(key_op);
            } else {
                pending.push(key_op);
            }
        }
        completed.sort_by_key(|op| (op.call, op.index));
        pending.sort_by_key(|op| (op.call, op.index));
        let same_step_before = same_step_before(completed.len(), &pending);
        let completed_len = completed.len();
        completed.append(&mut pending);
        Ok(KeyHistory {
            key,
            history,
            ops: completed,
            completed: completed_len,
            same_step_before,
        })
    }

    /// The violation report: the longest linearizable prefix the search found, the state it
    /// leaves, and the earliest-returning operation that could not be placed after it.
    fn explain(&self, prefix: &[u32]) -> String {
        const SHOWN: usize = 40;
        let mut store = BTreeMap::new();
        let mut placed = vec![false; self.ops.len()];
        for &op in prefix {
            placed[op as usize] = true;
            apply_to_map(&mut store, &self.history[self.ops[op as usize].index].input);
        }
        let mut text = format!(
            "key {}: no linearization exists. Longest linearizable prefix found ({} operations",
            Bytes(self.key),
            prefix.len()
        );
        let skipped = prefix.len().saturating_sub(SHOWN);
        if skipped > 0 {
            text += &format!(", the first {skipped} omitted");
        }
        text += "):";
        for &op in &prefix[skipped..] {
            text += &format!("\n  {}", self.describe(op as usize));
        }
        let value = store.get(self.key).map(|v| v.as_slice());
        text += &format!("\nafter which the value is {}.", Value(value));
        let blocked = (0..self.completed)
            .filter(|&op| !placed[op])
            .min_by_key(|&op| (self.ops[op].ret, self.ops[op].call, self.ops[op].index));
        if let Some(op) = blocked {
            text += &format!(
                "\nThis operation cannot be placed before it returns, in any order of the \
                 operations concurrent with it:\n  {}",
                self.describe(op)
            );
        }
        text
    }

    fn describe(&self, op: usize) -> String {
        let index = self.ops[op].index;
        format!("#{index} {}", Describe(&self.history[index]))
    }
}

/// The values some operation on the key observes: those a completed get returned, and those a
/// cas expected. Ids from 2 up, in byte order.
fn observed_values<'h>(history: &'h [Operation], indices: &[usize]) -> BTreeMap<&'h [u8], ValueId> {
    let mut observed = BTreeSet::new();
    for &index in indices {
        let op = &history[index];
        match (&op.input, &op.output) {
            (Input::Get { .. }, Some(Output::Get(Some(value)))) if op.is_completed() => {
                observed.insert(value.as_slice());
            }
            (
                Input::Cas {
                    expected: Some(value),
                    ..
                },
                _,
            ) => {
                observed.insert(value.as_slice());
            }
            _ => {}
        }
    }
    observed.into_iter().zip(UNSEEN + 1..).collect()
}

/// The step of `op` (at `index` in the history), `None` if it can be dropped, or why the
/// operation is malformed.
fn compile(
    index: usize,
    op: &Operation,
    ids: &BTreeMap<&[u8], ValueId>,
) -> Result<Option<Step>, String> {
    let id = |value: &[u8]| ids.get(value).copied().unwrap_or(UNSEEN);
    let id_option = |value: &Option<Vec<u8>>| value.as_deref().map_or(ABSENT, id);
    let output = op.output.as_ref().filter(|_| op.is_completed());
    if let (Some(ret), Some(_)) = (op.ret, output) {
        if ret < op.call {
            return Err(format!(
                "operation #{index} returns at {ret}, before its call at {}",
                op.call
            ));
        }
    }
    let step = match (&op.input, output) {
        (Input::Put { value, .. }, None | Some(Output::Put)) => Step::Put { value: id(value) },
        (Input::Get { .. }, None) => return Ok(None),
        (Input::Get { .. }, Some(Output::Get(saw))) => Step::Get {
            saw: id_option(saw),
        },
        (Input::Delete { .. }, None) => Step::Delete { existed: None },
        (Input::Delete { .. }, Some(Output::Delete { existed })) => Step::Delete {
            existed: Some(*existed),
        },
        (Input::Cas { expected, new, .. }, None | Some(Output::Cas { .. })) => Step::Cas {
            expected: id_option(expected),
            new: id(new),
            swapped: match output {
                Some(Output::Cas { swapped }) => Some(*swapped),
                _ => None,
            },
        },
        (_, Some(other)) => return Err(mismatch(index, op, other)),
    };
    Ok(Some(step))
}

/// Operations without a reply and with the same step are interchangeable, except that one
/// called earlier can take effect wherever a later one can: so a linearization may as well use
/// the earliest ones, in call order. Links each to the previous one with its step.
fn same_step_before(completed: usize, pending: &[KeyOp]) -> Vec<Option<u32>> {
    let mut last: BTreeMap<Step, u32> = BTreeMap::new();
    pending
        .iter()
        .enumerate()
        .map(|(j, op)| last.insert(op.step, (completed + j) as u32))
        .collect()
}

fn mismatch(index: usize, op: &Operation, output: &Output) -> String {
    format!(
        "operation #{index}: output {output:?} does not answer input {:?}",
        op.input
    )
}

/// Where the search resumes scanning for the next candidate.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// At a node of the list of completed operations' events.
    Main(u32),
    /// At a node of the list of operations without a reply, which are candidates while their
    /// call is at or before `limit` (the first remaining return: equal times overlap).
    Pending { node: u32, limit: u64 },
}

/// One linearized operation on the search stack.
struct Frame {
    op: u32,
    state_before: ValueId,
    resume: Cursor,
}

enum Outcome {
    Linearizable,
    /// The longest linearizable prefix found, as operation numbers of the key.
    Violation {
        prefix: Vec<u32>,
    },
    OutOfBudget,
}

/// The search over one key.
///
/// Completed operations' call and return events form a circular doubly linked list (node 0 the
/// sentinel; operation i has call node 2i+1 and return node 2i+2). Operations without a reply
/// have no return event; they form a second list in call order (operation `completed + j` is
/// node j+1) and are tried only after every completed candidate, so that the usual greedy
/// descent never needs them and they are placed only where an observation requires them.
struct Search<'k, 'h> {
    history: &'k KeyHistory<'h>,
    next: Vec<u32>,
    prev: Vec<u32>,
    pending_next: Vec<u32>,
    pending_prev: Vec<u32>,
    done: Done,
    pending_done: Vec<u64>,
    cache: Cache,
    stack: Vec<Frame>,
    state: ValueId,
    /// Longest stack seen, as operations; `best[..common]` equals the current stack's prefix,
    /// so recording a new longest stack copies only what changed since the last record.
    best: Vec<u32>,
    common: usize,
    states: u64,
}

impl<'k, 'h> Search<'k, 'h> {
    fn new(history: &'k KeyHistory<'h>) -> Search<'k, 'h> {
        let completed = history.completed;
        let pending = history.ops.len() - completed;
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * completed);
        for (i, op) in history.ops[..completed].iter().enumerate() {
            // Calls sort before returns at equal times: equal times overlap.
            events.push((op.call, false, 2 * i as u32 + 1));
            events.push((op.ret, true, 2 * i as u32 + 2));
        }
        events.sort_unstable();
        let (next, prev) = circular_list(2 * completed + 1, events.iter().map(|e| e.2));
        let (pending_next, pending_prev) = circular_list(pending + 1, 1..=pending as u32);
        Search {
            history,
            next,
            prev,
            pending_next,
            pending_prev,
            done: Done::new(completed),
            pending_done: vec![0; pending.div_ceil(64)],
            cache: Cache::default(),
            stack: Vec::new(),
            state: ABSENT,
            best: Vec::new(),
            common: 0,
            states: 0,
        }
    }

    fn run(&mut self, budget: Budget) -> Outcome {
        let mut cursor = Cursor::Main(self.next[0]);
        loop {
            if self.done.remaining == 0 {
                return Outcome::Linearizable;
            }
            let Some((op, after)) = self.candidate(cursor) else {
                match self.backtrack() {
                    Some(resume) => cursor = resume,
                    None => {
                        return Outcome::Violation {
                            prefix: std::mem::take(&mut self.best),
                        }
                    }
                }
                continue;
            };
            cursor = after;
            let Some(state) = self.admissible(op) else {
                continue;
            };
            if !self.visit(op, state) {
                continue;
            }
            self.states += 1;
            if self.states > budget.max_states_per_key {
                return Outcome::OutOfBudget;
            }
            self.descend(op, state, after);
            cursor = Cursor::Main(self.next[0]);
        }
    }

    /// The candidate at `cursor` and the cursor after it, or `None` when this node has no more.
    fn candidate(&self, cursor: Cursor) -> Option<(u32, Cursor)> {
        match cursor {
            Cursor::Main(node) if node % 2 == 1 => {
                Some(((node - 1) / 2, Cursor::Main(self.next[node as usize])))
            }
            Cursor::Main(node) => {
                // The first remaining return: completed candidates end here.
                let limit = match node {
                    0 => u64::MAX,
                    _ => self.history.ops[(node as usize - 2) / 2].ret,
                };
                let node = self.pending_next[0];
                self.candidate(Cursor::Pending { node, limit })
            }
            Cursor::Pending { node, limit } => {
                let op = self.history.completed as u32 + node.checked_sub(1)?;
                (self.history.ops[op as usize].call <= limit).then(|| {
                    let node = self.pending_next[node as usize];
                    (op, Cursor::Pending { node, limit })
                })
            }
        }
    }

    fn is_pending(&self, op: u32) -> bool {
        op as usize >= self.history.completed
    }

    /// The state after `op` if it may be linearized next, pruning moves that cannot help.
    ///
    /// Any linearization can be put in a normal form by rewriting it around each operation
    /// without a reply, `p` (which constrains nothing and may be left out):
    ///
    /// - if `p` does not change the state, or comes last, drop it;
    /// - if the next operation `q` ends in the same state without `p` (a blind write, say),
    ///   drop `p`: its effect went unseen;
    /// - if `q` then `p` is valid and ends in the same state as `p` then `q`, swap them: `p`
    ///   moves later.
    ///
    /// Each step shortens the linearization or moves `p` towards the end, so the rewriting
    /// terminates, and the search needs to find only normal forms. Hence it prunes:
    ///
    /// - `op` whose output contradicts the current state (the model);
    /// - `op` without a reply that would not change the state;
    /// - `op` ending in the same state as it would have before the last operation linearized,
    ///   when that one has no reply: this node's completions that start so are completions of
    ///   the parent node (which the search explores in full) too;
    /// - `op` without a reply while an earlier one with the same step is not linearized
    ///   ([`same_step_before`]: one more rewriting swaps them);
    /// - `op` without a reply that no other candidate would follow in a normal form
    ///   ([`Search::observable`]): linearizing it leads to a dead end.
    fn admissible(&self, op: u32) -> Option<ValueId> {
        if self.is_pending(op) && !self.earliest_of_its_step(op) {
            return None;
        }
        let step = self.history.ops[op as usize].step;
        let state = step.apply(self.state)?;
        if let Some(frame) = self.stack.last() {
            if self.is_pending(frame.op) && step.apply(frame.state_before) == Some(state) {
                return None;
            }
        }
        if self.is_pending(op) && (state == self.state || !self.observable(op, state)) {
            return None;
        }
        Some(state)
    }

    /// Whether every operation without a reply with the same step as `op` and called before it
    /// is linearized: only then is `op` worth trying ([`same_step_before`]).
    fn earliest_of_its_step(&self, op: u32) -> bool {
        let j = op as usize - self.history.completed;
        self.history.same_step_before[j].is_none_or(|before| {
            let k = before as usize - self.history.completed;
            self.pending_done[k / 64] & (1 << (k % 64)) != 0
        })
    }

    /// Whether, after linearizing `op` (without a reply) to reach `state`, some other candidate
    /// could follow it in a normal form: neither dropping `op` nor moving it after that
    /// candidate would give the same state.
    fn observable(&self, op: u32, state: ValueId) -> bool {
        let step = self.history.ops[op as usize].step;
        let mut cursor = Cursor::Main(self.next[0]);
        while let Some((next, after)) = self.candidate(cursor) {
            cursor = after;
            let next_step = self.history.ops[next as usize].step;
            let Some(end) = next_step.apply(state) else {
                continue;
            };
            let without = next_step.apply(self.state);
            let swapped = without.and_then(|s| step.apply(s));
            let noop = self.is_pending(next) && end == state;
            if next != op && !noop && without != Some(end) && swapped != Some(end) {
                return true;
            }
        }
        false
    }

    /// Marks `op` linearized and records the node; false (and `op` unmarked) if the node, or
    /// one that dominates it, was explored already.
    fn visit(&mut self, op: u32, state: ValueId) -> bool {
        self.mark(op, true);
        let new = self.cache.visit(&self.done, &self.pending_done, state);
        if !new {
            self.mark(op, false);
        }
        new
    }

    fn mark(&mut self, op: u32, linearized: bool) {
        if self.is_pending(op) {
            let j = op as usize - self.history.completed;
            let bit = 1 << (j % 64);
            if linearized {
                self.pending_done[j / 64] |= bit;
            } else {
                self.pending_done[j / 64] &= !bit;
            }
        } else if linearized {
            self.done.insert(op as usize);
        } else {
            self.done.remove(op as usize);
        }
    }

    fn descend(&mut self, op: u32, state: ValueId, resume: Cursor) {
        self.stack.push(Frame {
            op,
            state_before: self.state,
            resume,
        });
        self.state = state;
        self.lift(op);
    }

    /// Undoes the last linearization; `None` when there is none left to undo.
    fn backtrack(&mut self) -> Option<Cursor> {
        self.record_best();
        let frame = self.stack.pop()?;
        self.common = self.common.min(self.stack.len());
        self.unlift(frame.op);
        self.mark(frame.op, false);
        self.state = frame.state_before;
        Some(frame.resume)
    }

    fn record_best(&mut self) {
        if self.stack.len() > self.best.len() {
            self.best.truncate(self.common);
            self.best
                .extend(self.stack[self.common..].iter().map(|frame| frame.op));
            self.common = self.stack.len();
        }
    }

    fn lift(&mut self, op: u32) {
        if self.is_pending(op) {
            let node = op - self.history.completed as u32 + 1;
            unlink(&mut self.pending_next, &mut self.pending_prev, node);
        } else {
            unlink(&mut self.next, &mut self.prev, 2 * op + 1);
            unlink(&mut self.next, &mut self.prev, 2 * op + 2);
        }
    }

    /// Exactly reverses [`Search::lift`] (dancing links: the lifted nodes kept their links).
    fn unlift(&mut self, op: u32) {
        if self.is_pending(op) {
            let node = op - self.history.completed as u32 + 1;
            relink(&mut self.pending_next, &mut self.pending_prev, node);
        } else {
            relink(&mut self.next, &mut self.prev, 2 * op + 2);
            relink(&mut self.next, &mut self.prev, 2 * op + 1);
        }
    }
}

/// A circular doubly linked list of `len` nodes, sentinel 0, the others in `order`.
fn circular_list(len: usize, order: impl Iterator<Item = u32>) -> (Vec<u32>, Vec<u32>) {
    let mut next = vec![0; len];
    let mut prev = vec![0; len];
    let mut last = 0;
    for node in order {
        next[last as usize] = node;
        prev[node as usize] = last;
        last = node;
    }
    next[last as usize] = 0;
    prev[0] = last;
    (next, prev)
}

fn unlink(next: &mut [u32], prev: &mut [u32], node: u32) {
    let (p, n) = (prev[node as usize], next[node as usize]);
    next[p as usize] = n;
    prev[n as usize] = p;
}

fn relink(next: &mut [u32], prev: &mut [u32], node: u32) {
    let (p, n) = (prev[node as usize], next[node as usize]);
    next[p as usize] = node;
    prev[n as usize] = node;
}

/// The set of linearized completed operations, as a bitset with what the cache needs kept up to
/// date in O(1) amortized: a Zobrist hash, and the window of words that are neither all ones
/// (before `lo`) nor all zeros (from `hi`). Completed operations are numbered in call order, so
/// the window spans only the operations concurrent with the search frontier, and a cache entry
/// stores just that, not the whole history.
struct Done {
    words: Vec<u64>,
    lo: usize,
    hi: usize,
    zobrist: u64,
    remaining: usize,
}

impl Done {
    fn new(len: usize) -> Done {
        Done {
            words: vec![0; len.div_ceil(64)],
            lo: 0,
            hi: 0,
            zobrist: 0,
            remaining: len,
        }
    }

    fn insert(&mut self, i: usize) {
        let w = i / 64;
        self.words[w] |= 1 << (i % 64);
        self.zobrist ^= splitmix64(i as u64);
        self.remaining -= 1;
        self.hi = self.hi.max(w + 1);
        while self.lo < self.words.len() && self.words[self.lo] == u64::MAX {
            self.lo += 1;
        }
    }

    fn remove(&mut self, i: usize) {
        let w = i / 64;
        self.words[w] &= !(1 << (i % 64));
        self.zobrist ^= splitmix64(i as u64);
        self.remaining += 1;
        self.lo = self.lo.min(w);
        while self.hi > 0 && self.words[self.hi - 1] == 0 {
            self.hi -= 1;
        }
    }

    /// Together with `lo`, identifies the set exactly.
    fn window(&self) -> &[u64] {
        &self.words[self.lo..self.hi.max(self.lo)]
    }
}

/// Search nodes explored so far.
///
/// Keyed by (completed operations linearized, state). Each entry also holds which operations
/// without a reply were linearized; a node is skipped if an entry with the same key has a
/// subset of them, because such operations constrain nothing: every completion of the new node
/// is a completion of the old one, which has been (or is being) explored.
///
/// Entries live in one arena; entries with the same hash are chained through `next`. The map
/// is only probed, never iterated, so its order cannot affect the result.
#[derive(Default)]
struct Cache {
    heads: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
    entries: Vec<CacheEntry>,
    words: Vec<u64>,
}

struct CacheEntry {
    next: usize,
    state: ValueId,
    lo: usize,
    /// The done window, then the pending bitset, in `words`.
    start: usize,
    window: usize,
}

impl Cache {
    const NONE: usize = usize::MAX;

    /// Records the node; false if it (or a node dominating it) is already recorded.
    fn visit(&mut self, done: &Done, pending: &[u64], state: ValueId) -> bool {
        let hash = done.zobrist ^ splitmix64(u64::from(state) ^ 0x5bd1_e995_0000_0000);
        let head = self.heads.get(&hash).copied().unwrap_or(Cache::NONE);
        let window = done.window();
        let mut at = head;
        while at != Cache::NONE {
            let entry = &self.entries[at];
            if entry.state == state && entry.lo == done.lo && entry.window == window.len() {
                let stored = &self.words[entry.start..entry.start + window.len() + pending.len()];
                let (stored_window, stored_pending) = stored.split_at(window.len());
                let subset = stored_pending.iter().zip(pending).all(|(s, p)| s & !p == 0);
                if stored_window == window && subset {
                    return false;
                }
            }
            at = entry.next;
        }
        self.entries.push(CacheEntry {
            next: head,
            state,
            lo: done.lo,
            start: self.words.len(),
            window: window.len(),
        });
        self.words.extend_from_slice(window);
        self.words.extend_from_slice(pending);
        self.heads.insert(hash, self.entries.len() - 1);
        true
    }
}

/// The cache's keys are already well-mixed hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bytes as a quoted, escaped string.
struct Bytes<'a>(&'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &byte in self.0 {
            write!(f, "{}", std::ascii::escape_default(byte))?;
        }
        f.write_str("\"")
    }
}

/// A value or its absence.
struct Value<'a>(Option<&'a [u8]>);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => Bytes(value).fmt(f),
            None => f.write_str("absent"),
        }
    }
}

/// An operation, one line, without its key.
struct Describe<'a>(&'a Operation);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.0;
        write!(f, "client {} ", op.client)?;
        match &op.input {
            Input::Put { value, .. } => write!(f, "put {}", Bytes(value))?,
            Input::Get { .. } => f.write_str("get")?,
            Input::Delete { .. } => f.write_str("delete")?,
            Input::Cas { expected, new, .. } => write!(
                f,
                "cas(expected {}, new {})",
                Value(expected.as_deref()),
                Bytes(new)
            )?,
        }
        match (&op.output, op.ret) {
            (Some(output), Some(ret)) => {
                match output {
                    Output::Put => f.write_str(" -> ok")?,
                    Output::Get(value) => write!(f, " -> {}", Value(value.as_deref()))?,
                    Output::Delete { existed } => write!(f, " -> existed={existed}")?,
                    Output::Cas { swapped } => write!(f, " -> swapped={swapped}")?,
                }
                write!(f, " [{}, {ret}]", op.call)
            }
            _ => write!(f, " -> (no reply) [{}, never]", op.call),
        }
    }
}

/// The shape of a generated history, for tests and benchmarks.
#[derive(Clone, Copy, Debug)]
pub struct HistoryShape {
    pub clients: u64,
    pub keys: u64,
    pub operations: usize,
    /// Each operation takes 0..=max_latency ticks between call and return.
    pub max_latency: u64,
    /// Chance that an operation gets no reply; such an operation takes effect or not (even
    /// after the client gave up on it).
    pub timeout_percent: u64,
}

/// A linearizable history with unique written values, generated from `seed` by running
/// clients against a real map: each operation takes effect at a random tick between its call
/// and return. Meant for tests and benchmarks of [`check`].
pub fn generate_history(seed: u64, shape: &HistoryShape) -> Vec<Operation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut below = |n: u64| rng.next_u64() % n.max(1);
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut history: Vec<Operation> = Vec::with_capacity(shape.operations);
    // (tick, operation): when each operation that takes effect does.
    let mut effects: BTreeSet<(u64, usize)> = BTreeSet::new();
    let mut free_at = vec![0u64; shape.clients as usize];
    let mut now = 0;
    while history.len() < shape.operations || !effects.is_empty() {
        for (client, free) in free_at.iter_mut().enumerate() {
            if *free > now || history.len() >= shape.operations {
                continue;
            }
            let key = format!("k{}", below(shape.keys)).into_bytes();
            let value = format!("v{}", history.len()).into_bytes();
            let input = match below(100) {
                0..40 => Input::Get { key },
                40..70 => Input::Put { key, value },
                70..85 => {
                    let expected = match below(5) {
                        0..3 => store.get(&key).cloned(),
                        3 => None,
                        _ => Some(format!("v{}", below(history.len() as u64)).into_bytes()),
                    };
                    Input::Cas {
                        key,
                        expected,
                        new: value,
                    }
                }
                _ => Input::Delete { key },
            };
            let latency = below(shape.max_latency + 1);
            let timed_out = below(100) < shape.timeout_percent;
            let ret = (!timed_out).then_some(now + latency);
            if !timed_out {
                effects.insert((now + below(latency + 1), history.len()));
            } else if below(2) == 0 {
                effects.insert((now + below(2 * latency + 1), history.len()));
            }
            history.push(Operation {
                client: client as u64,
                input,
                call: now,
                ret,
                output: None,
            });
            *free = now + latency + 1 + below(3);
        }
        while let Some(&(tick, index)) = effects.first() {
            if tick != now {
                break;
            }
            effects.pop_first();
            let output = apply_to_map(&mut store, &history[index].input);
            if history[index].ret.is_some() {
                history[index].output = Some(output);
            }
        }
        now += 1;
    }
    history
}

/// The sequential specification, on a real map.
fn apply_to_map(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, input: &Input) -> Output {
    match input {
        Input::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            Output::Put
        }
        Input::Get { key } => Output::Get(store.get(key).cloned()),
        Input::Delete { key } => Output::Delete {
            existed: store.remove(key).is_some(),
        },
        Input::Cas { key, expected, new } => {
            let swapped = store.get(key) == expected.as_ref();
            if swapped {
                store.insert(key.clone(), new.clone());
            }
            Output::Cas { swapped }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"k";

    fn op(client: u64, input: Input, call: u64, ret: u64, output: Output) -> Operation {
        Operation {
            client,
            input,
            call,
            ret: Some(ret),
            output: Some(output),
        }
    }

    fn no_reply(client: u64, input: Input, call: u64) -> Operation {
        Operation {
            client,
            input,
            call,
            ret: None,
            output: None,
        }
    }

    fn put(value: &str) -> Input {
        Input::Put {
            key: K.to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn get() -> Input {
        Input::Get { key: K.to_vec() }
    }

    fn delete() -> Input {
        Input::Delete { key: K.to_vec() }
    }

    fn cas(expected: Option<&str>, new: &str) -> Input {
        Input::Cas {
            key: K.to_vec(),
            expected: expected.map(|e| e.as_bytes().to_vec()),
            new: new.as_bytes().to_vec(),
        }
    }

    fn saw(value: Option<&str>) -> Output {
        Output::Get(value.map(|v| v.as_bytes().to_vec()))
    }

    fn verdict(history: &[Operation]) -> Verdict {
        check(history, Budget::default())
    }

    fn assert_linearizable(history: &[Operation]) {
        assert_eq!(verdict(history), Verdict::Linearizable, "{history:#?}");
    }

    /// Rejected, on `key`; returns the explanation.
    fn assert_rejected(history: &[Operation], key: &[u8]) -> String {
        match verdict(history) {
            Verdict::NotLinearizable {
                key: k,
                explanation,
            } => {
                assert_eq!(k, key);
                explanation
            }
            other => panic!("expected a violation, got {other:?} for {history:#?}"),
        }
    }

    #[test]
    fn empty_history() {
        assert_linearizable(&[]);
    }

    #[test]
    fn sequential() {
        assert_linearizable(&[
            op(0, get(), 0, 1, saw(None)),
            op(0, put("a"), 2, 3, Output::Put),
            op(1, get(), 4, 5, saw(Some("a"))),
            op(0, put("b"), 6, 7, Output::Put),
            op(1, get(), 8, 9, saw(Some("b"))),
            op(1, delete(), 10, 11, Output::Delete { existed: true }),
            op(0, get(), 12, 13, saw(None)),
        ]);
    }

    #[test]
    fn concurrent_writes_read_in_either_order() {
        for (first, second) in [("a", "b"), ("b", "a")] {
            assert_linearizable(&[
                op(0, put("a"), 0, 10, Output::Put),
                op(1, put("b"), 0, 10, Output::Put),
                op(2, get(), 11, 12, saw(Some(second))),
            ]);
            // Reads during the writes see them in either order, as long as they agree.
            assert_linearizable(&[
                op(0, put("a"), 0, 10, Output::Put),
                op(1, put("b"), 0, 10, Output::Put),
                op(2, get(), 1, 2, saw(Some(first))),
                op(2, get(), 3, 4, saw(Some(second))),
                op(3, get(), 11, 12, saw(Some(second))),
            ]);
        }
    }

    #[test]
    fn equal_times_overlap() {
        // The get is called at the tick the put returns: concurrent, so it may miss the put.
        assert_linearizable(&[
            op(0, put("a"), 0, 5, Output::Put),
            op(1, get(), 5, 6, saw(None)),
        ]);
        // One tick later it may not.
        assert_rejected(
            &[
                op(0, put("a"), 0, 5, Output::Put),
                op(1, get(), 6, 7, saw(None)),
            ],
            K,
        );
    }

    #[test]
    fn timed_out_put_observed_later() {
        assert_linearizable(&[
            op(0, put("a"), 0, 1, Output::Put),
            no_reply(1, put("b"), 2),
            op(0, get(), 10, 11, saw(Some("a"))),
            op(0, get(), 20, 21, saw(Some("b"))),
            op(0, get(), 30, 31, saw(Some("b"))),
        ]);
    }

    #[test]
    fn timed_out_put_never_observed() {
        assert_linearizable(&[
            op(0, put("a"), 0, 1, Output::Put),
            no_reply(1, put("b"), 2),
            no_reply(1, delete(), 3),
            op(0, get(), 10, 11, saw(Some("a"))),
            op(0, get(), 20, 21, saw(Some("a"))),
        ]);
    }

    #[test]
    fn timed_out_op_takes_effect_only_after_its_call() {
        assert_rejected(
            &[op(0, get(), 0, 1, saw(Some("a"))), no_reply(1, put("a"), 2)],
            K,
        );
    }

    #[test]
    fn timed_out_op_takes_effect_at_most_once() {
        assert_rejected(
            &[
                no_reply(1, put("a"), 0),
                op(0, get(), 1, 2, saw(Some("a"))),
                op(0, put("b"), 3, 4, Output::Put),
                op(0, get(), 5, 6, saw(Some("a"))),
            ],
            K,
        );
    }

    #[test]
    fn timed_out_writes_in_any_order() {
        // Several writes without a reply, each read once, in an order unrelated to their calls.
        assert_linearizable(&[
            no_reply(1, put("a"), 0),
            no_reply(2, put("b"), 0),
            no_reply(3, put("c"), 0),
            op(0, get(), 1, 2, saw(Some("c"))),
            op(0, get(), 3, 4, saw(Some("a"))),
            op(0, get(), 5, 6, saw(Some("b"))),
        ]);
    }

    #[test]
    fn interchangeable_timed_out_ops_each_take_effect_once() {
        // Two timed-out puts of the same value: the first explains the first read, the second
        // (called after the delete) the last.
        let history = |second_call| {
            [
                no_reply(1, put("a"), 0),
                no_reply(2, put("a"), second_call),
                op(0, get(), 1, 2, saw(Some("a"))),
                op(0, delete(), 3, 4, Output::Delete { existed: true }),
                op(0, get(), 6, 7, saw(Some("a"))),
            ]
        };
        assert_linearizable(&history(5));
        assert_linearizable(&history(0));
        // Called after the last read returned: only one put can explain the reads.
        assert_rejected(&history(8), K);
    }

    #[test]
    fn unobserved_values_are_told_apart_by_delete_and_cas() {
        // "b" and "c" are never read, but a cas expecting one of them observes which.
        assert_linearizable(&[
            op(0, put("b"), 0, 1, Output::Put),
            op(0, put("c"), 2, 3, Output::Put),
            op(1, cas(Some("b"), "d"), 4, 5, Output::Cas { swapped: false }),
            op(1, delete(), 6, 7, Output::Delete { existed: true }),
        ]);
        assert_rejected(
            &[
                op(0, put("b"), 0, 1, Output::Put),
                op(0, put("c"), 2, 3, Output::Put),
                op(1, cas(Some("b"), "d"), 4, 5, Output::Cas { swapped: true }),
            ],
            K,
        );
    }

    #[test]
    fn cas_chain() {
        assert_linearizable(&[
            op(0, cas(None, "a"), 0, 1, Output::Cas { swapped: true }),
            op(0, cas(None, "x"), 2, 3, Output::Cas { swapped: false }),
            op(1, cas(Some("a"), "b"), 4, 5, Output::Cas { swapped: true }),
            op(0, cas(Some("a"), "c"), 6, 7, Output::Cas { swapped: false }),
            op(1, cas(Some("b"), "c"), 8, 9, Output::Cas { swapped: true }),
            op(0, get(), 10, 11, saw(Some("c"))),
            op(0, delete(), 12, 13, Output::Delete { existed: true }),
            op(1, cas(None, "d"), 14, 15, Output::Cas { swapped: true }),
            op(0, get(), 16, 17, saw(Some("d"))),
        ]);
    }

    #[test]
    fn concurrent_cas_one_wins() {
        assert_linearizable(&[
            op(0, put("a"), 0, 1, Output::Put),
            op(
                1,
                cas(Some("a"), "b"),
                2,
                10,
                Output::Cas { swapped: false },
            ),
            op(2, cas(Some("a"), "c"), 2, 10, Output::Cas { swapped: true }),
            op(0, get(), 11, 12, saw(Some("c"))),
        ]);
    }

    #[test]
    fn delete_existed() {
        assert_linearizable(&[
            op(0, delete(), 0, 1, Output::Delete { existed: false }),
            op(0, put("a"), 2, 3, Output::Put),
            op(1, delete(), 4, 5, Output::Delete { existed: true }),
            op(0, delete(), 6, 7, Output::Delete { existed: false }),
            op(1, get(), 8, 9, saw(None)),
        ]);
        // Two concurrent deletes of a present key: exactly one saw it.
        assert_linearizable(&[
            op(0, put("a"), 0, 1, Output::Put),
            op(1, delete(), 2, 5, Output::Delete { existed: false }),
            op(2, delete(), 2, 5, Output::Delete { existed: true }),
        ]);
    }

    #[test]
    fn rejects_stale_read_after_completed_write() {
        let explanation = assert_rejected(
            &[
                op(0, put("a"), 0, 1, Output::Put),
                op(0, put("b"), 2, 3, Output::Put),
                op(1, get(), 4, 5, saw(Some("a"))),
            ],
            K,
        );
        assert!(explanation.contains("key \"k\""), "{explanation}");
        assert!(
            explanation.contains("#2 client 1 get -> \"a\" [4, 5]"),
            "{explanation}"
        );
        assert!(explanation.contains("value is \"b\""), "{explanation}");
    }

    #[test]
    fn rejects_read_of_value_never_written() {
        assert_rejected(
            &[
                op(0, put("a"), 0, 10, Output::Put),
                op(1, get(), 1, 11, saw(Some("z"))),
            ],
            K,
        );
    }

    #[test]
    fn rejects_reads_going_back_in_time() {
        assert_rejected(
            &[
                op(0, put("a"), 0, 1, Output::Put),
                op(1, put("b"), 2, 20, Output::Put),
                op(2, get(), 3, 4, saw(Some("b"))),
                op(2, get(), 5, 6, saw(Some("a"))),
            ],
            K,
        );
    }

    #[test]
    fn rejects_cas_succeeding_twice() {
        assert_rejected(
            &[
                op(0, put("a"), 0, 1, Output::Put),
                op(1, cas(Some("a"), "b"), 2, 3, Output::Cas { swapped: true }),
                op(2, cas(Some("a"), "c"), 4, 5, Output::Cas { swapped: true }),
            ],
            K,
        );
    }

    #[test]
    fn rejects_delete_of_absent_key_that_existed() {
        assert_rejected(
            &[op(0, delete(), 0, 1, Output::Delete { existed: true })],
            K,
        );
        assert_rejected(
            &[
                op(0, put("a"), 0, 1, Output::Put),
                op(0, delete(), 2, 3, Output::Delete { existed: true }),
                op(1, delete(), 4, 5, Output::Delete { existed: true }),
            ],
            K,
        );
    }

    #[test]
    fn names_the_violating_key() {
        let on = |key: &[u8], input: Input| match input {
            Input::Put { value, .. } => Input::Put {
                key: key.to_vec(),
                value,
            },
            Input::Get { .. } => Input::Get { key: key.to_vec() },
            other => other,
        };
        let history = [
            op(0, on(b"a", put("1")), 0, 1, Output::Put),
            op(0, on(b"b", put("2")), 0, 1, Output::Put),
            op(1, on(b"a", get()), 2, 3, saw(Some("1"))),
            op(1, on(b"b", get()), 2, 3, saw(Some("1"))),
        ];
        assert_rejected(&history, b"b");
    }

    #[test]
    fn malformed_history_is_unknown() {
        let history = [op(0, put("a"), 5, 4, Output::Put)];
        assert!(matches!(verdict(&history), Verdict::Unknown { .. }));
        let history = [op(0, put("a"), 0, 1, saw(None))];
        assert!(matches!(verdict(&history), Verdict::Unknown { .. }));
    }

    #[test]
    fn out_of_budget_is_unknown_never_false() {
        let history = [
            op(0, put("a"), 0, 1, Output::Put),
            op(0, put("b"), 2, 3, Output::Put),
            op(1, get(), 4, 5, saw(Some("a"))),
        ];
        let tiny = Budget {
            max_states_per_key: 1,
        };
        assert!(matches!(check(&history, tiny), Verdict::Unknown { .. }));
    }

    const SMALL: HistoryShape = HistoryShape {
        clients: 5,
        keys: 3,
        operations: 300,
        max_latency: 6,
        timeout_percent: 5,
    };

    #[test]
    fn generated_histories_are_linearizable() {
        for seed in 0..100 {
            let history = generate_history(seed, &SMALL);
            let (verdict, stats) = check_with_stats(&history, Budget::default());
            assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
            assert_eq!(stats.operations, SMALL.operations);
        }
    }

    /// A completed write of a present value (put, or a cas that swapped).
    fn written(op: &Operation) -> Option<&[u8]> {
        match (&op.input, &op.output) {
            (Input::Put { value, .. }, Some(Output::Put)) => Some(value),
            (Input::Cas { new, .. }, Some(Output::Cas { swapped: true })) => Some(new),
            _ => None,
        }
    }

    /// A completed operation that leaves the key with a different value than any other write.
    fn overwrites(op: &Operation) -> bool {
        op.is_completed()
            && matches!(
                (&op.input, &op.output),
                (Input::Put { .. }, _)
                    | (Input::Delete { .. }, _)
                    | (_, Some(Output::Cas { swapped: true }))
            )
    }

    /// Makes a completed read return a value overwritten strictly before it: written by `w0`,
    /// overwritten by `w1`, with `w0.ret < w1.call` and `w1.ret < read.call`. Values are unique,
    /// so no linearization explains the read. Returns the key, or `None` if there is no such
    /// triple.
    fn plant_stale_read(history: &mut [Operation], pick: u64) -> Option<Vec<u8>> {
        let mut triples = Vec::new();
        for (r, read) in history.iter().enumerate() {
            if !read.is_completed() || !matches!(read.input, Input::Get { .. }) {
                continue;
            }
            let same_key = |op: &Operation| op.input.key() == read.input.key();
            let last_overwrite = history
                .iter()
                .filter(|w1| same_key(w1) && overwrites(w1) && w1.ret < Some(read.call))
                .max_by_key(|w1| w1.call);
            let Some(w1) = last_overwrite else { continue };
            let stale = history.iter().find_map(|w0| {
                let before = same_key(w0) && w0.ret < Some(w1.call);
                written(w0).filter(|_| before && w0.is_completed())
            });
            if let Some(value) = stale {
                triples.push((r, value.to_vec()));
            }
        }
        let (r, value) = triples.get(pick as usize % triples.len().max(1))?.clone();
        assert_ne!(history[r].output, Some(Output::Get(Some(value.clone()))));
        history[r].output = Some(Output::Get(Some(value)));
        Some(history[r].input.key().to_vec())
    }

    #[test]
    fn generated_histories_with_a_stale_read_are_rejected() {
        let mut planted = 0;
        for seed in 0..100 {
            let mut history = generate_history(seed, &SMALL);
            let Some(key) = plant_stale_read(&mut history, seed.wrapping_mul(7919)) else {
                continue;
            };
            planted += 1;
            let explanation = assert_rejected(&history, &key);
            assert!(explanation.contains("cannot be placed"), "{explanation}");
        }
        assert!(planted >= 90, "only {planted} histories had a stale read");
    }

    /// The definition, by brute force: some order of the operations respects real time and the
    /// model, and contains every completed operation (others may be left out).
    fn brute_force(history: &[Operation]) -> bool {
        fn search(history: &[Operation], placed: &mut [bool], state: Option<Vec<u8>>) -> bool {
            let complete = (0..history.len()).all(|i| placed[i] || !history[i].is_completed());
            if complete {
                return true;
            }
            for i in 0..history.len() {
                let ready = !placed[i]
                    && (0..history.len()).all(|j| {
                        placed[j]
                            || !history[j].is_completed()
                            || history[j].ret >= Some(history[i].call)
                    });
                if !ready {
                    continue;
                }
                let mut store: BTreeMap<Vec<u8>, Vec<u8>> =
                    state.iter().map(|v| (K.to_vec(), v.clone())).collect();
                let output = apply_to_map(&mut store, &history[i].input);
                if history[i].is_completed() && history[i].output != Some(output) {
                    continue;
                }
                placed[i] = true;
                if search(history, placed, store.remove(K)) {
                    return true;
                }
                placed[i] = false;
            }
            false
        }
        search(history, &mut vec![false; history.len()], None)
    }

    fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
        rng.next_u64() % n
    }

    /// A value from a tiny pool, so that states repeat; absent one time in `absent_one_in`. Reads
    /// and cas expect only "a" or "b" (mostly): "c" is often written and never observed.
    fn small_value(rng: &mut ChaCha8Rng, absent_one_in: u64) -> Option<&'static str> {
        let value = ["a", "b", "a", "b", "c"][below(rng, 5) as usize];
        (below(rng, absent_one_in) != 0).then_some(value)
    }

    /// A small arbitrary history on one key, mostly not linearizable.
    fn arbitrary_history(rng: &mut ChaCha8Rng) -> Vec<Operation> {
        let len = 1 + below(rng, 8);
        (0..len)
            .map(|_| {
                let value = ["a", "b", "c"][below(rng, 3) as usize];
                let (input, output) = match below(rng, 4) {
                    0 => (put(value), Output::Put),
                    1 => (get(), saw(small_value(rng, 3))),
                    2 => {
                        let existed = below(rng, 2) == 0;
                        (delete(), Output::Delete { existed })
                    }
                    _ => {
                        let expected = small_value(rng, 3);
                        let swapped = below(rng, 2) == 0;
                        (cas(expected, value), Output::Cas { swapped })
                    }
                };
                let client = below(rng, 3);
                let call = below(rng, 8);
                let ret = call + below(rng, 4);
                if below(rng, 3) == 0 {
                    no_reply(client, input, call)
                } else {
                    op(client, input, call, ret, output)
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..5000 {
            let history = arbitrary_history(&mut rng);
            let expected = brute_force(&history);
            let got = verdict(&history);
            assert_eq!(
                got == Verdict::Linearizable,
                expected,
                "{got:?} for {history:#?}"
            );
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
            // A small budget may give up, but never gives a wrong answer.
            let tiny = Budget {
                max_states_per_key: 3,
            };
            match check(&history, tiny) {
                Verdict::Linearizable => assert!(expected),
                Verdict::NotLinearizable { .. } => assert!(!expected),
                Verdict::Unknown { .. } => {}
            }
        }
        assert!(yes > 300 && no > 300, "{yes} linearizable, {no} not");
    }
}
