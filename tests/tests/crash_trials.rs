//! Crash trials (issue 17), short mode: 20 trials per command (`archive-wal --jobs 2`, the same
//! uncompressed (queued files linked, not copied), `put-wal`, `put-wal` with `archive_async`
//! (its background worker stopped or killed too), `archive-wal` over a streaming queue,
//! `delete-wals`), each stopped at a failpoint
//! of the commit or killed at a random moment, every other one followed by a power cut, then
//! rerun to completion; zero violations of the archive contract allowed (see
//! `walvault_tests::crash`). `just crash-trials` runs 200 per command; `WALVAULT_CRASH_TRIALS`
//! and `WALVAULT_CRASH_SEED` set the count and the seed, `WALVAULT_CRASH_REPORT` a file for the
//! table.
//!
//! Then `receive-wal` with a real PostgreSQL 15 and `pg_receivewal`, killed (SIGKILL) again
//! and again while pgbench writes, with `archive-wal` stopped at a failpoint between the
//! kills: every streamed segment ends up archived once, byte for byte what the server wrote
//! (4 kills here, `WALVAULT_RECEIVE_KILLS` for more).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use walvault_core::wal::SegmentSize;
use walvault_tests::crash::{Bench, Stop, Workload, plan, power_cut};
use walvault_tests::{
    SERVER, World, assert_contiguous_sized, describe, file_names, pgbench_in_background,
    small_segment, switch_and_wait_streamed,
};

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

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

#[test]
fn killing_receive_wal_and_archive_wal_again_and_again_loses_no_streamed_wal() {
    let kills: u32 = std::env::var("WALVAULT_RECEIVE_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4);
    let mut rng: u64 = std::env::var("WALVAULT_CRASH_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(17)
        .max(1);
    let mut next = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    // 1 MiB segments: many segments, and kills inside and between them.
    let world = World::new("compression = \"zstd\"\njobs = 2\nwal_segment_size = \"1MB\"");
    let mut primary = world.small_segment_cluster("primary");
    // wal_keep_size: the server keeps every segment, to compare the archive with.
    primary
        .configure("wal_level = replica\nmax_wal_size = 64MB\nwal_keep_size = '4GB'\n")
        .expect("configure");
    primary.start().expect("start");
    world.add_config(&format!(
        "streaming_archiver = true\narchiver = false\nslot_name = \"walvault\"\nconninfo = \"{}\"",
        primary.conninfo()
    ));
    let out = world.walvault(&["receive-wal", SERVER, "--create-slot"]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut receiver = world.start_receive_wal();
    primary
        .pgbench(&["-i", "-s", "1", "-q"])
        .expect("pgbench -i");
    let points = Workload::Streaming.failpoints();
    let mut orphans_stopped = 0;
    for round in 0..kills {
        let load = pgbench_in_background(&world, &primary, 2);
        std::thread::sleep(Duration::from_millis(200 + next(1500)));
        let child = receiver.pg_receivewal_pid();
        receiver.kill_walvault();
        // archive-wal over what streamed so far, stopped at one of its failpoints.
        let point = points[next(points.len() as u64) as usize];
        let mut cmd = world.walvault_command();
        cmd.args(["archive-wal", SERVER])
            .env("WALVAULT_CRASH_AT", format!("{point}:{}", 1 + next(3)));
        let _ = cmd.output().expect("archive-wal");
        // The next receive-wal stops the orphan its killed predecessor left streaming.
        receiver = world.start_receive_wal();
        if let Some(child) = child {
            assert!(
                !alive(child),
                "round {round}: the killed receive-wal's pg_receivewal (pid {child}) still runs; \
                 receive-wal log:\n{}",
                receiver.log_text()
            );
            orphans_stopped += usize::from(receiver.log_text().contains("still runs unsupervised"));
        }
        load.join().expect("load");
    }
    assert!(orphans_stopped > 0, "no round left an orphan to stop");
    let last = switch_and_wait_streamed(&world, &primary);
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_contiguous_sized(&world, &last, SegmentSize::new(1 << 20).expect("1 MiB"));
    if world.errors().exists() {
        assert!(
            file_names(&world.errors()).is_empty(),
            "{:?}",
            file_names(&world.errors())
        );
    }
    // Every archived segment is byte for byte what the server wrote.
    let restored = world.path("restored");
    fs::create_dir_all(&restored).expect("dir");
    world.own_all();
    let mut compared = 0;
    for entry in world.catalogue() {
        if entry.name.as_str() > last.as_str() || entry.name.len() != 24 {
            continue;
        }
        let dest = restored.join(&entry.name);
        let out = world.walvault(&["get-wal", SERVER, &entry.name, &dest.display().to_string()]);
        assert!(out.status.success(), "{}", describe(&out));
        let server = fs::read(primary.data.join("pg_wal").join(&entry.name)).expect("pg_wal copy");
        assert!(
            fs::read(&dest).expect("restored") == server,
            "{} differs",
            entry.name
        );
        compared += 1;
    }
    assert!(compared >= 2, "only {compared} segments compared");
    let check = world.walvault(&["check", SERVER]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    for expected in ["archiver errors: OK", "temporary files: OK"] {
        assert!(text.contains(expected), "missing {expected:?}:\n{text}");
    }
    eprintln!(
        "{kills} kills of receive-wal, {orphans_stopped} orphans stopped, {compared} segments compared"
    );
    drop(receiver);
}

/// A catalogue line that a writer appended and died before syncing is visible to the next
/// run. That run takes it as durable (it writes no line of its own, and acknowledges the WAL
/// or releases its source), so it must sync it first: here `put-wal` of a WAL already stored
/// finds the line, and the power cut that follows must not take it. The crash trials found
/// this (an `archive_async` record acknowledged a WAL whose line a power cut then took).
#[test]
fn a_line_a_crashed_writer_left_unsynced_is_synced_before_it_is_relied_on() {
    let world = World::new("wal_segment_size = \"1MB\"\ncompression = \"zstd\"");
    let name = "000000010000000000000001";
    let path = world.in_pg_wal(name, &small_segment(name, 1));
    let path = path.to_str().expect("utf-8");
    let out = world.walvault(&["put-wal", SERVER, path]);
    assert!(out.status.success(), "{}", describe(&out));
    let catalogue = world.wals().join(format!("{SERVER}-xlog.db"));
    // As a writer that died between its append and its sync leaves it: the line is in the
    // file, not yet on disk.
    let journal = world.path("fs-journal");
    fs::write(&journal, format!("append\t{}\t0\n", catalogue.display())).expect("journal");
    world.own_all();
    let out = world
        .walvault_command()
        .args(["put-wal", SERVER, path])
        .env("WALVAULT_FS_JOURNAL", &journal)
        .output()
        .expect("put-wal");
    assert!(out.status.success(), "{}", describe(&out));
    power_cut(&journal, &HashMap::new());
    let text = fs::read_to_string(&catalogue).unwrap_or_default();
    assert!(
        text.contains(name),
        "put-wal exited 0 on a line the power cut then took:\n{}",
        fs::read_to_string(&journal).unwrap_or_default()
    );
}
