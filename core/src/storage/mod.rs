//! The storage contract every archive backend implements.
//!
//! Small, synchronous and shaped like an object store, so a local directory, an S3 bucket and
//! an in-memory map look the same to the archive flow. Keys are `/`-separated relative paths
//! (see [`validate_key`]). The one primitive duplicates rely on is [`PutMode::Create`]:
//! create-if-absent, reported as [`StorageError::AlreadyExists`], never a silent overwrite.
//!
//! Backends keep their own detailed errors and convert into [`StorageError`], whose
//! [`StorageError::is_retryable`] tells callers whether trying again can help.

// The conformance suite and the fault injector are for tests (here, in the hosts, and in
// the test-only builds of the binaries): the `testing` feature, as object_store keeps its
// integration suite.
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
mod faults;
mod memory;

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

#[cfg(any(test, feature = "testing"))]
pub use faults::{Fault, FaultyStore};
pub use memory::MemoryStore;

/// What a listing or a put reports about a stored object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// How a put treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutMode {
    /// Create only if absent; otherwise fail with [`StorageError::AlreadyExists`] and leave the
    /// existing object untouched. Atomic: a concurrent writer cannot slip in between.
    Create,
    /// Replace whatever is there (catalogue rewrites, spool files; never WAL).
    Overwrite,
}

/// The storage operation that failed, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// [`WalStore::head`].
    Head,
    /// [`WalStore::get`].
    Get,
    /// [`WalStore::put`].
    Put,
    /// [`WalStore::list`].
    List,
    /// [`WalStore::delete`].
    Delete,
    /// [`WalStore::sync`].
    Sync,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Head => "head",
            Op::Get => "get",
            Op::Put => "put",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Sync => "sync",
        })
    }
}

/// One semantic error for every backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under that key.
    #[error("{key}: not found")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// A [`PutMode::Create`] put found an object already there.
    #[error("{key}: already exists")]
    AlreadyExists {
        /// The key written.
        key: String,
    },
    /// The key is not a clean relative path.
    #[error("{key:?}: invalid key: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The data to store could not be produced (the source file, its compression, …); the
    /// store itself is fine and nothing was stored.
    #[error("{key}: reading the data to store failed: {source}")]
    Payload {
        /// The key being written.
        key: String,
        /// The payload's error.
        #[source]
        source: io::Error,
    },
    /// A failure that may go away: timeouts, connection resets, 5xx, throttling.
    #[error("{op} {key}: {message} (transient)")]
    Transient {
        /// The operation.
        op: Op,
        /// The key involved (or prefix, for a listing).
        key: String,
        /// The backend's explanation.
        message: String,
        /// The backend's own error, when there is one (kept for its details and kind).
        #[source]
        source: Option<BackendError>,
    },
    /// A failure that retrying will not fix: permissions, missing bucket, bad credentials,
    /// full disk.
    #[error("{op} {key}: {message}")]
    Permanent {
        /// The operation.
        op: Op,
        /// The key involved (or prefix, for a listing).
        key: String,
        /// The backend's explanation.
        message: String,
        /// The backend's own error, when there is one (kept for its details and kind).
        #[source]
        source: Option<BackendError>,
    },
}

/// A backend's own error, kept inside a [`StorageError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl StorageError {
    /// Whether the same call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Transient { .. })
    }

    /// True for [`StorageError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// Classifies an I/O error from a file-system backend.
    pub fn from_io(op: Op, key: &str, err: &io::Error) -> StorageError {
        let key = key.to_owned();
        match err.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound { key },
            io::ErrorKind::AlreadyExists => StorageError::AlreadyExists { key },
            io::ErrorKind::Interrupted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::ResourceBusy => StorageError::Transient {
                op,
                key,
                message: err.to_string(),
                source: Some(Box::new(io::Error::new(err.kind(), err.to_string()))),
            },
            _ => StorageError::Permanent {
                op,
                key,
                message: err.to_string(),
                source: Some(Box::new(io::Error::new(err.kind(), err.to_string()))),
            },
        }
    }
}

/// The bytes of an object to store, produced on demand.
///
/// A backend calls [`Payload::write_to`] once per attempt; when it retries it calls it again
/// and the payload must produce the same bytes from the start (re-open the source, re-encode).
/// This keeps a 16 MiB segment out of memory and makes retries possible without buffering.
pub trait Payload {
    /// Writes the whole object into `sink`, returning the number of bytes written.
    fn write_to(&mut self, sink: &mut dyn Write) -> io::Result<u64>;

    /// When the object is exactly the bytes of a host file that must be `size` bytes long,
    /// that file: a store may copy it by its own means (an in-kernel copy) instead of calling
    /// [`Payload::write_to`]. If that copy fails or its length differs, the store must discard
    /// it and fall back to `write_to`, which reports the problem precisely.
    fn verbatim_file(&self) -> Option<(&std::path::Path, u64)> {
        None
    }

    /// A file whose bytes are exactly the payload and which the store may hard-link into place
    /// instead of copying (a local store on the same file system): a queued, uncompressed WAL
    /// that no one writes again. `None` (the default) for anything else.
    fn linkable_file(&self) -> Option<(&std::path::Path, u64)> {
        None
    }

    /// The modification time the stored object should carry (seconds since the epoch), where
    /// the store can set one: an archived WAL keeps its source's time, as Barman's copy does,
    /// so a catalogue rebuilt from the files reproduces the catalogue line by line.
    fn modified(&self) -> Option<f64> {
        None
    }
}

impl Payload for &[u8] {
    fn write_to(&mut self, sink: &mut dyn Write) -> io::Result<u64> {
        sink.write_all(self)?;
        Ok(self.len() as u64)
    }
}

/// What went wrong while a backend ran a payload into its sink.
#[derive(Debug)]
pub enum PayloadFailure {
    /// The payload failed by itself (source unreadable, encoder error).
    Payload(io::Error),
    /// Writing to the backend's sink failed (disk full, connection lost).
    Sink(io::Error),
}

impl PayloadFailure {
    /// Converts into the semantic error for `key`.
    pub fn into_storage_error(self, key: &str) -> StorageError {
        match self {
            PayloadFailure::Payload(source) => StorageError::Payload {
                key: key.to_owned(),
                source,
            },
            PayloadFailure::Sink(err) => StorageError::from_io(Op::Put, key, &err),
        }
    }
}

/// Runs `payload` into `sink`, telling the payload's own failures from the sink's: backends
/// use it so a full disk is reported as storage trouble, and a bad source as a bad source.
pub fn run_payload(payload: &mut dyn Payload, sink: &mut dyn Write) -> Result<u64, PayloadFailure> {
    struct Tracking<'a> {
        inner: &'a mut dyn Write,
        failed: Option<io::Error>,
    }
    impl Write for Tracking<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf).map_err(|e| {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                copy
            })
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush().map_err(|e| {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                copy
            })
        }
    }
    let mut tracking = Tracking {
        inner: sink,
        failed: None,
    };
    let result = payload
        .write_to(&mut tracking)
        .and_then(|n| tracking.flush().map(|()| n));
    match (result, tracking.failed) {
        (Ok(n), _) => Ok(n),
        (Err(_), Some(sink_err)) => Err(PayloadFailure::Sink(sink_err)),
        (Err(e), None) => Err(PayloadFailure::Payload(e)),
    }
}

/// A WAL archive backend.
///
/// Contract (checked by [`conformance::run_all`]):
/// - `put` stores all of the object or nothing; once it returns the object is complete and
///   visible, and durable after the next successful `sync` (backends whose puts are durable
///   on return keep the default no-op `sync`);
/// - `PutMode::Create` never replaces an existing object;
/// - `get`, `head` and `delete` of a missing key fail with [`StorageError::NotFound`];
/// - `list` returns every object whose key starts with `prefix`, sorted by key;
/// - invalid keys fail with [`StorageError::InvalidKey`] before any I/O.
pub trait WalStore {
    /// Size of one object.
    fn head(&self, key: &str) -> Result<ObjectMeta, StorageError>;
    /// A reader over one object's bytes.
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError>;
    /// Stores an object (see [`PutMode`] and [`Payload`]).
    fn put(
        &self,
        key: &str,
        mode: PutMode,
        payload: &mut dyn Payload,
    ) -> Result<ObjectMeta, StorageError>;
    /// Objects whose key starts with `prefix` (plain string prefix, `""` for all), sorted.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;
    /// Removes one object.
    fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Makes durable every object this store wrote, or found already present by `put`, `get`
    /// or `head`, since the last call. Callers sync before anything that relies on those
    /// objects surviving a crash (catalogue lines, deleting a source). A file system store
    /// uses it to group directory fsyncs per batch.
    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A boxed store is a store (hosts pick their backend at run time, and a decorator such as
/// the fault injector of the `testing` feature wraps whichever it is).
impl<S: WalStore + ?Sized> WalStore for Box<S> {
    fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        (**self).head(key)
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        (**self).get(key)
    }
    fn put(
        &self,
        key: &str,
        mode: PutMode,
        payload: &mut dyn Payload,
    ) -> Result<ObjectMeta, StorageError> {
        (**self).put(key, mode, payload)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        (**self).list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        (**self).delete(key)
    }
    fn sync(&self) -> Result<(), StorageError> {
        (**self).sync()
    }
}

/// Checks that a key is a clean relative path: non-empty `/`-separated components, none of
/// them empty, `.` or `..`, and no NUL or backslash. File-system backends rely on this to
/// stay inside their root.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(StorageError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.contains('\0') || key.contains('\\') {
        return bad("contains NUL or backslash");
    }
    if key.starts_with('/') {
        return bad("absolute");
    }
    if key
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("empty, '.' or '..' component");
    }
    Ok(())
}

/// Reads a whole object into memory (small objects: history files, tests).
pub fn get_bytes(store: &dyn WalStore, key: &str) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    store
        .get(key)?
        .read_to_end(&mut out)
        .map_err(|e| StorageError::from_io(Op::Get, key, &e))?;
    Ok(out)
}
