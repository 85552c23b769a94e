//! `archive_async`: `put-wal`'s background worker, which pushes PostgreSQL's ready WAL into
//! the archive ahead of the `archive_command` calls, and its spool of records
//! (`<backup_directory>/put-spool/<pg_wal>/`). The decisions are
//! `walvault_core::push_ahead`'s; this is the file and process glue.
//!
//! - A record `<WAL>.done` is written only once the WAL's copy is durable and catalogued, and
//!   names its size and SHA-256; a call acknowledges from it only the same bytes.
//! - `.<WAL>.busy` is locked (`flock`) by whoever archives that WAL, worker or call, so the
//!   two never upload it at once: the other waits, then looks for the record.
//! - `.worker.lock` makes the worker one per `pg_wal`; the calls start it when it is not
//!   running, and it exits once it has found nothing to do for [`LINGER`].

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use walvault_core::push_ahead::{
    Comparison, ContentDigest, FileIdentity, RecordMismatch, SpoolRecord, next_to_push,
    stale_records,
};
use walvault_core::wal::WalFileName;

use crate::lock::{LockError, LockFile};
use crate::server::ServerCtx;
use crate::ui::Ui;

/// How long the worker waits for new ready WAL before it exits.
const LINGER: Duration = Duration::from_secs(3);
/// How long a call waits for the worker to finish the WAL it asks for before archiving it
/// itself (each of the worker's requests has its own deadline; this is a backstop).
const BUSY_WAIT: Duration = Duration::from_secs(600);

/// The spool of one `pg_wal`.
#[derive(Debug)]
pub struct PutSpool {
    dir: PathBuf,
    pg_wal: PathBuf,
}

/// What a call found before archiving its WAL.
#[derive(Debug)]
pub enum BeforePut {
    /// The worker archived exactly this file: acknowledge it.
    Done(SpoolRecord),
    /// Archive it; the claim keeps the worker off it until dropped.
    Claimed(Claim),
}

/// The lock on `.<WAL>.busy`; the marker is removed before the lock is let go.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    _lock: LockFile,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl PutSpool {
    /// The spool of the `pg_wal` holding `wal_path`; `None` when that directory is not a
    /// `pg_wal` (no `archive_status/`): then there is no ready list to push ahead from.
    pub fn new(ctx: &ServerCtx<'_>, wal_path: &Path) -> Option<PutSpool> {
        let parent = wal_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let pg_wal = fs::canonicalize(parent).ok()?;
        if !pg_wal.join("archive_status").is_dir() {
            return None;
        }
        // A primary and its standby archiving into one server (archive_mode = always) keep
        // separate spools.
        Some(PutSpool {
            dir: ctx
                .cfg
                .backup_directory
                .join("put-spool")
                .join(crate::fsutil::path_id(&pg_wal)),
            pg_wal,
        })
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.done"))
    }

    fn worker_lock(&self) -> PathBuf {
        self.dir.join(".worker.lock")
    }

    /// The record for `name`, checked.
    fn record(&self, name: &str) -> Result<SpoolRecord, RecordMismatch> {
        let text = crate::fsutil::open_regular(&self.record_path(name))
            .and_then(|f| {
                let mut text = String::new();
                f.take(64 << 10).read_to_string(&mut text)?;
                Ok(text)
            })
            .map_err(|_| RecordMismatch::Unreadable)?;
        serde_json::from_str::<SpoolRecord>(text.trim_end())
            .map_err(|_| RecordMismatch::Unreadable)?
            .checked()
    }

    /// Writes a record atomically (temporary file, rename). Not synced: it is written after
    /// the copy it describes is durable, and a record lost in a power cut only costs the
    /// call a second, identical, upload.
    fn write_record(&self, record: &SpoolRecord) -> io::Result<()> {
        let target = self.record_path(&record.name);
        let temp = self
            .dir
            .join(format!(".{}.{}.tmp", record.name, std::process::id()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = crate::fsutil::open_no_follow(&mut options, &temp, false)?;
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
        drop(file);
        fs::rename(&temp, &target)
    }

    /// The WAL names with a record.
    fn records(&self) -> BTreeSet<String> {
        self.wal_names("", ".done")
    }

    /// The WAL names with a claim file (held or left behind).
    fn claims(&self) -> BTreeSet<String> {
        self.wal_names(".", ".busy")
    }

    /// The WAL names of the spool's files named `<prefix><WAL><suffix>`.
    fn wal_names(&self, prefix: &str, suffix: &str) -> BTreeSet<String> {
        fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let file = e.file_name();
                        let name = file.to_str()?.strip_prefix(prefix)?.strip_suffix(suffix)?;
                        name.parse::<WalFileName>().ok().map(|_| name.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes `.<name>.busy`: `Ok(None)` when someone else holds it.
    fn try_claim(&self, name: &str) -> io::Result<Option<Claim>> {
        let path = self.dir.join(format!(".{name}.busy"));
        match LockFile::flock(&path, false) {
            Ok(lock) => Ok(Some(Claim { path, _lock: lock })),
            Err(LockError::Busy { .. }) => Ok(None),
            Err(LockError::Io(_, e)) => Err(e),
        }
    }

    /// Starts the worker unless one runs for this `pg_wal`.
    fn ensure_worker(&self, ctx: &ServerCtx<'_>, wal_path: &Path) {
        if matches!(crate::lock::holder(&self.worker_lock()), Ok(Some(_))) {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // What the worker has to say goes to a log in the spool (the calls report failures),
        // appended, and started afresh once it passes 1 MiB.
        let log_path = self.dir.join("worker.log");
        let restart = fs::symlink_metadata(&log_path).is_ok_and(|m| m.len() > 1 << 20);
        let log = crate::fsutil::open_no_follow(
            fs::OpenOptions::new()
                .append(!restart)
                .write(true)
                .create(true)
                .truncate(restart),
            &log_path,
            false,
        )
        .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from);
        let mut command = std::process::Command::new(exe);
        command
            .arg(ctx.cfg.config_flag())
            .arg(ctx.config_path)
            .args(["put-wal", &ctx.cfg.name])
            .arg(self.pg_wal.join(wal_path.file_name().unwrap_or_default()))
            .arg("--push-ahead-worker")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        // Its own process group: PostgreSQL signals the archiver's group when it stops, and
        // the worker finishes what it has in hand instead.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let _ = command.spawn();
    }
}

/// A file's identity, from its metadata.
fn identity_of(meta: &fs::Metadata) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    FileIdentity {
        device: meta.dev(),
        inode: meta.ino(),
        size: meta.len(),
        modified_ns: ns(meta.mtime(), meta.mtime_nsec()),
        changed_ns: ns(meta.ctime(), meta.ctime_nsec()),
    }
}

/// The identity of the file at `path` (never through a link, never a FIFO).
fn identity_at(path: &Path) -> io::Result<FileIdentity> {
    Ok(identity_of(&crate::fsutil::open_regular(path)?.metadata()?))
}

/// Size and SHA-256 of a file, read as it is now (never through a link or from a FIFO).
fn digest_file(path: &Path) -> io::Result<(u64, String)> {
    digest_open(crate::fsutil::open_regular(path)?)
}

/// Size and SHA-256 of an open file, from its start.
fn digest_open(mut file: fs::File) -> io::Result<(u64, String)> {
    let mut digest = ContentDigest::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                digest.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((size, digest.finish()))
}

/// A `put-wal` call with `archive_async`, before archiving `wal_path` itself: starts the worker
/// when it is not running, and acknowledges the WAL from the worker's record when there is
/// one for these exact bytes (waiting while the worker has it in hand). `None` when
/// `wal_path` is not in a `pg_wal`.
pub fn before_put(
    ctx: &ServerCtx<'_>,
    wal_path: &Path,
    file_name: &str,
    ui: &Ui,
) -> anyhow::Result<Option<BeforePut>> {
    let Some(spool) = PutSpool::new(ctx, wal_path) else {
        ui.verbose(format_args!(
            "archive_async: {} is not in a pg_wal with archive_status/; archiving it alone",
            wal_path.display()
        ));
        return Ok(None);
    };
    ctx.fs.create_dir_durable(&spool.dir)?;
    spool.ensure_worker(ctx, wal_path);
    let archive = ctx.archive_root();
    let acknowledged = |ui: &Ui| -> anyhow::Result<Option<SpoolRecord>> {
        // None, or unreadable (a torn write, a foreign file): archive it.
        let Ok(record) = spool.record(file_name) else {
            return Ok(None);
        };
        // The same untouched file: a stat. Otherwise its bytes decide.
        let verdict = match record.compare(file_name, &archive, &identity_at(wal_path)?) {
            Ok(Comparison::SameFile) => Ok(()),
            Ok(Comparison::HashToCompare) => {
                let (size, sha256) = digest_file(wal_path)?;
                record.acknowledges(file_name, size, &sha256, &archive)
            }
            Err(e) => Err(e),
        };
        match verdict {
            Ok(()) => {
                // Used once: PostgreSQL marks the WAL done after this call, and a retry of
                // the same call (a crash before it did) archives it again, identically.
                let _ = fs::remove_file(spool.record_path(file_name));
                Ok(Some(record))
            }
            Err(e) => {
                ui.warn(format_args!(
                    "{file_name}: {e}; not acknowledged from the worker's record, archiving it now"
                ));
                let _ = fs::remove_file(spool.record_path(file_name));
                Ok(None)
            }
        }
    };
    if let Some(record) = acknowledged(ui)? {
        return Ok(Some(BeforePut::Done(record)));
    }
    let start = Instant::now();
    let claim = loop {
        if let Some(claim) = spool.try_claim(file_name)? {
            break claim;
        }
        // The worker is archiving it: wait, then use its record.
        if start.elapsed() > BUSY_WAIT {
            anyhow::bail!(
                "{file_name}: the archive_async worker has held it for {} s",
                BUSY_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // The worker may have finished it between the two looks.
    if let Some(record) = acknowledged(ui)? {
        return Ok(Some(BeforePut::Done(record)));
    }
    Ok(Some(BeforePut::Claimed(claim)))
}

/// `put-wal --push-ahead-worker`: archives PostgreSQL's ready WAL in its own order, `jobs` at a
/// time, leaving a record for each durable copy; exits when it has been idle for [`LINGER`] or
/// after a failure (the call for that WAL archives it and reports why). Best effort by design:
/// nothing it does or fails to do can make a call acknowledge what is not archived.
pub fn worker(ctx: &ServerCtx<'_>, wal_path: &Path, jobs: usize, ui: &Ui) -> anyhow::Result<u8> {
    let Some(spool) = PutSpool::new(ctx, wal_path) else {
        return Ok(0);
    };
    ctx.fs.create_dir_durable(&spool.dir)?;
    let Ok(lock) = LockFile::flock(&spool.worker_lock(), false) else {
        return Ok(0); // another worker pushes this pg_wal
    };
    let archive = ctx.archive_root();
    // WAL a thread has in hand or a call archives, and WAL that failed: not taken again.
    let busy = Mutex::new(BTreeSet::<String>::new());
    let failed = Mutex::new(BTreeSet::<String>::new());
    let stop = AtomicBool::new(false);
    let take = || -> Option<WalFileName> {
        let ready = crate::dropped::ready_in(&spool.pg_wal).unwrap_or_default();
        let done = spool.records();
        let mut busy = busy.lock().unwrap_or_else(PoisonError::into_inner);
        let failed = failed.lock().unwrap_or_else(PoisonError::into_inner);
        let next = next_to_push(&ready, &done, &busy, &failed)?;
        busy.insert(next.to_string());
        Some(next)
    };
    let clean = || {
        let ready = crate::dropped::ready_in(&spool.pg_wal).unwrap_or_default();
        for stale in stale_records(&spool.records(), &ready) {
            let _ = fs::remove_file(spool.record_path(stale));
        }
        // Claims left by a call that exited without letting go (a drop by archive_queue_max
        // mid-upload, a kill): removed once free, for WAL no longer ready.
        for stale in stale_records(&spool.claims(), &ready) {
            if let Ok(Some(claim)) = spool.try_claim(stale) {
                drop(claim);
            }
        }
    };
    clean();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, 64) {
            scope.spawn(|| {
                let mut idle_since = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let Some(name) = take() else {
                        if idle_since.elapsed() > LINGER {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let file_name = name.to_string();
                    // A call holds it: it archives it itself.
                    let Ok(Some(claim)) = spool.try_claim(&file_name) else {
                        continue;
                    };
                    if !push_one(ctx, &spool, &archive, name, &file_name, ui) {
                        failed
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(file_name);
                        stop.store(true, Ordering::SeqCst);
                    }
                    drop(claim);
                    let _ = lock.touch();
                    idle_since = Instant::now();
                }
            });
        }
    });
    clean();
    Ok(0)
}

/// Archives one ready WAL and records it; false when archiving it failed.
fn push_one(
    ctx: &ServerCtx<'_>,
    spool: &PutSpool,
    archive: &str,
    name: WalFileName,
    file_name: &str,
    ui: &Ui,
) -> bool {
    if spool.record(file_name).is_ok() {
        return true; // done meanwhile
    }
    let path = spool.pg_wal.join(file_name);
    // Gone: PostgreSQL recycled it after a call archived it; nothing to do.
    let Ok(file) = crate::fsutil::open_regular(&path) else {
        return true;
    };
    let Ok(meta) = file.metadata() else {
        return true;
    };
    let identity = identity_of(&meta);
    let Ok(digest) = digest_open(file) else {
        return true;
    };
    let key = match super::wal_io::put_wal_archiving(ctx, &path, file_name, name, &meta, ui) {
        Ok((0, key)) => key.unwrap_or_default(),
        Ok(_) => return false,
        Err(e) => {
            ui.error(format_args!("{file_name}: {e:#}"));
            return false;
        }
    };
    // The record names the bytes archived: the file must not have changed since it was
    // hashed (its change time would have moved).
    if identity_at(&path).ok() != Some(identity) || digest.0 != identity.size {
        ui.warn(format_args!(
            "{file_name} changed while it was archived; no record"
        ));
        return true;
    }
    let record = SpoolRecord {
        name: file_name.to_owned(),
        size: digest.0,
        sha256: digest.1,
        archive: archive.to_owned(),
        key,
        identity: Some(identity),
    };
    if let Err(e) = spool.write_record(&record) {
        ui.warn(format_args!("{file_name}: cannot write its record: {e}"));
    }
    true
}
