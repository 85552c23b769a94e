//! The log file (`log_file`, `log_level` in `[walvault]`): one line per archived, rejected and
//! failed file with the server, the WAL and the reason, whatever the terminal output; reopened
//! on SIGHUP by long-running commands, as logrotate expects.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use walvault_tests::{SERVER, World, describe, queue_file, serve, small_segment};

fn seg(n: u32) -> String {
    format!("00000001000000000000{n:04X}")
}

fn lines_with(log: &Path, needle: &str) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_log_file_has_a_line_per_file_and_reopens_on_sighup() {
    let world = World::new("");
    let log = world.path("log/walvault.log");
    fs::create_dir_all(log.parent().expect("dir")).expect("log dir");
    fs::write(
        &world.config,
        format!(
            "[walvault]\nhome = \"{}\"\nlog_file = \"{}\"\nlog_level = \"debug\"\n\n\
             [{SERVER}]\ncompression = \"gzip\"\nwal_segment_size = \"1MB\"\n",
            world.home.display(),
            log.display()
        ),
    )
    .expect("config");
    let incoming = world.home.join(SERVER).join("incoming");
    fs::create_dir_all(&incoming).expect("incoming");
    queue_file(&incoming.join(seg(1)), &small_segment(&seg(1), 1));
    queue_file(&incoming.join(seg(2)), &small_segment(&seg(2), 2));
    world.own_all();
    let out = world.walvault(&["archive-wal", SERVER]);
    assert!(out.status.success(), "{}", describe(&out));
    // Quiet on the terminal under cron, as before; the log has a line per file.
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    for n in [1, 2] {
        let found = lines_with(&log, &format!("wal=\"{}\"", seg(n)));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains(" INFO archive-wal[")
                && found[0].contains("archived")
                && found[0].contains(&format!("server=\"{SERVER}\"")),
            "{found:?}"
        );
    }
    assert_eq!(
        fs::metadata(&log).expect("log").permissions().mode() & 0o777,
        0o600,
        "private, as everything walvault writes (0640 with group_access)"
    );

    // Rejected: a different WAL under an archived name, and a name that is no WAL (with a
    // line break, which must not forge a second line).
    queue_file(&incoming.join(seg(2)), &small_segment(&seg(2), 9));
    queue_file(
        &incoming.join("00000001000000000000000Z\nINFO forged"),
        b"junk",
    );
    world.own_all();
    let out = world.walvault(&["archive-wal", SERVER]);
    let rejected = lines_with(&log, "WARNING archive-wal[");
    assert_eq!(rejected.len(), 2, "{rejected:?}\n{}", describe(&out));
    assert!(
        rejected.iter().any(|l| l.contains(&seg(2))
            && l.contains("rejected: a different WAL")
            && l.contains("errors_file=")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|l| l.contains("rejected") && l.contains("INFO forged")),
        "{rejected:?}"
    );
    assert!(
        !fs::read_to_string(&log)
            .expect("log")
            .lines()
            .any(|l| l.starts_with("INFO forged")),
        "a file name forged a line"
    );

    // Failed: put-wal of a file that is not there.
    let out = world.walvault(&["put-wal", SERVER, "/nonexistent/000000010000000000000009"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let failed = lines_with(&log, "ERROR put-wal[");
    assert!(
        failed
            .iter()
            .any(|l| l.contains("000000010000000000000009") && l.contains("reason=")),
        "{failed:?}\n{}",
        describe(&out)
    );

    // A long-running command reopens the file on SIGHUP: logrotate renames it, then signals.
    let served = serve(&world, &["--listen", "127.0.0.1:0"], &[]);
    let started = std::time::Instant::now();
    while lines_with(&log, "serving").is_empty() {
        assert!(started.elapsed().as_secs() < 10, "no 'serving' line");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let rotated = world.path("log/walvault.log.1");
    fs::rename(&log, &rotated).expect("rotate");
    let pid = served.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut stream = std::net::TcpStream::connect(served.addr).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let started = std::time::Instant::now();
    while lines_with(&log, "route=/healthz").is_empty() {
        assert!(
            started.elapsed().as_secs() < 10,
            "the request was not logged to the reopened file; rotated file:\n{}",
            fs::read_to_string(&rotated).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(lines_with(&rotated, "route=/healthz").is_empty());
    assert!(!lines_with(&rotated, "serving").is_empty());
}
