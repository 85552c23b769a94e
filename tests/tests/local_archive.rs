//! The `walvault` CLI on a local archive, against real PostgreSQL 15 (issue 3's tests).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use walvault_core::compression::{Codec, DecodeLimits, decode_all};
use walvault_core::wal::{SegmentSize, WalFileName, synthetic_page_header};
use walvault_tests::{
    SERVER, World, assert_contiguous, describe, failed_count, pgbench_load, point_in_time_recovery,
    switch_and_wait_archived,
};

#[test]
fn put_wal_as_archive_command_archives_every_segment() {
    let world = World::new("compression = \"lz4\"");
    let primary = world.archiving_primary();
    // check reads the config at run time: the conninfo can follow the start.
    world.add_config(&format!("conninfo = \"{}\"", primary.conninfo()));
    pgbench_load(&primary, 3, 1500);
    switch_and_wait_archived(&primary);
    let last = switch_and_wait_archived(&primary);
    assert_eq!(
        failed_count(&primary),
        "0",
        "PostgreSQL saw no archive failure"
    );
    assert_contiguous(&world, &last);
    assert!(
        world
            .catalogue()
            .iter()
            .all(|e| e.compression.as_deref() == Some("lz4"))
    );
    let check = world.walvault(&["check", SERVER]);
    assert!(
        check.status.success(),
        "walvault check passes against the live server: {}",
        describe(&check)
    );
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("continuous archiving: OK") && text.contains("archive_mode: OK"),
        "{text}"
    );
}

#[test]
fn incoming_drop_then_archive_wal_archives_every_segment() {
    let world = World::new("compression = \"gzip\"\ncompression_level = \"low\"");
    fs::create_dir_all(world.incoming()).expect("incoming");
    world.own_all();
    let incoming = world.incoming();
    let copy = format!(
        "test ! -f {0}/%f && cp %p {0}/.%f.tmp && mv {0}/.%f.tmp {0}/%f",
        incoming.display()
    );
    let mut primary = world.cluster("primary");
    primary.configure(&format!("wal_level = replica\narchive_mode = on\narchive_command = '{copy}'\nmax_wal_size = 64MB")).expect("configure");
    primary.start().expect("start");
    pgbench_load(&primary, 3, 1000);
    let last = switch_and_wait_archived(&primary);
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(failed_count(&primary), "0");
    assert_contiguous(&world, &last);
    let left: Vec<_> = fs::read_dir(&incoming)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "incoming is empty after archive-wal: {left:?}"
    );
    // A second run has nothing to do and says nothing (cron).
    let again = world.walvault(&["archive-wal", SERVER]);
    assert!(
        again.status.success() && again.stdout.is_empty() && again.stderr.is_empty(),
        "{}",
        describe(&again)
    );
}

fn pitr_world(codec: &str, extra: &str) -> World {
    World::new(&format!(
        "compression = \"{codec}\"\ncompression_level = \"low\"\n{extra}"
    ))
}

#[test]
fn pitr_none() {
    point_in_time_recovery(&pitr_world("none", ""), "none");
}
#[test]
fn pitr_gzip() {
    point_in_time_recovery(&pitr_world("gzip", ""), "gzip");
}
#[test]
fn pitr_bzip2() {
    point_in_time_recovery(&pitr_world("bzip2", ""), "bzip2");
}
#[test]
fn pitr_xz() {
    point_in_time_recovery(&pitr_world("xz", ""), "xz");
}
#[test]
fn pitr_zstd() {
    point_in_time_recovery(&pitr_world("zstd", ""), "zstd");
}
#[test]
fn pitr_lz4() {
    point_in_time_recovery(&pitr_world("lz4", ""), "lz4");
}
#[test]
fn pitr_snappy() {
    point_in_time_recovery(&pitr_world("snappy", ""), "snappy");
}

const MIB: u64 = 1 << 20;

/// A 1 MiB segment with a valid page header and WAL-like, compressible content.
fn segment(name: &str, seed: u8) -> Vec<u8> {
    let n: WalFileName = name.parse().expect("name");
    let size = SegmentSize::new(MIB).expect("size");
    let mut data = vec![0u8; MIB as usize];
    data[..40].copy_from_slice(&synthetic_page_header(&n, size, 42));
    for (i, b) in data.iter_mut().enumerate().skip(40).take(400_000) {
        *b = ((i as u32).wrapping_mul(2_654_435_761) >> 27) as u8 ^ seed;
    }
    data
}

fn seg_name(n: u32) -> String {
    format!("00000001000000000000{n:04X}")
}

fn stored_content(world: &World, name: &str) -> Option<Vec<u8>> {
    let n: WalFileName = name.parse().ok()?;
    let bytes = fs::read(world.wals().join(n.relative_path())).ok()?;
    decode_all(Codec::identify(&bytes), &bytes, DecodeLimits::default()).ok()
}

fn age(path: &std::path::Path) {
    let status = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(path)
        .status()
        .expect("touch");
    assert!(status.success());
}

#[test]
fn bad_input_gets_clear_errors_and_nothing_is_lost() {
    let world = World::new("compression = \"gzip\"\nwal_segment_size = \"1MB\"");
    let inc = world.incoming();
    fs::create_dir_all(&inc).expect("incoming");
    fs::create_dir_all(world.wals()).expect("wals");
    // Already archived: 01 (identical re-delivery follows) and 02 (a different WAL follows).
    for n in [1, 2] {
        fs::write(inc.join(seg_name(n)), segment(&seg_name(n), n as u8)).expect("write");
    }
    world.own_all();
    let first = world.walvault(&["archive-wal", SERVER]);
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(world.catalogue().len(), 2);

    fs::write(inc.join(seg_name(1)), segment(&seg_name(1), 1)).expect("identical");
    fs::write(inc.join(seg_name(2)), segment(&seg_name(2), 99)).expect("different");
    fs::write(inc.join(seg_name(3)), b"").expect("zero length");
    age(&inc.join(seg_name(3)));
    fs::write(inc.join(seg_name(4)), &segment(&seg_name(4), 4)[..300_000]).expect("truncated");
    age(&inc.join(seg_name(4)));
    fs::write(inc.join(seg_name(5)), segment(&seg_name(5), 5)).expect("unreadable");
    fs::write(inc.join(seg_name(6)), segment(&seg_name(6), 6)).expect("good");
    fs::write(inc.join("garbage.txt"), b"not wal").expect("garbage");
    fs::create_dir(inc.join(seg_name(7))).expect("directory named like a WAL");
    let mut wrong_place = segment(&seg_name(9), 9);
    wrong_place[8..16].copy_from_slice(&(8 * MIB).to_le_bytes()); // header says segment 8
    fs::write(inc.join(seg_name(9)), wrong_place).expect("header mismatch");
    world.own_all();
    fs::set_permissions(inc.join(seg_name(5)), fs::Permissions::from_mode(0o000)).expect("chmod");

    let out = world.walvault(&["archive-wal", SERVER]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreadable file fails the run: {}",
        describe(&out)
    );
    for expected in [
        format!("{}: cannot read", seg_name(5)),
        format!("{} is already present in server {SERVER}", seg_name(2)),
        format!("{}: empty file", seg_name(3)),
        format!("{}: segment is 300000 bytes, expected 1048576", seg_name(4)),
        format!("{}: bad page header", seg_name(9)),
        "garbage.txt: not a WAL file name".to_owned(),
        format!("{}: not a regular file", seg_name(7)),
    ] {
        assert!(
            stderr.contains(&expected),
            "stderr names the problem {expected:?}:\n{stderr}"
        );
    }
    let left: Vec<String> = fs::read_dir(&inc)
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [seg_name(5)], "only the unreadable file stays queued");
    let errors: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(world.errors())
            .expect("errors")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let kinds: Vec<(String, String)> = errors
        .iter()
        .map(|e| {
            (
                e.split('.').next().unwrap_or_default().to_owned(),
                e.rsplit('.').next().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (seg_name(2), "duplicate".to_owned()),
            (seg_name(3), "invalid".to_owned()),
            (seg_name(4), "invalid".to_owned()),
            (seg_name(7), "unknown".to_owned()),
            (seg_name(9), "invalid".to_owned()),
            ("garbage".to_owned(), "unknown".to_owned()),
        ]
    );
    // Nothing lost: the different WAL 02 is kept byte for byte, the archive's 02 untouched.
    let dup = errors
        .iter()
        .find(|e| e.starts_with(&seg_name(2)))
        .expect("duplicate kept");
    assert_eq!(
        fs::read(world.errors().join(dup)).expect("read"),
        segment(&seg_name(2), 99)
    );
    assert_eq!(
        stored_content(&world, &seg_name(2)).expect("archived 02"),
        segment(&seg_name(2), 2)
    );
    assert_eq!(
        stored_content(&world, &seg_name(6)).expect("archived 06"),
        segment(&seg_name(6), 6)
    );
    let show = world.walvault(&["show-errors", SERVER]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("segment is 300000 bytes") && shown.contains("archived copy:"),
        "show-errors explains each file:\n{shown}"
    );
    let check = world.walvault(&["check", SERVER]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&check.stdout)
            .contains("archiver errors: FAILED (duplicates: 1, unknown: 2, invalid: 3"),
        "{}",
        describe(&check)
    );

    // Once readable, the last file is archived.
    fs::set_permissions(inc.join(seg_name(5)), fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stored_content(&world, &seg_name(5)).expect("archived 05"),
        segment(&seg_name(5), 5)
    );
}

/// Unmounts a test file system even when the test fails.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_keeps_sources_and_a_rerun_completes() {
    let world = World::new("compression = \"none\"\nwal_segment_size = \"1MB\"");
    let wals = world.wals();
    fs::create_dir_all(&wals).expect("wals");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2200k,mode=0755", "tmpfs"])
        .arg(&wals)
        .status()
        .expect("mount");
    assert!(
        mounted.success(),
        "mounting a small tmpfs needs root (CI runs as root)"
    );
    let _mount = Mount(wals.clone());
    let inc = world.incoming();
    fs::create_dir_all(&inc).expect("incoming");
    for n in 1..=4 {
        fs::write(inc.join(seg_name(n)), segment(&seg_name(n), n as u8)).expect("write");
    }
    world.own_all();
    let out = world.walvault(&["archive-wal", SERVER, "--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
        "{}",
        describe(&out)
    );
    for n in 1..=4 {
        let queued = inc.join(seg_name(n)).exists();
        let archived = stored_content(&world, &seg_name(n))
            .is_some_and(|c| c == segment(&seg_name(n), n as u8));
        assert!(
            queued || archived,
            "{} is neither queued nor durably archived",
            seg_name(n)
        );
    }
    assert!(
        inc.join(seg_name(4)).exists(),
        "the file that did not fit stays queued"
    );
    let temp: Vec<_> = walkdir(&wals)
        .into_iter()
        .filter(|p| p.ends_with(".tmp"))
        .collect();
    assert!(
        temp.is_empty(),
        "no temporary files left on the full disk: {temp:?}"
    );

    let grown = Command::new("mount")
        .args(["-o", "remount,size=20m"])
        .arg(&wals)
        .status()
        .expect("remount");
    assert!(grown.success());
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let names: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    assert_eq!(names, (1..=4).map(seg_name).collect::<Vec<_>>());
}

fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[test]
fn killed_archive_wal_then_rerun_loses_nothing() {
    let world =
        World::new("compression = \"xz\"\ncompression_level = 9\nwal_segment_size = \"1MB\"");
    let inc = world.incoming();
    fs::create_dir_all(&inc).expect("incoming");
    let count = 24;
    for n in 1..=count {
        fs::write(inc.join(seg_name(n)), segment(&seg_name(n), n as u8)).expect("write");
    }
    world.own_all();
    let mut child = world.walvault_command();
    child.args(["archive-wal", SERVER, "--jobs", "2"]);
    let mut child = child.spawn().expect("spawn");
    // Kill it once it has stored a few files, mid-batch.
    let started = std::time::Instant::now();
    while walkdir(&world.wals())
        .iter()
        .filter(|p| !p.ends_with(".tmp") && !p.ends_with("xlog.db"))
        .count()
        < 3
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The child is `runuser`; kill the whole process group's walvault.
    let _ = Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("{} -c {}", world.bin.display(), world.config.display()),
        ])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    let queued_after_kill = fs::read_dir(&inc).expect("ls").count();
    assert!(
        queued_after_kill > 0,
        "killed mid-batch: files still queued"
    );
    for n in 1..=count {
        let name = seg_name(n);
        let original = segment(&name, n as u8);
        let queued = fs::read(inc.join(&name)).ok();
        if let Some(q) = &queued {
            assert_eq!(q, &original, "{name} still queued, unchanged");
        } else {
            assert_eq!(
                stored_content(&world, &name).as_ref(),
                Some(&original),
                "{name} released only after it was durably archived"
            );
        }
    }
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut names: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    names.sort();
    assert_eq!(
        names,
        (1..=count).map(seg_name).collect::<Vec<_>>(),
        "every WAL catalogued exactly once after the rerun"
    );
    for n in 1..=count {
        assert_eq!(
            stored_content(&world, &seg_name(n)).expect("archived"),
            segment(&seg_name(n), n as u8)
        );
    }
    let temp: Vec<_> = walkdir(&world.wals())
        .into_iter()
        .filter(|p| p.ends_with(".tmp"))
        .collect();
    assert!(
        temp.is_empty(),
        "the rerun cleaned the killed run's temporary files: {temp:?}"
    );
}
