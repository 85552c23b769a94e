//! The `walvault` binary on a local archive, without PostgreSQL: exit codes, hooks, locks,
//! catalogue maintenance.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use walvault_core::compression::{Codec, DecodeLimits, decode_all};
use walvault_core::wal::{SegmentSize, WalFileName, synthetic_page_header};

const MIB: usize = 1 << 20;

/// A temp workspace with a config for server `pg` (1 MiB segments).
struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new(server_conf: &str) -> Dir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = Dir { tmp };
        fs::write(
            d.config(),
            format!(
                "[walvault]\nhome = \"{}\"\n[pg]\nwal_segment_size = \"1MB\"\n{server_conf}\n",
                d.path("home").display()
            ),
        )
        .expect("config");
        fs::create_dir_all(d.incoming()).expect("incoming");
        d
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    fn config(&self) -> PathBuf {
        self.path("walvault.toml")
    }
    fn incoming(&self) -> PathBuf {
        self.path("home/pg/incoming")
    }
    fn wals(&self) -> PathBuf {
        self.path("home/pg/wals")
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_walvault"))
            .arg("-c")
            .arg(self.config())
            .args(args)
            .output()
            .expect("run walvault")
    }
    fn queue(&self, n: u32, seed: u8) -> String {
        let name = seg(n);
        fs::write(self.incoming().join(&name), segment(&name, seed)).expect("queue");
        name
    }
    fn catalogue(&self) -> String {
        fs::read_to_string(self.wals().join("pg-xlog.db")).unwrap_or_default()
    }
}

fn seg(n: u32) -> String {
    format!("00000001000000000000{n:04X}")
}

fn segment(name: &str, seed: u8) -> Vec<u8> {
    let n: WalFileName = name.parse().expect("name");
    let mut data = vec![0u8; MIB];
    data[..40].copy_from_slice(&synthetic_page_header(
        &n,
        SegmentSize::new(MIB as u64).expect("size"),
        7,
    ));
    for (i, b) in data.iter_mut().enumerate().skip(40).take(100_000) {
        *b = (i % 251) as u8 ^ seed;
    }
    data
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stored(dir: &Dir, name: &str) -> Vec<u8> {
    let n: WalFileName = name.parse().expect("name");
    let bytes = fs::read(dir.wals().join(n.relative_path())).expect("stored file");
    decode_all(Codec::identify(&bytes), &bytes, DecodeLimits::default()).expect("decodes")
}

#[test]
fn get_wal_exit_codes() {
    let d = Dir::new("compression = \"zstd\"");
    let name = d.queue(1, 1);
    assert!(d.run(&["archive-wal", "pg"]).status.success());
    let dest = d.path("restored");
    let ok = d.run(&["get-wal", "pg", &name, dest.to_str().expect("utf8")]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert_eq!(fs::read(&dest).expect("restored"), segment(&name, 1));
    let missing = d.run(&[
        "get-wal",
        "pg",
        &seg(2),
        d.path("x").to_str().expect("utf8"),
    ]);
    assert_eq!(
        missing.status.code(),
        Some(1),
        "not found is 1: {}",
        text(&missing)
    );
    assert!(missing.stderr.is_empty(), "quiet when not found");
    assert!(!d.path("x").exists(), "nothing written");
    let invalid = d.run(&[
        "get-wal",
        "pg",
        "notawal",
        d.path("x").to_str().expect("utf8"),
    ]);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&invalid.stderr).contains("'notawal' is not a valid WAL file name")
    );
    // A damaged archived copy stops recovery (exit > 125), never looks like "not found".
    let key = d.wals().join(
        WalFileName::Segment(
            name.parse::<WalFileName>()
                .expect("n")
                .segment()
                .expect("s"),
        )
        .relative_path(),
    );
    let bytes = fs::read(&key).expect("stored");
    fs::write(&key, &bytes[..bytes.len() / 2]).expect("truncate");
    let damaged = d.run(&["get-wal", "pg", &name, d.path("y").to_str().expect("utf8")]);
    assert_eq!(damaged.status.code(), Some(255), "{}", text(&damaged));
    assert!(
        String::from_utf8_lossy(&damaged.stderr).contains("damaged"),
        "{}",
        text(&damaged)
    );
    assert!(
        !d.path("y").exists(),
        "no partial file handed to PostgreSQL"
    );
    // A storage fault that persists (here the hash directory is not a directory: a broken
    // mount, a clobbered archive) also stops recovery with the reason, never "not found".
    let hash_dir = key.parent().expect("hash dir");
    fs::remove_dir_all(hash_dir).expect("rm");
    fs::write(hash_dir, b"not a directory").expect("clobber");
    let broken = d.run(&["get-wal", "pg", &name, d.path("z").to_str().expect("utf8")]);
    assert_eq!(broken.status.code(), Some(255), "{}", text(&broken));
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains("cannot restore") && stderr.contains("Not a directory"),
        "{stderr}"
    );
    assert!(!d.path("z").exists());
}

#[test]
fn get_wal_partial_is_served_decompressed() {
    let d = Dir::new("compression = \"gzip\"");
    let partial = format!("{}.partial", seg(5));
    fs::write(d.incoming().join(&partial), &segment(&seg(5), 5)[..200_000]).expect("partial");
    assert!(d.run(&["archive-wal", "pg"]).status.success());
    let dest = d.path("p");
    let plain = d.run(&["get-wal", "pg", &seg(5), dest.to_str().expect("utf8")]);
    assert_eq!(
        plain.status.code(),
        Some(1),
        "a partial is not served without --partial"
    );
    let out = d.run(&[
        "get-wal",
        "pg",
        &seg(5),
        dest.to_str().expect("utf8"),
        "--partial",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // docs/barman-behaviours.md#B-CHANGE-07
    assert_eq!(
        fs::read(&dest).expect("served"),
        &segment(&seg(5), 5)[..200_000],
        "decompressed, unlike Barman (docs/barman-behaviours.md#B-CHANGE-07)"
    );
}

#[test]
fn put_wal_follows_postgresql_contract() {
    let d = Dir::new("compression = \"lz4\"");
    let pg_wal = d.path("pg_wal");
    fs::create_dir_all(&pg_wal).expect("pg_wal");
    let name = seg(3);
    fs::write(pg_wal.join(&name), segment(&name, 3)).expect("wal");
    let src = pg_wal.join(&name);
    let out = d.run(&["put-wal", "pg", src.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(src.exists(), "put-wal never deletes the source in pg_wal");
    assert!(
        d.catalogue().starts_with(&format!("{name}\t")),
        "catalogued: {}",
        d.catalogue()
    );
    let again = d.run(&["put-wal", "pg", src.to_str().expect("utf8")]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "identical re-delivery succeeds"
    );
    assert_eq!(d.catalogue().lines().count(), 1);
    fs::write(&src, segment(&name, 77)).expect("different");
    let diff = d.run(&["put-wal", "pg", src.to_str().expect("utf8")]);
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
    assert!(
        String::from_utf8_lossy(&diff.stderr).contains("DIFFERENT content"),
        "{}",
        text(&diff)
    );
    assert_eq!(stored(&d, &name), segment(&name, 3), "never overwritten");
    let bad = d.path("pg_wal/RECOVERYXLOG");
    fs::write(&bad, b"x").expect("odd");
    let out = d.run(&["put-wal", "pg", bad.to_str().expect("utf8")]);
    assert!(
        matches!(out.status.code(), Some(1..=125)),
        "never above 125: {}",
        text(&out)
    );
}

#[test]
fn second_archive_wal_skips_while_the_lock_is_held() {
    let d = Dir::new("");
    d.queue(1, 1);
    let lock = d.path("home/.pg-archive-wal.lock");
    fs::create_dir_all(lock.parent().expect("parent")).expect("home");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .expect("lock file");
    file.lock().expect("hold the lock");
    let out = d.run(&["archive-wal", "pg"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("Another archive-wal process is already running on server pg"),
        "{}",
        text(&out)
    );
    assert!(
        d.incoming().join(seg(1)).exists(),
        "nothing archived while locked"
    );
    drop(file);
    assert!(d.run(&["archive-wal", "pg"]).status.success());
    assert!(!d.incoming().join(seg(1)).exists());
}

fn env_dump_script(dir: &Dir, tag: &str, exit: i32) -> String {
    let out = dir.path(&format!("hook-{tag}.env"));
    format!(
        "env | grep -E '^BARMAN_' | sort >> {}; echo --- >> {}; exit {exit}",
        out.display(),
        out.display()
    )
}

fn hook_env(dir: &Dir, tag: &str) -> Vec<Vec<(String, String)>> {
    let text = fs::read_to_string(dir.path(&format!("hook-{tag}.env"))).unwrap_or_default();
    text.split("---\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            block
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn var<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn hooks_get_barman_environment_and_post_sees_errors() {
    let d = Dir::new("compression = \"gzip\"");
    let conf = format!(
        "pre_archive_script = \"{}\"\npost_archive_script = \"{}\"\npost_archive_retry_script = \"{}\"\n",
        env_dump_script(&d, "pre", 0),
        env_dump_script(&d, "post", 0),
        env_dump_script(&d, "postretry", 0)
    );
    fs::write(
        d.config(),
        fs::read_to_string(d.config()).expect("config") + &conf,
    )
    .expect("config");
    let name = d.queue(2, 2);
    assert!(d.run(&["archive-wal", "pg"]).status.success());
    let pre = hook_env(&d, "pre");
    assert_eq!(var(&pre[0], "BARMAN_HOOK"), "archive_script");
    assert_eq!(var(&pre[0], "BARMAN_PHASE"), "pre");
    assert_eq!(var(&pre[0], "BARMAN_RETRY"), "0");
    assert_eq!(var(&pre[0], "BARMAN_SERVER"), "pg");
    assert_eq!(var(&pre[0], "BARMAN_SEGMENT"), name);
    assert_eq!(
        var(&pre[0], "BARMAN_FILE"),
        d.incoming().join(&name).display().to_string()
    );
    assert_eq!(var(&pre[0], "BARMAN_SIZE"), MIB.to_string());
    assert_eq!(var(&pre[0], "BARMAN_COMPRESSION"), "");
    assert_eq!(
        var(&pre[0], "BARMAN_CONFIGURATION"),
        d.config().display().to_string()
    );
    assert!(
        var(&pre[0], "BARMAN_TIMESTAMP").contains('.'),
        "Python float text"
    );
    let post = hook_env(&d, "post");
    assert_eq!(var(&post[0], "BARMAN_PHASE"), "post");
    assert_eq!(var(&post[0], "BARMAN_COMPRESSION"), "gzip");
    assert_eq!(
        var(&post[0], "BARMAN_FILE"),
        format!("{}/0000000100000000/{name}", d.wals().display())
    );
    let stored_size = fs::metadata(d.wals().join(format!("0000000100000000/{name}")))
        .expect("stored")
        .len();
    assert_eq!(var(&post[0], "BARMAN_SIZE"), stored_size.to_string());
    assert_eq!(var(&post[0], "BARMAN_ERROR"), "");
    assert_eq!(var(&hook_env(&d, "postretry")[0], "BARMAN_RETRY"), "1");
    // A different duplicate: both post scripts see the error (Barman's plain post script does
    // not: docs/barman-behaviours.md#B-CHANGE-06).
    fs::write(d.incoming().join(&name), segment(&name, 99)).expect("different");
    assert!(d.run(&["archive-wal", "pg"]).status.success());
    let post = hook_env(&d, "post");
    assert!(
        var(&post[1], "BARMAN_ERROR").starts_with("DuplicateWalFile:"),
        "{post:?}"
    );
    assert!(var(&hook_env(&d, "postretry")[1], "BARMAN_ERROR").starts_with("DuplicateWalFile:"));
}

#[test]
fn pre_retry_hook_exit_63_stops_and_62_continues() {
    let d = Dir::new("");
    let stop = format!(
        "pre_archive_retry_script = \"{}\"\n",
        env_dump_script(&d, "stop", 63)
    );
    fs::write(
        d.config(),
        fs::read_to_string(d.config()).expect("config") + &stop,
    )
    .expect("config");
    d.queue(1, 1);
    fs::write(d.incoming().join("junk"), b"x").expect("junk");
    let out = d.run(&["archive-wal", "pg", "--jobs", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("asked to stop"),
        "{}",
        text(&out)
    );
    assert!(
        d.incoming().join(seg(1)).exists() && d.incoming().join("junk").exists(),
        "stopped run leaves everything queued"
    );
    let cont = fs::read_to_string(d.config())
        .expect("config")
        .replace("exit 63", "exit 62");
    fs::write(d.config(), cont).expect("config");
    let out = d.run(&["archive-wal", "pg"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !d.incoming().join(seg(1)).exists(),
        "62 continues archiving"
    );
    assert!(
        !d.incoming().join("junk").exists(),
        "and unknown files are moved"
    );
}

#[test]
fn rebuild_keeps_partials_and_reports_misplaced_files() {
    let d = Dir::new("compression = \"bzip2\"");
    d.queue(1, 1);
    d.queue(2, 2);
    fs::write(
        d.incoming().join(format!("{}.partial", seg(3))),
        &segment(&seg(3), 3)[..5000],
    )
    .expect("partial");
    fs::write(
        d.incoming().join("00000002.history"),
        b"1\t0/3000000\tno recovery target specified\n",
    )
    .expect("history");
    assert!(d.run(&["archive-wal", "pg"]).status.success());
    let before = d.catalogue();
    fs::remove_file(d.wals().join("pg-xlog.db")).expect("lose the catalogue");
    fs::create_dir_all(d.wals().join("0000000200000000")).expect("wrong dir");
    fs::write(
        d.wals().join("0000000200000000").join(seg(9)),
        segment(&seg(9), 9),
    )
    .expect("misplaced");
    let out = d.run(&["rebuild-xlogdb", "pg"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a misplaced file is reported: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is in the wrong directory"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("(history: 1, backup_labels: 0, wal_file: 2, partial: 1)"),
        "{}",
        text(&out)
    );
    let mut a: Vec<&str> = before.lines().collect();
    let rebuilt = d.catalogue();
    let mut b: Vec<&str> = rebuilt.lines().collect();
    a.sort();
    b.sort();
    let names = |v: &[&str]| {
        v.iter()
            .map(|l| l.split('\t').next().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&a),
        names(&b),
        "the rebuilt catalogue has the same files, the .partial included"
    );
    assert!(
        rebuilt
            .lines()
            .all(|l| l.split('\t').nth(3) == Some("bzip2")),
        "codec detected from magic:\n{rebuilt}"
    );
}

#[test]
fn delete_wals_is_file_by_file_even_past_256_entries() {
    // Barman removes a whole hash directory when asked to delete ≥256 entries from it,
    // losing the segments that should stay. walvault deletes file by file
    // (docs/barman-behaviours.md#B-CHANGE-09).
    let d = Dir::new("");
    let hash = d.wals().join("0000000100000000");
    fs::create_dir_all(&hash).expect("hash dir");
    for n in 0..300 {
        let name = seg(n);
        fs::write(hash.join(&name), segment(&name, n as u8)).expect("segment");
    }
    let out = d.run(&["rebuild-xlogdb", "pg"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = d.run(&["delete-wals", "pg", "--before", &seg(256)]);
    assert!(out.status.success(), "{}", text(&out));
    let left: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(&hash)
            .expect("hash dir kept")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        left,
        (256..300).map(seg).collect::<Vec<_>>(),
        "the 44 newer segments survive"
    );
    assert_eq!(d.catalogue().lines().count(), 44);
    let all = d.run(&["delete-wals", "pg", "--before", &seg(0x1000)]);
    assert!(all.status.success());
    assert!(!hash.exists(), "a directory left empty is removed");
}

#[test]
fn config_errors_exit_2_and_name_the_key() {
    let d = Dir::new("compression = \"gzp\"");
    let out = d.run(&["archive-wal", "pg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("[pg] compression: unknown compression \"gzp\""),
        "{}",
        text(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_walvault"))
        .args(["-c", "/nonexistent/walvault.toml", "check", "pg"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let unknown = Dir::new("");
    let out = unknown.run(&["check", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown server 'nosuch'"));
}

#[test]
fn reports_in_json() {
    let d = Dir::new("compression = \"snappy\"");
    d.queue(1, 1);
    fs::write(d.incoming().join("garbage"), b"x").expect("garbage");
    assert!(d.run(&["archive-wal", "pg"]).status.success());
    let list = d.run(&["list-wals", "pg", "--format", "json"]);
    let text_out = String::from_utf8_lossy(&list.stdout);
    assert!(
        text_out.contains("\"compression\": \"snappy\"") && text_out.contains(&seg(1)),
        "{text_out}"
    );
    let errors = d.run(&["show-errors", "pg", "--format", "json"]);
    assert!(String::from_utf8_lossy(&errors.stdout).contains("\"kind\": \"unknown\""));
    let check = d.run(&["check", "pg", "--format", "json"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("\"ok\": false"));
    let nagios = d.run(&["check", "pg", "--nagios"]);
    assert_eq!(nagios.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&nagios.stdout)
            .starts_with("WALVAULT CRITICAL - pg: archiver errors")
    );
    let status = d.run(&["status", "pg", "--format", "json"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"catalogue_entries\": 1"));
}
