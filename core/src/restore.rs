//! Serving WAL back to PostgreSQL (`restore_command`): find the stored object, decompress it,
//! check it.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::compression::{DecodeLimits, Decoder};
use crate::encryption::{Decrypt, open_if_encrypted};
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
    /// The stored object is encrypted and cannot be decrypted here: no secret key, the wrong
    /// one, or a wrong passphrase. Not "not found": recovery must stop.
    #[error("archived copy of {name} at {key} cannot be decrypted: {problem}")]
    Undecryptable {
        /// The WAL asked for.
        name: WalFileName,
        /// The object read.
        key: String,
        /// Why.
        problem: String,
    },
    /// Writing the restored file failed.
    #[error("writing the restored file failed: {0}")]
    Write(io::Error),
    /// The name is stored under several keys (another codec's extension) whose content is not
    /// the same: serving either could replay the wrong history, so neither is served. Only an
    /// eventually consistent object store (a listing that lagged behind a different writer)
    /// or a writer other than walvault gets an archive there; see
    /// docs/barman-behaviours.md#B-CHANGE-10.
    #[error(
        "{name} is stored under several keys whose content differs ({}): {problem}; recovery must not pick one",
        keys.join(", ")
    )]
    Conflicting {
        /// The WAL asked for.
        name: WalFileName,
        /// Every key that holds it.
        keys: Vec<String>,
        /// How they differ.
        problem: String,
    },
}

/// Finds the object to serve for `name`: any extension; the complete segment in preference to a
/// `.partial` of it, which is only considered when `allow_partial` is set.
pub fn locate(
    store: &dyn WalStore,
    layout: &Layout,
    name: &WalFileName,
    allow_partial: bool,
) -> Result<Option<StoredWal>, StorageError> {
    Ok(locate_all(store, layout, name, allow_partial)?
        .into_iter()
        .next())
}

/// Every stored object for `name`, as [`locate`] chooses among them: the complete WAL under
/// each extension it is stored with, else (with `allow_partial`) each `.partial` of it. More
/// than one means the same name under several codecs' extensions.
pub fn locate_all(
    store: &dyn WalStore,
    layout: &Layout,
    name: &WalFileName,
    allow_partial: bool,
) -> Result<Vec<StoredWal>, StorageError> {
    let listing = store.list(&layout.lookup_prefix(name))?;
    let found = layout.find(name, &listing);
    if !found.is_empty() {
        return Ok(found);
    }
    match name {
        WalFileName::Segment(segment) if allow_partial => {
            Ok(layout.find(&WalFileName::Partial(*segment), &listing))
        }
        _ => Ok(Vec::new()),
    }
}

/// Checks that every copy of a name stored more than once decodes to the same bytes as the
/// first, which is the one served.
fn check_copies_agree(
    store: &dyn WalStore,
    name: &WalFileName,
    copies: &[StoredWal],
    segment_size: Option<SegmentSize>,
    decryptor: Option<&dyn Decrypt>,
) -> Result<(), RestoreError> {
    let Some((first, others)) = copies.split_first() else {
        return Ok(());
    };
    let limits = DecodeLimits {
        max_output: segment_size
            .unwrap_or(SegmentSize::MAX)
            .bytes()
            .max(crate::archive::MAX_HISTORY_BYTES),
        ..DecodeLimits::default()
    };
    let conflict = |problem: String| RestoreError::Conflicting {
        name: *name,
        keys: copies.iter().map(|c| c.key.clone()).collect(),
        problem,
    };
    for other in others {
        let open = |copy: &StoredWal| -> Result<_, RestoreError> {
            let unreadable = |e: io::Error| conflict(format!("{} is unreadable: {e}", copy.key));
            let (plain, _) =
                open_if_encrypted(store.get(&copy.key)?, decryptor).map_err(unreadable)?;
            copy.decoder(plain, limits).map_err(unreadable)
        };
        let a = open(first)?;
        let b = open(other)?;
        let (mut a, mut b) = (a, b);
        match crate::duplicate::same_content(&mut a, &mut b) {
            Ok(true) => {}
            Ok(false) => {
                return Err(conflict(format!("{} and {} differ", first.key, other.key)));
            }
            Err(e) => return Err(conflict(format!("comparing them failed: {e}"))),
        }
    }
    Ok(())
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
    decryptor: Option<&dyn Decrypt>,
    sink: &mut dyn Write,
) -> Result<Restored, RestoreError> {
    let copies = locate_all(store, layout, name, allow_partial)?;
    check_copies_agree(store, name, &copies, segment_size, decryptor)?;
    let stored = copies
        .into_iter()
        .next()
        .ok_or(RestoreError::NotFound(*name))?;
    let reader = store.get(&stored.key)?;
    let codec = stored.codec_from_key;
    let bytes = decode_checked(
        reader,
        codec,
        &stored.name,
        &stored.key,
        segment_size,
        decryptor,
        sink,
    )?;
    Ok(Restored {
        key: stored.key,
        found: stored.name,
        bytes,
    })
}

/// Decrypts (when encrypted, with `decryptor`) and decompresses one stored WAL file (`codec`,
/// else recognised by its magic) into `sink` and checks it: not empty, and a complete segment
/// exactly `segment_size` long (when `None`, the size its first page header records). `key`
/// names the object in errors. Returns the bytes written.
pub fn decode_checked<'a>(
    reader: Box<dyn Read + Send + 'a>,
    codec: Option<crate::compression::Codec>,
    name: &WalFileName,
    key: &str,
    segment_size: Option<SegmentSize>,
    decryptor: Option<&dyn Decrypt>,
    sink: &mut dyn Write,
) -> Result<u64, RestoreError> {
    let damaged = |problem: String| RestoreError::Damaged {
        name: *name,
        key: key.to_owned(),
        problem,
    };
    let undecryptable = |e: io::Error| RestoreError::Undecryptable {
        name: *name,
        key: key.to_owned(),
        problem: e.to_string(),
    };
    let reader = match open_if_encrypted(reader, decryptor) {
        Ok((reader, _)) => reader,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Err(undecryptable(e)),
        Err(e) => return Err(classify(e, key, damaged)),
    };
    // Nothing over the cap reaches the sink: a small object that expands without end (a
    // decompression bomb) must not fill the disk of the cluster being recovered. History files
    // and backup labels are small; a segment or partial is at most the configured segment
    // size, else the largest valid one until its page header declares its own.
    let small_file = name.is_history() || name.is_backup_label();
    let mut cap = if small_file {
        crate::archive::MAX_HISTORY_BYTES
    } else {
        segment_size.unwrap_or(SegmentSize::MAX).bytes()
    };
    let mut cap_from_header = !small_file && segment_size.is_none();
    let limits = DecodeLimits {
        max_output: cap,
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
        if cap_from_header && head.len() == LONG_PAGE_HEADER_LEN {
            cap_from_header = false;
            match header_segment_size(&head) {
                Some(size) => cap = size.bytes(),
                None if name.is_segment() => {
                    return Err(damaged(
                        "no valid WAL page header to read the segment size from".into(),
                    ));
                }
                None => {}
            }
        }
        if bytes + n as u64 > cap {
            return Err(damaged(format!(
                "decompresses to more than {cap} bytes, the most it may hold; nothing more was written"
            )));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::{Codec, Encoder, Level};
    use crate::wal::synthetic_page_header;

    /// [`decode_checked`] of a plain stream of unknown segment size, no key.
    fn decode(stream: &[u8], name: &WalFileName, sink: &mut Meter) -> Result<u64, RestoreError> {
        decode_checked(Box::new(stream), None, name, "k", None, None, sink)
    }

    /// Counts what reaches it, keeps nothing.
    struct Meter(u64);
    impl Write for Meter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A zstd stream of `head` followed by `total - head.len()` zero bytes.
    fn bomb(head: &[u8], total: u64) -> Vec<u8> {
        let mut enc = Encoder::new(Some(Codec::Zstd), Level::Low, Vec::new()).expect("encoder");
        enc.write_all(head).expect("head");
        let zeros = vec![0u8; 1 << 20];
        let mut left = total - head.len() as u64;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            enc.write_all(&zeros[..n]).expect("zeros");
            left -= n as u64;
        }
        enc.finish().expect("finish")
    }

    #[test]
    fn a_decompression_bomb_never_reaches_the_sink_beyond_its_cap() {
        let name: WalFileName = "000000010000000000000001".parse().expect("name");
        let size = SegmentSize::new(1 << 20).expect("1 MiB");
        // A valid header declaring 1 MiB, then 256 MiB: stopped at 1 MiB, not at the end.
        let stream = bomb(&synthetic_page_header(&name, size, 7), 256 << 20);
        assert!(stream.len() < 1 << 20, "a small object");
        let mut sink = Meter(0);
        let err = decode(&stream, &name, &mut sink).expect_err("bomb refused");
        assert!(matches!(err, RestoreError::Damaged { .. }), "{err}");
        assert!(sink.0 <= size.bytes(), "{} bytes reached the sink", sink.0);
        // No valid header: refused before anything past the header is written.
        let stream = bomb(&[0u8; LONG_PAGE_HEADER_LEN], 64 << 20);
        let mut sink = Meter(0);
        decode(&stream, &name, &mut sink).expect_err("refused");
        assert!(sink.0 <= LONG_PAGE_HEADER_LEN as u64, "{} bytes", sink.0);
        // A history file is small whatever the segment size.
        let history: WalFileName = "00000002.history".parse().expect("name");
        let stream = bomb(b"1\t0/3000000\tno recovery target specified\n", 64 << 20);
        let mut sink = Meter(0);
        decode(&stream, &history, &mut sink).expect_err("refused");
        assert!(sink.0 <= crate::archive::MAX_HISTORY_BYTES);
    }
}
