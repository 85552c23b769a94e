//! Barman's `compression_level` setting.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ParseLevelError;

/// A compression level as configured: a named level or a codec-specific integer.
///
/// [`Codec::level`](super::Codec::level) turns it into the number the encoder uses.
/// Parses from `low`, `medium`, `high` (any case) or an integer; serde accepts the same
/// strings or a bare integer, and writes names as strings and numbers as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Level {
    /// The codec's fastest level in Barman's table.
    Low,
    /// Barman's default.
    #[default]
    Medium,
    /// The codec's strongest level in Barman's table.
    High,
    /// A codec-specific level, clamped to the codec's range when used.
    Number(i32),
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Low => f.write_str("low"),
            Level::Medium => f.write_str("medium"),
            Level::High => f.write_str("high"),
            Level::Number(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.eq_ignore_ascii_case("low") {
            Ok(Level::Low)
        } else if trimmed.eq_ignore_ascii_case("medium") {
            Ok(Level::Medium)
        } else if trimmed.eq_ignore_ascii_case("high") {
            Ok(Level::High)
        } else {
            trimmed
                .parse::<i32>()
                .map(Level::Number)
                .map_err(|_| ParseLevelError {
                    value: s.to_owned(),
                })
        }
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Level::Number(n) => serializer.serialize_i32(*n),
            named => serializer.collect_str(named),
        }
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(i64),
            Text(String),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Int(n) => i32::try_from(n).map(Level::Number).map_err(|_| {
                serde::de::Error::custom(ParseLevelError {
                    value: n.to_string(),
                })
            }),
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}
