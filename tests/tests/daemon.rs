//! `walvault daemon` with real PostgreSQL 15 and pg_receivewal: archiving as files arrive,
//! restarting what dies, stopping and reloading on signals (issue 21).
//!
//! Every daemon here sweeps once an hour, so what it archives within the test was archived
//! because inotify reported it.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use walvault_tests::{
    SERVER, World, assert_contiguous, child_pid, describe, file_names, pgbench_in_background,
    pgbench_load, queue_file, small_segment, switch_and_wait_streamed,
};

const SLOT: &str = "walvault";

/// A running `walvault daemon`, stopped on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
    lock: PathBuf,
}

impl Daemon {
    fn start(world: &World, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(world, &["-c".as_ref(), world.config.as_ref()], args, envs)
    }

    /// A daemon whose configuration flag is `config`.
    fn start_on(
        world: &World,
        config: &[&std::ffi::OsStr],
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Daemon {
        let log = world.path(&format!(
            "daemon-{}.log",
            file_names(world.dir.path()).len()
        ));
        let file = fs::File::create(&log).expect("log");
        let child = world
            .run_as
            .command(&world.bin)
            .args(config)
            .args(["daemon", "--sweep", "3600"])
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start walvault daemon");
        let daemon = Daemon {
            child,
            log,
            lock: world.home.join(".walvault-daemon.lock"),
        };
        daemon.wait_for_log("walvault daemon (pid", Duration::from_secs(30));
        daemon
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, text: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log_text().contains(text) {
            assert!(
                start.elapsed() < timeout,
                "no {text:?} in the daemon's output:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon itself (runuser's child), from its lock file.
    fn pid(&self) -> u32 {
        lock_pid(&self.lock).expect("the daemon holds its lock")
    }

    fn signal(&self, signal: &str) {
        kill(signal, self.pid());
    }

    /// Waits for the exit (`timeout` at most); its exit code.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not exit:\n{}", self.log_text());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = lock_pid(&self.lock) {
                kill("-TERM", pid);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(40) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lock_pid(path: &std::path::Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits until `what` holds (`timeout` at most); how long it took.
fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The process has exited (a zombie no one reaped yet counts).
fn gone(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

fn catalogued(world: &World, name: &str) -> bool {
    world.catalogue().iter().any(|e| e.name == name)
}

#[test]
fn archive_command_drops_are_archived_as_they_arrive_and_serve_shows_them() {
    let world = World::new("compression = \"zstd\"");
    let incoming = world.incoming();
    fs::create_dir_all(&incoming).expect("incoming");
    world.own_all();
    // Barman's archive_command: copy under a hidden name, then rename into place.
    let mut primary = world.cluster("primary");
    primary
        .configure(&format!(
            "wal_level = replica\narchive_mode = on\nmax_wal_size = 64MB\n\
             archive_command = 'cp %p {0}/.%f.tmp && mv {0}/.%f.tmp {0}/%f'",
            incoming.display()
        ))
        .expect("configure");
    primary.start().expect("start");
    // A free loopback port for the daemon's serve.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let daemon = Daemon::start(&world, &["--serve", &addr], &[]);

    pgbench_load(&primary, 1, 100);
    let mut latencies = Vec::new();
    let mut last = String::new();
    for _ in 0..3 {
        let closed = primary
            .query_text("SELECT pg_walfile_name(pg_current_wal_lsn())")
            .expect("current wal");
        primary
            .execute("SELECT pg_switch_wal(); SELECT txid_current();")
            .expect("switch");
        // From PostgreSQL handing the segment over (its rename into incoming/) to the
        // durable catalogue line.
        wait_until(
            &format!("{closed} in incoming/"),
            Duration::from_secs(60),
            || incoming.join(&closed).exists() || catalogued(&world, &closed),
        );
        let took = wait_until(
            &format!("{closed} catalogued"),
            Duration::from_secs(20),
            || catalogued(&world, &closed),
        );
        latencies.push(took);
        last = closed;
    }
    assert_contiguous(&world, &last);
    // PostgreSQL may have handed over another segment meanwhile: it goes too.
    wait_until("incoming/ drained", Duration::from_secs(20), || {
        file_names(&incoming).is_empty()
    });
    println!("incoming/ to catalogue: {latencies:?}");

    // check ran at start, and serve answers with the archive's state.
    wait_until("last-check.json", Duration::from_secs(30), || {
        world
            .home
            .join(SERVER)
            .join("meta")
            .join("last-check.json")
            .exists()
    });
    let status = http_get(&addr, "/api/status");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(status.contains(&last), "{status}");
    // A daemon killed outright (the OOM killer, kill -9 outside systemd): its serve leaves
    // too, rather than hold the port the next daemon's needs.
    kill("-KILL", daemon.pid());
    wait_until(
        "serve gone with the daemon",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(&addr).is_err(),
    );
    drop(daemon);
    primary.stop("fast").expect("stop");
}

fn http_get(addr: &str, path: &str) -> String {
    let start = Instant::now();
    loop {
        match std::net::TcpStream::connect(addr) {
            Ok(mut stream) => {
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )
                .expect("request");
                let mut response = String::new();
                stream.read_to_string(&mut response).expect("response");
                return response;
            }
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(30), "{addr}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn killed_receivers_are_restarted_and_streaming_leaves_no_gap() {
    let world = World::new("compression = \"lz4\"");
    let mut primary = world.cluster("primary");
    primary
        .configure("wal_level = replica\nmax_wal_size = 64MB")
        .expect("configure");
    primary.start().expect("start");
    world.add_config(&format!(
        "streaming_archiver = true\narchiver = false\nslot_name = \"{SLOT}\"\n\
         create_slot = \"auto\"\nconninfo = \"{}\"",
        primary.conninfo()
    ));
    let daemon = Daemon::start(&world, &[], &[]);
    let receive_wal_lock = world.home.join(format!(".{SERVER}-receive-wal.lock"));
    let receiver = || lock_pid(&receive_wal_lock).and_then(|p| child_pid(p, "pg_receivewal"));
    wait_until("pg_receivewal", Duration::from_secs(60), || {
        receiver().is_some()
    });
    primary
        .pgbench(&["-i", "-s", "2", "-q"])
        .expect("pgbench -i");
    let first = switch_and_wait_streamed(&world, &primary);
    wait_until(
        &format!("{first} archived"),
        Duration::from_secs(30),
        || catalogued(&world, &first),
    );

    // pg_receivewal killed under load: receive-wal starts it again.
    let load = pgbench_in_background(&world, &primary, 6);
    std::thread::sleep(Duration::from_secs(1));
    let before = receiver().expect("pg_receivewal");
    kill("-KILL", before);
    wait_until("a new pg_receivewal", Duration::from_secs(60), || {
        receiver().is_some_and(|p| p != before)
    });
    // receive-wal itself killed: the daemon starts it again, and the new one stops the
    // orphaned pg_receivewal before streaming.
    let walvault_receiver = lock_pid(&receive_wal_lock).expect("receive-wal");
    let orphan = receiver().expect("pg_receivewal");
    kill("-KILL", walvault_receiver);
    wait_until("a new receive-wal", Duration::from_secs(60), || {
        lock_pid(&receive_wal_lock).is_some_and(|p| p != walvault_receiver)
            && receiver().is_some_and(|p| p != orphan)
    });
    load.join().expect("load");
    let last = switch_and_wait_streamed(&world, &primary);
    wait_until(&format!("{last} archived"), Duration::from_secs(30), || {
        catalogued(&world, &last)
    });
    assert_contiguous(&world, &last);
    assert!(
        !std::path::Path::new(&format!("/proc/{orphan}")).exists(),
        "the orphan pg_receivewal still runs"
    );
    let log = daemon.log_text();
    assert!(
        log.contains(&format!(
            "receive-wal {SERVER} was killed by signal 9; restarting in"
        )),
        "{log}"
    );
    // The daemon killed outright (the OOM killer, kill -9 outside systemd): receive-wal
    // notices, stops pg_receivewal and frees the slot, rather than hold the slot and the lock
    // the next daemon's receive-wal needs.
    let walvault_receiver = lock_pid(&receive_wal_lock).expect("receive-wal");
    kill("-KILL", daemon.pid());
    wait_until(
        "receive-wal gone with the daemon",
        Duration::from_secs(30),
        || gone(walvault_receiver),
    );
    drop(daemon);
    wait_until("the slot released", Duration::from_secs(30), || {
        primary
            .query_text(&format!(
                "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
            ))
            .is_ok_and(|a| a == "false")
    });
    primary.stop("fast").expect("stop");
}

/// 1 MiB segments in incoming/: their names and contents.
fn queue_segments(world: &World, first: u32, count: u32) -> Vec<(String, Vec<u8>)> {
    let incoming = world.incoming();
    fs::create_dir_all(&incoming).expect("incoming");
    let segments: Vec<(String, Vec<u8>)> = (first..first + count)
        .map(|n| {
            let name = format!("00000001000000000000{n:04X}");
            let data = small_segment(&name, 3);
            (name, data)
        })
        .collect();
    for (name, data) in &segments {
        queue_file(&incoming.join(name), data);
    }
    world.own_all();
    segments
}

/// Every segment is archived exactly once with its own content.
fn assert_all_archived(world: &World, segments: &[(String, Vec<u8>)]) {
    let catalogue = world.catalogue();
    for (name, data) in segments {
        assert_eq!(
            catalogue.iter().filter(|e| &e.name == name).count(),
            1,
            "{name} catalogued once"
        );
        let out_path = world.path(&format!("restored-{name}"));
        let out = world.walvault(&["get-wal", SERVER, name, out_path.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(fs::read(&out_path).expect("restored") == *data, "{name}");
    }
}

#[test]
fn sigterm_mid_batch_loses_nothing() {
    let world = World::new("compression = \"gzip\"\nwal_segment_size = \"1MB\"\njobs = 1");
    // Each file takes 150 ms to store: SIGTERM lands in the middle of a batch.
    let slow = [("WALVAULT_PAUSE_AT", "file-synced:150")];
    let segments = queue_segments(&world, 1, 30);
    let mut daemon = Daemon::start(&world, &[], &slow);
    wait_until("a few archived", Duration::from_secs(30), || {
        world.catalogue().len() >= 3
    });
    // One SIGTERM: the running archive-wal finishes its batch, then the daemon leaves.
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(40)), Some(0));
    assert!(
        file_names(&world.incoming()).is_empty(),
        "the batch was finished: {:?}",
        file_names(&world.incoming())
    );
    assert_all_archived(&world, &segments);
    let log = daemon.log_text();
    assert!(
        log.contains("stopping: waiting for running children"),
        "{log}"
    );
    assert!(log.contains("walvault daemon stopped"), "{log}");

    // Two: the run is stopped mid-batch; what it had not archived stays queued, and the next
    // daemon archives it.
    let more = queue_segments(&world, 31, 30);
    let mut daemon = Daemon::start(&world, &[], &slow);
    wait_until("a few more archived", Duration::from_secs(30), || {
        world.catalogue().len() >= segments.len() + 3
    });
    daemon.signal("-TERM");
    std::thread::sleep(Duration::from_millis(200));
    daemon.signal("-TERM");
    assert_eq!(daemon.wait(Duration::from_secs(40)), Some(0));
    let log = daemon.log_text();
    assert!(
        log.contains("archive-wal pg still runs: stopping it; its files stay queued"),
        "{log}"
    );
    let queued = file_names(&world.incoming())
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .count();
    assert!(queued > 0, "the second signal stopped the batch");
    assert_eq!(
        world.catalogue().len() + queued,
        segments.len() + more.len(),
        "each file is archived or still queued"
    );
    let _daemon = Daemon::start(&world, &[], &[]);
    wait_until("the rest archived", Duration::from_secs(60), || {
        world.catalogue().len() == segments.len() + more.len()
    });
    assert_all_archived(&world, &[segments, more].concat());
}

#[test]
fn sighup_reloads_the_configuration_and_reopens_the_log() {
    let world = World::new("wal_segment_size = \"1MB\"");
    let log_file = world.path("walvault.log");
    let config = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        config.replacen(
            "[walvault]\n",
            &format!("[walvault]\nlog_file = \"{}\"\n", log_file.display()),
            1,
        ),
    )
    .expect("config");
    let first = queue_segments(&world, 1, 1);
    let daemon = Daemon::start(&world, &[], &[]);
    wait_until("the first archived", Duration::from_secs(30), || {
        world.catalogue().len() == 1
    });

    // A second server appears in the configuration: SIGHUP watches its queue.
    let good = fs::read_to_string(&world.config).expect("config");
    let other_home = world.home.join("other");
    let with_other = format!("{good}\n[other]\nwal_segment_size = \"1MB\"\n");
    fs::write(&world.config, &with_other).expect("config");
    let rotated = world.path("walvault.log.1");
    fs::rename(&log_file, &rotated).expect("rotate");
    daemon.signal("-HUP");
    daemon.wait_for_log("configuration reloaded: other, pg", Duration::from_secs(30));
    // Its first archive-wal may not have created its queue yet; the daemon watches it once
    // it exists.
    let other_incoming = other_home.join("incoming");
    fs::create_dir_all(&other_incoming).expect("other/incoming");
    let name = "000000010000000000000007";
    queue_file(&other_incoming.join(name), &small_segment(name, 5));
    world.own_all();
    let other_catalogue = other_home.join("wals").join("other-xlog.db");
    wait_until("other's WAL archived", Duration::from_secs(20), || {
        fs::read_to_string(&other_catalogue).is_ok_and(|c| c.contains(name))
    });
    // The run logs the file once its catalogue line is durable: a moment after.
    let new_log = || fs::read_to_string(&log_file).unwrap_or_default();
    wait_until("the new log names the WAL", Duration::from_secs(10), || {
        new_log().contains(name)
    });
    assert!(
        new_log().contains("configuration reloaded"),
        "{}",
        new_log()
    );
    let old_log = fs::read_to_string(&rotated).expect("rotated log");
    assert!(old_log.contains(&first[0].0), "{old_log}");
    assert!(!old_log.contains(name), "{old_log}");

    // A broken configuration is refused, and the daemon goes on with the running one.
    let copy = break_and_reload(
        &world,
        &daemon,
        &world.config,
        &format!("{good}\n[broken\n"),
    );
    assert_eq!(copy, with_other);
    let later = queue_segments(&world, 2, 1);
    wait_until("pg's WAL still archived", Duration::from_secs(20), || {
        world.catalogue().len() == 2
    });
    fs::write(&world.config, &good).expect("config");
    assert_all_archived(&world, &[first, later].concat());
    // Only one daemon per configuration.
    let out = world.walvault(&["daemon"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another walvault daemon (pid"),
        "{}",
        describe(&out)
    );
}

/// Writes `broken` into the configuration file `file` and sends SIGHUP: the daemon refuses it
/// and keeps its children on what it loaded, a private copy; that copy's text.
fn break_and_reload(
    world: &World,
    daemon: &Daemon,
    file: &std::path::Path,
    broken: &str,
) -> String {
    fs::write(file, broken).expect("configuration");
    daemon.signal("-HUP");
    daemon.wait_for_log(
        "configuration not reloaded, the running one is kept",
        Duration::from_secs(30),
    );
    let copy = world.home.join(".walvault-daemon.toml");
    assert_eq!(
        fs::metadata(&copy).expect("the children's copy").mode() & 0o777,
        0o600
    );
    fs::read_to_string(&copy).expect("copy")
}

/// The daemon's children read its private copy, but report the operator's file: hooks get
/// it as `BARMAN_CONFIGURATION`, and `check` checks its mode (a world-readable file with a
/// secret in it fails), not the copy's.
#[test]
fn the_children_report_the_operators_file_not_the_daemons_copy() {
    let world = World::new("wal_segment_size = \"1MB\"");
    let (hook, seen) = world.recording_hook("$BARMAN_SEGMENT $BARMAN_CONFIGURATION");
    world.add_config(&format!("post_archive_script = \"{}\"", hook.display()));
    let config = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        config.replacen(
            "[walvault]\n",
            "[walvault]\nserve_token = \"a-token-of-24-characters\"\n",
            1,
        ),
    )
    .expect("config");
    fs::set_permissions(
        &world.config,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let segments = queue_segments(&world, 1, 1);
    let _daemon = Daemon::start(&world, &[], &[]);
    let line = format!("{} {}", segments[0].0, world.config.display());
    wait_until("the hook ran", Duration::from_secs(30), || {
        fs::read_to_string(&seen).is_ok_and(|s| s.contains(&line))
    });
    let report = world.home.join(SERVER).join("meta").join("last-check.json");
    wait_until("last-check.json", Duration::from_secs(30), || {
        report.exists()
    });
    let report = fs::read_to_string(&report).expect("report");
    assert!(
        report.contains(&format!("{} (644) holds secrets", world.config.display())),
        "{report}"
    );
}

/// With Barman's files (`--barman-config`), the children read the daemon's translated
/// copy too: a broken edit and SIGHUP leave them working, and hooks still get Barman's file.
#[test]
fn a_barman_configured_daemon_keeps_its_children_on_what_it_loaded() {
    let world = World::new("wal_segment_size = \"1MB\"");
    let (hook, seen) = world.recording_hook("$BARMAN_SEGMENT $BARMAN_CONFIGURATION");
    let conf = world.path("barman.conf");
    let barman = format!(
        "[barman]\nbarman_home = {}\ncompression = gzip\npost_archive_script = {}\n\n\
         [{SERVER}]\ndescription = \"archive_command into incoming\"\n\
         conninfo = host=/nonexistent dbname=postgres\nbackup_method = postgres\n\
         archiver = on\nwal_segment_size = 1MB\n",
        world.home.display(),
        hook.display()
    );
    fs::write(&conf, &barman).expect("barman.conf");
    let first = queue_segments(&world, 1, 1);
    let daemon = Daemon::start_on(
        &world,
        &["--barman-config".as_ref(), conf.as_ref()],
        &[],
        &[],
    );
    wait_until("the first archived", Duration::from_secs(30), || {
        world.catalogue().len() == 1
    });
    let line = format!("{} {}", first[0].0, conf.display());
    wait_until("the hook ran", Duration::from_secs(30), || {
        fs::read_to_string(&seen).is_ok_and(|s| s.contains(&line))
    });

    // An edit that breaks the file: refused, and the children keep the loaded translation.
    let copy = break_and_reload(&world, &daemon, &conf, &format!("{barman}[broken\n"));
    assert!(
        copy.contains(&format!("[{SERVER}]")),
        "the copy is the translation"
    );
    let later = queue_segments(&world, 2, 1);
    wait_until("WAL still archived", Duration::from_secs(20), || {
        world.catalogue().len() == 2
    });
    // The same archive, read through the TOML configuration of the same home.
    assert_all_archived(&world, &[first, later].concat());
}

/// Runs `cmd` (stdout and stderr piped), killing it after `limit`: its output.
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn walvault");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{cmd:?} still runs after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// `WALVAULT_DAEMON_PID` from outside: a value that is no pid is ignored, and a pid that is
/// not the process's parent only stops it, as SIGTERM would.
#[test]
fn a_hostile_daemon_pid_is_ignored_or_only_stops_the_child() {
    let world = World::new("wal_segment_size = \"1MB\"");
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    };
    let serve = |value: &std::ffi::OsStr| {
        let addr = free_port();
        let mut cmd = world.walvault_command();
        cmd.args(["serve", "--listen", &addr.to_string()])
            .env("WALVAULT_DAEMON_PID", value)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        (addr, cmd.spawn().expect("serve"))
    };
    use std::os::unix::ffi::OsStrExt as _;
    let ignored: Vec<(std::net::SocketAddr, Child)> = [
        b"".as_slice(),
        b"not-a-pid",
        b"-1",
        b"0",
        b"99999999999999999999",
        b"\xff\xfe",
    ]
    .iter()
    .map(|v| serve(std::ffi::OsStr::from_bytes(v)))
    .collect();
    // pid 1 is never this serve's parent (runuser is).
    let (_, mut stopped) = serve("1".as_ref());
    wait_until("serve stopped", Duration::from_secs(10), || {
        stopped.try_wait().expect("wait").is_some()
    });
    // Longer than the children's half-second poll of their parent.
    std::thread::sleep(Duration::from_secs(1));
    for (addr, mut child) in ignored {
        wait_until(&format!("serve on {addr}"), Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(child.try_wait().expect("wait").is_none(), "{addr}");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `--config-origin` from outside only changes which file is reported and checked: a FIFO is
/// never opened (no hang), a link is followed for its mode, a non-UTF-8 or over-long name is
/// reported as it is, and the configuration's secret is never printed.
#[test]
fn a_hostile_config_origin_misleads_only_its_own_report() {
    use std::os::unix::ffi::OsStrExt as _;
    let world = World::new("wal_segment_size = \"1MB\"");
    let token = "a-secret-token-of-24-chrs";
    let config = fs::read_to_string(&world.config).expect("config");
    fs::write(
        &world.config,
        config.replacen(
            "[walvault]\n",
            &format!("[walvault]\nserve_token = \"{token}\"\n"),
            1,
        ),
    )
    .expect("config");
    let fifo = world.path("fifo");
    let status = Command::new("mkfifo")
        .args(["-m", "0644"])
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let link = world.path("link");
    std::os::unix::fs::symlink(&world.config, &link).expect("symlink");
    let non_utf8 = world
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"conf-\xff\xfe.toml"));
    fs::write(&non_utf8, "").expect("non-UTF-8 name");
    let long = world.path(&"x".repeat(5000));
    world.own_all();
    for origin in [&fifo, &link, &non_utf8, &long] {
        for args in [&["config", "check"][..], &["check", SERVER]] {
            let mut cmd = world.walvault_command();
            cmd.arg("--config-origin").arg(origin).args(args);
            let out = output_within(cmd, Duration::from_secs(30));
            let text = describe(&out);
            assert!(matches!(out.status.code(), Some(0 | 1)), "{text}");
            assert!(!text.contains(token), "{text}");
        }
    }
    // The FIFO (0644) is what was claimed to be the file: reported as readable by everyone.
    let mut cmd = world.walvault_command();
    cmd.arg("--config-origin")
        .arg(&fifo)
        .args(["check", SERVER]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(644) holds secrets"),
        "{}",
        describe(&out)
    );
}
