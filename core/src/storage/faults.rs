//! A decorator that makes a store fail on purpose, for fault tests of the archive flow.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Mutex;

use super::{ObjectMeta, Op, Payload, PutMode, StorageError, WalStore};

/// A scripted failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail with [`StorageError::Transient`].
    Transient,
    /// Fail with [`StorageError::Permanent`].
    Permanent,
    /// Let the operation through.
    Pass,
}

/// Wraps a store and fails its operations according to a script: each call of an operation
/// takes the next fault scripted for it (none scripted: pass through).
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    script: Mutex<Vec<(Op, VecDeque<Fault>)>>,
    calls: Mutex<Vec<(Op, String)>>,
}

impl<S: WalStore> FaultyStore<S> {
    /// Wraps `inner`, with no faults scripted.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            script: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Appends faults for the next calls of `op`.
    pub fn script(&self, op: Op, faults: &[Fault]) {
        let mut script = self
            .script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match script.iter_mut().find(|(o, _)| *o == op) {
            Some((_, queue)) => queue.extend(faults),
            None => script.push((op, faults.iter().copied().collect())),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<(Op, String)> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn check(&self, op: Op, key: &str) -> Result<(), StorageError> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((op, key.to_owned()));
        let mut script = self
            .script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fault = script
            .iter_mut()
            .find(|(o, _)| *o == op)
            .and_then(|(_, q)| q.pop_front())
            .unwrap_or(Fault::Pass);
        let message = "injected fault".to_owned();
        let key = key.to_owned();
        match fault {
            Fault::Pass => Ok(()),
            Fault::Transient => Err(StorageError::Transient {
                op,
                key,
                message,
                source: None,
            }),
            Fault::Permanent => Err(StorageError::Permanent {
                op,
                key,
                message,
                source: None,
            }),
        }
    }
}

impl<S: WalStore> WalStore for FaultyStore<S> {
    fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        self.check(Op::Head, key)?;
        self.inner.head(key)
    }
    fn get(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        self.check(Op::Get, key)?;
        self.inner.get(key)
    }
    fn put(
        &self,
        key: &str,
        mode: PutMode,
        payload: &mut dyn Payload,
    ) -> Result<ObjectMeta, StorageError> {
        self.check(Op::Put, key)?;
        self.inner.put(key, mode, payload)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.check(Op::List, prefix)?;
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.check(Op::Delete, key)?;
        self.inner.delete(key)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.check(Op::Sync, "")?;
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn scripted_faults_then_pass() {
        let store = FaultyStore::new(MemoryStore::new());
        store.script(Op::Put, &[Fault::Transient, Fault::Permanent]);
        let put = || store.put("a/b", PutMode::Create, &mut &b"x"[..]);
        assert!(put().expect_err("first").is_retryable());
        assert!(!put().expect_err("second").is_retryable());
        assert_eq!(put().expect("third").size, 1);
        assert_eq!(store.calls().len(), 3);
        assert_eq!(store.inner().keys(), ["a/b"]);
    }
}
