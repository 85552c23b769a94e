//! `archive_queue_max` on the host: PostgreSQL's ready list next to `%p`, and the record of
//! segments acknowledged without archiving (`<backup_directory>/meta/dropped.jsonl`), which
//! `check`, `status`, `serve` and `verify` report as known gaps. The decision is
//! `walvault_core::queue_limit`'s.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use walvault_core::queue_limit::{DroppedSegment, ReadyWal};
use walvault_core::wal::WalFileName;

use crate::config::ServerConfig;
use crate::fsutil::Fs;

/// Where dropped segments are recorded.
pub fn dropped_path(cfg: &ServerConfig) -> PathBuf {
    cfg.backup_directory.join("meta").join("dropped.jsonl")
}

/// The recorded drops, oldest first; unreadable lines are skipped (a torn last line after a
/// crash: the drop it described was never acknowledged).
pub fn read_dropped(cfg: &ServerConfig) -> Vec<DroppedSegment> {
    let Ok(text) = crate::fsutil::open_regular(&dropped_path(cfg)).and_then(io::read_to_string)
    else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Appends one drop durably: PostgreSQL recycles the segment once put-wal exits 0, so the
/// record must be on disk first.
pub fn record_dropped(fs: Fs, cfg: &ServerConfig, dropped: &DroppedSegment) -> io::Result<()> {
    let path = dropped_path(cfg);
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.create_dir_durable(dir)?;
    let existed = path.exists();
    let mut line = serde_json::to_vec(dropped).map_err(io::Error::other)?;
    line.push(b'\n');
    // Never appended through a link planted at its name.
    let mut file = crate::fsutil::open_no_follow(
        fs::OpenOptions::new().append(true).create(true),
        &path,
        false,
    )?;
    file.write_all(&line)?;
    file.sync_all()?;
    if !existed {
        fs.sync_dir(dir)?;
    }
    Ok(())
}

/// PostgreSQL's ready list in the `pg_wal` that holds `wal_path` (`archive_status/*.ready`),
/// with each file's size; empty when it cannot be read (the limit is then never reached).
pub fn ready_list(wal_path: &Path) -> Vec<ReadyWal> {
    wal_path
        .parent()
        .and_then(|pg_wal| ready_in(pg_wal).ok())
        .unwrap_or_default()
}

/// The WAL `pg_wal/archive_status/` marks `.ready`, with each file's size (those whose file is
/// gone are left out).
pub fn ready_in(pg_wal: &Path) -> io::Result<Vec<ReadyWal>> {
    Ok(fs::read_dir(pg_wal.join("archive_status"))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file = e.file_name();
            let base = file.to_str()?.strip_suffix(".ready")?;
            let name: WalFileName = base.parse().ok()?;
            let bytes = fs::symlink_metadata(pg_wal.join(base)).ok()?.len();
            Some(ReadyWal { name, bytes })
        })
        .collect())
}
