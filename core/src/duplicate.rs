//! Duplicates and the `errors/` directory.
//!
//! A WAL that is already archived is either the same WAL delivered again (identical content,
//! compared **decompressed** and, when a key is available, **decrypted**: drop the source,
//! report success) or a different WAL under the same name (split brain, a re-initialised
//! cluster sharing an archive: never overwrite; keep the source in `errors/` as
//! `<name>.<UTC YYYYMMDDTHHMMSSZ>.duplicate`).

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

use crate::time::utc_stamp;

/// The verdict on a WAL whose name is already archived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Duplicate {
    /// Same content: the source can go, the archive already has it.
    Identical,
    /// Different content, or content that cannot be proven identical: keep both, archive
    /// copy untouched, source to `errors/`.
    Different {
        /// Why (shown by `show-errors`, passed to post-archive hooks).
        reason: DifferenceReason,
    },
}

/// Why a WAL is kept apart as a different duplicate: its content differs, or it cannot be
/// proven identical (walvault never assumes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DifferenceReason {
    /// Both were read in full and differ.
    #[error("content differs from the archived copy")]
    ContentDiffers,
    /// The archived copy is encrypted and the configured key cannot decrypt it.
    #[error(
        "archived copy is encrypted ({scheme}) and cannot be compared: it could not be decrypted: {error}"
    )]
    Undecryptable {
        /// The encryption scheme.
        scheme: String,
        /// The decryption error.
        error: String,
    },
    /// The archived copy is encrypted and no key is configured.
    #[error(
        "archived copy is encrypted and no decryption key is configured: cannot compare, so it cannot be proven identical"
    )]
    EncryptedWithoutKey,
    /// The archived copy cannot be decoded.
    #[error("archived copy is unreadable: {0}")]
    ArchivedUnreadable(String),
    /// The source cannot be decoded.
    #[error("source is unreadable: {0}")]
    SourceUnreadable(String),
    /// A read failed part-way through the comparison.
    #[error("archived copy could not be read in full: {0}")]
    ReadFailed(String),
}

/// Why a file was moved to `errors/`, the suffix of its new name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Same name as an archived WAL, different content (`.duplicate`, as Barman).
    Duplicate,
    /// Not a WAL file, or not a regular file (`.unknown`, as Barman).
    Unknown,
    /// A WAL name whose content is wrong: empty, wrong size, corrupt compression, a page
    /// header that does not match (`.invalid`; Barman archives these silently,
    /// docs/barman-behaviours.md#B-CHANGE-03).
    Invalid,
}

impl ErrorKind {
    /// The file-name suffix, without the dot.
    pub fn suffix(self) -> &'static str {
        match self {
            ErrorKind::Duplicate => "duplicate",
            ErrorKind::Unknown => "unknown",
            ErrorKind::Invalid => "invalid",
        }
    }
}

/// The name a file gets in `errors/`: `<file_name>.<UTC stamp>.<suffix>`, the queued name
/// made safe first ([`crate::text::safe_file_name`]).
pub fn error_file_name(file_name: &str, now_unix: i64, kind: ErrorKind) -> String {
    error_file_name_variant(file_name, now_unix, kind, 0)
}

/// The `attempt`-th name for a file in `errors/`: [`error_file_name`] first, then
/// `<file_name>.<UTC stamp>-<n>.<suffix>` (n = 2, 3, …). An `errors/` name is never reused:
/// two rejected copies of one WAL in the same second (a streamed and an incoming copy) must
/// both be kept, so the host creates each name only if absent and asks for the next variant.
pub fn error_file_name_variant(
    file_name: &str,
    now_unix: i64,
    kind: ErrorKind,
    attempt: u32,
) -> String {
    let base = crate::text::safe_file_name(file_name);
    let stamp = utc_stamp(now_unix);
    match attempt {
        0 => format!("{base}.{stamp}.{}", kind.suffix()),
        n => format!("{base}.{stamp}-{}.{}", n + 1, kind.suffix()),
    }
}

/// How many names [`error_file_names`] offers before giving up.
const MAX_ERROR_NAME_ATTEMPTS: u32 = 1000;

/// The names a file may take in `errors/`, in order ([`error_file_name_variant`] 0, 1, …): the
/// host takes the first one that does not exist yet.
pub fn error_file_names(
    file_name: &str,
    now_unix: i64,
    kind: ErrorKind,
) -> impl Iterator<Item = String> + '_ {
    (0..MAX_ERROR_NAME_ATTEMPTS).map(move |n| error_file_name_variant(file_name, now_unix, kind, n))
}

/// An entry of `errors/`, split into its parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFile {
    /// The name the file had in its queue.
    pub original: String,
    /// The `YYYYMMDDTHHMMSSZ` stamp, when the name has one.
    pub stamp: Option<String>,
    /// The suffix (`duplicate`, `unknown`, `invalid`, `error`, or anything else found).
    pub suffix: String,
}

/// A `YYYYMMDDTHHMMSSZ` stamp, optionally followed by `-<n>` (see
/// [`error_file_name_variant`]).
fn is_stamp(s: &str) -> bool {
    let s = match s.split_once('-') {
        Some((stamp, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => stamp,
        _ => s,
    };
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// Splits an `errors/` entry name. Names without a stamp (written by hand or by other tools)
/// still yield their last suffix.
pub fn parse_error_file_name(name: &str) -> ErrorFile {
    let (rest, suffix) = name.rsplit_once('.').unwrap_or((name, ""));
    match rest.rsplit_once('.') {
        Some((original, stamp)) if is_stamp(stamp) => ErrorFile {
            original: original.to_owned(),
            stamp: Some(stamp.to_owned()),
            suffix: suffix.to_owned(),
        },
        _ => ErrorFile {
            original: rest.to_owned(),
            stamp: None,
            suffix: suffix.to_owned(),
        },
    }
}

/// Counts of `errors/` entries by kind, as `check` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorSummary {
    /// `.duplicate` entries.
    pub duplicates: usize,
    /// `.unknown` entries.
    pub unknown: usize,
    /// `.invalid` entries (walvault's content checks).
    pub invalid: usize,
    /// `.error` entries (Barman: "not relevant").
    pub not_relevant: usize,
    /// Anything else.
    pub other: usize,
}

impl ErrorSummary {
    /// All entries.
    pub fn total(&self) -> usize {
        self.duplicates + self.unknown + self.invalid + self.not_relevant + self.other
    }

    /// Barman's hint text, e.g. `duplicates: 1, unknown: 2` (only non-zero counts).
    pub fn hint(&self) -> String {
        [
            ("duplicates", self.duplicates),
            ("unknown", self.unknown),
            ("invalid", self.invalid),
            ("not relevant", self.not_relevant),
            ("unknown failure", self.other),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(label, n)| format!("{label}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// Summarises the names found in `errors/`.
pub fn summarise_errors<S: AsRef<str>>(names: &[S]) -> ErrorSummary {
    let mut summary = ErrorSummary::default();
    for name in names {
        match parse_error_file_name(name.as_ref()).suffix.as_str() {
            "duplicate" => summary.duplicates += 1,
            "unknown" => summary.unknown += 1,
            "invalid" => summary.invalid += 1,
            "error" => summary.not_relevant += 1,
            _ => summary.other += 1,
        }
    }
    summary
}

/// Compares two streams chunk by chunk, in bounded memory.
pub fn same_content(a: &mut dyn Read, b: &mut dyn Read) -> io::Result<bool> {
    const CHUNK: usize = 64 << 10;
    let (mut buf_a, mut buf_b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let n = read_full(a, &mut buf_a)?;
        let m = read_full(b, &mut buf_b)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names() {
        assert_eq!(
            error_file_name(
                "000000010000000000000001",
                1_700_000_000,
                ErrorKind::Duplicate
            ),
            "000000010000000000000001.20231114T221320Z.duplicate"
        );
        assert_eq!(
            error_file_name("garbage.txt", 0, ErrorKind::Unknown),
            "garbage.txt.19700101T000000Z.unknown"
        );
        let parsed = parse_error_file_name("garbage.txt.19700101T000000Z.unknown");
        assert_eq!(
            parsed,
            ErrorFile {
                original: "garbage.txt".into(),
                stamp: Some("19700101T000000Z".into()),
                suffix: "unknown".into()
            }
        );
        assert_eq!(
            parse_error_file_name("a.duplicate"),
            ErrorFile {
                original: "a".into(),
                stamp: None,
                suffix: "duplicate".into()
            }
        );
        assert_eq!(parse_error_file_name("plain").suffix, "");
    }

    #[test]
    fn error_name_variants_keep_the_stamp_and_suffix() {
        let second = error_file_name_variant(
            "000000010000000000000001",
            1_700_000_000,
            ErrorKind::Duplicate,
            1,
        );
        assert_eq!(
            second,
            "000000010000000000000001.20231114T221320Z-2.duplicate"
        );
        let parsed = parse_error_file_name(&second);
        assert_eq!(parsed.original, "000000010000000000000001");
        assert_eq!(parsed.stamp.as_deref(), Some("20231114T221320Z-2"));
        assert_eq!(summarise_errors(&[second]).duplicates, 1);
        // A name that cannot be a file name as it is gets a safe base.
        let long = "x".repeat(300);
        assert!(error_file_name(&long, 0, ErrorKind::Unknown).len() < 255);
        assert_eq!(
            error_file_name("a\\xffb", 0, ErrorKind::Unknown),
            "a_xffb.19700101T000000Z.unknown"
        );
    }

    #[test]
    fn summary_matches_barman_buckets() {
        // docs/barman-behaviours.md#B-KEEP-14.
        let s = summarise_errors(&[
            "a.duplicate",
            "b.unknown",
            "c.unknown",
            "d.error",
            "e.weird",
        ]);
        assert_eq!(
            s,
            ErrorSummary {
                duplicates: 1,
                unknown: 2,
                invalid: 0,
                not_relevant: 1,
                other: 1
            }
        );
        assert_eq!(s.total(), 5);
        assert_eq!(
            s.hint(),
            "duplicates: 1, unknown: 2, not relevant: 1, unknown failure: 1"
        );
        assert_eq!(summarise_errors::<&str>(&[]).hint(), "");
    }

    /// Hands out data in uneven pieces, as real readers do.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn compares_streams() {
        let data = crate::storage::conformance::test_bytes(200_000, 4);
        assert!(same_content(&mut Dribble(&data, 7), &mut &data[..]).expect("io"));
        let mut other = data.clone();
        other[150_000] ^= 1;
        assert!(!same_content(&mut &data[..], &mut Dribble(&other, 4096)).expect("io"));
        assert!(!same_content(&mut &data[..], &mut &data[..199_999]).expect("io"));
        assert!(same_content(&mut &b""[..], &mut &b""[..]).expect("io"));
    }
}
