//! Crash trials (issue 17), short mode: 20 trials per command (`archive-wal --jobs 2`,
//! `put-wal`, `archive-wal` over a streaming queue, `delete-wals`), each stopped at a failpoint
//! of the commit or killed at a random moment, every other one followed by a power cut, then
//! rerun to completion; zero violations of the archive contract allowed (see
//! `walvault_tests::crash`). `just crash-trials` runs 200 per command; `WALVAULT_CRASH_TRIALS`
//! and `WALVAULT_CRASH_SEED` set the count and the seed, `WALVAULT_CRASH_REPORT` a file for the
//! table.

use std::fmt::Write as _;

use walvault_tests::crash::{Bench, Stop, Workload, plan};

#[test]
fn no_crash_or_power_cut_loses_a_wal() {
    let per_workload: usize = std::env::var("WALVAULT_CRASH_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("WALVAULT_CRASH_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(17);
    eprintln!("crash trials: {per_workload} per command, seed {seed}");
    let trials = plan(per_workload, seed);
    let mut table = String::from(
        "| command | trials | stopped at a failpoint | killed | with a power cut | changes undone by power cuts | violations |\n|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for workload in Workload::ALL {
        let bench = Bench::new(workload);
        let (mut at_point, mut killed, mut cuts, mut undone, mut violations) = (0, 0, 0, 0, 0);
        let mine: Vec<_> = trials.iter().filter(|t| t.workload == workload).collect();
        for (n, trial) in mine.iter().enumerate() {
            let outcome = bench.run(trial);
            match (trial.stop, outcome.stopped) {
                (Stop::At(..), true) => at_point += 1,
                (Stop::Kill(_), true) => killed += 1,
                _ => {}
            }
            if trial.power_cut {
                cuts += 1;
                undone += outcome.undone;
            }
            violations += outcome.violations.len();
            if !outcome.violations.is_empty() {
                failures.push(format!(
                    "{workload:?} trial {n} ({trial:?}):\n  {}",
                    outcome.violations.join("\n  ")
                ));
            }
        }
        let _ = writeln!(
            table,
            "| {workload:?} | {} | {at_point} | {killed} | {cuts} | {undone} | {violations} |",
            mine.len()
        );
        // A trial that never stops proves nothing: most must have been stopped.
        assert!(
            (at_point + killed) * 3 >= mine.len() * 2,
            "{workload:?}: only {} of {} trials stopped the command",
            at_point + killed,
            mine.len()
        );
    }
    eprintln!("{table}");
    if let Ok(path) = std::env::var("WALVAULT_CRASH_REPORT") {
        std::fs::write(path, &table).expect("report");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
