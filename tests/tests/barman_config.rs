//! `walvault --barman-config`: a Barman host's configuration files, unchanged, drive walvault.
//! The files are checked with Barman 3.20.1 itself (the test venv's) first: a main file with
//! `[barman]` defaults (hooks among them) and `configuration_files_directory`, a local server,
//! a streaming server and a model.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use walvault_tests::s3::{python_venv, tool};
use walvault_tests::{SERVER, World, describe, queue_file, small_segment};

fn seg(n: u32) -> String {
    format!("00000001000000000000{n:04X}")
}

/// Writes Barman's files into the world: `barman.conf` and `barman.d/`. Returns the main
/// file.
fn barman_files(world: &World) -> PathBuf {
    let dir = world.path("barman.d");
    fs::create_dir_all(&dir).expect("barman.d");
    let (hook, _) = world.recording_hook("$BARMAN_PHASE $BARMAN_SEGMENT $BARMAN_CONFIGURATION");
    let main = world.path("barman.conf");
    fs::write(
        &main,
        format!(
            "; Barman's main file, as a Barman host has it\n\
             [barman]\n\
             barman_home = {home}\n\
             barman_user = root\n\
             log_file = {log}\n\
             log_level = INFO\n\
             configuration_files_directory = {dir}\n\
             compression = gzip\n\
             pre_archive_script = {hook}\n\
             post_archive_script = {hook}\n\
             retention_policy = RECOVERY WINDOW OF 4 WEEKS\n",
            home = world.home.display(),
            log = world.path("barman.log").display(),
            dir = dir.display(),
            hook = hook.display(),
        ),
    )
    .expect("barman.conf");
    fs::write(
        dir.join("pg.conf"),
        format!(
            "[{SERVER}]\n\
             description = \"A local server: WAL from archive_command\"\n\
             conninfo = host=/nonexistent dbname=postgres\n\
             backup_method = postgres\n\
             archiver = on\n\
             compression_level = low\n\
             ; walvault's own key: Barman ignores it\n\
             wal_segment_size = 1MB\n"
        ),
    )
    .expect("pg.conf");
    fs::write(
        dir.join("stream.conf"),
        format!(
            "[stream]\n\
         description = A streaming server\n\
         conninfo = host=/nonexistent dbname=postgres\n\
         streaming_conninfo = host=/nonexistent user=streaming_barman\n\
         backup_method = postgres\n\
         streaming_archiver = on\n\
         slot_name = barman\n\
         create_slot = auto\n\
         path_prefix = /usr/lib/postgresql/15/bin\n\
         compression = None\n\
         base = {}/stream\n\
         streaming_wals_directory = %(base)s/streamed\n",
            world.home.display()
        ),
    )
    .expect("stream.conf");
    fs::write(
        dir.join("template.conf"),
        "[template]\ncluster = pg\nmodel = true\ncompression = xz\n",
    )
    .expect("template.conf");
    // Not a .conf file: Barman does not read it, nor does walvault.
    fs::write(dir.join("notes.txt"), "[nope]\nthis is = not read\n").expect("notes");
    world.own_all();
    main
}

fn barman(conf: &Path, args: &[&str]) -> Option<Output> {
    let bin = tool(
        &python_venv().join("bin/barman"),
        "Barman 3.20.1 (.ci/setup's venv)",
    )?;
    Some(
        Command::new(bin)
            .arg("-c")
            .arg(conf)
            .args(args)
            .output()
            .expect("run barman"),
    )
}

fn walvault(world: &World, flag: &str, conf: &Path, args: &[&str]) -> Output {
    let mut cmd = world.run_as.command(&world.bin);
    cmd.arg(flag).arg(conf).args(args);
    cmd.output().expect("run walvault")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_barman_hosts_files_drive_walvault_unchanged() {
    let world = World::new("");
    let conf = barman_files(&world);
    // Barman 3.20.1 takes these files: two servers (the model is no server).
    let Some(out) = barman(&conf, &["list-servers"]) else {
        return;
    };
    let (listed, _) = text(&out);
    assert!(
        out.status.success(),
        "barman list-servers: {}",
        describe(&out)
    );
    assert!(
        listed.contains(SERVER) && listed.contains("stream"),
        "{listed}"
    );
    assert!(
        !listed.contains("template") && !listed.contains("nope"),
        "{listed}"
    );

    // walvault reads them: both servers as Barman resolves them, and says what it leaves out.
    let out = walvault(&world, "--barman-config", &conf, &["config", "check"]);
    let (check, warnings) = text(&out);
    assert!(out.status.success(), "{}", describe(&out));
    let expected: [String; 6] = [
        format!("[{SERVER}]"),
        "compression: gzip (low)".into(),
        "[stream]".into(),
        "compression: none".into(),
        "streaming (slot barman, created by walvault)".into(),
        format!(
            "streaming: {}",
            world.home.join("stream/streamed").display()
        ),
    ];
    for e in &expected {
        assert!(check.contains(e), "{e:?} not in:\n{check}");
    }
    assert!(
        !check.contains("[template]") && !check.contains("[nope]"),
        "{check}"
    );
    let left_out: [String; 4] = [
        "[barman] barman_user: left out".into(),
        "[barman] retention_policy: left out: a backup, recovery or retention setting".into(),
        format!("[{SERVER}] backup_method: left out"),
        "[template] compression: left out: a Barman model".into(),
    ];
    for l in &left_out {
        assert!(warnings.contains(l), "{l:?} not in:\n{warnings}");
    }

    // `config convert` writes the same configuration in walvault's format.
    let out = walvault(&world, "--barman-config", &conf, &["config", "convert"]);
    let (converted, _) = text(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        converted.contains("# Left out (walvault does not use them):"),
        "{converted}"
    );
    assert!(
        converted.contains(&format!(
            "log_file = \"{}\"",
            world.path("barman.log").display()
        )),
        "Barman's log_file is walvault's: {converted}"
    );
    let toml = world.path("converted.toml");
    fs::write(&toml, &converted).expect("converted.toml");
    world.own_all();
    let out = walvault(&world, "-c", &toml, &["config", "check"]);
    let (check_toml, _) = text(&out);
    assert!(out.status.success(), "{}", describe(&out));
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        body(&check_toml),
        body(&check),
        "the same settings either way"
    );

    // archive-wal on Barman's files: Barman's hooks run (with Barman's configuration file
    // in BARMAN_CONFIGURATION), and Barman reads what walvault archived.
    let data = small_segment(&seg(1), 3);
    let incoming = world.home.join(SERVER).join("incoming");
    fs::create_dir_all(&incoming).expect("incoming");
    queue_file(&incoming.join(seg(1)), &data);
    world.own_all();
    let out = walvault(&world, "--barman-config", &conf, &["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let hooks = fs::read_to_string(world.path("hooks.log")).expect("hooks ran");
    for phase in ["pre", "post"] {
        let line = format!("{phase} {} {}", seg(1), conf.display());
        assert!(hooks.contains(&line), "{line:?} not in:\n{hooks}");
    }
    let Some(out) = barman(&conf, &["get-wal", SERVER, &seg(1)]) else {
        return;
    };
    assert!(out.status.success(), "barman get-wal: {}", describe(&out));
    assert!(
        out.stdout == data,
        "Barman served walvault's WAL byte for byte"
    );

    // get-wal --prefetch starts its worker with Barman's files too: the next segment lands
    // in the spool.
    let next = small_segment(&seg(2), 4);
    queue_file(&incoming.join(seg(2)), &next);
    world.own_all();
    let out = walvault(&world, "--barman-config", &conf, &["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let dest = world.path("RECOVERYXLOG");
    world.own_all();
    let out = walvault(
        &world,
        "--barman-config",
        &conf,
        &[
            "get-wal",
            SERVER,
            &seg(1),
            dest.to_str().expect("utf-8"),
            "--prefetch",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(fs::read(&dest).expect("restored") == data);
    let spooled = world.home.join(SERVER).join("spool");
    let started = std::time::Instant::now();
    let found = || {
        walkdir(&spooled)
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == seg(2).as_str()))
    };
    while !found() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the prefetch worker (started with --barman-config) spooled nothing: {:?}",
            walkdir(&spooled)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn barman_files_walvault_cannot_read_are_clear_errors() {
    let world = World::new("");
    let conf = world.path("bad.conf");
    for (content, expect) in [
        ("[barman]\nbarman_home\n", "expected 'key = value'"),
        ("[pg]\nconninfo = x\n", "barman_home"),
        (
            "[barman]\nbarman_home = /tmp/b\n[pg]\narchiver = sometimes\n",
            "[pg] archiver: \"sometimes\" is not a boolean",
        ),
    ] {
        fs::write(&conf, content).expect("conf");
        world.own_all();
        let out = walvault(&world, "--barman-config", &conf, &["config", "check"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{content:?}: {}",
            describe(&out)
        );
        let (_, err) = text(&out);
        assert!(err.contains(expect), "{content:?}: {expect:?} not in {err}");
    }
    let out = walvault(
        &world,
        "--barman-config",
        &world.path("missing.conf"),
        &["config", "check"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}
