//! The long page header at the start of every WAL segment.
//!
//! Checking it catches what a name cannot: a file from another cluster (system identifier), a
//! segment stored under the wrong name (page address), or a different segment size.

use serde::{Deserialize, Serialize};

use super::{Lsn, Segment, SegmentSize, WalFileName};

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Size of `XLogLongPageHeaderData` on every supported platform.
pub const LONG_PAGE_HEADER_LEN: usize = 40;
/// The oldest `XLOG_PAGE_MAGIC` walvault recognises (PostgreSQL 9.2).
const OLDEST_MAGIC: u16 = 0xD071;
/// Headroom for future major versions (the magic grows by a few steps per release).
const NEWEST_PLAUSIBLE_MAGIC: u16 = 0xD1FF;

/// The fields of a segment's first page header that identify it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageHeader {
    /// `XLOG_PAGE_MAGIC`: changes with each PostgreSQL major version.
    pub magic: u16,
    /// The page's address in the WAL stream: the segment's start LSN.
    pub page_address: Lsn,
    /// The timeline of the page (the parent's for pages copied at a timeline switch).
    pub timeline: u32,
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// The segment size the cluster was initialised with.
    pub segment_size: u32,
    /// The WAL block size.
    pub block_size: u32,
}

impl PageHeader {
    /// The PostgreSQL major version for a known page magic.
    pub fn pg_major(&self) -> Option<u32> {
        Some(match self.magic {
            0xD071 => 92,
            0xD075 => 93,
            0xD07E => 94,
            0xD087 => 95,
            0xD093 => 96,
            0xD097 => 10,
            0xD098 => 11,
            0xD101 => 12,
            0xD106 => 13,
            0xD10D => 14,
            0xD110 => 15,
            0xD113 => 16,
            0xD116 => 17,
            0xD118 => 18,
            _ => return None,
        })
    }
}

/// Why the start of a segment is not what its name promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HeaderError {
    /// Fewer bytes than a long page header.
    #[error("too short for a WAL page header ({0} bytes)")]
    TooShort(usize),
    /// Not a WAL page at all.
    #[error("no WAL page header (magic 0x{magic:04X}, info 0x{info:04X})")]
    NotWal {
        /// The first two bytes, read as the page magic.
        magic: u16,
        /// The page info bits.
        info: u16,
    },
    /// The page belongs elsewhere in the WAL stream.
    #[error("page address {found} does not match the name, which starts at {expected}")]
    WrongAddress {
        /// What the name implies.
        expected: Lsn,
        /// What the page says.
        found: Lsn,
    },
    /// The cluster uses another segment size.
    #[error("segment size in the header is {found} bytes, expected {expected}")]
    WrongSegmentSize {
        /// The configured size.
        expected: u64,
        /// The header's size.
        found: u32,
    },
    /// The name's segment number does not exist with this segment size, so no page belongs
    /// to it (its start would be another segment's, or past the end of the LSN space).
    #[error(
        "segment number {seg:08X} does not exist with {segment_size}-byte segments (the last of a log is {last:08X})"
    )]
    NoSuchSegment {
        /// The name's segment number.
        seg: u32,
        /// The highest segment number of a log at this size.
        last: u32,
        /// The segment size.
        segment_size: u64,
    },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// Reads the long page header from the first bytes of a segment (little-endian, as written
/// by PostgreSQL on every platform walvault supports).
pub fn parse_page_header(first_page: &[u8]) -> Result<PageHeader, HeaderError> {
    if first_page.len() < LONG_PAGE_HEADER_LEN {
        return Err(HeaderError::TooShort(first_page.len()));
    }
    let magic = u16_at(first_page, 0);
    let info = u16_at(first_page, 2);
    if !(OLDEST_MAGIC..=NEWEST_PLAUSIBLE_MAGIC).contains(&magic) || info & XLP_LONG_HEADER == 0 {
        return Err(HeaderError::NotWal { magic, info });
    }
    Ok(PageHeader {
        magic,
        timeline: u32_at(first_page, 4),
        page_address: Lsn(u64_at(first_page, 8)),
        system_identifier: u64_at(first_page, 24),
        segment_size: u32_at(first_page, 32),
        block_size: u32_at(first_page, 36),
    })
}

/// Checks that `first_page` is the start of `segment` in a cluster with segments of `size`.
pub fn check_segment_header(
    segment: Segment,
    size: SegmentSize,
    first_page: &[u8],
) -> Result<PageHeader, HeaderError> {
    let header = parse_page_header(first_page)?;
    if u64::from(header.segment_size) != size.bytes() {
        return Err(HeaderError::WrongSegmentSize {
            expected: size.bytes(),
            found: header.segment_size,
        });
    }
    // Found by fuzzing: the start of a segment number past the last of its log is the start
    // of a later log's segment (000000010000000000000100 at 16 MiB begins at 1/0, where
    // 000000010000000100000000 does), so that segment's page passed under the wrong name;
    // near the end of the LSN space the sum overflowed.
    if !segment.fits(size) {
        return Err(HeaderError::NoSuchSegment {
            seg: segment.seg,
            last: size.max_seg(),
            segment_size: size.bytes(),
        });
    }
    let expected = segment.lsn_at(0, size);
    if header.page_address != expected {
        return Err(HeaderError::WrongAddress {
            expected,
            found: header.page_address,
        });
    }
    Ok(header)
}

/// Builds a valid long page header for `name` (tests and simulations use it to make segments);
/// its segment must exist at `size` ([`Segment::fits`]).
pub fn synthetic_page_header(
    name: &WalFileName,
    size: SegmentSize,
    system_identifier: u64,
) -> [u8; LONG_PAGE_HEADER_LEN] {
    let mut h = [0u8; LONG_PAGE_HEADER_LEN];
    let segment = name
        .segment()
        .unwrap_or(Segment::new(name.timeline().0, 0, 0));
    h[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    h[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
    h[4..8].copy_from_slice(&segment.timeline.0.to_le_bytes());
    h[8..16].copy_from_slice(&segment.lsn_at(0, size).0.to_le_bytes());
    h[24..32].copy_from_slice(&system_identifier.to_le_bytes());
    h[32..36].copy_from_slice(&(size.bytes() as u32).to_le_bytes());
    h[36..40].copy_from_slice(&8192u32.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(name: &str) -> (WalFileName, Segment) {
        let n: WalFileName = name.parse().expect("name");
        (n, n.segment().expect("segment"))
    }

    #[test]
    fn accepts_matching_header() {
        let (n, s) = segment("000000010000000A000000FE");
        let h = synthetic_page_header(&n, SegmentSize::DEFAULT, 7_345_678_901_234_567_890);
        let parsed = check_segment_header(s, SegmentSize::DEFAULT, &h).expect("valid");
        assert_eq!(parsed.page_address.to_string(), "A/FE000000");
        assert_eq!(parsed.system_identifier, 7_345_678_901_234_567_890);
        assert_eq!(parsed.pg_major(), Some(15));
    }

    #[test]
    fn pg15_header_layout() {
        // Laid out byte by byte as PostgreSQL 15 writes the first page of 000000010000000000000001.
        let mut h = [0u8; 40];
        h[..16].copy_from_slice(&[
            0x10, 0xD1, 0x06, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0, 0,
        ]);
        h[24..40].copy_from_slice(&[
            0xD2, 0x02, 0x96, 0x49, 0xE7, 0x2F, 0x5A, 0x65, 0, 0, 0, 0x01, 0, 0x20, 0, 0,
        ]);
        let (_, s) = segment("000000010000000000000001");
        let parsed = check_segment_header(s, SegmentSize::DEFAULT, &h).expect("valid");
        assert_eq!(parsed.block_size, 8192);
    }

    #[test]
    fn rejects_wrong_segment() {
        let (n, _) = segment("000000010000000000000005");
        let (_, other) = segment("000000010000000000000006");
        let h = synthetic_page_header(&n, SegmentSize::DEFAULT, 1);
        assert!(matches!(
            check_segment_header(other, SegmentSize::DEFAULT, &h),
            Err(HeaderError::WrongAddress { .. })
        ));
        let small = SegmentSize::new(1 << 20).expect("size");
        assert!(matches!(
            check_segment_header(other, small, &h),
            Err(HeaderError::WrongSegmentSize { .. })
        ));
    }

    #[test]
    fn rejects_segment_numbers_the_size_does_not_have() {
        // Found by fuzzing (fuzz/corpus/page_header/regression-*). At 16 MiB a log holds
        // segments 00..FF: 000000010000000000000100 names none, and its page address would be
        // 1/0, the start of 000000010000000100000000, whose header then passed under it.
        let size = SegmentSize::DEFAULT;
        let (real, _) = segment("000000010000000100000000");
        let alias = synthetic_page_header(&real, size, 1);
        let (_, impossible) = segment("000000010000000000000100");
        assert_eq!(
            check_segment_header(impossible, size, &alias),
            Err(HeaderError::NoSuchSegment {
                seg: 0x100,
                last: 0xFF,
                segment_size: 16 << 20
            })
        );
        // At the end of the LSN space the start overflowed (a panic with overflow checks).
        let (_, top) = segment("00000001FFFFFFFFFFFFFFFF");
        assert!(matches!(
            check_segment_header(top, size, &alias),
            Err(HeaderError::NoSuchSegment { .. })
        ));
        // A different segment size in the header is still reported as such.
        let small = SegmentSize::new(1 << 20).expect("size");
        assert!(matches!(
            check_segment_header(impossible, small, &alias),
            Err(HeaderError::WrongSegmentSize { .. })
        ));
    }

    #[test]
    fn rejects_non_wal() {
        let (_, s) = segment("000000010000000000000005");
        assert_eq!(
            check_segment_header(s, SegmentSize::DEFAULT, &[0; 10]),
            Err(HeaderError::TooShort(10))
        );
        assert!(matches!(
            check_segment_header(s, SegmentSize::DEFAULT, &[0; 64]),
            Err(HeaderError::NotWal { .. })
        ));
        assert!(matches!(
            check_segment_header(
                s,
                SegmentSize::DEFAULT,
                &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0].repeat(8)
            ),
            Err(HeaderError::NotWal { .. })
        ));
    }
}
