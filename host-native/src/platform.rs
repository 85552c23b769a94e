//! What differs between the targets the file-system host runs on, passed in (in
//! [`crate::fsutil::Fs`], carried by the server context) rather than set in globals.
//!
//! Natively walvault is a process with threads, `flock`, directory fsync and `/proc`: that is
//! [`Native`]. As a WASI guest under `walvault-wasi` it has none of these and asks its runner
//! instead; the guest implements this trait over the runner's imports (`host-wasi/guest`).
//! Everything else in the host reads the same for both targets.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::lock::{LockError, LockFile};
use crate::queue_dir::RemovalThread;

/// The platform services the file-system host needs.
pub trait Platform: Send + Sync + fmt::Debug {
    /// Syncs a directory, making entries created, renamed or removed in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// The pid temporary names carry: a number no other live writer uses, valid exactly as
    /// long as this program runs.
    fn process_id(&self) -> u32;

    /// Whether the writer `pid` of a temporary file may still be running; `true` whenever
    /// that cannot be told, so that nothing in progress is ever removed.
    fn process_alive(&self, pid: u32) -> bool;

    /// Takes the lock at `path`, waiting for it if `blocking`.
    fn lock(&self, path: &Path, blocking: bool) -> Result<LockFile, LockError>;

    /// A remover that unlinks released sources in the background while the archiver goes on,
    /// or `None` to remove them inline.
    fn start_removal(&self) -> Option<Box<dyn Removal>>;
}

/// Removes files in the background (see [`Platform::start_removal`]).
pub trait Removal: fmt::Debug {
    /// Hands a file over; gives it back when the remover cannot take it (the caller then
    /// removes it inline).
    fn remove_later(&mut self, path: PathBuf) -> Result<(), PathBuf>;

    /// Waits for every file handed over; returns `path: error` for each that failed.
    fn finish(self: Box<Self>) -> Vec<String>;
}

/// walvault as a native process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

/// The one [`Native`] platform, for [`crate::fsutil::Fs::native`].
pub static NATIVE: Native = Native;

impl Platform for Native {
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn process_id(&self) -> u32 {
        std::process::id()
    }

    fn process_alive(&self, pid: u32) -> bool {
        // Alive: a `/proc` entry that is not a zombie (a killed writer whose parent died stays
        // a zombie where nothing reaps orphans, as in some containers). The state follows
        // the parenthesised command name.
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .is_none_or(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => false,
        }
    }

    fn lock(&self, path: &Path, blocking: bool) -> Result<LockFile, LockError> {
        LockFile::flock(path, blocking)
    }

    fn start_removal(&self) -> Option<Box<dyn Removal>> {
        let thread = RemovalThread::spawn(|path: PathBuf| {
            fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))
        })
        .ok()?;
        Some(Box::new(ThreadRemoval(thread)))
    }
}

/// The native remover: a thread.
#[derive(Debug)]
struct ThreadRemoval(RemovalThread<PathBuf>);

impl Removal for ThreadRemoval {
    fn remove_later(&mut self, path: PathBuf) -> Result<(), PathBuf> {
        self.0.send(path)
    }

    fn finish(self: Box<Self>) -> Vec<String> {
        self.0.finish()
    }
}
