//! `walvault-wasi`: the archiver compiled to wasm32-wasip1 under wasmtime (issue 6's tests).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use walvault_core::compression::{Codec, DecodeLimits, decode_all};
use walvault_core::wal::{SegmentSize, WalFileName};
use walvault_tests::{
    SERVER, World, describe, file_names, point_in_time_recovery_restoring_with, profile_dir,
    queue_file, small_segment,
};

const CODECS: [&str; 7] = ["none", "gzip", "bzip2", "xz", "zstd", "lz4", "snappy"];

/// The wall clock the guest is given: 2027-01-15T08:00:00Z.
const CLOCK: u64 = 1_800_000_000;
const CLOCK_STAMP: &str = "20270115T080000Z";

/// A file with a fixed modification time (both hosts then see the same queue).
fn put(path: &Path, bytes: &[u8], mtime: u64) {
    fs::write(path, bytes).expect("write");
    let file = fs::File::options().write(true).open(path).expect("open");
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
        .expect("mtime");
}

/// Fills a server home with the same batch: the first two segments and a newer `.partial` in
/// streaming/, the rest in incoming/ with a different WAL under the first segment's name (a
/// duplicate), a truncated segment and a file that is not WAL.
fn fill_queues(home: &Path, stage: &Path, segments: &[String]) {
    let streaming = home.join(SERVER).join("streaming");
    let incoming = home.join(SERVER).join("incoming");
    fs::create_dir_all(&streaming).expect("streaming");
    fs::create_dir_all(&incoming).expect("incoming");
    let read = |name: &str| fs::read(stage.join(name)).expect("staged WAL");
    for (i, name) in segments.iter().enumerate() {
        let dir = if i < 2 { &streaming } else { &incoming };
        put(&dir.join(name), &read(name), 1_700_000_000 + i as u64);
    }
    let last: WalFileName = segments[segments.len() - 1].parse().expect("name");
    let size = SegmentSize::DEFAULT;
    let next = last.segment().and_then(|s| s.next(size)).expect("next");
    let mut partial = read(&segments[segments.len() - 1]);
    partial.truncate(1 << 20);
    put(
        &streaming.join(format!("{}.partial", WalFileName::Segment(next))),
        &partial,
        1_700_000_100,
    );
    let mut different = read(&segments[0]);
    let end = different.len() - 1;
    different[end] ^= 0xff;
    put(&incoming.join(&segments[0]), &different, 1_700_000_101);
    let after = next.next(size).and_then(|s| s.next(size)).expect("after");
    put(
        &incoming.join(WalFileName::Segment(after).to_string()),
        &partial[..300_000],
        1_700_000_102,
    );
    put(&incoming.join("garbage.txt"), b"not WAL", 1_700_000_103);
}

fn config(home: &Path, codec: &str, extra: &str) -> String {
    format!(
        "[walvault]\nhome = \"{}\"\n\n[{SERVER}]\ncompression = \"{codec}\"\nstreaming_archiver = true\narchiver = true\nstreaming_conninfo = \"host=/nonexistent\"\n{extra}\n",
        home.display()
    )
}

/// Replaces `YYYYMMDDTHHMMSSZ` stamps (error-file names) with `STAMP`.
fn unstamp(text: &str) -> String {
    let bytes = text.as_bytes();
    let is_stamp = |i: usize| {
        bytes.len() >= i + 16
            && bytes[i + 8] == b'T'
            && bytes[i + 15] == b'Z'
            && bytes[i..i + 8].iter().all(u8::is_ascii_digit)
            && bytes[i + 9..i + 15].iter().all(u8::is_ascii_digit)
    };
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_stamp(i) {
            out.push_str("STAMP");
            i += 16;
        } else {
            let ch = text[i..].chars().next().expect("char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.map(|e| e.expect("entry")) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .expect("inside")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

fn run(world: &World, program: &Path, args: &[&str]) -> Output {
    world
        .run_as
        .command(program)
        .args(args)
        .output()
        .expect("run")
}

fn text(out: &[u8], home: &Path) -> String {
    unstamp(&String::from_utf8_lossy(out).replace(&home.display().to_string(), "HOME"))
}

#[test]
fn the_same_batch_gives_identical_archives_in_both_hosts_for_every_codec() {
    let world = World::new("");
    let (stage, segments) = world.real_wal();
    let wasi = world.install_wasi();
    let cache = world.path("wasi-cache");
    for codec in CODECS {
        let native_home = world.path(&format!("native-{codec}"));
        let wasi_home = world.path(&format!("wasi-{codec}"));
        for home in [&native_home, &wasi_home] {
            fill_queues(home, &stage, &segments);
            fs::write(home.join("walvault.toml"), config(home, codec, "")).expect("config");
        }
        world.own_all();
        let cfg = |home: &Path| home.join("walvault.toml").display().to_string();
        let native = run(
            &world,
            &world.bin,
            &[
                "-c",
                &cfg(&native_home),
                "archive-wal",
                SERVER,
                "--jobs",
                "1",
            ],
        );
        let clock = CLOCK.to_string();
        let started = Instant::now();
        let sandboxed = run(
            &world,
            &wasi,
            &[
                "-c",
                &cfg(&wasi_home),
                "--cache-dir",
                &cache.display().to_string(),
                "--clock",
                &clock,
                "archive-wal",
                SERVER,
            ],
        );
        let took = started.elapsed();
        let what = format!(
            "{codec}\nnative: {}\nwasi ({took:?}): {}",
            describe(&native),
            describe(&sandboxed)
        );
        assert_eq!(native.status.code(), sandboxed.status.code(), "{what}");
        assert_eq!(
            native.status.code(),
            Some(0),
            "rejects are moved, not failures: {what}"
        );
        assert_eq!(
            text(&native.stdout, &native_home),
            text(&sandboxed.stdout, &wasi_home),
            "{what}"
        );
        assert_eq!(
            text(&native.stderr, &native_home),
            text(&sandboxed.stderr, &wasi_home),
            "{what}"
        );
        assert!(
            text(&sandboxed.stderr, &wasi_home).contains("is already present in server pg"),
            "{what}"
        );

        let wals = |home: &Path| home.join(SERVER).join("wals");
        let catalogue = |home: &Path| {
            fs::read(wals(home).join(format!("{SERVER}-xlog.db"))).expect("catalogue")
        };
        assert_eq!(
            catalogue(&native_home),
            catalogue(&wasi_home),
            "{codec}: byte-identical catalogues"
        );
        let stored = tree(&wals(&native_home));
        assert_eq!(stored, tree(&wals(&wasi_home)), "{codec}: same layout");
        assert_eq!(
            stored.len(),
            segments.len() + 1,
            "{codec}: every segment and the catalogue: {stored:?}"
        );
        for rel in stored.iter().filter(|r| !r.ends_with("-xlog.db")) {
            let a = fs::read(wals(&native_home).join(rel)).expect("native copy");
            let b = fs::read(wals(&wasi_home).join(rel)).expect("wasi copy");
            let name = rel.rsplit('/').next().expect("name");
            let plain =
                decode_all(Codec::identify(&a), &a, DecodeLimits::default()).expect("decodes");
            assert_eq!(
                plain,
                fs::read(stage.join(name.split('.').next().expect("stem"))).expect("original"),
                "{codec}: {rel} decompresses to the original"
            );
            assert_eq!(a, b, "{codec}: {rel} is stored byte for byte the same");
            if codec != "none" {
                assert_eq!(
                    Codec::identify(&a).map(|c| c.name()),
                    Some(codec),
                    "{codec}: {rel}"
                );
            }
        }

        let errors = |home: &Path| file_names(&home.join(SERVER).join("errors"));
        let (native_errors, wasi_errors) = (errors(&native_home), errors(&wasi_home));
        assert_eq!(native_errors.len(), 3, "{codec}: {native_errors:?}");
        assert_eq!(
            native_errors.iter().map(|e| unstamp(e)).collect::<Vec<_>>(),
            wasi_errors.iter().map(|e| unstamp(e)).collect::<Vec<_>>(),
            "{codec}: same error-file names"
        );
        assert!(
            wasi_errors.iter().all(|e| e.contains(CLOCK_STAMP)),
            "the guest's clock is the runner's fixed one: {wasi_errors:?}"
        );
        let reasons = |home: &Path| {
            unstamp(
                &fs::read_to_string(home.join(SERVER).join("meta/errors.jsonl")).expect("reasons"),
            )
        };
        assert_eq!(reasons(&native_home), reasons(&wasi_home), "{codec}");
        for queue in ["incoming", "streaming"] {
            let left = |home: &Path| file_names(&home.join(SERVER).join(queue));
            assert_eq!(left(&native_home), left(&wasi_home), "{codec}: {queue}");
        }
        assert_eq!(
            file_names(&wasi_home.join(SERVER).join("streaming")).len(),
            1,
            "the newest .partial stays"
        );
    }
}

#[test]
fn rebuild_xlogdb_gives_the_native_catalogue() {
    let world = World::new("compression = \"lz4\"");
    let (stage, segments) = world.real_wal();
    fs::create_dir_all(world.incoming()).expect("incoming");
    for name in &segments {
        fs::copy(stage.join(name), world.incoming().join(name)).expect("copy");
    }
    world.own_all();
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let catalogue = world.wals().join(format!("{SERVER}-xlog.db"));
    let native = world.walvault(&["rebuild-xlogdb", SERVER]);
    assert!(native.status.success(), "{}", describe(&native));
    let by_native = fs::read(&catalogue).expect("catalogue");
    fs::remove_file(&catalogue).expect("remove");
    let sandboxed = world.walvault_wasi(&["rebuild-xlogdb", SERVER]);
    assert!(sandboxed.status.success(), "{}", describe(&sandboxed));
    assert_eq!(native.stdout, sandboxed.stdout);
    assert_eq!(
        fs::read(&catalogue).expect("catalogue"),
        by_native,
        "the same catalogue"
    );
}

/// The guest built with its `sandbox-probe` feature: it tries to get out.
fn probe_module(world: &World) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace");
    // Its own target directory: cargo does not copy a fresh artifact back over the final name,
    // so a probe built next to the real guest would later be embedded in its place.
    let target = profile_dir()
        .parent()
        .expect("target directory")
        .join("wasi-probe");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(workspace)
        .args(["build", "--locked", "--profile", "wasi-guest"])
        .args(["--target", "wasm32-wasip1", "-p", "walvault-wasi-guest"])
        .args(["--features", "sandbox-probe", "--target-dir"])
        .arg(&target);
    // The suite lints the probe as it builds it, as the build scripts do the nested crates
    // (build-support/nested_cargo.rs): one compilation instead of a separate clippy run.
    if std::env::var_os("WALVAULT_LINT_NESTED").is_some_and(|v| v == "1") {
        cargo.env("RUSTC_WORKSPACE_WRAPPER", "clippy-driver").env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        );
    }
    let status = cargo.status().expect("cargo");
    assert!(status.success(), "building the probe guest");
    let module = world.path("probe.wasm");
    fs::copy(
        target.join("wasm32-wasip1/wasi-guest/walvault-guest.wasm"),
        &module,
    )
    .expect("copy the probe");
    module
}

#[test]
fn the_sandbox_refuses_every_way_out_and_stops_runaway_guests() {
    let world = World::new("compression = \"gzip\"");
    world.add_config("\n[other]\ncompression = \"gzip\"");
    let module = probe_module(&world);
    let outside = world.path("outside");
    fs::create_dir_all(&outside).expect("outside");
    fs::write(outside.join("secret"), b"secret").expect("secret");
    let other_incoming = world.home.join("other").join("incoming");
    fs::create_dir_all(&other_incoming).expect("other server");
    fs::create_dir_all(world.incoming()).expect("incoming");
    std::os::unix::fs::symlink(outside.join("secret"), world.incoming().join("escape-link"))
        .expect("symlink");
    std::os::unix::fs::symlink(&outside, world.incoming().join("escape-dir")).expect("symlink");
    fs::write(other_incoming.join("keep-me"), b"other").expect("other server's file");
    world.own_all();
    let module_arg = module.display().to_string();

    let out = world.walvault_wasi(&["--guest-module", &module_arg, "archive-wal", SERVER]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!stdout.contains("ESCAPED"), "{stdout}");
    for attempt in [
        "read /etc/passwd",
        "list /",
        "read through ..",
        "create through ..",
        "read a symlink to outside",
        "write a symlink to outside",
        "create a symlink to outside",
        "create in the server's parent directory",
        "create in another server's",
        "list another server's",
        "remove /etc/passwd by the runner",
        "remove through .. by the runner",
        "remove through a symlinked directory by the runner",
        "remove in another server's",
        "take a lock the runner does not hold",
        "record progress in a lock the runner does not hold",
    ] {
        assert!(
            stdout.contains(&format!("refused: {attempt}")),
            "{attempt} refused:\n{stdout}"
        );
    }
    assert_eq!(
        fs::read(outside.join("secret")).expect("secret"),
        b"secret",
        "untouched"
    );
    assert!(!world.home.join("probe-was-here").exists());
    assert!(!world.home.join(SERVER).join("probe-was-here").exists());
    assert_eq!(file_names(&other_incoming), ["keep-me"]);
    fs::remove_file(world.incoming().join("escape-dir")).expect("unlink escape-dir");

    // A runaway loop is stopped by the time limit.
    let started = Instant::now();
    let out = world.walvault_wasi(&[
        "--guest-module",
        &module_arg,
        "--timeout",
        "2",
        "rebuild-xlogdb",
        SERVER,
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped in time"
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the guest was stopped after running for 2 s (--timeout)"),
        "{}",
        describe(&out)
    );

    // So is one that allocates without end; in get-wal that is exit 255 (stop recovery).
    let dest = world.path("dest");
    fs::create_dir_all(&dest).expect("dest");
    world.own_all();
    let out = world.walvault_wasi(&[
        "--guest-module",
        &module_arg,
        "--memory-limit",
        "64",
        "get-wal",
        SERVER,
        "000000010000000000000001",
        &dest.join("RECOVERYXLOG").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("over its limit of 64 MiB (--memory-limit)"),
        "{}",
        describe(&out)
    );
    assert!(file_names(&dest).is_empty());

    // The real guest, given a queued WAL that is a symlink to outside: as natively, the link
    // is never followed but moved to errors/ as the link it is; the target is untouched.
    let link = world.incoming().join("000000010000000000000001");
    std::os::unix::fs::symlink(outside.join("secret"), &link).expect("symlink");
    let out = world.walvault_wasi(&["archive-wal", SERVER]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        fs::symlink_metadata(&link).is_err(),
        "moved out of the queue"
    );
    let moved: Vec<_> = file_names(&world.errors())
        .into_iter()
        .filter(|n| n.starts_with("000000010000000000000001."))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        fs::symlink_metadata(world.errors().join(&moved[0]))
            .expect("moved")
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(outside.join("secret")).expect("secret"), b"secret");
}

/// A guest's archive-wal records its progress in the lock the runner holds, as the native
/// one does: otherwise a run over 15 minutes (the guest may run an hour) would be taken for a
/// stalled one by `check`, `serve` and the next archive-wal.
#[test]
fn a_wasi_archive_wal_records_its_progress_in_the_lock() {
    let world = World::new("compression = \"xz\"\nwal_segment_size = \"1MB\"");
    fs::create_dir_all(world.incoming()).expect("incoming");
    for i in 1..=24u8 {
        let name = format!("0000000100000000000000{i:02X}");
        queue_file(&world.incoming().join(&name), &small_segment(&name, i));
    }
    world.own_all();
    let lock = world.home.join(format!(".{SERVER}-archive-wal.lock"));
    let mtime = || fs::metadata(&lock).and_then(|m| m.modified()).ok();
    let before = SystemTime::now();
    let mut child = world
        .run_as
        .command(world.install_wasi())
        .arg("-c")
        .arg(&world.config)
        .arg("--cache-dir")
        .arg(world.path("wasi-cache"))
        .args(["archive-wal", SERVER])
        .spawn()
        .expect("start walvault-wasi");
    // The runner writes its pid when it takes the lock; every later change of the lock's
    // time is the guest's progress.
    let mut taken = None;
    let mut progress = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        let now = mtime().filter(|t| *t >= before);
        let held = fs::read_to_string(&lock).is_ok_and(|s| !s.trim().is_empty());
        match (taken, now) {
            (None, Some(t)) if held => taken = Some(t),
            (Some(last), Some(t)) if t > last => {
                progress += 1;
                taken = Some(t);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().expect("walvault-wasi");
    assert!(status.success(), "archive-wal: {status}");
    assert_eq!(world.catalogue().len(), 24, "all archived");
    assert!(taken.is_some(), "the lock was seen taken");
    assert!(
        progress >= 2,
        "the lock's time moved {progress} time(s) while 24 files were archived"
    );
}

#[test]
fn postgresql_recovers_through_walvault_wasi_get_wal() {
    let world = World::new("compression = \"xz\"\ncompression_level = \"low\"");
    let restore = world.wasi_command_line(&format!("get-wal {SERVER} %f %p"));
    point_in_time_recovery_restoring_with(&world, "xz", &restore);
}

#[test]
fn bad_input_gets_the_same_errors_as_the_native_cli() {
    let world = World::new("compression = \"zstd\"\nwal_segment_size = \"1MB\"");
    world.add_config(
        "\n[cloud]\nwals_directory = \"s3://bucket/prefix\"\nendpoint_url = \"http://127.0.0.1:9\"\n\n[hooked]\npre_archive_script = \"true\"",
    );
    let dest_dir = world.path("pg_wal");
    fs::create_dir_all(&dest_dir).expect("dest");
    let damaged = world
        .wals()
        .join("0000000100000000/000000010000000000000043");
    fs::create_dir_all(damaged.parent().expect("dir")).expect("hash dir");
    fs::write(&damaged, b"\x28\xb5\x2f\xfd not really zstd").expect("damaged copy");
    world.own_all();
    let dest = dest_dir.join("RECOVERYXLOG").display().to_string();
    let missing_dir = world.path("nowhere/RECOVERYXLOG").display().to_string();
    let bad_config = world.path("bad.toml");
    fs::write(&bad_config, "[walvault]\nhome = \"relative\"\n").expect("bad config");
    let bad_config = bad_config.display().to_string();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["get-wal", SERVER, "not-a-wal", &dest], 2),
        (
            vec!["get-wal", SERVER, "000000010000000000000042", &dest],
            1,
        ),
        (
            vec!["get-wal", "nosuch", "000000010000000000000042", &dest],
            2,
        ),
        (
            vec!["get-wal", SERVER, "000000010000000000000043", &dest],
            255,
        ),
        (
            vec!["get-wal", SERVER, "000000010000000000000043", &missing_dir],
            255,
        ),
        (vec!["rebuild-xlogdb", "nosuch"], 2),
        (
            vec!["-c", "/nonexistent/walvault.toml", "archive-wal", SERVER],
            2,
        ),
        (vec!["-c", &bad_config, "archive-wal", SERVER], 2),
    ];
    let cache = world.path("wasi-cache").display().to_string();
    for (args, code) in cases {
        let native = run(&world, &world.bin, &with_config(&world, &args));
        let mut wasi_args = vec!["--cache-dir", cache.as_str()];
        wasi_args.extend(with_config(&world, &args));
        let sandboxed = run(&world, &world.install_wasi(), &wasi_args);
        let what = format!(
            "{args:?}\nnative: {}\nwasi: {}",
            describe(&native),
            describe(&sandboxed)
        );
        assert_eq!(native.status.code(), Some(code), "{what}");
        assert_eq!(sandboxed.status.code(), Some(code), "{what}");
        assert_eq!(native.stderr, sandboxed.stderr, "{what}");
        assert!(!native.stderr.is_empty() || code == 1, "{what}");
    }
    assert!(file_names(&dest_dir).is_empty(), "nothing written to %p");

    // What the sandbox cannot do is refused up front, as configuration errors.
    for (server, expected) in [
        ("cloud", "object storage needs the network"),
        (
            "hooked",
            "hook scripts are programs the WASI sandbox cannot start",
        ),
    ] {
        let out = world.walvault_wasi(&["archive-wal", server]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{}",
            describe(&out)
        );
    }
}

/// `args` with `-c <world's config>` in front unless they bring their own.
fn with_config<'a>(world: &'a World, args: &[&'a str]) -> Vec<&'a str> {
    if args.first() == Some(&"-c") {
        return args.to_vec();
    }
    let mut out = vec!["-c", world.config.to_str().expect("utf-8")];
    out.extend(args);
    out
}
