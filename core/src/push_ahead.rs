//! Asynchronous `put-wal` (`archive_async`): a background worker pushes PostgreSQL's ready WAL
//! into the archive ahead of the `archive_command` calls, which then find their WAL done.
//!
//! PostgreSQL calls `archive_command` for one WAL at a time, so a synchronous `put-wal` runs
//! at the speed of one upload after another. The worker reads PostgreSQL's own ready list
//! (`pg_wal/archive_status/*.ready`), archives up to `jobs` WAL at once, and leaves a
//! [`SpoolRecord`] for each one only once its copy is durable and catalogued. A call for a
//! WAL acknowledges it from its record only when the record describes exactly the file
//! PostgreSQL passes (name, size and SHA-256 of its content, the same archive): the contract
//! of the synchronous call does not weaken. Without such a record the call archives the WAL
//! itself, so a failure of the worker is reported by the call for that WAL, and a lost or
//! stale record only costs a second (identical, so acknowledged) upload.
//!
//! This module decides; the host lists directories, reads files and runs the worker.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::queue_limit::ReadyWal;
use crate::wal::WalFileName;

/// The SHA-256 of a WAL file's content, fed in chunks of any size.
#[derive(Clone, Default)]
pub struct ContentDigest(sha2::Sha256);

impl ContentDigest {
    /// An empty digest.
    pub fn new() -> ContentDigest {
        ContentDigest::default()
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest, as lowercase hex.
    pub fn finish(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl std::fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentDigest")
    }
}

/// What the worker knows about one WAL it pushed: its copy in `archive` is durable and
/// catalogued, and it held exactly these bytes. One small file per WAL in the spool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolRecord {
    /// The WAL's file name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content, lowercase hex ([`ContentDigest`]).
    pub sha256: String,
    /// The archive it went to (`wals_directory`'s URL or path): a record written under
    /// another configuration acknowledges nothing.
    pub archive: String,
    /// Where it is stored in that archive.
    pub key: String,
    /// The file as the worker saw it, unchanged from before it was hashed until after it was
    /// archived: a call finding the same identity acknowledges without reading the file.
    #[serde(default)]
    pub identity: Option<FileIdentity>,
}

/// A file's identity as its file system reports it. The change time cannot be set by any
/// program and moves on every write, so the same identity means the same bytes: the check
/// costs a `stat`, where hashing a 16 MiB segment costs about 10 ms on the call's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Device number.
    pub device: u64,
    /// Inode number.
    pub inode: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub changed_ns: i64,
}

/// What a call must do to compare its file with a record whose name and archive match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// The same file, untouched since the worker archived it: acknowledge.
    SameFile,
    /// Another inode or times with the same size (a copy, a restored file): hash it and
    /// compare with [`SpoolRecord::acknowledges`].
    HashToCompare,
}

/// Why a record does not acknowledge the file PostgreSQL passes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordMismatch {
    /// The record is not one (a torn write after a crash, or a foreign file).
    #[error("the spool record is unreadable")]
    Unreadable,
    /// It describes another WAL.
    #[error("the spool record is for {0}")]
    OtherName(String),
    /// It was written for another archive.
    #[error("the spool record is for the archive {0}")]
    OtherArchive(String),
    /// Same name, other content: never acknowledged from the record.
    #[error("the file differs from the one the worker archived ({0})")]
    OtherContent(&'static str),
}

impl SpoolRecord {
    /// A record as read back (the host stores it as one JSON line), or
    /// [`RecordMismatch::Unreadable`] when it is not one a worker writes.
    pub fn checked(self) -> Result<SpoolRecord, RecordMismatch> {
        let hex = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if self.name.parse::<WalFileName>().is_err() || !hex {
            return Err(RecordMismatch::Unreadable);
        }
        Ok(self)
    }

    /// Compares the file a call is given (`seen`) with this record without reading it:
    /// another name, archive or size never matches.
    pub fn compare(
        &self,
        name: &str,
        archive: &str,
        seen: &FileIdentity,
    ) -> Result<Comparison, RecordMismatch> {
        if self.name != name {
            return Err(RecordMismatch::OtherName(self.name.clone()));
        }
        if self.archive != archive {
            return Err(RecordMismatch::OtherArchive(self.archive.clone()));
        }
        if self.size != seen.size {
            return Err(RecordMismatch::OtherContent("another size"));
        }
        Ok(if self.identity.as_ref() == Some(seen) {
            Comparison::SameFile
        } else {
            Comparison::HashToCompare
        })
    }

    /// Whether this record acknowledges `name` of `size` bytes with content `sha256`, for
    /// `archive`: all four must match.
    pub fn acknowledges(
        &self,
        name: &str,
        size: u64,
        sha256: &str,
        archive: &str,
    ) -> Result<(), RecordMismatch> {
        if self.name != name {
            return Err(RecordMismatch::OtherName(self.name.clone()));
        }
        if self.archive != archive {
            return Err(RecordMismatch::OtherArchive(self.archive.clone()));
        }
        if self.size != size {
            return Err(RecordMismatch::OtherContent("another size"));
        }
        if self.sha256 != sha256 {
            return Err(RecordMismatch::OtherContent("another SHA-256"));
        }
        Ok(())
    }
}

/// The order PostgreSQL's archiver hands WAL over in: timeline history files first (a
/// recovery that reaches a new timeline needs its history), then by file name, oldest first.
pub fn archive_order(a: &WalFileName, b: &WalFileName) -> std::cmp::Ordering {
    b.is_history()
        .cmp(&a.is_history())
        .then_with(|| a.to_string().cmp(&b.to_string()))
}

/// The next WAL the worker pushes: the first in [`archive_order`] of PostgreSQL's ready list
/// that has no record (`done`), is not being archived (`busy`: by a worker thread or by a
/// `put-wal` call) and has not failed in this worker's run (`failed`: left for the call that
/// will report it).
pub fn next_to_push(
    ready: &[ReadyWal],
    done: &BTreeSet<String>,
    busy: &BTreeSet<String>,
    failed: &BTreeSet<String>,
) -> Option<WalFileName> {
    ready
        .iter()
        .map(|r| r.name)
        .filter(|n| {
            let s = n.to_string();
            !done.contains(&s) && !busy.contains(&s) && !failed.contains(&s)
        })
        .min_by(archive_order)
}

/// Records no call will ever use: their WAL is no longer ready (PostgreSQL archived it by a
/// synchronous call, or gave it up: a restart, a promotion, a removed `.ready` file). Only a
/// ready WAL is ever passed to `archive_command`, and a `.ready` file never comes back for a
/// WAL once it is done, so these can go; a record for a WAL that is ready again with other
/// content would not match it anyway ([`SpoolRecord::acknowledges`]).
pub fn stale_records<'a>(records: &'a BTreeSet<String>, ready: &[ReadyWal]) -> Vec<&'a str> {
    let ready: BTreeSet<String> = ready.iter().map(|r| r.name.to_string()).collect();
    records
        .iter()
        .filter(|r| !ready.contains(*r))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue_limit::ready;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    const S1: &str = "000000010000000000000001";
    const S2: &str = "000000010000000000000002";
    const S3: &str = "000000010000000000000003";
    const T2: &str = "000000020000000000000003";
    const H2: &str = "00000002.history";

    #[test]
    fn history_files_first_then_oldest_first_as_postgresql_hands_them_over() {
        let list = ready(&[S3, T2, S2, H2, "000000010000000000000002.00000028.backup"]);
        let none = BTreeSet::new();
        let mut done = BTreeSet::new();
        let mut order = Vec::new();
        while let Some(n) = next_to_push(&list, &done, &none, &none) {
            order.push(n.to_string());
            done.insert(n.to_string());
        }
        assert_eq!(
            order,
            [H2, S2, "000000010000000000000002.00000028.backup", S3, T2]
        );
    }

    #[test]
    fn done_busy_and_failed_wal_are_skipped() {
        let list = ready(&[S1, S2, S3]);
        assert_eq!(
            next_to_push(&list, &set(&[S1]), &set(&[S2]), &BTreeSet::new()).map(|n| n.to_string()),
            Some(S3.to_owned())
        );
        assert_eq!(
            next_to_push(&list, &set(&[S1]), &set(&[S2]), &set(&[S3])),
            None
        );
        assert_eq!(
            next_to_push(&[], &BTreeSet::new(), &BTreeSet::new(), &BTreeSet::new()),
            None
        );
    }

    #[test]
    fn records_of_wal_no_longer_ready_are_stale() {
        let records = set(&[S1, S2, H2]);
        assert_eq!(stale_records(&records, &ready(&[S2, S3])), vec![S1, H2]);
    }

    fn record() -> SpoolRecord {
        let mut d = ContentDigest::new();
        d.update(b"segment ");
        d.update(b"bytes");
        SpoolRecord {
            name: S1.into(),
            size: 13,
            sha256: d.finish(),
            archive: "s3://bucket/pg/wals/".into(),
            key: "pg/wals/0000000100000000/000000010000000000000001.zst".into(),
            identity: Some(identity()),
        }
    }

    fn identity() -> FileIdentity {
        FileIdentity {
            device: 2049,
            inode: 1234,
            size: 13,
            modified_ns: 1_700_000_000_000_000_000,
            changed_ns: 1_700_000_000_000_000_001,
        }
    }

    #[test]
    fn the_digest_is_sha256_whatever_the_chunking() {
        let mut d = ContentDigest::new();
        d.update(b"segment bytes");
        assert_eq!(d.finish(), record().sha256);
        // SHA-256("abc"), FIPS 180-2's example.
        let mut d = ContentDigest::new();
        d.update(b"a");
        d.update(b"bc");
        assert_eq!(
            d.finish(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_record_acknowledges_only_the_same_bytes_for_the_same_archive() {
        let r = record();
        let line = serde_json::to_string(&r).expect("encode");
        let back: SpoolRecord = serde_json::from_str(&line).expect("decode");
        assert_eq!(back.checked(), Ok(r.clone()));
        let archive = r.archive.clone();
        assert_eq!(r.acknowledges(S1, 13, &r.sha256, &archive), Ok(()));
        assert_eq!(
            r.acknowledges(S2, 13, &r.sha256, &archive),
            Err(RecordMismatch::OtherName(S1.into()))
        );
        assert_eq!(
            r.acknowledges(S1, 14, &r.sha256, &archive),
            Err(RecordMismatch::OtherContent("another size"))
        );
        let other = "0".repeat(64);
        assert_eq!(
            r.acknowledges(S1, 13, &other, &archive),
            Err(RecordMismatch::OtherContent("another SHA-256"))
        );
        assert!(matches!(
            r.acknowledges(S1, 13, &r.sha256, "/var/lib/walvault/pg/wals/"),
            Err(RecordMismatch::OtherArchive(_))
        ));
    }

    #[test]
    fn only_the_same_untouched_file_is_acknowledged_without_reading_it() {
        let r = record();
        let archive = r.archive.clone();
        assert_eq!(
            r.compare(S1, &archive, &identity()),
            Ok(Comparison::SameFile)
        );
        // Written again (its change time moved), or another inode: read and compare.
        for seen in [
            FileIdentity {
                changed_ns: identity().changed_ns + 1,
                ..identity()
            },
            FileIdentity {
                inode: 99,
                ..identity()
            },
        ] {
            assert_eq!(
                r.compare(S1, &archive, &seen),
                Ok(Comparison::HashToCompare)
            );
        }
        // Another size, name or archive: never.
        let longer = FileIdentity {
            size: 14,
            ..identity()
        };
        assert_eq!(
            r.compare(S1, &archive, &longer),
            Err(RecordMismatch::OtherContent("another size"))
        );
        assert!(r.compare(S2, &archive, &identity()).is_err());
        assert!(r.compare(S1, "/elsewhere/", &identity()).is_err());
        // A record without an identity (an older worker's) is always compared by content.
        let old = SpoolRecord {
            identity: None,
            ..record()
        };
        assert_eq!(
            old.compare(S1, &archive, &identity()),
            Ok(Comparison::HashToCompare)
        );
    }

    #[test]
    fn foreign_records_are_unreadable() {
        let bad_name = SpoolRecord {
            name: "not-a-wal".into(),
            ..record()
        };
        let short = SpoolRecord {
            sha256: "abc".into(),
            ..record()
        };
        let upper = SpoolRecord {
            sha256: record().sha256.to_uppercase(),
            ..record()
        };
        for bad in [bad_name, short, upper] {
            assert_eq!(
                bad.clone().checked(),
                Err(RecordMismatch::Unreadable),
                "{bad:?}"
            );
        }
    }
}
