//! Record-level verification of archived WAL: proof that the segments replay.
//!
//! [`SegmentVerifier`] checks one file fed as decompressed bytes in chunks of any size, with
//! memory bounded whatever the records' sizes (a page header, the current record's 24-byte
//! header, a running CRC-32C and counters; never a record's body). Its [`SegmentSummary`]
//! carries the findings, statistics and what [`StreamVerifier`] needs to join files verified
//! in parallel, in WAL order, into one checked stream.
//!
//! # What is checked
//! Per file, as PostgreSQL's `xlogreader.c` checks while recovering:
//! - every page header: the magic (PostgreSQL 12 to 18; an unknown magic is refused, naming
//!   it; every page has the first page's), the info bits, the long header at offset 0 (system
//!   identifier against the expected one, segment size against the configured one, a WAL block
//!   size PostgreSQL supports, used for every page), `xlp_pageaddr` equal to the page's own
//!   LSN (a misnamed, swapped or recycled file), `xlp_tli` never decreasing from page to page
//!   and never above the file's timeline (pages copied from the parent at a timeline switch
//!   carry the parent's), `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len` against the record
//!   carried over;
//! - every record: `xl_tot_len` from 24 bytes to 1 GiB - 1, `xl_rmid` a built-in resource
//!   manager (or, from 15 on, a custom one), `xl_prev` equal to the previous record's start
//!   (for the file's first record: before it; the stitcher checks it exactly), the record
//!   reassembled across pages (its header too) and its CRC-32C computed as PostgreSQL does
//!   (the body, then the header up to `xl_crc`);
//! - the end: an `XLOG_SWITCH` record ends the records, and the rest must be zeros and
//!   padding page headers (zeroed from 14 on, short headers before); a `.partial` ends at the
//!   first zero record length or zeroed page and must be zeros after it; a complete segment
//!   whose records stop before its end or a switch is [`FindingKind::RecordsEndEarly`]; a file
//!   shorter than a segment (but a `.partial`) is [`FindingKind::Truncated`]. Non-zero bytes
//!   after the end are a [`Severity::Warning`]: recovery never reads them.
//! - A page abandoned by a crash and overwritten (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`) is
//!   followed as PostgreSQL follows it: the unfinished record is dropped and counted.
//!
//! Verification of a file stops at its first error: after a corrupt header the next record
//! boundary is unknown, and recovery stops there too.
//!
//! Across files ([`StreamVerifier`]): consecutive segments (or a gap the host declares),
//! one system identifier, page timelines never decreasing, the continuation length each file
//! announces against what the previous one left unfinished, records spanning files (even
//! several) checked by combining CRC-32C states, and the first record's `xl_prev` of each
//! file against the last record of the previous one. A record whose start is in no file
//! given (the first file begins inside it) is not counted and only its remaining length is
//! checked, as `pg_waldump` skips it; a record unfinished at the end of the last file is
//! reported as [`StreamReport::unfinished`], not as a problem (its next segment may not be
//! archived yet). Records are counted where they complete, so the totals match
//! `pg_waldump --stats` over the same files.
//!
//! # What is not checked
//! The contents of records (block references, full-page images, rmgr data) beyond their
//! CRC; whether a timeline's history agrees with where its pages change timeline (the host
//! has the history files: the summaries give the first and last page timelines); missing
//! files (the host knows the names); the padding between records (PostgreSQL does not read
//! it either).
//!
//! # Versions
//! PostgreSQL 12 to 17 (page magics 0xD101 to 0xD116). 18 (0xD118) is accepted too: its page
//! header, record header, CRC rule and built-in resource managers are those of 17. Older
//! magics and newer ones are refused with [`FindingKind::UnknownMagic`]. Pages are read
//! little-endian, as PostgreSQL writes them on every platform walvault supports.

pub mod archive;
mod format;
mod report;
mod segment;
mod stitch;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use format::{BUILTIN_RMGRS, rmgr_name, supported_major};
pub use report::{
    Continuation, EndReason, Finding, FindingKind, RecordRef, RecordStats, RecordsEnd, RmgrStats,
    SegmentSummary, Severity, Unfinished,
};
pub use segment::SegmentVerifier;
pub use stitch::{StreamReport, StreamVerifier};

#[cfg(test)]
mod tests;
