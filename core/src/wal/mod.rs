//! WAL file names and the arithmetic over them.
//!
//! Everything here is pure: names are parsed once into [`WalFileName`] and every computation
//! (hash directories, next/previous segment, LSN ↔ segment, ranges) works on the parsed form.

mod header;
mod history;
mod lsn;
mod name;
mod reuse;
mod segment;

pub use header::{
    HeaderError, LONG_PAGE_HEADER_LEN, PageHeader, check_segment_header, parse_page_header,
    synthetic_page_header,
};
pub use history::{HistoryEntry, HistoryError, parse_history};
pub use lsn::{Lsn, LsnParseError};
pub use name::{NameError, WalFileName};
pub use reuse::{ArchiveReuseError, check_archive_usable};
pub use segment::{RangeError, Segment, SegmentRange, SegmentSize, SegmentSizeError, TimelineId};
