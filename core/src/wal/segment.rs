//! Timelines, segment sizes and segment arithmetic.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Lsn;

/// A PostgreSQL timeline identifier.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The size of a WAL segment: a power of two from 1 MiB to 1 GiB (`initdb --wal-segsize`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct SegmentSize(u32);

/// Why a number is not a valid segment size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL segment size {0} bytes: must be a power of two from 1 MiB to 1 GiB")]
pub struct SegmentSizeError(pub u64);

impl SegmentSize {
    /// The smallest size PostgreSQL accepts (1 MiB).
    pub const MIN: SegmentSize = SegmentSize(1 << 20);
    /// The largest size PostgreSQL accepts (1 GiB).
    pub const MAX: SegmentSize = SegmentSize(1 << 30);
    /// PostgreSQL's default, 16 MiB.
    pub const DEFAULT: SegmentSize = SegmentSize(16 << 20);

    /// Checks that `bytes` is a size PostgreSQL can use.
    pub fn new(bytes: u64) -> Result<Self, SegmentSizeError> {
        if bytes.is_power_of_two()
            && (u64::from(Self::MIN.0)..=u64::from(Self::MAX.0)).contains(&bytes)
        {
            Ok(SegmentSize(bytes as u32))
        } else {
            Err(SegmentSizeError(bytes))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// The highest segment number within one "log" (the middle 8 hex digits of a name).
    /// Barman calls this `xlog_segments_per_file`; a log holds `max_seg() + 1` segments.
    pub fn max_seg(self) -> u32 {
        u32::MAX / self.0
    }

    /// The bits of the low LSN half that select the segment.
    pub fn mask(self) -> u32 {
        self.0 * self.max_seg()
    }
}

impl Default for SegmentSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u64> for SegmentSize {
    type Error = SegmentSizeError;
    fn try_from(bytes: u64) -> Result<Self, Self::Error> {
        Self::new(bytes)
    }
}

impl From<SegmentSize> for u64 {
    fn from(size: SegmentSize) -> u64 {
        size.bytes()
    }
}

impl fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1 << 30 {
            write!(f, "{}GB", self.0 >> 30)
        } else {
            write!(f, "{}MB", self.0 >> 20)
        }
    }
}

/// One WAL segment: timeline, log and segment number, the three parts of a 24-hex-digit name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Segment {
    /// The timeline the segment belongs to.
    pub timeline: TimelineId,
    /// The high 32 bits of the LSNs in this segment.
    pub log: u32,
    /// The segment number within the log.
    pub seg: u32,
}

impl Segment {
    /// A segment from its three name parts.
    pub fn new(timeline: u32, log: u32, seg: u32) -> Self {
        Segment {
            timeline: TimelineId(timeline),
            log,
            seg,
        }
    }

    /// The segment holding `lsn`, with the byte offset of `lsn` inside it.
    pub fn from_lsn(timeline: TimelineId, lsn: Lsn, size: SegmentSize) -> (Segment, u32) {
        let low = lsn.low();
        let seg = (low & size.mask()) / size.0;
        let offset = low & (size.0 - 1);
        (
            Segment {
                timeline,
                log: lsn.high(),
                seg,
            },
            offset,
        )
    }

    /// The LSN at `offset` bytes into this segment (`offset` 0 is the segment's start), for a
    /// segment that exists at `size` ([`Segment::fits`]) and an offset below `size`.
    pub fn lsn_at(self, offset: u32, size: SegmentSize) -> Lsn {
        Lsn((u64::from(self.log) << 32) + u64::from(self.seg) * size.bytes() + u64::from(offset))
    }

    /// Whether the segment number exists for this segment size.
    pub fn fits(self, size: SegmentSize) -> bool {
        self.seg <= size.max_seg()
    }

    /// The position of this segment in the WAL stream (PostgreSQL's `XLogSegNo`).
    pub fn segno(self, size: SegmentSize) -> u64 {
        u64::from(self.log) * (u64::from(size.max_seg()) + 1) + u64::from(self.seg)
    }

    /// The segment that follows this one on the same timeline; `None` at the end of the LSN space.
    pub fn next(self, size: SegmentSize) -> Option<Segment> {
        self.step_forward(size.max_seg())
    }

    /// The segment before this one on the same timeline; `None` before the first.
    pub fn prev(self, size: SegmentSize) -> Option<Segment> {
        self.step_back(size.max_seg())
    }

    fn step_forward(self, max_seg: u32) -> Option<Segment> {
        if self.seg >= max_seg {
            Some(Segment {
                log: self.log.checked_add(1)?,
                seg: 0,
                ..self
            })
        } else {
            Some(Segment {
                seg: self.seg + 1,
                ..self
            })
        }
    }

    fn step_back(self, max_seg: u32) -> Option<Segment> {
        if self.seg == 0 {
            Some(Segment {
                log: self.log.checked_sub(1)?,
                seg: max_seg,
                ..self
            })
        } else {
            Some(Segment {
                seg: self.seg.min(max_seg + 1) - 1,
                ..self
            })
        }
    }

    /// The inclusive range `self ..= last`, wrapping logs at the segment size.
    pub fn range_to(self, last: Segment, size: SegmentSize) -> Result<SegmentRange, RangeError> {
        SegmentRange::new(self, Some(last), Some(size))
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline.0, self.log, self.seg)
    }
}

/// Why a segment range cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Segment ranges never cross timelines.
    #[error("segment range {first} .. {last} spans two timelines")]
    TimelineMismatch {
        /// First segment asked for.
        first: Segment,
        /// Last segment asked for.
        last: Segment,
    },
}

/// An iterator over consecutive segment names, both ends inclusive.
///
/// With a known segment size the log number advances after the last segment of each log. With an
/// unknown size the smallest segment PostgreSQL ever allowed (8 KiB, 0x7FFFF segments per log) is
/// assumed, as Barman does, so names are produced without wrapping early. For PostgreSQL older
/// than 9.3 the last segment of each log never existed and is skipped
/// ([`SegmentRange::skip_last_of_each_log`]).
#[derive(Clone, Debug)]
pub struct SegmentRange {
    next: Option<Segment>,
    last: Option<Segment>,
    max_seg: u32,
    skip_last: bool,
}

impl SegmentRange {
    /// Highest segment number assumed when the segment size is unknown.
    pub const UNKNOWN_SIZE_MAX_SEG: u32 = 0x7FFFF;

    /// `first ..= last` (`last = None`: never ends) for a segment size, or an unknown one.
    pub fn new(
        first: Segment,
        last: Option<Segment>,
        size: Option<SegmentSize>,
    ) -> Result<Self, RangeError> {
        if let Some(last) = last
            && last.timeline != first.timeline
        {
            return Err(RangeError::TimelineMismatch { first, last });
        }
        let max_seg = size.map_or(Self::UNKNOWN_SIZE_MAX_SEG, SegmentSize::max_seg);
        Ok(SegmentRange {
            next: Some(first),
            last,
            max_seg,
            skip_last: false,
        })
    }

    /// Skips the last segment of every log, as PostgreSQL before 9.3 never wrote it.
    pub fn skip_last_of_each_log(mut self, pg_version_num: u32) -> Self {
        self.skip_last = pg_version_num < 90300;
        self
    }
}

impl Iterator for SegmentRange {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        loop {
            let current = self.next?;
            if self.last.is_some_and(|last| current > last) {
                self.next = None;
                return None;
            }
            self.next = current.step_forward(self.max_seg);
            if self.skip_last && current.seg == self.max_seg {
                continue;
            }
            return Some(current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalFileName;

    const MIB: u64 = 1 << 20;

    fn seg(name: &str) -> Segment {
        match name.parse::<WalFileName>() {
            Ok(WalFileName::Segment(s)) => s,
            other => panic!("{name} is not a segment name: {other:?}"),
        }
    }

    fn size(mib: u64) -> SegmentSize {
        SegmentSize::new(mib * MIB).expect("valid size")
    }

    #[test]
    fn sizes_are_powers_of_two_from_1mib_to_1gib() {
        for mib in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] {
            assert!(SegmentSize::new(mib * MIB).is_ok(), "{mib} MiB");
        }
        for bad in [0, 1, MIB / 2, 3 * MIB, 2048 * MIB, 16 * MIB + 1, u64::MAX] {
            assert_eq!(SegmentSize::new(bad), Err(SegmentSizeError(bad)));
        }
        assert_eq!(SegmentSize::default().to_string(), "16MB");
        assert_eq!(size(1024).to_string(), "1GB");
    }

    #[test]
    fn max_seg_and_mask() {
        // docs/barman-behaviours.md#B-KEEP-03: highest segment number and mask.
        let table = [
            (1, 4095),
            (4, 1023),
            (8, 511),
            (16, 255),
            (32, 127),
            (64, 63),
            (128, 31),
            (256, 15),
            (512, 7),
            (1024, 3),
        ];
        for (mib, max) in table {
            assert_eq!(size(mib).max_seg(), max, "{mib} MiB");
        }
        assert_eq!(size(16).mask(), 0xFF00_0000);
        assert_eq!(size(64).mask(), 0xFC00_0000);
        assert_eq!(size(4).mask(), 0xFFC0_0000);
        assert_eq!(size(1024).mask(), 0xC000_0000);
        assert_eq!(size(1).mask(), 0xFFF0_0000);
    }

    #[test]
    fn next_wraps_at_every_size() {
        // docs/barman-behaviours.md#B-KEEP-03: next segment, at every size.
        let next = |n: &str, mib| seg(n).next(size(mib)).expect("has next").to_string();
        assert_eq!(
            next("0000000100000000000000FF", 16),
            "000000010000000100000000"
        );
        assert_eq!(
            next("0000000100000000000000FE", 16),
            "0000000100000000000000FF"
        );
        assert_eq!(
            next("000000010000000000000FFF", 1),
            "000000010000000100000000"
        );
        assert_eq!(
            next("00000001000000000000003F", 64),
            "000000010000000100000000"
        );
        assert_eq!(
            next("00000001000000000000000F", 256),
            "000000010000000100000000"
        );
        assert_eq!(
            next("000000010000000000000007", 512),
            "000000010000000100000000"
        );
        assert_eq!(
            next("000000010000000000000003", 1024),
            "000000010000000100000000"
        );
        assert_eq!(seg("00000001FFFFFFFF000000FF").next(size(16)), None);
    }

    #[test]
    fn prev_wraps_at_every_size() {
        // docs/barman-behaviours.md#B-KEEP-03: previous segment (the invalid name is a parse error,
        // see name.rs).
        let prev = |n: &str, mib| seg(n).prev(size(mib)).expect("has prev").to_string();
        assert_eq!(
            prev("000000010000000200000002", 16),
            "000000010000000200000001"
        );
        assert_eq!(
            prev("000000010000000200000000", 16),
            "0000000100000001000000FF"
        );
        assert_eq!(
            prev("000000010000000200000000", 4),
            "0000000100000001000003FF"
        );
        assert_eq!(
            prev("000000010000000200000005", 4),
            "000000010000000200000004"
        );
        assert_eq!(
            prev("000000020000000500000000", 64),
            "00000002000000040000003F"
        );
        assert_eq!(
            prev("000000020000000500000000", 1),
            "000000020000000400000FFF"
        );
        assert_eq!(
            prev("000000010000000100000000", 1024),
            "000000010000000000000003"
        );
        assert_eq!(seg("000000010000000000000000").prev(size(16)), None);
        assert!("invalidsegment".parse::<WalFileName>().is_err());
    }

    #[test]
    fn next_and_prev_are_inverse_for_every_size() {
        for mib in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] {
            let s = size(mib);
            for start in [
                Segment::new(1, 0, 0),
                Segment::new(3, 7, s.max_seg()),
                Segment::new(2, 0xFFFF_FFFE, s.max_seg()),
            ] {
                let n = start.next(s).expect("next");
                assert_eq!(n.prev(s), Some(start), "{mib} MiB from {start}");
                assert_eq!(n.segno(s), start.segno(s) + 1);
            }
        }
    }

    fn names(range: SegmentRange) -> Vec<String> {
        range.map(|s| s.to_string()).collect()
    }

    #[test]
    fn ranges_skip_ff_before_93() {
        // docs/barman-behaviours.md#B-KEEP-03: no …FF segment before PostgreSQL 9.3.
        let r = |a, b, v| {
            SegmentRange::new(seg(a), Some(seg(b)), Some(size(16)))
                .expect("range")
                .skip_last_of_each_log(v)
        };
        let pre93 = names(r(
            "0000000100000001000000FD",
            "000000010000000200000002",
            90200,
        ));
        assert_eq!(
            pre93,
            [
                "0000000100000001000000FD",
                "0000000100000001000000FE",
                "000000010000000200000000",
                "000000010000000200000001",
                "000000010000000200000002"
            ]
        );
        let post93 = names(r(
            "0000000100000001000000FD",
            "000000010000000200000002",
            90300,
        ));
        assert_eq!(post93.len(), 6);
        assert_eq!(post93[2], "0000000100000001000000FF");
        let short = names(r(
            "0000000100000001000000FD",
            "0000000100000001000000FF",
            90200,
        ));
        assert_eq!(
            short,
            ["0000000100000001000000FD", "0000000100000001000000FE"]
        );
    }

    #[test]
    fn range_counts() {
        // docs/barman-behaviours.md#B-KEEP-03: range lengths.
        let range = || {
            seg("000000040000000500000067")
                .range_to(seg("000000040000000700000067"), size(16))
                .expect("range")
        };
        assert_eq!(range().count(), 513);
        assert_eq!(range().skip_last_of_each_log(90201).count(), 511);
    }

    #[test]
    fn open_ended_ranges() {
        // docs/barman-behaviours.md#B-KEEP-03: open-ended ranges.
        let open = || {
            SegmentRange::new(seg("0000000300000004000000FD"), None, Some(size(16))).expect("range")
        };
        assert_eq!(
            open().take(6).map(|s| s.to_string()).collect::<Vec<_>>(),
            [
                "0000000300000004000000FD",
                "0000000300000004000000FE",
                "0000000300000004000000FF",
                "000000030000000500000000",
                "000000030000000500000001",
                "000000030000000500000002"
            ]
        );
        let legacy: Vec<String> = open()
            .skip_last_of_each_log(90201)
            .take(6)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            legacy,
            [
                "0000000300000004000000FD",
                "0000000300000004000000FE",
                "000000030000000500000000",
                "000000030000000500000001",
                "000000030000000500000002",
                "000000030000000500000003"
            ]
        );
    }

    #[test]
    fn unknown_size_does_not_wrap_early() {
        // docs/barman-behaviours.md#B-KEEP-03: ranges with an unknown segment size.
        let r = SegmentRange::new(
            seg("0000000100000001000000FD"),
            Some(seg("000000010000000100000102")),
            None,
        )
        .expect("range");
        assert_eq!(
            names(r),
            [
                "0000000100000001000000FD",
                "0000000100000001000000FE",
                "0000000100000001000000FF",
                "000000010000000100000100",
                "000000010000000100000101",
                "000000010000000100000102"
            ]
        );
        let r = || {
            SegmentRange::new(
                seg("00000001000000010007FFFE"),
                Some(seg("000000010000000200000002")),
                None,
            )
            .expect("range")
        };
        assert_eq!(
            names(r().skip_last_of_each_log(90300)),
            [
                "00000001000000010007FFFE",
                "00000001000000010007FFFF",
                "000000010000000200000000",
                "000000010000000200000001",
                "000000010000000200000002"
            ]
        );
        assert_eq!(names(r().skip_last_of_each_log(90200)).len(), 4);
    }

    #[test]
    fn gigabyte_ranges_and_timeline_mismatch() {
        // docs/barman-behaviours.md#B-KEEP-03: 1 GiB ranges; two timelines are refused.
        let r = seg("000000010000000000000002")
            .range_to(seg("000000010000000100000001"), size(1024))
            .expect("range");
        assert_eq!(
            names(r),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        let err =
            seg("000000010000000000000002").range_to(seg("000000020000000000000003"), size(16));
        assert!(matches!(err, Err(RangeError::TimelineMismatch { .. })));
        // An empty range when last < first.
        assert_eq!(
            seg("000000010000000000000005")
                .range_to(seg("000000010000000000000004"), size(16))
                .expect("range")
                .count(),
            0
        );
    }

    #[test]
    fn lsn_to_segment_and_back() {
        // docs/barman-behaviours.md#B-KEEP-03: LSN to segment and offset, and back.
        let cases: [(u64, u32, &str, &str, u32); 8] = [
            (
                1 << 24,
                3,
                "A/12345678",
                "000000030000000A00000012",
                0x34_5678,
            ),
            (
                1 << 28,
                3,
                "A/12345678",
                "000000030000000A00000001",
                0x234_5678,
            ),
            (
                1 << 20,
                3,
                "A/12345678",
                "000000030000000A00000123",
                0x4_5678,
            ),
            (
                1 << 26,
                3,
                "113/88B5ADC0",
                "000000030000011300000022",
                0xB5_ADC0,
            ),
            (
                1 << 28,
                3,
                "56/380537A8",
                "000000030000005600000003",
                0x805_37A8,
            ),
            (
                16 << 20,
                1,
                "0/FFFFFF",
                "000000010000000000000000",
                16_777_215,
            ),
            (1 << 30, 1, "3/C0000001", "000000010000000300000003", 1),
            (
                64 << 20,
                2,
                "16/B374D848",
                "00000002000000160000002C",
                57_989_192,
            ),
        ];
        for (bytes, tli, lsn, name, offset) in cases {
            let s = SegmentSize::new(bytes).expect("size");
            let lsn: Lsn = lsn.parse().expect("lsn");
            let (segment, off) = Segment::from_lsn(TimelineId(tli), lsn, s);
            assert_eq!(
                (segment.to_string().as_str(), off),
                (name, offset),
                "{lsn} at {s}"
            );
            assert_eq!(segment.lsn_at(off, s), lsn, "inverse of {name}");
        }
        assert_eq!(
            seg("0000000100000000000000FF")
                .lsn_at(0, size(16))
                .to_string(),
            "0/FF000000"
        );
    }

    proptest::proptest! {
        #[test]
        fn lsn_segment_round_trip(raw in proptest::prelude::any::<u64>(), shift in 20u32..=30) {
            let s = SegmentSize::new(1 << shift).expect("size");
            let (segment, offset) = Segment::from_lsn(TimelineId(1), Lsn(raw), s);
            proptest::prop_assert!(segment.fits(s));
            proptest::prop_assert_eq!(segment.lsn_at(offset, s), Lsn(raw));
        }
    }
}
