//! Barman's WAL catalogue, `<server>-xlog.db`: one line per archived file.
//!
//! Line format (byte-compatible with Barman): `name\tsize\ttime\tcompression\tencryption\n`,
//! where `size` is the stored size (after compression/encryption), `time` is the source file's
//! mtime as Python prints a float, and missing compression/encryption are the literal `None`.
//! Barman also reads 3-field (no compression, no encryption) and 4-field (no encryption) lines,
//! split on any whitespace; so does this module. Lines are in append order, not sorted.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::time::python_float_repr;
use crate::wal::{NameError, WalFileName};

/// One archived file as recorded in the catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogueEntry {
    /// The file name as archived (kept as text: a catalogue written by another tool may hold
    /// names walvault would reject, and rewriting must not lose them).
    pub name: String,
    /// Bytes stored (compressed and/or encrypted size).
    pub size: u64,
    /// Source mtime in seconds since the Unix epoch.
    pub time: f64,
    /// Compression name as Barman's registry spells it (`gzip`, `zstd`, …), `None` if plain.
    pub compression: Option<String>,
    /// Encryption name (`gpg`, …), `None` if not encrypted.
    pub encryption: Option<String>,
}

/// A catalogue line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalogue line {line}: {problem}: {text:?}")]
pub struct CatalogueError {
    /// 1-based line number (0 when parsing a lone line).
    pub line: usize,
    /// What is wrong.
    pub problem: String,
    /// The offending line, without its newline.
    pub text: String,
}

fn none_or(text: &str) -> Option<String> {
    (text != "None").then(|| text.to_owned())
}

impl CatalogueEntry {
    /// The catalogue line, newline included.
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.name,
            self.size,
            python_float_repr(self.time),
            self.compression.as_deref().unwrap_or("None"),
            self.encryption.as_deref().unwrap_or("None"),
        )
    }

    /// Parses one line (with or without its newline); `line` is the number reported on error.
    pub fn parse_line(text: &str, line: usize) -> Result<Self, CatalogueError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let bad = |problem: &str| CatalogueError {
            line,
            problem: problem.to_owned(),
            text: text.to_owned(),
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (name, size, time, compression, encryption) = match fields[..] {
            [n, s, t] => (n, s, t, None, None),
            [n, s, t, c] => (n, s, t, none_or(c), None),
            [n, s, t, c, e] => (n, s, t, none_or(c), none_or(e)),
            _ => {
                return Err(bad(&format!(
                    "expected 3 to 5 fields, found {}",
                    fields.len()
                )));
            }
        };
        let size = size
            .parse::<u64>()
            .map_err(|_| bad("size is not a non-negative integer"))?;
        let time = time
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| bad("time is not a finite number"))?;
        Ok(CatalogueEntry {
            name: name.to_owned(),
            size,
            time,
            compression,
            encryption,
        })
    }

    /// The parsed WAL name.
    pub fn wal_name(&self) -> Result<WalFileName, NameError> {
        self.name.parse()
    }
}

/// Reads a whole catalogue, stopping at the first bad line.
pub fn parse_catalogue(text: &str) -> Result<Vec<CatalogueEntry>, CatalogueError> {
    text.lines()
        .enumerate()
        .map(|(i, line)| CatalogueEntry::parse_line(line, i + 1))
        .collect()
}

/// Streams catalogue entries from a reader, numbering lines from 1.
#[derive(Debug)]
pub struct CatalogueReader<R> {
    reader: R,
    line: usize,
    buf: String,
}

impl<R: BufRead> CatalogueReader<R> {
    /// Wraps a buffered reader over the catalogue bytes.
    pub fn new(reader: R) -> Self {
        CatalogueReader {
            reader,
            line: 0,
            buf: String::new(),
        }
    }
}

impl<R: BufRead> Iterator for CatalogueReader<R> {
    type Item = Result<CatalogueEntry, CatalogueError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.buf.clear();
        self.line += 1;
        match self.reader.read_line(&mut self.buf) {
            Ok(0) => None,
            Ok(_) => Some(CatalogueEntry::parse_line(&self.buf, self.line)),
            Err(e) => Some(Err(CatalogueError {
                line: self.line,
                problem: format!("read failed: {e}"),
                text: String::new(),
            })),
        }
    }
}

/// Renders entries as catalogue text.
pub fn render_catalogue<'a>(entries: impl IntoIterator<Item = &'a CatalogueEntry>) -> String {
    entries.into_iter().map(CatalogueEntry::to_line).collect()
}

/// The catalogue file name for a server, `<server>-xlog.db`.
pub fn catalogue_file_name(server: &str) -> String {
    format!("{server}-xlog.db")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(name: &str, size: u64, time: f64, c: Option<&str>, e: Option<&str>) -> CatalogueEntry {
        CatalogueEntry {
            name: name.into(),
            size,
            time,
            compression: c.map(Into::into),
            encryption: e.map(Into::into),
        }
    }

    #[test]
    fn writes_barman_lines() {
        // docs/barman-behaviours.md#B-KEEP-07 (an integral time is written as Python writes a
        // float).
        assert_eq!(
            entry("000000000000000000000002", 42, 43.0, None, None).to_line(),
            "000000000000000000000002\t42\t43.0\tNone\tNone\n"
        );
        assert_eq!(
            entry("000000010000000000000001", 1, 1_700_000_000.0, None, None).to_line(),
            "000000010000000000000001\t1\t1700000000.0\tNone\tNone\n"
        );
        assert_eq!(
            entry(
                "000000010000000000000001",
                1234,
                1_733_775_204.233_758_7,
                Some("gzip"),
                Some("gpg")
            )
            .to_line(),
            "000000010000000000000001\t1234\t1733775204.2337587\tgzip\tgpg\n"
        );
    }

    #[test]
    fn reads_three_four_and_five_fields() {
        // docs/barman-behaviours.md#B-KEEP-07: 3, 4 or 5 fields, any whitespace.
        assert_eq!(
            CatalogueEntry::parse_line("000000010000000000000001 42 43", 1),
            Ok(entry("000000010000000000000001", 42, 43.0, None, None))
        );
        assert_eq!(
            CatalogueEntry::parse_line("000000010000000000000001\t42\t43.5\tgzip\n", 1),
            Ok(entry(
                "000000010000000000000001",
                42,
                43.5,
                Some("gzip"),
                None
            ))
        );
        assert_eq!(
            CatalogueEntry::parse_line("000000010000000000000001\t42\t43.5\tNone\tgpg\n", 1),
            Ok(entry(
                "000000010000000000000001",
                42,
                43.5,
                None,
                Some("gpg")
            ))
        );
    }

    #[test]
    fn rejects_other_shapes_with_line_number() {
        let err = CatalogueEntry::parse_line("a b", 7).expect_err("two fields");
        assert_eq!(err.line, 7);
        assert!(
            err.to_string().contains("expected 3 to 5 fields, found 2"),
            "{err}"
        );
        for bad in [
            "",
            "a b c d e f",
            "n x 1.0",
            "n -1 1.0",
            "n 1 soon",
            "n 1 inf",
            "n 1 nan",
        ] {
            assert!(CatalogueEntry::parse_line(bad, 1).is_err(), "{bad:?}");
        }
        let text = "000000010000000000000001\t1\t1.0\tNone\tNone\n000000010000000000000002\t1\n";
        let err = parse_catalogue(text).expect_err("second line is short");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn reader_streams_with_line_numbers() {
        let text = "000000010000000000000001\t1\t1.0\tNone\tNone\n00000002.history\t9\t2.0\tzstd\tNone\noops\n";
        let results: Vec<_> = CatalogueReader::new(text.as_bytes()).collect();
        assert_eq!(results.len(), 3);
        assert!(results[0].is_ok() && results[1].is_ok());
        assert_eq!(results[2].as_ref().expect_err("bad").line, 3);
        assert_eq!(
            results[1]
                .as_ref()
                .expect("ok")
                .wal_name()
                .expect("name")
                .to_string(),
            "00000002.history"
        );
    }

    #[test]
    fn file_name() {
        assert_eq!(catalogue_file_name("pg"), "pg-xlog.db");
    }

    fn any_entry() -> impl Strategy<Value = CatalogueEntry> {
        let name = prop_oneof![
            "[0-9A-F]{24}",
            "[0-9A-F]{24}\\.partial",
            "[0-9A-F]{24}\\.[0-9A-F]{8}\\.backup",
            "[0-9A-F]{8}\\.history"
        ];
        let time = any::<f64>().prop_filter("finite", |t| t.is_finite());
        let word = prop_oneof![
            Just(None),
            Just(Some("gzip".to_string())),
            Just(Some("zstd".to_string())),
            "[a-z0-9]{1,8}".prop_map(Some)
        ];
        (name, any::<u64>(), time, word.clone(), word).prop_map(
            |(name, size, time, compression, encryption)| {
                // "None" as a real value is indistinguishable from the literal: Barman has the same limit.
                let fix = |w: Option<String>| w.filter(|w| w != "None");
                CatalogueEntry {
                    name,
                    size,
                    time,
                    compression: fix(compression),
                    encryption: fix(encryption),
                }
            },
        )
    }

    proptest! {
        #[test]
        fn line_round_trip(e in any_entry()) {
            let line = e.to_line();
            let back = CatalogueEntry::parse_line(&line, 1).expect("own lines parse");
            prop_assert_eq!(&back, &e);
            prop_assert_eq!(back.to_line(), line);
        }

        #[test]
        fn catalogue_round_trip(entries in proptest::collection::vec(any_entry(), 0..20)) {
            let text = render_catalogue(&entries);
            prop_assert_eq!(parse_catalogue(&text).expect("parses"), entries);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            let _ = CatalogueEntry::parse_line(&text, 1);
        }
    }
}
