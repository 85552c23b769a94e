//! `walvault verify` (issue 18) over an archive a real PostgreSQL 15 wrote: two timelines (a
//! base backup recovered from the archive and promoted), plain segments on the first and zstd
//! on the second. The clean archive verifies with `pg_waldump`'s record and byte counts; each
//! kind of damage is found and named with its file and offset.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use walvault::pgcluster::Cluster;
use walvault_tests::http::get;
use walvault_tests::{
    PG_BIN, SERVER, World, describe, file_names, serve, switch_and_wait_archived,
};

/// `walvault verify pg --format json`: the exit code and the report.
fn verify_json(world: &World, extra: &[&str]) -> (Option<i32>, serde_json::Value, Output) {
    let mut args = vec!["verify", SERVER, "--format", "json"];
    args.extend_from_slice(extra);
    let out = world.walvault(&args);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    (out.status.code(), json[0].clone(), out)
}

/// The error findings, as "file offset: message" lines.
fn errors(report: &serde_json::Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| {
            format!(
                "{} offset {}: {}",
                f["file"].as_str().unwrap_or_default(),
                f["offset"],
                f["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// A 1 MiB-segment cluster archiving with put-wal.
fn primary(world: &World, name: &str, archive: bool) -> Cluster {
    let mut cluster = world.small_segment_cluster(name);
    let settings = if archive {
        world.put_wal_archiving()
    } else {
        "wal_level = replica\n".to_owned()
    };
    cluster.configure(&settings).expect("configure");
    cluster.start().expect("start");
    cluster
}

/// `pg_waldump --stats` over `first..=last` in `dir`: (records, combined bytes) of its Total
/// line.
fn waldump_totals(dir: &Path, first: &str, last: &str) -> (u64, u64) {
    let out = Command::new(Path::new(PG_BIN).join("pg_waldump"))
        .arg("--stats")
        .arg("-p")
        .arg(dir)
        .args([first, last])
        .output()
        .expect("pg_waldump");
    let text = String::from_utf8_lossy(&out.stdout);
    let total = text
        .lines()
        .find(|l| l.trim_start().starts_with("Total"))
        .unwrap_or_else(|| panic!("no Total line: {}", describe(&out)));
    // "Total  N [100.00%]  rec_bytes [..%]  fpi_bytes [..%]  combined [100%]"
    let numbers: Vec<u64> = total
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], *numbers.last().expect("combined"))
}

/// A record of `segment` (its path) at least 64 bytes long, from `pg_waldump`: its offset in
/// the file.
fn a_record_in(segment: &Path) -> u64 {
    let dir = segment.parent().expect("dir");
    let name = segment.file_name().and_then(|n| n.to_str()).expect("name");
    let out = Command::new(Path::new(PG_BIN).join("pg_waldump"))
        .arg("-p")
        .arg(dir)
        .args([name, name])
        .output()
        .expect("pg_waldump");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        // "rmgr: Heap  len (rec/tot): 54/ 54, tx: 735, lsn: 0/01000060, prev ..."
        let tot: Option<u64> = line
            .split("len (rec/tot):")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|r| r.split('/').nth(1))
            .and_then(|t| t.trim().parse().ok());
        let lsn = line
            .split("lsn: ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|l| l.split_once('/'))
            .and_then(|(_, low)| u64::from_str_radix(low, 16).ok());
        if let (Some(tot), Some(lsn)) = (tot, lsn)
            && tot >= 64
            && lsn % (1 << 20) > 100_000
        {
            return lsn % (1 << 20);
        }
    }
    panic!("no record found: {}", describe(&out));
}

fn copy_tree(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("cp");
    assert!(out.status.success(), "{}", describe(&out));
}

fn plain_segments(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.len() == 24)
        .collect()
}

#[test]
fn verify_proves_a_real_archive_and_names_every_kind_of_damage() {
    let world = World::new("compression = \"none\"\nwal_segment_size = \"1MB\"");
    let mut primary = primary(&world, "primary", true);
    primary
        .pgbench(&["-i", "-s", "1", "-q"])
        .expect("pgbench -i");
    primary
        .base_backup(&world.path("standby"))
        .expect("base backup");
    primary
        .pgbench(&["-n", "-c", "2", "-t", "300"])
        .expect("pgbench");
    let last_tli1 = switch_and_wait_archived(&primary);
    primary.stop("fast").expect("stop");
    let tli1_dir = world.wals().join("0000000100000000");

    // One timeline, plain segments: the totals are pg_waldump's.
    let (code, report, out) = verify_json(&world, &[]);
    assert_eq!(code, Some(0), "{}", describe(&out));
    let segments = plain_segments(&tli1_dir);
    let (first, last) = (&segments[0], segments.last().expect("segments"));
    // Shutting down with archiving on switches to a new segment: one more than last_tli1.
    assert!(last >= &last_tli1, "{last} {last_tli1}");
    let (records, bytes) = waldump_totals(&tli1_dir, first, last);
    assert_eq!(report["stats"]["records"], records, "{report}");
    assert_eq!(report["stats"]["bytes"], bytes, "{report}");
    assert_eq!(report["files"], segments.len());

    // A second timeline, zstd: the base backup recovered from the archive and promoted at
    // its end, archiving into the same archive.
    let config = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        config.replace("compression = \"none\"", "compression = \"zstd\""),
    )
    .expect("config");
    let mut standby = world.recover(
        "standby",
        &format!(
            "archive_mode = on\narchive_command = '{}'\nrestore_command = '{}'",
            world.command_line(&format!("put-wal {SERVER} %p")),
            world.command_line(&format!("get-wal {SERVER} %f %p"))
        ),
        "the recovered copy to promote",
        Duration::from_secs(120),
    );
    standby
        .pgbench(&["-n", "-c", "2", "-t", "200"])
        .expect("pgbench on timeline 2");
    let last_tli2 = switch_and_wait_archived(&standby);
    standby.stop("fast").expect("stop");
    assert!(last_tli2.starts_with("00000002"), "{last_tli2}");
    assert!(world.wals().join("00000002.history").exists());

    let (code, report, out) = verify_json(&world, &[]);
    assert_eq!(code, Some(0), "{}", describe(&out));
    assert_eq!(report["timelines"].as_array().expect("timelines").len(), 2);
    assert_eq!(report["timelines"][1]["parent"], 1);
    let up_to = report["verified_up_to"]["file"].as_str().expect("verified");
    assert!(up_to >= last_tli2.as_str(), "{up_to} {last_tli2}");
    assert!(errors(&report).is_empty(), "{:?}", errors(&report));
    let recorded: serde_json::Value = serde_json::from_slice(
        &fs::read(world.home.join(SERVER).join("meta/last-verify.json")).expect("recorded"),
    )
    .expect("json");
    assert_eq!(recorded["verified_up_to"], report["verified_up_to"]);
    let text = world.walvault(&["verify", SERVER]);
    assert_eq!(text.status.code(), Some(0), "{}", describe(&text));
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(shown.contains("result: OK"), "{shown}");
    assert!(
        shown.contains(&format!("replayable up to: {up_to}")),
        "{shown}"
    );
    let nagios = world.walvault(&["verify", SERVER, "--nagios"]);
    assert_eq!(nagios.status.code(), Some(0), "{}", describe(&nagios));
    assert!(String::from_utf8_lossy(&nagios.stdout).starts_with("WALVAULT VERIFY OK"));

    // --from-backup: pg_basebackup's label; only what that backup needs is read.
    let (code, from_backup, out) =
        verify_json(&world, &["--from-backup", "pg_basebackup base backup"]);
    assert_eq!(code, Some(0), "{}", describe(&out));
    assert!(from_backup["files"].as_u64() < report["files"].as_u64());
    let out = world.walvault(&["verify", SERVER, "--from-backup", "no such backup"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no archived backup label"));

    // Damage, each on a fresh copy of the clean archive.
    let clean = world.path("wals.clean");
    copy_tree(&world.wals(), &clean);
    let segments = plain_segments(&tli1_dir);
    let victim = segments[segments.len() / 2].clone();
    let victim_path = tli1_dir.join(&victim);
    let damaged = |what: &str, damage: &dyn Fn()| -> serde_json::Value {
        copy_tree(&clean, &world.wals());
        damage();
        world.own_all();
        let (code, report, out) = verify_json(&world, &[]);
        assert_eq!(code, Some(1), "{what}: {}", describe(&out));
        let nagios = world.walvault(&["verify", SERVER, "--nagios"]);
        assert_eq!(
            nagios.status.code(),
            Some(2),
            "{what}: {}",
            describe(&nagios)
        );
        report
    };

    // A byte flipped inside a record: a CRC mismatch at that record.
    let at = a_record_in(&victim_path);
    let report = damaged("flipped byte", &|| {
        let mut data = fs::read(&victim_path).expect("read");
        data[at as usize + 40] ^= 0x01;
        fs::write(&victim_path, data).expect("write");
    });
    let errs = errors(&report);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{victim} offset {at}:")) && e.contains("checksum")),
        "record at {at}: {errs:?}"
    );
    // serve: the health fails on the corrupt record, which it names with its offset.
    let served = serve(&world, &["--listen", "127.0.0.1:0"], &[]);
    let doc = get(served.addr, "/api/status").json();
    let pg = &doc["servers"][0];
    assert_eq!(pg["health"]["state"], "failing", "{pg}");
    let reasons = pg["health"]["reasons"].to_string();
    assert!(reasons.contains("verify found 1 error(s)"), "{reasons}");
    assert_eq!(pg["last_verify"]["failures"][0]["file"], victim.as_str());
    assert_eq!(pg["last_verify"]["failures"][0]["offset"], at);
    drop(served);

    // A segment of another cluster under one of ours.
    let mut other = primary_other(&world);
    let foreign = world.path("foreign-segment");
    fs::copy(world.path("other/pg_wal").join(&segments[1]), &foreign)
        .unwrap_or_else(|e| panic!("{} in the other cluster: {e}", segments[1]));
    other.stop("fast").expect("stop");
    let report = damaged("foreign segment", &|| {
        fs::copy(&foreign, tli1_dir.join(&segments[1])).expect("copy");
    });
    let errs = errors(&report);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&segments[1]) && e.contains("system identifier")),
        "{errs:?}"
    );

    // A segment of timeline 2 under a timeline-1 name.
    let tli2_dir = world.wals().join("0000000200000000");
    let tli2_segment = plain_segments(&tli2_dir)[1].clone();
    let misnamed = format!("00000001{}", &tli2_segment[8..]);
    let report = damaged("misnamed timeline", &|| {
        fs::copy(tli2_dir.join(&tli2_segment), tli1_dir.join(&misnamed)).expect("copy");
    });
    let errs = errors(&report);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&misnamed) && e.contains("timeline")),
        "{errs:?}"
    );

    // A truncated segment.
    let report = damaged("truncated", &|| {
        let data = fs::read(&victim_path).expect("read");
        fs::write(&victim_path, &data[..500_000]).expect("write");
    });
    let errs = errors(&report);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&victim) && e.contains("500000")),
        "{errs:?}"
    );

    // A missing segment: lost (no conninfo, nothing queued), with its LSN range.
    let report = damaged("missing", &|| {
        fs::remove_file(&victim_path).expect("remove");
    });
    let missing = &report["missing"][0];
    assert_eq!(missing["first"], victim.as_str(), "{report}");
    assert_eq!(missing["class"], "lost");
    assert_eq!(
        report["verified_up_to"]["file"],
        segments[segments.len() / 2 - 1].as_str()
    );

    // A history file that does not match its timeline: it says the switch came later, in
    // the last segment of timeline 2, which the archive holds from an earlier one.
    let tli2_last = plain_segments(&tli2_dir).pop().expect("timeline 2");
    let segno = u64::from_str_radix(&tli2_last[16..], 16).expect("hex");
    let history = format!(
        "1\t0/{:X}\tno recovery target specified\n",
        (segno << 20) + 0x28
    );
    let report = damaged("history", &|| {
        fs::write(world.wals().join("00000002.history"), &history).expect("write");
    });
    let errs = errors(&report);
    assert!(
        errs.iter().any(|e| e.starts_with("00000002.history")),
        "{errs:?}"
    );

    // A recycled segment: its second half still holds an earlier pass (another segment's
    // pages).
    let older = tli1_dir.join(&segments[segments.len() / 2 - 3]);
    let report = damaged("recycled", &|| {
        let mut data = fs::read(&victim_path).expect("read");
        let stale = fs::read(&older).expect("read");
        data[1 << 19..].copy_from_slice(&stale[1 << 19..]);
        fs::write(&victim_path, data).expect("write");
    });
    let errs = errors(&report);
    assert!(
        errs.iter().any(
            |e| e.starts_with(&format!("{victim} offset ")) && e.contains("address")
                || e.starts_with(&victim) && e.contains("prev")
        ),
        "{errs:?}"
    );
    copy_tree(&clean, &world.wals());
}

/// A second, unrelated cluster (its own system identifier) with a few 1 MiB segments.
fn primary_other(world: &World) -> Cluster {
    let other = primary(world, "other", false);
    other.pgbench(&["-i", "-s", "1", "-q"]).expect("pgbench -i");
    other
}

#[test]
fn missing_segments_are_delayed_while_postgresql_or_the_queue_holds_them_and_lost_otherwise() {
    let world = World::new("compression = \"lz4\"\nwal_segment_size = \"1MB\"");
    let primary = primary(&world, "primary", true);
    world.add_config(&format!("conninfo = \"{}\"", primary.conninfo()));
    primary
        .pgbench(&["-i", "-s", "1", "-q"])
        .expect("pgbench -i");
    switch_and_wait_archived(&primary);
    // Archiving fails from now on: PostgreSQL keeps the next segments .ready.
    for sql in [
        "ALTER SYSTEM SET archive_command = '/bin/false'",
        "SELECT pg_reload_conf()",
    ] {
        primary.execute(sql).expect("break archiving");
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..2 {
        primary
            .execute("CREATE TABLE IF NOT EXISTS t(x int); INSERT INTO t VALUES (1); SELECT pg_switch_wal();")
            .expect("switch");
    }
    let (code, report, out) = verify_json(&world, &[]);
    assert_eq!(code, Some(0), "delayed is not lost: {}", describe(&out));
    let missing = report["missing"].as_array().expect("missing");
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["class"], "ready", "{report}");
    assert_eq!(missing[0]["count"], 2, "{report}");

    // An archived segment removed: lost; back in incoming/, delayed again.
    let tli1_dir = world.wals().join("0000000100000000");
    let segments = plain_segments(&tli1_dir);
    let victim = segments[segments.len() / 2].clone();
    let bytes = fs::read(tli1_dir.join(&victim)).expect("read");
    fs::remove_file(tli1_dir.join(&victim)).expect("remove");
    let (code, report, out) = verify_json(&world, &[]);
    assert_eq!(code, Some(1), "{}", describe(&out));
    let lost: Vec<&serde_json::Value> = report["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .filter(|m| m["class"] == "lost")
        .collect();
    assert_eq!(lost.len(), 1, "{report}");
    assert_eq!(lost[0]["first"], victim.as_str());
    assert!(
        lost[0]["after_time"].is_f64() && lost[0]["before_time"].is_f64(),
        "{report}"
    );
    fs::create_dir_all(world.incoming()).expect("incoming");
    fs::write(world.incoming().join(&victim), bytes).expect("queue");
    world.own_all();
    let (code, report, out) = verify_json(&world, &[]);
    assert_eq!(code, Some(0), "{}", describe(&out));
    assert!(
        report["missing"]
            .as_array()
            .expect("missing")
            .iter()
            .any(|m| m["first"] == victim.as_str() && m["class"] == "queued"),
        "{report}"
    );
}
