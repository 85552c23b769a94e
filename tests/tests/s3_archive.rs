//! Object-storage archives against real S3 servers on 127.0.0.1: s3s-fs (primary) and moto
//! (issue 5's tests).

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use walvault::store::{
    S3Store,
    s3::{ObjectUrl, S3Settings},
};
use walvault_core::storage::conformance;
use walvault_core::wal::{SegmentSize, WalFileName, synthetic_page_header};
use walvault_tests::s3::{ACCESS_KEY, FlakyProxy, S3Server, SECRET_KEY, python_venv, tool};
use walvault_tests::{
    SERVER, World, describe, file_names, point_in_time_recovery, point_in_time_recovery_with,
};

const BUCKET: &str = "wal";

/// s3s-fs over a fresh root with the bucket, or `None` (skipped) outside CI without it.
fn s3s(world: &World) -> Option<S3Server> {
    let server = S3Server::s3s_fs(&world.path("s3-root"))?;
    server.create_bucket(BUCKET);
    Some(server)
}

fn s3_world(
    codec: &str,
    server_config: impl Fn(&World) -> Option<S3Server>,
) -> Option<(World, S3Server)> {
    let world = World::new(&format!(
        "compression = \"{codec}\"\ncompression_level = \"low\""
    ));
    let server = server_config(&world)?;
    world.add_config(&server.config(BUCKET, "prod/walvault"));
    Some((world, server))
}

/// Every object in the test bucket.
fn objects(server: &S3Server) -> Vec<String> {
    server.object_keys(BUCKET)
}

fn pitr_s3(codec: &str) {
    let Some((world, _server)) = s3_world(codec, s3s) else {
        return;
    };
    // Half of the recoveries go through the prefetch spool.
    let prefetch = if matches!(codec, "gzip" | "xz" | "lz4") {
        "--prefetch 4"
    } else {
        ""
    };
    point_in_time_recovery_with(&world, codec, prefetch);
    if !prefetch.is_empty() {
        let spools: Vec<_> = fs::read_dir(world.home.join(SERVER).join("spool"))
            .expect("spool")
            .flatten()
            .collect();
        assert!(
            spools.len() == 1 && spools[0].path().join(".window").exists(),
            "recovery went through one prefetch spool"
        );
    }
    let keys = objects(&_server);
    let ext = walvault_core::compression::Codec::from_name(codec).map_or("", |c| c.extension());
    assert!(
        keys.iter()
            .filter(|k| k.contains("/wals/0000000100000000/"))
            .all(|k| k.starts_with("prod/walvault/pg/wals/0000000100000000/") && k.ends_with(ext)),
        "Barman's cloud layout with the codec's extension: {keys:?}"
    );
}

#[test]
fn s3_pitr_none() {
    pitr_s3("none");
}
#[test]
fn s3_pitr_gzip() {
    pitr_s3("gzip");
}
#[test]
fn s3_pitr_bzip2() {
    pitr_s3("bzip2");
}
#[test]
fn s3_pitr_xz() {
    pitr_s3("xz");
}
#[test]
fn s3_pitr_zstd() {
    pitr_s3("zstd");
    // verify over object storage: the archive the recovery used is clean; an object removed
    // is a lost segment, named.
    let Some((world, server)) = s3_world("zstd", s3s) else {
        return;
    };
    let (stage, segments) = world.real_wal();
    fs::create_dir_all(world.incoming()).expect("incoming");
    for name in &segments {
        fs::copy(stage.join(name), world.incoming().join(name)).expect("queue");
    }
    world.own_all();
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = world.walvault(&["verify", SERVER, "--format", "json", "--jobs", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report[0]["files"], segments.len(), "{report}");
    assert!(
        report[0]["stats"]["records"].as_u64() > Some(1000),
        "{report}"
    );
    let victim = &segments[segments.len() / 2];
    let key = objects(&server)
        .into_iter()
        .find(|k| k.contains(victim.as_str()))
        .expect("the victim's object");
    fs::remove_file(world.path("s3-root").join(BUCKET).join(&key)).expect("remove the object");
    let out = world.walvault(&["verify", SERVER, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        report[0]["missing"][0]["first"],
        victim.as_str(),
        "{report}"
    );
    assert_eq!(report[0]["missing"][0]["class"], "lost", "{report}");
}
#[test]
fn s3_pitr_lz4() {
    pitr_s3("lz4");
}
#[test]
fn s3_pitr_snappy() {
    pitr_s3("snappy");
}

#[test]
fn moto_is_a_second_server_for_archive_and_recovery() {
    let Some((world, _server)) = s3_world("zstd", |_| {
        let server = S3Server::moto()?;
        server.create_bucket(BUCKET);
        Some(server)
    }) else {
        return;
    };
    point_in_time_recovery(&world, "zstd");
}

fn settings(server: &S3Server) -> S3Settings {
    S3Settings {
        endpoint_url: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        max_retries: 2,
        timeout: Duration::from_secs(10),
        ..S3Settings::new(ObjectUrl::parse(&format!("s3://{BUCKET}")).expect("url"))
    }
}

#[test]
fn the_storage_conformance_suite_passes_on_s3s_fs_and_moto() {
    let world = World::new("");
    let Some(s3s) = s3s(&world) else {
        return;
    };
    let store = S3Store::open(&settings(&s3s)).expect("open");
    conformance::run_all(&store, "suite");
    let Some(moto) = S3Server::moto() else {
        return;
    };
    moto.create_bucket(BUCKET);
    let store = S3Store::open(&settings(&moto)).expect("open");
    conformance::run_all(&store, "suite");
}

/// A valid-looking 16 MiB segment (real page header, compressible body).
fn segment(n: u32, seed: u8) -> (String, Vec<u8>) {
    let name: WalFileName = format!("0000000100000000{n:08X}").parse().expect("name");
    let size = SegmentSize::DEFAULT;
    let mut data = vec![0u8; size.bytes() as usize];
    data[..40].copy_from_slice(&synthetic_page_header(&name, size, 42));
    for (i, b) in data
        .iter_mut()
        .enumerate()
        .skip(40)
        .step_by(7)
        .take(1_500_000)
    {
        *b = ((i as u32).wrapping_mul(2_654_435_761) >> 27) as u8 ^ seed;
    }
    (name.to_string(), data)
}

fn queue(world: &World, from: u32, count: u32) -> Vec<(String, Vec<u8>)> {
    fs::create_dir_all(world.incoming()).expect("incoming");
    let files: Vec<_> = (from..from + count).map(|n| segment(n, n as u8)).collect();
    for (name, data) in &files {
        fs::write(world.incoming().join(name), data).expect("queue");
    }
    world.own_all();
    files
}

fn incoming_names(world: &World) -> Vec<String> {
    file_names(&world.incoming())
}

/// Every queued file is either still queued or archived (catalogued) with its exact content.
fn assert_nothing_lost(world: &World, files: &[(String, Vec<u8>)]) {
    let queued = incoming_names(world);
    let catalogued: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    for (name, data) in files {
        if queued.contains(name) {
            assert_eq!(
                &fs::read(world.incoming().join(name)).expect("queued"),
                data
            );
            continue;
        }
        assert!(
            catalogued.contains(name),
            "{name} neither queued nor catalogued"
        );
        let dest = world.path(&format!("check-{name}"));
        let out = world.walvault(&["get-wal", SERVER, name, dest.to_str().expect("utf8")]);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(&fs::read(&dest).expect("restored"), data, "{name}");
    }
}

#[test]
fn an_outage_mid_batch_loses_nothing_and_a_rerun_completes() {
    let Some((world, mut server)) = s3_world("xz", s3s) else {
        return;
    };
    world.add_config("request_timeout = 5\nmax_retries = 1");
    let files = queue(&world, 1, 10);
    let mut cmd = world.walvault_command();
    cmd.args(["archive-wal", SERVER, "--jobs", "1"]);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("archive-wal");
    // Kill the server once the first object landed.
    let start = Instant::now();
    while objects(&server).iter().all(|k| !k.contains("/wals/")) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "nothing uploaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let out = child.wait_with_output().expect("wait");
    let text = describe(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("error sending request")
            || text.contains("onnection refused")
            || text.contains("connection"),
        "a clear reason: {text}"
    );
    assert!(!incoming_names(&world).is_empty(), "the rest stays queued");
    assert_nothing_lost_offline(&world, &files);

    server.restart();
    let rerun = world.walvault(&["archive-wal", SERVER]);
    assert!(rerun.status.success(), "{}", describe(&rerun));
    assert!(incoming_names(&world).is_empty());
    assert_eq!(world.catalogue().len(), files.len());
    assert_nothing_lost(&world, &files);
}

/// While the server is down only the queue can be checked.
fn assert_nothing_lost_offline(world: &World, files: &[(String, Vec<u8>)]) {
    let queued = incoming_names(world);
    let catalogued: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    for (name, _) in files {
        assert!(
            queued.contains(name) || catalogued.contains(name),
            "{name} neither queued nor catalogued"
        );
    }
}

#[test]
fn slow_down_503s_are_retried_and_persistent_ones_keep_the_source() {
    let world = World::new("compression = \"gzip\"");
    let Some(server) = s3s(&world) else {
        return;
    };
    // A few 503s: retried with backoff, the batch succeeds.
    let proxy = FlakyProxy::start(server.port, 3);
    world.add_config(
        &server
            .config(BUCKET, "flaky")
            .replace(&server.endpoint, &proxy.endpoint),
    );
    let files = queue(&world, 1, 3);
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    assert_nothing_lost(&world, &files);
    drop(proxy);

    // 503 for longer than the retries last: a clear failure, the sources stay.
    let proxy = FlakyProxy::start(server.port, 1000);
    let config = fs::read_to_string(&world.config).expect("config");
    let old_endpoint = config
        .lines()
        .find_map(|l| l.strip_prefix("endpoint_url = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("endpoint")
        .to_owned();
    fs::write(
        &world.config,
        config.replace(&old_endpoint, &proxy.endpoint) + "max_retries = 2\n",
    )
    .expect("config");
    let more = queue(&world, 10, 2);
    let out = world.walvault(&["archive-wal", SERVER]);
    let text = describe(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("503") || text.contains("SlowDown") || text.contains("Service Unavailable"),
        "{text}"
    );
    assert_eq!(incoming_names(&world).len(), 2, "{text}");
    // PostgreSQL's archive_command form: a non-zero exit, the file untouched.
    let path = world.incoming().join(&more[0].0);
    let put = world.walvault(&["put-wal", SERVER, path.to_str().expect("utf8")]);
    assert_eq!(put.status.code(), Some(1), "{}", describe(&put));
    assert!(path.exists());
    // While the store refuses, restore stops recovery instead of saying "not found".
    let dest = world.path("during-outage");
    let get = world.walvault(&["get-wal", SERVER, &files[0].0, dest.to_str().expect("utf8")]);
    assert_eq!(get.status.code(), Some(255), "{}", describe(&get));
    assert!(describe(&get).contains("SlowDown"), "{}", describe(&get));
    drop(proxy);

    // The store is healthy again: the rerun completes and everything is there.
    let config = fs::read_to_string(&world.config).expect("config");
    let flaky_endpoint = config
        .lines()
        .filter_map(|l| l.strip_prefix("endpoint_url = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .next_back()
        .expect("endpoint")
        .to_owned();
    fs::write(
        &world.config,
        config.replace(&flaky_endpoint, &server.endpoint),
    )
    .expect("config");
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(incoming_names(&world).is_empty());
    assert_nothing_lost(&world, &[files, more].concat());
}

#[test]
fn bad_buckets_credentials_endpoints_and_keys_get_clear_errors() {
    let world = World::new("compression = \"lz4\"");
    let Some(server) = s3s(&world) else {
        return;
    };
    let (name, data) = segment(1, 1);
    let src = world.path(&name);
    fs::write(&src, &data).expect("src");
    world.own_all();
    let put = |config: &str| {
        world.write_config(&format!(
            "compression = \"lz4\"\nmax_retries = 1\nrequest_timeout = 5\n{config}"
        ));
        let out = world.walvault(&["put-wal", SERVER, src.to_str().expect("utf8")]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(src.exists(), "the source is never touched");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = put(&server.config("no-such-bucket", "x"));
    assert!(
        missing.contains("NoSuchBucket") || missing.contains("bucket"),
        "{missing}"
    );
    let wrong = put(&server
        .config(BUCKET, "x")
        .replace(SECRET_KEY, "not-the-secret"));
    assert!(
        wrong.contains("access denied")
            || wrong.contains("SignatureDoesNotMatch")
            || wrong.contains("403"),
        "{wrong}"
    );
    let closed = walvault::pgcluster::free_port().expect("port");
    let unreachable = put(&server
        .config(BUCKET, "x")
        .replace(&server.endpoint, &format!("http://127.0.0.1:{closed}")));
    assert!(
        unreachable.contains("onnection refused") || unreachable.contains("error sending request"),
        "{unreachable}"
    );

    // Keys under the prefix that are not WAL names: reported, never deleted or catalogued.
    world.write_config(&format!(
        "compression = \"lz4\"\n{}",
        server.config(BUCKET, "odd")
    ));
    let ok = world.walvault(&["put-wal", SERVER, src.to_str().expect("utf8")]);
    assert!(ok.status.success(), "{}", describe(&ok));
    let bucket_root = server.root.as_ref().expect("root").join(BUCKET);
    let junk = [
        bucket_root.join("odd/pg/wals/README.txt"),
        bucket_root.join("odd/pg/wals/0000000100000000/not-a-wal"),
    ];
    for j in &junk {
        fs::write(j, b"junk").expect("junk");
    }
    let rebuild = world.walvault(&["rebuild-xlogdb", SERVER]);
    let text = describe(&rebuild);
    assert_eq!(rebuild.status.code(), Some(1), "{text}");
    assert!(
        text.contains("unexpected") && text.contains("README.txt"),
        "{text}"
    );
    assert!(junk.iter().all(|j| j.exists()), "nothing deleted");
    let names: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    assert_eq!(names, std::slice::from_ref(&name));
    assert_eq!(world.catalogue()[0].compression.as_deref(), Some("lz4"));
}

/// Runs a Barman cloud tool from the venv with the test server's credentials.
fn barman_cloud(tool_name: &str, endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(python_venv().join("bin").join(tool_name))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .args(["--endpoint-url", endpoint])
        .args(args)
        .output()
        .expect("run barman cloud tool")
}

#[test]
fn barman_cloud_and_walvault_restore_each_others_wal_for_every_codec() {
    let Some(_) = tool(
        &python_venv().join("bin/barman-cloud-wal-archive"),
        "barman-cloud-wal-archive",
    ) else {
        return;
    };
    let world = World::new("");
    let Some(server) = s3s(&world) else {
        return;
    };
    let mut n = 1;
    for codec in ["none", "gzip", "bzip2", "xz", "zstd", "lz4", "snappy"] {
        let (a, a_data) = segment(n, n as u8);
        let (b, b_data) = segment(n + 1, (n + 1) as u8);
        n += 2;
        let a_path = world.path(&a);
        let b_path = world.path(&b);
        fs::write(&a_path, &a_data).expect("a");
        fs::write(&b_path, &b_data).expect("b");
        world.write_config(&format!(
            "compression = \"{codec}\"\n{}",
            server.config(BUCKET, &format!("wv-{codec}"))
        ));
        world.own_all();
        // walvault archives, barman-cloud-wal-restore restores.
        let put = world.walvault(&["put-wal", SERVER, a_path.to_str().expect("utf8")]);
        assert!(put.status.success(), "{}", describe(&put));
        let dest = world.path(&format!("barman-{a}"));
        let out = barman_cloud(
            "barman-cloud-wal-restore",
            &server.endpoint,
            &[
                &format!("s3://{BUCKET}/wv-{codec}"),
                SERVER,
                &a,
                dest.to_str().expect("utf8"),
            ],
        );
        assert!(out.status.success(), "{codec}: {}", describe(&out));
        assert_eq!(
            fs::read(&dest).expect("restored"),
            a_data,
            "{codec}: Barman read walvault's"
        );

        // barman-cloud-wal-archive archives, walvault get-wal restores.
        let mut args = vec![];
        let flag = match codec {
            "none" => None,
            "gzip" => Some("--gzip"),
            "bzip2" => Some("--bzip2"),
            other => Some(match other {
                "xz" => "--xz",
                "zstd" => "--zstd",
                "lz4" => "--lz4",
                _ => "--snappy",
            }),
        };
        args.extend(flag);
        let url = format!("s3://{BUCKET}/bm-{codec}");
        args.extend([url.as_str(), SERVER, b_path.to_str().expect("utf8")]);
        let out = barman_cloud("barman-cloud-wal-archive", &server.endpoint, &args);
        assert!(out.status.success(), "{codec}: {}", describe(&out));
        world.write_config(&server.config(BUCKET, &format!("bm-{codec}")));
        let dest = world.path(&format!("walvault-{b}"));
        let get = world.walvault(&["get-wal", SERVER, &b, dest.to_str().expect("utf8")]);
        assert!(get.status.success(), "{codec}: {}", describe(&get));
        assert_eq!(
            fs::read(&dest).expect("restored"),
            b_data,
            "{codec}: walvault read Barman's"
        );
        // The same WAL again with different content is refused; Barman's copy is untouched.
        let (_, other) = segment(n + 100, 99);
        let mut clash = other;
        clash[..40].copy_from_slice(&b_data[..40]);
        let clash_path = world.path(&format!("clash/{b}"));
        fs::create_dir_all(clash_path.parent().expect("dir")).expect("dir");
        fs::write(&clash_path, &clash).expect("clash");
        world.own_all();
        let put = world.walvault(&["put-wal", SERVER, clash_path.to_str().expect("utf8")]);
        assert_eq!(put.status.code(), Some(1), "{codec}: {}", describe(&put));
        let again = world.walvault(&["get-wal", SERVER, &b, dest.to_str().expect("utf8")]);
        assert!(again.status.success());
        assert_eq!(
            fs::read(&dest).expect("restored"),
            b_data,
            "never overwritten"
        );
    }
}

#[test]
fn prefetch_serves_later_segments_from_a_checked_spool() {
    let Some((world, _server)) = s3_world("zstd", s3s) else {
        return;
    };
    let files = queue(&world, 1, 6);
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let spool_root = world.home.join(SERVER).join("spool");
    let get = |i: usize| {
        let dest = world.path(&format!("restored-{i}"));
        let out = world.walvault(&[
            "-v",
            "get-wal",
            SERVER,
            &files[i].0,
            dest.to_str().expect("utf8"),
            "--prefetch",
            "3",
        ]);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(
            fs::read(&dest).expect("restored"),
            files[i].1,
            "{}",
            files[i].0
        );
        describe(&out)
    };
    let first = get(0);
    assert!(!first.contains("prefetch spool"), "{first}");
    // One spool per destination directory.
    let spool = fs::read_dir(&spool_root)
        .expect("spool")
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a spool for this destination");
    // A background worker fetches the next three.
    let start = Instant::now();
    while !files[1..4].iter().all(|f| spool.join(&f.0).exists()) {
        assert!(start.elapsed() < Duration::from_secs(30), "not prefetched");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lock = spool.join(".prefetch.lock");
    while walvault::lock::holder(&lock).ok().flatten().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the worker does not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = get(1);
    assert!(
        second.contains("restored from the prefetch spool"),
        "{second}"
    );
    // A damaged spooled copy is never handed to PostgreSQL: it is downloaded again.
    fs::write(spool.join(&files[2].0), b"truncated").expect("damage");
    let third = get(2);
    assert!(third.contains("not a sound copy"), "{third}");
    let rest: String = (3..6).map(get).collect();
    assert!(rest.contains("prefetch spool"), "{rest}");
    // Nothing older than what was asked for stays spooled.
    assert!(!spool.join(&files[1].0).exists());
}

#[test]
fn segments_above_the_multipart_threshold_go_up_in_parts_and_come_back_whole() {
    let Some((world, server)) = s3_world("none", s3s) else {
        return;
    };
    world.add_config("multipart_threshold = \"5MB\"");
    let (name, data) = segment(7, 7);
    let src = world.path(&name);
    fs::write(&src, &data).expect("src");
    world.own_all();
    let put = world.walvault(&["put-wal", SERVER, src.to_str().expect("utf8")]);
    assert!(put.status.success(), "{}", describe(&put));
    // Create-if-absent holds for multipart uploads too: a different copy is refused.
    let mut other = data.clone();
    other[100_000] ^= 0xff;
    let clash = world.path(&format!("clash/{name}"));
    fs::create_dir_all(clash.parent().expect("dir")).expect("dir");
    fs::write(&clash, &other).expect("clash");
    world.own_all();
    let refused = world.walvault(&["put-wal", SERVER, clash.to_str().expect("utf8")]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let dest = world.path("back");
    let get = world.walvault(&["get-wal", SERVER, &name, dest.to_str().expect("utf8")]);
    assert!(get.status.success(), "{}", describe(&get));
    assert_eq!(fs::read(&dest).expect("restored"), data);
    assert!(objects(&server).iter().any(|k| k.ends_with(&name)));
}
