//! An in-memory [`WalStore`] for unit tests and simulations.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ObjectMeta, Payload, PutMode, StorageError, WalStore, run_payload, validate_key};

/// Objects in a sorted map behind a mutex; puts are atomic (all or nothing).
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Arc<[u8]>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<[u8]>>> {
        // A panic while holding the lock cannot leave the map half-updated: recover it.
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every key currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Stores bytes directly, bypassing create-if-absent (test set-up).
    pub fn insert(&self, key: &str, bytes: &[u8]) {
        self.lock().insert(key.to_owned(), Arc::from(bytes));
    }
}

impl WalStore for MemoryStore {
    fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        validate_key(key)?;
        let objects = self.lock();
        let data = objects.get(key).ok_or_else(|| StorageError::NotFound {
            key: key.to_owned(),
        })?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: data.len() as u64,
        })
    }

    fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        validate_key(key)?;
        let data = self
            .lock()
            .get(key)
            .cloned()
            .ok_or_else(|| StorageError::NotFound {
                key: key.to_owned(),
            })?;
        Ok(Box::new(Cursor::new(data)))
    }

    fn put(
        &self,
        key: &str,
        mode: PutMode,
        payload: &mut dyn Payload,
    ) -> Result<ObjectMeta, StorageError> {
        validate_key(key)?;
        let mut staged = Vec::new();
        run_payload(payload, &mut staged).map_err(|f| f.into_storage_error(key))?;
        let mut objects = self.lock();
        if mode == PutMode::Create && objects.contains_key(key) {
            return Err(StorageError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let size = staged.len() as u64;
        objects.insert(key.to_owned(), Arc::from(staged));
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let objects = self.lock();
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        self.lock()
            .remove(key)
            .map(drop)
            .ok_or_else(|| StorageError::NotFound {
                key: key.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_conformance() {
        crate::storage::conformance::run_all(&MemoryStore::new(), "conformance");
    }
}
