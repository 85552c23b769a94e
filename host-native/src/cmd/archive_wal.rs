//! `archive-wal`: archive the streaming queue, then the incoming queue.

use std::sync::{Condvar, Mutex};

use anyhow::Context;
use walvault_core::archive::{
    ArchiveHooks, ArchiveSettings, Archiver, BatchReport, FileOutcome, Queue,
};
use walvault_core::batch::{BatchEngine, BatchOptions, perform};
use walvault_core::queue::{Batch, QueueKind, select_batch};

use crate::config::ServerConfig;
use crate::fsutil::Fs;
use crate::hooks::{ArchiveHookAdapter, HookRunner};
use crate::lock::{LockError, LockFile, lock_path};
use crate::queue_dir::{FileSource, QueueDir};
use crate::server::ServerCtx;
use crate::ui::Ui;

/// Totals over one server's run.
#[derive(Debug, Default)]
pub struct Totals {
    /// Files newly archived.
    pub archived: usize,
    /// Re-deliveries dropped.
    pub identical: usize,
    /// Files moved to errors/.
    pub to_errors: usize,
    /// Files left for the next run.
    pub kept: usize,
    /// Whether something failed.
    pub failed: bool,
}

/// Takes the server's archive-wal lock (Barman's), or says that another run holds it and
/// returns `None`: a run that finds the lock taken skips the server, successfully, unless the
/// holder has stalled ([`crate::server::stalled_archive_wal`]): that is an error, so that cron reports it.
pub fn take_lock(fs: Fs, cfg: &ServerConfig, ui: &Ui) -> anyhow::Result<Option<LockFile>> {
    match fs.lock(
        &lock_path(&cfg.lock_directory, &cfg.name, "archive-wal"),
        false,
    ) {
        Ok(lock) => Ok(Some(lock)),
        Err(LockError::Busy { holder, .. }) => {
            if let Some(stalled) = crate::server::stalled_archive_wal(cfg) {
                anyhow::bail!("{stalled}");
            }
            let by = holder.map(|p| format!(" (pid {p})")).unwrap_or_default();
            ui.info(format_args!("Another archive-wal process is already running on server {}{by}. Skipping to the next server", cfg.name));
            Ok(None)
        }
        Err(e) => Err(e).context("taking the archive-wal lock"),
    }
}

/// Runs archive-wal for one server; returns whether it succeeded.
pub fn run(ctx: &ServerCtx<'_>, jobs: usize, ui: &Ui) -> anyhow::Result<bool> {
    let cfg = ctx.cfg;
    let Some(lock) = take_lock(ctx.fs, cfg, ui)? else {
        return Ok(true);
    };
    ctx.ensure_dirs()?;
    let mut hints = ServerCtx::queue_hints(&cfg.streaming);
    hints.extend(ServerCtx::queue_hints(&cfg.incoming));
    let settings = ctx.archive_settings(ctx.segment_size(&hints));
    let encryptor = ctx.encryptor()?;
    let mut totals = Totals::default();
    let queues = [
        (
            cfg.streaming_archiver,
            QueueKind::Streaming,
            &cfg.streaming,
            cfg.streaming_archiver_batch_size,
        ),
        (
            cfg.archiver,
            QueueKind::Incoming,
            &cfg.incoming,
            cfg.archiver_batch_size,
        ),
    ];
    for (enabled, kind, dir, limit) in queues {
        if !enabled {
            continue;
        }
        let mut queue = QueueDir::new(ctx.fs, dir, &cfg.errors);
        let batch = select_batch(kind, queue.list()?, limit);
        let label = match kind {
            QueueKind::Streaming => "streaming",
            QueueKind::Incoming => "file archival",
        };
        if batch.files.is_empty() && batch.unknown.is_empty() {
            ui.verbose(format_args!(
                "Processing xlog segments from {label} for {}\n\tno file found",
                cfg.name
            ));
            continue;
        }
        if batch.deferred > 0 {
            ui.verbose(format_args!("Found {} xlog segments from {label} for {}. Archive a batch of {} segments in this run.", batch.total_candidates(), cfg.name, batch.files.len()));
        } else {
            ui.verbose(format_args!(
                "Processing xlog segments from {label} for {}",
                cfg.name
            ));
        }
        clean_dead_temp_files(ctx, &batch, ui);
        let hooks = ArchiveHookAdapter {
            runner: HookRunner::new(cfg, ctx.config_origin, ui),
            source_dir: dir.clone(),
            archive_root: ctx.archive_root(),
        };
        // Each finished file is progress (see STALLED_AFTER).
        let heartbeat = || {
            let _ = lock.touch();
        };
        let job = BatchJob {
            settings: &settings,
            hooks: &hooks,
            jobs,
            options: BatchOptions::default(),
            heartbeat: &heartbeat,
            encryptor: encryptor.map(|e| e as _),
        };
        let sources: Vec<_> = batch
            .files
            .iter()
            .map(|c| queue.path_of(&c.file_name))
            .collect();
        let report = archive_batch(ctx, &job, &batch, &sources, &mut queue, ui);
        summarise(ctx, &report, &mut totals, ui);
        if let Err(e) = queue.sync() {
            totals.failed = true;
            ui.error(format_args!("{}: {e}", dir.display()));
        }
    }
    drop(lock);
    if ui.interactive || ui.verbosity >= crate::ui::Verbosity::Verbose {
        ui.info(format_args!(
            "{}: {} archived, {} already archived (dropped), {} moved to errors, {} left for a later run",
            cfg.name, totals.archived, totals.identical, totals.to_errors, totals.kept
        ));
    }
    Ok(!totals.failed)
}

fn summarise(ctx: &ServerCtx<'_>, report: &BatchReport, totals: &mut Totals, ui: &Ui) {
    let server = ctx.cfg.name.as_str();
    record_error_reasons(ctx, report, ui);
    for file in &report.files {
        match &file.outcome {
            FileOutcome::Archived { .. } => {
                totals.archived += 1;
                ui.verbose(format_args!("\t{}", file.file_name));
                tracing::info!(server, wal = ?file.file_name, "archived");
            }
            FileOutcome::IdenticalDuplicate { key, .. } => {
                totals.identical += 1;
                tracing::info!(server, wal = ?file.file_name, archived_as = ?key, "already archived, identical: dropped");
                ui.verbose(format_args!(
                    "\t{} (already archived as {key}, identical: source dropped)",
                    file.file_name
                ));
            }
            FileOutcome::DifferentDuplicate { key, .. } => {
                totals.to_errors += 1;
                tracing::warn!(
                    server,
                    wal = ?file.file_name,
                    reason = %file.outcome.reason_text(),
                    errors_file = ?file.error_file.as_deref().unwrap_or("?"),
                    "rejected: a different WAL is archived as {key}, not overwritten"
                );
                ui.warn(format_args!(
                    "{} is already present in server {server} ({key}) with different content ({}); not overwritten, file moved to errors/{}",
                    file.file_name,
                    file.outcome.reason_text(),
                    file.error_file.as_deref().unwrap_or("?")
                ));
            }
            FileOutcome::Invalid { .. } | FileOutcome::Unknown { .. } => {
                totals.to_errors += 1;
                tracing::warn!(
                    server,
                    wal = ?file.file_name,
                    reason = %file.outcome.reason_text(),
                    errors_file = ?file.error_file.as_deref().unwrap_or("?"),
                    "rejected"
                );
                ui.warn(format_args!(
                    "{}: {}; moved to errors/{}",
                    file.file_name,
                    file.outcome.reason_text(),
                    file.error_file.as_deref().unwrap_or("?")
                ));
            }
            FileOutcome::Deferred { .. } => {
                totals.kept += 1;
                tracing::debug!(server, wal = ?file.file_name, reason = %file.outcome.reason_text(), "left for a later run");
                ui.verbose(format_args!(
                    "\t{} left for a later run: {}",
                    file.file_name,
                    file.outcome.reason_text()
                ));
            }
            FileOutcome::SourceError { error } => {
                totals.kept += 1;
                totals.failed = true;
                tracing::error!(server, wal = ?file.file_name, reason = %error, "failed: kept in place");
                ui.error(format_args!(
                    "{}: {error}; file kept in place",
                    file.file_name
                ));
            }
            FileOutcome::Failed { error, .. } => {
                totals.kept += 1;
                totals.failed = true;
                tracing::error!(server, wal = ?file.file_name, reason = %error, "failed: kept in place");
                ui.error(format_args!(
                    "{}: archiving failed, file kept in place: {error}",
                    file.file_name
                ));
            }
        }
        if let Some(e) = &file.source_error {
            totals.failed = true;
            tracing::error!(server, wal = ?file.file_name, reason = %e, "archived, but the queued file could not be removed");
            ui.error(format_args!(
                "{}: archived, but the queued file could not be removed or moved: {e}",
                file.file_name
            ));
        }
    }
    if let Some(e) = &report.catalogue_error {
        totals.failed = true;
        ui.error(format_args!("{e}"));
    }
    if let Some(stop) = &report.stopped {
        ui.warn(format_args!("{server}: {stop}"));
    }
}

/// Removes temp files left by a killed or crashed writer in the archive directories this batch
/// writes to (a full scan of the archive is `rebuild-xlogdb`'s job).
fn clean_dead_temp_files(ctx: &ServerCtx<'_>, batch: &Batch, ui: &Ui) {
    let Some(root) = ctx.local_archive_dir() else {
        return;
    };
    let mut dirs: Vec<String> = batch
        .files
        .iter()
        .map(|c| c.name.hash_dir().unwrap_or_default())
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let path = root.join(&dir);
        match ctx.fs.remove_dead_temp_files(&path) {
            Ok(0) => {}
            Ok(n) => ui.verbose(format_args!(
                "removed {n} temporary file(s) left by an interrupted run in {}",
                path.display()
            )),
            Err(e) => ui.warn(format_args!(
                "cannot clean temporary files in {}: {e}",
                path.display()
            )),
        }
    }
}

/// Appends `{"file": …, "reason": …}` lines for the files this batch moved to errors/.
fn record_error_reasons(ctx: &ServerCtx<'_>, report: &BatchReport, ui: &Ui) {
    let lines: String = report
        .files
        .iter()
        .filter_map(|f| {
            // The queued name too: the errors/ name may be a safe stand-in for it (escaped
            // as shown, which keeps every original byte).
            Some(
                serde_json::json!({
                    "file": f.error_file.as_ref()?,
                    "reason": f.outcome.error()?,
                    "original": f.file_name,
                })
                .to_string()
                    + "\n",
            )
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    let path = ctx.error_reasons_path();
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?
                .write_all(lines.as_bytes())
        });
    if let Err(e) = result {
        ui.warn(format_args!(
            "cannot record error reasons in {}: {e}",
            path.display()
        ));
    }
}

/// How one batch runs, besides what it archives.
pub struct BatchJob<'a> {
    /// How to archive.
    pub settings: &'a ArchiveSettings,
    /// The pre- and post-archive hooks.
    pub hooks: &'a (dyn ArchiveHooks + Sync),
    /// Files in flight at most.
    pub jobs: usize,
    /// The engine's options (put-wal keeps its source).
    pub options: BatchOptions,
    /// Called whenever a file is done (progress for the lock's holder).
    pub heartbeat: &'a (dyn Fn() + Sync),
    /// Encrypts what is stored (`encryption = "gpg"`).
    pub encryptor: Option<&'a dyn walvault_core::encryption::Encrypt>,
}

impl std::fmt::Debug for BatchJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchJob")
            .field("settings", self.settings)
            .field("jobs", &self.jobs)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Archives a batch with up to `job.jobs` files in flight by pumping the core's
/// [`BatchEngine`]: workers take files from it (reading `sources[i]` for the i-th file) and
/// report their outcomes; this thread carries out its commit steps on `queue`, the store and
/// the catalogue while the workers go on with the next files. The workers live for the whole
/// batch: new threads per chunk would each grow their own allocator arenas (xz's encoder alone
/// takes ~30 MiB). Where threads cannot be started (the WASI guest), this thread archives the
/// files itself, one at a time, through the same engine.
pub fn archive_batch(
    ctx: &ServerCtx<'_>,
    job: &BatchJob<'_>,
    batch: &Batch,
    sources: &[std::path::PathBuf],
    queue: &mut dyn Queue,
    ui: &Ui,
) -> BatchReport {
    let BatchJob {
        settings,
        hooks,
        jobs,
        options,
        heartbeat,
        encryptor,
    } = *job;
    let archiver = Archiver {
        store: &*ctx.store,
        settings,
        decryptor: Some(&ctx.decrypt),
        encryptor,
    };
    let now = crate::server::now();
    let progress = crate::ui::Progress::new(ui, batch.files.len());
    let engine = Mutex::new(BatchEngine::new(batch.clone(), now, options));
    let changed = Condvar::new();
    let lock = || {
        engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut catalogue = ctx.catalogue.clone();
    std::thread::scope(|scope| {
        // Archives the next file; false when none is left to hand out.
        let step = || {
            let Some((i, candidate)) = lock().next_file() else {
                return false;
            };
            // Workers read sources by path; the queue itself stays with the committer. Only a
            // queue's files may be linked into the archive: put-wal's source (the batch does
            // not own it) is PostgreSQL's pg_wal, whose files PostgreSQL recycles in place.
            let source = if options.own_sources {
                FileSource::queued(&sources[i])
            } else {
                FileSource::new(&sources[i])
            };
            // A panic (a codec bug) must not leave the committer waiting for this file.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                archiver.archive_with_hooks(&candidate, &source, hooks, now)
            }))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Some(FileOutcome::Failed {
                    error: format!("internal error while archiving: {what}"),
                    retryable: false,
                })
            });
            progress.inc(&candidate.file_name);
            heartbeat();
            lock().file_done(i, outcome);
            changed.notify_all();
            true
        };
        let spawned = (0..jobs.clamp(1, batch.files.len().max(1)))
            .filter(|_| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || while step() {})
                    .is_ok()
            })
            .count();
        loop {
            let next = {
                let mut engine = lock();
                loop {
                    if let Some(commit_step) = engine.poll_commit() {
                        break Some(commit_step);
                    }
                    if engine.is_finished() {
                        break None;
                    }
                    if spawned == 0 {
                        drop(engine);
                        step();
                        engine = lock();
                        continue;
                    }
                    engine = changed
                        .wait(engine)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let Some(commit_step) = next else {
                break;
            };
            let result = perform(&commit_step, &*ctx.store, queue, &mut catalogue);
            crate::faults::after_step(&commit_step);
            lock().step_done(result);
        }
    });
    progress.finish();
    engine
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_report()
}
