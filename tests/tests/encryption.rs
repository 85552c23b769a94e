//! Encryption at rest (issue 20): OpenPGP copies that walvault, gpg and Barman read. The keys
//! are gpg 2.2's, in core/tests/data/openpgp: A and B are RSA with the passphrases
//! `walvault-test-a` and `walvault-test-b`, C is Ed25519/Cv25519 without one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use walvault_core::compression::{Codec, DecodeLimits, decode_all};
use walvault_core::wal::WalFileName;
use walvault_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY, python_venv, tool};
use walvault_tests::{SERVER, World, describe, point_in_time_recovery, queue_file, small_segment};

const BUCKET: &str = "wal";

const CODECS: [&str; 7] = ["none", "gzip", "bzip2", "xz", "zstd", "lz4", "snappy"];

fn key_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/data/openpgp")
        .join(name)
}

/// Copies the test keys into the world (`keys/`), secret keys and passphrase files private,
/// and returns the directory.
fn install_keys(world: &World) -> PathBuf {
    let dir = world.path("keys");
    fs::create_dir_all(&dir).expect("keys");
    for name in ["a.pub.asc", "b.pub.asc", "c.pub.asc", "ab.keyring.gpg"] {
        fs::copy(key_source(name), dir.join(name)).expect("copy key");
    }
    for (name, pass) in [
        ("a.sec.asc", "walvault-test-a"),
        ("b.sec.gpg", "walvault-test-b"),
        ("c.sec.asc", ""),
    ] {
        let target = dir.join(name);
        fs::copy(key_source(name), &target).expect("copy key");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).expect("chmod");
        let pass_file = dir.join(format!("{}.pass", &name[..1]));
        fs::write(&pass_file, format!("{pass}\n")).expect("passphrase");
        fs::set_permissions(&pass_file, fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    world.own_all();
    dir
}

/// The configuration lines: encrypt to the `recipients` key files, read back with `secret`
/// (a, b or c) and its passphrase file.
fn encryption_config(keys: &Path, recipients: &[&str], secret: &str) -> String {
    let files: Vec<String> = recipients
        .iter()
        .map(|r| format!("\"{}\"", keys.join(format!("{r}.pub.asc")).display()))
        .collect();
    let secret_file = if secret == "b" {
        "b.sec.gpg"
    } else {
        &format!("{secret}.sec.asc")
    };
    format!(
        "encryption = \"gpg\"\nencryption_key_file = [{}]\nencryption_secret_key_file = \"{}\"\nencryption_passphrase_command = \"cat {}\"\n",
        files.join(", "),
        keys.join(secret_file).display(),
        keys.join(format!("{secret}.pass")).display(),
    )
}

fn encrypted_world(codec: &str) -> (World, PathBuf) {
    let world = World::new(&format!(
        "compression = \"{codec}\"\ncompression_level = \"low\"\nwal_segment_size = \"1MB\""
    ));
    let keys = install_keys(&world);
    world.add_config(&encryption_config(&keys, &["a"], "a"));
    (world, keys)
}

/// Queues `data` as `name` in incoming/ and runs archive-wal as the test user.
fn queue_and_archive(world: &World, name: &str, data: &[u8]) -> std::process::Output {
    fs::create_dir_all(world.incoming()).expect("incoming");
    queue_file(&world.incoming().join(name), data);
    world.own_all();
    world.walvault(&["archive-wal", SERVER])
}

/// Queues `seg(1)` and `seg(2)` (seeds `seed` and `seed + 1`) for the test user.
fn queue_two(world: &World, seed: u8) -> [String; 2] {
    fs::create_dir_all(world.incoming()).expect("incoming");
    let names = [seg(1), seg(2)];
    for (i, name) in names.iter().enumerate() {
        queue_file(
            &world.incoming().join(name),
            &small_segment(name, i as u8 + seed),
        );
    }
    world.own_all();
    names
}

fn seg(n: u32) -> String {
    format!("00000001000000000000{n:04X}")
}

fn stored_path(world: &World, name: &str) -> PathBuf {
    let n: WalFileName = name.parse().expect("name");
    world.wals().join(n.relative_path())
}

/// gpg with its own home holding A's secret key, as the test user never needs.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn with_secret_a(world: &World) -> Option<Gpg> {
        let gpg = tool(Path::new("/usr/bin/gpg"), "gpg (Debian's gnupg)")?;
        let home = world.path("gnupg");
        fs::create_dir_all(&home).expect("gnupg home");
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).expect("chmod");
        let out = Command::new(&gpg)
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
            .args(["--passphrase", "walvault-test-a", "--import"])
            .arg(key_source("a.sec.asc"))
            .env("GNUPGHOME", &home)
            .output()
            .expect("gpg --import");
        assert!(out.status.success(), "{}", describe(&out));
        Some(Gpg { home })
    }

    fn decrypt(&self, path: &Path) -> Vec<u8> {
        let out = Command::new("gpg")
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
            .args(["--passphrase", "walvault-test-a", "--decrypt"])
            .arg(path)
            .env("GNUPGHOME", &self.home)
            .output()
            .expect("gpg --decrypt");
        assert!(
            out.status.success(),
            "gpg --decrypt {}: {}",
            path.display(),
            describe(&out)
        );
        out.stdout
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", &self.home)
            .status();
    }
}

#[test]
fn every_codec_round_trips_encrypted_and_gpg_reads_the_copies() {
    for codec in CODECS {
        let (world, _keys) = encrypted_world(codec);
        let gpg = Gpg::with_secret_a(&world);
        let names = queue_two(&world, 3);
        let out = world.walvault(&["archive-wal", SERVER]);
        assert!(out.status.success(), "{codec}: {}", describe(&out));
        let catalogue = world.catalogue();
        assert_eq!(catalogue.len(), 2, "{codec}");
        for (i, name) in names.iter().enumerate() {
            let original = small_segment(name, i as u8 + 3);
            let stored = fs::read(stored_path(&world, name)).expect("stored");
            assert_eq!(
                stored[0], 0x85,
                "{codec}: the session key packet Barman recognises"
            );
            assert!(
                !stored.windows(16).any(|w| w == &original[100..116]),
                "{codec}: no plaintext in the copy"
            );
            let line = catalogue.iter().find(|e| &e.name == name).expect("line");
            assert_eq!(line.encryption.as_deref(), Some("gpg"), "{codec}");
            let expected_codec = (codec != "none").then(|| codec.to_owned());
            assert_eq!(line.compression, expected_codec, "{codec}");
            assert_eq!(line.size, stored.len() as u64, "{codec}");
            // get-wal: decrypted, decompressed, byte for byte.
            let dest = world.path(&format!("restored-{name}"));
            world.own_all();
            let out = world.walvault(&["get-wal", SERVER, name, dest.to_str().expect("utf-8")]);
            assert!(out.status.success(), "{codec}: {}", describe(&out));
            assert_eq!(fs::read(&dest).expect("restored"), original, "{codec}");
            // gpg reads it: the plaintext is the codec's stream of the segment.
            if let Some(gpg) = &gpg {
                let plain = gpg.decrypt(&stored_path(&world, name));
                let codec = Codec::identify(&plain);
                let decoded = decode_all(codec, &plain, DecodeLimits::default()).expect("decode");
                assert_eq!(decoded, original, "gpg's plaintext of {name}");
            }
        }
    }
}

/// Archives one encrypted segment (`seg(1)`) and returns the world, its keys and the segment.
fn one_archived(codec: &str) -> (World, PathBuf, Vec<u8>) {
    let (world, keys) = encrypted_world(codec);
    let data = small_segment(&seg(1), 7);
    let out = queue_and_archive(&world, &seg(1), &data);
    assert!(out.status.success(), "{}", describe(&out));
    (world, keys, data)
}

/// Rewrites `[pg]`'s decryption settings, keeping the rest.
fn set_decryption(world: &World, codec: &str, lines: &str) {
    world.write_config(&format!(
        "compression = \"{codec}\"\ncompression_level = \"low\"\nwal_segment_size = \"1MB\"\n{lines}"
    ));
}

/// get-wal of `seg(1)` must fail with 255 (PostgreSQL stops instead of ending recovery),
/// say `expect`, and leave nothing at the destination.
fn get_wal_refuses(world: &World, expect: &str) {
    let dest = world.path("pg_wal-RECOVERYXLOG");
    let _ = fs::remove_file(&dest);
    world.own_all();
    let started = std::time::Instant::now();
    let out = world.walvault(&["get-wal", SERVER, &seg(1), dest.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(255), "{expect}: {}", describe(&out));
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(expect), "expected {expect:?} in: {text}");
    assert!(!dest.exists(), "{expect}: nothing written to %p");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{expect}: took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_missing_or_wrong_key_or_passphrase_stops_recovery_and_writes_nothing() {
    let (world, keys, data) = one_archived("zstd");
    let k = |f: &str| keys.join(f).display().to_string();
    let with_command = |command: &str| {
        format!(
            "encryption_secret_key_file = \"{}\"\nencryption_passphrase_command = \"{command}\"",
            k("a.sec.asc")
        )
    };
    for (lines, expect) in [
        // No secret key configured.
        (String::new(), "no encryption_secret_key_file"),
        // The wrong secret key (C is no recipient).
        (
            format!("encryption_secret_key_file = \"{}\"", k("c.sec.asc")),
            "none of the configured secret keys",
        ),
        // The right key, the wrong passphrase.
        (
            with_command(&format!("cat {}", k("b.pass"))),
            "wrong passphrase",
        ),
        // A passphrase command that fails, and one that hangs (killed after its timeout).
        (
            with_command("echo nope; exit 4"),
            "encryption_passphrase_command failed (exit status: 4)",
        ),
        (
            with_command("sleep 600") + "\nencryption_passphrase_timeout = 2",
            "did not finish within 2 s",
        ),
        // A protected key and no command at all.
        (
            format!("encryption_secret_key_file = \"{}\"", k("a.sec.asc")),
            "encryption_passphrase_command is not set",
        ),
    ] {
        set_decryption(&world, "zstd", &lines);
        get_wal_refuses(&world, expect);
    }
    // A secret key file others may read is refused before it is used.
    fs::set_permissions(keys.join("a.sec.asc"), fs::Permissions::from_mode(0o644)).expect("chmod");
    set_decryption(
        &world,
        "zstd",
        &format!(
            "encryption_secret_key_file = \"{}\"\nencryption_passphrase_command = \"cat {}\"",
            k("a.sec.asc"),
            k("a.pass")
        ),
    );
    get_wal_refuses(&world, "a secret key must be private");
    fs::set_permissions(keys.join("a.sec.asc"), fs::Permissions::from_mode(0o600)).expect("chmod");
    // Truncated or tampered ciphertext: the integrity check fails.
    let stored = stored_path(&world, &seg(1));
    let sealed = fs::read(&stored).expect("stored");
    for (what, bytes) in [
        ("truncated", sealed[..sealed.len() - 30].to_vec()),
        ("tampered", {
            let mut t = sealed.clone();
            let at = t.len() / 2;
            t[at] ^= 0x10;
            t
        }),
    ] {
        fs::write(&stored, &bytes).expect(what);
        get_wal_refuses(&world, "damaged");
    }
    // And the intact copy with the right setup restores.
    fs::write(&stored, &sealed).expect("restore the copy");
    let dest = world.path("restored");
    world.own_all();
    let out = world.walvault(&["get-wal", SERVER, &seg(1), dest.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(fs::read(dest).expect("restored"), data);
}

#[test]
fn duplicates_are_compared_after_decryption_and_kept_apart_without_a_key() {
    let (world, keys, data) = one_archived("gzip");
    let archived = fs::read(stored_path(&world, &seg(1))).expect("stored");
    // The same WAL again: recognised as identical after decryption, dropped.
    let out = queue_and_archive(&world, &seg(1), &data);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !world.incoming().join(seg(1)).exists(),
        "identical re-delivery dropped"
    );
    assert!(fs::read_dir(world.errors()).map_or(true, |mut d| d.next().is_none()));
    // Other bytes under that name: kept in errors/, the archived copy untouched.
    let out = queue_and_archive(&world, &seg(1), &small_segment(&seg(1), 99));
    assert_eq!(
        fs::read(stored_path(&world, &seg(1))).expect("stored"),
        archived
    );
    let errors = walvault_tests::file_names(&world.errors());
    assert_eq!(errors.len(), 1, "{errors:?}: {}", describe(&out));
    assert!(errors[0].ends_with(".duplicate"), "{errors:?}");
    // Without the secret key the same bytes cannot be proven identical: kept apart too.
    set_decryption(
        &world,
        "gzip",
        &format!(
            "encryption = \"gpg\"\nencryption_key_file = \"{}\"",
            keys.join("a.pub.asc").display()
        ),
    );
    let out = queue_and_archive(&world, &seg(1), &data);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot be compared"), "{text}");
    assert_eq!(walvault_tests::file_names(&world.errors()).len(), 2);
    assert_eq!(
        fs::read(stored_path(&world, &seg(1))).expect("stored"),
        archived
    );
}

/// Barman 3.20.1 (the test venv's) on this world's home, encrypting to A with gpg and
/// decrypting with A's secret key in its own gpg home, as Barman's users set it up.
struct Barman {
    bin: PathBuf,
    conf: PathBuf,
    gpg: Gpg,
}

impl Barman {
    fn new(world: &World, keys: &Path) -> Option<Barman> {
        let bin = tool(
            &walvault_tests::s3::python_venv().join("bin/barman"),
            "Barman 3.20.1 (.ci/setup's venv)",
        )?;
        tool(Path::new("/usr/bin/file"), "file(1), which Barman runs")?;
        let gpg = Gpg::with_secret_a(world)?;
        // Barman calls gpg without --trust-model: the recipient must be trusted.
        let out = Command::new("gpg")
            .args([
                "--batch",
                "--with-colons",
                "--list-keys",
                "a@example.invalid",
            ])
            .env("GNUPGHOME", &gpg.home)
            .output()
            .expect("gpg --list-keys");
        let listing = String::from_utf8_lossy(&out.stdout);
        let fpr = listing
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_owned())
            })
            .expect("A's fingerprint");
        let mut trust = Command::new("gpg")
            .args(["--batch", "--import-ownertrust"])
            .env("GNUPGHOME", &gpg.home)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("gpg --import-ownertrust");
        std::io::Write::write_all(
            trust.stdin.as_mut().expect("stdin"),
            format!("{fpr}:6:\n").as_bytes(),
        )
        .expect("ownertrust");
        assert!(trust.wait().expect("gpg").success());
        let conf = world.path("barman.conf");
        fs::write(
            &conf,
            format!(
                "[barman]\nbarman_home = {home}\nbarman_user = root\nlog_file = {dir}/barman.log\nlog_level = DEBUG\n\n\
                 [{SERVER}]\ndescription = \"interop\"\nconninfo = host=/nonexistent dbname=postgres\n\
                 backup_method = postgres\narchiver = on\ncompression = gzip\nencryption = gpg\n\
                 encryption_key_id = a@example.invalid\nencryption_passphrase_command = cat {pass}\n",
                home = world.home.display(),
                dir = world.path("").display(),
                pass = keys.join("a.pass").display(),
            ),
        )
        .expect("barman.conf");
        Some(Barman { bin, conf, gpg })
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .env("GNUPGHOME", &self.gpg.home)
            .output()
            .expect("run barman")
    }
}

#[test]
fn barman_reads_walvaults_encrypted_wal_and_walvault_reads_barmans() {
    let (world, keys, data) = one_archived("gzip");
    let Some(barman) = Barman::new(&world, &keys) else {
        return;
    };
    // Barman's get-wal decrypts walvault's copy (file(1) must call it encrypted).
    let out = barman.run(&["get-wal", SERVER, &seg(1)]);
    assert!(out.status.success(), "barman get-wal: {}", describe(&out));
    assert!(
        out.stdout == data,
        "barman get-wal served walvault's WAL byte for byte"
    );
    // Barman archives an encrypted WAL of its own; walvault restores it.
    let theirs = small_segment(&seg(2), 11);
    queue_file(&world.incoming().join(seg(2)), &theirs);
    let out = barman.run(&["archive-wal", SERVER]);
    assert!(
        out.status.success(),
        "barman archive-wal: {}",
        describe(&out)
    );
    let stored = fs::read(stored_path(&world, &seg(2))).expect("Barman's copy");
    assert!(
        walvault_core::encryption::looks_like_openpgp(&stored),
        "Barman encrypted it"
    );
    let line = fs::read_to_string(world.wals().join(format!("{SERVER}-xlog.db"))).expect("xlog.db");
    assert!(
        line.lines()
            .any(|l| l.starts_with(&seg(2)) && l.ends_with("\tgzip\tgpg")),
        "{line}"
    );
    let dest = world.path("restored-barmans");
    world.own_all();
    let out = world.walvault(&["get-wal", SERVER, &seg(2), dest.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(fs::read(dest).expect("restored"), theirs);
}

/// s3s-fs with the test bucket, or `None` (skipped) outside CI without it.
fn s3s(world: &World) -> Option<S3Server> {
    let server = S3Server::s3s_fs(&world.path("s3-root"))?;
    server.create_bucket(BUCKET);
    Some(server)
}

#[test]
fn every_codec_round_trips_encrypted_in_object_storage_under_gpg_keys() {
    let world = World::new("");
    let Some(server) = s3s(&world) else {
        return;
    };
    let keys = install_keys(&world);
    for (i, codec) in CODECS.into_iter().enumerate() {
        let prefix = format!("enc-{codec}");
        world.write_config(&format!(
            "compression = \"{codec}\"\nwal_segment_size = \"1MB\"\n{}{}",
            server.config(BUCKET, &prefix),
            encryption_config(&keys, &["a", "c"], "c"),
        ));
        let name = seg(i as u32 + 1);
        let data = small_segment(&name, i as u8 + 1);
        let path = world.path(&name);
        fs::write(&path, &data).expect("segment");
        world.own_all();
        let out = world.walvault(&["put-wal", SERVER, path.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{codec}: {}", describe(&out));
        let ext = Codec::from_name(codec).map_or("", |c| c.extension());
        let key = format!("{prefix}/{SERVER}/wals/0000000100000000/{name}{ext}.gpg");
        assert!(
            server.object_keys(BUCKET).contains(&key),
            "{codec}: {:?}",
            server.object_keys(BUCKET)
        );
        // C's secret key (an ECC recipient next to A) opens it.
        let dest = world.path(&format!("restored-{name}"));
        world.own_all();
        let out = world.walvault(&["get-wal", SERVER, &name, dest.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{codec}: {}", describe(&out));
        assert_eq!(fs::read(&dest).expect("restored"), data, "{codec}");
        // barman-cloud-wal-restore, which knows no encryption, does not take the .gpg key
        // for the WAL: it reports it missing and writes no ciphertext.
        if let Some(restore) = tool(
            &python_venv().join("bin/barman-cloud-wal-restore"),
            "barman-cloud-wal-restore",
        ) {
            let dest = world.path(&format!("barman-{name}"));
            let out = Command::new(restore)
                .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .args(["--endpoint-url", &server.endpoint])
                .arg(format!("s3://{BUCKET}/{prefix}"))
                .args([SERVER, &name, dest.to_str().expect("utf-8")])
                .output()
                .expect("barman-cloud-wal-restore");
            assert_eq!(out.status.code(), Some(1), "{codec}: {}", describe(&out));
            assert!(!dest.exists(), "{codec}: no ciphertext handed over");
        }
    }
}

/// The catalogue says every line is encrypted, and `verify` reads the whole archive back
/// record by record through the decryption.
fn assert_encrypted_and_verified(world: &World) {
    let catalogue = world.catalogue();
    assert!(!catalogue.is_empty());
    assert!(
        catalogue
            .iter()
            .all(|e| e.encryption.as_deref() == Some("gpg")),
        "every catalogue line records gpg"
    );
    let out = world.walvault(&["verify", SERVER]);
    assert!(out.status.success(), "verify: {}", describe(&out));
}

#[test]
fn postgres_recovers_from_an_encrypted_local_archive() {
    let world = World::new("compression = \"zstd\"");
    let keys = install_keys(&world);
    world.add_config(&encryption_config(&keys, &["a", "b"], "b"));
    point_in_time_recovery(&world, "zstd");
    assert_encrypted_and_verified(&world);
}

#[test]
fn postgres_recovers_from_an_encrypted_object_store() {
    let world = World::new("compression = \"lz4\"");
    let Some(server) = s3s(&world) else {
        return;
    };
    let keys = install_keys(&world);
    world.add_config(&server.config(BUCKET, "enc"));
    world.add_config(&encryption_config(&keys, &["a"], "a"));
    point_in_time_recovery(&world, "lz4");
    assert_encrypted_and_verified(&world);
    assert!(
        server
            .object_keys(BUCKET)
            .iter()
            .filter(|k| k.contains("/wals/0000000100000000/"))
            .all(|k| k.ends_with(".lz4.gpg")),
        "{:?}",
        server.object_keys(BUCKET)
    );
}

/// The key IDs an archived copy's session keys name.
fn recipients_of(world: &World, name: &str) -> Vec<[u8; 8]> {
    let bytes = fs::read(stored_path(world, name)).expect("stored");
    walvault_core::encryption::openpgp_recipients(&bytes).expect("recipients")
}

fn key_id(file: &str) -> [u8; 8] {
    let keys = walvault_core::encryption::openpgp::parse_public_keys(
        file,
        &fs::read(key_source(file)).expect("key"),
    )
    .expect("key");
    walvault_core::encryption::openpgp::Recipient::of(file, &keys[0], 1_800_000_000)
        .expect("recipient")
        .key_id
}

fn walvault_with_env(world: &World, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = world.walvault_command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Every archived WAL restores byte for byte.
fn all_restore(world: &World, originals: &[(String, Vec<u8>)], when: &str) {
    for (name, data) in originals {
        let dest = world.path(&format!("check-{name}"));
        let _ = fs::remove_file(&dest);
        world.own_all();
        let out = world.walvault(&["get-wal", SERVER, name, dest.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{when}: {name}: {}", describe(&out));
        assert_eq!(&fs::read(&dest).expect("restored"), data, "{when}: {name}");
    }
}

#[test]
fn rotating_from_one_key_to_another_is_found_by_check_and_fixed_by_reencrypt_losing_nothing() {
    let world = World::new("compression = \"zstd\"\nwal_segment_size = \"1MB\"");
    let keys = install_keys(&world);
    // The secret keys of both A (old) and C (new), as an operator holds them while rotating.
    let ac = keys.join("ac.sec.asc");
    let mut both = fs::read(keys.join("a.sec.asc")).expect("a");
    both.extend(fs::read(keys.join("c.sec.asc")).expect("c"));
    fs::write(&ac, both).expect("ac");
    fs::set_permissions(&ac, fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = |recipients: &[&str]| {
        let files: Vec<String> = recipients
            .iter()
            .map(|r| format!("\"{}\"", keys.join(format!("{r}.pub.asc")).display()))
            .collect();
        world.write_config(&format!(
            "compression = \"zstd\"\nwal_segment_size = \"1MB\"\nencryption = \"gpg\"\n\
             encryption_key_file = [{}]\nencryption_secret_key_file = \"{}\"\n\
             encryption_passphrase_command = \"cat {}\"",
            files.join(", "),
            ac.display(),
            keys.join("a.pass").display()
        ));
    };
    let mut originals = Vec::new();
    let mut archive = |n: u32| {
        let name = seg(n);
        let data = small_segment(&name, n as u8);
        let out = queue_and_archive(&world, &name, &data);
        assert!(out.status.success(), "{}", describe(&out));
        originals.push((name, data));
    };
    // Under A, then A and C, then C only.
    config(&["a"]);
    archive(1);
    archive(2);
    config(&["a", "c"]);
    archive(3);
    config(&["c"]);
    archive(4);
    let (a, c) = (key_id("a.pub.asc"), key_id("c.pub.asc"));
    assert_eq!(recipients_of(&world, &seg(1)), [a]);
    assert_eq!(recipients_of(&world, &seg(3)), [a, c]);
    assert_eq!(recipients_of(&world, &seg(4)), [c]);
    let check = world.walvault(&["check", SERVER]);
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert_eq!(check.status.code(), Some(1), "{}", describe(&check));
    assert!(
        text.contains(&format!(
            "2 of 4 encrypted WAL ({} .. {}) can only be opened by keys no longer configured",
            seg(1),
            seg(2)
        )),
        "{text}"
    );
    let dry = world.walvault(&["reencrypt", SERVER, "--to-current-keys", "--dry-run"]);
    assert!(dry.status.success(), "{}", describe(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("2 of 4"),
        "{}",
        describe(&dry)
    );
    assert_eq!(
        recipients_of(&world, &seg(1)),
        [a],
        "a dry run changes nothing"
    );
    // Killed after the new copy is stored, after the first copy is replaced, and by SIGKILL
    // while holding a stored temporary: every WAL still restores.
    for point in [
        "reencrypt-copy-stored:1",
        "reencrypt-replaced:1",
        "reencrypt-copy-stored:1",
    ] {
        let out = walvault_with_env(
            &world,
            &["reencrypt", SERVER, "--to-current-keys"],
            &[("WALVAULT_CRASH_AT", point)],
        )
        .output()
        .expect("reencrypt");
        assert!(
            !out.status.success(),
            "{point}: it crashed: {}",
            describe(&out)
        );
        all_restore(&world, &originals, point);
    }
    let mut paused = walvault_with_env(
        &world,
        &["reencrypt", SERVER, "--to-current-keys"],
        &[("WALVAULT_PAUSE_AT", "reencrypt-copy-stored:3000")],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("reencrypt");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The command runs under `runuser`/`su`: kill its whole process tree.
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", "reencrypt pg --to-current-keys"])
        .status();
    let _ = paused.kill();
    let _ = paused.wait();
    all_restore(&world, &originals, "SIGKILL");
    // A full run fixes them, and check agrees.
    let out = world.walvault(&["reencrypt", SERVER, "--to-current-keys"]);
    assert!(out.status.success(), "{}", describe(&out));
    for n in [1, 2, 4] {
        assert_eq!(recipients_of(&world, &seg(n)), [c], "{}", seg(n));
    }
    let leftovers: Vec<_> = walvault_tests::file_names(&world.wals().join("0000000100000000"))
        .into_iter()
        .filter(|f| f.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for e in world.catalogue() {
        let size = fs::metadata(stored_path(&world, &e.name))
            .expect("stored")
            .len();
        assert_eq!(e.size, size, "{}: the catalogue has the new size", e.name);
    }
    let check = world.walvault(&["check", SERVER]);
    assert!(
        String::from_utf8_lossy(&check.stdout)
            .contains("4 encrypted WAL, each readable by a configured key"),
        "{}",
        describe(&check)
    );
    // A's secret key is no longer needed for anything.
    fs::copy(keys.join("c.sec.asc"), &ac).expect("C only");
    all_restore(&world, &originals, "with C's key only");
}

#[test]
fn the_wasi_guest_encrypts_in_its_sandbox_and_reads_back_with_a_key_without_passphrase() {
    let world = World::new("compression = \"zstd\"\nwal_segment_size = \"1MB\"");
    let keys = install_keys(&world);
    // C's secret key has no passphrase: the sandbox cannot run a passphrase command.
    world.add_config(&format!(
        "encryption = \"gpg\"\nencryption_key_file = [\"{}\", \"{}\"]\nencryption_secret_key_file = \"{}\"",
        keys.join("a.pub.asc").display(),
        keys.join("c.pub.asc").display(),
        keys.join("c.sec.asc").display(),
    ));
    let names = queue_two(&world, 20);
    let out = world.walvault_wasi(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let (a, c) = (key_id("a.pub.asc"), key_id("c.pub.asc"));
    for (i, name) in names.iter().enumerate() {
        assert_eq!(recipients_of(&world, name), [a, c], "RSA first");
        let line = world
            .catalogue()
            .into_iter()
            .find(|e| &e.name == name)
            .expect("line");
        assert_eq!(line.encryption.as_deref(), Some("gpg"));
        for (how, out) in [("native", false), ("wasi", true)] {
            let dest = world.path(&format!("{how}-{name}"));
            world.own_all();
            let args = ["get-wal", SERVER, name, dest.to_str().expect("utf-8")];
            let got = if out {
                world.walvault_wasi(&args)
            } else {
                world.walvault(&args)
            };
            assert!(got.status.success(), "{how}: {}", describe(&got));
            assert_eq!(
                fs::read(&dest).expect("restored"),
                small_segment(name, i as u8 + 20)
            );
        }
    }
}

#[test]
fn key_files_that_are_fifos_or_huge_are_refused_without_hanging_or_losing_wal() {
    let (world, keys, data) = one_archived("zstd");
    let fifo = keys.join("fifo.asc");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let huge = keys.join("huge.asc");
    fs::write(&huge, vec![b'A'; 5 << 20]).expect("huge");
    world.own_all();
    for (bad, expect) in [(&fifo, "not a regular file"), (&huge, "not a key file")] {
        // As a public key: archive-wal refuses, the queued WAL stays where it is.
        set_decryption(
            &world,
            "zstd",
            &format!(
                "encryption = \"gpg\"\nencryption_key_file = \"{}\"",
                bad.display()
            ),
        );
        let started = std::time::Instant::now();
        let out = queue_and_archive(&world, &seg(2), &small_segment(&seg(2), 5));
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(
            describe(&out).contains(expect),
            "{expect}: {}",
            describe(&out)
        );
        assert!(world.incoming().join(seg(2)).exists(), "the WAL is kept");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // As the secret key: get-wal stops recovery (255) and writes nothing.
        set_decryption(
            &world,
            "zstd",
            &format!("encryption_secret_key_file = \"{}\"", bad.display()),
        );
        fs::set_permissions(bad, fs::Permissions::from_mode(0o600)).expect("chmod");
        get_wal_refuses(&world, expect);
    }
    // The archived copy is untouched and still restores with the right key.
    set_decryption(
        &world,
        "zstd",
        &format!(
            "encryption_secret_key_file = \"{}\"\nencryption_passphrase_command = \"cat {}\"",
            keys.join("a.sec.asc").display(),
            keys.join("a.pass").display()
        ),
    );
    all_restore(&world, &[(seg(1), data)], "after the refusals");
}

/// The key agent's socket, and the pid of the agent holding its lock (`None` when none runs).
fn key_agent(world: &World) -> (PathBuf, Option<u32>) {
    let dir = world.home.join(SERVER).join("key-agent");
    let pid = fs::read_to_string(dir.join("lock"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .filter(|pid| alive(*pid));
    (dir.join("S"), pid)
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Whether a process runs (a zombie does not: its parent may have left it unreaped).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name in parentheses.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Waits until a key agent listens on its socket (`up`: a stale socket refuses connections),
/// or until none runs and its socket is gone.
#[track_caller]
fn wait_for_key_agent(world: &World, up: bool) {
    let started = std::time::Instant::now();
    let state = || {
        let (socket, pid) = key_agent(world);
        if up {
            pid.is_some() && std::os::unix::net::UnixStream::connect(&socket).is_ok()
        } else {
            pid.is_none() && !socket.exists()
        }
    };
    while !state() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "key agent still {}: {:?}",
            if up { "absent" } else { "there" },
            key_agent(world)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A passphrase-protected key is unlocked once, as gpg-agent does for gpg: the first get-wal
/// runs the passphrase command and starts a key agent, which serves the next calls (the
/// command does not run again) until its TTL passes, the key file changes or it dies; each
/// of those falls back to unlocking in-process, losing nothing. A wrong passphrase starts no
/// agent, and TTL 0 none at all.
#[test]
fn a_key_agent_keeps_a_protected_key_unlocked_between_restore_calls() {
    let (world, keys, data) = one_archived("zstd");
    let asked = world.path("asked");
    let configure = |pass: &str, ttl: u64| {
        set_decryption(
            &world,
            "zstd",
            &format!(
                "encryption_secret_key_file = \"{}\"\nencryption_passphrase_command = \"echo x >> {}; cat {}\"\nencryption_key_cache_ttl = {ttl}",
                keys.join("a.sec.asc").display(),
                asked.display(),
                keys.join(pass).display(),
            ),
        );
    };
    let times_asked = || fs::read_to_string(&asked).map_or(0, |s| s.lines().count());
    let restores = |world: &World| {
        let dest = world.path("restored");
        let _ = fs::remove_file(&dest);
        world.own_all();
        let out = world.walvault(&["get-wal", SERVER, &seg(1), dest.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(
            fs::read(&dest).expect("restored") == data,
            "restored bytes differ"
        );
    };

    configure("a.pass", 600);
    restores(&world);
    assert_eq!(times_asked(), 1);
    wait_for_key_agent(&world, true);
    let (socket, pid) = key_agent(&world);
    let mode = |p: &Path| fs::metadata(p).expect("mode").permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().expect("dir")), 0o700);
    for _ in 0..3 {
        restores(&world);
    }
    assert_eq!(
        times_asked(),
        1,
        "the agent answered, the command did not run again"
    );

    // Through the agent, a tampered copy still fails its integrity check (the data never
    // goes through the agent: the caller checks it).
    let stored = stored_path(&world, &seg(1));
    let sealed = fs::read(&stored).expect("stored");
    let mut tampered = sealed.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x10;
    fs::write(&stored, &tampered).expect("tamper");
    get_wal_refuses(&world, "damaged");
    fs::write(&stored, &sealed).expect("restore the copy");
    assert_eq!(times_asked(), 1);

    // Another user (root, here) gets no answer: the agent serves its own user only.
    if std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").expect("proc")) == 0 {
        use std::io::{Read as _, Write as _};
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let _ = stream.write_all(&[0u8; 64]);
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert!(reply.is_empty(), "root got an answer: {reply:?}");
    }

    // The key file replaced: the agent leaves at once, the next call unlocks again.
    fs::copy(key_source("a.sec.asc"), keys.join("a.sec.asc")).expect("replace key");
    fs::set_permissions(keys.join("a.sec.asc"), fs::Permissions::from_mode(0o600)).expect("chmod");
    world.own_all();
    wait_for_key_agent(&world, false);
    restores(&world);
    assert_eq!(times_asked(), 2);
    wait_for_key_agent(&world, true);
    assert_ne!(key_agent(&world).1, pid, "a new agent");

    // A killed agent leaves its socket behind: the next call still restores, and starts one.
    let pid = key_agent(&world).1.expect("agent");
    signal(pid, "KILL");
    while alive(pid) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(socket.exists(), "a stale socket");
    restores(&world);
    assert_eq!(times_asked(), 3);
    wait_for_key_agent(&world, true);

    // Its TTL passed without a request: it is gone, and the key with it.
    configure("a.pass", 2);
    let pid = key_agent(&world).1.expect("agent");
    signal(pid, "TERM");
    wait_for_key_agent(&world, false);
    restores(&world);
    assert_eq!(times_asked(), 4);
    wait_for_key_agent(&world, true);
    std::thread::sleep(std::time::Duration::from_secs(3));
    wait_for_key_agent(&world, false);

    // A wrong passphrase starts no agent; TTL 0 means none, every call asks.
    configure("b.pass", 600);
    get_wal_refuses(&world, "wrong passphrase");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(key_agent(&world).1, None, "no agent for a wrong passphrase");
    configure("a.pass", 0);
    let before = times_asked();
    restores(&world);
    restores(&world);
    assert_eq!(times_asked(), before + 2);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        key_agent(&world).1,
        None,
        "no agent with encryption_key_cache_ttl = 0"
    );
}
