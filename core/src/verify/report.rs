//! What verification reports: findings, per-file summaries and statistics.

use serde::{Deserialize, Serialize};

use super::format::rmgr_name;
use crate::wal::{Lsn, Segment};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Recovery would not replay through this point (or the file is not what its name says).
    Error,
    /// Unexpected, but recovery never reads these bytes (e.g. non-zero bytes after the end of
    /// the records).
    Warning,
}

/// Why the records of a file stop before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The records run to the end of the segment (the last one may continue in the next file).
    SegmentEnd,
    /// An `XLOG_SWITCH` record: the rest of the segment is padding.
    Switch,
    /// The file begins with the tail of a record from the previous file and then only padding:
    /// the tail of an `XLOG_SWITCH` record whose header was split across the files (the
    /// stitcher confirms that the continued record is a switch).
    SwitchContinued,
    /// A zero record length or a zeroed page header at a record boundary: the end of the WAL
    /// written so far (normal in a `.partial` file, [`FindingKind::RecordsEndEarly`] in a
    /// complete segment).
    Zeros,
    /// Verification stopped at an error; nothing after it was checked.
    Error,
    /// The file ended (a `.partial` or a truncated file) before any of the above.
    EndOfData,
}

/// One problem, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The file it was found in (for a record spanning files: the file where it starts).
    #[serde(with = "segment_name")]
    pub segment: Segment,
    /// Byte offset in that file.
    pub offset: u64,
    /// The WAL position of the offset (of the record's start for record problems).
    pub lsn: Lsn,
    /// What is wrong.
    pub kind: FindingKind,
}

impl Finding {
    /// The kind's severity.
    pub fn severity(&self) -> Severity {
        self.kind.severity()
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} offset {} (LSN {}): {}",
            self.segment, self.offset, self.lsn, self.kind
        )
    }
}

/// What is wrong, in PostgreSQL's terms where it has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FindingKind {
    /// A page magic that is not PostgreSQL 12 to 18's.
    #[error(
        "page magic 0x{magic:04X} is not that of PostgreSQL 12 to 18 (0xD101, 0xD106, 0xD10D, 0xD110, 0xD113, 0xD116, 0xD118)"
    )]
    UnknownMagic {
        /// The magic found.
        magic: u16,
    },
    /// A page whose magic differs from the file's first page.
    #[error("page magic 0x{found:04X} differs from the first page's 0x{expected:04X}")]
    MagicChanged {
        /// The first page's magic.
        expected: u16,
        /// This page's.
        found: u16,
    },
    /// Page flags PostgreSQL does not define, or a long header anywhere but at offset 0, or
    /// none there.
    #[error("invalid page info bits 0x{info:04X}")]
    InvalidInfoBits {
        /// The page's `xlp_info`.
        info: u16,
    },
    /// The long header names another cluster.
    #[error("system identifier {found} differs from the expected {expected}")]
    WrongSystemIdentifier {
        /// The cluster's.
        expected: u64,
        /// The file's.
        found: u64,
    },
    /// The long header's segment size is not the configured one.
    #[error("segment size {found} in the long header, expected {expected}")]
    WrongSegmentSize {
        /// The configured size.
        expected: u64,
        /// The header's.
        found: u32,
    },
    /// `xlp_xlog_blcksz` is not a WAL block size PostgreSQL can be built with.
    #[error("unsupported WAL block size {found} in the long header")]
    UnsupportedBlockSize {
        /// The header's.
        found: u32,
    },
    /// The page says it belongs elsewhere in the WAL: another segment's page (a misnamed or
    /// swapped file) or stale content of a recycled segment.
    #[error(
        "page address {found}, expected {expected} (a misnamed file or stale recycled content)"
    )]
    WrongPageAddress {
        /// The page's own LSN.
        expected: Lsn,
        /// `xlp_pageaddr`.
        found: Lsn,
    },
    /// A page timeline lower than an earlier page's.
    #[error("out-of-sequence timeline ID {found} (after {after})")]
    TimelineOutOfSequence {
        /// This page's `xlp_tli`.
        found: u32,
        /// The previous page's.
        after: u32,
    },
    /// A page timeline above the file's own: the file belongs to a later timeline.
    #[error("page timeline {found} is above the file's timeline {file}")]
    TimelineAboveFile {
        /// The page's `xlp_tli`.
        found: u32,
        /// The timeline in the file's name.
        file: u32,
    },
    /// A page continues no record although one is unfinished ("there is no contrecord flag").
    #[error("no continuation flag, expected {expected_rem} more bytes of the record")]
    MissingContinuation {
        /// The bytes the unfinished record still needs.
        expected_rem: u32,
    },
    /// A page says it continues a record where a new record should start ("contrecord is
    /// requested").
    #[error("unexpected continuation of {rem_len} bytes where a record should start")]
    UnexpectedContinuation {
        /// `xlp_rem_len`.
        rem_len: u32,
    },
    /// `xlp_rem_len` disagrees with the record being continued ("invalid contrecord length").
    #[error("continuation length {found}, expected {expected}")]
    ContinuationLength {
        /// What the record still needs.
        expected: u32,
        /// `xlp_rem_len`.
        found: u32,
    },
    /// `xl_tot_len` below the header size or above what PostgreSQL can read.
    #[error("invalid record length {tot_len}")]
    BadRecordLength {
        /// `xl_tot_len`.
        tot_len: u32,
    },
    /// `xl_rmid` names no resource manager.
    #[error("invalid resource manager ID {rmid}")]
    BadResourceManager {
        /// `xl_rmid`.
        rmid: u8,
    },
    /// `xl_prev` does not point at the previous record.
    #[error("record with incorrect prev-link {found_prev}, expected {expected_prev}")]
    PrevLinkBroken {
        /// The previous record's start.
        expected_prev: Lsn,
        /// `xl_prev`.
        found_prev: Lsn,
    },
    /// `xl_prev` of a record whose predecessor is not known here is not even before it.
    #[error("record with incorrect prev-link {found_prev} (not before the record)")]
    PrevLinkAhead {
        /// `xl_prev`.
        found_prev: Lsn,
    },
    /// The record's CRC-32C does not match its bytes.
    #[error("incorrect record checksum: xl_crc {expected:08X}, computed {found:08X}")]
    CrcMismatch {
        /// `xl_crc`.
        expected: u32,
        /// The CRC of the bytes read.
        found: u32,
    },
    /// A complete segment whose records stop before its end or a switch record: recovery would
    /// stop here and not reach the next segment.
    #[error("records end early (zeros where a record should start)")]
    RecordsEndEarly,
    /// The file is shorter than a segment (and not a `.partial`).
    #[error("truncated: {bytes} bytes, a segment has {expected}")]
    Truncated {
        /// The bytes the file has.
        bytes: u64,
        /// The segment size.
        expected: u64,
    },
    /// The file is longer than a segment.
    #[error("longer than a segment: {bytes} bytes or more, a segment has {expected}")]
    TooLong {
        /// The bytes seen when verification gave up.
        bytes: u64,
        /// The segment size.
        expected: u64,
    },
    /// Non-zero bytes where PostgreSQL writes zeros (after a switch record or the end of a
    /// `.partial`'s records): stale content. Recovery does not read them.
    #[error("non-zero bytes after the end of the records ({after:?})")]
    NonZeroAfterEnd {
        /// Which end.
        after: EndReason,
    },
    /// The stitcher was given files that do not follow each other.
    #[error("does not follow {previous} (a gap or files out of order)")]
    NotConsecutive {
        /// The previous file given.
        #[serde(with = "segment_name")]
        previous: Segment,
    },
    /// The file continues no record although the previous one ends unfinished, or the other
    /// way round, across files.
    #[error("the previous file ends {previous}, this one starts {this}")]
    BrokenAcrossFiles {
        /// How the previous file ends.
        previous: String,
        /// How this one starts.
        this: String,
    },
}

impl FindingKind {
    /// Errors stop a recovery; warnings do not.
    pub fn severity(&self) -> Severity {
        match self {
            FindingKind::NonZeroAfterEnd { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// Records and bytes of one resource manager.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmgrStats {
    /// `xl_rmid`.
    pub id: u8,
    /// `pg_waldump --stats`'s name for it (`custom###` for custom ones).
    pub name: String,
    /// Records.
    pub records: u64,
    /// Sum of their `xl_tot_len` (`pg_waldump`'s "combined size").
    pub bytes: u64,
}

/// Record counts, overall and per resource manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordStats {
    /// Records verified.
    pub records: u64,
    /// Sum of their `xl_tot_len`.
    pub bytes: u64,
    /// Per resource manager, by id, those with records only.
    pub by_rmgr: Vec<RmgrStats>,
}

impl RecordStats {
    /// Counts one record.
    pub fn add(&mut self, rmid: u8, tot_len: u32) {
        self.add_many(rmid, 1, u64::from(tot_len));
    }

    fn add_many(&mut self, rmid: u8, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
        match self.by_rmgr.binary_search_by_key(&rmid, |r| r.id) {
            Ok(i) => {
                self.by_rmgr[i].records += records;
                self.by_rmgr[i].bytes += bytes;
            }
            Err(i) => self.by_rmgr.insert(
                i,
                RmgrStats {
                    id: rmid,
                    name: rmgr_name(rmid),
                    records,
                    bytes,
                },
            ),
        }
    }

    /// Adds another file's counts.
    pub fn merge(&mut self, other: &RecordStats) {
        for r in &other.by_rmgr {
            self.add_many(r.id, r.records, r.bytes);
        }
    }
}

/// A record in a file: where it starts and where its `xl_prev` points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    /// The record's start.
    pub lsn: Lsn,
    /// Its offset in the file.
    pub offset: u64,
    /// `xl_prev`; `None` while its header is split across the end of the file.
    pub prev: Option<Lsn>,
}

/// The tail of a record started in an earlier file, at the start of this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continuation {
    /// `xlp_rem_len` of the first page: the bytes of the record still to come.
    pub rem_len: u32,
    /// How many of them this file holds (all of it unless the record goes on into the next
    /// file).
    pub len: u32,
    /// The first bytes of the continuation (up to 16): the rest of a record header split
    /// across the files is among them, and the header goes last into the CRC.
    pub head: Vec<u8>,
    /// CRC-32C of the continuation bytes after `head`.
    pub tail_crc: u32,
    /// The first page says the record was overwritten (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`):
    /// PostgreSQL abandoned it after a crash and wrote new records here instead.
    pub overwritten: bool,
}

/// The record left unfinished at the end of a file: enough to finish its CRC from the next
/// file's [`Continuation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unfinished {
    /// Its start.
    pub lsn: Lsn,
    /// Its offset in the file.
    pub offset: u64,
    /// The header bytes seen (24 unless the header is split across the files).
    pub header: Vec<u8>,
    /// `xl_tot_len`.
    pub total_len: u32,
    /// Bytes of the record in this file, header included.
    pub got: u32,
    /// CRC-32C of the body bytes seen (after the header).
    pub body_crc: u32,
    /// The record before it, if it started in this file (for checking `xl_prev` once the
    /// header is whole).
    pub expected_prev: Option<Lsn>,
}

/// Where and why the records of a file end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsEnd {
    /// Offset of the first byte after the last record (aligned).
    pub offset: u64,
    /// Its LSN.
    pub lsn: Lsn,
    /// Why they end there.
    pub reason: EndReason,
}

/// The verdict on one file and what the stitcher needs to join it to its neighbours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    /// The file's segment (from its name).
    #[serde(with = "segment_name")]
    pub segment: Segment,
    /// The segment size in bytes.
    pub segment_size: u64,
    /// Whether it is a `.partial`.
    pub partial: bool,
    /// Bytes fed.
    pub bytes: u64,
    /// The page magic of the first page.
    pub magic: Option<u16>,
    /// The PostgreSQL major version of that magic.
    pub pg_major: Option<u32>,
    /// The long header's system identifier.
    pub system_identifier: Option<u64>,
    /// The long header's WAL block size.
    pub block_size: Option<u32>,
    /// `xlp_tli` of the first page.
    pub first_page_tli: Option<u32>,
    /// `xlp_tli` of the last page checked.
    pub last_page_tli: Option<u32>,
    /// The tail of a record from an earlier file, if the file starts with one.
    pub continuation: Option<Continuation>,
    /// The first record starting in the file.
    pub first_record: Option<RecordRef>,
    /// The start of the last record starting in the file (complete or not).
    pub last_record: Option<Lsn>,
    /// The start of the last record completed in the file.
    pub last_complete_record: Option<Lsn>,
    /// The record left unfinished at the end of the file.
    pub unfinished: Option<Unfinished>,
    /// Where the records end.
    pub end: RecordsEnd,
    /// Records abandoned in this file because a later page overwrote them
    /// (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`, after a crash in the middle of writing a record).
    pub overwritten_records: u32,
    /// Records that start and end in this file, CRC checked. Records spanning files are
    /// counted by the stitcher.
    pub stats: RecordStats,
    /// Problems found, in file order. Verification of a file stops at its first error.
    pub findings: Vec<Finding>,
}

impl SegmentSummary {
    /// No finding of [`Severity::Error`].
    pub fn is_clean(&self) -> bool {
        self.findings
            .iter()
            .all(|f| f.severity() != Severity::Error)
    }
}

/// Segments serialised by their 24-hex-digit name.
pub(crate) mod segment_name {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::wal::{Segment, WalFileName};

    pub(crate) fn serialize<S: Serializer>(s: &Segment, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Segment, D::Error> {
        let text = String::deserialize(de)?;
        let name: WalFileName = text.parse().map_err(D::Error::custom)?;
        name.segment()
            .ok_or_else(|| D::Error::custom(format!("{text} is not a segment name")))
    }
}
