//! A WAL archive in a local directory (Barman's `wals/`), implementing the core's storage
//! contract with the durability rules of [`crate::fsutil`].

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use walvault_core::storage::{
    ObjectMeta, Op, Payload, PutMode, StorageError, WalStore, run_payload, validate_key,
};

use crate::faults::{FsEvent, journal};
use crate::fsutil::{self, Fs, TempFile};

/// A directory holding objects as files; keys are relative paths (at most `hash/name` deep in
/// practice, but any depth works).
///
/// A put fsyncs the file before linking it into place; the directory entries are synced by
/// [`WalStore::sync`], once per directory per batch instead of once per file.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    fs: Fs,
    /// Directories whose entries `sync` must make durable: those of every key put, or found
    /// existing (a killed run may have linked a file without syncing its directory).
    unsynced: Mutex<BTreeSet<PathBuf>>,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(fs: Fs, root: impl Into<PathBuf>) -> Self {
        LocalStore {
            root: root.into(),
            fs,
            unsynced: Mutex::new(BTreeSet::new()),
        }
    }

    fn remember_dir(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            self.unsynced
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(dir.to_owned());
        }
    }

    /// The file behind a key.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        out: &mut Vec<ObjectMeta>,
        prefix: &str,
    ) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                // Descend only where the prefix can still match.
                if prefix.starts_with(&format!("{key}/"))
                    || key.starts_with(prefix)
                    || prefix.is_empty()
                {
                    self.walk(&entry.path(), &key, out, prefix)?;
                }
            } else if key.starts_with(prefix) {
                let size = entry.metadata()?.len();
                out.push(ObjectMeta { key, size });
            }
        }
        Ok(())
    }
}

/// Copies a verbatim payload's file into the empty `dest` with `std::io::copy`, which on Linux
/// copies inside the kernel (`copy_file_range`): uncompressed archiving then costs one copy
/// of the data instead of two. `Ok(None)` when the payload is not a plain file or the copy
/// went wrong; `dest` is then empty again and the caller streams the payload, which reports
/// the problem precisely (unreadable source, changed size, full disk).
fn copy_verbatim(payload: &dyn Payload, mut dest: &File) -> io::Result<Option<u64>> {
    let Some((source, size)) = payload.verbatim_file() else {
        return Ok(None);
    };
    // Through a BufReader: Linux still copies in the kernel (std's copy sees through it),
    // elsewhere (WASI) it sets the chunk size, which is otherwise 8 KiB: a host call each.
    let copy = fsutil::open_regular(source).and_then(|src| {
        io::copy(
            &mut io::BufReader::with_capacity(crate::fsutil::IO_BUF, src),
            &mut dest,
        )
    });
    match copy {
        Ok(n) if n == size => Ok(Some(n)),
        _ => {
            dest.set_len(0)?;
            io::Seek::rewind(&mut dest)?;
            Ok(None)
        }
    }
}

/// Links a queued, uncompressed WAL into place instead of copying it (Barman renames; this is
/// as cheap and keeps the queue entry until the batch releases it): the same guarantees as a
/// copy. `Ok(true)` once linked, its data synced; `Ok(false)` when a link is not possible or
/// not safe, and the caller copies: another file system, a file this user does not own (its
/// mode could not be made private), a file with other links (someone else's name for it), a
/// size other than the validated one. An existing `dest` is `AlreadyExists`: never replaced.
#[cfg(unix)]
fn link_verbatim(source: &Path, size: u64, dest: &Path) -> io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(file) = fsutil::open_regular(source) else {
        return Ok(false);
    };
    let meta = file.metadata()?;
    let Some(dir) = dest.parent().map(fs::metadata).transpose()? else {
        return Ok(false);
    };
    // The archive directory is walvault's own: same file system, same owner.
    if dir.dev() != meta.dev() || dir.uid() != meta.uid() || meta.len() != size || meta.nlink() != 1
    {
        return Ok(false);
    }
    // Private as a copy would be: the archive directory's mode without execute bits (0600, or
    // 0640 with group_access).
    let mode = dir.permissions().mode() & 0o750 & !0o111;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    crate::faults::failpoint("temp-written");
    // Whoever queued it may not have synced it: the archived name must not outlive its data.
    file.sync_all()?;
    journal(FsEvent::SyncFile(source));
    crate::faults::failpoint("file-synced");
    journal(FsEvent::Link(source, dest));
    match fs::hard_link(source, dest) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // EPERM (protected_hardlinks), EXDEV, EMLINK, a file system without links: copy.
        Err(_) => Ok(false),
    }
}

#[cfg(not(unix))]
fn link_verbatim(_source: &Path, _size: u64, _dest: &Path) -> io::Result<bool> {
    Ok(false)
}

/// Seconds since the epoch as a time (`None` for a time before the epoch or not finite).
fn system_time(seconds: f64) -> Option<std::time::SystemTime> {
    let since = std::time::Duration::try_from_secs_f64(seconds).ok()?;
    std::time::UNIX_EPOCH.checked_add(since)
}

impl WalStore for LocalStore {
    fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        let path = self.path_of(key)?;
        let meta = fs::metadata(&path).map_err(|e| StorageError::from_io(Op::Head, key, &e))?;
        if !meta.is_file() {
            return Err(StorageError::NotFound {
                key: key.to_owned(),
            });
        }
        self.remember_dir(&path);
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: meta.len(),
        })
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        let path = self.path_of(key)?;
        // Never through a link, never waiting on a FIFO: listings name whatever is in the
        // archive's directories, and get-wal and verify read every one of them.
        let file = fsutil::open_no_follow(fs::OpenOptions::new().read(true), &path, true)
            .map_err(|e| StorageError::from_io(Op::Get, key, &e))?;
        let meta = file
            .metadata()
            .map_err(|e| StorageError::from_io(Op::Get, key, &e))?;
        if !meta.is_file() && !meta.is_dir() {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file: refused", path.display()),
            );
            return Err(StorageError::from_io(Op::Get, key, &e));
        }
        if meta.is_dir() {
            return Err(StorageError::NotFound {
                key: key.to_owned(),
            });
        }
        self.remember_dir(&path);
        Ok(Box::new(BufReader::with_capacity(fsutil::IO_BUF, file)))
    }

    fn put(
        &self,
        key: &str,
        mode: PutMode,
        payload: &mut dyn Payload,
    ) -> Result<ObjectMeta, StorageError> {
        let path = self.path_of(key)?;
        let io_err = |e: io::Error| StorageError::from_io(Op::Put, key, &e);
        let dir = path.parent().ok_or_else(|| StorageError::InvalidKey {
            key: key.to_owned(),
            reason: "no parent directory",
        })?;
        self.fs.create_dir_durable(dir).map_err(io_err)?;
        if mode == PutMode::Create && path.exists() {
            // Found, maybe linked by a killed run whose directory fsync never happened.
            self.remember_dir(&path);
            return Err(StorageError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        if mode == PutMode::Create
            && let Some((source, size)) = payload.linkable_file()
        {
            match link_verbatim(source, size, &path) {
                Ok(true) => {
                    self.remember_dir(&path);
                    crate::faults::failpoint("linked");
                    return Ok(ObjectMeta {
                        key: key.to_owned(),
                        size,
                    });
                }
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.remember_dir(&path);
                    return Err(StorageError::AlreadyExists {
                        key: key.to_owned(),
                    });
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        let (temp, file) = TempFile::create(self.fs, &path).map_err(io_err)?;
        let (file, size) = match copy_verbatim(payload, &file).map_err(io_err)? {
            Some(size) => (file, size),
            None => {
                let mut writer = io::BufWriter::with_capacity(fsutil::IO_BUF, file);
                let size =
                    run_payload(payload, &mut writer).map_err(|f| f.into_storage_error(key))?;
                (
                    writer.into_inner().map_err(|e| io_err(e.into_error()))?,
                    size,
                )
            }
        };
        if let Some(time) = payload.modified().and_then(system_time) {
            file.set_times(fs::FileTimes::new().set_accessed(time).set_modified(time))
                .map_err(io_err)?;
        }
        crate::faults::failpoint("temp-written");
        file.sync_all().map_err(io_err)?;
        journal(FsEvent::SyncFile(temp.path()));
        crate::faults::failpoint("file-synced");
        drop(file);
        // Remembered only once linked: a `sync` running meanwhile (another chunk's commit)
        // must not consume the entry before the link exists.
        let linked = temp.link_into_place(&path, mode == PutMode::Create);
        self.remember_dir(&path);
        linked.map_err(io_err)?;
        crate::faults::failpoint("linked");
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        // Start from the deepest directory the prefix names.
        let (start, rel) = match prefix.rsplit_once('/') {
            Some((dir, _)) if validate_key(dir).is_ok() => (self.root.join(dir), dir),
            _ => (self.root.clone(), ""),
        };
        self.walk(&start, rel, &mut out, prefix)
            .map_err(|e| StorageError::from_io(Op::List, prefix, &e))?;
        out.retain(|m| !fsutil::is_temp_name(m.key.rsplit('/').next().unwrap_or(&m.key)));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        journal(FsEvent::Unlink(&path));
        fs::remove_file(&path).map_err(|e| StorageError::from_io(Op::Delete, key, &e))?;
        if let Some(dir) = path.parent() {
            self.fs
                .sync_dir(dir)
                .map_err(|e| StorageError::from_io(Op::Delete, key, &e))?;
        }
        crate::faults::failpoint("wal-deleted");
        Ok(())
    }

    /// Syncs each remembered directory and, below the root, its entry in the parent (a run
    /// killed between `mkdir` and the parent's fsync leaves a directory that exists but may
    /// not survive a crash).
    fn sync(&self) -> Result<(), StorageError> {
        let dirs =
            std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(PoisonError::into_inner));
        let mut parents = BTreeSet::new();
        for dir in &dirs {
            if dir != &self.root
                && let Some(parent) = dir.parent()
            {
                parents.insert(parent.to_owned());
            }
        }
        for dir in dirs.iter().chain(parents.difference(&dirs)) {
            if let Err(e) = self.fs.sync_dir(dir) {
                let key = dir
                    .strip_prefix(&self.root)
                    .unwrap_or(dir)
                    .display()
                    .to_string();
                // Keep them for the next attempt.
                self.unsynced
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(dirs);
                return Err(StorageError::from_io(Op::Sync, &key, &e));
            }
        }
        crate::faults::failpoint("dir-synced");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use walvault_core::storage::conformance;

    #[test]
    fn passes_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        conformance::run_all(
            &LocalStore::new(Fs::native(), dir.path().join("wals")),
            "suite",
        );
    }

    #[test]
    fn temp_files_are_not_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(Fs::native(), dir.path());
        fs::create_dir(dir.path().join("0000000100000000")).expect("mkdir");
        fs::write(
            dir.path()
                .join("0000000100000000/.000000010000000000000001.1.1.tmp"),
            b"x",
        )
        .expect("write");
        assert!(store.list("").expect("list").is_empty());
    }

    #[test]
    fn sync_covers_directories_written_or_found_and_retries_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("wals");
        let store = LocalStore::new(Fs::native(), &root);
        let pending = |s: &LocalStore| s.unsynced.lock().expect("lock").clone();
        store
            .put("0000000100000000/A", PutMode::Create, &mut &b"x"[..])
            .expect("put");
        assert_eq!(
            pending(&store),
            BTreeSet::from([root.join("0000000100000000")])
        );
        store.sync().expect("sync");
        assert!(pending(&store).is_empty());
        // A copy found by a later run is synced again before that run relies on it.
        drop(store.get("0000000100000000/A").expect("get"));
        assert_eq!(
            pending(&store),
            BTreeSet::from([root.join("0000000100000000")])
        );
        store.sync().expect("sync");
        // A directory that cannot be synced fails the sync and stays pending.
        store
            .put("0000000100000001/B", PutMode::Create, &mut &b"y"[..])
            .expect("put");
        fs::remove_dir_all(root.join("0000000100000001")).expect("rm");
        let err = store.sync().expect_err("gone");
        assert!(err.to_string().contains("0000000100000001"), "{err}");
        assert_eq!(
            pending(&store),
            BTreeSet::from([root.join("0000000100000001")])
        );
    }
}
