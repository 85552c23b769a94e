//! Lock files compatible with Barman's: `.<server>-<purpose>.lock` in the lock directory,
//! `flock`ed exclusively, the holder's pid written inside, never deleted (Barman does not
//! either, and deleting a lock file races with the next locker).
//!
//! Locks are taken through the [`crate::platform::Platform`]: natively with `flock`
//! ([`LockFile::flock`]). WASI has no `flock`: the runner (`walvault-wasi`) takes the
//! server's locks on the host before its guest starts and holds them until the guest exits,
//! and the guest's platform hands out only those (any other lock is refused), recording
//! progress through its runner.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::io::{Seek, SeekFrom, Write};
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockFile {
    held: Box<dyn HeldLock>,
}

/// A lock as its platform holds it; dropping it releases the lock.
pub trait HeldLock: Send + Sync + fmt::Debug {
    /// Records progress (see [`LockFile::touch`]).
    fn touch(&self) -> io::Result<()>;
}

/// Why a lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it (non-blocking mode); its pid if readable.
    Busy {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as written in the file.
        holder: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy {
                path,
                holder: Some(pid),
            } => write!(f, "{} is held by process {pid}", path.display()),
            LockError::Busy { path, holder: None } => {
                write!(f, "{} is held by another process", path.display())
            }
            LockError::Io(path, e) => write!(f, "cannot lock {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for LockError {}

/// The lock file path for a server and purpose (`archive-wal`, `xlogdb`, `receive-wal`).
pub fn lock_path(dir: &Path, server: &str, purpose: &str) -> PathBuf {
    dir.join(format!(".{server}-{purpose}.lock"))
}

impl LockFile {
    /// A lock held by other means than `flock` (a platform's own).
    pub fn held(held: Box<dyn HeldLock>) -> LockFile {
        LockFile { held }
    }

    /// Takes the lock with `flock`, waiting if `blocking`, else failing with
    /// [`LockError::Busy`]. (Code that has a server context takes locks through its
    /// platform, [`crate::fsutil::Fs::lock`].)
    pub fn flock(path: &Path, blocking: bool) -> Result<LockFile, LockError> {
        let io_err = |e| LockError::Io(path.to_owned(), e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut options = OpenOptions::new();
        // Never through a link: a symlink planted at the lock's name would otherwise have
        // its target truncated below. Not truncated on open: the holder's pid is only
        // replaced once the lock is ours.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = crate::fsutil::open_no_follow(&mut options, path, false).map_err(io_err)?;
        if !file.metadata().map_err(io_err)?.is_file() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        if blocking {
            file.lock().map_err(io_err)?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    return Err(LockError::Busy {
                        path: path.to_owned(),
                        holder,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(LockFile::held(Box::new(Flock(file))))
    }

    /// Records progress: the lock file's modification time becomes now, so that a run stuck
    /// while holding the lock can be told from a long one (see [`holder_info`]).
    pub fn touch(&self) -> io::Result<()> {
        self.held.touch()
    }
}

/// A lock held with `flock` on its open file.
#[derive(Debug)]
struct Flock(File);

impl HeldLock for Flock {
    fn touch(&self) -> io::Result<()> {
        self.0.set_modified(std::time::SystemTime::now())
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// A held lock as another process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's pid, as written in the file.
    pub pid: Option<u32>,
    /// When the holder last showed progress ([`LockFile::touch`]; taking the lock counts).
    pub last_progress: Option<std::time::SystemTime>,
}

/// [`holder`] with the holder's last sign of progress: `Ok(None)` when free.
pub fn holder_info(path: &Path) -> io::Result<Option<Holder>> {
    let Some(pid) = holder(path)? else {
        return Ok(None);
    };
    let last_progress = std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok();
    Ok(Some(Holder { pid, last_progress }))
}

/// Whether a lock is held, and by which pid (as written in the file), without keeping it:
/// `Ok(None)` when free or never created.
pub fn holder(path: &Path) -> io::Result<Option<Option<u32>>> {
    let file = match crate::fsutil::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            file.unlock()?;
            Ok(None)
        }
        Err(TryLockError::WouldBlock) => Ok(Some(
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        )),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_non_blocking_locker_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = lock_path(dir.path(), "pg", "archive-wal");
        assert!(path.ends_with(".pg-archive-wal.lock"));
        let held = LockFile::flock(&path, false).expect("first");
        match LockFile::flock(&path, false) {
            Err(LockError::Busy { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(
            holder(&path).expect("probe"),
            Some(Some(std::process::id()))
        );
        drop(held);
        assert_eq!(holder(&path).expect("probe"), None);
        LockFile::flock(&path, false).expect("free again");
        assert!(path.exists(), "lock files are never deleted");
    }

    #[test]
    fn a_link_at_the_lock_name_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").expect("target");
        let path = lock_path(dir.path(), "pg", "archive-wal");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let err = LockFile::flock(&path, false).expect_err("refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(holder(&path).is_err());
        assert_eq!(std::fs::read(&target).expect("read"), b"keep me");
    }
}
