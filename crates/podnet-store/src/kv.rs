//! The key-value contract both backends implement.

use std::time::Duration;

use crate::error::StoreError;

/// Keys under a prefix at one revision of the store.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The store revision the listing was read at.
    pub revision: u64,
    /// `(key, value)` pairs, sorted by key.
    pub entries: Vec<(String, String)>,
}

/// An all-or-nothing write: applied only if every condition holds.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    /// Keys that must not exist.
    pub absent: Vec<String>,
    /// Keys that must hold exactly this value.
    pub equal: Vec<(String, String)>,
    /// Keys to write.
    pub puts: Vec<(String, String)>,
    /// Keys to delete.
    pub deletes: Vec<String>,
}

/// What changed under a prefix after some revision: each key's new value, or
/// `None` for a deleted key.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The store revision these changes bring a reader up to.
    pub revision: u64,
    /// `(key, new value)` in the order they were written.
    pub entries: Vec<(String, Option<String>)>,
}

/// What a wait for changes saw.
#[derive(Debug, Clone)]
pub enum Waited {
    /// Nothing changed before the timeout.
    Quiet,
    /// Something changed: the revision it brings a reader to, and the
    /// changes themselves (every change after the wait's revision up to
    /// that one) when the backend delivers them with the notice.
    Changed(u64, Option<Changes>),
}

/// A key-value store with revisions, conditional transactions, change waits and leases.
pub trait KvBackend: Send + Sync {
    /// Every key under `prefix`, at one revision.
    fn list(&self, prefix: &str) -> Result<Listing, StoreError>;
    /// Applies `txn` atomically; `Ok(false)` when a condition failed (nothing written).
    fn transact(&self, txn: &Txn) -> Result<bool, StoreError>;
    /// Waits up to `timeout` for a change under `prefix` after revision `after`;
    /// returns the new revision, or `None` on timeout. May return early.
    fn wait(&self, prefix: &str, after: u64, timeout: Duration) -> Result<Option<u64>, StoreError>;
    /// Writes `key` so that it disappears `ttl` after the last refresh (a lease).
    fn refresh_lease(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Where this store lives, for messages.
    fn endpoint(&self) -> String;
    /// The most operations (conditions and writes) one transaction may
    /// hold: etcd refuses more than 128; the file store has no limit, and
    /// each of its transactions rewrites its file, so fewer is better.
    fn max_txn_ops(&self) -> usize {
        usize::MAX
    }
    /// The changes under `prefix` after revision `after`, when the backend
    /// still knows them; `Ok(None)` when it does not (history not kept that
    /// far back, or not kept at all): the caller then lists the prefix.
    fn changes_since(&self, _prefix: &str, _after: u64) -> Result<Option<Changes>, StoreError> {
        Ok(None)
    }
    /// Several prefixes, read as of one revision where the backend can (the
    /// listings' revision is then the same); otherwise one after the other,
    /// each listing saying its own revision.
    fn list_many(&self, prefixes: &[&str]) -> Result<Vec<Listing>, StoreError> {
        prefixes.iter().map(|p| self.list(p)).collect()
    }
    /// Like [`Self::wait`], and with the changes themselves when the backend
    /// has them at hand (etcd's watch carries the values).
    fn wait_changes(
        &self,
        prefix: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<Waited, StoreError> {
        Ok(match self.wait(prefix, after, timeout)? {
            Some(revision) => Waited::Changed(revision, None),
            None => Waited::Quiet,
        })
    }
}
