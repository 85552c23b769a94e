//! The codec registry: names, extensions, magic bytes and level tables, as Barman has them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::UnknownCodec;
use super::level::Level;

/// Length of the longest magic (snappy's stream identifier chunk). Reading this many bytes
/// from the start of a file is enough for [`Codec::identify`].
pub const MAGIC_MAX_LEN: usize = 10;

/// A compression format walvault reads and writes.
///
/// The serde form is Barman's registry name (`"gzip"`, `"bzip2"`, …); Barman's deprecated
/// aliases `pigz`, `pygzip` and `pybzip2` are accepted when deserialising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// gzip (RFC 1952), levels 1–9.
    #[serde(alias = "pigz", alias = "pygzip")]
    Gzip,
    /// bzip2, block size 100k–900k (levels 1–9).
    #[serde(alias = "pybzip2")]
    Bzip2,
    /// xz container with LZMA2, presets 1–9.
    Xz,
    /// Zstandard frames.
    Zstd,
    /// LZ4 frame format (not the legacy or block format).
    Lz4,
    /// Snappy framing format, as python-snappy's `stream_compress` writes it.
    Snappy,
}

/// Barman's low/medium/high levels and the integer range a level is clamped to.
struct LevelTable {
    low: i32,
    medium: i32,
    high: i32,
    min: i32,
    max: i32,
}

impl Codec {
    /// Every codec, in Barman's detection order (alphabetical registry names).
    pub const ALL: [Codec; 6] = [
        Codec::Bzip2,
        Codec::Gzip,
        Codec::Lz4,
        Codec::Snappy,
        Codec::Xz,
        Codec::Zstd,
    ];

    /// Barman's registry name, as written in the xlogdb and in `compression = …`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
            Codec::Xz => "xz",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Snappy => "snappy",
        }
    }

    /// Parses a registry name, ignoring case. Barman's aliases `pigz`/`pygzip` (gzip) and
    /// `pybzip2` (bzip2) map to the format they write; `custom` and unknown names are `None`.
    pub fn from_name(s: &str) -> Option<Codec> {
        const NAMES: [(&str, Codec); 9] = [
            ("gzip", Codec::Gzip),
            ("pigz", Codec::Gzip),
            ("pygzip", Codec::Gzip),
            ("bzip2", Codec::Bzip2),
            ("pybzip2", Codec::Bzip2),
            ("xz", Codec::Xz),
            ("zstd", Codec::Zstd),
            ("lz4", Codec::Lz4),
            ("snappy", Codec::Snappy),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, codec)| codec)
    }

    /// The object-key suffix barman-cloud uses (local storage never adds an extension).
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => ".gz",
            Codec::Bzip2 => ".bz2",
            Codec::Xz => ".xz",
            Codec::Zstd => ".zst",
            Codec::Lz4 => ".lz4",
            Codec::Snappy => ".snappy",
        }
    }

    /// Maps a cloud extension back to its codec; the leading dot is optional. Matching is
    /// exact (cloud keys are case-sensitive and Barman writes lowercase).
    pub fn from_extension(ext: &str) -> Option<Codec> {
        let ext = ext.strip_prefix('.').unwrap_or(ext);
        Codec::ALL
            .into_iter()
            .find(|codec| codec.extension().get(1..) == Some(ext))
    }

    /// The bytes every stream of this format starts with.
    pub fn magic(self) -> &'static [u8] {
        match self {
            Codec::Gzip => &[0x1f, 0x8b, 0x08],
            Codec::Bzip2 => b"BZh",
            Codec::Xz => &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
            Codec::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Codec::Lz4 => &[0x04, 0x22, 0x4d, 0x18],
            Codec::Snappy => &[0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'],
        }
    }

    /// Detects the format from the first bytes of a file (pass at least [`MAGIC_MAX_LEN`]
    /// bytes when the file has them). Plain WAL, empty and unknown data give `None`.
    ///
    /// Only built-in formats are recognised: walvault has no `custom` codec, so Barman's
    /// quirk of a custom magic shadowing the built-in ones cannot happen.
    pub fn identify(prefix: &[u8]) -> Option<Codec> {
        // The magics are prefix-free, so the order cannot change the answer; keep Barman's.
        Codec::ALL
            .into_iter()
            .find(|codec| prefix.starts_with(codec.magic()))
    }

    /// The level handed to the encoder: Barman's low/medium/high table, integers clamped to
    /// the codec's range. Snappy has no levels and always gives 0.
    pub fn level(self, level: Level) -> i32 {
        let Some(table) = self.level_table() else {
            return 0;
        };
        match level {
            Level::Low => table.low,
            Level::Medium => table.medium,
            Level::High => table.high,
            Level::Number(n) => n.clamp(table.min, table.max),
        }
    }

    /// The inclusive range integer levels are clamped to, or `None` for snappy.
    pub fn level_range(self) -> Option<(i32, i32)> {
        self.level_table().map(|t| (t.min, t.max))
    }

    fn level_table(self) -> Option<LevelTable> {
        let (low, medium, high, min, max) = match self {
            Codec::Gzip => (1, 6, 9, 1, 9),
            Codec::Bzip2 => (1, 5, 9, 1, 9),
            Codec::Xz => (1, 3, 5, 1, 9),
            // 0 is valid for zstd: the C library reads it as its default level (3).
            Codec::Zstd => (1, 4, 9, -22, 22),
            Codec::Lz4 => (0, 6, 10, 0, 16),
            Codec::Snappy => return None,
        };
        Some(LevelTable {
            low,
            medium,
            high,
            min,
            max,
        })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Codec {
    type Err = UnknownCodec;

    /// Same rules as [`Codec::from_name`], with an error naming the rejected value.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::from_name(s).ok_or_else(|| UnknownCodec { name: s.to_owned() })
    }
}
