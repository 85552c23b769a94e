//! `archive_queue_max` (issue 19) with a real PostgreSQL 15 archiving through `put-wal`
//! while the archive is unwritable: with the limit, the oldest ready segments are acknowledged
//! unarchived, on record, and reported as known gaps by `check`, `status` and `verify`; without
//! it, the same outage keeps every segment and archiving catches up.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use walvault::pgcluster::Cluster;
use walvault_tests::{SERVER, World, describe, switch_and_wait_archived};

const MIB: u64 = 1 << 20;

/// A 1 MiB-segment primary archiving with put-wal, some WAL archived already.
fn primary(world: &World) -> Cluster {
    let mut cluster = world.small_segment_cluster("primary");
    cluster
        .configure(&world.put_wal_archiving())
        .expect("configure");
    cluster.start().expect("start");
    cluster
        .pgbench(&["-i", "-s", "1", "-q"])
        .expect("pgbench -i");
    switch_and_wait_archived(&cluster);
    cluster
}

fn ready_count(cluster: &Cluster) -> usize {
    fs::read_dir(cluster.data.join("pg_wal/archive_status"))
        .expect("archive_status")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        })
        .count()
}

/// Makes the archive's segment directory unwritable (an outage) or writable again.
fn outage(world: &World, on: bool) -> PathBuf {
    let dir = world.wals().join("0000000100000000");
    fs::set_permissions(
        &dir,
        fs::Permissions::from_mode(if on { 0o500 } else { 0o700 }),
    )
    .expect("chmod");
    dir
}

/// Writes WAL and switches segments `times` times.
fn write_wal(cluster: &Cluster, times: usize) {
    for _ in 0..times {
        cluster
            .execute("CREATE TABLE IF NOT EXISTS fill(x text); INSERT INTO fill SELECT repeat('x', 500) FROM generate_series(1, 2000); SELECT pg_switch_wal();")
            .expect("write WAL");
    }
}

#[test]
fn archive_queue_max_drops_the_oldest_on_record_and_reports_the_known_gap() {
    let world = World::new(
        "compression = \"zstd\"\nwal_segment_size = \"1MB\"\narchive_queue_max = \"4MB\"",
    );
    let primary = primary(&world);
    outage(&world, true);
    write_wal(&primary, 12);
    // PostgreSQL's archiver retries on each new segment: the queue settles at the limit.
    primary
        .wait_for(
            "the ready queue to shrink to the limit",
            Duration::from_secs(120),
            |c| {
                Ok(ready_count(c) as u64 * MIB <= 5 * MIB
                    && world.home.join(SERVER).join("meta/dropped.jsonl").exists())
            },
        )
        .expect("the limit protects pg_wal");
    // Archiving resumes once the archive is back; the dropped segments stay a known gap.
    outage(&world, false);
    let last = switch_and_wait_archived(&primary);
    let dropped_text =
        fs::read_to_string(world.home.join(SERVER).join("meta/dropped.jsonl")).expect("record");
    let dropped: Vec<serde_json::Value> = dropped_text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(dropped.len() >= 4, "{dropped_text}");
    assert!(dropped.iter().all(|d| d["limit"] == 4 * MIB));
    assert!(
        dropped
            .iter()
            .all(|d| d["queue_bytes"].as_u64() > Some(4 * MIB)),
        "{dropped_text}"
    );

    let check = world.walvault(&["check", SERVER]);
    assert_eq!(check.status.code(), Some(1), "{}", describe(&check));
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("dropped segments: FAILED") && text.contains("no point-in-time recovery"),
        "{text}"
    );
    let status = world.walvault(&["status", SERVER, "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(
        json[0]["dropped_segments"].as_array().map(Vec::len),
        Some(dropped.len())
    );
    let out = world.walvault(&["verify", SERVER, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let missing = report[0]["missing"].as_array().expect("missing");
    assert!(
        !missing.is_empty() && missing.iter().all(|m| m["class"] == "dropped"),
        "dropped, never lost: {missing:?}"
    );
    let counted: u64 = missing
        .iter()
        .map(|m| m["count"].as_u64().unwrap_or(0))
        .sum();
    // A call that records a drop while its upload is finishing (the upload watch) leaves a
    // segment both recorded and archived: recorded drops bound the missing ones.
    assert!(
        counted >= 1 && counted <= dropped.len() as u64,
        "{dropped_text}\n{missing:?}"
    );
    let archived_last = report[0]["timelines"][0]["last"]
        .as_str()
        .unwrap_or_default();
    assert!(archived_last >= last.as_str(), "{archived_last} {last}");
}

#[test]
fn without_a_limit_the_same_outage_keeps_every_segment() {
    let world = World::new("compression = \"zstd\"\nwal_segment_size = \"1MB\"");
    let primary = primary(&world);
    outage(&world, true);
    write_wal(&primary, 12);
    assert!(ready_count(&primary) >= 10, "PostgreSQL keeps them all");
    outage(&world, false);
    switch_and_wait_archived(&primary);
    assert!(!world.home.join(SERVER).join("meta/dropped.jsonl").exists());
    let out = world.walvault(&["verify", SERVER]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

fn current_lsn(cluster: &Cluster) -> String {
    cluster
        .query_text("SELECT pg_current_wal_lsn()::text")
        .expect("lsn")
}

/// Bytes of WAL written since `lsn`.
fn written_since(cluster: &Cluster, lsn: &str) -> u64 {
    cluster
        .query_text(&format!(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')::bigint::text"
        ))
        .expect("lsn diff")
        .parse()
        .expect("bytes")
}

/// A tmpfs of `mib` MiB mounted at `dir` for the test (unmounted on drop), or `None` where the
/// test may not mount (it then says it is skipped; under CI, `WALVAULT_REQUIRE_TOOLS=1`, that
/// fails the run).
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &std::path::Path, mib: u64) -> Option<SmallFs> {
        fs::create_dir_all(dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        if !out.status.success() {
            let why = format!(
                "cannot mount a small file system for pg_wal: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            assert!(
                std::env::var("WALVAULT_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "{why}"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        }
        Some(SmallFs(dir.to_owned()))
    }

    fn free_bytes(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn an_object_store_outage_with_pg_wal_on_a_small_file_system_never_stops_the_primary() {
    const BUCKET: &str = "wal";
    let world = World::new(
        "compression = \"zstd\"\nwal_segment_size = \"1MB\"\nmax_retries = 1\nrequest_timeout = 20",
    );
    let Some(mut server) = walvault_tests::s3::S3Server::s3s_fs(&world.path("s3-root")) else {
        return;
    };
    server.create_bucket(BUCKET);
    // Through a proxy that can also stall every request (a store that hangs, not refuses).
    let proxy = walvault_tests::s3::FaultProxy::start(server.port);
    world.add_config(&proxy.config(&server, BUCKET, "prod"));
    // pg_wal on 96 MiB, less than the outage below writes.
    let Some(small) = SmallFs::mount(&world.path("walfs"), 96) else {
        return;
    };
    world.own_all();
    let mut primary = walvault::pgcluster::Cluster::init(
        std::path::Path::new(walvault_tests::PG_BIN),
        &world.run_as,
        &world.path("primary"),
        &world.path("sock"),
        &[
            "--wal-segsize=1",
            &format!("--waldir={}", small.0.join("pg_wal").display()),
        ],
    )
    .expect("initdb");
    primary
        .configure(&format!(
            "{}max_wal_size = 8MB\nmin_wal_size = 2MB\n",
            world.put_wal_archiving()
        ))
        .expect("configure");
    primary.start().expect("start");
    primary
        .pgbench(&["-i", "-s", "1", "-q"])
        .expect("pgbench -i");
    switch_and_wait_archived(&primary);

    // Without a limit the outage keeps every segment (as long as pg_wal has room).
    server.kill();
    write_wal(&primary, 6);
    assert!(ready_count(&primary) >= 6, "PostgreSQL keeps them all");
    assert!(!world.home.join(SERVER).join("meta/dropped.jsonl").exists());
    server.restart();
    switch_and_wait_archived(&primary);

    // With the limit, outages writing more WAL than pg_wal can hold: the primary runs on.
    world.add_config("archive_queue_max = \"8MB\"");
    // A store that hangs: each request holds a call for 20 s, in which the primary writes
    // twice what pg_wal holds; the call watches the queue and drops its segment in time.
    proxy.add(walvault_tests::s3::Rule::new("", "", walvault_tests::s3::Fault::Stall).always());
    let start_lsn = current_lsn(&primary);
    for _ in 0..110 {
        write_wal(&primary, 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let written = written_since(&primary, &start_lsn);
    assert!(
        written > 96 * MIB,
        "{written} bytes written while the store hung"
    );
    proxy.clear();
    // A store that is down.
    server.kill();
    let start_lsn = current_lsn(&primary);
    // About 10 MiB of WAL a second: a busy primary, but within what any archive_command can
    // be called for (PostgreSQL starts one process per segment; at 1 MiB segments on tmpfs an
    // unpaced loop writes faster than even `true` can acknowledge).
    let load = walvault_tests::pgbench_in_background(&world, &primary, 12);
    for _ in 0..110 {
        write_wal(&primary, 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    load.join()
        .expect("pgbench ran to its end: the primary never stopped");
    let written = written_since(&primary, &start_lsn);
    assert!(
        written > 96 * MIB,
        "the outage wrote more WAL than pg_wal can hold ({written} bytes)"
    );
    assert_eq!(
        primary.query_text("SELECT 1::text").expect("query"),
        "1",
        "the primary runs"
    );
    assert!(
        small.free_bytes() > 4 * MIB,
        "pg_wal kept room: {} bytes free",
        small.free_bytes()
    );
    let dropped_text =
        fs::read_to_string(world.home.join(SERVER).join("meta/dropped.jsonl")).expect("record");
    let dropped = dropped_text.lines().count();
    assert!(dropped >= 60, "{dropped}: {dropped_text}");

    // The store is back: archiving resumes, and the gap stays known, never lost.
    server.restart();
    let last = switch_and_wait_archived(&primary);
    let check = world.walvault(&["check", SERVER]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("dropped segments: FAILED"), "{text}");
    let out = world.walvault(&["verify", SERVER, "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let missing = report[0]["missing"].as_array().expect("missing");
    assert!(
        !missing.is_empty() && missing.iter().all(|m| m["class"] == "dropped"),
        "dropped, never lost: {missing:?}"
    );
    let archived_last = report[0]["timelines"][0]["last"]
        .as_str()
        .unwrap_or_default();
    assert!(archived_last >= last.as_str(), "{archived_last} {last}");
    primary.stop("immediate").expect("stop");
}
