//! What the guest asks of its runner beyond WASI preview 1, as the guest's
//! [`Platform`](walvault::platform::Platform):
//! - directory fsync, which wasmtime's preview 1 does not offer (`fd_sync` on a directory is
//!   `EBADF`) and without which a renamed or linked WAL file is not durable;
//! - removing archived sources in the background, as the native archiver's removal thread
//!   does: the guest has no threads, and inline removals cost about 4 ms per 16 MiB WAL;
//! - the server's locks, which the runner holds on the host (WASI has no `flock`): the guest
//!   may use only those, and records its progress in them through the runner.

use std::io;
use std::path::{Path, PathBuf};

use walvault::lock::{HeldLock, LockError, LockFile};
use walvault::platform::{Platform, Removal};

// The declaration is the only unsafe part: the call itself is safe (see below).
#[allow(unsafe_code)]
#[link(wasm_import_module = "walvault")]
unsafe extern "C" {
    /// Syncs the directory named by the UTF-8 bytes at `ptr..ptr + len` of this module's
    /// memory. Safe for any arguments: the runner bounds-checks the range against the memory
    /// and refuses paths outside the preopened directories. Returns 0, -1 when refused, or the
    /// host's errno.
    safe fn sync_dir(ptr: *const u8, len: usize) -> i32;

    /// Hands the file named by the UTF-8 bytes at `ptr..ptr + len` to the runner for removal
    /// in the background. Safe as `sync_dir`. Returns 0, or -1 when refused: not inside a
    /// directory the guest may write, or with a `..` component.
    safe fn remove_later(ptr: *const u8, len: usize) -> i32;

    /// Waits for every removal handed over, writes `path: error` lines for those that failed
    /// to `ptr..ptr + cap` (cut at `cap`) and returns the length of the whole text.
    fn removals_finish(ptr: *mut u8, cap: usize) -> usize;

    /// Records progress in the lock file named by the UTF-8 bytes at `ptr..ptr + len`, which
    /// the runner holds for the guest (its modification time becomes now). Safe as
    /// `sync_dir`. Returns 0, -1 when the runner holds no such lock, or the host's errno.
    safe fn lock_progress(ptr: *const u8, len: usize) -> i32;
}

/// The guest's platform: its runner.
#[derive(Debug)]
pub struct Runner {
    /// The runner's pid, which temp names carry (the guest has none of its own, and lives
    /// exactly as long as its runner).
    pub pid: u32,
    /// The locks the runner holds for the guest.
    pub locks: Vec<PathBuf>,
}

impl Platform for Runner {
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fsync_dir(dir)
    }

    fn process_id(&self) -> u32 {
        self.pid
    }

    fn process_alive(&self, _pid: u32) -> bool {
        // The guest cannot see other processes: every writer counts as alive, so nothing in
        // progress is ever removed (the native host cleans up after the dead).
        true
    }

    fn lock(&self, path: &Path, _blocking: bool) -> Result<LockFile, LockError> {
        if self.locks.iter().any(|held| held == path) {
            Ok(LockFile::held(Box::new(RunnerLock(path.to_owned()))))
        } else {
            Err(LockError::Io(
                path.to_owned(),
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the WASI guest cannot lock files itself, and its runner does not hold this lock",
                ),
            ))
        }
    }

    fn start_removal(&self) -> Option<Box<dyn Removal>> {
        Some(Box::new(RunnerRemoval))
    }
}

/// A lock the runner holds; it is released when the runner ends, after the guest.
#[derive(Debug)]
struct RunnerLock(PathBuf);

impl HeldLock for RunnerLock {
    fn touch(&self) -> io::Result<()> {
        touch_lock(&self.0)
    }
}

/// Records progress in a lock the runner holds.
pub fn touch_lock(path: &Path) -> io::Result<()> {
    let name = path
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?;
    match lock_progress(name.as_ptr(), name.len()) {
        0 => Ok(()),
        -1 => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the runner holds no lock {name}"),
        )),
        errno => Err(io::Error::other(format!(
            "the runner could not record progress in {name} (errno {errno})"
        ))),
    }
}

/// Background removal by the runner.
#[derive(Debug)]
struct RunnerRemoval;

impl Removal for RunnerRemoval {
    fn remove_later(&mut self, path: PathBuf) -> Result<(), PathBuf> {
        queue_removal(&path).map_err(|_| path)
    }

    fn finish(self: Box<Self>) -> Vec<String> {
        finish_removals()
    }
}

/// [`Platform::sync_dir`] for the guest.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    let path = dir
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?;
    let kind = match sync_dir(path.as_ptr(), path.len()) {
        0 => return Ok(()),
        -1 => io::ErrorKind::PermissionDenied,
        // Linux errno values.
        1 | 13 => io::ErrorKind::PermissionDenied,
        2 => io::ErrorKind::NotFound,
        28 => io::ErrorKind::StorageFull,
        _ => io::ErrorKind::Other,
    };
    Err(io::Error::new(
        kind,
        format!("the runner could not sync the directory {path}"),
    ))
}

/// Hands a file to the runner for removal in the background.
pub fn queue_removal(path: &Path) -> io::Result<()> {
    let name = path
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?;
    match remove_later(name.as_ptr(), name.len()) {
        0 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the runner refused to remove {name}"),
        )),
    }
}

/// Waits for the runner's removals; returns the ones that failed.
pub fn finish_removals() -> Vec<String> {
    let mut text = vec![0u8; 4096];
    // SAFETY: the runner writes at most `text.len()` bytes at `text`'s start, inside this
    // buffer, which lives across the call.
    #[allow(unsafe_code)]
    let len = unsafe { removals_finish(text.as_mut_ptr(), text.len()) };
    let cut = len > text.len();
    text.truncate(len);
    let mut failures: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .map(str::to_owned)
        .collect();
    if cut {
        failures.push("(more)".to_owned());
    }
    failures
}
