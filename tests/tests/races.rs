//! Races (issue 17): two archive-wal runs at once; archive-wal against delete-wals and
//! rebuild-xlogdb (the lost catalogue line of Barman's issue #328); a primary and its standby,
//! both with `archive_mode = always`, archiving the same segments into one archive, local and
//! on S3.

use std::collections::BTreeMap;
use std::fs;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use walvault_tests::s3::S3Server;
use walvault_tests::{
    SERVER, World, describe, file_names, pgbench_load, queue_file, small_segment,
    switch_and_wait_archived,
};

fn wal(i: usize) -> String {
    format!("0000000100000000000000{i:02X}")
}

/// Catalogue lines per WAL name.
fn lines(world: &World) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in world.catalogue() {
        *counts.entry(entry.name).or_default() += 1;
    }
    counts
}

/// The WAL names stored in a local archive.
fn stored(world: &World) -> Vec<String> {
    let mut names = Vec::new();
    if !world.wals().is_dir() {
        return names;
    }
    for dir in file_names(&world.wals()) {
        let path = world.wals().join(&dir);
        if path.is_dir() {
            names.extend(
                file_names(&path)
                    .into_iter()
                    .filter(|n| !n.starts_with('.')),
            );
        }
    }
    names.sort();
    names
}

#[test]
fn a_second_archive_wal_skips_the_server_while_the_first_runs() {
    // xz at its slowest: the first run lasts seconds.
    let world = World::new(
        "wal_segment_size = \"1MB\"\ncompression = \"xz\"\ncompression_level = 9\njobs = 1",
    );
    fs::create_dir_all(world.incoming()).expect("incoming");
    for i in 1..=12 {
        queue_file(
            &world.incoming().join(wal(i)),
            &small_segment(&wal(i), i as u8),
        );
    }
    world.own_all();
    let lock = world.home.join(format!(".{SERVER}-archive-wal.lock"));
    let first = world
        .walvault_command()
        .args(["archive-wal", SERVER])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("first archive-wal");
    let start = Instant::now();
    while walvault::lock::holder(&lock).ok().flatten().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first run took the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = world.walvault(&["archive-wal", SERVER]);
    assert!(second.status.success(), "{}", describe(&second));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&second.stdout),
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        said.contains("Another archive-wal process is already running on server pg"),
        "{}",
        describe(&second)
    );
    let first = first.wait_with_output().expect("first");
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(lines(&world).len(), 12);
    assert!(lines(&world).values().all(|&n| n == 1));
    assert!(file_names(&world.incoming()).is_empty());
}

/// Barman's issue #328: a catalogue rewrite (delete-wals, rebuild-xlogdb) racing the appends
/// of archive-wal lost lines. Here all three run in loops while WAL keeps arriving; at the end
/// every archived WAL has exactly one line and every line its WAL.
#[test]
fn archive_wal_racing_delete_wals_and_rebuild_xlogdb_loses_no_line() {
    let world = World::new("wal_segment_size = \"1MB\"\ncompression = \"lz4\"\njobs = 2");
    fs::create_dir_all(world.incoming()).expect("incoming");
    world.own_all();
    const TOTAL: usize = 60;
    let done = AtomicBool::new(false);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let fail = |what: String| {
        failures.lock().expect("failures").push(what);
        done.store(true, Ordering::SeqCst);
    };
    std::thread::scope(|s| {
        // PostgreSQL: a WAL every few milliseconds.
        s.spawn(|| {
            for i in 1..=TOTAL {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                let path = world.incoming().join(wal(i));
                queue_file(&path, &small_segment(&wal(i), i as u8));
                // This file only (a recursive chown races the archiver's removals), and it may
                // be archived and gone already.
                let _ = world.run_as.own(&path);
                std::thread::sleep(Duration::from_millis(15));
            }
        });
        // cron: archive-wal again and again.
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let out = world.walvault(&["archive-wal", SERVER]);
                if !out.status.success() {
                    fail(format!("archive-wal: {}", describe(&out)));
                }
            }
        });
        // The operator: retention and rebuilds, moving the cut-off up.
        s.spawn(|| {
            let mut cut = 2;
            while !done.load(Ordering::SeqCst) {
                let out = world.walvault(&["delete-wals", SERVER, "--before", &wal(cut)]);
                if !out.status.success() {
                    fail(format!("delete-wals: {}", describe(&out)));
                }
                let out = world.walvault(&["rebuild-xlogdb", SERVER]);
                if out.status.code() != Some(0) {
                    fail(format!("rebuild-xlogdb: {}", describe(&out)));
                }
                cut = (cut + 3).min(20);
            }
        });
        let start = Instant::now();
        let caught_up =
            || file_names(&world.incoming()).is_empty() && stored(&world).contains(&wal(TOTAL));
        while !(done.load(Ordering::SeqCst) || caught_up()) {
            if start.elapsed() > Duration::from_secs(120) {
                fail("archiving did not keep up within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done.store(true, Ordering::SeqCst);
    });
    let failures = failures.into_inner().expect("failures");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    // WAL archived after the last pass at the top cut-off are still there: one more pass.
    let out = world.walvault(&["delete-wals", SERVER, "--before", &wal(20)]);
    assert!(out.status.success(), "{}", describe(&out));
    let counts = lines(&world);
    let names: Vec<String> = counts.keys().cloned().collect();
    assert_eq!(
        names,
        stored(&world),
        "a line for every archived WAL, a WAL for every line"
    );
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(names.contains(&wal(TOTAL)) && names.iter().all(|n| n.as_str() >= wal(20).as_str()));
    assert!(file_names(&world.errors()).is_empty());
}

/// Two `put-wal` of one WAL at the same moment (a primary and its standby): one stores it, the
/// other finds it stored, and both succeed with one catalogue line between them. (The finder's
/// repair of a "missing" line wrote a second one when the storer's commit was still under way.)
#[test]
fn two_put_wal_of_one_wal_at_once_write_one_line() {
    let world = World::new("wal_segment_size = \"1MB\"\ncompression = \"lz4\"");
    const ROUNDS: usize = 24;
    let pg_wal = world.path("pg_wal");
    fs::create_dir_all(&pg_wal).expect("pg_wal");
    for i in 1..=ROUNDS {
        queue_file(&pg_wal.join(wal(i)), &small_segment(&wal(i), i as u8));
    }
    world.own_all();
    for i in 1..=ROUNDS {
        let path = pg_wal.join(wal(i));
        let path = path.to_str().expect("utf-8");
        let both: Vec<_> = (0..2)
            .map(|_| {
                world
                    .walvault_command()
                    .args(["put-wal", SERVER, path])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("put-wal")
            })
            .collect();
        for child in both {
            let out = child.wait_with_output().expect("put-wal");
            assert!(out.status.success(), "{}", describe(&out));
        }
    }
    let counts = lines(&world);
    assert_eq!(counts.len(), ROUNDS);
    assert!(
        counts.values().all(|&n| n == 1),
        "one line each: {counts:?}"
    );
}

/// The same, lined up: the storer pauses after its copy is durable and before its catalogue
/// line, while the other finds the copy and repairs the "missing" line; the storer's line
/// must then not be written a second time.
#[test]
fn a_repaired_line_is_not_appended_again_by_the_storer() {
    let world = World::new("wal_segment_size = \"1MB\"\ncompression = \"lz4\"");
    let name = wal(1);
    let path = world.in_pg_wal(&name, &small_segment(&name, 1));
    let path = path.to_str().expect("utf-8");
    let storer = world
        .walvault_command()
        .args(["put-wal", SERVER, path])
        .env("WALVAULT_PAUSE_AT", "dir-synced:1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("storer");
    let stored = world.wals().join(&name[..16]).join(&name);
    let start = Instant::now();
    while !stored.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the copy appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let finder = world.walvault(&["put-wal", SERVER, path]);
    assert!(finder.status.success(), "{}", describe(&finder));
    let storer = storer.wait_with_output().expect("storer");
    assert!(storer.status.success(), "{}", describe(&storer));
    assert_eq!(lines(&world).get(&name), Some(&1), "{:?}", lines(&world));
}

/// A primary and its standby, both `archive_mode = always` with `put-wal` into one server:
/// each segment arrives twice, identical, often at the same moment. Both succeed, the archive
/// keeps one copy and one line of each; a different WAL under an archived name then fails
/// and overwrites nothing.
fn primary_and_standby_archive_into_one_archive(world: &World) {
    let put = world.command_line(&format!("put-wal {SERVER} %p"));
    let get = world.command_line(&format!("get-wal {SERVER} %f %p"));
    let mut primary = world.cluster("primary");
    primary
        .configure(&format!(
            "wal_level = replica\narchive_mode = always\narchive_command = '{put}'\nmax_wal_size = 64MB\nwal_keep_size = 256MB"
        ))
        .expect("configure");
    primary.start().expect("start");
    let standby_dir = world.path("standby");
    primary.base_backup(&standby_dir).expect("base backup");
    fs::write(standby_dir.join("standby.signal"), b"").expect("standby.signal");
    world.own_all();
    let mut standby = world.existing_cluster("standby");
    standby
        .configure(&format!(
            "archive_mode = always\narchive_command = '{put}'\nrestore_command = '{get}'\nprimary_conninfo = '{}'",
            primary.conninfo()
        ))
        .expect("configure standby");
    standby.start().expect("start standby");
    pgbench_load(&primary, 2, 300);
    let last = switch_and_wait_archived(&primary);
    standby
        .wait_for(
            "the standby archived as far",
            Duration::from_secs(180),
            |c| {
                Ok(
                    c.query_text("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?
                        .as_str()
                        >= last.as_str(),
                )
            },
        )
        .expect("standby archived");
    for (who, cluster) in [("primary", &primary), ("standby", &standby)] {
        let failed = cluster
            .query_text("SELECT failed_count::text FROM pg_stat_archiver")
            .expect("failed_count");
        assert_eq!(failed, "0", "{who}: an identical WAL must never fail");
    }
    standby.stop("fast").expect("stop standby");
    primary.stop("fast").expect("stop primary");
    let counts = lines(world);
    assert!(counts.contains_key(&last), "{last} archived: {counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "one line each: {counts:?}"
    );
    assert!(file_names(&world.errors()).is_empty());

    // A different WAL under an archived name (a split brain): refused, nothing overwritten.
    let before = world.walvault(&[
        "get-wal",
        SERVER,
        &last,
        world.path("kept").to_str().expect("utf-8"),
    ]);
    assert!(before.status.success(), "{}", describe(&before));
    let mut other = fs::read(world.path("kept")).expect("kept");
    let end = other.len() - 1;
    other[end] ^= 0xff;
    let impostor = world.in_pg_wal(&last, &other);
    let out = world.walvault(&["put-wal", SERVER, impostor.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let after = world.walvault(&[
        "get-wal",
        SERVER,
        &last,
        world.path("again").to_str().expect("utf-8"),
    ]);
    assert!(after.status.success(), "{}", describe(&after));
    assert_eq!(
        fs::read(world.path("again")).expect("again"),
        fs::read(world.path("kept")).expect("kept"),
        "the archived copy is untouched"
    );
    assert_eq!(lines(world).get(&last), Some(&1));
}

#[test]
fn a_primary_and_its_standby_archive_into_one_local_archive() {
    let world = World::new("compression = \"zstd\"");
    primary_and_standby_archive_into_one_archive(&world);
}

#[test]
fn a_primary_and_its_standby_archive_into_one_s3_archive() {
    let world = World::new("compression = \"zstd\"");
    let server = S3Server::s3s_fs(&world.path("s3-root")).expect("s3s-fs (installed by .ci/setup)");
    server.create_bucket("wal");
    world.add_config(&server.config("wal", "races"));
    primary_and_standby_archive_into_one_archive(&world);
}
