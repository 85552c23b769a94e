//! Serving WAL back to PostgreSQL (`restore_command`): find the stored object, decompress it,
//! check it.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::compression::{DecodeLimits, Decoder};
use crate::layout::{Layout, StoredWal};
use crate::storage::{Op, StorageError, WalStore};
use crate::wal::{LONG_PAGE_HEADER_LEN, SegmentSize, WalFileName, parse_page_header};

/// Why a WAL could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Not in the archive: PostgreSQL treats this as the end of the archive (exit 1).
    #[error("WAL file {0} not found in the archive")]
    NotFound(WalFileName),
    /// The store failed; it must not look like "not found" to PostgreSQL.
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    /// The stored object is damaged: wrong size, corrupt compression.
    #[error("archived copy of {name} at {key} is damaged: {problem}")]
    Damaged {
        /// The WAL asked for.
        name: WalFileName,
        /// The object read.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// Writing the restored file failed.
    #[error("writing the restored file failed: {0}")]
    Write(io::Error),
}

/// Finds the object to serve for `name`: any extension; the complete segment in preference to a
/// `.partial` of it, which is only considered when `allow_partial` is set.
pub fn locate(
    store: &dyn WalStore,
    layout: &Layout,
    name: &WalFileName,
    allow_partial: bool,
) -> Result<Option<StoredWal>, StorageError> {
    let listing = store.list(&layout.lookup_prefix(name))?;
    if let Some(found) = layout.find(name, &listing).into_iter().next() {
        return Ok(Some(found));
    }
    match name {
        WalFileName::Segment(segment) if allow_partial => Ok(layout
            .find(&WalFileName::Partial(*segment), &listing)
            .into_iter()
            .next()),
        _ => Ok(None),
    }
}

/// What a restore produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The object served.
    pub key: String,
    /// The name found (a `.partial` when that is what was served).
    pub found: WalFileName,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes the decompressed content of `name` into `sink`, checking that a complete segment has
/// exactly the segment size: `segment_size`, or when `None` the size its own first page header
/// records (so a restore needs no extra request to learn it). The host writes `sink` to a
/// temporary file and renames it into place only on success, so PostgreSQL never sees a
/// damaged or short file.
pub fn restore(
    store: &dyn WalStore,
    layout: &Layout,
    name: &WalFileName,
    allow_partial: bool,
    segment_size: Option<SegmentSize>,
    sink: &mut dyn Write,
) -> Result<Restored, RestoreError> {
    let stored =
        locate(store, layout, name, allow_partial)?.ok_or(RestoreError::NotFound(*name))?;
    let reader = store.get(&stored.key)?;
    let codec = stored.codec_from_key;
    let bytes = decode_checked(reader, codec, &stored.name, &stored.key, segment_size, sink)?;
    Ok(Restored {
        key: stored.key,
        found: stored.name,
        bytes,
    })
}

/// Decompresses one stored WAL file (`codec`, else recognised by its magic) into `sink` and
/// checks it: not empty, and a complete segment exactly `segment_size` long (when `None`, the
/// size its first page header records). `key` names the object in errors. Returns the bytes
/// written.
pub fn decode_checked(
    reader: impl Read,
    codec: Option<crate::compression::Codec>,
    name: &WalFileName,
    key: &str,
    segment_size: Option<SegmentSize>,
    sink: &mut dyn Write,
) -> Result<u64, RestoreError> {
    let damaged = |problem: String| RestoreError::Damaged {
        name: *name,
        key: key.to_owned(),
        problem,
    };
    let limits = DecodeLimits {
        max_output: segment_size
            .unwrap_or(SegmentSize::MAX)
            .bytes()
            .max(16 << 20),
        ..DecodeLimits::default()
    };
    let mut decoder =
        Decoder::known_or_auto(codec, reader, limits).map_err(|e| classify(e, key, damaged))?;
    let mut bytes = 0u64;
    let mut head = Vec::with_capacity(LONG_PAGE_HEADER_LEN);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify(e, key, damaged)),
        };
        let wanted = (LONG_PAGE_HEADER_LEN - head.len()).min(n);
        head.extend_from_slice(&buf[..wanted]);
        sink.write_all(&buf[..n]).map_err(RestoreError::Write)?;
        bytes += n as u64;
    }
    if bytes == 0 {
        return Err(damaged("empty".into()));
    }
    if name.is_segment() {
        let expected = match segment_size {
            Some(size) => size,
            None => header_segment_size(&head).ok_or_else(|| {
                damaged("no valid WAL page header to read the segment size from".into())
            })?,
        };
        if bytes != expected.bytes() {
            return Err(damaged(format!(
                "decompressed to {bytes} bytes, expected {}",
                expected.bytes()
            )));
        }
    }
    Ok(bytes)
}

/// The segment size a segment's first page header records.
pub fn header_segment_size(first_page: &[u8]) -> Option<SegmentSize> {
    let header = parse_page_header(first_page).ok()?;
    SegmentSize::new(u64::from(header.segment_size)).ok()
}

fn classify(e: io::Error, key: &str, damaged: impl Fn(String) -> RestoreError) -> RestoreError {
    if e.kind() == io::ErrorKind::InvalidData {
        damaged(e.to_string())
    } else {
        RestoreError::Storage(StorageError::from_io(Op::Get, key, &e))
    }
}
