//! The incoming and streaming directories as the core's [`Queue`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::UNIX_EPOCH;

use walvault_core::archive::{Queue, SourceFile};
use walvault_core::queue::{Candidate, DirEntry, EntryKind};

use crate::fsutil::{self, Fs};
use crate::platform::Removal;

/// A file to archive, opened on demand: always through [`fsutil::open_regular`], so a link or
/// a FIFO put in its place after the listing is refused, never followed or waited on.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    queued: bool,
}

impl FileSource {
    /// A source at `path` that must be copied (PostgreSQL's `pg_wal`: it recycles segment
    /// files in place, so the archive may never share one).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            queued: false,
        }
    }

    /// A file in walvault's `incoming/` or `streaming/`: written once and released after it is
    /// archived, so a store on the same file system may link it instead of copying it.
    pub fn queued(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            queued: true,
        }
    }
}

impl SourceFile for FileSource {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let file = fsutil::open_regular(&self.path)?;
        Ok(Box::new(BufReader::with_capacity(fsutil::IO_BUF, file)))
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn linkable(&self) -> bool {
        self.queued
    }
}

/// Seconds since the epoch, as a float (Barman's catalogue time).
pub fn mtime_of(meta: &fs::Metadata) -> f64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A queue directory's entries, as the core sees them, and the real names behind the ones it
/// sees escaped.
#[derive(Debug, Default)]
pub struct Listing {
    /// The entries, by their names as shown ([`walvault_core::text::escape_bytes`]).
    pub entries: Vec<DirEntry>,
    /// The real name of every entry whose shown name differs: not UTF-8, or holding control
    /// characters or a backslash.
    pub raw_names: HashMap<String, OsString>,
}

/// Lists a directory for [`walvault_core::queue::select_batch`]. A missing directory is empty.
pub fn list_queue(dir: &Path) -> io::Result<Vec<DirEntry>> {
    list_queue_raw(dir).map(|listing| listing.entries)
}

/// [`list_queue`], keeping the real names of the entries shown escaped.
///
/// Entries are typed by themselves (`lstat`): a symbolic link is a link whatever it points at
/// (Barman follows it, and archives whatever file it names), and nothing is opened here.
pub fn list_queue_raw(dir: &Path) -> io::Result<Listing> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot list {}: {e}", dir.display()),
            ));
        }
    };
    let mut out = Listing::default();
    for entry in entries {
        let entry = entry?;
        let raw = entry.file_name();
        let file_name = walvault_core::text::escape_bytes(raw.as_encoded_bytes());
        // An entry that vanished since the listing is skipped.
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let kind = match meta.file_type() {
            t if t.is_file() => EntryKind::File,
            t if t.is_dir() => EntryKind::Directory,
            t if t.is_symlink() => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        if file_name.as_bytes() != raw.as_encoded_bytes() {
            out.raw_names.insert(file_name.clone(), raw);
        }
        out.entries.push(DirEntry {
            file_name,
            kind,
            size: meta.len(),
            mtime: mtime_of(&meta),
        });
    }
    Ok(out)
}

/// A queue directory plus its errors directory.
///
/// Released sources are removed in the background: freeing a 16 MiB file costs a few
/// milliseconds of file-system work that then overlaps with archiving the next files instead
/// of adding up at the end of the batch. Natively a thread does it; in the WASI guest, which
/// has no threads, its runner (see [`crate::platform::Platform::start_removal`]).
/// [`QueueDir::sync`] waits for it.
#[derive(Debug)]
pub struct QueueDir {
    dir: PathBuf,
    errors: PathBuf,
    fs: Fs,
    released: usize,
    remover: Option<Box<dyn Removal>>,
    raw_names: HashMap<String, OsString>,
}

/// A thread that removes the files handed to it while its owner goes on, and reports the
/// removals that failed once waited for. The native queue's remover, and the WASI runner's
/// for its guest.
#[derive(Debug)]
pub struct RemovalThread<J> {
    send: mpsc::Sender<J>,
    done: std::thread::JoinHandle<Vec<String>>,
}

impl<J: Send + 'static> RemovalThread<J> {
    /// Starts the thread; `remove` removes one job's file or says why not, as `path: error`.
    /// Fails where there are no threads (a WASI guest).
    pub fn spawn(remove: impl Fn(J) -> Result<(), String> + Send + 'static) -> io::Result<Self> {
        let (send, receive) = mpsc::channel::<J>();
        let done = std::thread::Builder::new().spawn(move || {
            receive
                .into_iter()
                .filter_map(|job| remove(job).err())
                .collect()
        })?;
        Ok(RemovalThread { send, done })
    }

    /// Hands a job over; gives it back when the thread is gone (it cannot panic short of a
    /// bug).
    pub fn send(&self, job: J) -> Result<(), J> {
        self.send.send(job).map_err(|mpsc::SendError(job)| job)
    }

    /// Waits for every job handed over; returns the failures.
    pub fn finish(self) -> Vec<String> {
        drop(self.send);
        self.done
            .join()
            .unwrap_or_else(|_| vec!["the removal thread panicked".to_owned()])
    }
}

impl QueueDir {
    /// The queue at `dir`, moving rejects to `errors`.
    pub fn new(fs: Fs, dir: &Path, errors: &Path) -> Self {
        QueueDir {
            dir: dir.to_owned(),
            errors: errors.to_owned(),
            fs,
            released: 0,
            remover: None,
            raw_names: HashMap::new(),
        }
    }

    /// Lists the queue ([`list_queue_raw`]), remembering the real names behind escaped ones
    /// so that they can be moved to `errors/`.
    pub fn list(&mut self) -> io::Result<Vec<DirEntry>> {
        let listing = list_queue_raw(&self.dir)?;
        self.raw_names = listing.raw_names;
        Ok(listing.entries)
    }

    /// The path of an entry, by the name the listing showed.
    pub fn path_of(&self, file_name: &str) -> PathBuf {
        match self.raw_names.get(file_name) {
            Some(raw) => self.dir.join(raw),
            None => self.dir.join(file_name),
        }
    }

    /// The queue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for the released sources to be removed and makes that durable (one directory
    /// fsync per batch). A source that could not be removed is only a leftover: the next
    /// run finds it already archived and drops it.
    pub fn sync(&mut self) -> io::Result<()> {
        let failures = self
            .remover
            .take()
            .map(|remover| remover.finish())
            .unwrap_or_default();
        if self.released > 0 {
            self.fs.sync_dir(&self.dir)?;
            self.released = 0;
            crate::faults::failpoint("after-release");
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "archived, but could not remove from the queue: {}",
                failures.join("; ")
            )))
        }
    }
}

impl Queue for QueueDir {
    fn source<'a>(&'a self, candidate: &Candidate) -> Box<dyn SourceFile + 'a> {
        Box::new(FileSource::new(self.path_of(&candidate.file_name)))
    }

    fn release(&mut self, file_name: &str) -> io::Result<()> {
        crate::faults::failpoint("before-release");
        if self.remover.is_none() {
            self.remover = self.fs.platform().start_removal();
        }
        self.released += 1;
        let path = self.path_of(file_name);
        crate::faults::journal(crate::faults::FsEvent::Unlink(&path));
        match &mut self.remover {
            Some(remover) => match remover.remove_later(path) {
                Ok(()) => Ok(()),
                // The remover cannot take it: remove it here.
                Err(path) => fs::remove_file(path),
            },
            None => fs::remove_file(path),
        }
    }

    fn move_to_errors(
        &mut self,
        file_name: &str,
        names: &mut dyn Iterator<Item = String>,
    ) -> io::Result<String> {
        self.fs.create_dir_durable(&self.errors)?;
        let source = self.path_of(file_name);
        for name in names {
            match self.fs.move_no_replace(&source, &self.errors.join(&name)) {
                Ok(()) => return Ok(name),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free name for {file_name} in {}", self.errors.display()),
        ))
    }
}
