//! What the guest asks of its runner beyond WASI preview 1:
//! - directory fsync, which wasmtime's preview 1 does not offer (`fd_sync` on a directory is
//!   `EBADF`) and without which a renamed or linked WAL file is not durable;
//! - removing archived sources in the background, as the native archiver's removal thread
//!   does: the guest has no threads, and inline removals cost about 4 ms per 16 MiB WAL.

use std::io;
use std::path::Path;

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
}

/// [`walvault::fsutil::fsync_dir`] for the guest.
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

/// [`walvault::queue_dir::BackgroundRemoval::queue`] for the guest.
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

/// [`walvault::queue_dir::BackgroundRemoval::finish`] for the guest.
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
