//! The one batch engine through the shipped binary (issue 16): `put-wal` is a batch of one
//! and gets the same commit as `archive-wal`, the repair of a missing catalogue line included.

use std::fs;
use std::process::Output;

use walvault_tests::{SERVER, World, describe, queue_file, small_segment};

const S01: &str = "000000010000000000000001";
const S02: &str = "000000010000000000000002";

#[test]
fn put_wal_repairs_a_catalogue_line_lost_between_store_and_catalogue() {
    let world = World::new("wal_segment_size = \"1MB\"\ncompression = \"zstd\"");
    let pg_wal = world.path("pg_wal");
    fs::create_dir_all(&pg_wal).expect("pg_wal");
    queue_file(&pg_wal.join(S01), &small_segment(S01, 1));
    queue_file(&pg_wal.join(S02), &small_segment(S02, 2));
    world.own_all();
    let put = |name: &str| {
        let out = world.walvault(&[
            "put-wal",
            SERVER,
            pg_wal.join(name).to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "{}", describe(&out));
    };
    put(S01);
    put(S02);
    let catalogue = world.wals().join(format!("{SERVER}-xlog.db"));
    let complete = fs::read_to_string(&catalogue).expect("catalogue");
    assert_eq!(complete.lines().count(), 2);
    // As after a crash between storing S02 and appending its line: the copy is durable, the
    // line is not. PostgreSQL retries the same file.
    let first_line = complete.lines().next().expect("S01's line").to_owned() + "\n";
    fs::write(&catalogue, &first_line).expect("lose the line");
    world.own_all();
    put(S02);
    assert_eq!(
        fs::read_to_string(&catalogue).expect("catalogue"),
        complete,
        "the retry wrote the missing line, as archive-wal's commit does"
    );
    // And once repaired, a further retry adds nothing.
    put(S02);
    assert_eq!(fs::read_to_string(&catalogue).expect("catalogue"), complete);
}

/// Runs walvault as the test user with `envs` (the fault-injection build's
/// `WALVAULT_FAULTS` / `WALVAULT_CRASH_AFTER`).
fn walvault_with(world: &World, args: &[&str], envs: &[(&str, &str)]) -> Output {
    world
        .walvault_command()
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run walvault")
}

/// A world with `n` settled segments in `incoming/` (jobs = 1: files in name order).
fn queued(n: u32) -> (World, Vec<String>) {
    let world = World::new("wal_segment_size = \"1MB\"\ncompression = \"lz4\"\njobs = 1");
    fs::create_dir_all(world.incoming()).expect("incoming");
    let names: Vec<String> = (1..=n)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        queue_file(
            &world.incoming().join(name),
            &small_segment(name, i as u8 + 1),
        );
    }
    world.own_all();
    (world, names)
}

/// The catalogue's WAL names, in order.
fn catalogued(world: &World) -> Vec<String> {
    world.catalogue().into_iter().map(|e| e.name).collect()
}

fn still_queued(world: &World) -> Vec<String> {
    walvault_tests::file_names(&world.incoming())
}

/// After any fault, a clean rerun archives everything, once each.
fn rerun_completes(world: &World, names: &[String]) {
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(catalogued(world), names, "one line per WAL, in order");
    assert!(still_queued(world).is_empty());
    assert!(
        walvault_tests::file_names(&world.errors()).is_empty(),
        "nothing taken for a duplicate"
    );
    let check = world.walvault(&["check", SERVER]);
    let text = String::from_utf8_lossy(&check.stdout);
    // No torn or temporary file left behind, nothing reported in errors/.
    assert!(text.contains("temporary files: OK"), "{}", describe(&check));
    assert!(text.contains("archiver errors: OK"), "{}", describe(&check));
}

#[test]
fn archive_wal_through_a_store_outage_keeps_what_it_did_not_store() {
    let (world, names) = queued(4);
    let out = walvault_with(
        &world,
        &["archive-wal", SERVER],
        &[("WALVAULT_FAULTS", "put=pass,transient")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped after a storage failure"),
        "{}",
        describe(&out)
    );
    assert_eq!(catalogued(&world), names[..1]);
    assert_eq!(
        still_queued(&world),
        names[1..],
        "the failed and the unattempted stay"
    );
    rerun_completes(&world, &names);
}

#[test]
fn archive_wal_whose_sync_fails_releases_nothing() {
    let (world, names) = queued(3);
    let out = walvault_with(
        &world,
        &["archive-wal", SERVER],
        &[("WALVAULT_FAULTS", "sync=permanent")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        catalogued(&world).is_empty(),
        "no line for a copy not known durable"
    );
    assert_eq!(still_queued(&world), names);
    rerun_completes(&world, &names);
}

#[test]
fn archive_wal_whose_catalogue_fails_releases_nothing() {
    let (world, names) = queued(3);
    // The catalogue cannot be appended to: its name is taken by a directory.
    let catalogue = world.wals().join(format!("{SERVER}-xlog.db"));
    fs::create_dir_all(&catalogue).expect("block the catalogue");
    world.own_all();
    let out = world.walvault(&["archive-wal", SERVER]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(still_queued(&world), names);
    fs::remove_dir(&catalogue).expect("unblock");
    rerun_completes(&world, &names);
}

#[test]
fn archive_wal_killed_between_commit_steps_loses_nothing() {
    for step in ["sync", "catalogue", "release"] {
        let (world, names) = queued(3);
        let out = walvault_with(
            &world,
            &["archive-wal", SERVER],
            &[("WALVAULT_CRASH_AFTER", step)],
        );
        // SIGABRT, as runuser reports it (128 + 6) or directly.
        assert!(
            matches!(out.status.code(), None | Some(134)),
            "{step}: aborted: {}",
            describe(&out)
        );
        match step {
            "sync" => assert!(catalogued(&world).is_empty()),
            _ => assert_eq!(catalogued(&world), names, "{step}"),
        }
        assert!(
            !still_queued(&world).is_empty(),
            "{step}: the sources are still queued"
        );
        rerun_completes(&world, &names);
    }
}

#[test]
fn put_wal_through_faults_and_crashes_exits_0_only_when_durable() {
    let world = World::new("wal_segment_size = \"1MB\"\ncompression = \"gzip\"");
    let path = world.in_pg_wal(S01, &small_segment(S01, 1));
    let args = ["put-wal", SERVER, path.to_str().expect("utf-8")];
    for (env, value) in [
        ("WALVAULT_FAULTS", "put=transient"),
        ("WALVAULT_FAULTS", "sync=permanent"),
        ("WALVAULT_CRASH_AFTER", "sync"),
    ] {
        let out = walvault_with(&world, &args, &[(env, value)]);
        assert!(!out.status.success(), "{env}={value}: {}", describe(&out));
        assert!(catalogued(&world).is_empty(), "{env}={value}");
        assert!(path.exists(), "PostgreSQL's file is never touched");
    }
    // PostgreSQL's retry, with the store back: exit 0 and the catalogue line (repaired: the
    // copy is there since the sync failure).
    let out = world.walvault(&args);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(catalogued(&world), [S01]);
    assert!(path.exists());
}
