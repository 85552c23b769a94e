//! Streaming archiving with `walvault receive-wal` and `pg_receivewal`, against real
//! PostgreSQL 15 with a physical replication slot (issue 4's tests).

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use walvault::pgcluster::Cluster;
use walvault_tests::{
    SERVER, World, assert_contiguous, describe, file_names, fingerprint, pgbench_in_background,
    pgbench_load, switch_and_wait_archived, switch_and_wait_streamed,
};

const SLOT: &str = "walvault";

/// A primary that streams to walvault (and, with `put_wal`, also archives with put-wal).
fn streaming_world(codec: &str, put_wal: bool, extra_pg: &str) -> (World, Cluster) {
    let world = World::new(&format!("compression = \"{codec}\""));
    let mut primary = world.cluster("primary");
    let archive = if put_wal {
        format!(
            "archive_mode = on\narchive_command = '{}'\n",
            world.command_line(&format!("put-wal {SERVER} %p"))
        )
    } else {
        String::new()
    };
    primary
        .configure(&format!(
            "wal_level = replica\nmax_wal_size = 64MB\n{archive}{extra_pg}"
        ))
        .expect("configure");
    primary.start().expect("start");
    world.add_config(&format!(
        "streaming_archiver = true\narchiver = {put_wal}\nslot_name = \"{SLOT}\"\nconninfo = \"{}\"",
        primary.conninfo()
    ));
    (world, primary)
}

fn create_slot(world: &World) {
    let out = world.walvault(&["receive-wal", SERVER, "--create-slot"]);
    assert!(out.status.success(), "{}", describe(&out));
}

fn archive_wal(world: &World) {
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
}

fn streaming_files(world: &World) -> Vec<String> {
    file_names(&world.streaming())
}

/// What `errors/` holds (nothing when nothing was ever moved there).
fn errors(world: &World) -> Vec<String> {
    if world.errors().exists() {
        file_names(&world.errors())
    } else {
        Vec::new()
    }
}

/// A copy of the base backup `base` in the data directory `name`.
fn copy_base(world: &World, name: &str) {
    let out = Command::new("cp")
        .args(["-a"])
        .arg(world.path("base"))
        .arg(world.path(name))
        .output()
        .expect("cp");
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn streamed_segments_are_archived_once_and_the_newest_partial_stays() {
    let (world, primary) = streaming_world("zstd", false, "");
    create_slot(&world);
    let receiver = world.start_receive_wal();
    pgbench_load(&primary, 2, 500);
    switch_and_wait_streamed(&world, &primary);
    let last = switch_and_wait_streamed(&world, &primary);
    archive_wal(&world);
    assert_contiguous(&world, &last);
    // Nothing complete is left behind; only pg_receivewal's current partial.
    let left = streaming_files(&world);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(".partial"), "{left:?}");
    assert!(
        left[0].as_str() > last.as_str(),
        "the held-back partial is the newest"
    );
    // A second run archives nothing twice.
    archive_wal(&world);
    assert_contiguous(&world, &last);
    assert!(errors(&world).is_empty(), "{:?}", errors(&world));

    let check = world.walvault(&["check", SERVER]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{}", describe(&check));
    for expected in [
        "pg_receivewal: OK",
        "receive-wal running: OK",
        "replication slot: OK",
        "streaming lag: OK",
    ] {
        assert!(text.contains(expected), "missing {expected:?}:\n{text}");
    }
    let status = world.walvault(&["status", SERVER, "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(json[0]["streaming"]["receive_wal_running"], true, "{json}");
    assert!(json[0]["streaming"]["postgresql"]["receiver"]["lag_bytes"].is_i64());

    let (code, log) = receiver.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    let check = world.walvault(&["check", SERVER]);
    assert!(
        !check.status.success(),
        "check fails once receive-wal stopped"
    );
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("receive-wal running: FAILED"),
        "{}",
        describe(&check)
    );
}

#[test]
fn a_killed_pg_receivewal_is_restarted_and_leaves_no_gap() {
    let (world, primary) = streaming_world("lz4", false, "");
    // create_slot = auto: receive-wal creates the missing slot itself.
    world.add_config("create_slot = \"auto\"");
    let receiver = world.start_receive_wal();
    primary
        .pgbench(&["-i", "-s", "2", "-q"])
        .expect("pgbench -i");
    let first = switch_and_wait_streamed(&world, &primary);
    // Load continues while pg_receivewal is killed mid-segment.
    let load = pgbench_in_background(&world, &primary, 8);
    std::thread::sleep(Duration::from_secs(2));
    let before = receiver.pg_receivewal_pid().expect("pg_receivewal runs");
    let killed = Command::new("kill")
        .args(["-KILL", &before.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let after = receiver.wait_for_receiver(Some(before));
    assert_ne!(before, after);
    load.join().expect("load");
    let last = switch_and_wait_streamed(&world, &primary);
    assert!(last > first);
    archive_wal(&world);
    assert_contiguous(&world, &last);
    let log = receiver.log_text();
    assert!(log.contains("was killed by signal 9"), "{log}");
    assert!(log.contains("restarting in"), "{log}");
    // The slot held the WAL the dead receiver had not confirmed.
    let slot = primary
        .query_text(&format!(
            "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
        ))
        .expect("slot");
    assert_eq!(slot, "true");
}

#[test]
fn synchronous_streaming_loses_no_committed_transaction() {
    let (world, mut primary) = streaming_world(
        "gzip",
        true,
        "synchronous_standby_names = 'walvault_receive_wal'\nsynchronous_commit = on",
    );
    world.add_config("synchronous = true");
    create_slot(&world);
    let receiver = world.start_receive_wal();
    primary
        .wait_for(
            "pg_receivewal as synchronous standby",
            Duration::from_secs(60),
            |c| {
                Ok(c.query_text(
                    "SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication",
                )? == "sync")
            },
        )
        .expect("sync");
    primary
        .pgbench(&["-i", "-s", "2", "-q"])
        .expect("pgbench -i");
    switch_and_wait_archived(&primary);
    primary
        .base_backup(&world.path("restored"))
        .expect("base backup");
    primary
        .pgbench(&["-n", "-c", "2", "-t", "300"])
        .expect("pgbench");
    // The last commit returns only after pg_receivewal flushed it.
    primary
        .execute("CREATE TABLE rpo(v text); INSERT INTO rpo VALUES ('last committed');")
        .expect("last commit");
    let expected = fingerprint(&primary);
    primary.stop("immediate").expect("crash");
    let (code, log) = receiver.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains(", synchronous"),
        "pg_receivewal ran with --synchronous: {log}"
    );

    // Recover from the base backup, the archive and the streamed partial.
    let restored = world.recover(
        "restored",
        &format!(
            "archive_mode = off\nrestore_command = '{}'",
            world.command_line(&format!("get-wal --partial {SERVER} %f %p"))
        ),
        "recovery to end",
        Duration::from_secs(180),
    );
    assert_eq!(
        restored
            .query_text("SELECT string_agg(v, ',') FROM rpo")
            .expect("rpo"),
        "last committed"
    );
    assert_eq!(fingerprint(&restored), expected);
}

#[test]
fn a_timeline_switch_archives_both_timelines_and_recovers_to_latest() {
    // Timeline 1: put-wal and streaming both deliver every segment.
    let (world, mut primary) = streaming_world("bzip2", true, "");
    create_slot(&world);
    primary
        .pgbench(&["-i", "-s", "2", "-q"])
        .expect("pgbench -i");
    primary
        .base_backup(&world.path("base"))
        .expect("base backup");
    let receiver = world.start_receive_wal();
    primary
        .pgbench(&["-n", "-c", "2", "-t", "300"])
        .expect("pgbench");
    switch_and_wait_archived(&primary);
    switch_and_wait_streamed(&world, &primary);
    primary.stop("fast").expect("stop");
    drop(receiver);
    archive_wal(&world);

    // A point-in-time copy of the primary that ends recovery on timeline 2.
    copy_base(&world, "copy");
    let promoted = world.recover(
        "copy",
        &format!(
            "archive_mode = on\narchive_command = '{}'\nrestore_command = '{}'",
            world.command_line(&format!("put-wal {SERVER} %p")),
            world.command_line(&format!("get-wal --partial {SERVER} %f %p"))
        ),
        "promotion",
        Duration::from_secs(180),
    );
    let tli = promoted
        .query_text("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
        .expect("tli");
    assert_eq!(tli, "00000002");

    // Streaming follows the new primary: its slot, then --reset onto timeline 2.
    let config = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        config.replace(&primary.conninfo(), &promoted.conninfo()),
    )
    .expect("config");
    create_slot(&world);
    let reset = world.walvault(&["receive-wal", SERVER, "--reset"]);
    assert!(reset.status.success(), "{}", describe(&reset));
    let receiver = world.start_receive_wal();
    promoted
        .pgbench(&["-n", "-c", "2", "-t", "300"])
        .expect("pgbench on timeline 2");
    switch_and_wait_archived(&promoted);
    let last = switch_and_wait_streamed(&world, &promoted);
    drop(receiver);
    archive_wal(&world);

    assert!(
        errors(&world).is_empty(),
        "false duplicates: {:?}",
        errors(&world)
    );
    let names: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    assert!(names.contains(&"00000002.history".to_owned()), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("00000001")), "{names:?}");
    assert_contiguous(&world, &last);
    let expected = fingerprint(&promoted);

    // Recovery from the base backup follows the history file to timeline 2.
    copy_base(&world, "recovered");
    let recovered = world.recover(
        "recovered",
        &format!(
            "archive_mode = off\nrestore_command = '{}'\nrecovery_target_timeline = 'latest'",
            world.command_line(&format!("get-wal {SERVER} %f %p"))
        ),
        "recovery to end",
        Duration::from_secs(180),
    );
    assert_eq!(fingerprint(&recovered), expected);
    let tli = recovered
        .query_text("SELECT timeline_id::text FROM pg_control_checkpoint()")
        .expect("timeline");
    assert!(
        tli.parse::<u32>().expect("tli") >= 2,
        "recovery followed timeline 2"
    );
}

#[test]
fn misuse_gets_clear_errors() {
    let (world, primary) = streaming_world("none", false, "");
    // The slot does not exist: the message names the command that creates it.
    let out = world.walvault(&["receive-wal", SERVER, "--no-restart"]);
    let text = describe(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("replication slot 'walvault' does not exist")
            && text.contains("walvault receive-wal --create-slot pg"),
        "{text}"
    );
    // --create-slot twice: the second fails unless --if-not-exists.
    create_slot(&world);
    let again = world.walvault(&["receive-wal", SERVER, "--create-slot"]);
    assert!(!again.status.success());
    assert!(
        describe(&again).contains("already exists"),
        "{}",
        describe(&again)
    );
    let ok = world.walvault(&["receive-wal", SERVER, "--create-slot", "--if-not-exists"]);
    assert!(ok.status.success(), "{}", describe(&ok));

    // The slot is in use by another receiver.
    fs::create_dir_all(world.path("other")).expect("dir");
    world.own_all();
    let mut other = world
        .run_as
        .command(primary.bin.join("pg_receivewal"))
        .arg("-D")
        .arg(world.path("other"))
        .args(["--slot", SLOT, "--no-password", "-d"])
        .arg(primary.conninfo())
        .spawn()
        .expect("pg_receivewal");
    primary
        .wait_for("the slot to be active", Duration::from_secs(30), |c| {
            Ok(c.query_text(&format!(
                "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
            ))? == "true")
        })
        .expect("active");
    let busy = world.walvault(&["receive-wal", SERVER, "--no-restart"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        describe(&busy).contains("replication slot 'walvault' is already in use"),
        "{}",
        describe(&busy)
    );
    // `other` is runuser; stop the pg_receivewal it started, then wait for the slot to free.
    let _ = Command::new("pkill")
        .args(["-INT", "-P", &other.id().to_string()])
        .status();
    let _ = other.wait();
    primary
        .wait_for("the slot to be free", Duration::from_secs(30), |c| {
            Ok(c.query_text(&format!(
                "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
            ))? == "false")
        })
        .expect("inactive");

    // pg_receivewal is not installed (an empty PATH).
    let mut cmd = world.run_as.command("env");
    cmd.arg("PATH=/nonexistent")
        .arg(&world.bin)
        .arg("-c")
        .arg(&world.config)
        .args(["receive-wal", SERVER]);
    let missing = cmd.output().expect("run");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        describe(&missing).contains("pg_receivewal not found"),
        "{}",
        describe(&missing)
    );

    // --reset refuses when the streaming directory is ahead of the server.
    let ahead = world.streaming().join("0000000100000000000000F0.partial");
    fs::write(&ahead, vec![0u8; 16 << 20]).expect("fake");
    world.own_all();
    let reset = world.walvault(&["receive-wal", SERVER, "--reset"]);
    assert_eq!(reset.status.code(), Some(1), "{}", describe(&reset));
    assert!(
        describe(&reset).contains("ahead of the server"),
        "{}",
        describe(&reset)
    );
    assert!(ahead.exists(), "nothing removed");

    // A partial of a wrong size is truncated (with a message) before streaming starts.
    fs::remove_file(&ahead).expect("rm");
    let current = primary
        .query_text("SELECT pg_walfile_name(pg_current_wal_lsn())")
        .expect("current");
    let broken = world.streaming().join(format!("{current}.partial"));
    fs::write(&broken, vec![0u8; 12345]).expect("broken");
    world.own_all();
    let receiver = world.start_receive_wal();
    let started = Instant::now();
    while fs::metadata(&broken).map(|m| m.len()).unwrap_or(0) != 16 << 20
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, log) = receiver.stop();
    assert!(log.contains("truncating it to 0"), "{log}");
    assert_eq!(
        fs::metadata(&broken).expect("partial").len(),
        16 << 20,
        "pg_receivewal resumed into the repaired partial: {log}"
    );
    // --drop-slot removes it.
    let dropped = world.walvault(&["receive-wal", SERVER, "--drop-slot"]);
    assert!(dropped.status.success(), "{}", describe(&dropped));
    assert_eq!(
        primary
            .query_text(&format!(
                "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
            ))
            .expect("slots"),
        "0"
    );
}

#[test]
fn the_streaming_password_reaches_pg_receivewal_out_of_band() {
    const PASSWORD: &str = "hunter2 streaming";
    let world = World::new("compression = \"zstd\"");
    let mut primary = world.cluster("primary");
    primary
        .configure("wal_level = replica\nmax_wal_size = 64MB")
        .expect("configure");
    // Replication connections need the password; SQL ones stay on trust.
    let hba = primary.data.join("pg_hba.conf");
    let rules: String = fs::read_to_string(&hba)
        .expect("pg_hba.conf")
        .lines()
        .map(|l| {
            if l.contains("replication") && !l.trim_start().starts_with('#') {
                l.replace("trust", "scram-sha-256")
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    fs::write(&hba, rules).expect("pg_hba.conf");
    primary.start().expect("start");
    primary
        .execute(&format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'"))
        .expect("password");
    world.add_config(&format!(
        "streaming_archiver = true\narchiver = false\nslot_name = \"{SLOT}\"\n\
         conninfo = \"{} password = '{PASSWORD}'\"",
        primary.conninfo()
    ));
    // The slot is created over a replication connection, so with the password too.
    create_slot(&world);
    let receiver = world.start_receive_wal();
    let pid = receiver.pg_receivewal_pid().expect("pg_receivewal runs");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("--dbname"), "{cmdline}");
    assert!(
        !cmdline.contains("hunter2"),
        "the password is on the command line: {cmdline}"
    );
    let environ = fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == format!("PGPASSWORD={PASSWORD}").as_bytes()),
        "the password is in pg_receivewal's environment"
    );
    let last = switch_and_wait_streamed(&world, &primary);
    archive_wal(&world);
    assert_contiguous(&world, &last);
    let (code, log) = receiver.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
}
