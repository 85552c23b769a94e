//! What the guest asks of its runner beyond WASI preview 1: directory fsync, which wasmtime's
//! preview 1 does not offer (`fd_sync` on a directory is `EBADF`) and without which a renamed
//! or linked WAL file is not durable.

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
