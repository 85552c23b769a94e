//! WAL file names: segments, partial segments, backup labels and timeline history files.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Segment, TimelineId};

/// A file name PostgreSQL's archiver can hand over, parsed once.
///
/// Parsing accepts upper- or lower-case hex; display is always upper case, as PostgreSQL writes
/// it. The order is the byte order of the displayed names, so sorting parsed names sorts them the
/// way a directory listing of PostgreSQL's own names would.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum WalFileName {
    /// A complete segment, `TTTTTTTTLLLLLLLLSSSSSSSS`.
    Segment(Segment),
    /// An incomplete segment, `<segment>.partial` (pg_receivewal, or the last segment of an old
    /// timeline at promotion).
    Partial(Segment),
    /// A backup label, `<segment>.OOOOOOOO.backup`, written by `pg_backup_stop`.
    BackupLabel {
        /// The segment holding the backup's start.
        segment: Segment,
        /// The byte offset of the backup's start inside that segment.
        offset: u32,
    },
    /// A timeline history file, `TTTTTTTT.history`.
    History(TimelineId),
}

/// Why a string is not a WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid WAL file name")]
pub struct NameError(pub String);

/// Parses exactly 8 hex digits; total (never panics, rejects signs and other characters).
fn hex_u32(text: &[u8]) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    text.iter().try_fold(0u32, |acc, &b| {
        let digit = (b as char).to_digit(16)?;
        Some((acc << 4) | digit)
    })
}

fn parse_segment(text: &[u8]) -> Option<Segment> {
    if text.len() != 24 {
        return None;
    }
    let (tli, rest) = text.split_at(8);
    let (log, seg) = rest.split_at(8);
    Some(Segment {
        timeline: TimelineId(hex_u32(tli)?),
        log: hex_u32(log)?,
        seg: hex_u32(seg)?,
    })
}

impl WalFileName {
    /// Parses the last component of a path (`incoming/0000…01` → `0000…01`).
    pub fn from_path(path: &str) -> Result<Self, NameError> {
        let base = path.rsplit('/').next().unwrap_or(path);
        base.parse().map_err(|_| NameError(path.to_owned()))
    }

    /// The segment this name belongs to (`None` for history files).
    pub fn segment(&self) -> Option<Segment> {
        match *self {
            WalFileName::Segment(s)
            | WalFileName::Partial(s)
            | WalFileName::BackupLabel { segment: s, .. } => Some(s),
            WalFileName::History(_) => None,
        }
    }

    /// The timeline named by the file.
    pub fn timeline(&self) -> TimelineId {
        match *self {
            WalFileName::History(t) => t,
            WalFileName::Segment(s)
            | WalFileName::Partial(s)
            | WalFileName::BackupLabel { segment: s, .. } => s.timeline,
        }
    }

    /// Barman's hash directory: timeline and log (16 upper-case hex digits); `None` for history
    /// files, which live at the root of the archive.
    pub fn hash_dir(&self) -> Option<String> {
        self.segment()
            .map(|s| format!("{:08X}{:08X}", s.timeline.0, s.log))
    }

    /// The path inside an archive's `wals/` directory: `<hash_dir>/<name>`, or `<name>` for
    /// history files.
    pub fn relative_path(&self) -> String {
        match self.hash_dir() {
            Some(dir) => format!("{dir}/{self}"),
            None => self.to_string(),
        }
    }

    /// True for a complete segment only.
    pub fn is_segment(&self) -> bool {
        matches!(self, WalFileName::Segment(_))
    }

    /// True for a `.partial` segment only.
    pub fn is_partial(&self) -> bool {
        matches!(self, WalFileName::Partial(_))
    }

    /// True for a `.backup` label only.
    pub fn is_backup_label(&self) -> bool {
        matches!(self, WalFileName::BackupLabel { .. })
    }

    /// True for a `.history` file only.
    pub fn is_history(&self) -> bool {
        matches!(self, WalFileName::History(_))
    }

    /// The sort key matching the byte order of the displayed names: timeline first; within a
    /// timeline `.history` ('.' < '0') before segment names; then segment, backup labels by
    /// offset, then `.partial` ('.0…' < '.p').
    fn sort_key(&self) -> (u32, Option<(u32, u32, u8, u32)>) {
        match *self {
            WalFileName::History(t) => (t.0, None),
            WalFileName::Segment(s) => (s.timeline.0, Some((s.log, s.seg, 0, 0))),
            WalFileName::BackupLabel { segment: s, offset } => {
                (s.timeline.0, Some((s.log, s.seg, 1, offset)))
            }
            WalFileName::Partial(s) => (s.timeline.0, Some((s.log, s.seg, 2, 0))),
        }
    }
}

impl FromStr for WalFileName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let err = || NameError(name.to_owned());
        let bytes = name.as_bytes();
        if let Some(tli) = bytes.strip_suffix(b".history") {
            return hex_u32(tli)
                .map(|t| WalFileName::History(TimelineId(t)))
                .ok_or_else(err);
        }
        if let Some(seg) = bytes.strip_suffix(b".partial") {
            return parse_segment(seg).map(WalFileName::Partial).ok_or_else(err);
        }
        if let Some(rest) = bytes.strip_suffix(b".backup") {
            // <24 hex>.<8 hex>
            if rest.len() == 33 && rest[24] == b'.' {
                let segment = parse_segment(&rest[..24]).ok_or_else(err)?;
                let offset = hex_u32(&rest[25..]).ok_or_else(err)?;
                return Ok(WalFileName::BackupLabel { segment, offset });
            }
            return Err(err());
        }
        parse_segment(bytes)
            .map(WalFileName::Segment)
            .ok_or_else(err)
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(s) => write!(f, "{s}"),
            WalFileName::Partial(s) => write!(f, "{s}.partial"),
            WalFileName::BackupLabel { segment, offset } => {
                write!(f, "{segment}.{offset:08X}.backup")
            }
            WalFileName::History(t) => write!(f, "{:08X}.history", t.0),
        }
    }
}

impl Ord for WalFileName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for WalFileName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for WalFileName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WalFileName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(name: &str) -> WalFileName {
        name.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn decodes_reference_names() {
        // docs/barman-behaviours.md#B-KEEP-01: decoding.
        let parts = |n: &str| {
            let w = WalFileName::from_path(n).expect("valid");
            (w.timeline().0, w.segment().map(|s| (s.log, s.seg)))
        };
        assert_eq!(parts("00000001000000000000000A"), (1, Some((0, 10))));
        assert_eq!(parts("000000020000000100000000"), (2, Some((1, 0))));
        assert_eq!(parts("000000000000000000000000"), (0, Some((0, 0))));
        assert_eq!(
            parts("00000001000000000000000A.00000020.backup"),
            (1, Some((0, 10)))
        );
        assert_eq!(parts("000000010000000200000003.partial"), (1, Some((2, 3))));
        assert_eq!(parts("00000001.history"), (1, None));
        assert_eq!(parts("0000000A.history"), (10, None));
    }

    #[test]
    fn rejects_reference_bad_names() {
        // docs/barman-behaviours.md#B-KEEP-01: names that are not WAL names.
        for bad in [
            "00000000000000000000000",
            "0000000000000000000000000",
            "000000000000X00000000000",
            "foo",
            "00000001000000000000000A.backup",
            "00000001000000000000000A.history",
            "test.00000001000000000000000A.00000020.backup",
            "00000001000000000000000A.00000020.partial",
            "000000010000000000000001.gz",
            "00000001.history.gz",
            "000000010000000000000001.tmp",
            "00000001.partial",
            "000000010000000000000001.00000028.backup.partial",
            "000000010000000000000001-INVALID",
            "",
            ".history",
            "+0000001.history",
            "00000001000000000000000A.0000002G.backup",
            "ÿÿÿÿÿÿÿÿÿÿÿÿ",
        ] {
            assert!(
                bad.parse::<WalFileName>().is_err(),
                "{bad:?} must be rejected"
            );
            assert!(
                WalFileName::from_path(bad).is_err(),
                "{bad:?} must be rejected as a path"
            );
        }
        assert_eq!(
            "foo"
                .parse::<WalFileName>()
                .expect_err("invalid")
                .to_string(),
            "'foo' is not a valid WAL file name"
        );
    }

    #[test]
    fn encodes_upper_case() {
        // docs/barman-behaviours.md#B-KEEP-01: names are written in upper case.
        assert_eq!(
            Segment::new(10, 10, 10).to_string(),
            "0000000A0000000A0000000A"
        );
        assert_eq!(
            Segment::new(0, 2, 1).to_string(),
            "000000000000000200000001"
        );
        assert_eq!(
            Segment::new(u32::MAX, u32::MAX, 0xFF).to_string(),
            "FFFFFFFFFFFFFFFF000000FF"
        );
        for (tli, name) in [
            (1, "00000001.history"),
            (10, "0000000A.history"),
            (33, "00000021.history"),
            (328, "00000148.history"),
            (255, "000000FF.history"),
        ] {
            assert_eq!(WalFileName::History(TimelineId(tli)).to_string(), name);
        }
    }

    #[test]
    fn accepts_reference_good_names_and_paths() {
        // docs/barman-behaviours.md#B-KEEP-01: accepted names, with a directory prefix too.
        for good in [
            "000000000000000200000001",
            "test1/000000000000000200000001",
            "00000001000000000000000A.00000020.backup",
            "00000001000000000000000A.partial",
            "00000002.history",
            "test3/00000002.history",
            "0000000a0000000b0000000c",
        ] {
            assert!(
                WalFileName::from_path(good).is_ok(),
                "{good:?} must be accepted"
            );
        }
        // A directory prefix is only accepted through from_path.
        assert!(
            "test1/000000000000000200000001"
                .parse::<WalFileName>()
                .is_err()
        );
    }

    #[test]
    fn classification_is_exclusive() {
        // docs/barman-behaviours.md#B-KEEP-01: each name is exactly one form.
        let flags = |n: &str| {
            let w = parse(n);
            (
                w.is_segment(),
                w.is_partial(),
                w.is_backup_label(),
                w.is_history(),
            )
        };
        assert_eq!(
            flags("000000010000000000000001"),
            (true, false, false, false)
        );
        assert_eq!(
            flags("000000010000000000000001.partial"),
            (false, true, false, false)
        );
        assert_eq!(
            flags("000000010000000000000001.00000020.backup"),
            (false, false, true, false)
        );
        assert_eq!(flags("00000001.history"), (false, false, false, true));
    }

    #[test]
    fn hash_dirs() {
        // docs/barman-behaviours.md#B-KEEP-02: hash directories.
        let hash = |n: &str| WalFileName::from_path(n).expect("valid").hash_dir();
        assert_eq!(
            hash("000000000000000200000001").as_deref(),
            Some("0000000000000002")
        );
        assert_eq!(
            hash("000000010000000000000002").as_deref(),
            Some("0000000100000000")
        );
        assert_eq!(
            hash("test/000000020000000100000000").as_deref(),
            Some("0000000200000001")
        );
        assert_eq!(
            hash("00000002000000050000000A.00000020.backup").as_deref(),
            Some("0000000200000005")
        );
        assert_eq!(hash("00000002.history"), None);
        assert_eq!(
            hash("0000000a0000000b0000000c").as_deref(),
            Some("0000000A0000000B")
        );
    }

    #[test]
    fn relative_paths() {
        // docs/barman-behaviours.md#B-KEEP-02: paths in the archive.
        for (name, rel) in [
            (
                "000000000000000000000001",
                "0000000000000000/000000000000000000000001",
            ),
            (
                "00000001000000E500000064",
                "00000001000000E5/00000001000000E500000064",
            ),
            ("00000002.history", "00000002.history"),
            (
                "000000010000000000000001.00000028.backup",
                "0000000100000000/000000010000000000000001.00000028.backup",
            ),
            (
                "0000000B00000A36000000FF",
                "0000000B00000A36/0000000B00000A36000000FF",
            ),
        ] {
            assert_eq!(parse(name).relative_path(), rel);
        }
    }

    #[test]
    fn lower_case_parses_and_displays_upper_case() {
        assert_eq!(
            parse("0000000a0000000b0000000c.partial").to_string(),
            "0000000A0000000B0000000C.partial"
        );
        assert_eq!(parse("0000000a.history").to_string(), "0000000A.history");
        assert_eq!(
            parse("0000000a0000000b0000000c.0000002f.backup").to_string(),
            "0000000A0000000B0000000C.0000002F.backup"
        );
    }

    #[test]
    fn order_matches_listing_order() {
        let mut names = [
            "000000020000000000000001",
            "00000002.history",
            "000000010000000000000001.partial",
            "000000010000000000000001.00000028.backup",
            "000000010000000000000001",
            "00000001.history",
            "0000000100000000000000FF",
            "000000010000000100000000",
        ];
        let mut parsed: Vec<WalFileName> = names.iter().map(|n| parse(n)).collect();
        parsed.sort();
        names.sort();
        let shown: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(shown, names);
    }

    fn any_name() -> impl Strategy<Value = WalFileName> {
        let seg =
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(t, l, s)| Segment::new(t, l, s));
        prop_oneof![
            seg.clone().prop_map(WalFileName::Segment),
            seg.clone().prop_map(WalFileName::Partial),
            (seg, any::<u32>())
                .prop_map(|(segment, offset)| WalFileName::BackupLabel { segment, offset }),
            any::<u32>().prop_map(|t| WalFileName::History(TimelineId(t))),
        ]
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(name in any_name()) {
            let text = name.to_string();
            prop_assert_eq!(text.parse::<WalFileName>(), Ok(name));
            prop_assert_eq!(text.to_lowercase().parse::<WalFileName>(), Ok(name));
        }

        #[test]
        fn order_is_text_order(a in any_name(), b in any_name()) {
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        }

        #[test]
        fn parse_is_total(text in "\\PC{0,40}") {
            let _ = WalFileName::from_path(&text);
        }

        #[test]
        fn parse_is_total_near_valid(text in "[0-9A-Fa-fxX./]{20,40}(partial|backup|history)?") {
            if let Ok(name) = WalFileName::from_path(&text) {
                // Whatever parses displays as a name that parses to itself.
                prop_assert_eq!(name.to_string().parse::<WalFileName>(), Ok(name));
            }
        }
    }
}
