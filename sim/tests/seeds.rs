//! Replays every regression seed under `seeds/`, forever.

use std::path::Path;
use ziggy_core::PlantedBug;
use ziggy_sim::workload::Machine;
use ziggy_sim::{run_seed, Options};

struct SeedFile {
    name: String,
    seed: u64,
    bug: Option<PlantedBug>,
    /// A long seed (100,000 requests; `vopr --long-share 100`).
    long: bool,
    /// The state machine it was found on (`vopr --machine`; default kv).
    machine: Machine,
}

fn parse(path: &Path) -> SeedFile {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut seed = None;
    let mut bug = None;
    let mut long = false;
    let mut machine = Machine::Kv;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        match key.trim() {
            "seed" => {
                seed = Some(
                    value
                        .trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{name}: bad seed")),
                )
            }
            "plant_bug" => {
                bug = Some(
                    PlantedBug::parse(value.trim())
                        .unwrap_or_else(|| panic!("{name}: unknown bug")),
                )
            }
            "long" => long = value.trim() == "true",
            "machine" => {
                machine = value
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            }
            "found" => {}
            other => panic!("{name}: unknown key {other:?}"),
        }
    }
    let seed = seed.unwrap_or_else(|| panic!("{name}: no seed"));
    SeedFile {
        name,
        seed,
        bug,
        long,
        machine,
    }
}

#[test]
fn every_regression_seed_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seed"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "the seed corpus is missing");
    for path in files {
        let file = parse(&path);
        let options = match file.bug {
            Some(bug) => Options::for_bug(file.seed, bug),
            None => Options::from_seed(file.seed),
        };
        let mut options = options.long_share(if file.long { 100 } else { 0 });
        options.machine = file.machine;
        let outcome = match run_seed(options) {
            Ok(outcome) => outcome,
            Err(_) if file.bug.is_some() => continue, // an assertion caught the planted bug
            Err(panic) => panic!("{}: crashed: {panic}", file.name),
        };
        if file.bug.is_some() {
            assert!(
                !outcome.verdict.passed(),
                "{}: the planted bug went unnoticed: {:?}",
                file.name,
                outcome.verdict
            );
        } else {
            assert!(
                outcome.verdict.passed(),
                "{}: {:?}",
                file.name,
                outcome.verdict
            );
        }
    }
}
