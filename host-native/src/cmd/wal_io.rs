//! `put-wal` (archive_command) and `get-wal` (restore_command).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use walvault_core::archive::{ArchiveSettings, FileOutcome, Queue, SourceFile};
use walvault_core::batch::BatchOptions;
use walvault_core::queue::{Batch, Candidate};
use walvault_core::queue_limit::{DroppedSegment, QueueVerdict, decide};
use walvault_core::restore::{RestoreError, decode_checked, header_segment_size, restore};
use walvault_core::storage::StorageError;
use walvault_core::wal::{LONG_PAGE_HEADER_LEN, SegmentSize, WalFileName, check_segment_header};

use super::archive_wal::{BatchJob, archive_batch};
use crate::fsutil::{Fs, TempFile};
use crate::hooks::{ArchiveHookAdapter, HookRunner};
use crate::queue_dir::{FileSource, mtime_of};
use crate::server::ServerCtx;
use crate::ui::Ui;

/// Exit status for get-wal when the archive cannot be read: above 125 so PostgreSQL stops
/// recovery rather than treating the WAL as missing.
pub const EXIT_ARCHIVE_UNREADABLE: u8 = 255;

/// `put-wal SERVER PATH`: archives one file durably. PostgreSQL's contract: 0 only when the
/// WAL is safely archived (or was already, identically); never overwrites; never above 125.
pub fn put_wal(ctx: &ServerCtx<'_>, path: &Path, ui: &Ui) -> anyhow::Result<u8> {
    // A bad name is a usage error (exit 2), as for get-wal: PostgreSQL only passes WAL names.
    let Some(name) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<WalFileName>().ok().map(|w| (n, w)))
    else {
        ui.error(format_args!(
            "{}: not a WAL file name (a segment, .partial, .backup or .history file)",
            walvault_core::text::escape_bytes(path.as_os_str().as_encoded_bytes())
        ));
        return Ok(2);
    };
    let (file_name, name) = name;
    // Checked on the opened file: a link or a FIFO at %p is refused, never followed or read.
    let meta = crate::fsutil::open_regular(path)
        .and_then(|f| f.metadata())
        .with_context(|| format!("cannot archive {}", path.display()))?;
    ctx.ensure_dirs()?;
    // archive_queue_max: over the limit, the oldest ready segments are acknowledged unarchived
    // before anything else can fail or stall.
    if let Some(code) = drop_if_over_limit(ctx, path, &name, "the archive is behind", ui)? {
        return Ok(code);
    }
    // archive_async: the worker may have archived exactly this file already.
    #[cfg(feature = "native")]
    let mut _claim = None;
    #[cfg(feature = "native")]
    if ctx.cfg.archive_async {
        let before = watching_the_limit(ctx, path, &name, ui, || {
            super::push_ahead::before_put(ctx, path, file_name, ui)
        })?;
        match before {
            Some(super::push_ahead::BeforePut::Done(record)) => {
                ui.verbose(format_args!(
                    "{file_name} was archived ahead by the archive_async worker ({}{})",
                    record.archive, record.key
                ));
                return Ok(0);
            }
            Some(super::push_ahead::BeforePut::Claimed(claim)) => _claim = Some(claim),
            None => {}
        }
    }
    let (code, _) = watching_the_limit(ctx, path, &name, ui, || {
        put_wal_archiving(ctx, path, file_name, name, &meta, ui)
    })?;
    if code != 0 {
        // Archiving failed: while PostgreSQL's queue is over the limit, protect the primary.
        if let Some(code) =
            drop_if_over_limit(ctx, path, &name, "archiving it failed (see above)", ui)?
        {
            return Ok(code);
        }
    }
    Ok(code)
}

/// Runs `work` (archiving `name`, or waiting for the worker that archives it) while watching
/// PostgreSQL's ready list: with `archive_queue_max`, once the queue grows over the limit and
/// `name` must go, the drop is recorded and the process exits 0 at once, abandoning the upload.
/// PostgreSQL archives one WAL at a time, so a slow or failing call would otherwise let a busy
/// primary fill `pg_wal` before it returns. (An abandoned upload is a crash as far as the
/// archive is concerned: nothing half-written is ever served, and a later delivery finds an
/// identical copy or none.)
fn watching_the_limit<T: Send>(
    ctx: &ServerCtx<'_>,
    path: &Path,
    name: &WalFileName,
    ui: &Ui,
    work: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    #[cfg(feature = "native")]
    if ctx.cfg.archive_queue_max.is_some() {
        return std::thread::scope(|scope| {
            let handle = scope.spawn(work);
            let started = std::time::Instant::now();
            while !handle.is_finished() {
                std::thread::sleep(LIMIT_WATCH_INTERVAL);
                // A healthy upload finishes first (a drop recorded as it completes would
                // report a gap that is not there).
                if handle.is_finished() || started.elapsed() < LIMIT_WATCH_GRACE {
                    continue;
                }
                if let Some(code) =
                    drop_if_over_limit(ctx, path, name, "archiving it is taking too long", ui)?
                {
                    let _ = io::stdout().flush();
                    std::process::exit(i32::from(code));
                }
            }
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
    }
    let _ = (ctx, path, name, ui);
    work()
}

/// How often a call watches PostgreSQL's ready list while it archives (a directory listing).
#[cfg(feature = "native")]
const LIMIT_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How long a call archives before the watch may drop its segment.
#[cfg(feature = "native")]
const LIMIT_WATCH_GRACE: Duration = Duration::from_secs(1);

/// With `archive_queue_max`, when PostgreSQL's ready WAL is over the limit and `name` is among
/// the oldest segments that must go: records the drop durably and returns exit 0 (PostgreSQL
/// may recycle the segment); `None` to archive as usual.
fn drop_if_over_limit(
    ctx: &ServerCtx<'_>,
    path: &Path,
    name: &WalFileName,
    why: &str,
    ui: &Ui,
) -> anyhow::Result<Option<u8>> {
    let Some(limit) = ctx.cfg.archive_queue_max else {
        return Ok(None);
    };
    let ready = crate::dropped::ready_list(path);
    let QueueVerdict::Drop { queue_bytes, limit } = decide(name, &ready, Some(limit)) else {
        return Ok(None);
    };
    let dropped = DroppedSegment {
        name: name.to_string(),
        at: crate::server::now(),
        reason: format!(
            "{why}; {queue_bytes} bytes of WAL ready in PostgreSQL, over archive_queue_max ({limit})"
        ),
        queue_bytes,
        limit,
    };
    crate::dropped::record_dropped(ctx.fs, ctx.cfg, &dropped)
        .context("recording a segment dropped by archive_queue_max (so it is not dropped)")?;
    ui.error(format_args!(
        "{name} NOT ARCHIVED, dropped by archive_queue_max: {}; recorded in {}: no \
         point-in-time recovery across it until the next base backup",
        dropped.reason,
        crate::dropped::dropped_path(ctx.cfg).display()
    ));
    Ok(Some(0))
}

/// put-wal's archiving proper: a batch of one through the archive engine. Returns the exit
/// status and, on success, the key the WAL is stored under.
pub(crate) fn put_wal_archiving(
    ctx: &ServerCtx<'_>,
    path: &Path,
    file_name: &str,
    name: WalFileName,
    meta: &std::fs::Metadata,
    ui: &Ui,
) -> anyhow::Result<(u8, Option<String>)> {
    if let Some(dir) = ctx.local_archive_dir() {
        // A killed put-wal leaves its temp file behind; nothing else would ever remove it in
        // an archive fed only by put-wal.
        let hash_dir = dir.join(name.hash_dir().unwrap_or_default());
        if let Err(e) = ctx.fs.remove_dead_temp_files(&hash_dir) {
            ui.warn(format_args!(
                "cannot clean temporary files in {}: {e}",
                hash_dir.display()
            ));
        }
    }
    let settings = ArchiveSettings {
        settle_seconds: 0.0,
        ..ctx.archive_settings(ctx.segment_size(&[path.to_owned()]))
    };
    let encryptor = ctx.encryptor()?;
    let candidate = Candidate {
        name,
        file_name: file_name.to_owned(),
        size: meta.len(),
        mtime: mtime_of(meta),
    };
    let hooks = ArchiveHookAdapter {
        runner: HookRunner::new(ctx.cfg, ctx.config_origin, ui),
        source_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        archive_root: ctx.archive_root(),
    };
    // A batch of one, through the same engine as archive-wal: the copy is made durable, then
    // its catalogue line written (or repaired, when an earlier run stored the copy and died
    // before cataloguing it). The file stays: it is PostgreSQL's, and the exit status says
    // what happened.
    let batch = Batch {
        files: vec![candidate],
        ..Batch::default()
    };
    let job = BatchJob {
        settings: &settings,
        hooks: &hooks,
        jobs: 1,
        options: BatchOptions {
            own_sources: false,
            ..BatchOptions::default()
        },
        heartbeat: &|| {},
        encryptor: encryptor.map(|e| e as _),
    };
    let report = archive_batch(ctx, &job, &batch, &[path.to_owned()], &mut KeptSource, ui);
    let Some(file) = report.files.first() else {
        ui.error(format_args!(
            "{file_name}: a pre-archive retry hook asked to stop; not archived"
        ));
        return Ok((1, None));
    };
    if let Some(e) = &report.catalogue_error {
        // PostgreSQL may recycle the segment once we exit 0: copy and line must be durable.
        ui.error(format_args!("{file_name} not archived: {e}"));
        tracing::error!(server = %ctx.cfg.name, wal = ?file_name, reason = %e, "failed: not archived");
        return Ok((1, None));
    }
    let code = match &file.outcome {
        FileOutcome::Archived { key, .. } => {
            tracing::info!(server = %ctx.cfg.name, wal = ?file_name, "archived");
            ui.verbose(format_args!(
                "{file_name} archived as {}{key}",
                ctx.archive_root()
            ));
            return Ok((0, Some(key.clone())));
        }
        FileOutcome::IdenticalDuplicate { key, .. } => {
            ui.verbose(format_args!(
                "{file_name} was already archived with identical content ({key})"
            ));
            tracing::info!(server = %ctx.cfg.name, wal = ?file_name, "already archived, identical");
            return Ok((0, Some(key.clone())));
        }
        FileOutcome::DifferentDuplicate { key, .. } => {
            tracing::warn!(
                server = %ctx.cfg.name,
                wal = ?file_name,
                reason = %file.outcome.reason_text(),
                "rejected: a different WAL is archived as {key}, not overwritten"
            );
            ui.error(format_args!(
                "{file_name} is already archived at {}{key} with DIFFERENT content ({}); refusing to overwrite. \
                 Another cluster may be archiving to server '{}' (split brain or a re-initialised cluster).",
                ctx.archive_root(),
                file.outcome.reason_text(),
                ctx.cfg.name
            ));
            1
        }
        FileOutcome::Invalid { .. }
        | FileOutcome::Unknown { .. }
        | FileOutcome::Deferred { .. }
        | FileOutcome::Failed { .. }
        | FileOutcome::SourceError { .. } => {
            ui.error(format_args!(
                "{file_name} not archived: {}",
                file.outcome.reason_text()
            ));
            tracing::error!(
                server = %ctx.cfg.name,
                wal = ?file_name,
                reason = %file.outcome.reason_text(),
                "failed: not archived"
            );
            1
        }
    };
    Ok((code, None))
}

/// put-wal's "queue": the one file PostgreSQL passed, which the batch never releases or moves
/// (`BatchOptions::own_sources` is off) and reads by its path.
struct KeptSource;

impl Queue for KeptSource {
    fn source<'a>(&'a self, candidate: &Candidate) -> Box<dyn SourceFile + 'a> {
        Box::new(FileSource::new(&candidate.file_name))
    }

    fn release(&mut self, _file_name: &str) -> io::Result<()> {
        Ok(())
    }

    fn move_to_errors(
        &mut self,
        file_name: &str,
        _names: &mut dyn Iterator<Item = String>,
    ) -> io::Result<String> {
        Err(io::Error::other(format!(
            "{file_name}: put-wal never moves PostgreSQL's file"
        )))
    }
}

/// Runs `op` into `sink`, retrying a retryable storage error up to `retries` times with
/// exponential backoff, but only while `op` has written nothing: a retry appends to the sink,
/// so after a partial write it would serve a spliced file.
fn with_retries<T>(
    retries: u32,
    sink: &mut dyn Write,
    mut op: impl FnMut(&mut dyn Write) -> Result<T, RestoreError>,
) -> Result<T, RestoreError> {
    let mut delay = Duration::from_millis(500);
    let mut left = retries;
    loop {
        let mut counted = Counted {
            inner: &mut *sink,
            written: 0,
        };
        match op(&mut counted) {
            Err(RestoreError::Storage(e))
                if e.is_retryable() && left > 0 && counted.written == 0 =>
            {
                std::thread::sleep(delay);
                delay *= 2;
                left -= 1;
            }
            other => return other,
        }
    }
}

/// Counts the bytes written through it.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    written: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Keeps the first bytes written (to check a served segment's page header).
struct Capture<W> {
    inner: W,
    head: Vec<u8>,
}

impl<W: Write> Write for Capture<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.head.len() < LONG_PAGE_HEADER_LEN {
            let take = (LONG_PAGE_HEADER_LEN - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One place get-wal may serve the file from.
type Attempt<'a> = Box<dyn Fn(&mut dyn Write) -> Result<Served, RestoreError> + 'a>;

enum Served {
    Done(String),
    Missing,
}

/// Decompresses a queued file (incoming/ or streaming/) into `sink`, checked as an archived
/// one is.
///
/// A queued entry that is not a regular file (a link, a FIFO) is never opened through: it is
/// skipped with a warning, as if absent (`archive-wal` moves it to `errors/`).
fn serve_queue_file(
    name: WalFileName,
    path: &Path,
    segment_size: Option<SegmentSize>,
    sink: &mut dyn Write,
    ui: &Ui,
) -> Result<Option<u64>, RestoreError> {
    let file = match crate::fsutil::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            ui.warn(format_args!("{e}; not served"));
            return Ok(None);
        }
        Err(e) => {
            return Err(RestoreError::Storage(StorageError::from_io(
                walvault_core::storage::Op::Get,
                &path.display().to_string(),
                &e,
            )));
        }
    };
    decode_checked(
        Box::new(io::BufReader::new(file)),
        None,
        &name,
        &path.display().to_string(),
        segment_size,
        None,
        sink,
    )
    .map(Some)
}

/// `get-wal SERVER WAL DEST [--partial]`: writes the WAL, decompressed, atomically to DEST.
/// Exit 1 means only "not in the archive": any other failure, writing DEST included (a full
/// `pg_wal`), is [`EXIT_ARCHIVE_UNREADABLE`], so PostgreSQL stops instead of ending recovery.
pub fn get_wal(
    ctx: &ServerCtx<'_>,
    wal: &str,
    dest: &Path,
    partial: bool,
    prefetch: usize,
    ui: &Ui,
) -> anyhow::Result<u8> {
    get_wal_failing_closed(get_wal_inner(ctx, wal, dest, partial, prefetch, ui), ui)
}

/// Reports a get-wal error other than a configuration problem and turns it into
/// [`EXIT_ARCHIVE_UNREADABLE`] (shared with walvault-wasi, whose runner can fail too).
pub fn get_wal_failing_closed(result: anyhow::Result<u8>, ui: &Ui) -> anyhow::Result<u8> {
    match result {
        Err(e) if e.downcast_ref::<crate::config::ConfigError>().is_none() => {
            crate::cli::report_error(&e, ui);
            Ok(EXIT_ARCHIVE_UNREADABLE)
        }
        other => other,
    }
}

fn get_wal_inner(
    ctx: &ServerCtx<'_>,
    wal: &str,
    dest: &Path,
    partial: bool,
    prefetch: usize,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let Ok(name) = wal.parse::<WalFileName>() else {
        ui.error(format_args!("'{wal}' is not a valid WAL file name"));
        return Ok(2);
    };
    // Without a configured size each served file's own page header gives it: no listing of
    // the archive per restore_command call. Prefetching needs it up front (to name the next
    // segments), so only then is it detected.
    let segment_size = ctx.cfg.wal_segment_size;
    if prefetch > 0
        && let WalFileName::Segment(segment) = name
    {
        let spool = Spool::new(ctx, dest);
        let segment_size = spool.segment_size(ctx);
        spool.ask(segment, prefetch, segment_size);
        // A spool problem is never "not found": fall back to the archive.
        let served = |ui: &Ui| match spool.serve(ctx, segment, segment_size, dest, ui) {
            Ok(served) => served,
            Err(e) => {
                ui.warn(format_args!("prefetch spool: {e:#}; reading the archive"));
                false
            }
        };
        if served(ui) {
            spool.start_worker(ctx, segment, prefetch, dest);
            return Ok(0);
        }
        // Fetch ahead while this one downloads, or wait for it if the worker has it in hand.
        spool.start_worker(ctx, segment, prefetch, dest);
        if spool.wait_in_flight(segment) && served(ui) {
            return Ok(0);
        }
    }
    get_one(ctx, name, wal, dest, partial, segment_size, ui)
}

/// The prefetch spool, `<backup_directory>/spool/`: segments downloaded ahead by a background
/// worker (`get-wal --prefetch-worker`), so PostgreSQL's one-at-a-time `restore_command`
/// calls find them locally. The worker runs alone (a lock), follows the window the calls ask
/// for (`.window`: the segment asked for and the last one wanted), marks each download in
/// flight, and exits shortly after it has caught up.
struct Spool {
    dir: PathBuf,
    fs: Fs,
}

/// How long a call waits for a segment the worker is downloading.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);

impl Spool {
    /// One spool per restore destination (a recovering cluster's `pg_wal`), so two
    /// recoveries of the same server never share or delete each other's files.
    fn new(ctx: &ServerCtx<'_>, dest: &Path) -> Spool {
        let dest_dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dest_dir = fs::canonicalize(dest_dir).unwrap_or_else(|_| dest_dir.to_owned());
        Spool {
            dir: ctx
                .cfg
                .backup_directory
                .join("spool")
                .join(crate::fsutil::path_id(&dest_dir)),
            fs: ctx.fs,
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(".prefetch.lock")
    }

    /// The segment size: configured, else remembered by an earlier call of this recovery,
    /// else detected (which may list the archive) and remembered, so that is paid once per
    /// recovery and not once per restore_command call.
    fn segment_size(&self, ctx: &ServerCtx<'_>) -> SegmentSize {
        if let Some(size) = ctx.cfg.wal_segment_size {
            return size;
        }
        let path = self.dir.join(".segment-size");
        if let Some(size) = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .and_then(|b| SegmentSize::new(b).ok())
        {
            return size;
        }
        let size = ctx.segment_size(&[]);
        self.write_hint(".segment-size", &size.bytes().to_string());
        size
    }

    fn in_flight(&self, segment: walvault_core::wal::Segment) -> PathBuf {
        self.dir
            .join(format!(".{}.in-flight", WalFileName::Segment(segment)))
    }

    /// Records the window `(segment, segment + count]` for the worker.
    fn ask(&self, segment: walvault_core::wal::Segment, count: usize, size: SegmentSize) {
        let mut last = segment;
        for _ in 0..count {
            match last.next(size) {
                Some(n) => last = n,
                None => break,
            }
        }
        self.write_hint(
            ".window",
            &format!(
                "{} {}",
                WalFileName::Segment(segment),
                WalFileName::Segment(last)
            ),
        );
    }

    /// Writes a hint file of the spool (`.window`, `.segment-size`): atomic (rename) but not
    /// fsynced, which would cost more than serving a spooled segment; best effort.
    fn write_hint(&self, name: &str, text: &str) {
        let _ = fs::create_dir_all(&self.dir);
        let temp = self.dir.join(format!("{name}.{}", std::process::id()));
        if fs::write(&temp, text).is_ok() {
            let _ = fs::rename(&temp, self.dir.join(name));
        }
    }

    fn window(&self) -> Option<(walvault_core::wal::Segment, walvault_core::wal::Segment)> {
        let text = fs::read_to_string(self.dir.join(".window")).ok()?;
        let mut parts = text.split_whitespace().map(|p| p.parse::<WalFileName>());
        match (parts.next(), parts.next()) {
            (Some(Ok(WalFileName::Segment(a))), Some(Ok(WalFileName::Segment(b)))) => Some((a, b)),
            _ => None,
        }
    }

    fn worker_running(&self) -> bool {
        matches!(crate::lock::holder(&self.lock_path()), Ok(Some(_)))
    }

    /// Starts the background worker unless one runs (it follows the window by itself).
    fn start_worker(
        &self,
        ctx: &ServerCtx<'_>,
        segment: walvault_core::wal::Segment,
        count: usize,
        dest: &Path,
    ) {
        if self.worker_running() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut command = std::process::Command::new(exe);
        command
            .arg("-q")
            .arg(ctx.cfg.config_flag())
            .arg(ctx.config_path)
            .args([
                "get-wal",
                &ctx.cfg.name,
                &WalFileName::Segment(segment).to_string(),
            ])
            .arg(dest)
            .args(["--prefetch", &count.to_string(), "--prefetch-worker"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // Its own process group: PostgreSQL signals the startup process's whole group.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let _ = command.spawn();
    }

    /// Waits while the worker downloads `segment`; true when it is there.
    fn wait_in_flight(&self, segment: walvault_core::wal::Segment) -> bool {
        let marker = self.in_flight(segment);
        let target = self.dir.join(WalFileName::Segment(segment).to_string());
        let start = std::time::Instant::now();
        // The worker may have been spawned a moment ago: give it time to mark its work.
        while start.elapsed() < Duration::from_millis(50) && !marker.exists() && !target.exists() {
            std::thread::sleep(Duration::from_millis(2));
        }
        while marker.exists() && start.elapsed() < IN_FLIGHT_WAIT {
            if !self.worker_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        target.exists()
    }

    /// Serves `segment` from the spool when it is there and sound (full size, its own page
    /// header): a rename, no download. Spooled segments before it are dropped (recovery does
    /// not go back).
    fn serve(
        &self,
        ctx: &ServerCtx<'_>,
        segment: walvault_core::wal::Segment,
        size: SegmentSize,
        dest: &Path,
        ui: &Ui,
    ) -> anyhow::Result<bool> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(false);
        };
        let wanted = WalFileName::Segment(segment).to_string();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let stale = match file.parse::<WalFileName>() {
                Ok(WalFileName::Segment(s)) => s.timeline == segment.timeline && s < segment,
                _ => !file.starts_with('.'),
            };
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        let path = self.dir.join(&wanted);
        let Ok(meta) = fs::metadata(&path) else {
            return Ok(false);
        };
        let mut head = [0u8; LONG_PAGE_HEADER_LEN];
        let sound = meta.len() == size.bytes()
            && fs::File::open(&path)
                .and_then(|mut f| f.read_exact(&mut head))
                .is_ok()
            && (!ctx.cfg.check_page_header || check_segment_header(segment, size, &head).is_ok())
            // A spool left by another cluster under this server name is not ours.
            && ctx.cfg.system_identifier.is_none_or(|id| {
                walvault_core::wal::parse_page_header(&head)
                    .is_ok_and(|h| h.system_identifier == id)
            });
        if !sound {
            ui.warn(format_args!(
                "{} is not a sound copy of {wanted}; downloading it again",
                path.display()
            ));
            let _ = fs::remove_file(&path);
            // The remembered segment size may be what is wrong (a new cluster in this pg_wal).
            let _ = fs::remove_file(self.dir.join(".segment-size"));
            return Ok(false);
        }
        if fs::rename(&path, dest).is_err() {
            // Another file system: copy, then drop the spooled file.
            let mut input = fs::File::open(&path)?;
            self.fs
                .write_durable(dest, false, |w| io::copy(&mut input, w))
                .with_context(|| format!("writing {}", dest.display()))?;
            let _ = fs::remove_file(&path);
        }
        ui.verbose(format_args!("{wanted} restored from the prefetch spool"));
        Ok(true)
    }
}

/// `get-wal --prefetch-worker`: keeps up to `count` downloads running over the window the
/// calls ask for, taking each segment as soon as a download slot is free (no batch waits for
/// its slowest file), and lingers briefly when it has caught up, so the next call's window
/// finds it running instead of paying for a new process. Best effort: errors are left for the
/// normal path to report when PostgreSQL asks for that segment.
pub fn prefetch_worker(ctx: &ServerCtx<'_>, count: usize, dest: &Path) -> anyhow::Result<u8> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, PoisonError};

    let spool = Spool::new(ctx, dest);
    fs::create_dir_all(&spool.dir)?;
    let Ok(_lock) = ctx.fs.lock(&spool.lock_path(), false) else {
        return Ok(0); // another worker follows the window
    };
    let size = spool.segment_size(ctx);
    // Segments taken by a download slot (done or in flight): never fetched twice, even after
    // the call that wanted one has moved it out of the spool.
    let taken = Mutex::new(std::collections::BTreeSet::new());
    // Set when a segment is missing from the archive (its end, or a fault): stop there.
    let stop = AtomicBool::new(false);
    let next_job = || -> Option<walvault_core::wal::Segment> {
        let (asked, last) = spool.window()?;
        let mut taken = taken.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = asked.next(size);
        while let Some(s) = next.filter(|s| *s <= last) {
            if !taken.contains(&s) && !spool.dir.join(WalFileName::Segment(s).to_string()).exists()
            {
                taken.insert(s);
                let _ = fs::write(spool.in_flight(s), b"");
                return Some(s);
            }
            next = s.next(size);
        }
        None
    };
    std::thread::scope(|scope| {
        for _ in 0..count.clamp(1, 8) {
            scope.spawn(|| {
                let mut idle_since = std::time::Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let Some(s) = next_job() else {
                        if idle_since.elapsed() > PREFETCH_LINGER {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if !fetch_into(ctx, &spool.dir, s, size) {
                        stop.store(true, Ordering::SeqCst);
                    }
                    let _ = fs::remove_file(spool.in_flight(s));
                    idle_since = std::time::Instant::now();
                }
            });
        }
    });
    Ok(0)
}

/// How long the worker waits for the window to move before it exits.
const PREFETCH_LINGER: Duration = Duration::from_millis(500);

/// Downloads one segment into the spool; false when it is not there (or failed).
fn fetch_into(
    ctx: &ServerCtx<'_>,
    dir: &Path,
    segment: walvault_core::wal::Segment,
    size: SegmentSize,
) -> bool {
    let name = WalFileName::Segment(segment);
    let target = dir.join(name.to_string());
    let Ok((temp, file)) = TempFile::create(ctx.fs, &target) else {
        return false;
    };
    let mut sink = io::BufWriter::with_capacity(crate::fsutil::IO_BUF, file);
    match restore(
        &*ctx.store,
        &ctx.layout,
        &name,
        false,
        Some(size),
        Some(&ctx.decrypt),
        &mut sink,
    ) {
        Ok(_) if sink.flush().is_ok() => {
            drop(sink);
            // Soundness is checked when the file is used.
            temp.link_into_place(&target, false).is_ok()
        }
        _ => false,
    }
}

fn get_one(
    ctx: &ServerCtx<'_>,
    name: WalFileName,
    wal: &str,
    dest: &Path,
    partial: bool,
    segment_size: Option<SegmentSize>,
    ui: &Ui,
) -> anyhow::Result<u8> {
    let dest_dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    // Candidates in Barman's order: the archive, then files not archived yet, then (with
    // --partial) partial segments, then the archive once more in case the archiver moved the
    // file meanwhile.
    let mut attempts: Vec<Attempt<'_>> = Vec::new();
    // An object store's client retries every request within the configured budget itself:
    // retrying here too multiplied it (a stalled store held recovery four budgets long).
    let retries = if ctx.local_archive_dir().is_some() {
        3
    } else {
        0
    };
    let from_archive = move |allow_partial: bool| {
        move |sink: &mut dyn Write| match with_retries(retries, sink, |sink| {
            restore(
                &*ctx.store,
                &ctx.layout,
                &name,
                allow_partial,
                segment_size,
                Some(&ctx.decrypt),
                sink,
            )
        }) {
            Ok(r) => Ok(Served::Done(format!("{}{}", ctx.archive_root(), r.key))),
            Err(RestoreError::NotFound(_)) => Ok(Served::Missing),
            Err(e) => Err(e),
        }
    };
    let from_queue = move |path: PathBuf| {
        let served_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .unwrap_or(name);
        move |sink: &mut dyn Write| match serve_queue_file(
            served_name,
            &path,
            segment_size,
            sink,
            ui,
        )? {
            Some(_) => Ok(Served::Done(path.display().to_string())),
            None => Ok(Served::Missing),
        }
    };
    attempts.push(Box::new(from_archive(false)));
    attempts.push(Box::new(from_queue(
        ctx.cfg.incoming.join(name.to_string()),
    )));
    attempts.push(Box::new(from_queue(
        ctx.cfg.streaming.join(name.to_string()),
    )));
    if partial && let Some(segment) = name.segment().filter(|_| name.is_segment()) {
        let partial_name = WalFileName::Partial(segment).to_string();
        attempts.push(Box::new(from_queue(ctx.cfg.streaming.join(&partial_name))));
        attempts.push(Box::new(from_archive(true)));
        attempts.push(Box::new(from_queue(ctx.cfg.incoming.join(&partial_name))));
    }
    attempts.push(Box::new(from_archive(false)));

    for attempt in &attempts {
        let (temp, file) = TempFile::create(ctx.fs, &dest_dir.join(wal))
            .with_context(|| format!("cannot write in {}", dest_dir.display()))?;
        let mut sink = Capture {
            inner: io::BufWriter::with_capacity(crate::fsutil::IO_BUF, file),
            head: Vec::new(),
        };
        match attempt(&mut sink) {
            Ok(Served::Missing) => continue,
            Ok(Served::Done(from)) => {
                sink.flush().context("writing the restored file")?;
                if ctx.cfg.check_page_header
                    && let WalFileName::Segment(segment) = name
                    && let Err(e) = check_segment_header(
                        segment,
                        segment_size
                            .or_else(|| header_segment_size(&sink.head))
                            .unwrap_or(SegmentSize::DEFAULT),
                        &sink.head,
                    )
                {
                    ui.error(format_args!(
                        "{from} does not hold {name}: {e}; recovery must not use it"
                    ));
                    return Ok(EXIT_ARCHIVE_UNREADABLE);
                }
                drop(sink);
                // Atomic, but no fsync: PostgreSQL makes durable what it keeps
                // (durable_rename of a restored segment) and asks again after a crash; a
                // directory sync per restore_command call only slows recovery down.
                temp.link_into_place(dest, false).with_context(|| {
                    format!("cannot move the restored file to {}", dest.display())
                })?;
                ui.verbose(format_args!(
                    "{name} restored from {from} to {}",
                    dest.display()
                ));
                return Ok(0);
            }
            Err(RestoreError::Write(e)) => bail!("restoring {name} to {}: {e}", dest.display()),
            Err(e) => {
                ui.error(format_args!(
                    "cannot restore {name} for server '{}': {e}",
                    ctx.cfg.name
                ));
                return Ok(EXIT_ARCHIVE_UNREADABLE);
            }
        }
    }
    ui.verbose(format_args!(
        "WAL file '{name}' not found in server '{}'",
        ctx.cfg.name
    ));
    Ok(1)
}
