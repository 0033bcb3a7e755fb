//! Per-key async read-write locks, so calls on the same volume or snapshot never
//! interleave badly (a snapshot deleted while a volume is made from it), while calls that
//! only read a source (many volumes from one snapshot) still run together.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// A map of named async read-write locks; entries go away when nobody holds or waits on
/// them.
#[derive(Debug, Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

/// A held lock; the guards are never read, only kept until dropped.
#[derive(Debug)]
#[expect(dead_code, reason = "the guards are held for their Drop, never read")]
enum Held {
    Shared(OwnedRwLockReadGuard<()>),
    Exclusive(OwnedRwLockWriteGuard<()>),
}

/// Holds one key's lock until dropped.
#[derive(Debug)]
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    held: Option<Held>,
}

impl KeyedLocks {
    /// Waits for the exclusive lock of `key` (changes to the resource). Callers taking
    /// several keys take them in one order (snapshots before volumes, volumes by id) so
    /// they cannot deadlock.
    pub(crate) async fn write(&self, key: String) -> KeyGuard<'_> {
        let lock = self.entry(&key);
        KeyGuard { locks: self, key, held: Some(Held::Exclusive(lock.write_owned().await)) }
    }

    /// Waits for a shared lock of `key` (the resource is only read, as a copy's source).
    pub(crate) async fn read(&self, key: String) -> KeyGuard<'_> {
        let lock = self.entry(&key);
        KeyGuard { locks: self, key, held: Some(Held::Shared(lock.read_owned().await)) }
    }

    fn entry(&self, key: &str) -> Arc<RwLock<()>> {
        self.map.lock().entry(key.to_owned()).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        // Under the map lock nobody can take a new reference, so a count of one (the
        // map's own) means no holder and no waiter: the entry can go.
        let mut map = self.locks.map.lock();
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Poll;

    use super::*;

    /// Whether a future is still waiting after one poll.
    async fn blocks<F: Future>(future: F) -> bool {
        tokio::pin!(future);
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await
    }

    #[tokio::test]
    async fn writers_exclude_everyone_and_readers_share() {
        let locks = KeyedLocks::default();
        let first = locks.write("a".to_owned()).await;
        let other = locks.write("b".to_owned()).await;
        assert!(blocks(locks.write("a".to_owned())).await, "the same key was locked twice");
        assert!(blocks(locks.read("a".to_owned())).await, "a reader got in beside a writer");
        drop((first, other));
        assert_eq!(locks.len(), 0);

        let reader = locks.read("a".to_owned()).await;
        assert!(!blocks(locks.read("a".to_owned())).await, "readers did not share");
        assert!(blocks(locks.write("a".to_owned())).await, "a writer got in beside a reader");
        drop(reader);
        assert_eq!(locks.len(), 0);
    }
}
