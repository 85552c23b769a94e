//! Durable file-system primitives: temp file + fsync + atomic rename/link + directory fsync.
//!
//! A WAL file reaches its final name only complete and synced, and the directory entry is
//! synced too, so after a crash a name either holds the whole file or does not exist.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::faults::{FsEvent, journal};
use crate::lock::{LockError, LockFile};
use crate::platform::Platform;

/// Buffer size for streaming WAL between files. Small enough that a chunk is still in the CPU
/// cache when the kernel copies it into the page cache: with 1 MiB buffers that copy took
/// most of the time of an uncompressed archive run.
pub const IO_BUF: usize = 128 << 10;

/// Makes every file and directory this process creates private to its user (files 0600,
/// directories 0700), or readable by its group too with `group_access` (0640 and 0750),
/// whatever umask it was started with: archived WAL holds the whole database, and PostgreSQL
/// keeps `pg_wal` the same way (its `--allow-group-access` is the group option). Child
/// processes (hooks, `pg_receivewal`) inherit it. Called once at start-up, before any file is
/// created.
#[cfg(all(unix, feature = "native"))]
pub fn restrict_umask(group_access: bool) {
    let mask = if group_access { 0o027 } else { 0o077 };
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(mask));
}

/// The durable file-system operations, on one [`Platform`]: everything that syncs a
/// directory, names a temporary file or takes a lock goes through it, so the same code
/// serves the native CLI and the WASI guest. Cheap to copy; the server context carries one.
#[derive(Clone, Copy, Debug)]
pub struct Fs {
    platform: &'static dyn Platform,
}

impl Default for Fs {
    fn default() -> Self {
        Fs::native()
    }
}

impl Fs {
    /// On the native platform.
    pub fn native() -> Fs {
        Fs {
            platform: &crate::platform::NATIVE,
        }
    }

    /// On `platform`.
    pub fn on(platform: &'static dyn Platform) -> Fs {
        Fs { platform }
    }

    /// The platform.
    pub fn platform(&self) -> &'static dyn Platform {
        self.platform
    }

    /// Syncs a directory, making entries created, renamed or removed in it durable.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.platform.sync_dir(dir)?;
        journal(FsEvent::SyncDir(dir));
        Ok(())
    }

    /// Takes the lock at `path` (see [`crate::lock`]).
    pub fn lock(&self, path: &Path, blocking: bool) -> Result<LockFile, LockError> {
        self.platform.lock(path, blocking)
    }

    /// Creates `dir` and any missing parents, syncing each new entry into its parent.
    /// Returns whether anything was created.
    pub fn create_dir_durable(&self, dir: &Path) -> io::Result<bool> {
        if dir.is_dir() {
            return Ok(false);
        }
        let mut missing = Vec::new();
        let mut cursor = dir;
        while !cursor.exists() {
            missing.push(cursor);
            match cursor.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => cursor = parent,
                _ => break,
            }
        }
        for path in missing.into_iter().rev() {
            journal(FsEvent::Mkdir(path));
            match fs::create_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => continue,
                Err(e) => return Err(e),
            }
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.sync_dir(parent)?;
            }
        }
        Ok(true)
    }
}

/// Opens a file that must be a regular file, for reading, without following a symbolic link
/// and without blocking: a queue entry is named by whoever can write to the queue, and a link
/// there could point at any file the archiver can read (which would then be archived or served
/// to a recovery), a FIFO would block the run (and its lock) for ever. The type is checked on
/// the opened file, so there is no window between the check and the open.
///
/// In a WASI guest links are refused where the queue is listed (the listing does not follow
/// them) and the runner's sandbox keeps every open inside the preopened directories.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = open_no_follow(OpenOptions::new().read(true), path, true)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: {}, not a regular file: refused",
                path.display(),
                describe_type(kind)
            ),
        ));
    }
    Ok(file)
}

/// Opens `path` with `options`, never through a symbolic link at its last component
/// (`O_NOFOLLOW`), and with `nonblocking` without waiting on a FIFO (`O_NONBLOCK`): the
/// refusal of a link names it, other errors name the path. (In a WASI guest only the
/// sandbox's own rules apply.)
pub fn open_no_follow(
    options: &mut OpenOptions,
    path: &Path,
    nonblocking: bool,
) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let nonblock = if nonblocking { libc::O_NONBLOCK } else { 0 };
        options.custom_flags(libc::O_NOFOLLOW | nonblock);
    }
    #[cfg(not(unix))]
    let _ = nonblocking;
    options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a symbolic link, refused (walvault never follows one)",
                    path.display()
                ),
            );
        }
        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    })
}

/// What a non-regular directory entry is, in words.
pub fn describe_type(kind: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_block_device() || kind.is_char_device() {
            return "a device";
        }
    }
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// EXDEV: a rename or link across file systems.
const EXDEV: i32 = 18;

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Fs {
    /// A hidden temporary name next to `final_name` in `dir`: `.<final>.<pid>.<n>.tmp`.
    /// Hidden and `.tmp`, so queue scans and catalogue rebuilds never mistake it for WAL.
    pub fn temp_path(&self, dir: &Path, final_name: &str) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        dir.join(format!(
            ".{final_name}.{}.{n}.tmp",
            self.platform.process_id()
        ))
    }
}

/// Whether a name is one of our temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// The pid in one of our temp names (`.<final>.<pid>.<n>.tmp`).
fn temp_owner(name: &str) -> Option<u32> {
    let inner = name.strip_suffix(".tmp")?;
    let mut parts = inner.rsplit('.');
    let _counter = parts.next()?;
    parts.next()?.parse().ok()
}

/// A temp file this old was left by a crash, not by a write in progress (a 1 GiB segment at
/// xz's slowest takes under a minute); past it a temp file goes whatever its pid says, since
/// the pid of a dead writer may have been reused by now.
pub const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Fs {
    /// Removes our temp files in `dir` whose writer is no longer running (left by a crash or
    /// a kill), or that are older than [`STALE_TEMP_AGE`]. Returns how many were removed.
    pub fn remove_dead_temp_files(&self, dir: &Path) -> io::Result<usize> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = temp_owner(&name).filter(|_| is_temp_name(&name)) else {
                continue;
            };
            let stale = || {
                entry
                    .metadata()
                    .ok()
                    .and_then(|m| last_change(&m))
                    .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_TEMP_AGE)
            };
            let me = self.platform.process_id();
            if pid != me && (!self.platform.process_alive(pid) || stale()) {
                journal(FsEvent::Unlink(&entry.path()));
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    // Its writer finished (linked and removed it) meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }
}

/// When a file last changed in any way: its status-change time, which no one can set. Not its
/// modification time: an archived copy is given its source's, so a copy being written of a
/// WAL queued for an hour would look an hour old and be removed under its writer.
fn last_change(meta: &fs::Metadata) -> Option<std::time::SystemTime> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let since = std::time::Duration::new(
            u64::try_from(meta.ctime()).ok()?,
            u32::try_from(meta.ctime_nsec()).ok()?,
        );
        std::time::UNIX_EPOCH.checked_add(since)
    }
    #[cfg(not(unix))]
    meta.modified().ok()
}

/// A temporary file removed on drop unless it was renamed into place.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
    fs: Fs,
}

impl TempFile {
    /// Creates a new, empty temp file next to `final_path`.
    pub fn create(fs: Fs, final_path: &Path) -> io::Result<(TempFile, File)> {
        Self::create_mode(fs, final_path, 0o666)
    }

    /// Creates a new, empty temp file next to `final_path` with `mode` (before the umask;
    /// ignored where files have no modes).
    pub fn create_mode(fs: Fs, final_path: &Path, mode: u32) -> io::Result<(TempFile, File)> {
        let dir = final_path
            .parent()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file");
        let path = fs.temp_path(dir, name);
        journal(FsEvent::Create(&path));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let file = options.open(&path)?;
        Ok((
            TempFile {
                path,
                armed: true,
                fs,
            },
            file,
        ))
    }

    /// Publishes the (already synced) temp file at `final_path` and syncs the directory. With
    /// `no_replace`, fails with `AlreadyExists` if something is there: a hard link is atomic
    /// create-if-absent.
    pub fn publish(self, final_path: &Path, no_replace: bool) -> io::Result<()> {
        let fs = self.fs;
        self.link_into_place(final_path, no_replace)?;
        if let Some(dir) = final_path.parent() {
            fs.sync_dir(dir)?;
        }
        Ok(())
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`TempFile::publish`] without the directory sync, for callers that sync the directory
    /// once for many files before relying on them.
    pub fn link_into_place(mut self, final_path: &Path, no_replace: bool) -> io::Result<()> {
        if no_replace {
            journal(FsEvent::Link(&self.path, final_path));
            fs::hard_link(&self.path, final_path)?;
            // The link is in place; the temp name is just a second name to drop.
            journal(FsEvent::Unlink(&self.path));
            let _ = fs::remove_file(&self.path);
        } else {
            journal(FsEvent::Rename(&self.path, final_path));
            fs::rename(&self.path, final_path)?;
        }
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            journal(FsEvent::Unlink(&self.path));
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Fs {
    /// Writes a file durably through `fill`: temp file in the target directory, fsync, then
    /// link (`no_replace`) or rename into place, then fsync the directory. Returns `fill`'s value.
    pub fn write_durable<T>(
        &self,
        final_path: &Path,
        no_replace: bool,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> io::Result<T> {
        self.write_durable_mode(final_path, no_replace, 0o666, fill)
    }

    /// [`Fs::write_durable`] with the file created with `mode` (before the umask): 0o600 for
    /// a file holding secrets, private whatever `group_access` makes the umask.
    pub fn write_durable_mode<T>(
        &self,
        final_path: &Path,
        no_replace: bool,
        mode: u32,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<T>,
    ) -> io::Result<T> {
        let (temp, file) = TempFile::create_mode(*self, final_path, mode)?;
        let mut writer = BufWriter::with_capacity(IO_BUF, file);
        let value = fill(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        journal(FsEvent::SyncFile(temp.path()));
        drop(file);
        temp.publish(final_path, no_replace)?;
        Ok(value)
    }

    /// Moves the entry `src` to `dst` durably and only if `dst` does not exist
    /// (`AlreadyExists` otherwise: nothing is ever replaced). Whatever `src` is, it is moved as
    /// it is and never opened through: a symbolic link stays a link, a FIFO is not read. On one
    /// file system it is a hard link then an unlink (atomic create-if-absent); across file
    /// systems a regular file is copied to a temp name, synced and linked into place, and a link
    /// is re-created; a FIFO, socket or device cannot cross and is left where it is. Both
    /// directories are synced.
    pub fn move_no_replace(&self, src: &Path, dst: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(src)?;
        if meta.is_dir() {
            // A directory cannot be hard-linked; nothing else renames into its place meanwhile
            // (errors/ is walvault's, and the caller holds the server's lock).
            if fs::symlink_metadata(dst).is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            journal(FsEvent::Rename(src, dst));
            fs::rename(src, dst)?;
        } else {
            journal(FsEvent::Link(src, dst));
            match fs::hard_link(src, dst) {
                Ok(()) => {
                    journal(FsEvent::Unlink(src));
                    fs::remove_file(src)?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
                Err(e) if e.raw_os_error() == Some(EXDEV) => self.move_across(src, dst, &meta)?,
                // A file system without hard links.
                Err(_) if fs::symlink_metadata(dst).is_ok() => {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                Err(_) => {
                    journal(FsEvent::Rename(src, dst));
                    fs::rename(src, dst)?;
                }
            }
        }
        if let Some(dir) = dst.parent() {
            self.sync_dir(dir)?;
        }
        if let Some(dir) = src.parent() {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    fn move_across(&self, src: &Path, dst: &Path, meta: &fs::Metadata) -> io::Result<()> {
        if meta.is_file() {
            let mut input = open_regular(src)?;
            self.write_durable(dst, true, |w| io::copy(&mut input, w))?;
        } else if meta.file_type().is_symlink() {
            journal(FsEvent::Create(dst));
            #[cfg(unix)]
            std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
            #[cfg(not(unix))]
            return Err(io::Error::other(
                "cannot move a symbolic link to another file system",
            ));
        } else {
            return Err(io::Error::other(format!(
                "{} is {} and errors/ is on another file system: remove it by hand",
                src.display(),
                describe_type(meta.file_type())
            )));
        }
        journal(FsEvent::Unlink(src));
        fs::remove_file(src)
    }
}

/// A stable short name for a directory (FNV-1a of its path, 16 hex digits): the spools of
/// `get-wal --prefetch` and `archive_async` are kept per directory of PostgreSQL's.
pub fn path_id(path: &Path) -> String {
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FS: Fs = Fs {
        platform: &crate::platform::NATIVE,
    };

    #[test]
    fn write_durable_creates_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("a/b/file");
        FS.create_dir_durable(target.parent().expect("parent"))
            .expect("mkdir");
        FS.write_durable(&target, true, |w| w.write_all(b"one"))
            .expect("first");
        let err = FS
            .write_durable(&target, true, |w| w.write_all(b"two"))
            .expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).expect("read"), b"one");
        FS.write_durable(&target, false, |w| w.write_all(b"three"))
            .expect("replace");
        assert_eq!(fs::read(&target).expect("read"), b"three");
        let names: Vec<_> = fs::read_dir(target.parent().expect("parent"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["file"], "no temp files left");
    }

    #[test]
    fn failed_fill_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("f");
        let err = FS.write_durable(&target, true, |w| {
            w.write_all(b"partial")?;
            Err::<(), _>(io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 0);
    }

    #[test]
    fn dead_writers_temp_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join(".000000010000000000000001.999999999.3.tmp"),
            b"x",
        )
        .expect("dead");
        let mine = format!(".000000010000000000000002.{}.0.tmp", std::process::id());
        fs::write(dir.path().join(&mine), b"x").expect("mine");
        fs::write(dir.path().join("000000010000000000000003"), b"x").expect("wal");
        assert_eq!(FS.remove_dead_temp_files(dir.path()).expect("clean"), 1);
        assert!(
            dir.path().join(&mine).exists() && dir.path().join("000000010000000000000003").exists()
        );
    }

    #[test]
    fn a_live_writers_temp_file_is_kept_whatever_its_modification_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Written by a live process (pid 1), with its source's mtime of two hours ago.
        let temp = dir.path().join(".000000010000000000000001.1.0.tmp");
        fs::write(&temp, b"x").expect("temp");
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&temp)
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("mtime");
        assert_eq!(FS.remove_dead_temp_files(dir.path()).expect("clean"), 0);
        assert!(temp.exists(), "its writer may be about to link it");
    }

    #[test]
    fn move_never_replaces_and_never_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        fs::write(p("s"), b"x").expect("write");
        fs::write(p("s2"), b"y").expect("write");
        fs::create_dir(p("d")).expect("mkdir");
        FS.move_no_replace(&p("s"), &p("d/t")).expect("move");
        assert_eq!(fs::read(p("d/t")).expect("read"), b"x");
        assert!(!p("s").exists());
        let err = FS.move_no_replace(&p("s2"), &p("d/t")).expect_err("taken");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(p("d/t")).expect("read"), b"x", "not replaced");
        assert!(p("s2").exists(), "the source stays");
        #[cfg(unix)]
        {
            fs::write(p("secret"), b"s").expect("secret");
            std::os::unix::fs::symlink(p("secret"), p("link")).expect("symlink");
            FS.move_no_replace(&p("link"), &p("d/link"))
                .expect("move link");
            assert!(
                fs::symlink_metadata(p("d/link"))
                    .expect("moved")
                    .is_symlink()
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn open_regular_refuses_links_and_fifos_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        fs::write(p("f"), b"wal").expect("write");
        std::os::unix::fs::symlink(p("f"), p("link")).expect("symlink");
        let fifo = p("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        assert!(open_regular(&p("f")).is_ok());
        let link = open_regular(&p("link")).expect_err("link");
        assert!(link.to_string().contains("symbolic link"), "{link}");
        // Would block for ever without O_NONBLOCK (no writer).
        let fifo = open_regular(&fifo).expect_err("fifo");
        assert!(fifo.to_string().contains("a FIFO"), "{fifo}");
    }
}
