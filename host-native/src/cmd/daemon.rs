//! `walvault daemon`: one long-lived process that does what `barman cron` does once a minute,
//! as things happen.
//!
//! It runs `archive-wal SERVER` as soon as inotify reports a file written or moved into a
//! server's `incoming/` or `streaming/` (and on every sweep, for what no event reports),
//! keeps `receive-wal SERVER` running for each streaming server, runs `check --all` on a
//! period so `serve` shows fresh results, and optionally runs `serve`. When to start what is
//! the core's [`Schedule`]; this module is the glue: inotify, signals, child processes.
//!
//! Each child is this same executable with the daemon's configuration flag, so its work is
//! exactly the command's, with its locks (a cron job left running beside the daemon is
//! harmless) and its log lines. Children get their own process group: a terminal's Ctrl-C or
//! systemd (`KillMode=mixed`) signals the daemon alone, which decides how each child stops.
//!
//! Signals: SIGTERM or SIGINT stops: `receive-wal` and `serve` are asked to stop, running
//! `archive-wal` and `check` finish (after [`STOP_GRACE`] or a second signal they are
//! stopped too, and their files stay queued). SIGHUP reloads the configuration (a
//! configuration that does not load is reported and the running one kept), reopens the log
//! file, and is passed on to the long-running children, which reopen theirs.
//!
//! Children read the configuration the daemon last loaded, not the file: once it has loaded,
//! it is copied to `<home>/.walvault-daemon.toml` (private; Barman's files as their
//! translation), so an edit saved half-way or broken never reaches the next `archive-wal`.
//! (Relative paths are refused in the configuration, so the copy means the same.) The
//! children are told the operator's file (`--config-origin`): hooks get it as
//! `BARMAN_CONFIGURATION`, and `check` checks its mode, not the copy's.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::fs::inotify;
use walvault_core::daemon::{Action, Millis, Plan, Schedule, Task};

use crate::config::Config;
use crate::lock::{LockError, LockFile};
use crate::ui::Ui;

/// How long running `archive-wal` and `check` runs get to finish after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// What `walvault daemon` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Also run `serve` on this address.
    pub serve: Option<std::net::SocketAddr>,
    /// Time between sweeps of every queue.
    pub sweep: Duration,
    /// Time between `check` runs (none: never).
    pub check: Option<Duration>,
    /// Extra arguments for every child (`-v`, `-q`).
    pub child_args: Vec<OsString>,
}

/// What the configuration asks of the daemon.
fn plan(config: &Config, opts: &Options, generations: &mut Generations) -> Plan {
    let mut archive = Vec::new();
    let mut services = Vec::new();
    for server in config.servers.values().filter(|s| s.active) {
        if server.archiver || server.streaming_archiver {
            archive.push(server.name.clone());
        }
        if server.streaming_archiver {
            let task = Task::Receive(server.name.clone());
            let generation = generations.of(&task, Settings::Receive(Box::new(server.clone())));
            services.push((task, generation));
        }
    }
    if let Some(addr) = opts.serve {
        // serve reads every server and the token at start: any change restarts it.
        let settings = Settings::Serve(addr, config.servers.clone(), config.serve_token.clone());
        services.push((Task::Serve, generations.of(&Task::Serve, settings)));
    }
    Plan {
        archive,
        services,
        sweep_every: millis(opts.sweep),
        check_every: opts.check.map(millis),
    }
}

/// What a long-running child was started with.
#[derive(PartialEq)]
enum Settings {
    Receive(Box<crate::config::ServerConfig>),
    Serve(
        std::net::SocketAddr,
        BTreeMap<String, crate::config::ServerConfig>,
        Option<crate::config::Secret>,
    ),
}

/// The schedule's fingerprints: a number per service that changes when its settings do.
/// Settings are compared whole, secrets included (a new replication password alone restarts
/// receive-wal, a new token serve), and never hashed or printed.
#[derive(Default)]
struct Generations(HashMap<Task, (Settings, u64)>);

impl Generations {
    fn of(&mut self, task: &Task, settings: Settings) -> u64 {
        match self.0.get_mut(task) {
            Some((seen, generation)) => {
                if *seen != settings {
                    *seen = settings;
                    *generation += 1;
                }
                *generation
            }
            None => {
                self.0.insert(task.clone(), (settings, 0));
                0
            }
        }
    }
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The directories watched for each server: `incoming/` when it archives from it,
/// `streaming/` when it streams.
fn watched_dirs(config: &Config) -> Vec<(PathBuf, String)> {
    let mut dirs = Vec::new();
    for server in config.servers.values().filter(|s| s.active) {
        if server.archiver {
            dirs.push((server.incoming.clone(), server.name.clone()));
        }
        if server.streaming_archiver {
            dirs.push((server.streaming.clone(), server.name.clone()));
        }
    }
    dirs
}

/// inotify watches on the queue directories. A directory that does not exist yet (the first
/// `archive-wal` creates it) is watched once it does.
struct Watches {
    fd: std::os::fd::OwnedFd,
    wanted: Vec<(PathBuf, String)>,
    by_wd: HashMap<i32, (PathBuf, String)>,
}

impl Watches {
    fn new() -> anyhow::Result<Watches> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .context("inotify_init")?;
        Ok(Watches {
            fd,
            wanted: Vec::new(),
            by_wd: HashMap::new(),
        })
    }

    fn set(&mut self, wanted: Vec<(PathBuf, String)>) {
        self.by_wd.retain(|wd, entry| {
            let keep = wanted.contains(entry);
            if !keep {
                let _ = inotify::remove_watch(&self.fd, *wd);
            }
            keep
        });
        self.wanted = wanted;
    }

    /// Adds the watches still missing; true if one was added (its directory may already hold
    /// files no event will report).
    fn ensure(&mut self) -> bool {
        let mut added = false;
        for (dir, server) in &self.wanted {
            if self.by_wd.values().any(|(d, s)| d == dir && s == server) {
                continue;
            }
            let flags = inotify::WatchFlags::CLOSE_WRITE
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::ONLYDIR;
            if let Ok(wd) = inotify::add_watch(&self.fd, dir, flags) {
                tracing::debug!(server, dir = %dir.display(), "watching");
                self.by_wd.insert(wd, (dir.clone(), server.clone()));
                added = true;
            }
        }
        added
    }

    /// The servers whose queues changed since the last call; `None` for "all" (the kernel's
    /// event queue overflowed).
    fn changed(&mut self) -> Option<Vec<String>> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut servers = Vec::new();
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            };
            let flags = event.events();
            if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                return None;
            }
            if flags.contains(inotify::ReadFlags::IGNORED) {
                // The directory went away: watched again once it is back.
                self.by_wd.remove(&event.wd());
                continue;
            }
            // Hidden and *.tmp names are copies in progress, which the queue ignores; their
            // rename into place is the event that counts.
            let name = event.file_name().map(|n| n.to_bytes()).unwrap_or_default();
            if name.starts_with(b".") || name.ends_with(b".tmp") {
                continue;
            }
            if let Some((_, server)) = self.by_wd.get(&event.wd())
                && !servers.contains(server)
            {
                servers.push(server.clone());
            }
        }
        Some(servers)
    }
}

/// A configuration as the daemon loaded it.
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Its text in walvault's format (Barman's files translated), for the children's copy.
    pub text: String,
    /// The file the operator edits (`-c` or `--barman-config`): what the children report,
    /// check and give hooks as theirs.
    pub origin: PathBuf,
}

// By hand: the text may hold passwords, which the configuration's own Debug redacts.
impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("config", &self.config)
            .field("text", &"…")
            .field("origin", &self.origin)
            .finish()
    }
}

/// Starts children of the daemon: this executable with the configuration flags.
struct Launcher {
    exe: PathBuf,
    opts: Options,
    /// `-c <the copy> --config-origin <the operator's file>`.
    config_args: Vec<OsString>,
    generations: Generations,
}

impl Launcher {
    /// The children's configuration from now on: a private copy of `loaded`'s text, in
    /// walvault's format whatever the operator's file is, so Barman's files half-edited
    /// never reach a child either.
    fn use_config(&mut self, loaded: &Loaded) -> anyhow::Result<()> {
        let path = write_copy(&loaded.config.home, &loaded.text)?;
        self.config_args = vec![
            "-c".into(),
            path.into(),
            "--config-origin".into(),
            absolute(&loaded.origin).into(),
        ];
        Ok(())
    }

    /// What the configuration asks of the daemon now.
    fn plan(&mut self, config: &Config) -> Plan {
        plan(config, &self.opts, &mut self.generations)
    }

    fn command(&self, task: &Task) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.config_args).args(&self.opts.child_args);
        match task {
            Task::Archive(server) => cmd.args(["archive-wal", server]),
            Task::Receive(server) => cmd
                .args(["receive-wal", server])
                .env(DAEMON_PID_ENV, std::process::id().to_string()),
            // Its report goes to last-check.json (serve reads it) and the log, not the
            // terminal every few minutes.
            Task::Check => cmd.args(["check", "--all"]).stdout(Stdio::null()),
            Task::Serve => {
                let addr = self.opts.serve.map(|a| a.to_string()).unwrap_or_default();
                cmd.args(["serve", "--listen", &addr])
                    .env(DAEMON_PID_ENV, std::process::id().to_string())
            }
        };
        cmd.stdin(Stdio::null()).process_group(0);
        cmd
    }
}

fn describe(task: &Task) -> String {
    match task {
        Task::Archive(server) => format!("archive-wal {server}"),
        Task::Receive(server) => format!("receive-wal {server}"),
        Task::Check => "check --all".to_owned(),
        Task::Serve => "serve".to_owned(),
    }
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Signals the loop waits for, each a flag, all waking the same pipe.
struct Signals {
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    fn register() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
        let (wake, wake_write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        let term = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register(sig, Arc::clone(&term))?;
        }
        signal_hook::flag::register(SIGHUP, Arc::clone(&hup))?;
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGCHLD] {
            signal_hook::low_level::pipe::register(sig, wake_write.try_clone()?)?;
        }
        Ok(Signals { term, hup, wake })
    }

    fn drain(&self) {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// The environment variable that tells a long-running child the daemon's pid.
pub const DAEMON_PID_ENV: &str = "WALVAULT_DAEMON_PID";

/// In a long-running child of the daemon (`receive-wal`, `serve`): stop as on SIGTERM once
/// the daemon is gone. A daemon killed outside systemd (SIGKILL, the OOM killer) cannot stop
/// its children, and an orphaned receive-wal would hold the slot and the lock the next
/// daemon's needs. The parent is polled: `PR_SET_PDEATHSIG` needs unsafe code.
pub fn follow_daemon() {
    let Some(daemon) = std::env::var(DAEMON_PID_ENV)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok())
        // rustix panics on a negative pid: anything but a positive one is no daemon's.
        .filter(|pid| *pid > 0)
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("follow-daemon".into())
        .spawn(move || {
            while rustix::process::getppid() == Some(daemon) {
                std::thread::sleep(Duration::from_millis(500));
            }
            tracing::warn!(
                daemon = daemon.as_raw_nonzero().get(),
                "the daemon is gone: stopping"
            );
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::TERM,
            );
        });
    if let Err(e) = spawned {
        tracing::warn!(reason = %e, "cannot watch the daemon");
    }
}

/// Writes `text` to `<home>/.walvault-daemon.toml`, private (it may hold passwords), replacing
/// the previous copy atomically; its path. A link planted at its name is replaced, never
/// written through.
fn write_copy(home: &Path, text: &str) -> anyhow::Result<PathBuf> {
    let path = home.join(".walvault-daemon.toml");
    std::fs::create_dir_all(home)
        .and_then(|()| {
            crate::fsutil::Fs::native()
                .write_durable_mode(&path, false, 0o600, |w| w.write_all(text.as_bytes()))
        })
        .with_context(|| format!("writing the children's configuration {}", path.display()))?;
    Ok(path)
}

/// Runs the daemon until SIGTERM or SIGINT. `load` reads the configuration, at start and
/// again on SIGHUP.
pub fn run(
    load: &dyn Fn() -> anyhow::Result<Loaded>,
    opts: Options,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let loaded = load()?;
    let config = &loaded.config;
    let lock_file = config.home.join(".walvault-daemon.lock");
    let _lock = match LockFile::flock(&lock_file, false) {
        Ok(lock) => lock,
        Err(LockError::Busy { holder, .. }) => anyhow::bail!(
            "another walvault daemon{} runs for this configuration ({})",
            holder.map_or_else(String::new, |p| format!(" (pid {p})")),
            lock_file.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let signals = Signals::register()?;
    crate::log::reopen_on_sighup();
    let mut watches = Watches::new()?;
    watches.set(watched_dirs(config));
    let mut launcher = Launcher {
        exe: std::env::current_exe().context("finding this executable")?,
        opts,
        config_args: Vec::new(),
        generations: Generations::default(),
    };
    launcher.use_config(&loaded)?;
    let clock = Instant::now();
    let now = || millis(clock.elapsed());
    let mut schedule = Schedule::new(launcher.plan(config), now());
    let mut children: BTreeMap<Task, Child> = BTreeMap::new();
    let mut stop_deadline: Option<Instant> = None;
    let servers: Vec<&str> = config.servers.keys().map(String::as_str).collect();
    ui.info(format_args!(
        "walvault daemon (pid {}) for {}",
        std::process::id(),
        servers.join(", ")
    ));
    tracing::info!(servers = servers.join(","), "daemon started");
    drop(servers);

    loop {
        // Signals first: a stop must not start anything new.
        if signals.term.swap(false, Ordering::Relaxed) {
            if stop_deadline.is_none() {
                ui.info(format_args!("stopping: waiting for running children"));
                tracing::info!("stopping");
                schedule.shutdown();
                stop_deadline = Some(Instant::now() + STOP_GRACE);
            } else {
                // A second signal: stop now.
                stop_deadline = Some(Instant::now());
            }
        }
        if signals.hup.swap(false, Ordering::Relaxed) && stop_deadline.is_none() {
            reload(
                load,
                &mut launcher,
                &mut schedule,
                &mut watches,
                &children,
                now(),
                ui,
            );
        }
        if let Some(deadline) = stop_deadline
            && Instant::now() >= deadline
        {
            for (task, child) in &children {
                if !task.long_running() {
                    ui.warn(format_args!(
                        "{} still runs: stopping it; its files stay queued",
                        describe(task)
                    ));
                    signal(child, rustix::process::Signal::TERM);
                }
            }
            stop_deadline = Some(Instant::now() + Duration::from_secs(3600));
        }

        // Children that exited.
        let exited: Vec<(Task, std::process::ExitStatus)> = children
            .iter_mut()
            .filter_map(|(task, child)| match child.try_wait() {
                Ok(Some(status)) => Some((task.clone(), status)),
                _ => None,
            })
            .collect();
        for (task, status) in exited {
            children.remove(&task);
            schedule.exited(&task, status.success(), now());
            report_exit(&task, status, &schedule, stop_deadline.is_some(), clock, ui);
        }

        // New files.
        if watches.ensure() {
            for (_, server) in &watches.wanted {
                schedule.queue_changed(server);
            }
        }
        match watches.changed() {
            Some(servers) => servers.iter().for_each(|s| schedule.queue_changed(s)),
            None => watches
                .wanted
                .iter()
                .for_each(|(_, s)| schedule.queue_changed(s)),
        }

        while let Some(action) = schedule.poll_action(now()) {
            match action {
                Action::Start(task) => match launcher.command(&task).spawn() {
                    Ok(child) => {
                        tracing::debug!(pid = child.id(), "started {}", describe(&task));
                        children.insert(task, child);
                    }
                    Err(e) => {
                        ui.error(format_args!("cannot start {}: {e}", describe(&task)));
                        tracing::error!(reason = %e, "cannot start {}", describe(&task));
                        schedule.exited(&task, false, now());
                    }
                },
                Action::Stop(task) => {
                    if let Some(child) = children.get(&task) {
                        signal(child, rustix::process::Signal::TERM);
                    }
                }
            }
        }
        if schedule.finished() {
            break;
        }

        // Sleep until an event, a signal, a child's exit (SIGCHLD) or the next deadline.
        let mut wake_in = schedule
            .next_wakeup()
            .map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(at.saturating_sub(now()))
            });
        if let Some(deadline) = stop_deadline {
            wake_in = wake_in.min(deadline.saturating_duration_since(Instant::now()));
        }
        // SIGCHLD can arrive between try_wait and poll; a bounded sleep catches it.
        wake_in = wake_in.min(Duration::from_secs(1));
        let timeout = rustix::event::Timespec {
            tv_sec: wake_in.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: wake_in.subsec_nanos().into(),
        };
        let mut fds = [
            rustix::event::PollFd::new(&signals.wake, rustix::event::PollFlags::IN),
            rustix::event::PollFd::from_borrowed_fd(
                watches.fd.as_fd(),
                rustix::event::PollFlags::IN,
            ),
        ];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        signals.drain();
    }
    ui.info(format_args!("walvault daemon stopped"));
    tracing::info!("daemon stopped");
    Ok(0)
}

fn report_exit(
    task: &Task,
    status: std::process::ExitStatus,
    schedule: &Schedule,
    stopping: bool,
    clock: Instant,
    ui: &Ui,
) {
    let what = describe(task);
    let how = crate::cmd::receive_wal::describe_exit(status);
    if let Some(at) = schedule.restart_at(task) {
        let wait = at.saturating_sub(millis(clock.elapsed())) as f64 / 1000.0;
        ui.warn(format_args!("{what} {how}; restarting in {wait:.0}s"));
        tracing::warn!(status = %how, "{what} exited; restarting in {wait:.0}s");
    } else if status.success() || (stopping && task.long_running()) {
        tracing::debug!(status = %how, "{what} exited");
    } else {
        ui.warn(format_args!("{what} {how}"));
        tracing::warn!(status = %how, "{what} failed");
    }
}

fn reload(
    load: &dyn Fn() -> anyhow::Result<Loaded>,
    launcher: &mut Launcher,
    schedule: &mut Schedule,
    watches: &mut Watches,
    children: &BTreeMap<Task, Child>,
    now: Millis,
    ui: &Ui,
) {
    // The long-running children reopen their log files too.
    for (task, child) in children {
        if task.long_running() {
            signal(child, rustix::process::Signal::HUP);
        }
    }
    match load().and_then(|loaded| launcher.use_config(&loaded).map(|()| loaded.config)) {
        Ok(config) => {
            schedule.reconfigure(launcher.plan(&config), now);
            watches.set(watched_dirs(&config));
            let servers: Vec<&str> = config.servers.keys().map(String::as_str).collect();
            ui.info(format_args!(
                "configuration reloaded: {}",
                servers.join(", ")
            ));
            tracing::info!(servers = servers.join(","), "configuration reloaded");
        }
        Err(e) => {
            ui.error(format_args!(
                "configuration not reloaded, the running one is kept: {e:#}"
            ));
            tracing::error!(reason = ?format!("{e:#}"), "configuration not reloaded");
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new replication password or serve token alone restarts the child that uses it:
    /// settings are compared with their secrets, which their debug form hides.
    #[test]
    fn a_changed_secret_alone_restarts_the_service_that_uses_it() {
        let config = |password: &str, token: &str| {
            let text = format!(
                "[walvault]\nhome = \"/var/lib/walvault\"\nserve_token = \"{token}\"\n\n\
                 [pg]\nstreaming_archiver = true\n\
                 streaming_conninfo = \"host=/run/postgresql user=walvault password={password}\"\n"
            );
            Config::parse(&text, Path::new("/etc/walvault.toml")).expect("config")
        };
        let opts = Options {
            serve: Some("127.0.0.1:9187".parse().expect("addr")),
            sweep: Duration::from_secs(30),
            check: None,
            child_args: Vec::new(),
        };
        let token = "0123456789abcdef-one";
        let mut generations = Generations::default();
        let mut services = |c: &Config| -> BTreeMap<Task, u64> {
            plan(c, &opts, &mut generations)
                .services
                .into_iter()
                .collect()
        };
        let receive = Task::Receive("pg".to_owned());
        let first = services(&config("old", token));
        assert_eq!(services(&config("old", token)), first, "nothing changed");
        let new_password = services(&config("new", token));
        assert_ne!(
            new_password[&receive], first[&receive],
            "receive-wal restarts"
        );
        assert_ne!(new_password[&Task::Serve], first[&Task::Serve]);
        let new_token = services(&config("new", "0123456789abcdef-two"));
        assert_eq!(
            new_token[&receive], new_password[&receive],
            "receive-wal keeps running"
        );
        assert_ne!(
            new_token[&Task::Serve],
            new_password[&Task::Serve],
            "serve restarts"
        );
        // The generations themselves hold no secret.
        assert!(!format!("{new_token:?}").contains("new"));
    }

    #[test]
    fn watches_report_renames_and_writes_but_not_copies_in_progress() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = dir.path().join("incoming");
        let mut watches = Watches::new().expect("inotify");
        watches.set(vec![(queue.clone(), "pg".to_owned())]);
        assert!(!watches.ensure(), "no directory yet");
        fs_err(std::fs::create_dir(&queue));
        assert!(watches.ensure(), "watched once it exists");
        assert_eq!(watches.changed(), Some(vec![]));

        // A copy in progress under a hidden or .tmp name is no event; its rename is.
        fs_err(std::fs::write(
            queue.join(".000000010000000000000001.tmp"),
            b"x",
        ));
        fs_err(std::fs::write(
            queue.join("000000010000000000000002.tmp"),
            b"x",
        ));
        assert_eq!(watches.changed(), Some(vec![]));
        fs_err(std::fs::rename(
            queue.join(".000000010000000000000001.tmp"),
            queue.join("000000010000000000000001"),
        ));
        assert_eq!(watches.changed(), Some(vec!["pg".to_owned()]));
        // A file written in place counts once it is closed.
        fs_err(std::fs::write(queue.join("000000010000000000000003"), b"x"));
        assert_eq!(watches.changed(), Some(vec!["pg".to_owned()]));

        // The directory removed: watched again when it is back.
        fs_err(std::fs::remove_dir_all(&queue));
        assert_eq!(watches.changed(), Some(vec![]));
        fs_err(std::fs::create_dir(&queue));
        assert!(watches.ensure());
        // No longer wanted: no more events.
        watches.set(Vec::new());
        fs_err(std::fs::write(queue.join("000000010000000000000004"), b"x"));
        assert_eq!(watches.changed(), Some(vec![]));
    }

    #[test]
    fn the_childrens_copy_is_private_and_never_written_through_a_planted_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        fs_err(std::fs::create_dir(&home));
        let victim = dir.path().join("victim");
        fs_err(std::fs::write(&victim, b"keep"));
        // Links planted at the copy's name and at a temporary name beside it.
        for name in [".walvault-daemon.toml", ".walvault-daemon.toml.tmp"] {
            fs_err(std::os::unix::fs::symlink(&victim, home.join(name)));
        }
        let copy = write_copy(&home, "password = 'secret'\n").expect("copy");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"keep");
        assert_eq!(
            std::fs::read_to_string(&copy).expect("copy"),
            "password = 'secret'\n"
        );
        let meta = std::fs::symlink_metadata(&copy).expect("copy");
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // Written again, it stays private, and no temporary file is left.
        write_copy(&home, "password = 'other'\n").expect("copy");
        let meta = std::fs::symlink_metadata(&copy).expect("copy");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let mut names: Vec<String> = std::fs::read_dir(&home)
            .expect("home")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".walvault-daemon.toml", ".walvault-daemon.toml.tmp"]
        );
    }

    fn fs_err(result: std::io::Result<()>) {
        result.expect("file system");
    }
}
