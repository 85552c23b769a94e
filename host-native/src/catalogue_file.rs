//! `<server>-xlog.db` on disk: appends under Barman's blocking `.<server>-xlogdb.lock`, synced
//! once per batch; rewrites in place (as Barman does since its issue #328).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use walvault_core::archive::CatalogueSink;
use walvault_core::catalogue::{
    CatalogueEntry, CatalogueError, CatalogueReader, catalogue_file_name, render_catalogue,
};

use crate::faults::{FsEvent, journal};
use crate::fsutil::Fs;
use crate::lock::{LockFile, lock_path};

/// A server's catalogue file.
#[derive(Debug, Clone)]
pub struct CatalogueFile {
    path: PathBuf,
    lock: PathBuf,
    fs: Fs,
}

impl CatalogueFile {
    /// The catalogue of `server` in `dir`, locked through `lock_dir`.
    pub fn new(fs: Fs, dir: &Path, lock_dir: &Path, server: &str) -> Self {
        CatalogueFile {
            path: dir.join(catalogue_file_name(server)),
            lock: lock_path(lock_dir, server, "xlogdb"),
            fs,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the catalogue lock (blocking).
    pub fn lock(&self) -> io::Result<LockFile> {
        self.fs
            .lock(&self.lock, true)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Reads every entry; a missing file is an empty catalogue.
    pub fn read(&self) -> io::Result<Result<Vec<CatalogueEntry>, CatalogueError>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(Vec::new())),
            Err(e) => return Err(e),
        };
        Ok(CatalogueReader::new(BufReader::new(file)).collect())
    }

    /// Rewrites the catalogue from what `build` returns, computed under the lock.
    pub fn rewrite_with<T>(
        &self,
        build: impl FnOnce() -> io::Result<(Vec<CatalogueEntry>, T)>,
    ) -> io::Result<T> {
        let _lock = self.lock()?;
        let (entries, value) = build()?;
        self.rewrite_locked(&entries)?;
        Ok(value)
    }

    fn rewrite_locked(&self, entries: &[CatalogueEntry]) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            self.fs.create_dir_durable(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.path)?;
        let text = render_catalogue(entries);
        file.seek(SeekFrom::Start(0))?;
        file.write_all(text.as_bytes())?;
        file.set_len(text.len() as u64)?;
        file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            self.fs.sync_dir(dir)?;
        }
        Ok(())
    }

    /// Whether the file exists.
    pub fn exists(&self) -> bool {
        fs::metadata(&self.path).is_ok()
    }
}

/// How much of the catalogue's end an append reads for lines appended meanwhile: some
/// thousands of lines, far more than concurrent archivers append while one commits.
const RECENT_TAIL: u64 = 256 << 10;

/// The WAL names in the catalogue's last [`RECENT_TAIL`] bytes (whole lines only).
fn recent_names(file: &mut File) -> io::Result<std::collections::HashSet<String>> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(RECENT_TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    let mut lines = text.lines();
    if start > 0 {
        // Cut mid-line.
        lines.next();
    }
    Ok(lines
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

impl CatalogueSink for CatalogueFile {
    fn append(&mut self, entries: &[CatalogueEntry]) -> io::Result<()> {
        let _lock = self.lock()?;
        let created = !self.exists();
        if let Some(dir) = self.path.parent() {
            self.fs.create_dir_durable(dir)?;
        }
        if created {
            journal(FsEvent::Create(&self.path));
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)?;
        // A line another process appended for the same WAL since this one decided to (two
        // archivers of one identical WAL, such as a primary and its standby with
        // archive_mode = always: one stores it, the other finds it stored and repairs its
        // "missing" line) is not written twice. Such a line is recent: the tail is enough.
        let recent = recent_names(&mut file)?;
        let entries: Vec<CatalogueEntry> = entries
            .iter()
            .filter(|e| !recent.contains(&e.name))
            .cloned()
            .collect();
        if entries.is_empty() {
            // The lines are there, but their writer may have died before syncing them: this
            // batch relies on them from now on (it releases sources, acknowledges WAL).
            file.sync_data()?;
            journal(FsEvent::SyncFile(&self.path));
            return Ok(());
        }
        journal(FsEvent::Append(&self.path, file.metadata()?.len()));
        file.write_all(render_catalogue(&entries).as_bytes())?;
        file.sync_data()?;
        journal(FsEvent::SyncFile(&self.path));
        if created && let Some(dir) = self.path.parent() {
            self.fs.sync_dir(dir)?;
        }
        crate::faults::failpoint("catalogue-appended");
        Ok(())
    }

    fn missing(&self, names: &[String]) -> io::Result<Vec<String>> {
        let entries = self
            .read()?
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let known: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.name.as_str()).collect();
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !known.contains(n.as_str()))
            .cloned()
            .collect();
        if missing.len() < names.len() {
            // A line found here may be one a crashed writer appended and never synced: the
            // batch takes it as durable (no line of its own is written), so make it so.
            OpenOptions::new()
                .read(true)
                .open(&self.path)?
                .sync_data()?;
            journal(FsEvent::SyncFile(&self.path));
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_rewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cat = CatalogueFile::new(Fs::native(), &dir.path().join("wals"), dir.path(), "pg");
        assert!(cat.read().expect("io").expect("parse").is_empty());
        let e = |n: &str| CatalogueEntry {
            name: n.into(),
            size: 3,
            time: 1.5,
            compression: None,
            encryption: None,
        };
        cat.append(&[e("000000010000000000000001"), e("000000010000000000000002")])
            .expect("append");
        cat.append(&[e("000000010000000000000003")])
            .expect("append");
        assert_eq!(cat.read().expect("io").expect("parse").len(), 3);
        assert_eq!(
            fs::read_to_string(cat.path()).expect("read").lines().next(),
            Some("000000010000000000000001\t3\t1.5\tNone\tNone")
        );
        cat.rewrite_with(|| Ok((vec![e("000000010000000000000002")], ())))
            .expect("rewrite");
        assert_eq!(
            fs::read_to_string(cat.path())
                .expect("read")
                .lines()
                .count(),
            1
        );
        assert!(dir.path().join(".pg-xlogdb.lock").exists());
    }
}
