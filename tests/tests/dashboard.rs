//! `walvault serve`: the dashboard in headless Chromium over an archive a real archive run
//! made (with a known gap and a known duplicate), `/metrics` through the Prometheus project's
//! own parser, the API's pages and errors, the bearer token, the Host check that stands in for
//! it on loopback, and clients that misbehave.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use walvault_tests::http::{self, get};
use walvault_tests::webdriver::Browser;
use walvault_tests::{SERVER, World, describe, file_names, profile_dir, s3, serve};

/// The same address on loopback (a server bound to 0.0.0.0 is reached at 127.0.0.1).
fn on_loopback(addr: SocketAddr) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

/// An archive made by real `archive-wal` runs over real WAL: every segment but the third (a
/// gap), then the second again with different content past its page header (a duplicate);
/// then `check` records its results. Returns the segments.
fn archive_with_gap_and_duplicate(world: &World) -> Vec<String> {
    let (stage, segments) = world.real_wal();
    fs::create_dir_all(world.incoming()).expect("incoming");
    for (i, name) in segments.iter().enumerate() {
        if i != 2 {
            fs::copy(stage.join(name), world.incoming().join(name)).expect("queue");
        }
    }
    world.own_all();
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut other = fs::read(stage.join(&segments[1])).expect("read");
    other[100_000] ^= 0xFF;
    fs::write(world.incoming().join(&segments[1]), other).expect("queue the duplicate");
    world.own_all();
    let out = world.walvault(&["archive-wal", SERVER]);
    let errors = file_names(&world.errors());
    assert!(
        errors.len() == 1
            && errors[0].starts_with(&segments[1])
            && errors[0].ends_with(".duplicate"),
        "one duplicate in errors/: {errors:?}\n{}",
        describe(&out)
    );
    let out = world.walvault(&["check", SERVER]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "errors/ fails the check: {}",
        describe(&out)
    );
    let out = world.walvault(&["verify", SERVER]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the gap fails verify: {}",
        describe(&out)
    );
    segments
}

#[test]
fn the_dashboard_shows_the_last_wal_the_gap_and_the_duplicate_in_chromium() {
    let world = World::new("compression = \"zstd\"");
    let segments = archive_with_gap_and_duplicate(&world);
    let served = serve(&world, &["--listen", "127.0.0.1:0"], &[]);
    let browser = Browser::start();
    browser.goto(&format!("http://{}/", served.addr));
    let wait = Duration::from_secs(60);
    let last = browser.wait_for("[data-test=last-wal]", wait);
    assert_eq!(last, vec![segments.last().expect("segments").clone()]);
    let gaps = browser.wait_for("[data-test=gap]", wait);
    assert_eq!(gaps, vec![format!("missing {} (1 segment)", segments[2])]);
    let errors = browser.wait_for("[data-test=error-file]", wait);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&segments[1])
            && errors[0].contains("duplicate")
            && errors[0].contains("content differs from the archived copy"),
        "the duplicate, with its reason: {errors:?}"
    );
    let health = browser.texts("[data-test=health]");
    assert_eq!(health.len(), 1);
    assert!(health[0].eq_ignore_ascii_case("failing"), "{health:?}");
    let reasons = browser.texts("[data-test=reasons]").join("\n");
    assert!(
        reasons.contains("1 segment(s) missing in 1 gap(s)") && reasons.contains("duplicates: 1"),
        "{reasons}"
    );
    let checks = browser.texts("[data-test=checks]").join("\n");
    assert!(
        checks.contains("archiver errors") && checks.contains("FAILED"),
        "the recorded check: {checks}"
    );
    // The recorded verify: how far the archive replays, and the lost segment.
    let verify = browser.texts("[data-test=verify]").join("\n");
    assert!(
        verify.contains(&format!("verified up to {}", segments[1]))
            && verify.contains("1 segment(s) lost"),
        "{verify}"
    );
    let failures = browser.texts("[data-test=verify-failure]");
    assert!(
        failures.len() == 1 && failures[0].contains(&segments[2]),
        "{failures:?}"
    );
    assert!(
        reasons.contains("verify found 1 segment(s) lost"),
        "{reasons}"
    );
    // The strip marks the gap in place: present, missing, present.
    let strip = browser.texts("[data-test=strip]");
    assert_eq!(strip.len(), 1);
    let shot = profile_dir()
        .parent()
        .expect("target dir")
        .join("test-output/dashboard/dashboard.png");
    browser.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());
    assert!(fs::metadata(&shot).expect("screenshot").len() > 10_000);
}

/// Parses Prometheus text with `prometheus_client.parser` from the tests' venv; returns
/// `{sample name: [{labels, value}]}`.
fn parse_prometheus(text: &str) -> Option<Value> {
    let python = s3::tool(
        &s3::python_venv().join("bin/python"),
        "the tests' Python venv",
    )?;
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.setdefault(s.name, []).append({"labels": s.labels, "value": s.value, "type": family.type})
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "the Prometheus parser rejects /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("parser output"))
}

fn sample(parsed: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    parsed[name]
        .as_array()
        .unwrap_or_else(|| panic!("no {name} in {parsed}"))
        .iter()
        .find(|s| labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

/// Sends raw bytes and returns what came back before the server closed (or timed out).
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // The server may close before reading everything (oversized headers): not an error here.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn api_pages_metrics_and_bad_clients() {
    let world = World::new("compression = \"lz4\"\nmax_incoming_wals_queue = 100");
    let segments = archive_with_gap_and_duplicate(&world);
    let served = serve(&world, &["--listen", "127.0.0.1:0"], &[]);
    let addr = served.addr;

    // /api/status: the gap, the duplicate and the last WAL, from the catalogue.
    let status = get(addr, "/api/status");
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    let doc = status.json();
    let pg = &doc["servers"][0];
    assert_eq!(pg["server"], SERVER);
    assert_eq!(pg["health"]["state"], "failing");
    let cat = &pg["catalogue"];
    let archived = segments.len() - 1;
    assert_eq!(cat["segments"], archived);
    assert_eq!(cat["last_archived_wal"], *segments.last().expect("last"));
    assert_eq!(cat["codecs"]["lz4"], archived);
    assert_eq!(cat["timelines"][0]["gaps"][0]["first_missing"], segments[2]);
    assert_eq!(cat["timelines"][0]["gaps"][0]["missing"], 1);
    assert!(cat["compression_ratio"].as_f64().expect("ratio") > 1.5);
    assert_eq!(pg["errors"]["duplicates"], 1);
    assert_eq!(pg["error_files"][0]["kind"], "duplicate");
    assert_eq!(pg["last_check"]["ok"], false);
    assert_eq!(pg["last_verify"]["lost"], 1);
    assert_eq!(pg["last_verify"]["lost_ranges"][0]["first"], segments[2]);
    assert_eq!(pg["last_verify"]["files"], segments.len() - 1);
    assert_eq!(
        get(addr, "/api/status?server=pg").json()["servers"][0]["server"],
        "pg"
    );
    assert_eq!(get(addr, "/api/status?server=nope").status, 404);

    // /api/wals: pages in name order that add up to the catalogue.
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let page = get(addr, &format!("/api/wals?server=pg&limit=2&after={after}")).json();
        assert_eq!(page["total"], archived);
        for w in page["wals"].as_array().expect("wals") {
            names.push(w["name"].as_str().expect("name").to_owned());
        }
        match page["next_after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    let mut expected: Vec<String> = segments
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, s)| s.clone())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(get(addr, "/api/wals?limit=0").status, 400);
    assert_eq!(get(addr, "/api/wals?limit=many").status, 400);
    assert_eq!(get(addr, "/api/wals?server=nope").status, 404);

    // /metrics parses with the Prometheus project's parser, and says what the archive holds.
    let metrics = get(addr, "/metrics");
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    if let Some(parsed) = parse_prometheus(&metrics.text()) {
        let pg = [("server", SERVER)];
        assert_eq!(sample(&parsed, "walvault_missing_segments", &pg), 1.0);
        assert_eq!(sample(&parsed, "walvault_gaps", &pg), 1.0);
        assert_eq!(
            sample(
                &parsed,
                "walvault_archived_files",
                &[("server", SERVER), ("type", "segment")]
            ),
            archived as f64
        );
        assert_eq!(
            sample(
                &parsed,
                "walvault_error_files",
                &[("server", SERVER), ("kind", "duplicate")]
            ),
            1.0
        );
        assert_eq!(
            sample(
                &parsed,
                "walvault_health",
                &[("server", SERVER), ("state", "failing")]
            ),
            1.0
        );
        assert_eq!(sample(&parsed, "walvault_check_ok", &pg), 0.0);
        assert_eq!(sample(&parsed, "walvault_verify_ok", &pg), 0.0);
        assert_eq!(sample(&parsed, "walvault_verify_lost_segments", &pg), 1.0);
        assert_eq!(sample(&parsed, "walvault_verify_errors", &pg), 0.0);
        assert_eq!(
            sample(&parsed, "walvault_verify_files", &pg),
            (segments.len() - 1) as f64
        );
        assert!(
            sample(
                &parsed,
                "walvault_http_requests_total",
                &[("route", "/api/status"), ("code", "200")]
            ) >= 2.0
        );
        assert_eq!(parsed["walvault_http_requests_total"][0]["type"], "counter");
    }

    // Misbehaving clients get an error or a closed connection, and the server carries on.
    assert!(raw_exchange(addr, b"GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400"));
    let mut huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200_000));
    huge.extend(b"\r\n\r\n");
    let answer = raw_exchange(addr, &huge);
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 431")
            || answer.starts_with("HTTP/1.1 400"),
        "oversized headers: {answer:.80}"
    );
    {
        // Half a request, then gone.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /api/sta").expect("write");
    }
    {
        // Gone in the middle of a large response (the dashboard's wasm).
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /walvault_web_ui_bg.wasm HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("write");
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).expect("the start of the response");
        assert!(first.starts_with(b"HTTP/1.1 200"));
    }
    let post = http::request(addr, "POST", "/api/status", &[], Some(b"{}")).expect("POST");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(get(addr, "/nothing-here").status, 404);
    let head = http::request(addr, "HEAD", "/api/status", &[], None).expect("HEAD");
    assert!(head.status == 200 && head.body.is_empty());
    assert_eq!(get(addr, "/healthz").text(), "ok\n");
    assert_eq!(get(addr, "/api/status").status, 200);
    let wasm = get(addr, "/walvault_web_ui_bg.wasm");
    assert_eq!(wasm.header("content-type"), Some("application/wasm"));
    assert!(wasm.body.starts_with(b"\0asm"));
    // Nothing was written: the archive's catalogue is what archive-wal left.
    assert_eq!(world.catalogue().len(), archived);
}

#[test]
fn a_non_loopback_bind_needs_a_token_and_the_api_then_requires_it() {
    let world = World::new("");
    let out = Command::new(&world.bin)
        .arg("-c")
        .arg(&world.config)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("WALVAULT_SERVE_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without a bearer token")
            && stderr.contains("WALVAULT_SERVE_TOKEN"),
        "{stderr}"
    );

    let check = |addr: SocketAddr, token: &str| {
        let addr = on_loopback(addr);
        let bearer = format!("Bearer {token}");
        for path in ["/api/status", "/api/wals", "/metrics"] {
            let denied = get(addr, path);
            assert_eq!(denied.status, 401, "{path} without a token");
            assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
            let wrong = http::request(addr, "GET", path, &[("Authorization", "Bearer nope")], None)
                .expect("GET");
            assert_eq!(wrong.status, 401, "{path} with a wrong token");
            let allowed =
                http::request(addr, "GET", path, &[("Authorization", &bearer)], None).expect("GET");
            assert_eq!(
                allowed.status,
                200,
                "{path} with the token: {}",
                allowed.text()
            );
        }
        // The page itself holds no data: the browser passes the token from the URL fragment.
        assert_eq!(get(addr, "/").status, 200);
    };
    let served = serve(
        &world,
        &["--listen", "0.0.0.0:0"],
        &[("WALVAULT_SERVE_TOKEN", "s3cret-from-env-0123")],
    );
    check(served.addr, "s3cret-from-env-0123");
    drop(served);

    let text = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        text.replacen(
            "[walvault]\n",
            "[walvault]\nserve_token = \"s3cret-from-config\"\n",
            1,
        ),
    )
    .expect("config");
    let served = serve(&world, &["--listen", "0.0.0.0:0"], &[]);
    check(served.addr, "s3cret-from-config");
    // A token also guards a loopback bind once it is configured.
    let served = serve(&world, &["--listen", "127.0.0.1:0"], &[]);
    assert_eq!(get(served.addr, "/api/status").status, 401);
}

/// `GET path` with this `Host` line (none when `None`) and an optional bearer token; returns
/// the status code and the body.
fn get_as_host(
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if let Some(host) = host {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    let answer = raw_exchange(addr, request.as_bytes());
    let code = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:.200}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

#[test]
fn without_a_token_only_loopback_host_names_are_answered() {
    let world = World::new("");
    let served = serve(&world, &["--listen", "127.0.0.1:0"], &[]);
    let addr = served.addr;
    let port = addr.port();
    // A page on evil.example whose name now resolves to 127.0.0.1 (DNS rebinding) sends its
    // own name.
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        for path in ["/api/status", "/metrics", "/api/wals", "/"] {
            let (code, body) = get_as_host(addr, path, Some(&host), None);
            assert_eq!(code, 421, "{path} for Host: {host}: {body}");
            assert!(
                body.contains("answers only to 127.0.0.1, [::1] and localhost")
                    && body.contains("serve_token"),
                "{body}"
            );
        }
    }
    let (code, body) = get_as_host(addr, "/api/status", None, None);
    assert_eq!(code, 421, "no Host at all: {body}");
    for host in [
        "127.0.0.1".to_owned(),
        format!("127.0.0.1:{port}"),
        "localhost".to_owned(),
        format!("LOCALHOST:{port}"),
        "[::1]".to_owned(),
        format!("[::1]:{port}"),
    ] {
        let (code, body) = get_as_host(addr, "/api/status", Some(&host), None);
        assert_eq!(code, 200, "Host: {host}: {body}");
    }
    drop(served);

    // With a token, the token is the guard, whatever name the client used.
    let token = "a-token-of-24-characters";
    let served = serve(
        &world,
        &["--listen", "127.0.0.1:0"],
        &[("WALVAULT_SERVE_TOKEN", token)],
    );
    let host = Some("walvault.example.internal");
    assert_eq!(get_as_host(served.addr, "/api/status", host, None).0, 401);
    assert_eq!(
        get_as_host(served.addr, "/api/status", host, Some(token)).0,
        200
    );
}

/// Runs `walvault serve` and waits at most 20 s for it to exit (a serve that starts is
/// killed, and reported as no exit code).
fn serve_exit(world: &World, envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(&world.bin)
        .arg("-c")
        .arg(&world.config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("WALVAULT_SERVE_TOKEN")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start walvault serve");
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    (code, stderr)
}

#[test]
fn short_or_blank_serve_tokens_are_refused() {
    let world = World::new("");
    for token in [
        "",
        "short",
        "fifteen-chars!!",
        "                    ",
        " \t \n ",
    ] {
        let (code, stderr) = serve_exit(&world, &[("WALVAULT_SERVE_TOKEN", token)]);
        assert_eq!(code, Some(2), "WALVAULT_SERVE_TOKEN={token:?}: {stderr}");
        assert!(
            stderr.contains("WALVAULT_SERVE_TOKEN: the token"),
            "{stderr}"
        );
    }
    let (_, stderr) = serve_exit(&world, &[("WALVAULT_SERVE_TOKEN", "short")]);
    assert!(stderr.contains("use at least 16"), "{stderr}");

    let text = fs::read_to_string(&world.config).expect("config");
    for token in ["short", "                    ", "fifteen-chars!!"] {
        fs::write(
            &world.config,
            text.replacen(
                "[walvault]\n",
                &format!("[walvault]\nserve_token = \"{token}\"\n"),
                1,
            ),
        )
        .expect("config");
        let (code, stderr) = serve_exit(&world, &[]);
        assert_eq!(code, Some(2), "serve_token = {token:?}: {stderr}");
        assert!(
            stderr.contains("[walvault] serve_token: the token"),
            "{stderr}"
        );
        let check = world.walvault(&["config", "check"]);
        assert_eq!(check.status.code(), Some(2), "{}", describe(&check));
    }
}

#[test]
fn a_stalled_archive_wal_is_reported_not_skipped_in_silence() {
    let world = World::new("wal_segment_size = \"1MB\"");
    fs::create_dir_all(world.incoming()).expect("incoming");
    world.own_all();
    // A run that took the lock 20 minutes ago and has shown no progress since (as one blocked
    // on a hung file system would).
    let lock_path = world.home.join(format!(".{SERVER}-archive-wal.lock"));
    let lock = fs::File::create(&lock_path).expect("lock file");
    lock.lock().expect("flock");
    writeln!(&lock, "4242").expect("pid");
    lock.set_modified(std::time::SystemTime::now() - Duration::from_secs(20 * 60))
        .expect("mtime");
    world.own_all();

    let out = world.walvault(&["archive-wal", SERVER]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(pid 4242)") && stderr.contains("stalled"),
        "{}",
        describe(&out)
    );
    let out = world.walvault(&["check", SERVER]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("archive-wal: FAILED"),
        "{}",
        describe(&out)
    );
    let served = serve(&world, &["--listen", "127.0.0.1:0"], &[]);
    let doc = get(served.addr, "/api/status").json();
    let pg = &doc["servers"][0];
    assert_eq!(pg["health"]["state"], "failing", "{pg}");
    assert!(
        pg["health"]["reasons"].as_array().is_some_and(|r| r
            .iter()
            .any(|r| r.as_str().unwrap_or("").contains("stalled"))),
        "{pg}"
    );
    drop(served);

    // Released (the run ended): archiving goes on.
    drop(lock);
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
}
