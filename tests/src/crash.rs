//! Crash trials: a command is stopped at a failpoint of its commit or killed at a chosen
//! moment, optionally followed by a power cut (whatever it had not synced is lost, worked out
//! from the fault-injection build's file-system journal), then rerun to completion. After
//! the crash and at the end, the archive contract is checked: a WAL leaves its source only
//! once its archived copy and its catalogue line are durable; no torn or temporary file is
//! ever under a final name; nothing goes to `errors/` or is taken for a duplicate because
//! of the crash; and `check` is clean once the rerun is done.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use walvault_core::compression::{DecodeLimits, Decoder};
use walvault_core::wal::WalFileName;

use crate::{SERVER, World, queue_file, small_segment};

/// WAL per trial.
pub const WAL_PER_TRIAL: usize = 8;

/// The commands the trials stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `archive-wal --jobs 2` draining `incoming/`.
    ArchiveWal,
    /// The same with `compression = "none"`: each queued file is hard-linked into the archive
    /// rather than copied.
    ArchiveWalLinked,
    /// `put-wal` of each WAL in turn, as PostgreSQL runs its `archive_command`.
    PutWal,
    /// The same with `archive_async`: the first call starts the background worker, which
    /// pushes the rest ahead from `archive_status/*.ready`; the failpoint or the kill may hit
    /// the worker or a call.
    PutWalAsync,
    /// `archive-wal` draining `streaming/` as `pg_receivewal` leaves it: complete segments
    /// and the `.partial` it is writing (kept).
    Streaming,
    /// `delete-wals --before` the sixth of eight archived WAL.
    DeleteWals,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 6] = [
        Workload::ArchiveWal,
        Workload::ArchiveWalLinked,
        Workload::PutWal,
        Workload::PutWalAsync,
        Workload::Streaming,
        Workload::DeleteWals,
    ];

    /// The failpoints this workload passes: `walvault::faults::FAILPOINTS` lists them in the
    /// order a WAL meets them, the archive's seven first (put-wal releases nothing, so it
    /// passes the first five), then delete-wals' two.
    pub fn failpoints(self) -> &'static [&'static str] {
        let points = walvault::faults::FAILPOINTS;
        match self {
            Workload::ArchiveWal | Workload::ArchiveWalLinked | Workload::Streaming => &points[..7],
            Workload::PutWal | Workload::PutWalAsync => &points[..5],
            Workload::DeleteWals => &points[7..9],
        }
    }

    fn config(self) -> &'static str {
        match self {
            Workload::Streaming => {
                "wal_segment_size = \"1MB\"\ncompression = \"zstd\"\njobs = 2\n\
                 streaming_archiver = true\narchiver = false\n\
                 streaming_conninfo = \"host=/nonexistent dbname=none\""
            }
            Workload::ArchiveWalLinked => {
                "wal_segment_size = \"1MB\"\ncompression = \"none\"\njobs = 2"
            }
            Workload::PutWalAsync => {
                "wal_segment_size = \"1MB\"\ncompression = \"zstd\"\njobs = 2\narchive_async = true"
            }
            _ => "wal_segment_size = \"1MB\"\ncompression = \"zstd\"\njobs = 2",
        }
    }
}

/// How a trial stops the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Abort the N-th time it reaches the failpoint (for `put-wal`: in its run for the N-th
    /// WAL).
    At(&'static str, u32),
    /// `kill -9` after this many thousandths of the time an undisturbed run takes (for
    /// `put-wal`: of its run for WAL number n % 8).
    Kill(u32),
}

/// One trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    /// The command.
    pub workload: Workload,
    /// How it is stopped.
    pub stop: Stop,
    /// Whether what was not synced is lost as well (a power cut, not only a process death).
    pub power_cut: bool,
}

/// What a trial found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The command was stopped before it finished (a trial whose failpoint is never reached,
    /// or whose kill comes after the end, still checks the invariants).
    pub stopped: bool,
    /// File-system changes a power cut undid.
    pub undone: usize,
    /// Broken invariants, in words; empty when the trial passed.
    pub violations: Vec<String>,
}

/// The trials of a run of `per_workload` trials per command: two in three at a failpoint
/// (each in turn, at a random one of the times a run reaches it), one in three killed at a
/// random moment; every other trial with a power cut. Reproducible from `seed`.
pub fn plan(per_workload: usize, seed: u64) -> Vec<Trial> {
    let mut rng = seed.max(1);
    let mut next = move || {
        // xorshift64: reproducible from the seed the test prints.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut trials = Vec::new();
    for workload in Workload::ALL {
        let points = workload.failpoints();
        for i in 0..per_workload {
            // Two thirds at failpoints (each point in turn, at a random one of its hits), a
            // third killed at a random moment of a run.
            let stop = if i % 3 == 2 {
                Stop::Kill((next() % 1000) as u32)
            } else {
                let k = i - i / 3;
                let point = points[k % points.len()];
                let hits = if matches!(workload, Workload::PutWal | Workload::PutWalAsync) {
                    WAL_PER_TRIAL as u64
                } else {
                    max_hits(point)
                };
                Stop::At(point, 1 + (next() % hits) as u32)
            };
            trials.push(Trial {
                workload,
                stop,
                power_cut: i % 2 == 1,
            });
        }
    }
    trials
}

/// How often a run of eight WAL reaches a failpoint (one commit, five deletions).
fn max_hits(point: &str) -> u64 {
    match point {
        "temp-written" | "file-synced" | "linked" | "before-release" => WAL_PER_TRIAL as u64,
        "wal-deleted" => 5,
        _ => 1,
    }
}

/// A world for the trials of one workload, reused (emptied) from trial to trial.
#[derive(Debug)]
pub struct Bench {
    world: World,
    workload: Workload,
    /// How long an undisturbed run of the command takes (what kills are timed against).
    run_time: std::cell::Cell<Duration>,
}

impl Bench {
    /// A world for `workload`.
    pub fn new(workload: Workload) -> Bench {
        let bench = Bench {
            world: World::new(workload.config()),
            workload,
            run_time: std::cell::Cell::new(Duration::ZERO),
        };
        // Calibration: the slowest of three undisturbed runs (kills land anywhere in it).
        for _ in 0..3 {
            let outcome = bench.run(&Trial {
                workload,
                stop: Stop::Kill(u32::MAX),
                power_cut: false,
            });
            assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
        }
        bench
    }

    /// Runs one trial from an empty home.
    pub fn run(&self, trial: &Trial) -> Outcome {
        assert_eq!(trial.workload, self.workload);
        let world = &self.world;
        let _ = fs::remove_dir_all(&world.home);
        fs::create_dir_all(&world.home).expect("home");
        let journal = world.path("fs-journal");
        let _ = fs::remove_file(&journal);
        let inputs = self.inputs();
        let source = self.source_dir();
        fs::create_dir_all(&source).expect("source directory");
        let mut originals = HashMap::new();
        for (name, data) in &inputs {
            queue_file(&source.join(name), data);
            originals.insert(source.join(name), data.clone());
        }
        if self.workload == Workload::PutWalAsync {
            // PostgreSQL's ready list, which the worker pushes ahead from.
            let status = source.join("archive_status");
            fs::create_dir_all(&status).expect("archive_status");
            for (name, _) in &inputs {
                fs::write(status.join(format!("{name}.ready")), b"").expect("ready");
            }
        }
        let mut partial = None;
        if self.workload == Workload::Streaming {
            // pg_receivewal's file in progress: newer than every complete segment, kept.
            let name = format!("{}.partial", wal_name(WAL_PER_TRIAL + 1));
            let mut data = small_segment(&wal_name(WAL_PER_TRIAL + 1), 99);
            data.truncate(300_000);
            fs::write(source.join(&name), &data).expect("partial");
            partial = Some((name, data));
        }
        world.own_all();
        if self.workload == Workload::DeleteWals {
            let out = world.walvault(&["archive-wal", SERVER]);
            assert!(out.status.success(), "{}", crate::describe(&out));
        }

        let mut outcome = Outcome::default();
        let mut put_done = 0;
        let envs = |stop: &Stop| -> Vec<(String, String)> {
            let mut envs = vec![(
                "WALVAULT_FS_JOURNAL".to_owned(),
                journal.display().to_string(),
            )];
            if let Stop::At(point, nth) = stop {
                // put-wal: one WAL per process (the async worker counts its own hits).
                let nth = if self.workload == Workload::PutWal {
                    1
                } else {
                    *nth
                };
                envs.push(("WALVAULT_CRASH_AT".to_owned(), format!("{point}:{nth}")));
            }
            envs
        };
        match self.workload {
            Workload::PutWal => {
                let crashing = match trial.stop {
                    Stop::At(_, nth) => nth as usize - 1,
                    Stop::Kill(n) => n as usize % WAL_PER_TRIAL,
                } % WAL_PER_TRIAL;
                for (i, (name, _)) in inputs.iter().enumerate() {
                    let path = source.join(name);
                    let args = ["put-wal", SERVER, path.to_str().expect("utf-8")];
                    if i < crashing {
                        let out = world.walvault(&args);
                        assert!(out.status.success(), "{}", crate::describe(&out));
                        put_done = i + 1;
                        continue;
                    }
                    let (finished, out) = self.run_stopped(&args, &envs(&trial.stop), trial.stop);
                    outcome.stopped = !finished;
                    if finished && out.as_ref().is_some_and(|o| o.status.success()) {
                        put_done = i + 1;
                    }
                    break;
                }
            }
            Workload::PutWalAsync => {
                // Every call carries the failpoint (and so does the worker the first call
                // starts); the kill lands during the call for one WAL, and takes the worker.
                // Calibration times the first call, which starts the worker.
                let killed_at = match trial.stop {
                    Stop::Kill(u32::MAX) => Some(0),
                    Stop::Kill(n) => Some(n as usize % WAL_PER_TRIAL),
                    Stop::At(..) => None,
                };
                for (i, (name, _)) in inputs.iter().enumerate() {
                    let path = source.join(name);
                    let args = ["put-wal", SERVER, path.to_str().expect("utf-8")];
                    let (finished, out) = match trial.stop {
                        Stop::Kill(_) if killed_at != Some(i) => {
                            // Journaled too: the worker it may start runs on.
                            let out = world
                                .run_as
                                .command(&world.bin)
                                .arg("-c")
                                .arg(&world.config)
                                .args(args)
                                .envs(envs(&trial.stop))
                                .output()
                                .expect("run walvault");
                            (true, Some(out))
                        }
                        stop => self.run_stopped(&args, &envs(&stop), stop),
                    };
                    if !(finished && out.as_ref().is_some_and(|o| o.status.success())) {
                        outcome.stopped = true;
                        break;
                    }
                    put_done = i + 1;
                    mark_done(&source, name);
                    // A worker stopped at the failpoint says so in its log: the power cut
                    // comes now, before later calls make its leftovers durable.
                    if self.worker_crashed() {
                        outcome.stopped = true;
                        break;
                    }
                }
                outcome.stopped |= self.worker_crashed();
                // Whatever the worker was doing, it dies now (a crash takes it too).
                self.kill_all();
            }
            Workload::DeleteWals => {
                let before = wal_name(6);
                let args = ["delete-wals", SERVER, "--before", before.as_str()];
                let (finished, _) = self.run_stopped(&args, &envs(&trial.stop), trial.stop);
                outcome.stopped = !finished;
            }
            Workload::ArchiveWal | Workload::ArchiveWalLinked | Workload::Streaming => {
                let args = ["archive-wal", SERVER];
                let (finished, _) = self.run_stopped(&args, &envs(&trial.stop), trial.stop);
                outcome.stopped = !finished;
            }
        }
        if trial.power_cut {
            outcome.undone = power_cut(&journal, &originals);
            world.own_all();
        }
        outcome.violations.extend(
            self.after_crash(&inputs, put_done)
                .into_iter()
                .map(|v| format!("after the crash: {v}")),
        );

        // The rerun: what cron, PostgreSQL's retry or the operator does next.
        match self.workload {
            Workload::PutWal | Workload::PutWalAsync => {
                for (name, _) in inputs.iter().skip(put_done) {
                    let path = source.join(name);
                    let out = world.walvault(&["put-wal", SERVER, path.to_str().expect("utf-8")]);
                    if !out.status.success() {
                        outcome.violations.push(format!(
                            "the retry of put-wal {name} failed: {}",
                            crate::describe(&out)
                        ));
                    } else if self.workload == Workload::PutWalAsync {
                        mark_done(&source, name);
                    }
                }
                // The worker lingers for the next call; the checks below want it gone.
                self.kill_all();
            }
            Workload::DeleteWals => {
                let before = wal_name(6);
                let out = world.walvault(&["delete-wals", SERVER, "--before", before.as_str()]);
                if !out.status.success() {
                    outcome.violations.push(format!(
                        "the rerun of delete-wals failed: {}",
                        crate::describe(&out)
                    ));
                }
            }
            Workload::ArchiveWal | Workload::ArchiveWalLinked | Workload::Streaming => {
                let out = world.walvault(&["archive-wal", SERVER]);
                if !out.status.success() {
                    outcome.violations.push(format!(
                        "the rerun of archive-wal failed: {}",
                        crate::describe(&out)
                    ));
                }
            }
        }
        outcome.violations.extend(
            self.at_the_end(&inputs, partial.as_ref())
                .into_iter()
                .map(|v| format!("after the rerun: {v}")),
        );
        outcome
    }

    fn inputs(&self) -> Vec<(String, Vec<u8>)> {
        (1..=WAL_PER_TRIAL)
            .map(|i| {
                let name = wal_name(i);
                let data = small_segment(&name, i as u8);
                (name, data)
            })
            .collect()
    }

    fn source_dir(&self) -> PathBuf {
        match self.workload {
            Workload::ArchiveWal | Workload::ArchiveWalLinked | Workload::DeleteWals => {
                self.world.incoming()
            }
            Workload::Streaming => self.world.streaming(),
            Workload::PutWal | Workload::PutWalAsync => self.world.home.join("pg_wal"),
        }
    }

    /// Runs walvault with `envs`, stopped as `stop` says; returns whether it finished by
    /// itself, and its output when it did.
    fn run_stopped(
        &self,
        args: &[&str],
        envs: &[(String, String)],
        stop: Stop,
    ) -> (bool, Option<Output>) {
        let world = &self.world;
        let mut cmd = world.run_as.command(&world.bin);
        cmd.arg("-c")
            .arg(&world.config)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match stop {
            Stop::At(..) => {
                let out = cmd.output().expect("run walvault");
                // An abort is SIGABRT; anything else means the point was never reached.
                let aborted = std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(6)
                    || String::from_utf8_lossy(&out.stderr).contains("WALVAULT_CRASH_AT");
                (!aborted, (!aborted).then_some(out))
            }
            Stop::Kill(per_mille) => {
                let calibrating = per_mille == u32::MAX;
                let after = if calibrating {
                    Duration::from_secs(600)
                } else {
                    self.run_time.get().mul_f64(f64::from(per_mille) / 1000.0)
                };
                let started = std::time::Instant::now();
                let mut child = cmd
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start walvault");
                let deadline = std::time::Instant::now() + after;
                while std::time::Instant::now() < deadline {
                    if child.try_wait().expect("wait").is_some() {
                        if calibrating {
                            self.run_time
                                .set(self.run_time.get().max(started.elapsed()));
                        }
                        return (true, None);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                self.kill_all();
                let status = child.wait().expect("wait");
                (status.success(), None)
            }
        }
    }

    /// Whether an `archive_async` worker stopped at its failpoint.
    fn worker_crashed(&self) -> bool {
        let spools = self.world.home.join(SERVER).join("put-spool");
        archive_files(&spools).iter().any(|p| {
            p.ends_with("worker.log")
                && fs::read_to_string(p).is_ok_and(|t| t.contains("WALVAULT_CRASH_AT"))
        })
    }

    /// Kills every walvault process of this world (runuser and the walvault it started both
    /// carry the configuration's path, and so does an `archive_async` worker) and waits until
    /// they are gone: the rerun must not find a dying run still holding its lock.
    fn kill_all(&self) {
        let config = self.world.config.display().to_string();
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &config])
            .status();
        let gone = std::time::Instant::now() + Duration::from_secs(30);
        while Command::new("pgrep")
            .args(["-f", &config])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(std::time::Instant::now() < gone, "the killed run is gone");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The contract right after the crash (and the power cut).
    fn after_crash(&self, inputs: &[(String, Vec<u8>)], put_done: usize) -> Vec<String> {
        let mut violations = self.no_torn_copies(inputs);
        let catalogue = self.catalogue_counts();
        let source = self.source_dir();
        for (i, (name, data)) in inputs.iter().enumerate() {
            let in_source = fs::read(source.join(name)).is_ok_and(|d| &d == data);
            let archived = self.archived(name).is_some_and(|d| &d == data);
            let lines = catalogue.get(name).copied().unwrap_or(0);
            if lines > 1 {
                violations.push(format!("{name} has {lines} catalogue lines"));
            }
            match self.workload {
                Workload::ArchiveWal | Workload::ArchiveWalLinked | Workload::Streaming => {
                    let kept = in_source || (archived && lines == 1);
                    if !kept {
                        violations.push(format!(
                            "{name} left its source without a durable copy and line (archived: {archived}, lines: {lines})"
                        ));
                    }
                }
                Workload::PutWal | Workload::PutWalAsync => {
                    if !in_source {
                        violations.push(format!("put-wal removed or changed its source {name}"));
                    }
                    if i < put_done && !(archived && lines == 1) {
                        violations.push(format!(
                            "put-wal exited 0 for {name} without a durable copy and line (archived: {archived}, lines: {lines})"
                        ));
                    }
                }
                Workload::DeleteWals => {
                    if i >= 5 && !(archived && lines == 1) {
                        violations.push(format!(
                            "{name}, after the cut-off, lost its copy or line (archived: {archived}, lines: {lines})"
                        ));
                    }
                }
            }
        }
        violations.extend(self.errors_dir_empty());
        violations
    }

    /// The contract once the rerun is done.
    fn at_the_end(
        &self,
        inputs: &[(String, Vec<u8>)],
        partial: Option<&(String, Vec<u8>)>,
    ) -> Vec<String> {
        let mut violations = self.no_torn_copies(inputs);
        let catalogue = self.catalogue_counts();
        let source = self.source_dir();
        for (i, (name, data)) in inputs.iter().enumerate() {
            let archived = self.archived(name);
            let lines = catalogue.get(name).copied().unwrap_or(0);
            let deleted = self.workload == Workload::DeleteWals && i < 5;
            if deleted {
                if archived.is_some() || lines > 0 {
                    violations.push(format!(
                        "{name} should be deleted (archived: {}, lines: {lines})",
                        archived.is_some()
                    ));
                }
            } else if archived.as_ref() != Some(data) || lines != 1 {
                violations.push(format!(
                    "{name} is not archived once (archived intact: {}, lines: {lines})",
                    archived.as_ref() == Some(data)
                ));
            }
        }
        let extra: Vec<_> = catalogue
            .keys()
            .filter(|n| !inputs.iter().any(|(i, _)| i == *n))
            .collect();
        if !extra.is_empty() {
            violations.push(format!("catalogue lines for unknown WAL: {extra:?}"));
        }
        let left: Vec<String> = file_names(&source)
            .into_iter()
            .filter(|n| partial.is_none_or(|(p, _)| p != n))
            .collect();
        let expect_sources = matches!(self.workload, Workload::PutWal | Workload::PutWalAsync);
        if !expect_sources && !left.is_empty() {
            violations.push(format!("left in {}: {left:?}", source.display()));
        }
        if let Some((name, data)) = partial
            && fs::read(source.join(name)).ok().as_ref() != Some(data)
        {
            violations.push(format!("the .partial {name} was not kept as it was"));
        }
        violations.extend(self.errors_dir_empty());
        let check = self.world.walvault(&["check", SERVER]);
        let text = String::from_utf8_lossy(&check.stdout);
        for line in ["temporary files: OK", "archiver errors: OK"] {
            if !text.contains(line) {
                violations.push(format!("check does not say {line:?}:\n{text}"));
            }
        }
        violations
    }

    /// Every file under a final WAL name in the archive decodes, in full, to its input.
    fn no_torn_copies(&self, inputs: &[(String, Vec<u8>)]) -> Vec<String> {
        let mut violations = Vec::new();
        for path in archive_files(&self.world.wals()) {
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if file_name.starts_with('.') || file_name.ends_with("-xlog.db") {
                continue;
            }
            let Some((_, data)) = inputs.iter().find(|(n, _)| *n == file_name) else {
                violations.push(format!("unexpected file {}", path.display()));
                continue;
            };
            if decode(&path).as_ref() != Some(data) {
                violations.push(format!("torn or foreign copy at {}", path.display()));
            }
        }
        violations
    }

    fn errors_dir_empty(&self) -> Vec<String> {
        let errors = file_names(&self.world.errors());
        if errors.is_empty() {
            Vec::new()
        } else {
            vec![format!("errors/ holds {errors:?}")]
        }
    }

    /// The decoded archived copy of `name`.
    fn archived(&self, name: &str) -> Option<Vec<u8>> {
        let wal: WalFileName = name.parse().ok()?;
        let dir = self.world.wals().join(wal.hash_dir()?);
        decode(&dir.join(name))
    }

    /// Catalogue lines per WAL name.
    fn catalogue_counts(&self) -> HashMap<String, usize> {
        let path = self.world.wals().join(format!("{SERVER}-xlog.db"));
        let mut counts = HashMap::new();
        for line in fs::read_to_string(path).unwrap_or_default().lines() {
            if let Some(name) = line.split_whitespace().next() {
                *counts.entry(name.to_owned()).or_default() += 1;
            }
        }
        counts
    }
}

/// The names in `dir`, sorted; none when it is missing (a power cut may take a directory
/// whose creation was never synced: the check after it reports what is lost).
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What PostgreSQL's archiver does once `archive_command` succeeded for `name`.
fn mark_done(pg_wal: &Path, name: &str) {
    let status = pg_wal.join("archive_status");
    let _ = fs::rename(
        status.join(format!("{name}.ready")),
        status.join(format!("{name}.done")),
    );
}

fn wal_name(i: usize) -> String {
    format!("0000000100000000000000{i:02X}")
}

fn decode(path: &Path) -> Option<Vec<u8>> {
    let file = fs::File::open(path).ok()?;
    let mut decoder = Decoder::auto(file, DecodeLimits::default()).ok()?;
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).ok()?;
    Some(out)
}

fn archive_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(root) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(archive_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A journal line of the fault-injection build (`walvault::faults::journal`).
#[derive(Debug, Clone)]
enum Event {
    Create(PathBuf),
    Append(PathBuf, u64),
    SyncFile(PathBuf),
    Link(PathBuf, PathBuf),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
    Mkdir(PathBuf),
    SyncDir(PathBuf),
}

fn parse_journal(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let kind = f.next()?;
            let a = PathBuf::from(f.next()?);
            let b = f.next();
            Some(match kind {
                "create" => Event::Create(a),
                "append" => Event::Append(a, b?.parse().ok()?),
                "syncfile" => Event::SyncFile(a),
                "link" => Event::Link(a, PathBuf::from(b?)),
                "rename" => Event::Rename(a, PathBuf::from(b?)),
                "unlink" => Event::Unlink(a),
                "mkdir" => Event::Mkdir(a),
                "syncdir" => Event::SyncDir(a),
                _ => return None,
            })
        })
        .collect()
}

/// A power cut at the moment the journalled process died, on a file system that keeps
/// nothing it was not told to sync (stricter than ext4, whose journal often saves more): a
/// directory entry made or removed survives only if its directory was synced after the
/// change, a file's data only if the file was synced after it was written, appended bytes
/// only if synced after the append. Undoes the rest in place, restoring removed sources from
/// `originals`. Returns how many changes were undone.
pub fn power_cut(journal: &Path, originals: &HashMap<PathBuf, Vec<u8>>) -> usize {
    let events = parse_journal(&fs::read_to_string(journal).unwrap_or_default());
    let dir_synced_after = |i: usize, path: &Path| {
        let parent = path.parent();
        events[i + 1..]
            .iter()
            .any(|e| matches!(e, Event::SyncDir(d) if Some(d.as_path()) == parent))
    };
    // Files by identity: a link shares its source's data, a rename carries it.
    let mut ids: HashMap<PathBuf, usize> = HashMap::new();
    let mut unsynced_data: BTreeSet<usize> = BTreeSet::new();
    let mut unsynced_appends: HashMap<usize, (PathBuf, u64)> = HashMap::new();
    let mut next_id = 0;
    let mut id_of = |ids: &mut HashMap<PathBuf, usize>, p: &Path| -> usize {
        *ids.entry(p.to_owned()).or_insert_with(|| {
            next_id += 1;
            next_id
        })
    };
    for event in &events {
        match event {
            Event::Create(p) => {
                ids.remove(p);
                let id = id_of(&mut ids, p);
                unsynced_data.insert(id);
            }
            Event::Append(p, len) => {
                let id = id_of(&mut ids, p);
                unsynced_appends.entry(id).or_insert((p.clone(), *len));
            }
            Event::SyncFile(p) => {
                let id = id_of(&mut ids, p);
                unsynced_data.remove(&id);
                unsynced_appends.remove(&id);
            }
            Event::Link(a, b) => {
                let id = id_of(&mut ids, a);
                ids.insert(b.clone(), id);
            }
            Event::Rename(a, b) => {
                let id = id_of(&mut ids, a);
                ids.remove(a);
                ids.insert(b.clone(), id);
            }
            Event::Unlink(_) | Event::Mkdir(_) | Event::SyncDir(_) => {}
        }
    }
    let mut undone = 0;
    // Data first, by the names that hold it now (before names are moved back).
    for (path, id) in &ids {
        if unsynced_data.contains(id) && path.is_file() {
            // Lost: what a power cut leaves of unsynced data (here: nothing at all).
            if fs::write(path, b"").is_ok() {
                undone += 1;
            }
        }
    }
    for (path, len) in unsynced_appends.values() {
        if let Ok(file) = fs::OpenOptions::new().write(true).open(path)
            && file.set_len(*len).is_ok()
        {
            undone += 1;
        }
    }
    // Then the names, newest change first.
    for (i, event) in events.iter().enumerate().rev() {
        let undid = match event {
            Event::Unlink(p) if !dir_synced_after(i, p) => originals
                .get(p)
                .is_some_and(|data| !p.exists() && fs::write(p, data).is_ok()),
            Event::Link(_, b) | Event::Create(b) if !dir_synced_after(i, b) => {
                fs::remove_file(b).is_ok()
            }
            Event::Rename(a, b) if !(dir_synced_after(i, b) && dir_synced_after(i, a)) => {
                b.exists() && fs::rename(b, a).is_ok()
            }
            Event::Mkdir(p) if !dir_synced_after(i, p) => fs::remove_dir_all(p).is_ok(),
            _ => false,
        };
        undone += usize::from(undid);
    }
    undone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_cut_keeps_only_what_was_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let p = |n: &str| d.join(n);
        fs::create_dir(p("q")).expect("queue");
        fs::create_dir(p("a")).expect("archive");
        fs::write(p("q/s1"), b"one").expect("s1");
        fs::write(p("q/s2"), b"two").expect("s2");
        // s1: copied, synced, linked, directory synced, then its source removed without the
        // queue's sync. s2: copied and linked, never synced.
        fs::write(p("a/.t1"), b"one").expect("t1");
        fs::hard_link(p("a/.t1"), p("a/s1")).expect("link");
        fs::remove_file(p("a/.t1")).expect("unlink");
        fs::write(p("a/.t2"), b"two").expect("t2");
        fs::hard_link(p("a/.t2"), p("a/s2")).expect("link");
        fs::remove_file(p("q/s1")).expect("release");
        fs::write(p("cat"), b"line1\nline2\n").expect("catalogue");
        let s = |p: PathBuf| p.display().to_string();
        let journal = [
            format!("create\t{}", s(p("a/.t1"))),
            format!("syncfile\t{}", s(p("a/.t1"))),
            format!("link\t{}\t{}", s(p("a/.t1")), s(p("a/s1"))),
            format!("unlink\t{}", s(p("a/.t1"))),
            format!("create\t{}", s(p("a/.t2"))),
            format!("link\t{}\t{}", s(p("a/.t2")), s(p("a/s2"))),
            format!("syncdir\t{}", s(p("a"))),
            format!("append\t{}\t6", s(p("cat"))),
            format!("unlink\t{}", s(p("q/s1"))),
        ]
        .join("\n");
        fs::write(p("journal"), journal).expect("journal");
        let originals = HashMap::from([(p("q/s1"), b"one".to_vec())]);
        let undone = power_cut(&p("journal"), &originals);
        assert_eq!(fs::read(p("a/s1")).expect("s1 kept"), b"one");
        assert_eq!(
            fs::read(p("a/s2")).expect("s2's name kept"),
            b"",
            "its data lost"
        );
        assert_eq!(fs::read(p("q/s1")).expect("source back"), b"one");
        assert_eq!(fs::read(p("cat")).expect("catalogue"), b"line1\n");
        // s2 under both its names, the catalogue, the source.
        assert_eq!(undone, 4);
    }
}
