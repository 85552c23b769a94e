//! Log sequence numbers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in the WAL stream: a 64-bit byte offset, written `X/X` (high/low 32 bits in hex).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// Why an `X/X` string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid LSN {text:?}: expected two hexadecimal numbers of at most 8 digits separated by '/'"
)]
pub struct LsnParseError {
    /// The rejected text.
    pub text: String,
}

impl Lsn {
    /// The high 32 bits (PostgreSQL's "log" number).
    pub fn high(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The low 32 bits.
    pub fn low(self) -> u32 {
        self.0 as u32
    }

    /// `self - other` as a signed byte distance (never overflows).
    pub fn distance_from(self, other: Lsn) -> i128 {
        i128::from(self.0) - i128::from(other.0)
    }
}

fn parse_half(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || LsnParseError {
            text: text.to_owned(),
        };
        let (high, low) = text.split_once('/').ok_or_else(err)?;
        let high = parse_half(high).ok_or_else(err)?;
        let low = parse_half(low).ok_or_else(err)?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.high(), self.low())
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_reference_cases() {
        // docs/barman-behaviours.md#B-KEEP-04.
        assert_eq!("2/8300168".parse::<Lsn>(), Ok(Lsn((2 << 32) + 0x830_0168)));
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>(), Ok(Lsn(u64::MAX)));
        assert_eq!("0/0".parse::<Lsn>(), Ok(Lsn(0)));
        assert_eq!("a/b".parse::<Lsn>(), Ok(Lsn(42_949_672_971)));
        for bad in [
            "DEADBEEF",
            "",
            "/",
            "1/",
            "/1",
            "1/2/3",
            "G/0",
            "100000000/0",
            "0/ 1",
            "-1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_upper_case_without_padding() {
        assert_eq!(Lsn(0x0123_4567_89AB_CDEF).to_string(), "1234567/89ABCDEF");
        assert_eq!(Lsn(0).to_string(), "0/0");
    }

    #[test]
    fn distance_matches_reference() {
        // docs/barman-behaviours.md#B-KEEP-04; a missing side gives no distance.
        let d = |a: &str, b: &str| -> Option<i128> {
            Some(a.parse::<Lsn>().ok()?.distance_from(b.parse().ok()?))
        };
        assert_eq!(d("2/8300168", "1/8300168"), Some(1_i128 << 32));
        assert_eq!(d("2/8300168", "2/8100168"), Some(0x20_0000));
        assert_eq!(d("1/0", "0/FFFFFFFF"), Some(1));
        assert_eq!(d("1/0", "nonsense"), None);
        assert_eq!(Lsn(0).distance_from(Lsn(u64::MAX)), -i128::from(u64::MAX));
    }

    #[test]
    fn serde_uses_text_form() {
        let lsn = Lsn(0x1_0000_0010);
        assert_eq!(serde_json::to_string(&lsn).expect("serialize"), "\"1/10\"");
        assert_eq!(
            serde_json::from_str::<Lsn>("\"1/10\"").expect("deserialize"),
            lsn
        );
        assert!(serde_json::from_str::<Lsn>("\"110\"").is_err());
    }

    proptest! {
        #[test]
        fn text_round_trip(raw in any::<u64>()) {
            let lsn = Lsn(raw);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
            prop_assert_eq!(lsn.to_string().to_lowercase().parse::<Lsn>(), Ok(lsn));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,24}") {
            let _ = text.parse::<Lsn>();
        }
    }
}
