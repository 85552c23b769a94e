//! The archive flow: one queued file → one outcome, then a batch commit.
//!
//! Hosts drive it in two steps so they can parallelise the expensive part:
//! 1. [`Archiver::archive_file`] per candidate (validate, detect duplicates, compress, put
//!    create-if-absent). Independent per file; a host may run several at once.
//! 2. The commit, in name order: make the copies durable, append the catalogue lines durably,
//!    **then** release sources (delete archived/identical ones, move rejected ones to
//!    `errors/`). A source is never deleted before its archived copy and its catalogue line are
//!    durable; a failed file stays where it was for the next run.
//!
//! The batch policy (chunks, stops, commits, repairs) is [`crate::batch::BatchEngine`]'s;
//! [`run_batch`] pumps it sequentially.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::catalogue::CatalogueEntry;
use crate::compression::{Codec, DecodeLimits, Decoder, Encoder, Level, MAGIC_MAX_LEN};
use crate::duplicate::{DifferenceReason, Duplicate, ErrorKind, read_full, same_content};
use crate::encryption::{Decrypt, Encrypt, looks_like_openpgp};
use crate::layout::{Layout, StoredWal};
use crate::queue::{Batch, Candidate, UnknownReason};
use crate::storage::{Payload, PutMode, StorageError, WalStore};
use crate::wal::{
    HeaderError, HistoryError, LONG_PAGE_HEADER_LEN, SegmentSize, WalFileName,
    check_segment_header, parse_history,
};

/// A file waiting in a queue, as the host exposes it.
pub trait SourceFile {
    /// Opens the file from its start (called once per read pass: validation, duplicate
    /// comparison, each put attempt).
    fn open(&self) -> io::Result<Box<dyn Read + '_>>;

    /// The file's path on the host, for a store that can copy an uncompressed file faster
    /// than by reading it (see [`Payload::verbatim_file`]). `None` (the default) when there is
    /// no such path.
    fn path(&self) -> Option<&std::path::Path> {
        None
    }

    /// Whether a store may hard-link this file into the archive instead of copying it: only a
    /// queued file that nobody writes again (`incoming/`, `streaming/`), never PostgreSQL's
    /// `pg_wal`, whose segment files PostgreSQL recycles in place. `false` by default.
    fn linkable(&self) -> bool {
        false
    }
}

/// How to archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchiveSettings {
    /// Codec for plain sources (`None`: store as is).
    pub codec: Option<Codec>,
    /// Its level.
    pub level: Level,
    /// The cluster's segment size.
    pub segment_size: SegmentSize,
    /// Check each segment's first page header against its name and the segment size.
    pub check_page_header: bool,
    /// The cluster's system identifier, when known: segments from another cluster are refused.
    pub system_identifier: Option<u64>,
    /// A short segment modified less than this many seconds ago is left in place for the next
    /// run rather than rejected: a non-atomic `archive_command` (`cp`) may still be writing it.
    pub settle_seconds: f64,
    /// Key scheme of the store.
    pub layout: Layout,
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        ArchiveSettings {
            codec: None,
            level: Level::Medium,
            segment_size: SegmentSize::DEFAULT,
            check_page_header: true,
            system_identifier: None,
            settle_seconds: 60.0,
            layout: Layout::Local,
        }
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FileOutcome {
    /// Stored under `key`; the catalogue line to append.
    Archived {
        /// The catalogue line.
        entry: CatalogueEntry,
        /// Where it was stored.
        key: String,
    },
    /// Already archived with the same content.
    IdenticalDuplicate {
        /// The archived copy.
        key: String,
        /// The catalogue line describing the archived copy, appended by the commit only if the
        /// catalogue lacks it (a crash between storing and cataloguing, repaired on the rerun).
        entry: CatalogueEntry,
    },
    /// Already archived with different content; nothing overwritten.
    DifferentDuplicate {
        /// The archived copy.
        key: String,
        /// Why it differs from each archived copy (one per codec it is stored under, in
        /// practice one).
        reasons: Vec<DifferenceReason>,
    },
    /// The content is not a valid WAL file of its kind.
    Invalid {
        /// What is wrong.
        reason: InvalidReason,
    },
    /// Not a WAL file, or not a regular file (from the queue listing).
    Unknown {
        /// Why.
        reason: UnknownReason,
    },
    /// Left in place for a later run (probably still being written).
    Deferred {
        /// What is wrong with it now.
        problem: InvalidReason,
        /// How long ago it was last modified, in seconds.
        modified_seconds_ago: u64,
    },
    /// The source could not be read (permissions, I/O error); left in place, the batch goes on.
    SourceError {
        /// The error.
        error: String,
    },
    /// The store failed; left in place, and the batch stops (the store is likely unavailable).
    Failed {
        /// The error.
        error: String,
        /// Whether a retry may succeed (storage outage) or needs attention.
        retryable: bool,
    },
}

/// Why a file with a WAL name is not valid WAL of its kind (it goes to `errors/` as
/// `.invalid`; docs/barman-behaviours.md#B-CHANGE-03).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InvalidReason {
    /// No bytes at all.
    #[error("empty file")]
    Empty,
    /// Encrypted by someone else: walvault archives what PostgreSQL wrote.
    #[error("source is encrypted (OpenPGP); walvault archives plain or compressed WAL")]
    Encrypted,
    /// Compressed data whose stream cannot even be opened.
    #[error("unreadable {codec} data: {error}")]
    Undecodable {
        /// `plain` or the codec's name.
        codec: String,
        /// The decoder's error.
        error: String,
    },
    /// Data that fails while being decoded.
    #[error("corrupt {what}: {error}")]
    Corrupt {
        /// `file` or `<codec> data`.
        what: String,
        /// The decoder's error.
        error: String,
    },
    /// A full segment of the wrong size.
    #[error("segment is {size} bytes, expected {} ({segment_size} segments)", segment_size.bytes())]
    WrongSize {
        /// Its (decompressed) size.
        size: u64,
        /// The server's segment size.
        segment_size: SegmentSize,
    },
    /// A `.partial` larger than a segment.
    #[error("partial segment is {size} bytes, larger than a {segment_size} segment")]
    PartialTooLarge {
        /// Its (decompressed) size.
        size: u64,
        /// The server's segment size.
        segment_size: SegmentSize,
    },
    /// The first page header does not match the name.
    #[error("bad page header: {0}")]
    PageHeader(HeaderError),
    /// WAL of another cluster.
    #[error("from another cluster: system identifier {found} (expected {expected})")]
    ForeignCluster {
        /// The header's system identifier.
        found: u64,
        /// The server's.
        expected: u64,
    },
    /// A history file that does not parse.
    #[error(transparent)]
    History(HistoryError),
}

/// What the host must do with a source after the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    /// Delete it: the archive has it durably.
    Release,
    /// Move it to `errors/` with this kind.
    ToErrors(ErrorKind),
    /// Leave it where it is.
    Keep,
}

impl FileOutcome {
    /// What happens to the source.
    pub fn disposition(&self) -> Disposition {
        match self {
            FileOutcome::Archived { .. } | FileOutcome::IdenticalDuplicate { .. } => {
                Disposition::Release
            }
            FileOutcome::DifferentDuplicate { .. } => Disposition::ToErrors(ErrorKind::Duplicate),
            FileOutcome::Invalid { .. } => Disposition::ToErrors(ErrorKind::Invalid),
            FileOutcome::Unknown { .. } => Disposition::ToErrors(ErrorKind::Unknown),
            FileOutcome::Deferred { .. }
            | FileOutcome::SourceError { .. }
            | FileOutcome::Failed { .. } => Disposition::Keep,
        }
    }

    /// The error text for hooks and reports (`None` on success).
    pub fn error(&self) -> Option<String> {
        match self {
            FileOutcome::Archived { .. } | FileOutcome::IdenticalDuplicate { .. } => None,
            FileOutcome::DifferentDuplicate { key, reasons } => Some(format!(
                "DuplicateWalFile: {key}: {}",
                join_reasons(reasons)
            )),
            FileOutcome::Invalid { reason } => Some(format!("InvalidWalFile: {reason}")),
            FileOutcome::Unknown { reason } => Some(format!("UnknownFile: {reason}")),
            FileOutcome::Deferred { .. } => Some(format!("Deferred: {}", self.reason_text())),
            FileOutcome::SourceError { error } => Some(format!("SourceUnreadable: {error}")),
            FileOutcome::Failed { error, .. } => Some(format!("ArchiveFailed: {error}")),
        }
    }
}

impl FileOutcome {
    /// Why the file was not archived, in words (empty when it was, or was already): what
    /// `archive-wal` prints after the file's name.
    pub fn reason_text(&self) -> String {
        match self {
            FileOutcome::Archived { .. } | FileOutcome::IdenticalDuplicate { .. } => String::new(),
            FileOutcome::DifferentDuplicate { reasons, .. } => join_reasons(reasons),
            FileOutcome::Invalid { reason } => reason.to_string(),
            FileOutcome::Unknown { reason } => reason.to_string(),
            FileOutcome::Deferred {
                problem,
                modified_seconds_ago,
            } => format!(
                "{problem}; modified {modified_seconds_ago}s ago, may still be being written"
            ),
            FileOutcome::SourceError { error } | FileOutcome::Failed { error, .. } => error.clone(),
        }
    }
}

fn join_reasons(reasons: &[DifferenceReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The archiver for one store.
pub struct Archiver<'a, S: WalStore + ?Sized> {
    /// Where WAL goes.
    pub store: &'a S,
    /// How.
    pub settings: &'a ArchiveSettings,
    /// Opens encrypted archived copies for comparison, when a key is configured.
    pub decryptor: Option<&'a dyn Decrypt>,
    /// Encrypts what is stored (after compression), when encryption is on.
    pub encryptor: Option<&'a dyn Encrypt>,
}

impl<S: WalStore + ?Sized> std::fmt::Debug for Archiver<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("settings", &self.settings)
            .field("decryptor", &self.decryptor.map(Decrypt::name))
            .field("encryptor", &self.encryptor.map(Encrypt::name))
            .finish()
    }
}

/// What reading a source told us.
struct Inspection {
    /// The source is already compressed with this codec (stored as is).
    codec: Option<Codec>,
    /// Decompressed size.
    raw_size: u64,
    /// The first decompressed bytes (a page header's worth).
    head: Vec<u8>,
    /// The whole decompressed content, kept for history files only (small).
    history: Option<Vec<u8>>,
}

/// Maximum size of a history file or backup label walvault accepts (PostgreSQL's are a few
/// KiB).
pub const MAX_HISTORY_BYTES: u64 = 16 << 20;

impl<S: WalStore + ?Sized> Archiver<'_, S> {
    /// Archives one candidate. Never deletes or moves the source: the batch commits (see [`crate::batch`]).
    pub fn archive_file(
        &self,
        candidate: &Candidate,
        source: &dyn SourceFile,
        now_unix: f64,
    ) -> FileOutcome {
        let name = candidate.name;
        let inspection = match self.inspect(&name, source, candidate.size) {
            Ok(i) => i,
            Err(InspectError::Io(e)) => {
                return FileOutcome::SourceError {
                    error: format!("cannot read {}: {e}", candidate.file_name),
                };
            }
            Err(InspectError::Invalid(reason)) => return FileOutcome::Invalid { reason },
        };
        if let Err(reason) = self.validate(&name, &inspection) {
            let young = now_unix - candidate.mtime < self.settings.settle_seconds;
            let short = name.is_segment()
                && inspection.codec.is_none()
                && inspection.raw_size < self.settings.segment_size.bytes();
            return if young && short {
                FileOutcome::Deferred {
                    problem: reason,
                    // Rounded, and never negative (a clock step back).
                    modified_seconds_ago: (now_unix - candidate.mtime).max(0.0).round() as u64,
                }
            } else {
                FileOutcome::Invalid { reason }
            };
        }
        // Look first (cheap, and finds copies stored under another codec's extension), then
        // create-if-absent, which also closes the race with a concurrent archiver.
        for _attempt in 0..2 {
            match self.settings.layout.find_in(self.store, &name) {
                Ok(existing) if !existing.is_empty() => {
                    return self.on_existing(candidate, &existing, source);
                }
                Ok(_) => {}
                Err(e) => return failed(&e),
            }
            let codec = inspection.codec.or(self.settings.codec);
            let key = self
                .settings
                .layout
                .key_for(&name, codec, self.encryptor.is_some());
            let mut payload = ArchivePayload {
                source,
                encode: if inspection.codec.is_some() {
                    None
                } else {
                    self.settings.codec
                },
                level: self.settings.level,
                expected_size: inspection.raw_size,
                plain_source: inspection.codec.is_none(),
                modified: candidate.mtime,
                encrypt: self.encryptor,
            };
            match self.store.put(&key, PutMode::Create, &mut payload) {
                Ok(meta) => {
                    let entry = CatalogueEntry {
                        name: name.to_string(),
                        size: meta.size,
                        time: candidate.mtime,
                        compression: codec.map(|c| c.name().to_owned()),
                        encryption: self.encryptor.map(|e| e.name().to_owned()),
                    };
                    return FileOutcome::Archived { entry, key };
                }
                // The key exists though the listing missed it (a concurrent archiver, or an
                // object store whose listings lag behind writes): compare with that exact
                // key, which a read sees at once, rather than trust the listing again.
                Err(StorageError::AlreadyExists { .. }) => match self.store.head(&key) {
                    Ok(meta) => {
                        let stored = StoredWal {
                            key,
                            name,
                            codec_from_key: match self.settings.layout {
                                Layout::Local => None,
                                Layout::Cloud { .. } => codec,
                            },
                            size: meta.size,
                        };
                        return self.on_existing(candidate, &[stored], source);
                    }
                    // Gone again (a concurrent delete-wals): look afresh.
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return failed(&e),
                },
                // The source, not the store, failed: keep it, and let the batch go on.
                Err(StorageError::Payload { source, .. }) => {
                    return FileOutcome::SourceError {
                        error: format!("reading {} failed: {source}", candidate.file_name),
                    };
                }
                Err(e) => return failed(&e),
            }
        }
        FileOutcome::Failed {
            error: format!("{name}: appeared and disappeared during archiving"),
            retryable: true,
        }
    }

    /// One file with its hook points: `None` when the pre hook stops the run (the file is
    /// left alone), else the outcome, after the post hook saw it.
    pub fn archive_with_hooks(
        &self,
        candidate: &Candidate,
        source: &dyn SourceFile,
        hooks: &dyn ArchiveHooks,
        now_unix: f64,
    ) -> Option<FileOutcome> {
        if hooks.before(candidate) == HookVerdict::Stop {
            return None;
        }
        let outcome = self.archive_file(candidate, source, now_unix);
        hooks.after(candidate, &outcome);
        Some(outcome)
    }

    fn inspect(
        &self,
        name: &WalFileName,
        source: &dyn SourceFile,
        listed_size: u64,
    ) -> Result<Inspection, InspectError> {
        let mut reader = source.open()?;
        let mut magic = [0u8; MAGIC_MAX_LEN];
        let got = read_full(&mut *reader, &mut magic)?;
        let codec = Codec::identify(&magic[..got]);
        if codec.is_none() && looks_like_openpgp(&magic[..got]) {
            return Err(InspectError::Invalid(InvalidReason::Encrypted));
        }
        let limit = if name.is_history() || name.is_backup_label() {
            MAX_HISTORY_BYTES
        } else {
            self.settings.segment_size.bytes()
        };
        let chained: Box<dyn Read + '_> =
            Box::new(io::Cursor::new(magic[..got].to_vec()).chain(reader));
        let mut decoder = Decoder::new(
            codec,
            chained,
            DecodeLimits {
                max_output: limit,
                ..DecodeLimits::default()
            },
        )
        .map_err(|e| {
            InspectError::Invalid(InvalidReason::Undecodable {
                codec: codec.map_or("plain", Codec::name).to_owned(),
                error: e.to_string(),
            })
        })?;
        let keep_all = name.is_history();
        let mut head = Vec::with_capacity(LONG_PAGE_HEADER_LEN);
        let mut all = Vec::new();
        let mut raw_size = 0u64;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let what =
                        codec.map_or_else(|| "file".to_owned(), |c| format!("{} data", c.name()));
                    return Err(InspectError::Invalid(InvalidReason::Corrupt {
                        what,
                        error: e.to_string(),
                    }));
                }
                Err(e) => return Err(InspectError::Io(e)),
            };
            if head.len() < LONG_PAGE_HEADER_LEN {
                let take = (LONG_PAGE_HEADER_LEN - head.len()).min(n);
                head.extend_from_slice(&buf[..take]);
            }
            if keep_all {
                all.extend_from_slice(&buf[..n]);
            }
            raw_size += n as u64;
            if codec.is_none() && !keep_all && head.len() >= LONG_PAGE_HEADER_LEN {
                // Plain data needs no decoding pass: its size is the listed size, and the put
                // checks that it reads exactly that many bytes.
                raw_size = raw_size.max(listed_size);
                break;
            }
        }
        Ok(Inspection {
            codec,
            raw_size,
            head,
            history: keep_all.then_some(all),
        })
    }

    fn validate(&self, name: &WalFileName, inspection: &Inspection) -> Result<(), InvalidReason> {
        let size = self.settings.segment_size;
        if inspection.raw_size == 0 {
            return Err(InvalidReason::Empty);
        }
        match name {
            WalFileName::Segment(segment) | WalFileName::Partial(segment) => {
                if name.is_segment() && inspection.raw_size != size.bytes() {
                    return Err(InvalidReason::WrongSize {
                        size: inspection.raw_size,
                        segment_size: size,
                    });
                }
                if inspection.raw_size > size.bytes() {
                    return Err(InvalidReason::PartialTooLarge {
                        size: inspection.raw_size,
                        segment_size: size,
                    });
                }
                if self.settings.check_page_header {
                    let header = check_segment_header(*segment, size, &inspection.head)
                        .map_err(InvalidReason::PageHeader)?;
                    if let Some(expected) = self.settings.system_identifier
                        && header.system_identifier != expected
                    {
                        return Err(InvalidReason::ForeignCluster {
                            found: header.system_identifier,
                            expected,
                        });
                    }
                }
                Ok(())
            }
            WalFileName::History(tli) => {
                let content = inspection.history.as_deref().unwrap_or_default();
                parse_history(*tli, content)
                    .map(drop)
                    .map_err(InvalidReason::History)
            }
            WalFileName::BackupLabel { .. } => Ok(()),
        }
    }

    fn on_existing(
        &self,
        candidate: &Candidate,
        existing: &[StoredWal],
        source: &dyn SourceFile,
    ) -> FileOutcome {
        let mut reasons = Vec::new();
        for stored in existing {
            match self.compare(stored, source) {
                Ok((Duplicate::Identical, stored_as)) => {
                    let entry = CatalogueEntry {
                        name: stored.name.to_string(),
                        size: stored.size,
                        time: candidate.mtime,
                        compression: stored_as.codec.map(|c| c.name().to_owned()),
                        encryption: stored_as.encryption,
                    };
                    return FileOutcome::IdenticalDuplicate {
                        key: stored.key.clone(),
                        entry,
                    };
                }
                Ok((Duplicate::Different { reason }, _)) => reasons.push(reason),
                Err(e) => return failed(&e),
            }
        }
        let key = existing.first().map(|s| s.key.clone()).unwrap_or_default();
        FileOutcome::DifferentDuplicate { key, reasons }
    }

    /// Compares the decompressed (and decrypted) archived copy with the decompressed source;
    /// also says how the archived copy is stored.
    fn compare(
        &self,
        stored: &StoredWal,
        source: &dyn SourceFile,
    ) -> Result<(Duplicate, StoredAs), StorageError> {
        let mut stored_as = StoredAs {
            codec: stored.codec_from_key,
            encryption: None,
        };
        let different =
            |reason: DifferenceReason| Ok((Duplicate::Different { reason }, StoredAs::default()));
        let mut raw = self.store.get(&stored.key)?;
        let mut prefix = [0u8; 16];
        let got = read_full(&mut *raw, &mut prefix)
            .map_err(|e| StorageError::from_io(crate::storage::Op::Get, &stored.key, &e))?;
        let mut reader: Box<dyn Read + Send + '_> =
            Box::new(io::Cursor::new(prefix[..got].to_vec()).chain(raw));
        if let Some(decryptor) = self.decryptor.filter(|d| d.detect(&prefix[..got])) {
            stored_as.encryption = Some(decryptor.name().to_owned());
            reader = match decryptor.decrypt(reader) {
                Ok(r) => r,
                Err(e) => {
                    return different(DifferenceReason::Undecryptable {
                        scheme: decryptor.name().to_owned(),
                        error: e.to_string(),
                    });
                }
            };
        } else if Codec::identify(&prefix[..got]).is_none() && looks_like_openpgp(&prefix[..got]) {
            return different(DifferenceReason::EncryptedWithoutKey);
        }
        let limits = DecodeLimits {
            max_output: self.settings.segment_size.bytes().max(MAX_HISTORY_BYTES),
            ..DecodeLimits::default()
        };
        let stored_plain = stored.decoder(reader, limits);
        let mut stored_plain = match stored_plain {
            Ok(d) => {
                stored_as.codec = d.codec();
                d
            }
            Err(e) => return different(DifferenceReason::ArchivedUnreadable(e.to_string())),
        };
        let mut source_plain = match source.open().and_then(|r| Decoder::auto(r, limits)) {
            Ok(d) => d,
            Err(e) => return different(DifferenceReason::SourceUnreadable(e.to_string())),
        };
        match same_content(&mut stored_plain, &mut source_plain) {
            Ok(true) => Ok((Duplicate::Identical, stored_as)),
            Ok(false) => different(DifferenceReason::ContentDiffers),
            Err(e) => different(DifferenceReason::ReadFailed(e.to_string())),
        }
    }
}

/// How an archived copy is stored, learnt while comparing it.
#[derive(Default)]
struct StoredAs {
    codec: Option<Codec>,
    encryption: Option<String>,
}

enum InspectError {
    Io(io::Error),
    Invalid(InvalidReason),
}

impl From<io::Error> for InspectError {
    fn from(e: io::Error) -> Self {
        InspectError::Io(e)
    }
}

fn failed(e: &StorageError) -> FileOutcome {
    FileOutcome::Failed {
        error: e.to_string(),
        retryable: e.is_retryable(),
    }
}

/// The bytes of one archived object: the source, compressed on the fly unless it already is.
struct ArchivePayload<'a> {
    source: &'a dyn SourceFile,
    encode: Option<Codec>,
    level: Level,
    /// The validated size of a plain source: reading a different amount means the file
    /// changed after it was checked, and nothing may be stored.
    expected_size: u64,
    plain_source: bool,
    /// The source's modification time, kept by the stored copy.
    modified: f64,
    /// Encrypts the (compressed) bytes, when encryption is on.
    encrypt: Option<&'a dyn Encrypt>,
}

impl Payload for ArchivePayload<'_> {
    fn verbatim_file(&self) -> Option<(&std::path::Path, u64)> {
        match (self.encode, self.plain_source, self.encrypt) {
            (None, true, None) => Some((self.source.path()?, self.expected_size)),
            _ => None,
        }
    }

    fn linkable_file(&self) -> Option<(&std::path::Path, u64)> {
        self.verbatim_file().filter(|_| self.source.linkable())
    }

    fn modified(&self) -> Option<f64> {
        Some(self.modified)
    }

    fn write_to(&mut self, sink: &mut dyn Write) -> io::Result<u64> {
        let mut reader = self.source.open()?;
        let mut counter = CountingWriter {
            inner: sink,
            count: 0,
        };
        if let Some(encrypt) = self.encrypt {
            // The encryption pulls what it seals: compression runs inside that read.
            let mut plain = EncodingReader::new(
                reader,
                self.encode,
                self.level,
                self.plain_source.then_some(self.expected_size),
            )?;
            encrypt.encrypt(&mut plain, &mut counter)?;
            if !plain.finished() {
                return Err(io::Error::other(
                    "the encryption stopped before the data ended",
                ));
            }
            return Ok(counter.count);
        }
        let mut encoder = Encoder::new(self.encode, self.level, &mut counter)?;
        let read = io::copy(&mut reader, &mut encoder)?;
        if self.plain_source && read != self.expected_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the file changed while being archived: {read} bytes read, {} expected",
                    self.expected_size
                ),
            ));
        }
        encoder.finish()?;
        Ok(counter.count)
    }
}

/// A reader of a source's compressed bytes: the push-style [`Encoder`] driven from reads,
/// for a consumer (the encryption) that pulls. Memory stays at one chunk plus what the codec
/// emits for it.
struct EncodingReader<'a> {
    source: Box<dyn Read + 'a>,
    encoder: Option<Encoder<SharedBuf>>,
    out: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    pos: usize,
    chunk: Vec<u8>,
    read: u64,
    /// A plain source's validated size: reading another amount fails the put.
    expected: Option<u64>,
}

/// The encoder's sink, shared with the reader that drains it.
struct SharedBuf(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> EncodingReader<'a> {
    fn new(
        source: Box<dyn Read + 'a>,
        codec: Option<Codec>,
        level: Level,
        expected: Option<u64>,
    ) -> io::Result<Self> {
        let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        Ok(EncodingReader {
            source,
            encoder: Some(Encoder::new(codec, level, SharedBuf(out.clone()))?),
            out,
            pos: 0,
            chunk: vec![0; 256 << 10],
            read: 0,
            expected,
        })
    }

    /// Whether the source was read to its end and the encoder finished.
    fn finished(&self) -> bool {
        self.encoder.is_none()
    }
}

impl Read for EncodingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut out = self.out.borrow_mut();
                if self.pos < out.len() {
                    let n = buf.len().min(out.len() - self.pos);
                    buf[..n].copy_from_slice(&out[self.pos..self.pos + n]);
                    self.pos += n;
                    if self.pos == out.len() {
                        out.clear();
                        self.pos = 0;
                    }
                    return Ok(n);
                }
            }
            let Some(encoder) = self.encoder.as_mut() else {
                return Ok(0);
            };
            let n = match self.source.read(&mut self.chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                if let Some(expected) = self.expected
                    && self.read != expected
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the file changed while being archived: {} bytes read, {expected} expected",
                            self.read
                        ),
                    ));
                }
                if let Some(encoder) = self.encoder.take() {
                    encoder.finish()?;
                }
                continue;
            }
            self.read += n as u64;
            encoder.write_all(&self.chunk[..n])?;
        }
    }
}

struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The host side of a queue directory.
pub trait Queue {
    /// The file behind a candidate.
    fn source<'a>(&'a self, candidate: &Candidate) -> Box<dyn SourceFile + 'a>;
    /// Deletes a source whose archived copy is durable.
    fn release(&mut self, file_name: &str) -> io::Result<()>;
    /// Moves an entry to `errors/` (durably) under the first of `names` that does not exist
    /// yet, never replacing an entry there; returns the name taken.
    fn move_to_errors(
        &mut self,
        file_name: &str,
        names: &mut dyn Iterator<Item = String>,
    ) -> io::Result<String>;
}

/// The host side of the catalogue.
pub trait CatalogueSink {
    /// Appends lines and makes them durable before returning. A host whose catalogue other
    /// processes append to skips the lines another archiver of the same WAL appended since.
    fn append(&mut self, entries: &[CatalogueEntry]) -> io::Result<()>;
    /// Which of `names` the catalogue lacks (asked only when a batch found files already
    /// archived, to repair a crash between storing and cataloguing).
    fn missing(&self, names: &[String]) -> io::Result<Vec<String>>;
}

/// Hook points around each file (pre/post archive scripts in the native host).
pub trait ArchiveHooks {
    /// Before a file is archived. `Stop` ends the run: this file and the rest stay queued and
    /// unknown entries are not moved (Barman's ABORT_STOP).
    fn before(&self, _candidate: &Candidate) -> HookVerdict {
        HookVerdict::Proceed
    }
    /// After a file, with its outcome (errors included, unlike Barman's post_archive_script).
    fn after(&self, _candidate: &Candidate, _outcome: &FileOutcome) {}
}

/// A pre-archive hook's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookVerdict {
    /// Archive the file.
    Proceed,
    /// Stop this run.
    Stop,
}

/// Hooks that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;
impl ArchiveHooks for NoHooks {}

/// One file's record in a batch report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileReport {
    /// The queue file name.
    pub file_name: String,
    /// The archived name (upper case), when it is a WAL name.
    pub name: Option<WalFileName>,
    /// What happened.
    pub outcome: FileOutcome,
    /// The `errors/` name it was moved to.
    pub error_file: Option<String>,
    /// A failure releasing or moving the source (the archive itself is fine).
    pub source_error: Option<String>,
}

/// The result of a batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchReport {
    /// Per file, in processing order (name order), unknown entries last.
    pub files: Vec<FileReport>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    /// A failure making the archived copies or the catalogue durable: nothing was released.
    pub catalogue_error: Option<String>,
}

impl BatchReport {
    /// Files archived in this run.
    pub fn archived(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f.outcome, FileOutcome::Archived { .. }))
            .count()
    }

    /// Whether anything needs attention (failures, stop, catalogue).
    pub fn failed(&self) -> bool {
        self.stopped.is_some()
            || self.catalogue_error.is_some()
            || self.files.iter().any(|f| {
                matches!(
                    f.outcome,
                    FileOutcome::Failed { .. } | FileOutcome::SourceError { .. }
                ) || f.source_error.is_some()
            })
    }
}

/// Archives a batch sequentially, one file at a time: the [`crate::batch::BatchEngine`]
/// pumped inline, with [`crate::batch::perform`] for its commit steps. The threaded host pumps
/// the same engine.
pub fn run_batch<S: WalStore + ?Sized>(
    archiver: &Archiver<'_, S>,
    batch: &Batch,
    queue: &mut dyn Queue,
    catalogue: &mut dyn CatalogueSink,
    hooks: &dyn ArchiveHooks,
    now_unix: f64,
    options: crate::batch::BatchOptions,
) -> BatchReport {
    let mut engine = crate::batch::BatchEngine::new(batch.clone(), now_unix, options);
    loop {
        while let Some(step) = engine.poll_commit() {
            let result = crate::batch::perform(&step, archiver.store, queue, catalogue);
            engine.step_done(result);
        }
        if engine.is_finished() {
            break;
        }
        let Some((index, candidate)) = engine.next_file() else {
            // Nothing to hand out and no commit due cannot happen inline (nothing is in
            // flight); leave rather than spin.
            break;
        };
        let outcome = {
            let source = queue.source(&candidate);
            archiver.archive_with_hooks(&candidate, &*source, hooks, now_unix)
        };
        engine.file_done(index, outcome);
    }
    engine.into_report()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{Lsn, TimelineId};

    #[test]
    fn outcomes_speak_barman_s_words_and_reasons_are_typed() {
        let different = FileOutcome::DifferentDuplicate {
            key: "0000000100000000/000000010000000000000001".into(),
            reasons: vec![DifferenceReason::ContentDiffers],
        };
        assert_eq!(
            different.error().as_deref(),
            Some(
                "DuplicateWalFile: 0000000100000000/000000010000000000000001: content differs from the archived copy"
            )
        );
        assert_eq!(
            different.disposition(),
            Disposition::ToErrors(ErrorKind::Duplicate)
        );
        let header = InvalidReason::PageHeader(HeaderError::WrongAddress {
            expected: Lsn(0x100_0000),
            found: Lsn(0),
        });
        assert_eq!(
            FileOutcome::Invalid {
                reason: header.clone()
            }
            .error()
            .as_deref(),
            Some(
                "InvalidWalFile: bad page header: page address 0/0 does not match the name, which starts at 0/1000000"
            )
        );
        let deferred = FileOutcome::Deferred {
            problem: InvalidReason::WrongSize {
                size: 8192,
                segment_size: SegmentSize::DEFAULT,
            },
            modified_seconds_ago: 3,
        };
        assert_eq!(
            deferred.reason_text(),
            "segment is 8192 bytes, expected 16777216 (16MB segments); modified 3s ago, may still be being written"
        );
        assert_eq!(deferred.disposition(), Disposition::Keep);
        assert_eq!(
            FileOutcome::Unknown {
                reason: UnknownReason::Symlink
            }
            .error()
            .as_deref(),
            Some("UnknownFile: a symbolic link (walvault never follows links in a queue)")
        );
        // The reasons travel as data (reports, JSON), not as text to parse.
        let json = serde_json::to_string(&FileOutcome::Invalid { reason: header }).expect("json");
        let back: FileOutcome = serde_json::from_str(&json).expect("back");
        assert!(matches!(
            back,
            FileOutcome::Invalid {
                reason: InvalidReason::PageHeader(HeaderError::WrongAddress { .. })
            }
        ));
        assert_eq!(
            InvalidReason::History(crate::wal::HistoryError::Empty(TimelineId(2))).to_string(),
            "history file for timeline 2 has no entries"
        );
    }
}
