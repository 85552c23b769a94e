//! Cross-crate integration and end-to-end tests for walvault. The tests live in `tests/tests/`;
//! this library is their harness: a work directory an unprivileged PostgreSQL can use, the
//! `walvault` binary copied where that user can run it, and helpers to drive both.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod crash;
pub mod http;
pub mod s3;
pub mod webdriver;
use walvault::pgcluster::{Cluster, RunAs};
use walvault_core::catalogue::{CatalogueEntry, parse_catalogue};
use walvault_core::wal::{SegmentSize, WalFileName};

/// PostgreSQL 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The unprivileged OS user tests run PostgreSQL and walvault as.
pub const OS_USER: &str = "walvault-test";
/// The server name used in test configurations.
pub const SERVER: &str = "pg";

/// The `walvault` binary built for this test run (next to the test executable's `deps/`).
pub fn walvault_exe() -> PathBuf {
    built_exe("walvault")
}

/// The `walvault-wasi` runner built for this test run.
pub fn walvault_wasi_exe() -> PathBuf {
    built_exe("walvault-wasi")
}

/// The target profile directory (`target/debug`) of this test run.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .to_owned()
}

fn built_exe(name: &str) -> PathBuf {
    let bin = profile_dir().join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p {name})",
        bin.display()
    );
    bin
}

/// A test's world: a work directory owned by the test user, a config, a copy of walvault.
#[derive(Debug)]
pub struct World {
    /// The work directory (removed at the end).
    pub dir: TempDir,
    /// Who runs PostgreSQL and walvault.
    pub run_as: RunAs,
    /// The walvault binary the test user can execute.
    pub bin: PathBuf,
    /// The walvault configuration file.
    pub config: PathBuf,
    /// walvault's home (per-server directories under it).
    pub home: PathBuf,
}

impl World {
    /// A world whose server section `[pg]` holds `server_conf` (TOML lines).
    pub fn new(server_conf: &str) -> World {
        let dir = tempfile::Builder::new()
            .prefix("walvault-e2e-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let run_as = RunAs::for_root(OS_USER).expect("test OS user");
        let bin = dir.path().join("walvault");
        fs::copy(walvault_exe(), &bin).expect("copy walvault");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        let home = dir.path().join("home");
        fs::create_dir_all(&home).expect("home");
        let world = World {
            config: dir.path().join("walvault.toml"),
            dir,
            run_as,
            bin,
            home,
        };
        world.write_config(server_conf);
        world.run_as.own(world.dir.path()).expect("chown");
        world
    }

    /// Rewrites the configuration: `[walvault]` with this world's home, then `[pg]` holding
    /// `server_conf` (TOML lines).
    pub fn write_config(&self, server_conf: &str) {
        fs::write(
            &self.config,
            format!(
                "[walvault]\nhome = \"{}\"\n\n[{SERVER}]\n{server_conf}\n",
                self.home.display()
            ),
        )
        .expect("config");
    }

    /// Starts the cluster in the data directory `name` (a base backup) in archive recovery
    /// with `settings` (its `restore_command` and targets), and waits until it has left
    /// recovery.
    pub fn recover(&self, name: &str, settings: &str, what: &str, timeout: Duration) -> Cluster {
        let mut cluster = self.existing_cluster(name);
        cluster.configure(settings).expect("configure");
        fs::write(cluster.data.join("recovery.signal"), b"").expect("recovery.signal");
        self.own_all();
        cluster.start().expect("start the recovering cluster");
        cluster
            .wait_for(what, timeout, |c| {
                Ok(c.query_text("SELECT pg_is_in_recovery()::text")? == "false")
            })
            .expect("recovery ended");
        cluster
    }

    /// A hook script `hook.sh` that appends a line of `fields` (shell words, e.g.
    /// `$BARMAN_SEGMENT`) to `hooks.log` each time it runs: the script and the log.
    pub fn recording_hook(&self, fields: &str) -> (PathBuf, PathBuf) {
        let log = self.path("hooks.log");
        let hook = self.path("hook.sh");
        fs::write(
            &hook,
            format!("#!/bin/sh\necho \"{fields}\" >> {}\n", log.display()),
        )
        .expect("hook");
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).expect("chmod");
        (hook, log)
    }

    /// A path inside the work directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The server's directories.
    pub fn incoming(&self) -> PathBuf {
        self.home.join(SERVER).join("incoming")
    }
    /// `errors/`.
    pub fn errors(&self) -> PathBuf {
        self.home.join(SERVER).join("errors")
    }
    /// `streaming/`.
    pub fn streaming(&self) -> PathBuf {
        self.home.join(SERVER).join("streaming")
    }
    /// `wals/`.
    pub fn wals(&self) -> PathBuf {
        self.home.join(SERVER).join("wals")
    }

    /// Appends lines to the `[pg]` section (it is the last section of the file).
    pub fn add_config(&self, lines: &str) {
        let mut text = fs::read_to_string(&self.config).expect("config");
        text.push_str(lines);
        text.push('\n');
        fs::write(&self.config, text).expect("config");
    }

    /// A walvault command line, for archive_command / restore_command.
    pub fn command_line(&self, args: &str) -> String {
        format!("{} -c {} {args}", self.bin.display(), self.config.display())
    }

    /// Copies `walvault-wasi` into the work directory (where the test user can run it) and
    /// returns its path. Its compile cache is the work directory's `wasi-cache/`.
    pub fn install_wasi(&self) -> PathBuf {
        let bin = self.path("walvault-wasi");
        if !bin.exists() {
            fs::copy(walvault_wasi_exe(), &bin).expect("copy walvault-wasi");
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
            fs::create_dir_all(self.path("wasi-cache")).expect("cache dir");
            self.own_all();
        }
        bin
    }

    /// A walvault-wasi command line (for restore_command).
    pub fn wasi_command_line(&self, args: &str) -> String {
        format!(
            "{} -c {} --cache-dir {} {args}",
            self.install_wasi().display(),
            self.config.display(),
            self.path("wasi-cache").display()
        )
    }

    /// Runs walvault-wasi as the test user with this world's configuration and compile cache.
    pub fn walvault_wasi(&self, args: &[&str]) -> Output {
        let mut cmd = self.run_as.command(self.install_wasi());
        cmd.arg("-c")
            .arg(&self.config)
            .arg("--cache-dir")
            .arg(self.path("wasi-cache"))
            .args(args);
        cmd.output().expect("run walvault-wasi")
    }

    /// Runs walvault as the test user.
    pub fn walvault(&self, args: &[&str]) -> Output {
        self.walvault_command()
            .args(args)
            .output()
            .expect("run walvault")
    }

    /// walvault as the test user with this world's configuration (`-c`), for a test to add
    /// its arguments, environment or pipes to.
    pub fn walvault_command(&self) -> Command {
        let mut cmd = self.run_as.command(&self.bin);
        cmd.arg("-c").arg(&self.config);
        cmd
    }

    /// A new cluster (initdb) with its socket in the work directory.
    pub fn cluster(&self, name: &str) -> Cluster {
        self.cluster_initdb(name, &[])
    }

    /// A new cluster with 1 MiB segments (`initdb --wal-segsize=1`): many segments from little
    /// WAL. Configure `wal_segment_size = "1MB"` for walvault.
    pub fn small_segment_cluster(&self, name: &str) -> Cluster {
        self.cluster_initdb(name, &["--wal-segsize=1"])
    }

    fn cluster_initdb(&self, name: &str, extra_initdb: &[&str]) -> Cluster {
        Cluster::init(
            Path::new(PG_BIN),
            &self.run_as,
            &self.path(name),
            &self.path("sock"),
            extra_initdb,
        )
        .expect("initdb")
    }

    /// The settings that make a cluster archive through `walvault put-wal` (a replica WAL
    /// level, `archive_mode = on`, the `archive_command`).
    pub fn put_wal_archiving(&self) -> String {
        format!(
            "wal_level = replica\narchive_mode = on\narchive_command = '{}'\n",
            self.command_line(&format!("put-wal {SERVER} %p"))
        )
    }

    /// A started primary whose `archive_command` is `walvault put-wal`.
    pub fn archiving_primary(&self) -> Cluster {
        let mut primary = self.cluster("primary");
        primary
            .configure(&format!("{}max_wal_size = 64MB", self.put_wal_archiving()))
            .expect("configure");
        primary.start().expect("start");
        primary
    }

    /// A cluster over an existing data directory (a base backup).
    pub fn existing_cluster(&self, name: &str) -> Cluster {
        Cluster::existing(
            Path::new(PG_BIN),
            &self.run_as,
            &self.path(name),
            &self.path("sock"),
        )
        .expect("cluster")
    }

    /// The catalogue's entries (next to a local archive, or in `meta/` for object storage).
    pub fn catalogue(&self) -> Vec<CatalogueEntry> {
        let local = self.wals().join(format!("{SERVER}-xlog.db"));
        let meta = self
            .home
            .join(SERVER)
            .join("meta")
            .join(format!("{SERVER}-xlog.db"));
        let path = if meta.exists() { meta } else { local };
        parse_catalogue(&fs::read_to_string(&path).unwrap_or_default()).expect("catalogue parses")
    }

    /// Real WAL: segments a PostgreSQL 15 cluster archived (by `cp`) under pgbench into
    /// `stage/`, in name order.
    pub fn real_wal(&self) -> (PathBuf, Vec<String>) {
        let stage = self.path("stage");
        fs::create_dir_all(&stage).expect("stage");
        self.own_all();
        let mut primary = self.cluster("primary");
        primary
            .configure(&format!(
                "wal_level = replica\narchive_mode = on\narchive_command = 'cp %p {}/%f'\nmax_wal_size = 64MB",
                stage.display()
            ))
            .expect("configure");
        primary.start().expect("start");
        pgbench_load(&primary, 2, 400);
        switch_and_wait_archived(&primary);
        primary.stop("fast").expect("stop");
        let segments: Vec<String> = file_names(&stage)
            .into_iter()
            .filter(|n| n.parse::<WalFileName>().is_ok_and(|w| w.is_segment()))
            .collect();
        assert!(segments.len() >= 4, "real WAL to work on: {segments:?}");
        (stage, segments)
    }

    /// Writes `data` as `pg_wal/<name>` in the work directory (settled, as PostgreSQL would
    /// pass it to `archive_command`), gives it to the test user, and returns its path.
    pub fn in_pg_wal(&self, name: &str, data: &[u8]) -> PathBuf {
        let pg_wal = self.path("pg_wal");
        fs::create_dir_all(&pg_wal).expect("pg_wal");
        queue_file(&pg_wal.join(name), data);
        self.own_all();
        pg_wal.join(name)
    }

    /// Gives the test user everything under the work directory (after the test wrote files).
    pub fn own_all(&self) {
        self.run_as.own(self.dir.path()).expect("chown");
    }
}

/// A `walvault receive-wal` running in the background as the test user, stopped (SIGTERM)
/// when dropped.
#[derive(Debug)]
pub struct Receiver {
    child: Child,
    lock: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

impl World {
    /// Starts `walvault -v receive-wal pg` and waits until it holds its lock and
    /// `pg_receivewal` runs.
    pub fn start_receive_wal(&self) -> Receiver {
        let log = self.path(&format!("receive-wal-{}.log", now_millis()));
        let file = fs::File::create(&log).expect("log");
        let mut cmd = self.run_as.command(&self.bin);
        cmd.arg("-c")
            .arg(&self.config)
            .args(["-v", "receive-wal", SERVER])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        let receiver = Receiver {
            child: cmd.spawn().expect("start receive-wal"),
            lock: self.home.join(format!(".{SERVER}-receive-wal.lock")),
            log,
        };
        receiver.wait_for_receiver(None);
        receiver
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl Receiver {
    /// The walvault process (from the pid in its lock file).
    pub fn walvault_pid(&self) -> Option<u32> {
        fs::read_to_string(&self.lock).ok()?.trim().parse().ok()
    }

    /// The supervised `pg_receivewal`, if one runs now.
    pub fn pg_receivewal_pid(&self) -> Option<u32> {
        child_pid(self.walvault_pid()?, "pg_receivewal")
    }

    /// Waits (60 s at most) for a `pg_receivewal` other than `not`.
    pub fn wait_for_receiver(&self, not: Option<u32>) -> u32 {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Some(pid) = self.pg_receivewal_pid().filter(|p| Some(*p) != not) {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no pg_receivewal started; receive-wal log:\n{}",
            fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` of walvault itself (not of its `pg_receivewal`), as an OOM killer or a
    /// careless operator does; waits for it to be gone. Returns the pid killed.
    pub fn kill_walvault(&mut self) -> u32 {
        let pid = self.walvault_pid().expect("receive-wal holds its lock");
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let _ = self.child.wait();
        pid
    }

    /// SIGTERM, then waits for the exit; returns the exit code and the log.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let code = self.terminate();
        (code, self.log_text())
    }

    fn terminate(&mut self) -> Option<i32> {
        if let Some(pid) = self.walvault_pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// The pid of a process called `name` whose parent is `parent`.
pub fn child_pid(parent: u32, name: &str) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &parent.to_string(), name])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The names in `dir`, sorted (the directory must be readable).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits until `path` exists (`timeout` at most).
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Text of a command's output, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Loads a pgbench database at `scale` and runs `transactions` per client (2 clients).
pub fn pgbench_load(cluster: &Cluster, scale: u32, transactions: u32) {
    cluster
        .pgbench(&["-i", "-s", &scale.to_string(), "-q"])
        .expect("pgbench -i");
    cluster
        .pgbench(&["-n", "-c", "2", "-t", &transactions.to_string()])
        .expect("pgbench");
}

/// Runs pgbench against `cluster` in a thread (as the test user), 2 clients for `seconds`, while
/// the test does something else; join the handle to wait for it (it panics on a failure).
pub fn pgbench_in_background(
    world: &World,
    cluster: &Cluster,
    seconds: u32,
) -> std::thread::JoinHandle<()> {
    let (bin, sock, port) = (
        cluster.bin.clone(),
        cluster.socket_dir.clone(),
        cluster.port,
    );
    let run_as = world.run_as.clone();
    std::thread::spawn(move || {
        let out = run_as
            .command(bin.join("pgbench"))
            .arg("-h")
            .arg(&sock)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-n",
                "-c",
                "2",
                "-T",
            ])
            .arg(seconds.to_string())
            .arg("postgres")
            .output()
            .expect("pgbench");
        assert!(out.status.success(), "{}", describe(&out));
    })
}

/// Runs `pg_switch_wal()` and waits until PostgreSQL reports the closed segment archived.
/// Returns the name of the last segment archived.
pub fn switch_and_wait_archived(cluster: &Cluster) -> String {
    let closed = cluster
        .query_text("SELECT pg_walfile_name(pg_current_wal_lsn())")
        .expect("current wal");
    cluster.execute("CREATE TABLE IF NOT EXISTS walvault_marker(t timestamptz); INSERT INTO walvault_marker VALUES (now()); SELECT pg_switch_wal();").expect("switch");
    cluster
        .wait_for(
            &format!("{closed} archived"),
            Duration::from_secs(180),
            |c| {
                Ok(
                    c.query_text("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?
                        .as_str()
                        >= closed.as_str(),
                )
            },
        )
        .expect("archived");
    closed
}

/// The data fingerprint compared between a primary and its recovered copy.
pub fn fingerprint(cluster: &Cluster) -> String {
    cluster
        .query_text(
            "SELECT count(*)::text || '/' || coalesce(sum(abalance), 0)::text || '/' || \
             (SELECT count(*) FROM pgbench_history)::text FROM pgbench_accounts",
        )
        .expect("fingerprint")
}

/// Every segment of `last`'s timeline from the first archived to `last` is in the catalogue,
/// once, in order (and every catalogue line's size matches its file).
pub fn assert_contiguous(world: &World, last: &str) {
    assert_contiguous_sized(world, last, SegmentSize::DEFAULT);
}

/// [`assert_contiguous`] for a cluster whose segments are `size` bytes.
pub fn assert_contiguous_sized(world: &World, last: &str, size: SegmentSize) {
    let last: WalFileName = last.parse().expect("name");
    let all: Vec<WalFileName> = world
        .catalogue()
        .iter()
        .filter_map(|e| e.wal_name().ok())
        .collect();
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "a file is catalogued twice");
    let names: Vec<WalFileName> = unique
        .into_iter()
        .filter(|n| n.is_segment() && n.timeline() == last.timeline())
        .collect();
    let first = names
        .first()
        .expect("something archived")
        .segment()
        .expect("segment");
    let expected: Vec<WalFileName> = first
        .range_to(last.segment().expect("segment"), size)
        .expect("range")
        .map(WalFileName::Segment)
        .collect();
    assert_eq!(
        names
            .iter()
            .take_while(|n| **n <= last)
            .copied()
            .collect::<Vec<_>>(),
        expected,
        "a gap in the archive"
    );
    for entry in world.catalogue() {
        let name: WalFileName = entry.name.parse().expect("name");
        let stored = world.wals().join(name.relative_path());
        assert_eq!(
            fs::metadata(&stored).expect("archived file").len(),
            entry.size,
            "catalogue size of {}",
            entry.name
        );
    }
}

/// Switches WAL and waits until pg_receivewal has completed the closed segment; returns its
/// name.
pub fn switch_and_wait_streamed(world: &World, cluster: &Cluster) -> String {
    cluster
        .execute("CREATE TABLE IF NOT EXISTS walvault_marker(t timestamptz); INSERT INTO walvault_marker VALUES (now());")
        .expect("write");
    // The segment the switch closes is the one holding the switch record. Not
    // pg_walfile_name(pg_current_wal_lsn()) taken before: at a segment boundary that names the
    // previous segment, which a pg_receivewal started at the boundary never streams (CI hit
    // it: "starting log streaming at 0/2000000", waiting for segment 1).
    let closed = cluster
        .query_text("SELECT pg_walfile_name(pg_switch_wal())")
        .expect("switch");
    cluster
        .execute("INSERT INTO walvault_marker VALUES (now());")
        .expect("write");
    // As long as switch_and_wait_archived waits: six streaming tests, each with its cluster
    // and some with pgbench, share two busy cores in CI.
    if !wait_for_file(&world.streaming().join(&closed), Duration::from_secs(180)) {
        panic!(
            "{closed} was not streamed\nstreaming/: {:?}\nreplication: {:?}\nslots: {:?}\n{}",
            file_names(&world.streaming()),
            cluster.query_text(
                "SELECT string_agg(format('%s %s sent=%s flush=%s', pid, state, sent_lsn, flush_lsn), '; ') FROM pg_stat_replication"
            ),
            cluster.query_text(
                "SELECT string_agg(format('%s active=%s pid=%s restart=%s', slot_name, active, active_pid, restart_lsn), '; ') FROM pg_replication_slots"
            ),
            receive_wal_logs(world)
        );
    }
    closed
}

/// Every `receive-wal` log of the world (what a streaming failure is diagnosed with).
pub fn receive_wal_logs(world: &World) -> String {
    let mut text = String::new();
    for name in file_names(world.dir.path()) {
        if name.starts_with("receive-wal-") && name.ends_with(".log") {
            let log = fs::read_to_string(world.path(&name)).unwrap_or_default();
            text.push_str(&format!("--- {name}:\n{log}\n"));
        }
    }
    text
}

/// `pg_stat_archiver.failed_count`.
pub fn failed_count(cluster: &walvault::pgcluster::Cluster) -> String {
    cluster
        .query_text("SELECT failed_count::text FROM pg_stat_archiver")
        .expect("stats")
}

/// Point-in-time recovery from a base backup and the archive, with one codec.
pub fn point_in_time_recovery(world: &World, codec: &str) {
    point_in_time_recovery_with(world, codec, "");
}

/// [`point_in_time_recovery`] with extra `get-wal` options in the `restore_command`.
pub fn point_in_time_recovery_with(world: &World, codec: &str, get_wal_options: &str) {
    let restore_command = world.command_line(&format!("get-wal {get_wal_options} {SERVER} %f %p"));
    point_in_time_recovery_restoring_with(world, codec, &restore_command);
}

/// [`point_in_time_recovery`] with this `restore_command`.
pub fn point_in_time_recovery_restoring_with(world: &World, codec: &str, restore_command: &str) {
    let mut primary = world.archiving_primary();
    let at_target = point_in_time_workload(world, &primary, 1500);
    primary.stop("fast").expect("stop");
    if codec != "none" {
        assert!(
            world
                .catalogue()
                .iter()
                .all(|e| e.compression.as_deref() == Some(codec)),
            "every catalogue line records {codec}"
        );
    }
    recover_to_target(world, restore_command, &at_target);
}

/// The workload of a point-in-time recovery on a started, archiving `primary`: a pgbench
/// database, a base backup into `restored`, `transactions` per client, the restore point
/// `walvault_target`, more transactions after it, and everything archived without a failed
/// `archive_command`. Returns the data's fingerprint at the target.
pub fn point_in_time_workload(world: &World, primary: &Cluster, transactions: u32) -> String {
    primary
        .pgbench(&["-i", "-s", "2", "-q"])
        .expect("pgbench -i");
    primary
        .base_backup(&world.path("restored"))
        .expect("base backup");
    primary
        .pgbench(&["-n", "-c", "2", "-t", &transactions.to_string()])
        .expect("pgbench");
    let at_target = fingerprint(primary);
    primary
        .execute("SELECT pg_create_restore_point('walvault_target')")
        .expect("restore point");
    primary
        .pgbench(&["-n", "-c", "2", "-t", "500"])
        .expect("pgbench after the target");
    let later = fingerprint(primary);
    assert_ne!(
        at_target, later,
        "the workload after the target changes the data"
    );
    switch_and_wait_archived(primary);
    assert_eq!(failed_count(primary), "0");
    at_target
}

/// Recovers the base backup in `restored` to `walvault_target` with `restore_command`, and
/// checks it stopped there with the data it had then.
pub fn recover_to_target(world: &World, restore_command: &str, at_target: &str) -> Cluster {
    let restored = world.recover(
        "restored",
        &format!(
            "archive_mode = off\nrestore_command = '{restore_command}'\nrecovery_target_name = 'walvault_target'\nrecovery_target_action = 'promote'"
        ),
        "recovery to reach the target and promote",
        Duration::from_secs(300),
    );
    assert_eq!(
        fingerprint(&restored),
        at_target,
        "recovered to the restore point, not later"
    );
    let log = fs::read_to_string(&restored.log).unwrap_or_default();
    assert!(
        log.contains("recovery stopping at restore point \"walvault_target\""),
        "PostgreSQL stopped at the target:\n{log}"
    );
    restored
}

/// A valid 1 MiB segment (configure `wal_segment_size = "1MB"`): its page header, then bytes
/// that depend on `seed` (two seeds: two different WAL under one name).
pub fn small_segment(name: &str, seed: u8) -> Vec<u8> {
    let size = SegmentSize::new(1 << 20).expect("1 MiB");
    let wal: WalFileName = name.parse().expect("name");
    let mut data = walvault_core::wal::synthetic_page_header(&wal, size, 42).to_vec();
    data.extend((data.len()..1 << 20).map(|i| (i as u8).wrapping_mul(seed)));
    data
}

/// Writes a queued file with an mtime an hour ago (settled, and distinct from "now").
pub fn queue_file(path: &Path, data: &[u8]) {
    fs::write(path, data).expect("queue file");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(hour_ago))
        .expect("mtime");
}

/// A running `walvault serve`, killed on drop.
#[derive(Debug)]
pub struct Served {
    child: Child,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
}

impl Served {
    /// The serve process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `walvault serve` with `args` (after `serve`) and `envs` (without any
/// `WALVAULT_SERVE_TOKEN` of the test's own environment) and reads the address it printed.
pub fn serve(world: &World, args: &[&str], envs: &[(&str, &str)]) -> Served {
    use std::io::BufRead;
    let mut child = Command::new(&world.bin)
        .arg("-c")
        .arg(&world.config)
        .arg("serve")
        .args(args)
        .env_remove("WALVAULT_SERVE_TOKEN")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start walvault serve");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let addr = line
        .trim()
        .strip_prefix("walvault serve: listening on http://")
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    Served { child, addr }
}
