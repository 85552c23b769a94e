//! Choosing what to archive from `incoming/` (archive_command drops) and `streaming/`
//! (pg_receivewal output).
//!
//! The host lists the directory and stats each entry; [`select_batch`] decides. Rules, as
//! Barman's, with its stall fixed:
//! - entries are taken in name order; hidden names (leading `.`) and `*.tmp` are ignored
//!   (reported, never moved: another process may be writing them);
//! - a valid WAL name that is a regular file is a candidate; anything else is "unknown" and
//!   goes to `errors/`;
//! - streaming keeps pg_receivewal's position file: the newest `.partial`, or the newest
//!   complete segment when it is newer than every partial (pg_receivewal restarts from the
//!   newest file it finds); older partials are archived;
//! - the batch limit counts only real candidates and applies **after** the hold-back, so a
//!   limit of 1 still archives one file per run (Barman's `streaming_archiver_batch_size = 1`
//!   archives nothing, ever).

use serde::{Deserialize, Serialize};

use crate::wal::WalFileName;

/// What kind of directory entry the host found, by the entry itself: a symbolic link is never
/// followed (it could point at any file the archiver can read, or at a FIFO that blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link, whatever it points at.
    Symlink,
    /// Anything else: FIFO, socket, block or character device.
    Other,
}

/// One entry of a queue directory, as listed and stat'ed by the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's name in the directory.
    pub file_name: String,
    /// Its type.
    pub kind: EntryKind,
    /// Size in bytes (regular files).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: f64,
}

/// Which queue a listing comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueKind {
    /// `incoming/`: files dropped by `archive_command`.
    Incoming,
    /// `streaming/`: files written by pg_receivewal.
    Streaming,
}

/// A file to archive in this run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The parsed name (archived under its upper-case form).
    pub name: WalFileName,
    /// The name in the queue directory (case as found).
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, recorded in the catalogue.
    pub mtime: f64,
}

/// Why an entry goes to `errors/` as unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnknownReason {
    /// The name is not a WAL, partial, backup label or history file name.
    NotAWalName,
    /// The name is fine but the entry is a directory.
    NotARegularFile,
    /// The entry is a symbolic link (never followed).
    Symlink,
    /// The entry is a FIFO, socket or device (never opened: a FIFO would block).
    SpecialFile,
}

impl std::fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnknownReason::NotAWalName => "not a WAL file name",
            UnknownReason::NotARegularFile => "not a regular file",
            UnknownReason::Symlink => "a symbolic link (walvault never follows links in a queue)",
            UnknownReason::SpecialFile => "a FIFO, socket or device, not a regular file",
        })
    }
}

/// An entry that goes to `errors/<name>.<stamp>.unknown`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unknown {
    /// The entry's name in the queue directory.
    pub file_name: String,
    /// Why it cannot be archived.
    pub reason: UnknownReason,
}

/// The decision for one run over one queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Files to archive now, in name order.
    pub files: Vec<Candidate>,
    /// Entries to move to `errors/` as unknown.
    pub unknown: Vec<Unknown>,
    /// Files kept for pg_receivewal (streaming only).
    pub held_back: Vec<String>,
    /// Hidden and `*.tmp` entries, left alone.
    pub ignored: Vec<String>,
    /// Candidates beyond the batch limit, left for the next run.
    pub deferred: usize,
}

impl Batch {
    /// All files that could be archived now if there were no limit.
    pub fn total_candidates(&self) -> usize {
        self.files.len() + self.deferred
    }
}

/// Picks this run's batch from a queue listing. `limit = 0` means no limit.
pub fn select_batch(kind: QueueKind, mut entries: Vec<DirEntry>, limit: usize) -> Batch {
    entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    let mut batch = Batch::default();
    let mut files = Vec::new();
    for entry in entries {
        if entry.file_name.starts_with('.') || entry.file_name.ends_with(".tmp") {
            batch.ignored.push(entry.file_name);
            continue;
        }
        let reason = match entry.kind {
            EntryKind::Symlink => Some(UnknownReason::Symlink),
            EntryKind::Other => Some(UnknownReason::SpecialFile),
            EntryKind::File | EntryKind::Directory => None,
        };
        let parsed = entry.file_name.parse::<WalFileName>();
        let reason = reason.or(match (&parsed, entry.kind) {
            (Err(_), _) => Some(UnknownReason::NotAWalName),
            (Ok(_), EntryKind::File) => None,
            (Ok(_), _) => Some(UnknownReason::NotARegularFile),
        });
        let (Ok(name), None) = (parsed, reason) else {
            batch.unknown.push(Unknown {
                file_name: entry.file_name,
                reason: reason.unwrap_or(UnknownReason::NotAWalName),
            });
            continue;
        };
        files.push(Candidate {
            name,
            file_name: entry.file_name,
            size: entry.size,
            mtime: entry.mtime,
        });
    }
    files.sort_by_key(|c| c.name);
    if kind == QueueKind::Streaming {
        // pg_receivewal resumes from the newest segment or partial it finds.
        let position = files
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name.is_partial() || c.name.is_segment())
            .max_by_key(|(_, c)| c.name.segment());
        if let Some((index, _)) = position {
            batch.held_back.push(files.remove(index).file_name);
        }
    }
    if limit > 0 && files.len() > limit {
        batch.deferred = files.len() - limit;
        files.truncate(limit);
    }
    batch.files = files;
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    const S01: &str = "000000010000000000000001";
    const S02: &str = "000000010000000000000002";

    fn file(name: &str) -> DirEntry {
        DirEntry {
            file_name: name.into(),
            kind: EntryKind::File,
            size: 16 << 20,
            mtime: 1.0,
        }
    }

    fn full(tail: &str) -> String {
        format!(
            "{}{tail}",
            &S01[..24 - tail.split('.').next().unwrap_or(tail).len()]
        )
    }

    fn names(batch: &Batch) -> Vec<String> {
        batch.files.iter().map(|c| c.name.to_string()).collect()
    }

    fn streaming(list: &[&str], limit: usize) -> Batch {
        select_batch(
            QueueKind::Streaming,
            list.iter().map(|n| file(&full(n))).collect(),
            limit,
        )
    }

    #[test]
    fn incoming_sorts_ignores_and_rejects() {
        // docs/barman-behaviours.md#B-KEEP-10.
        let entries = vec![
            file("00000002.history"),
            file(S02),
            file("garbage.txt"),
            file(".hidden"),
            file("000000010000000000000004.tmp"),
            DirEntry {
                kind: EntryKind::Directory,
                ..file("000000010000000000000006")
            },
            file("000000010000000000000005.partial"),
            file("000000010000000000000003.00000028.backup"),
            file(S01),
        ];
        let batch = select_batch(QueueKind::Incoming, entries, 0);
        assert_eq!(
            names(&batch),
            [
                S01,
                S02,
                "000000010000000000000003.00000028.backup",
                "000000010000000000000005.partial",
                "00000002.history"
            ]
        );
        assert_eq!(
            batch.unknown,
            [
                Unknown {
                    file_name: "000000010000000000000006".into(),
                    reason: UnknownReason::NotARegularFile
                },
                Unknown {
                    file_name: "garbage.txt".into(),
                    reason: UnknownReason::NotAWalName
                },
            ]
        );
        assert_eq!(batch.ignored, [".hidden", "000000010000000000000004.tmp"]);
        assert!(batch.held_back.is_empty());
    }

    #[test]
    fn links_and_special_files_are_refused_whatever_their_name() {
        let entry = |name: &str, kind| DirEntry { kind, ..file(name) };
        let batch = select_batch(
            QueueKind::Incoming,
            vec![
                entry(S01, EntryKind::Symlink),
                entry(
                    "000000010000000000000002.00000028.backup",
                    EntryKind::Symlink,
                ),
                entry("not-wal", EntryKind::Symlink),
                entry(S02, EntryKind::Other),
                entry(".hidden-link", EntryKind::Symlink),
            ],
            0,
        );
        assert!(batch.files.is_empty());
        let reasons: Vec<_> = batch.unknown.iter().map(|u| u.reason).collect();
        assert_eq!(
            reasons,
            [
                UnknownReason::Symlink,
                UnknownReason::SpecialFile,
                UnknownReason::Symlink,
                UnknownReason::Symlink
            ]
        );
        assert_eq!(
            batch.ignored,
            [".hidden-link"],
            "hidden entries are never touched"
        );
    }

    #[test]
    fn incoming_limit_counts_only_candidates() {
        // docs/barman-behaviours.md#B-CHANGE-02: non-WAL entries do not eat batch slots.
        let entries = ["x.tmp", "junk", S01, S02, "000000010000000000000003"]
            .iter()
            .map(|n| file(n))
            .collect();
        let batch = select_batch(QueueKind::Incoming, entries, 2);
        assert_eq!(names(&batch), [S01, S02]);
        assert_eq!(batch.deferred, 1);
        assert_eq!(batch.total_candidates(), 3);
        assert_eq!(batch.unknown.len(), 1);
    }

    #[test]
    fn lower_case_names_are_archived_upper_case() {
        let batch = select_batch(
            QueueKind::Incoming,
            vec![file("0000000a0000000b0000000c")],
            0,
        );
        assert_eq!(names(&batch), ["0000000A0000000B0000000C"]);
        assert_eq!(batch.files[0].file_name, "0000000a0000000b0000000c");
    }

    #[test]
    fn streaming_holds_back_position_file() {
        // docs/barman-behaviours.md#B-KEEP-11.
        let b = streaming(&["01", "02"], 0);
        assert_eq!(
            (names(&b), b.held_back.clone()),
            (vec![S01.to_string()], vec![S02.to_string()])
        );
        let b = streaming(&["01"], 0);
        assert!(b.files.is_empty());
        assert_eq!(b.held_back, [S01]);
        let b = streaming(&["01.partial", "02.partial"], 0);
        assert_eq!(names(&b), [format!("{S01}.partial")]);
        assert_eq!(b.held_back, [format!("{S02}.partial")]);
        let b = select_batch(
            QueueKind::Streaming,
            vec![file("00000001.history"), file(&format!("{S02}.partial"))],
            0,
        );
        assert_eq!(names(&b), ["00000001.history"]);
        let b = select_batch(QueueKind::Streaming, vec![file("garbage")], 0);
        assert_eq!(b.unknown.len(), 1);
        let b = streaming(&["07", "08", "09.partial", "0A.partial"], 0);
        assert_eq!(names(&b), [full("07"), full("08"), full("09.partial")]);
        assert_eq!(b.held_back, [full("0A.partial")]);
    }

    #[test]
    fn streaming_history_is_never_the_position() {
        let b = select_batch(
            QueueKind::Streaming,
            vec![file(S01), file("00000002.history")],
            0,
        );
        assert_eq!(names(&b), ["00000002.history"]);
        assert_eq!(b.held_back, [S01]);
    }

    #[test]
    fn streaming_stale_partial_older_than_newest_segment() {
        // pg_receivewal would resume from F3, so F3 stays and the stale partial is archived.
        let b = streaming(&["0A.partial", "F0", "F1", "F2", "F3"], 0);
        assert_eq!(
            names(&b),
            [full("0A.partial"), full("F0"), full("F1"), full("F2")]
        );
        assert_eq!(b.held_back, [full("F3")]);
    }

    #[test]
    fn streaming_limit_applies_after_hold_back() {
        // docs/barman-behaviours.md#B-CHANGE-01: Barman's stall fixed, a limit of 1 still
        // makes progress.
        let b = streaming(&["F2", "F3", "F4.partial"], 1);
        assert_eq!(names(&b), [full("F2")]);
        assert_eq!(b.deferred, 1);
        assert_eq!(b.held_back, [full("F4.partial")]);
        let b = streaming(&["F3", "F4.partial"], 1);
        assert_eq!(names(&b), [full("F3")]);
        let b = streaming(&["0A.partial", "F0", "F1", "F2", "F3"], 2);
        assert_eq!(names(&b), [full("0A.partial"), full("F0")]);
        assert_eq!(b.deferred, 2);
    }

    #[test]
    fn empty_queue() {
        assert_eq!(
            select_batch(QueueKind::Streaming, vec![], 5),
            Batch::default()
        );
    }
}
