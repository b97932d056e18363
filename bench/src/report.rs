//! Markdown tables and JSON lines of phase results.

use crate::workloads::PhaseResult;

const HEADER: &str = "| engine | phase | ops | ops/s | p50 µs | p95 µs | p99 µs | max µs | write amp | space amp | disk MiB | drain s | check |\n\
                      |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";

/// One table: a row per result, in the order given.
pub fn table<'a>(results: impl IntoIterator<Item = &'a PhaseResult>) -> String {
    let mut out = String::from(HEADER);
    for r in results {
        out.push_str(&row(r));
    }
    out
}

/// One table per phase, a row per engine, phases in the order they ran.
pub fn tables_by_phase(results: &[PhaseResult]) -> String {
    let mut phases: Vec<&str> = Vec::new();
    for r in results {
        if !phases.contains(&r.phase.as_str()) {
            phases.push(&r.phase);
        }
    }
    let mut out = String::new();
    for phase in phases {
        out.push_str(&format!("\n### {phase}\n\n"));
        out.push_str(&table(results.iter().filter(|r| r.phase == phase)));
    }
    out
}

fn row(r: &PhaseResult) -> String {
    let l = &r.latency;
    format!(
        "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        r.engine,
        r.phase,
        r.ops,
        r.ops_per_sec(),
        micros(l.p50_us),
        micros(l.p95_us),
        micros(l.p99_us),
        micros(l.max_us),
        optional(r.write_amp, 2),
        optional(r.space_amp, 2),
        optional(r.disk_mib, 0),
        optional(r.drain_secs, 1),
        r.check
    )
}

/// Two decimals below 10 µs, one below 100, none above.
fn micros(us: f64) -> String {
    let decimals = if us < 10.0 {
        2
    } else if us < 100.0 {
        1
    } else {
        0
    };
    format!("{us:.decimals$}")
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "—".to_string(), |v| format!("{v:.decimals$}"))
}

/// One result as a JSON object on one line.
pub fn json_line(r: &PhaseResult) -> String {
    let number = |v: Option<f64>| v.map_or_else(|| "null".to_string(), |v| format!("{v}"));
    let l = &r.latency;
    format!(
        "{{\"engine\":{},\"phase\":{},\"ops\":{},\"secs\":{},\"ops_per_sec\":{},\"p50_us\":{},\"p95_us\":{},\"p99_us\":{},\"max_us\":{},\"write_amp\":{},\"space_amp\":{},\"disk_mib\":{},\"drain_secs\":{},\"check\":{},\"engine_state\":{}}}",
        json_string(&r.engine),
        json_string(&r.phase),
        r.ops,
        r.secs,
        r.ops_per_sec(),
        l.p50_us,
        l.p95_us,
        l.p99_us,
        l.max_us,
        number(r.write_amp),
        number(r.space_amp),
        number(r.disk_mib),
        number(r.drain_secs),
        json_string(&r.check),
        json_string(&r.engine_state)
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
