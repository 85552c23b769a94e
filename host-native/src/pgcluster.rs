//! Throw-away PostgreSQL clusters: `demo` and the end-to-end tests drive real servers with it.
//!
//! PostgreSQL refuses to run as root, so when walvault runs as root every server command runs
//! as an unprivileged OS user (created when missing) through `runuser`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Who runs PostgreSQL's programs.
#[derive(Debug, Clone)]
pub struct RunAs {
    user: Option<String>,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl RunAs {
    /// As `user` when we are root (created if missing), else as ourselves.
    pub fn for_root(user: &str) -> anyhow::Result<RunAs> {
        if !is_root() {
            return Ok(RunAs { user: None });
        }
        let exists = Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success();
        if !exists {
            let status = Command::new("useradd")
                .args(["--system", "--no-create-home", "--shell", "/bin/sh", user])
                .status()
                .context("running useradd")?;
            if !status.success() {
                bail!(
                    "could not create the OS user '{user}' to run PostgreSQL (useradd exited with {status})"
                );
            }
        }
        Ok(RunAs {
            user: Some(user.to_owned()),
        })
    }

    /// A command for `program`, run as the chosen user.
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program.as_ref());
                c
            }
            None => Command::new(program.as_ref()),
        }
    }

    /// Gives the user ownership of `path` (recursively) when running as someone else.
    pub fn own(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(user) = &self.user {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(path)
                .status()?;
            if !status.success() {
                bail!("chown {} to {user} failed", path.display());
            }
        }
        Ok(())
    }
}

/// A free TCP port on 127.0.0.1 (the clusters listen on a Unix socket and loopback only).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One PostgreSQL cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Server binaries.
    pub bin: PathBuf,
    /// Data directory.
    pub data: PathBuf,
    /// Unix socket directory.
    pub socket_dir: PathBuf,
    /// Port (for the socket name, and loopback).
    pub port: u16,
    /// Server log.
    pub log: PathBuf,
    /// Who runs it.
    pub run_as: RunAs,
    running: bool,
}

impl Cluster {
    /// `initdb` a new cluster (trust authentication, superuser `postgres`, checksums on).
    pub fn init(
        bin: &Path,
        run_as: &RunAs,
        data: &Path,
        socket_dir: &Path,
        extra_initdb: &[&str],
    ) -> anyhow::Result<Cluster> {
        let cluster = Self::existing(bin, run_as, data, socket_dir)?;
        let mut cmd = run_as.command(bin.join("initdb"));
        cmd.arg("-D")
            .arg(data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--data-checksums",
            ])
            .args(extra_initdb);
        run(cmd, "initdb")?;
        Ok(cluster)
    }

    /// A data directory made some other way (a base backup), not started.
    pub fn existing(
        bin: &Path,
        run_as: &RunAs,
        data: &Path,
        socket_dir: &Path,
    ) -> anyhow::Result<Cluster> {
        for dir in [socket_dir, data.parent().unwrap_or(Path::new("/"))] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        run_as.own(socket_dir)?;
        let log = data.with_extension("log");
        Ok(Cluster {
            bin: bin.to_owned(),
            data: data.to_owned(),
            socket_dir: socket_dir.to_owned(),
            port: free_port()?,
            log,
            run_as: run_as.clone(),
            running: false,
        })
    }

    /// Appends settings to `postgresql.conf` (the last value of a setting wins).
    pub fn configure(&self, settings: &str) -> anyhow::Result<()> {
        let conf = self.data.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
        text.push_str(&format!(
            "\n# walvault\nport = {}\nlisten_addresses = ''\nunix_socket_directories = '{}'\n{settings}\n",
            self.port,
            self.socket_dir.display()
        ));
        fs::write(&conf, text)?;
        Ok(())
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if !self.log.exists() {
            fs::write(&self.log, b"")?;
        }
        self.run_as.own(&self.log)?;
        let mut cmd = self.run_as.command(self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "120", "start"]);
        run(cmd, "pg_ctl start").with_context(|| format!("see {}", self.log.display()))?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (`fast`, `smart` or `immediate`).
    pub fn stop(&mut self, mode: &str) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        let mut cmd = self.run_as.command(self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "stop"]);
        run(cmd, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// The libpq conninfo of this cluster.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    /// A client connection.
    pub fn client(&self) -> anyhow::Result<postgres::Client> {
        crate::pg::connect(&crate::secret::Conninfo::new(self.conninfo()))
    }

    /// Runs a query returning one text value.
    pub fn query_text(&self, sql: &str) -> anyhow::Result<String> {
        let mut c = self.client()?;
        let row = c
            .query_one(sql, &[])
            .with_context(|| format!("query failed: {sql}"))?;
        Ok(row.get::<_, String>(0))
    }

    /// Runs statements.
    pub fn execute(&self, sql: &str) -> anyhow::Result<()> {
        self.client()?
            .batch_execute(sql)
            .with_context(|| format!("statement failed: {sql}"))
    }

    /// Runs `pgbench` with `args` against this cluster.
    pub fn pgbench(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = self.run_as.command(self.bin.join("pgbench"));
        cmd.arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres");
        run(cmd, "pgbench")
    }

    /// `pg_basebackup` into `target` (WAL not included: recovery reads it from the archive).
    pub fn base_backup(&self, target: &Path) -> anyhow::Result<()> {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
            self.run_as.own(parent)?;
        }
        let mut cmd = self.run_as.command(self.bin.join("pg_basebackup"));
        cmd.arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-X",
                "none",
                "-c",
                "fast",
                "-D",
            ])
            .arg(target);
        run(cmd, "pg_basebackup")?;
        Ok(())
    }

    /// Waits until `probe` says yes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&Cluster) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last_error = None;
        while start.elapsed() < timeout {
            match probe(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let tail = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        bail!(
            "timed out after {timeout:?} waiting for {what}{}\nlast lines of {}:\n{}",
            last_error
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default(),
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.running
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Never leave a server behind, even when a demo or test fails half-way.
        let _ = self.stop("immediate");
    }
}
