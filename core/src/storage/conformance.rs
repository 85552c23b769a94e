//! The storage conformance suite: plain functions over `&dyn WalStore`, run against every
//! backend (memory here; local directories, S3 servers and the WASI host in their crates).
//!
//! Each check uses keys under the `prefix` it is given, so suites can share a bucket, and
//! panics with a message naming the broken rule.

use std::io::{self, Read, Write};

use super::{ObjectMeta, Payload, PutMode, StorageError, WalStore, get_bytes};

/// Runs every check.
pub fn run_all(store: &dyn WalStore, prefix: &str) {
    put_create_then_read(store, &format!("{prefix}/create"));
    create_never_overwrites(store, &format!("{prefix}/exists"));
    overwrite_replaces(store, &format!("{prefix}/overwrite"));
    missing_keys_are_not_found(store, &format!("{prefix}/missing"));
    list_is_sorted_prefix_match(store, &format!("{prefix}/list"));
    delete_removes(store, &format!("{prefix}/delete"));
    failed_payload_stores_nothing(store, &format!("{prefix}/payload"));
    payload_replayed_on_retry_is_consistent(store, &format!("{prefix}/replay"));
    empty_and_large_objects(store, &format!("{prefix}/sizes"));
    invalid_keys_rejected(store, &format!("{prefix}/invalid"));
}

/// Deterministic pseudo-random bytes (xorshift), so large objects are not trivially compressible.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn read_all(store: &dyn WalStore, key: &str) -> Vec<u8> {
    get_bytes(store, key).unwrap_or_else(|e| panic!("get {key}: {e}"))
}

/// A created object reads back identically, and `head` reports its size.
pub fn put_create_then_read(store: &dyn WalStore, prefix: &str) {
    let key = format!("{prefix}/0000000100000000/000000010000000000000001");
    let data = test_bytes(70_000, 1);
    let meta = store
        .put(&key, PutMode::Create, &mut data.as_slice())
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    assert_eq!(
        meta,
        ObjectMeta {
            key: key.clone(),
            size: data.len() as u64
        },
        "put must report key and size"
    );
    assert_eq!(
        store.head(&key).expect("head after put").size,
        data.len() as u64,
        "head size"
    );
    assert!(
        read_all(store, &key) == data,
        "get must return the bytes put"
    );
}

/// `PutMode::Create` on an existing key fails with `AlreadyExists` and keeps the old bytes.
pub fn create_never_overwrites(store: &dyn WalStore, prefix: &str) {
    let key = format!("{prefix}/00000002.history");
    store
        .put(&key, PutMode::Create, &mut &b"first"[..])
        .expect("first create");
    match store.put(&key, PutMode::Create, &mut &b"second"[..]) {
        Err(StorageError::AlreadyExists { key: k }) => {
            assert_eq!(k, key, "AlreadyExists names the key")
        }
        other => panic!("second create of {key} must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        read_all(store, &key),
        b"first",
        "create must not replace an existing object"
    );
}

/// `PutMode::Overwrite` replaces.
pub fn overwrite_replaces(store: &dyn WalStore, prefix: &str) {
    let key = format!("{prefix}/spool");
    store
        .put(&key, PutMode::Overwrite, &mut &b"one"[..])
        .expect("first overwrite");
    store
        .put(&key, PutMode::Overwrite, &mut &b"two!"[..])
        .expect("second overwrite");
    assert_eq!(read_all(store, &key), b"two!");
    assert_eq!(store.head(&key).expect("head").size, 4);
}

/// `head`, `get` and `delete` of a missing key are `NotFound`.
pub fn missing_keys_are_not_found(store: &dyn WalStore, prefix: &str) {
    let key = format!("{prefix}/nothing-here");
    assert!(
        matches!(store.head(&key), Err(StorageError::NotFound { .. })),
        "head of a missing key"
    );
    assert!(
        matches!(
            store.get(&key).map(drop),
            Err(StorageError::NotFound { .. })
        ),
        "get of a missing key"
    );
    assert!(
        matches!(store.delete(&key), Err(StorageError::NotFound { .. })),
        "delete of a missing key"
    );
    assert!(
        store
            .list(&format!("{prefix}/"))
            .expect("list of an empty prefix")
            .is_empty()
    );
}

/// `list` is a plain string-prefix match, recursive, sorted by key, with sizes.
pub fn list_is_sorted_prefix_match(store: &dyn WalStore, prefix: &str) {
    let names = [
        "0000000100000000/000000010000000000000002",
        "0000000100000000/000000010000000000000001.partial",
        "0000000100000000/000000010000000000000001",
        "0000000100000000/000000010000000000000001.00000028.backup",
        "0000000100000001/000000010000000100000000",
        "00000002.history",
    ];
    for (i, name) in names.iter().enumerate() {
        let data = test_bytes(i * 10, i as u64);
        store
            .put(
                &format!("{prefix}/{name}"),
                PutMode::Create,
                &mut data.as_slice(),
            )
            .expect("put for listing");
    }
    let listed = store
        .list(&format!(
            "{prefix}/0000000100000000/000000010000000000000001"
        ))
        .expect("list");
    let keys: Vec<&str> = listed
        .iter()
        .map(|m| m.key.strip_prefix(prefix).unwrap_or(&m.key))
        .collect();
    assert_eq!(
        keys,
        [
            "/0000000100000000/000000010000000000000001",
            "/0000000100000000/000000010000000000000001.00000028.backup",
            "/0000000100000000/000000010000000000000001.partial",
        ],
        "prefix listing"
    );
    assert_eq!(listed[1].size, 30, "listing reports sizes");
    let all = store.list(&format!("{prefix}/")).expect("list all");
    assert_eq!(
        all.len(),
        names.len(),
        "recursive listing finds every object"
    );
    assert!(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "listing is sorted"
    );
}

/// `delete` removes the object and only it.
pub fn delete_removes(store: &dyn WalStore, prefix: &str) {
    let (a, b) = (format!("{prefix}/a"), format!("{prefix}/ab"));
    store
        .put(&a, PutMode::Create, &mut &b"a"[..])
        .expect("put a");
    store
        .put(&b, PutMode::Create, &mut &b"b"[..])
        .expect("put ab");
    store.delete(&a).expect("delete");
    assert!(
        store.head(&a).is_err_and(|e| e.is_not_found()),
        "deleted object is gone"
    );
    assert_eq!(read_all(store, &b), b"b", "delete touches only its key");
    store
        .put(&a, PutMode::Create, &mut &b"again"[..])
        .expect("create after delete");
}

struct FailingPayload {
    good: usize,
}

impl Payload for FailingPayload {
    fn write_to(&mut self, sink: &mut dyn Write) -> io::Result<u64> {
        sink.write_all(&test_bytes(self.good, 9))?;
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "source went bad",
        ))
    }
}

/// A payload that fails half-way leaves no object (not even a short one), is reported as a
/// payload error, and a later create of the same key succeeds.
pub fn failed_payload_stores_nothing(store: &dyn WalStore, prefix: &str) {
    let key = format!("{prefix}/000000010000000000000007");
    match store.put(&key, PutMode::Create, &mut FailingPayload { good: 100_000 }) {
        Err(StorageError::Payload { key: k, source }) => {
            assert_eq!(k, key);
            assert_eq!(
                source.kind(),
                io::ErrorKind::InvalidData,
                "payload error kept"
            );
        }
        other => panic!("a failing payload must give StorageError::Payload, got {other:?}"),
    }
    assert!(
        store.head(&key).is_err_and(|e| e.is_not_found()),
        "nothing stored after a failed payload"
    );
    let leftovers = store.list(&format!("{prefix}/")).expect("list");
    assert!(
        leftovers.is_empty(),
        "no temporary objects left behind: {leftovers:?}"
    );
    store
        .put(&key, PutMode::Create, &mut &b"ok"[..])
        .expect("create after failed payload");
}

struct CountingPayload {
    calls: usize,
    data: Vec<u8>,
}

impl Payload for CountingPayload {
    fn write_to(&mut self, sink: &mut dyn Write) -> io::Result<u64> {
        self.calls += 1;
        sink.write_all(&self.data)?;
        Ok(self.data.len() as u64)
    }
}

/// Whatever a backend does internally (retries, multipart), the stored bytes are exactly one
/// copy of the payload's output.
pub fn payload_replayed_on_retry_is_consistent(store: &dyn WalStore, prefix: &str) {
    let key = format!("{prefix}/blob");
    let mut payload = CountingPayload {
        calls: 0,
        data: test_bytes(300_000, 3),
    };
    store.put(&key, PutMode::Create, &mut payload).expect("put");
    assert!(payload.calls >= 1, "payload was used");
    assert!(
        read_all(store, &key) == payload.data,
        "one exact copy stored"
    );
}

/// Zero-length objects and multi-MiB objects (streamed) work.
pub fn empty_and_large_objects(store: &dyn WalStore, prefix: &str) {
    let empty = format!("{prefix}/empty");
    store
        .put(&empty, PutMode::Create, &mut &b""[..])
        .expect("empty put");
    assert_eq!(store.head(&empty).expect("head").size, 0);
    assert!(read_all(store, &empty).is_empty());
    let large = format!("{prefix}/large");
    let data = test_bytes(5 << 20, 5);
    store
        .put(&large, PutMode::Create, &mut data.as_slice())
        .expect("large put");
    let mut reader = store.get(&large).expect("get");
    let mut chunk = vec![0u8; 64 << 10];
    let mut offset = 0;
    loop {
        let n = reader.read(&mut chunk).expect("read");
        if n == 0 {
            break;
        }
        assert!(
            chunk[..n] == data[offset..offset + n],
            "large object differs at {offset}"
        );
        offset += n;
    }
    assert_eq!(offset, data.len(), "large object length");
}

/// Keys that could escape a directory or are ambiguous are refused before any I/O.
pub fn invalid_keys_rejected(store: &dyn WalStore, prefix: &str) {
    for key in [
        "",
        "/etc/passwd",
        "../x",
        &format!("{prefix}/../escape"),
        &format!("{prefix}//double"),
        &format!("{prefix}/./dot"),
        "a\\b",
        "nul\0",
    ] {
        assert!(
            matches!(
                store.put(key, PutMode::Create, &mut &b"x"[..]),
                Err(StorageError::InvalidKey { .. })
            ),
            "put of {key:?} must be InvalidKey"
        );
        assert!(
            matches!(
                store.get(key).map(drop),
                Err(StorageError::InvalidKey { .. })
            ),
            "get of {key:?} must be InvalidKey"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    /// Breaks one rule at a time, to prove the suite notices.
    struct Broken {
        inner: MemoryStore,
        overwrite_on_create: bool,
        keep_partial_payload: bool,
    }

    impl WalStore for Broken {
        fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
            self.inner.head(key)
        }
        fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
            self.inner.get(key)
        }
        fn put(
            &self,
            key: &str,
            mode: PutMode,
            payload: &mut dyn Payload,
        ) -> Result<ObjectMeta, StorageError> {
            let mode = if self.overwrite_on_create {
                PutMode::Overwrite
            } else {
                mode
            };
            if self.keep_partial_payload {
                let mut buf = Vec::new();
                let result = payload.write_to(&mut buf);
                self.inner.insert(key, &buf);
                result.map_err(|source| StorageError::Payload {
                    key: key.into(),
                    source,
                })?;
            }
            self.inner.put(key, mode, payload)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.inner.delete(key)
        }
    }

    fn fails(check: fn(&dyn WalStore, &str), store: Broken) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&store, "p"))).is_err()
    }

    #[test]
    fn suite_catches_broken_backends() {
        let broken = |o, k| Broken {
            inner: MemoryStore::new(),
            overwrite_on_create: o,
            keep_partial_payload: k,
        };
        assert!(
            fails(create_never_overwrites, broken(true, false)),
            "overwriting create must fail the suite"
        );
        assert!(
            fails(failed_payload_stores_nothing, broken(false, true)),
            "torn puts must fail the suite"
        );
        assert!(
            !fails(create_never_overwrites, broken(false, false)),
            "a correct store passes"
        );
    }
}
