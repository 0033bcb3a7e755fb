//! Per-key async locks, so two calls on the same volume or snapshot never interleave
//! (for example a snapshot being deleted while a volume is made from it).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A map of named async mutexes; entries go away when nobody holds or waits on them.
#[derive(Debug, Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Holds one key's lock until dropped.
#[derive(Debug)]
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`. Callers taking several keys take them in one order
    /// (snapshots before volumes, volumes by id) so they cannot deadlock.
    pub(crate) async fn lock(&self, key: String) -> KeyGuard<'_> {
        let mutex = self.map.lock().entry(key.clone()).or_default().clone();
        let guard = mutex.lock_owned().await;
        KeyGuard { locks: self, key, guard: Some(guard) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
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

    use super::*;

    #[tokio::test]
    async fn a_key_is_held_by_one_caller_and_then_forgotten() {
        let locks = KeyedLocks::default();
        let first = locks.lock("a".to_owned()).await;
        let other = locks.lock("b".to_owned()).await;
        {
            let second = locks.lock("a".to_owned());
            tokio::pin!(second);
            let pending =
                std::future::poll_fn(|cx| std::task::Poll::Ready(second.as_mut().poll(cx).is_pending()))
                    .await;
            assert!(pending, "the same key was locked twice");
        }
        drop((first, other));
        assert_eq!(locks.len(), 0);
        let _again = locks.lock("a".to_owned()).await;
        assert_eq!(locks.len(), 1);
    }
}
