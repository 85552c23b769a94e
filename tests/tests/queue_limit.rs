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
    assert_eq!(counted, dropped.len() as u64);
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
