//! `archive_async` (issue 19): a background worker pushes PostgreSQL's ready WAL ahead of the
//! `put-wal` calls. Against the S3 test server behind a proxy adding an object store's round
//! trip: the calls acknowledge only WAL whose copy is durable and whose bytes are the ones the
//! worker archived, the worker and the calls never upload one WAL twice, a worker killed
//! mid-upload loses nothing, and a real PostgreSQL writing fast archives without a gap and
//! recovers to a point in time.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use walvault_tests::s3::{FaultProxy, S3Server};
use walvault_tests::{SERVER, World, describe, small_segment};

const BUCKET: &str = "wal";

/// A world archiving to s3s-fs through a [`FaultProxy`] adding `latency` to every request,
/// with `archive_async` on, 1 MiB segments and `jobs`.
fn async_world(latency: Duration, jobs: usize) -> Option<(World, S3Server, FaultProxy)> {
    let world = World::new(&format!(
        "compression = \"zstd\"\nwal_segment_size = \"1MB\"\narchive_async = true\njobs = {jobs}"
    ));
    let server = S3Server::s3s_fs(&world.path("s3-root"))?;
    server.create_bucket(BUCKET);
    let proxy = FaultProxy::start(server.port);
    proxy.set_latency(latency);
    world.add_config(&proxy.config(&server, BUCKET, "prod"));
    Some((world, server, proxy))
}

fn wal_name(i: u32) -> String {
    format!("0000000100000000000000{i:02X}")
}

/// A `pg_wal` as PostgreSQL leaves it for its archiver: `count` segments, each marked
/// `archive_status/<name>.ready`.
fn pg_wal(world: &World, count: u32) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let dir = world.path("pg_wal");
    fs::create_dir_all(dir.join("archive_status")).expect("pg_wal");
    let mut files = Vec::new();
    for i in 1..=count {
        let name = wal_name(i);
        let data = small_segment(&name, i as u8);
        fs::write(dir.join(&name), &data).expect("segment");
        fs::write(
            dir.join("archive_status").join(format!("{name}.ready")),
            b"",
        )
        .expect("ready");
        files.push((name, data));
    }
    world.own_all();
    (dir, files)
}

/// What PostgreSQL's archiver does after `archive_command` exits 0.
fn mark_done(dir: &Path, name: &str) {
    let status = dir.join("archive_status");
    fs::rename(
        status.join(format!("{name}.ready")),
        status.join(format!("{name}.done")),
    )
    .expect("mark done");
}

/// The spool of the one `pg_wal` in the world.
fn spool(world: &World) -> PathBuf {
    let root = world.home.join(SERVER).join("put-spool");
    let dirs: Vec<_> = fs::read_dir(&root)
        .expect("put-spool")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "one spool per pg_wal: {dirs:?}");
    dirs[0].clone()
}

/// The worker's pid, while it runs.
fn worker_pid(world: &World) -> Option<u32> {
    walvault::lock::holder(&spool(world).join(".worker.lock"))
        .ok()
        .flatten()
        .flatten()
}

fn wait_for_worker_exit(world: &World) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker_pid(world).is_some() {
        assert!(Instant::now() < deadline, "the worker exits once idle");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Upload requests per WAL name (object PUTs whose key names it).
fn uploads(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for seen in proxy.requests() {
        if seen.method != "PUT" {
            continue;
        }
        let path = seen.target.split('?').next().unwrap_or_default();
        if let Some(file) = path.rsplit('/').next()
            && let Some(name) = file.split('.').next()
            && name.len() == 24
        {
            *counts.entry(name.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// Every WAL is restored by get-wal as it was.
fn assert_archived(world: &World, files: &[(String, Vec<u8>)]) {
    let out_dir = world.path("restored-wal");
    fs::create_dir_all(&out_dir).expect("dir");
    world.own_all();
    for (name, data) in files {
        let dest = out_dir.join(name);
        let out = world.walvault(&["get-wal", SERVER, name, dest.to_str().expect("utf-8")]);
        assert!(out.status.success(), "get-wal {name}: {}", describe(&out));
        assert!(
            fs::read(&dest).expect("restored") == *data,
            "{name} restored intact"
        );
    }
    let mut catalogued: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    let all = catalogued.len();
    catalogued.dedup();
    assert_eq!(all, catalogued.len(), "one catalogue line per WAL");
    assert_eq!(catalogued.len(), files.len(), "{catalogued:?}");
}

#[test]
fn calls_find_their_wal_pushed_ahead_and_only_the_same_bytes_are_acknowledged() {
    let Some((world, _server, proxy)) = async_world(Duration::from_millis(20), 4) else {
        return;
    };
    let (dir, files) = pg_wal(&world, 16);
    let mut ahead = 0;
    for (i, (name, _)) in files.iter().enumerate() {
        if i == 12 {
            // Same name, other bytes, after the worker archived it: a re-initialised cluster
            // in the same directory. Never acknowledged from the record; refused as different.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !spool(&world).join(format!("{name}.done")).exists() {
                assert!(Instant::now() < deadline, "the worker pushed {name} ahead");
                std::thread::sleep(Duration::from_millis(20));
            }
            let other = small_segment(name, 200);
            fs::write(dir.join(name), &other).expect("overwrite");
            let path = dir.join(name);
            let out = world.walvault(&["-v", "put-wal", SERVER, path.to_str().expect("utf-8")]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
            assert!(
                err.contains("another SHA-256") && err.contains("DIFFERENT"),
                "{err}"
            );
            // PostgreSQL retries; the operator puts the real file back.
            fs::write(dir.join(name), &files[i].1).expect("restore");
        }
        let path = dir.join(name);
        let out = world.walvault(&["-v", "put-wal", SERVER, path.to_str().expect("utf-8")]);
        assert!(out.status.success(), "put-wal {name}: {}", describe(&out));
        if String::from_utf8_lossy(&out.stdout)
            .contains("archived ahead by the archive_async worker")
        {
            ahead += 1;
        }
        mark_done(&dir, name);
    }
    assert!(
        ahead >= files.len() / 2,
        "most calls found their WAL pushed ahead: {ahead} of {}",
        files.len()
    );
    wait_for_worker_exit(&world);
    assert_archived(&world, &files);
    // The claim on each WAL keeps the worker and the calls from uploading one WAL twice (the
    // thirteenth was offered three times: by the worker, with other bytes, and again).
    let uploads = uploads(&proxy);
    assert_eq!(uploads.len(), files.len(), "{uploads:?}");
    assert!(
        uploads
            .iter()
            .all(|(name, n)| *n == 1 || *name == files[12].0),
        "one upload per WAL: {uploads:?}"
    );
    let records: Vec<_> = fs::read_dir(spool(&world))
        .expect("spool")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".done") || n.ends_with(".busy"))
        .collect();
    assert!(
        records.is_empty(),
        "no record or claim is left: {records:?}"
    );
}

#[test]
fn a_worker_killed_mid_upload_acknowledges_nothing_that_is_not_durable() {
    // Slow requests, so that uploads are in flight when the worker dies.
    let Some((world, _server, proxy)) = async_world(Duration::from_millis(300), 4) else {
        return;
    };
    let (dir, files) = pg_wal(&world, 10);
    let first = dir.join(&files[0].0);
    let out = world.walvault(&["put-wal", SERVER, first.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", describe(&out));
    mark_done(&dir, &files[0].0);
    // Kill the worker once an upload of a later WAL has reached the store.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let puts = uploads(&proxy);
        if files[1..].iter().any(|(n, _)| puts.contains_key(n)) {
            break;
        }
        assert!(Instant::now() < deadline, "the worker uploads ahead");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = worker_pid(&world).expect("the worker runs");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the worker died");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Every record left names a copy that is in the archive, intact and catalogued.
    let spool = spool(&world);
    let recorded: Vec<String> = fs::read_dir(&spool)
        .expect("spool")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".done")
                .map(str::to_owned)
        })
        .collect();
    let catalogued: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    for name in &recorded {
        assert!(
            catalogued.contains(name),
            "{name} has a record but no catalogue line"
        );
    }
    // PostgreSQL goes on calling: every call succeeds, a new worker takes over, and each WAL
    // ends up archived once.
    proxy.set_latency(Duration::from_millis(20));
    for (name, _) in &files[1..] {
        let path = dir.join(name);
        let out = world.walvault(&["put-wal", SERVER, path.to_str().expect("utf-8")]);
        assert!(out.status.success(), "put-wal {name}: {}", describe(&out));
        mark_done(&dir, name);
    }
    wait_for_worker_exit(&world);
    assert_archived(&world, &files);
    let check = world.walvault(&["check", SERVER]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("archiver errors: OK"), "{text}");
}

#[test]
fn a_busy_primary_archives_asynchronously_behind_20_ms_without_a_gap_and_recovers() {
    let Some((world, _server, _proxy)) = async_world(Duration::from_millis(20), 8) else {
        return;
    };
    let mut primary = world.small_segment_cluster("primary");
    primary
        .configure(&format!(
            "wal_level = replica\narchive_mode = on\narchive_command = '{}'\nmax_wal_size = 64MB",
            world.command_line(&format!("-v put-wal {SERVER} %p"))
        ))
        .expect("configure");
    primary.start().expect("start");
    // Checks along the way: no archive_command failed.
    let at_target = walvault_tests::point_in_time_workload(&world, &primary, 3000);
    let archived: String = primary
        .query_text("SELECT archived_count::text FROM pg_stat_archiver")
        .expect("stats");
    let log = fs::read_to_string(&primary.log).unwrap_or_default();
    let ahead = log
        .matches("archived ahead by the archive_async worker")
        .count();
    eprintln!("{ahead} of {archived} WAL archived ahead by the worker");
    assert!(
        ahead * 2 >= archived.parse::<usize>().expect("count"),
        "most of the {archived} WAL were pushed ahead ({ahead})"
    );
    primary.stop("fast").expect("stop");
    // Record by record, every segment is there from the backup on.
    let verify = world.walvault(&["verify", SERVER]);
    assert!(verify.status.success(), "{}", describe(&verify));

    let restore_command = world.command_line(&format!("get-wal {SERVER} %f %p"));
    walvault_tests::recover_to_target(&world, &restore_command, &at_target);
}

/// The spool of `pg_wal` as walvault names it.
fn spool_of(world: &World, pg_wal: &Path) -> PathBuf {
    let canonical = fs::canonicalize(pg_wal).expect("canonical");
    world
        .home
        .join(SERVER)
        .join("put-spool")
        .join(walvault::fsutil::path_id(&canonical))
}

/// Runs walvault with a deadline: a call that waits on a FIFO must not hang PostgreSQL.
fn walvault_within(world: &World, args: &[&str], seconds: u64) -> std::process::Output {
    let mut cmd = world.walvault_command();
    cmd.args(args);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output().expect("run walvault"));
    });
    rx.recv_timeout(Duration::from_secs(seconds))
        .unwrap_or_else(|_| panic!("walvault {args:?} hung"))
}

#[test]
fn hostile_spool_entries_are_never_followed_read_as_fifos_or_trusted() {
    let world = World::new(
        "compression = \"zstd\"\nwal_segment_size = \"1MB\"\narchive_async = true\njobs = 2",
    );
    let (dir, files) = pg_wal(&world, 3);
    let spool = spool_of(&world, &dir);
    fs::create_dir_all(&spool).expect("spool");
    let precious = world.path("precious");
    fs::write(&precious, b"keep me").expect("precious");
    // A FIFO as the second WAL's record, links as the third's claim and as the worker's log.
    let fifo = spool.join(format!("{}.done", files[1].0));
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    std::os::unix::fs::symlink(&precious, spool.join(format!(".{}.busy", files[2].0)))
        .expect("link");
    std::os::unix::fs::symlink(&precious, spool.join("worker.log")).expect("link");
    world.own_all();

    for (i, (name, _)) in files.iter().enumerate() {
        let path = dir.join(name);
        let out = walvault_within(
            &world,
            &["put-wal", SERVER, path.to_str().expect("utf-8")],
            60,
        );
        if i < 2 {
            // The FIFO is no record: the call archives its WAL itself.
            assert!(out.status.success(), "put-wal {name}: {}", describe(&out));
            mark_done(&dir, name);
        } else {
            // A link where a claim goes: a clear error, never followed, nothing acknowledged.
            assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("symbolic link"),
                "{}",
                describe(&out)
            );
        }
    }
    assert_eq!(fs::read(&precious).expect("precious"), b"keep me");
    wait_for_worker_exit(&world);
    assert_archived(&world, &files[..2]);
}
