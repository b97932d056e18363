//! How long the linearizability checker takes on simulator-sized histories.
//!
//! `cargo bench -p ziggy-sim --bench linearizability`. Histories are generated from fixed seeds
//! (clients running against a real map, a few operations timing out), so the work is the same on
//! every run; only the wall time varies. Each case is checked a few times and the best time is
//! reported, because the machine is shared.

use std::time::{Duration, Instant};

use ziggy_sim::linearizability::{
    check_with_stats, generate_history, Budget, HistoryShape, Input, Operation, Output, Stats,
    Verdict,
};

const RUNS: usize = 3;

struct Case {
    name: &'static str,
    shape: HistoryShape,
    /// Make the last read of the busiest key return a value never written, so that the search
    /// must exhaust that key's history before it can say no.
    plant_violation: bool,
}

fn main() {
    let shape = |operations, keys, timeout_percent| HistoryShape {
        clients: 8,
        keys,
        operations,
        max_latency: 10,
        timeout_percent,
    };
    let case = |name, shape, plant_violation| Case {
        name,
        shape,
        plant_violation,
    };
    let cases = [
        case("10k ops, 50 keys", shape(10_000, 50, 2), false),
        case("100k ops, 50 keys", shape(100_000, 50, 2), false),
        case("10k ops, 50 keys, violation", shape(10_000, 50, 2), true),
        case("100k ops, 50 keys, violation", shape(100_000, 50, 2), true),
        case("10k ops, 1 key", shape(10_000, 1, 2), false),
        case(
            "10k ops, 1 key, no timeouts, violation",
            shape(10_000, 1, 0),
            true,
        ),
        // Beyond what the search handles: the budget turns it into "unknown".
        case("10k ops, 1 key, violation", shape(10_000, 1, 2), true),
    ];
    println!("8 clients, latency 0..=10 ticks, 2% of operations time out unless stated");
    println!(
        "{:<40} {:>9} {:>10} {:>10} {:>10}  verdict",
        "case", "timed out", "states", "max/key", "best time"
    );
    for case in &cases {
        run(case);
    }
}

fn run(case: &Case) {
    let mut history = generate_history(42, &case.shape);
    if case.plant_violation {
        plant_violation(&mut history);
    }
    let timed_out = history.iter().filter(|op| !op.is_completed()).count();
    let mut best = Duration::MAX;
    let mut result: Option<(Verdict, Stats)> = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let outcome = check_with_stats(&history, Budget::default());
        best = best.min(start.elapsed());
        result = Some(outcome);
    }
    let (verdict, stats) = result.expect("at least one run");
    let verdict = match verdict {
        Verdict::Linearizable => "linearizable".to_string(),
        Verdict::NotLinearizable { key, .. } => {
            format!("NOT linearizable ({})", String::from_utf8_lossy(&key))
        }
        Verdict::Unknown { reason, .. } => format!("unknown: {reason}"),
    };
    println!(
        "{:<40} {:>9} {:>10} {:>10} {:>7.1} ms  {verdict}",
        case.name,
        timed_out,
        stats.states,
        stats.max_states_per_key,
        best.as_secs_f64() * 1e3
    );
}

/// The last completed read of the first operation's key now returns a value nobody wrote.
fn plant_violation(history: &mut [Operation]) {
    let key = history[0].input.key().to_vec();
    let read = history
        .iter_mut()
        .rev()
        .find(|op| op.is_completed() && matches!(&op.input, Input::Get { key: k } if *k == key))
        .expect("a completed read of the key");
    read.output = Some(Output::Get(Some(b"never written".to_vec())));
}
