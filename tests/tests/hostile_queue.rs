//! Hostile and careless input in the queues, through the `walvault` binary: links and FIFOs
//! named like WAL, names that are not UTF-8 or carry escape sequences, two rejects of one WAL,
//! and what an archive must reproduce and clean up by itself (issue 15).

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use walvault_tests::{SERVER, World, describe, file_names, queue_file, small_segment as segment};

const S01: &str = "000000010000000000000001";
const S02: &str = "000000010000000000000002";
const S03: &str = "000000010000000000000003";
const MIB: &str = "wal_segment_size = \"1MB\"";
/// Streaming needs a conninfo; archive-wal never uses it.
const STREAMING: &str =
    "streaming_archiver = true\narchiver = true\nconninfo = \"host=/nonexistent user=nobody\"";

/// Runs walvault as the test user; fails the test if it has not exited within `limit` (it is
/// killed first, so a hang fails instead of blocking the suite).
fn walvault_within(world: &World, args: &[&str], limit: Duration) -> Output {
    let mut cmd: Command = world.walvault_command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: runuser forks, and the hung walvault is its child.
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn walvault");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            // Every process of this world's configuration (runuser's child may have left its
            // process group).
            let _ = Command::new("pkill")
                .arg("-KILL")
                .arg("-f")
                .arg(&world.config)
                .status();
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let out = child.wait_with_output().expect("output");
            panic!(
                "walvault {args:?} still running after {limit:?} (killed)\n{}",
                describe(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// `get-wal` of `name` into `dest` with `extra` options, within 30 s.
fn get_wal(world: &World, name: &str, dest: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["get-wal", SERVER, name, dest.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    walvault_within(world, &args, Duration::from_secs(30))
}

/// `put-wal` of `path`, within 30 s.
fn put_wal(world: &World, path: &Path) -> Output {
    walvault_within(
        world,
        &["put-wal", SERVER, path.to_str().expect("utf-8")],
        Duration::from_secs(30),
    )
}

fn error_reasons(world: &World) -> Vec<serde_json::Value> {
    fs::read_to_string(world.home.join(SERVER).join("meta/errors.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("errors.jsonl line"))
        .collect()
}

fn archived(world: &World) -> Vec<String> {
    let dir = world.wals().join("0000000100000000");
    if dir.exists() {
        file_names(&dir)
    } else {
        Vec::new()
    }
}

#[test]
fn links_in_the_queue_are_refused_never_served_or_archived() {
    let world = World::new(MIB);
    let incoming = world.incoming();
    fs::create_dir_all(&incoming).expect("incoming");
    // Something the archiver's user can read, that must never reach the archive or a recovery.
    let secret = world.path("secret");
    fs::write(&secret, segment(S01, 3)).expect("secret");
    symlink(&secret, incoming.join(S01)).expect("link");
    let label = "000000010000000000000001.00000028.backup";
    symlink(&secret, incoming.join(label)).expect("link");
    world.own_all();

    let dest = world.path("RECOVERYXLOG");
    let out = get_wal(&world, S01, &dest, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!dest.exists(), "the link's target was served to a recovery");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("symbolic link"),
        "{}",
        describe(&out)
    );

    let out = walvault_within(&world, &["archive-wal", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        archived(&world).is_empty(),
        "nothing archived through a link"
    );
    let errors = file_names(&world.errors());
    assert_eq!(errors.len(), 2, "{errors:?}");
    for name in &errors {
        let meta = fs::symlink_metadata(world.errors().join(name)).expect("moved");
        assert!(meta.file_type().is_symlink(), "moved as the link it is");
    }
    let reasons = error_reasons(&world);
    assert!(
        reasons
            .iter()
            .all(|r| r["reason"].as_str().unwrap_or("").contains("symbolic link")),
        "{reasons:?}"
    );
    assert_eq!(fs::read(&secret).expect("secret"), segment(S01, 3));
}

#[test]
fn a_fifo_named_like_wal_blocks_nothing() {
    // No wal_segment_size: archive-wal detects it from the queued files, which opened the FIFO.
    let world = World::new("");
    let incoming = world.incoming();
    fs::create_dir_all(&incoming).expect("incoming");
    let made = Command::new("mkfifo")
        .arg(incoming.join(S01))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    queue_file(&incoming.join(S02), &segment(S02, 5));
    world.own_all();

    let dest = world.path("RECOVERYXLOG");
    let out = get_wal(&world, S01, &dest, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let out = walvault_within(&world, &["archive-wal", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    let errors = file_names(&world.errors());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(S01) && errors[0].ends_with(".unknown"));
    assert_eq!(archived(&world), [S02], "the rest of the queue is archived");
    // The lock was released: a second run works and has nothing to do.
    let out = walvault_within(&world, &["archive-wal", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Another archive-wal"),
        "{}",
        describe(&out)
    );
}

#[test]
fn two_rejected_copies_of_one_wal_are_both_kept() {
    let world = World::new(&format!("{MIB}\n{STREAMING}"));
    fs::create_dir_all(world.incoming()).expect("incoming");
    fs::create_dir_all(world.streaming()).expect("streaming");
    queue_file(&world.incoming().join(S01), &segment(S01, 1));
    world.own_all();
    let out = walvault_within(&world, &["archive-wal", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(archived(&world), [S01]);

    // The same name twice more, each different from the archived copy and from each other,
    // rejected in one run (one second: the same errors/ stamp).
    queue_file(&world.streaming().join(S01), &segment(S01, 2));
    queue_file(&world.incoming().join(S01), &segment(S01, 3));
    // pg_receivewal's position file, held back.
    queue_file(
        &world.streaming().join(format!("{S02}.partial")),
        b"partial",
    );
    world.own_all();
    let out = walvault_within(&world, &["archive-wal", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    let errors = file_names(&world.errors());
    assert_eq!(errors.len(), 2, "both rejects kept: {errors:?}");
    let mut kept: Vec<Vec<u8>> = errors
        .iter()
        .map(|n| fs::read(world.errors().join(n)).expect("read"))
        .collect();
    kept.sort();
    let mut expected = vec![segment(S01, 2), segment(S01, 3)];
    expected.sort();
    assert!(kept == expected, "each reject kept byte for byte");
}

#[test]
fn odd_names_go_to_errors_once_and_never_reach_the_terminal_raw() {
    let world = World::new(MIB);
    let incoming = world.incoming();
    fs::create_dir_all(&incoming).expect("incoming");
    let not_utf8 = std::ffi::OsStr::from_bytes(b"bad\xff\xfename");
    fs::write(incoming.join(not_utf8), b"junk").expect("not UTF-8");
    let long = "x".repeat(250);
    fs::write(incoming.join(&long), b"junk").expect("long");
    let escape = "evil\x1b]0;owned\x07\x1b[2J";
    fs::write(incoming.join(escape), b"junk").expect("escape");
    queue_file(&incoming.join(S03), &segment(S03, 9));
    world.own_all();

    let out = walvault_within(
        &world,
        &["-v", "archive-wal", SERVER],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
        "no escape character reaches the terminal: {}",
        describe(&out)
    );
    assert!(file_names(&incoming).is_empty(), "all moved or archived");
    let errors = file_names(&world.errors());
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().all(|n| n.len() < 255 && n.is_ascii()));
    let reasons = error_reasons(&world);
    assert_eq!(reasons.len(), 3);
    let originals: Vec<&str> = reasons
        .iter()
        .map(|r| r["original"].as_str().expect("original"))
        .collect();
    assert!(originals.contains(&"bad\\xff\\xfename"), "{originals:?}");
    assert!(originals.contains(&long.as_str()), "{originals:?}");

    // A second run finds nothing to do: no new message, no new record.
    let out = walvault_within(&world, &["archive-wal", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(error_reasons(&world).len(), 3);

    let out = walvault_within(&world, &["show-errors", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!out.stdout.contains(&0x1b), "{}", describe(&out));
}

#[test]
fn usage_errors_exit_2_and_bounded() {
    let world = World::new(MIB);
    let out = walvault_within(
        &world,
        &["put-wal", SERVER, "/etc/passwd"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let dest = world.path("RECOVERYXLOG");
    let out = get_wal(&world, S01, &dest, &["--prefetch", "100000000000"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    // put-wal refuses a link at %p (PostgreSQL's pg_wal holds regular files).
    let secret = world.path("secret");
    fs::write(&secret, segment(S01, 1)).expect("secret");
    let pg_wal = world.path("pg_wal");
    fs::create_dir_all(&pg_wal).expect("pg_wal");
    symlink(&secret, pg_wal.join(S01)).expect("link");
    world.own_all();
    let out = put_wal(&world, &pg_wal.join(S01));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(archived(&world).is_empty());
}

#[test]
fn archived_files_keep_their_time_so_a_rebuild_reproduces_the_catalogue() {
    for codec in ["none", "gzip", "zstd", "lz4"] {
        let world = World::new(&format!("{MIB}\ncompression = \"{codec}\""));
        fs::create_dir_all(world.incoming()).expect("incoming");
        fs::create_dir_all(world.streaming()).expect("streaming");
        world.add_config(STREAMING);
        // Streaming is archived first, then incoming: catalogue lines in name order.
        queue_file(&world.streaming().join(S01), &segment(S01, 1));
        queue_file(&world.streaming().join(format!("{S03}.partial")), b"p");
        queue_file(&world.incoming().join(S02), &segment(S02, 2));
        let staged = world.in_pg_wal(S03, &segment(S03, 3));
        let out = walvault_within(&world, &["archive-wal", SERVER], Duration::from_secs(30));
        assert!(out.status.success(), "{}", describe(&out));
        let out = put_wal(&world, &staged);
        assert!(out.status.success(), "{}", describe(&out));
        let catalogue = world.wals().join(format!("{SERVER}-xlog.db"));
        let before = fs::read(&catalogue).expect("catalogue");
        assert_eq!(before.iter().filter(|b| **b == b'\n').count(), 3);
        let out = walvault_within(&world, &["rebuild-xlogdb", SERVER], Duration::from_secs(30));
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&fs::read(&catalogue).expect("rebuilt")),
            String::from_utf8_lossy(&before),
            "{codec}: the rebuilt catalogue is the same, byte for byte"
        );
    }
}

#[test]
fn temp_files_of_killed_writers_are_cleaned_by_put_wal_and_rebuild() {
    let world = World::new(MIB);
    let hash = world.wals().join("0000000100000000");
    let other = world.wals().join("0000000100000001");
    fs::create_dir_all(&hash).expect("hash dir");
    fs::create_dir_all(&other).expect("hash dir");
    // As a put-wal killed mid-write leaves them: no such process runs.
    let dead = |dir: &Path, name: &str| {
        let path = dir.join(format!(".{name}.999999999.0.tmp"));
        fs::File::create(&path)
            .and_then(|mut f| f.write_all(b"half"))
            .expect("temp");
        path
    };
    let first = dead(&hash, S01);
    let second = dead(&other, "000000010000000100000001");
    let staged = world.in_pg_wal(S01, &segment(S01, 1));
    let out = put_wal(&world, &staged);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!first.exists(), "put-wal cleans its own hash directory");
    assert!(second.exists());
    let out = walvault_within(&world, &["rebuild-xlogdb", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!second.exists(), "rebuild-xlogdb cleans the whole archive");
    assert_eq!(file_names(&hash), [S01]);
}

/// Every directory and file under `root` whose mode lets others in, as `path mode` lines.
fn open_to_others(root: &Path, mask: u32) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & mask != 0 {
            found.push(format!("{} {mode:o}", path.display()));
        }
        if meta.is_dir() {
            stack.extend(
                fs::read_dir(&path)
                    .expect("list")
                    .map(|e| e.expect("entry").path()),
            );
        }
    }
    found.sort();
    found
}

#[test]
fn the_archive_is_private_whatever_the_umask() {
    // The test runs walvault with the usual umask 022: what it creates must still be private.
    let world = World::new(&format!("{MIB}\n{STREAMING}"));
    let server = world.home.join(SERVER);
    let staged = world.in_pg_wal(S01, &segment(S01, 1));
    let out = put_wal(&world, &staged);
    assert!(out.status.success(), "{}", describe(&out));
    queue_file(&world.incoming().join(S02), &segment(S02, 2));
    // As PostgreSQL's archive_command leaves them (its umask is 077); moved to errors/ as is.
    let junk = world.incoming().join("junk");
    fs::write(&junk, b"x").expect("junk");
    fs::set_permissions(&junk, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    world.own_all();
    for args in [
        vec!["archive-wal", SERVER],
        vec!["check", SERVER],
        vec!["rebuild-xlogdb", SERVER],
    ] {
        let out = walvault_within(&world, &args, Duration::from_secs(60));
        assert!(
            out.status.code() == Some(0) || args[0] == "check",
            "{}",
            describe(&out)
        );
    }
    let restore = world.path("restore");
    fs::create_dir_all(&restore).expect("restore");
    world.own_all();
    let dest = restore.join("RECOVERYXLOG");
    let out = get_wal(&world, S01, &dest, &["--prefetch", "2"]);
    assert!(out.status.success(), "{}", describe(&out));
    std::thread::sleep(Duration::from_secs(1)); // the prefetch worker's spool
    // incoming/ and its files are the test's (umask 022); everything walvault made is private.
    fs::remove_dir_all(world.incoming()).expect("rm incoming");
    assert!(server.join("errors").exists() && server.join("wals").exists());
    assert_eq!(open_to_others(&server, 0o077), Vec::<String>::new());
}

#[test]
fn relative_directories_are_refused() {
    for key in [
        "wals_directory",
        "backup_directory",
        "incoming_wals_directory",
        "errors_directory",
        "xlogdb_directory",
    ] {
        let world = World::new(&format!("{MIB}\n{key} = \"relative/dir\""));
        let staged = world.in_pg_wal(S01, &segment(S01, 1));
        let pg_wal = world.path("pg_wal");
        let out = put_wal(&world, &staged);
        assert_eq!(out.status.code(), Some(2), "{key}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains(&format!("[pg] {key}: must be an absolute path")),
            "{}",
            describe(&out)
        );
        assert!(!world.path("relative").exists() && !pg_wal.join("relative").exists());
    }
}

#[test]
fn group_access_makes_the_archive_group_readable_and_no_more() {
    let world = World::new(MIB);
    let text = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        text.replacen("[walvault]\n", "[walvault]\ngroup_access = true\n", 1),
    )
    .expect("config");
    let staged = world.in_pg_wal(S01, &segment(S01, 1));
    let out = put_wal(&world, &staged);
    assert!(out.status.success(), "{}", describe(&out));
    let server = world.home.join(SERVER);
    assert_eq!(open_to_others(&server, 0o027), Vec::<String>::new());
    let segment_file = world.wals().join("0000000100000000").join(S01);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(&segment_file).expect("archived").permissions(),
    );
    assert_eq!(mode & 0o777, 0o640, "group-readable");
}

#[test]
fn check_fails_an_archive_or_a_secret_others_can_read() {
    let world = World::new(&format!(
        "{MIB}\nconninfo = \"host=/nonexistent user=nobody password=hunter2 connect_timeout=1\""
    ));
    // An archive made by hand or another tool under umask 022, and the config file 0644.
    let server = world.home.join(SERVER);
    fs::create_dir_all(world.wals()).expect("wals");
    for dir in [&server, &world.wals()] {
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    fs::set_permissions(
        &world.config,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    world.own_all();
    let out = walvault_within(&world, &["check", SERVER], Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("permissions: FAILED"), "{}", describe(&out));
    assert!(
        text.contains("configuration file: FAILED") && text.contains("conninfo"),
        "{}",
        describe(&out)
    );
    assert!(!text.contains("hunter2"), "{}", describe(&out));

    // Private again: both checks pass.
    for (path, mode) in [
        (&server, 0o700),
        (&world.wals(), 0o700),
        (&world.config, 0o600),
    ] {
        fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    let out = walvault_within(&world, &["check", SERVER], Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("permissions: OK"), "{}", describe(&out));
    assert!(!text.contains("configuration file"), "{}", describe(&out));
}

#[test]
fn uncompressed_queued_files_are_linked_but_never_shared_with_another_name_or_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let world = World::new(&format!("{MIB}\ncompression = \"none\""));
    fs::create_dir_all(world.incoming()).expect("incoming");
    let data = [segment(S01, 1), segment(S02, 2), segment(S03, 3)];
    // S01 is the queue's alone: linked. S02 has a second name elsewhere: copied, so writing
    // through that name never reaches the archive. S03 belongs to another user: copied, so the
    // archive's copy is walvault's and private.
    queue_file(&world.incoming().join(S01), &data[0]);
    queue_file(&world.incoming().join(S02), &data[1]);
    world.own_all();
    let elsewhere = world.path("elsewhere");
    fs::hard_link(world.incoming().join(S02), &elsewhere).expect("a second name");
    queue_file(&world.incoming().join(S03), &data[2]);
    fs::set_permissions(
        world.incoming().join(S03),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let queued_inode = fs::metadata(world.incoming().join(S01))
        .expect("queued")
        .ino();
    let out = walvault_within(&world, &["archive-wal", SERVER], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(file_names(&world.incoming()), Vec::<String>::new());

    let dir = world.wals().join("0000000100000000");
    let owner = fs::metadata(&dir).expect("archive").uid();
    for (name, data) in [S01, S02, S03].iter().zip(&data) {
        let meta = fs::metadata(dir.join(name)).expect("archived");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name} private");
        assert_eq!(meta.uid(), owner, "{name} walvault's");
        assert_eq!(meta.nlink(), 1, "{name}: one name, the archive's");
        assert!(&fs::read(dir.join(name)).expect("read") == data, "{name}");
    }
    assert_eq!(
        fs::metadata(dir.join(S01)).expect("archived").ino(),
        queued_inode,
        "linked, not copied"
    );
    fs::write(&elsewhere, b"written through the other name").expect("write");
    assert!(
        fs::read(dir.join(S02)).expect("read") == data[1],
        "not shared"
    );
    let catalogue = world.catalogue();
    assert_eq!(catalogue.len(), 3);
    assert!(
        catalogue
            .iter()
            .all(|e| e.size == 1 << 20 && e.compression.is_none())
    );
}

#[test]
fn put_wal_never_links_postgresql_s_file_which_postgresql_recycles_in_place() {
    use std::os::unix::fs::MetadataExt;
    let world = World::new(&format!("{MIB}\ncompression = \"none\""));
    let data = segment(S01, 1);
    let staged = world.in_pg_wal(S01, &data);
    world.own_all();
    let out = put_wal(&world, &staged);
    assert!(out.status.success(), "{}", describe(&out));
    let archived = world.wals().join("0000000100000000").join(S01);
    assert_ne!(
        fs::metadata(&archived).expect("archived").ino(),
        fs::metadata(&staged).expect("staged").ino(),
        "a copy, not a second name for pg_wal's file"
    );
    // PostgreSQL recycles the segment file: renamed and overwritten in place.
    fs::write(&staged, segment(S02, 2)).expect("recycle");
    assert!(
        fs::read(&archived).expect("read") == data,
        "the archive keeps what was archived"
    );
}

#[test]
fn verify_and_get_wal_never_follow_links_wait_on_fifos_or_print_odd_names_in_the_archive() {
    let world = World::new(MIB);
    let staged = world.in_pg_wal(S01, &segment(S01, 1));
    let out = put_wal(&world, &staged);
    assert!(out.status.success(), "{}", describe(&out));
    let dir = world.wals().join("0000000100000000");
    // A FIFO and a link named like segments, odd names, and a 32 MiB "backup label".
    let fifo = Command::new("mkfifo")
        .arg(dir.join(S02))
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    let outside = world.path("outside");
    fs::write(&outside, segment(S03, 3)).expect("outside");
    symlink(&outside, dir.join(S03)).expect("link");
    fs::write(dir.join("\x1b[31mred"), b"x").expect("escape name");
    fs::write(dir.join(std::ffi::OsStr::from_bytes(b"\xff\xfe")), b"x").expect("non-UTF-8");
    fs::write(
        dir.join(format!("{S01}.00000028.backup")),
        b"LABEL: nightly\n".repeat(32 << 16),
    )
    .expect("label");
    world.own_all();

    let out = walvault_within(
        &world,
        &["verify", SERVER, "--format", "json"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let findings = report[0]["findings"].to_string();
    assert!(
        findings.contains(&format!("{S02}\",")) && findings.contains("not a regular file"),
        "{findings}"
    );
    assert!(
        findings.contains(&format!("{S03}\",")) && findings.contains("symbolic link"),
        "{findings}"
    );
    let text = walvault_within(&world, &["verify", SERVER], Duration::from_secs(60));
    for out in [&out, &text] {
        assert!(!out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b));
    }
    // The oversized label is never read whole: it names no backup.
    let out = walvault_within(
        &world,
        &["verify", SERVER, "--from-backup", "nightly"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = walvault_within(
        &world,
        &["verify", SERVER, "--from", "\x1b[2Jnot-a-wal"],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(!out.stderr.contains(&0x1b), "{}", describe(&out));
    for name in [S02, S03] {
        let dest = world.path(&format!("restored-{name}"));
        let out = get_wal(&world, name, &dest, &[]);
        assert_eq!(out.status.code(), Some(255), "{name}: {}", describe(&out));
        assert!(!dest.exists());
    }
}
