//! `receive-wal`: runs `pg_receivewal` into the streaming directory and keeps it running.
//!
//! Before each start the newest `.partial` is repaired; when `pg_receivewal` exits the
//! supervisor says why and starts it again with exponential backoff, until SIGTERM or SIGINT,
//! which it forwards (as SIGINT, on which `pg_receivewal` flushes and exits cleanly). The
//! Barman-compatible `.<server>-receive-wal.lock` holds our pid the whole time, and
//! `.<server>-pg_receivewal.pid` the child's: a receive-wal killed with SIGKILL cannot stop
//! its child, so the next one stops that orphan before it touches the streaming directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use walvault_core::streaming::{
    ResetPlan, StreamingFile, parse_tool_major, partial_to_truncate, plan_reset,
    receivewal_compatible, sync_names_include,
};
use walvault_core::wal::{Lsn, SegmentSize, TimelineId};

use crate::config::{Conninfo, CreateSlot, ServerConfig};
use crate::lock::{LockError, LockFile, lock_path};
use crate::pg::{self, StreamingFacts};
use crate::server::ServerCtx;
use crate::ui::Ui;

/// What `receive-wal` was asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Create the slot and exit.
    pub create_slot: bool,
    /// With `create_slot`: an existing slot is fine.
    pub if_not_exists: bool,
    /// Drop the slot and exit.
    pub drop_slot: bool,
    /// Realign the streaming directory with the server and exit.
    pub reset: bool,
    /// Run `pg_receivewal` once instead of supervising it (for cron-driven setups).
    pub no_restart: bool,
}

/// `pg_receivewal` as found on this machine.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Where it is.
    pub path: PathBuf,
    /// Its `--version` line.
    pub version: String,
    /// Its major version.
    pub major: u32,
}

/// Looks for `program` in `path_prefix` (colon-separated, Barman's key), then in `PATH`.
pub fn find_program(program: &str, path_prefix: Option<&str>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    path_prefix
        .into_iter()
        .flat_map(|p| p.split(':').map(PathBuf::from).collect::<Vec<_>>())
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Finds `pg_receivewal` and reads its version.
pub fn pg_receivewal(cfg: &ServerConfig) -> anyhow::Result<Tool> {
    let Some(path) = find_program("pg_receivewal", cfg.path_prefix.as_deref()) else {
        bail!(
            "pg_receivewal not found in {}PATH: install the PostgreSQL client programs \
             (e.g. `apt install postgresql-client-15`) or set path_prefix for server '{}'",
            cfg.path_prefix
                .as_deref()
                .map_or_else(String::new, |p| format!("path_prefix ({p}) or ")),
            cfg.name
        );
    };
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let Some(major) = parse_tool_major(&version) else {
        bail!(
            "{} --version printed {version:?}, not a pg_receivewal version",
            path.display()
        );
    };
    Ok(Tool {
        path,
        version,
        major,
    })
}

/// The connection string `pg_receivewal` streams with.
fn streaming_conninfo(cfg: &ServerConfig) -> anyhow::Result<&Conninfo> {
    cfg.streaming_conninfo
        .as_ref()
        .or(cfg.conninfo.as_ref())
        .with_context(|| {
            format!(
                "server '{}' has no streaming_conninfo (or conninfo) to stream from",
                cfg.name
            )
        })
}

/// The connection string for SQL queries (slot state, positions).
pub fn sql_conninfo(cfg: &ServerConfig) -> Option<&Conninfo> {
    cfg.conninfo.as_ref().or(cfg.streaming_conninfo.as_ref())
}

/// `pg_receivewal` with the connection options: the conninfo goes on the command line without
/// its password, which `ps` would show to every local user; the password goes in `PGPASSWORD`,
/// which only the same user (and root) can read.
fn pg_receivewal_command(cfg: &ServerConfig, tool: &Path) -> anyhow::Result<Command> {
    let (dbname, password) = streaming_conninfo(cfg)?
        .split_password()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("streaming_conninfo of server '{}'", cfg.name))?;
    let mut command = Command::new(tool);
    command.arg("--no-password").stdin(Stdio::null());
    if !dbname.trim().is_empty() {
        command.arg("--dbname").arg(dbname);
    }
    if let Some(password) = password {
        command.env("PGPASSWORD", password.expose());
    }
    Ok(command)
}

/// Reads the streaming facts for this server.
pub fn facts(cfg: &ServerConfig) -> anyhow::Result<StreamingFacts> {
    let conninfo = sql_conninfo(cfg).with_context(|| {
        format!(
            "server '{}' has no conninfo to query PostgreSQL with",
            cfg.name
        )
    })?;
    let mut client = pg::connect(conninfo)?;
    pg::streaming_facts(
        &mut client,
        cfg.slot_name.as_deref(),
        &cfg.streaming_archiver_name,
    )
}

/// `receive-wal SERVER [...]`.
pub fn run(ctx: &ServerCtx<'_>, opts: Options, ui: &Ui) -> anyhow::Result<u8> {
    let cfg = ctx.cfg;
    if opts.create_slot || opts.drop_slot {
        let slot = slot_name(cfg)?;
        let tool = pg_receivewal(cfg)?;
        return if opts.create_slot {
            create_slot(cfg, &tool, slot, opts.if_not_exists, ui)
        } else {
            drop_slot(cfg, &tool, slot, ui)
        };
    }
    if !cfg.streaming_archiver {
        bail!(
            "streaming_archiver is off for server '{}': set `streaming_archiver = true` to stream WAL",
            cfg.name
        );
    }
    ctx.ensure_dirs()?;
    let _lock = acquire_lock(ctx, cfg)?;
    stop_orphan(cfg, ui)?;
    let tool = pg_receivewal(cfg)?;
    let facts = facts(cfg).context("checking the server before streaming")?;
    let server_version = u32::try_from(facts.version_num).unwrap_or(0);
    if let Err(e) = receivewal_compatible(tool.major, server_version) {
        bail!("{e} ({} is \"{}\")", tool.path.display(), tool.version);
    }
    let size = segment_size(ctx, &facts);
    if opts.reset {
        return reset(ctx, &facts, size, ui);
    }
    check_slot(cfg, &tool, &facts, ui)?;
    let synchronous = cfg.synchronous
        && if sync_names_include(
            &facts.synchronous_standby_names,
            &cfg.streaming_archiver_name,
        ) {
            true
        } else {
            ui.warn(format_args!(
                "synchronous = true, but synchronous_standby_names ({:?}) does not name '{}' \
                 or '*': streaming asynchronously",
                facts.synchronous_standby_names, cfg.streaming_archiver_name
            ));
            false
        };
    supervise(cfg, &tool, size, synchronous, opts.no_restart, ui)
}

fn slot_name(cfg: &ServerConfig) -> anyhow::Result<&str> {
    cfg.slot_name.as_deref().with_context(|| {
        format!(
            "server '{}' has no slot_name: set one in the configuration first",
            cfg.name
        )
    })
}

/// The receive-wal lock, retried briefly: `check` probes it for a moment.
/// Barman's `.<server>-receive-wal.lock`.
fn receive_wal_lock(cfg: &ServerConfig) -> PathBuf {
    lock_path(&cfg.lock_directory, &cfg.name, "receive-wal")
}

/// Whether a receive-wal process holds the server's lock: `Some(pid)` when it runs (the pid
/// when it recorded one), `None` when none does or the lock cannot be read.
pub fn holder(cfg: &ServerConfig) -> Option<Option<u32>> {
    crate::lock::holder(&receive_wal_lock(cfg)).ok().flatten()
}

fn acquire_lock(ctx: &ServerCtx<'_>, cfg: &ServerConfig) -> anyhow::Result<LockFile> {
    let path = receive_wal_lock(cfg);
    let mut attempts = 0;
    loop {
        match ctx.fs.lock(&path, false) {
            Ok(lock) => return Ok(lock),
            Err(LockError::Busy { holder, .. }) if attempts >= 5 => bail!(
                "receive-wal is already running for server '{}'{} ({})",
                cfg.name,
                holder.map_or_else(String::new, |p| format!(" as process {p}")),
                path.display()
            ),
            Err(LockError::Busy { .. }) => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn segment_size(ctx: &ServerCtx<'_>, facts: &StreamingFacts) -> SegmentSize {
    ctx.cfg
        .wal_segment_size
        .or_else(|| SegmentSize::new(facts.wal_segment_size).ok())
        .unwrap_or_else(|| ctx.segment_size(&[]))
}

/// The slot must exist (or be created with `create_slot = auto`), be physical and be free.
fn check_slot(
    cfg: &ServerConfig,
    tool: &Tool,
    facts: &StreamingFacts,
    ui: &Ui,
) -> anyhow::Result<()> {
    let Some(slot) = cfg.slot_name.as_deref() else {
        ui.warn(format_args!(
            "server '{}' has no slot_name: PostgreSQL may remove WAL before it is streamed \
             (create one with `walvault receive-wal --create-slot {}` after setting slot_name)",
            cfg.name, cfg.name
        ));
        return Ok(());
    };
    match &facts.slot {
        None if cfg.create_slot == CreateSlot::Auto => {
            create_slot(cfg, tool, slot, true, ui)?;
            Ok(())
        }
        None => bail!(
            "replication slot '{slot}' does not exist on the server: create it with \
             `walvault receive-wal --create-slot {}` (or set create_slot = \"auto\")",
            cfg.name
        ),
        Some(info) if info.slot_type != "physical" => bail!(
            "replication slot '{slot}' is a {} slot; receive-wal needs a physical slot",
            info.slot_type
        ),
        Some(info) if info.active => bail!(
            "replication slot '{slot}' is already in use{}: another receive-wal or a standby \
             streams from it",
            info.active_pid
                .map_or_else(String::new, |p| format!(" by server process {p}"))
        ),
        Some(_) => Ok(()),
    }
}

fn create_slot(
    cfg: &ServerConfig,
    tool: &Tool,
    slot: &str,
    if_not_exists: bool,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let mut args = vec!["--create-slot", "--slot", slot];
    if if_not_exists {
        args.push("--if-not-exists");
    }
    run_slot_command(cfg, tool, &args)
        .with_context(|| format!("creating replication slot '{slot}'"))?;
    ui.info(format_args!(
        "replication slot '{slot}' ready on server '{}'",
        cfg.name
    ));
    Ok(0)
}

fn drop_slot(cfg: &ServerConfig, tool: &Tool, slot: &str, ui: &Ui) -> anyhow::Result<u8> {
    run_slot_command(cfg, tool, &["--drop-slot", "--slot", slot])
        .with_context(|| format!("dropping replication slot '{slot}'"))?;
    ui.info(format_args!(
        "replication slot '{slot}' dropped on server '{}'",
        cfg.name
    ));
    Ok(0)
}

/// Slot commands go through `pg_receivewal` so they use the replication connection and its
/// privileges, exactly as streaming will.
fn run_slot_command(cfg: &ServerConfig, tool: &Tool, args: &[&str]) -> anyhow::Result<()> {
    let out = pg_receivewal_command(cfg, &tool.path)?
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", tool.path.display()))?;
    if !out.status.success() {
        bail!(
            "pg_receivewal {}: {}",
            describe_exit(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The files in the streaming directory.
fn streaming_files(dir: &Path) -> anyhow::Result<Vec<StreamingFile>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() {
            out.push(StreamingFile {
                name: entry.file_name().to_string_lossy().into_owned(),
                size: meta.len(),
            });
        }
    }
    Ok(out)
}

/// Truncates a newest `.partial` that `pg_receivewal` would refuse to resume from.
fn repair_partial(dir: &Path, size: SegmentSize, ui: &Ui) -> anyhow::Result<()> {
    let files = streaming_files(dir)?;
    if let Some(broken) = partial_to_truncate(&files, size) {
        let path = dir.join(&broken.name);
        ui.warn(format_args!(
            "{} is {} bytes, neither 0 nor the segment size ({}): pg_receivewal was stopped \
             while creating it, so it holds no WAL; truncating it to 0 so streaming can resume",
            path.display(),
            broken.size,
            size.bytes()
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.set_len(0)?;
        file.sync_all()?;
    }
    Ok(())
}

fn reset(
    ctx: &ServerCtx<'_>,
    facts: &StreamingFacts,
    size: SegmentSize,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let cfg = ctx.cfg;
    let parse = |s: &Option<String>| s.as_deref().and_then(|l| l.parse::<Lsn>().ok());
    let Some(current) = parse(&facts.current_lsn) else {
        bail!("the server reports no current WAL position to reset to");
    };
    let restart = facts.slot.as_ref().and_then(|s| parse(&s.restart_lsn));
    let files = streaming_files(&cfg.streaming)?;
    match plan_reset(&files, TimelineId(facts.timeline), current, restart, size) {
        ResetPlan::Aligned => {
            ui.info(format_args!(
                "Nothing to do: the receive-wal position of server '{}' is aligned with the server",
                cfg.name
            ));
            Ok(0)
        }
        ResetPlan::Ahead { newest, current } => {
            ui.error(format_args!(
                "refusing to reset: the streaming directory holds {newest}, ahead of the \
                 server's current WAL {current}. Is conninfo pointing at the server that was \
                 streamed from, or was it restored to an earlier point? Archive or move the \
                 newer files first if this is intended."
            ));
            Ok(1)
        }
        ResetPlan::Realign { set_aside, create } => {
            if let Some(stale) = &set_aside {
                let target = cfg.incoming.join(stale);
                if target.exists() {
                    bail!(
                        "cannot set {stale} aside: {} already exists; run archive-wal first",
                        target.display()
                    );
                }
                ctx.fs.create_dir_durable(&cfg.incoming)?;
                ctx.fs
                    .move_no_replace(&cfg.streaming.join(stale), &target)
                    .with_context(|| format!("moving {stale} to {}", cfg.incoming.display()))?;
            }
            let path = cfg.streaming.join(&create);
            ctx.fs
                .write_durable(&path, true, |_| Ok(()))
                .with_context(|| format!("creating {}", path.display()))?;
            ui.info(format_args!(
                "receive-wal of server '{}' will resume at {create}{}",
                cfg.name,
                set_aside.map_or_else(String::new, |r| format!(
                    " ({r} moved to {} for archive-wal)",
                    cfg.incoming.display()
                ))
            ));
            Ok(0)
        }
    }
}

/// The streaming `pg_receivewal` command.
fn streaming_command(
    cfg: &ServerConfig,
    tool: &Path,
    synchronous: bool,
) -> anyhow::Result<Command> {
    let mut command = pg_receivewal_command(cfg, tool)?;
    // PGAPPNAME rather than appending to the string: it works for key=value and URI
    // connection strings alike, and an application_name inside the string still wins.
    command
        .arg("--directory")
        .arg(&cfg.streaming)
        .args(["--no-loop", "--verbose"])
        .env("PGAPPNAME", &cfg.streaming_archiver_name);
    if let Some(slot) = &cfg.slot_name {
        command.arg("--slot").arg(slot);
    }
    if synchronous {
        command.arg("--synchronous");
    }
    Ok(command)
}

/// Longest wait between restarts; a run this long also resets the backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long `pg_receivewal` gets to flush and exit after SIGINT before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn supervise(
    cfg: &ServerConfig,
    tool: &Tool,
    size: SegmentSize,
    synchronous: bool,
    no_restart: bool,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let term = Arc::new(AtomicBool::new(false));
    let int = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&int))?;
    let stop_signal = || {
        if term.load(Ordering::Relaxed) {
            Some("SIGTERM")
        } else if int.load(Ordering::Relaxed) {
            Some("SIGINT")
        } else {
            None
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        repair_partial(&cfg.streaming, size, ui)?;
        let mut command = streaming_command(cfg, &tool.path, synchronous)?;
        let started = Instant::now();
        let mut child = Supervised {
            child: Some(
                command
                    .spawn()
                    .with_context(|| format!("cannot start {}", tool.path.display()))?,
            ),
            record: child_record(cfg),
        };
        child.record_start(ui);
        ui.info(format_args!(
            "receive-wal for server '{}': pg_receivewal (pid {}) streaming into {}{}{}",
            cfg.name,
            child.id(),
            cfg.streaming.display(),
            cfg.slot_name
                .as_deref()
                .map_or_else(String::new, |s| format!(", slot '{s}'")),
            if synchronous { ", synchronous" } else { "" }
        ));
        let status = loop {
            if let Some(signal) = stop_signal() {
                ui.info(format_args!(
                    "{signal} received: stopping pg_receivewal (pid {})",
                    child.id()
                ));
                let status = child.stop()?;
                ui.info(format_args!(
                    "receive-wal for server '{}' stopped; pg_receivewal {}",
                    cfg.name,
                    describe_exit(status)
                ));
                return Ok(0);
            }
            if let Some(status) = child.try_wait()? {
                child.forget();
                break status;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let why = describe_exit(status);
        if no_restart {
            if status.success() {
                ui.info(format_args!("pg_receivewal {why}"));
                return Ok(0);
            }
            ui.error(format_args!("pg_receivewal {why}"));
            return Ok(1);
        }
        if started.elapsed() >= MAX_BACKOFF {
            backoff = Duration::from_secs(1);
        }
        ui.warn(format_args!(
            "pg_receivewal {why} after {:.0}s; restarting in {}s",
            started.elapsed().as_secs_f64(),
            backoff.as_secs()
        ));
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if let Some(signal) = stop_signal() {
                ui.info(format_args!(
                    "{signal} received: receive-wal for server '{}' stopped",
                    cfg.name
                ));
                return Ok(0);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The running `pg_receivewal`: stopped when the supervisor leaves by any path (an error
/// included), so no orphan keeps the slot busy and blocks the next start. Its pid is recorded
/// in `record` while it runs, for the case no destructor covers: SIGKILL.
struct Supervised {
    child: Option<Child>,
    record: PathBuf,
}

impl Supervised {
    fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Records the child's pid and start time. Without the record a later receive-wal cannot
    /// stop an orphan: warn, but stream anyway.
    fn record_start(&self, ui: &Ui) {
        let written = proc_start_time(self.id())
            .context("reading its start time")
            .and_then(|start| {
                // A fresh file, private, never written through a link planted at its name.
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let _ = fs::remove_file(&self.record);
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&self.record)
                    .and_then(|mut f| writeln!(f, "{} {start}", self.id()))
                    .with_context(|| format!("writing {}", self.record.display()))
            });
        if let Err(e) = written {
            ui.warn(format_args!(
                "cannot record pg_receivewal's pid ({e:#}): if receive-wal is killed, stop \
                 pg_receivewal (pid {}) by hand",
                self.id()
            ));
        }
    }

    /// The child has exited and was reaped.
    fn forget(&mut self) {
        self.child = None;
        let _ = fs::remove_file(&self.record);
    }

    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("pg_receivewal already stopped")?;
        let status = stop_child(&mut child);
        let _ = fs::remove_file(&self.record);
        status
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// Where a receive-wal records the `pg_receivewal` it runs (pid and start time).
fn child_record(cfg: &ServerConfig) -> PathBuf {
    cfg.lock_directory
        .join(format!(".{}-pg_receivewal.pid", cfg.name))
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`, field 22), which with
/// the pid names one process: a recycled pid has another start time. `None` when the process
/// does not exist, is a zombie, or is not `pg_receivewal`.
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses; the last ')' ends it.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if comm != "pg_receivewal" || fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Stops a `pg_receivewal` an earlier receive-wal recorded and did not stop (it was killed):
/// it would go on streaming unsupervised, hold the slot so that the new one cannot start, and
/// write the `.partial` that the new one repairs. Same pid and start time, or it is not ours.
fn stop_orphan(cfg: &ServerConfig, ui: &Ui) -> anyhow::Result<()> {
    let record = child_record(cfg);
    let text = match crate::fsutil::open_regular(&record).and_then(std::io::read_to_string) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", record.display())),
    };
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    if let (Some(Ok(pid)), Some(Ok(start))) = (fields.next(), fields.next())
        && let Ok(pid) = u32::try_from(pid)
        && proc_start_time(pid) == Some(start)
    {
        ui.warn(format_args!(
            "pg_receivewal (pid {pid}) started by an earlier receive-wal for server '{}' still \
             runs unsupervised (was receive-wal killed?): stopping it before streaming again",
            cfg.name
        ));
        let running = || proc_start_time(pid) == Some(start);
        let target = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("not a pid")?;
        for (signal, wait) in [
            (rustix::process::Signal::INT, STOP_GRACE),
            (rustix::process::Signal::KILL, Duration::from_secs(5)),
        ] {
            let _ = rustix::process::kill_process(target, signal);
            let deadline = Instant::now() + wait;
            while running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !running() {
                break;
            }
        }
        if running() {
            bail!("cannot stop the earlier pg_receivewal (pid {pid}); stop it by hand");
        }
    }
    fs::remove_file(&record)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("cannot remove {}", record.display()))
}

/// SIGINT (pg_receivewal flushes what it has and exits), then SIGKILL after a grace period.
fn stop_child(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    Ok(child.wait()?)
}

/// "exited with code 1", "was killed by signal 9".
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => "exited normally".to_owned(),
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn server(conninfo: &str) -> ServerConfig {
        let text = format!(
            "[pg]\nstreaming_archiver = true\nslot_name = \"s\"\nconninfo = '''{conninfo}'''\n"
        );
        let config = Config::parse(&text, Path::new("/etc/walvault.toml")).expect("config");
        config.server("pg").expect("pg").clone()
    }

    fn argv_and_password(cmd: &Command) -> (Vec<String>, Option<String>) {
        let argv = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let password = cmd
            .get_envs()
            .find(|(k, _)| *k == "PGPASSWORD")
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()));
        (argv, password)
    }

    #[test]
    fn the_password_never_reaches_the_command_line() {
        let tool = Path::new("/usr/bin/pg_receivewal");
        for (conninfo, password, dbname) in [
            (
                "host=db user=rep password = 'hunter2 x' dbname=replication",
                "hunter2 x",
                "host=db user=rep dbname=replication",
            ),
            (
                "postgresql://rep:hunter2@db:5432/x?sslmode=require",
                "hunter2",
                "postgresql://rep@db:5432/x?sslmode=require",
            ),
            (
                "postgresql://rep@db/x?password=hunter2&application_name=a",
                "hunter2",
                "postgresql://rep@db/x?application_name=a",
            ),
        ] {
            let cfg = server(conninfo);
            for cmd in [
                streaming_command(&cfg, tool, true).expect("command"),
                pg_receivewal_command(&cfg, tool).expect("command"),
            ] {
                let (argv, env_password) = argv_and_password(&cmd);
                assert!(
                    argv.iter().all(|a| !a.contains("hunter2")),
                    "{conninfo}: {argv:?}"
                );
                let at = argv.iter().position(|a| a == "--dbname").expect("--dbname");
                assert_eq!(argv[at + 1], dbname);
                assert!(argv.iter().any(|a| a == "--no-password"));
                assert_eq!(env_password.as_deref(), Some(password), "{conninfo}");
            }
        }
        let cfg = server("host=db user=rep");
        let (argv, env_password) =
            argv_and_password(&streaming_command(&cfg, tool, false).expect("command"));
        assert_eq!(env_password, None, "no password: PGPASSWORD is left alone");
        assert!(
            argv.windows(2)
                .any(|w| w == ["--dbname", "host=db user=rep"])
        );
        assert!(pg_receivewal_command(&server("password='x"), tool).is_err());
    }
}
