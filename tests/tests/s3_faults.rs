//! Object-store faults (issue 17): the real `walvault` binary against s3s-fs behind the
//! [`FaultProxy`], which answers 500, 503 SlowDown and 429, resets connections in the middle
//! of a request or a response, stalls, truncates bodies, and hides new objects from listings.
//! The invariants: retries end within the configured budget, every request times out, a
//! failed upload never releases its source, `get-wal` never writes a truncated file and never
//! turns an outage into "not found" (exit 1), and a lagging listing never makes walvault
//! overwrite or lose a WAL.
//!
//! Worlds use 1 MiB segments, a 2 s request timeout and few retries, so each test takes
//! seconds.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use walvault_tests::s3::{Fault, FaultProxy, Rule, S3Server};
use walvault_tests::{SERVER, World, describe, file_names, queue_file, small_segment};

const BUCKET: &str = "wal";
const PREFIX: &str = "faults";
/// `request_timeout` in every world.
const TIMEOUT: Duration = Duration::from_secs(2);
/// What a command may take beyond its requests' budget: process start, the local work.
const MARGIN: Duration = Duration::from_secs(3);

/// A world archiving to s3s-fs through a fault proxy (no rules yet), with `max_retries`
/// retries and `compression`; `None` (skipped) outside CI without s3s-fs.
fn world(compression: &str, max_retries: u32) -> Option<(World, S3Server, FaultProxy)> {
    let world = World::new(&format!(
        "compression = \"{compression}\"\nwal_segment_size = \"1MB\"\nrequest_timeout = {}\nmax_retries = {max_retries}",
        TIMEOUT.as_secs()
    ));
    let server = S3Server::s3s_fs(&world.path("s3-root"))?;
    server.create_bucket(BUCKET);
    let proxy = FaultProxy::start(server.port);
    world.add_config(&proxy.config(&server, BUCKET, PREFIX));
    fs::create_dir_all(world.incoming()).expect("incoming");
    world.own_all();
    Some((world, server, proxy))
}

/// The most object_store's backoff sleeps over `retries` retries with walvault's settings
/// (200 ms, doubling at most, capped at 10 s; the jitter only shortens it).
fn backoff_max(retries: u32) -> Duration {
    (0..retries)
        .map(|i| (Duration::from_millis(200) * 2u32.pow(i)).min(Duration::from_secs(10)))
        .sum()
}

/// The most one request may take: every attempt up to the timeout, and the backoff between.
fn request_budget(retries: u32) -> Duration {
    TIMEOUT * (retries + 1) + backoff_max(retries)
}

fn segment_name(n: u32) -> String {
    format!("0000000100000000{n:08X}")
}

/// Queues segments `from..from + count` in incoming/ (content by `seed`).
fn queue(world: &World, from: u32, count: u32, seed: u8) -> Vec<(String, Vec<u8>)> {
    let files: Vec<_> = (from..from + count)
        .map(|n| {
            let name = segment_name(n);
            let data = small_segment(&name, seed.wrapping_add(n as u8));
            queue_file(&world.incoming().join(&name), &data);
            (name, data)
        })
        .collect();
    world.own_all();
    files
}

/// Runs walvault as the test user and times it.
fn timed(world: &World, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = world.walvault(args);
    (out, start.elapsed())
}

/// `put-wal` of `data` as `dir/name` (a fresh copy PostgreSQL would pass as %p).
fn put_wal(world: &World, dir: &str, name: &str, data: &[u8]) -> (Output, Duration, String) {
    let path = world.path(dir).join(name);
    fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    queue_file(&path, data);
    world.own_all();
    let path = path.to_str().expect("utf8").to_owned();
    let (out, took) = timed(world, &["put-wal", SERVER, &path]);
    (out, took, path)
}

/// `get-wal` of `name` into a fresh `pg_wal`-like directory named `dest_dir`.
fn get_wal(world: &World, name: &str, dest_dir: &str) -> (Output, Duration, std::path::PathBuf) {
    let dir = world.path(dest_dir);
    fs::create_dir_all(&dir).expect("dest dir");
    world.own_all();
    let dest = dir.join(name);
    let (out, took) = timed(
        world,
        &["get-wal", SERVER, name, dest.to_str().expect("utf8")],
    );
    (out, took, dest)
}

/// Every object in the test bucket.
fn objects(server: &S3Server) -> Vec<String> {
    server.object_keys(BUCKET)
}

/// The stored bytes of the one object holding `name`.
fn object_bytes(server: &S3Server, name: &str) -> Vec<u8> {
    let keys: Vec<String> = objects(server)
        .into_iter()
        .filter(|k| k.rsplit('/').next().is_some_and(|f| f.starts_with(name)))
        .collect();
    assert_eq!(keys.len(), 1, "one object for {name}: {keys:?}");
    let root = server.root.as_ref().expect("root").join(BUCKET);
    fs::read(root.join(&keys[0])).expect("object")
}

/// The bytes of the one object whose file name is `file_name` (extension included).
fn object_file(server: &S3Server, file_name: &str) -> Vec<u8> {
    let keys: Vec<String> = objects(server)
        .into_iter()
        .filter(|k| k.rsplit('/').next() == Some(file_name))
        .collect();
    assert_eq!(keys.len(), 1, "one object {file_name}: {keys:?}");
    let root = server.root.as_ref().expect("root").join(BUCKET);
    fs::read(root.join(&keys[0])).expect("object")
}

/// Each name has exactly one catalogue line, and nothing else is catalogued.
fn assert_catalogued_once(world: &World, names: &[&str]) {
    let mut catalogued: Vec<String> = world.catalogue().into_iter().map(|e| e.name).collect();
    catalogued.sort();
    let mut wanted: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    wanted.sort();
    assert_eq!(catalogued, wanted, "one catalogue line per archived WAL");
}

/// `get-wal` through the (by then healthy) proxy gives back exactly `data`.
fn assert_restores(world: &World, name: &str, data: &[u8]) {
    let (out, _, dest) = get_wal(world, name, &format!("check-{name}"));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        fs::read(&dest).expect("restored") == data,
        "{name} restored exactly"
    );
}

/// The destination directory holds nothing: no file at %p, no temporary file left.
fn assert_nothing_written(dest: &Path) {
    let dir = dest.parent().expect("dir");
    assert!(
        file_names(dir).is_empty(),
        "nothing written to {}: {:?}",
        dir.display(),
        file_names(dir)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Requests of `method` the proxy received since `from` (an index into its log).
fn count(proxy: &FaultProxy, from: usize, method: &str) -> usize {
    proxy.requests()[from..]
        .iter()
        .filter(|s| s.method == method)
        .count()
}

#[test]
fn transient_faults_are_ridden_out_and_each_wal_archived_once() {
    let Some((world, server, proxy)) = world("gzip", 3) else {
        return;
    };
    let files = queue(&world, 1, 6, 1);
    // One fault on each file's upload (a listing names no file: the first two fail, with a
    // status, then a reset in the middle of the body). No request meets more faults than its
    // retries.
    let faults = [
        Fault::INTERNAL_ERROR,
        Fault::SLOW_DOWN,
        Fault::TOO_MANY_REQUESTS,
        Fault::ResetMidRequest(100),
        // The server stores the object, the answer is lost: the retry finds it there.
        Fault::AnswerLost,
    ];
    let fired: Vec<_> = faults
        .iter()
        .zip(&files)
        .map(|(f, (name, _))| proxy.add(Rule::new("PUT", name, *f)))
        .collect();
    let listing = proxy.add(Rule::new("LIST", "", Fault::SLOW_DOWN));
    let listing_reset = proxy.add(Rule::new("LIST", "", Fault::ResetMidResponse(10)));

    let (out, took) = timed(&world, &["archive-wal", SERVER, "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for (fault, n) in faults.iter().zip(&fired) {
        assert_eq!(n.load(Ordering::SeqCst), 1, "{fault:?} injected");
    }
    assert_eq!(listing.load(Ordering::SeqCst), 1);
    assert_eq!(listing_reset.load(Ordering::SeqCst), 1);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        file_names(&world.incoming()).is_empty(),
        "every source released"
    );
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_catalogued_once(&world, &names);
    assert_eq!(
        objects(&server).len(),
        files.len(),
        "{:?}",
        objects(&server)
    );
    for (name, data) in &files {
        assert_restores(&world, name, data);
    }
}

#[test]
fn a_permanent_error_status_gives_up_within_the_retry_budget_and_keeps_the_source() {
    const RETRIES: u32 = 2;
    let Some((world, server, proxy)) = world("zstd", RETRIES) else {
        return;
    };
    let name = segment_name(1);
    let data = small_segment(&name, 1);
    for code in [500, 503, 429] {
        let fault = Fault::Status(code);
        proxy.clear();
        proxy.add(Rule::new("PUT", "", fault).always());
        let from = proxy.requests().len();
        let (out, took, path) = put_wal(&world, "pg_wal", &name, &data);
        // PostgreSQL's archive_command: non-zero, the file untouched, the reason said.
        assert_eq!(out.status.code(), Some(1), "{fault:?}: {}", describe(&out));
        assert!(fs::read(&path).expect("source") == data, "source untouched");
        assert!(stderr(&out).contains(&code.to_string()), "{}", stderr(&out));
        // Exactly the configured retries, each after a backoff, and no more time than they
        // allow.
        let puts: Vec<Instant> = proxy.requests()[from..]
            .iter()
            .filter(|s| s.method == "PUT")
            .map(|s| s.at)
            .collect();
        assert_eq!(puts.len(), RETRIES as usize + 1, "{fault:?}: attempts");
        for pair in puts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(180),
                "{fault:?}: backoff {gap:?}"
            );
        }
        assert!(
            took < backoff_max(RETRIES) + MARGIN,
            "{fault:?}: took {took:?}"
        );
    }
    // get-wal: the listing is refused as often as the budget allows, then exit 255 (never 1,
    // "not found"), with no retries of its own on top.
    proxy.clear();
    proxy.add(Rule::new("", "", Fault::SLOW_DOWN).always());
    let from = proxy.requests().len();
    let (out, took, dest) = get_wal(&world, &name, "outage");
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(!dest.exists());
    assert_eq!(count(&proxy, from, "LIST"), RETRIES as usize + 1);
    assert!(took < backoff_max(RETRIES) + MARGIN, "took {took:?}");
    // archive-wal: fails, and the queue keeps every file.
    proxy.clear();
    proxy.add(Rule::new("PUT", "", Fault::SLOW_DOWN).always());
    let files = queue(&world, 1, 3, 7);
    let (out, took) = timed(&world, &["archive-wal", SERVER, "--jobs", "1"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(took < backoff_max(RETRIES) + MARGIN, "took {took:?}");
    assert_eq!(file_names(&world.incoming()).len(), files.len());
    assert!(world.catalogue().is_empty());
    assert!(objects(&server).is_empty(), "{:?}", objects(&server));
    // The store recovers: the next run archives everything once.
    proxy.clear();
    let out = world.walvault(&["archive-wal", SERVER]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(file_names(&world.incoming()).is_empty());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_catalogued_once(&world, &names);
}

#[test]
fn a_stalled_server_times_out_and_nothing_hangs() {
    const RETRIES: u32 = 1;
    let Some((world, _server, proxy)) = world("gzip", RETRIES) else {
        return;
    };
    let (name, data) = (segment_name(1), small_segment(&segment_name(1), 1));
    // An upload that never gets an answer: put-wal ends, non-zero, the source kept.
    proxy.add(Rule::new("PUT", "", Fault::Stall).always());
    let (out, took, path) = put_wal(&world, "pg_wal", &name, &data);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(Path::new(&path).exists());
    assert!(took < request_budget(RETRIES) + MARGIN, "took {took:?}");
    // archive-wal alike: the file stays queued.
    let files = queue(&world, 2, 1, 2);
    let (out, took) = timed(&world, &["archive-wal", SERVER]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(took < request_budget(RETRIES) + MARGIN, "took {took:?}");
    assert_eq!(file_names(&world.incoming()), [files[0].0.clone()]);
    assert!(world.catalogue().is_empty());

    proxy.clear();
    let (out, _, _) = put_wal(&world, "pg_wal", &name, &data);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // A download that stalls half-way, then a listing that never answers: get-wal ends
    // within the budget of the requests it made, exit 255, nothing written.
    proxy.add(Rule::new("GET", &name, Fault::StallMidResponse(10)).always());
    let (out, took, dest) = get_wal(&world, &name, "stalled-get");
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert_nothing_written(&dest);
    assert!(
        took < request_budget(0) + request_budget(RETRIES) + MARGIN,
        "took {took:?}"
    );
    proxy.clear();
    proxy.add(Rule::new("LIST", "", Fault::Stall).always());
    let (out, took, dest) = get_wal(&world, &name, "stalled-list");
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert_nothing_written(&dest);
    assert!(took < request_budget(RETRIES) + MARGIN, "took {took:?}");
}

#[test]
fn get_wal_rides_out_a_few_broken_downloads() {
    let Some((world, _server, proxy)) = world("none", 3) else {
        return;
    };
    let name = segment_name(1);
    let data = small_segment(&name, 3);
    let (out, _, _) = put_wal(&world, "pg_wal", &name, &data);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let fired = [
        proxy.add(Rule::new("LIST", "", Fault::SLOW_DOWN)),
        proxy.add(Rule::new("GET", &name, Fault::INTERNAL_ERROR)),
        proxy.add(Rule::new("GET", &name, Fault::ResetMidResponse(300_000))),
        proxy.add(Rule::new("GET", &name, Fault::Truncate(100))),
    ];
    let (out, _, dest) = get_wal(&world, &name, "restore");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        fs::read(&dest).expect("restored") == data,
        "the whole segment"
    );
    assert!(fired.iter().all(|f| f.load(Ordering::SeqCst) == 1));
}

#[test]
fn get_wal_never_writes_a_broken_download_and_never_calls_an_outage_not_found() {
    const RETRIES: u32 = 1;
    let Some((world, _server, proxy)) = world("none", RETRIES) else {
        return;
    };
    // One plain and one compressed segment: a broken body is refused whether or not the
    // decompressor would notice.
    let plain = segment_name(1);
    let plain_data = small_segment(&plain, 5);
    let (out, _, _) = put_wal(&world, "pg_wal", &plain, &plain_data);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let config = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        config.replace("compression = \"none\"", "compression = \"gzip\""),
    )
    .expect("config");
    let packed = segment_name(2);
    let packed_data = small_segment(&packed, 6);
    let (out, _, _) = put_wal(&world, "pg_wal", &packed, &packed_data);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let broken = [
        // A compressed segment of these is a few KiB: cut well inside.
        ("GET", Fault::Truncate(100)),
        ("GET", Fault::Truncate(0)),
        ("GET", Fault::ResetMidResponse(100)),
        ("GET", Fault::AnswerLost),
        ("GET", Fault::ResetMidRequest(0)),
        ("GET", Fault::SLOW_DOWN),
        ("LIST", Fault::INTERNAL_ERROR),
        ("LIST", Fault::TOO_MANY_REQUESTS),
        ("LIST", Fault::Truncate(100)),
        ("LIST", Fault::ResetMidResponse(100)),
    ];
    for (i, (method, fault)) in broken.iter().enumerate() {
        for name in [&plain, &packed] {
            proxy.clear();
            proxy.add(Rule::new(method, "", *fault).always());
            let from = proxy.requests().len();
            let (out, took, dest) = get_wal(&world, name, &format!("broken-{i}-{name}"));
            let what = format!("{method} {fault:?} on {name}");
            assert_eq!(out.status.code(), Some(255), "{what}: {}", describe(&out));
            assert_nothing_written(&dest);
            assert!(
                took < 2 * request_budget(RETRIES) + MARGIN,
                "{what}: took {took:?}"
            );
            assert!(
                count(&proxy, from, method) >= 1,
                "{what}: reached the proxy"
            );
        }
    }
    // Missing from a healthy archive: exit 1, PostgreSQL's "end of the archive".
    proxy.clear();
    let missing = segment_name(9);
    let (out, _, dest) = get_wal(&world, &missing, "missing");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_nothing_written(&dest);
    // ... but while the store fails, the same question is never answered "not found".
    proxy.add(Rule::new("", "", Fault::SLOW_DOWN).always());
    let (out, _, dest) = get_wal(&world, &missing, "missing-outage");
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(stderr(&out).contains("SlowDown"), "{}", stderr(&out));
    assert_nothing_written(&dest);
    // Healthy again: both restore exactly.
    proxy.clear();
    assert_restores(&world, &plain, &plain_data);
    assert_restores(&world, &packed, &packed_data);
}

#[test]
fn a_lost_upload_answer_never_releases_the_source_and_the_rerun_catalogues_it_once() {
    let Some((world, server, proxy)) = world("gzip", 1) else {
        return;
    };
    // Every upload reaches the server but its answer (and the retry's) is lost.
    proxy.add(Rule::new("PUT", "", Fault::AnswerLost).always());
    let files = queue(&world, 1, 2, 9);
    let out = world.walvault(&["archive-wal", SERVER, "--jobs", "1"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(file_names(&world.incoming()).len(), 2, "nothing released");
    assert!(world.catalogue().is_empty());
    assert!(!objects(&server).is_empty(), "the server did store it");
    proxy.clear();
    let out = world.walvault(&["archive-wal", SERVER]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(file_names(&world.incoming()).is_empty());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_catalogued_once(&world, &names);
    assert_eq!(objects(&server).len(), 2);
    for (name, data) in &files {
        assert_restores(&world, name, data);
    }
}

#[test]
fn a_lagging_listing_never_makes_walvault_overwrite_or_lose_a_wal() {
    let Some((world, server, proxy)) = world("gzip", 2) else {
        return;
    };
    // Objects stay out of listings for 4 s after their upload (an eventually consistent
    // store): every step below until the wait runs inside that window. The conditional
    // create guards the one key; a copy under another codec's extension is a different key,
    // which only the listing would have shown.
    let lag = Duration::from_secs(4);
    proxy.set_list_lag(lag);
    let name = segment_name(1);
    let first = small_segment(&name, 1);
    let other = small_segment(&name, 2);
    let (out, _, _) = put_wal(&world, "pg_wal", &name, &first);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stored_at = Instant::now();
    let stored = object_bytes(&server, &name);

    // A different WAL under the same name, while the listing shows nothing: refused (the
    // conditional create), never stored over the first.
    let (out, _, path) = put_wal(&world, "split-brain", &name, &other);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains("DIFFERENT"), "{}", stderr(&out));
    assert!(Path::new(&path).exists());
    assert!(object_bytes(&server, &name) == stored, "not overwritten");
    // The same WAL again (PostgreSQL retrying after a crash): the refused create is followed
    // by a read of that exact key, which does not lag, so it is recognised as identical (it
    // used to fail until the listing caught up).
    let (out, _, path) = put_wal(&world, "retry", &name, &first);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(Path::new(&path).exists());
    queue_file(&world.incoming().join(&name), &first);
    world.own_all();
    let during = world.walvault(&["archive-wal", SERVER]);
    assert_eq!(during.status.code(), Some(0), "{}", describe(&during));
    assert!(
        file_names(&world.incoming()).is_empty(),
        "dropped as identical"
    );
    // A different WAL from a writer with another codec: its key is another one, which only the
    // listing would have shown, so it is stored. Then the name has two histories, and get-wal
    // refuses to pick one (255, which stops a recovery), rather than serve either.
    let config = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        config.replace("compression = \"gzip\"", "compression = \"zstd\""),
    )
    .expect("config");
    let (out, _, _) = put_wal(&world, "split-brain-zstd", &name, &other);
    assert!(
        stored_at.elapsed() < lag,
        "the steps above ran while the listing lagged: slow machine?"
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let gz = format!("{name}.gz");
    assert!(object_file(&server, &gz) == stored, "not overwritten");

    // The listing catches up: two histories under one name. get-wal refuses to pick one and
    // writes nothing; the first copy is untouched.
    std::thread::sleep(lag.saturating_sub(stored_at.elapsed()) + Duration::from_millis(200));
    assert_eq!(objects(&server).len(), 2, "{:?}", objects(&server));
    assert!(object_file(&server, &gz) == stored, "not overwritten");
    let dest = world.path("restored");
    let out = world.walvault(&["get-wal", SERVER, &name, &dest.display().to_string()]);
    assert_eq!(out.status.code(), Some(255), "{}", describe(&out));
    assert!(
        stderr(&out).contains("must not pick one"),
        "{}",
        stderr(&out)
    );
    assert!(!dest.exists(), "nothing served");
}
