//! Cross-crate integration and end-to-end tests for walvault. The tests live in `tests/tests/`;
//! this library is their harness: a work directory an unprivileged PostgreSQL can use, the
//! `walvault` binary copied where that user can run it, and helpers to drive both.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tempfile::TempDir;
use walvault::pgcluster::{Cluster, RunAs};
use walvault_core::catalogue::{CatalogueEntry, parse_catalogue};

/// PostgreSQL 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The unprivileged OS user tests run PostgreSQL and walvault as.
pub const OS_USER: &str = "walvault-test";
/// The server name used in test configurations.
pub const SERVER: &str = "pg";

/// The `walvault` binary built for this test run (next to the test executable's `deps/`).
pub fn walvault_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let bin = dir.join("walvault");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p walvault)",
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
        let config = dir.path().join("walvault.toml");
        fs::write(
            &config,
            format!(
                "[walvault]\nhome = \"{}\"\n\n[{SERVER}]\n{server_conf}\n",
                home.display()
            ),
        )
        .expect("config");
        run_as.own(dir.path()).expect("chown");
        World {
            dir,
            run_as,
            bin,
            config,
            home,
        }
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

    /// Runs walvault as the test user.
    pub fn walvault(&self, args: &[&str]) -> Output {
        let mut cmd = self.run_as.command(&self.bin);
        cmd.arg("-c").arg(&self.config).args(args);
        cmd.output().expect("run walvault")
    }

    /// A new cluster (initdb) with its socket in the work directory.
    pub fn cluster(&self, name: &str) -> Cluster {
        Cluster::init(
            Path::new(PG_BIN),
            &self.run_as,
            &self.path(name),
            &self.path("sock"),
            &[],
        )
        .expect("initdb")
    }

    /// A started primary whose `archive_command` is `walvault put-wal`.
    pub fn archiving_primary(&self) -> Cluster {
        let mut primary = self.cluster("primary");
        primary
            .configure(&format!(
                "wal_level = replica\narchive_mode = on\narchive_command = '{}'\nmax_wal_size = 64MB",
                self.command_line(&format!("put-wal {SERVER} %p"))
            ))
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

    /// The catalogue's entries.
    pub fn catalogue(&self) -> Vec<CatalogueEntry> {
        let path = self.wals().join(format!("{SERVER}-xlog.db"));
        parse_catalogue(&fs::read_to_string(&path).unwrap_or_default()).expect("catalogue parses")
    }

    /// Gives the test user everything under the work directory (after the test wrote files).
    pub fn own_all(&self) {
        self.run_as.own(self.dir.path()).expect("chown");
    }
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
