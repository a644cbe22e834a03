//! [`Lru`]: the map behind a store's in-memory hints (the pointer cache, claims made
//! ahead), shared by all its requests.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Mutex;

use hashlink::LruCache;

/// A bounded map behind a lock; the least recently used entry goes first when full. A
/// poisoned lock reads as empty and drops writes: the entries are hints only.
#[derive(Debug)]
pub(crate) struct Lru<K: Hash + Eq, V> {
    entries: Mutex<LruCache<K, V>>,
}

impl<K: Hash + Eq, V: Clone> Lru<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Lru {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    pub(crate) fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.entries.lock().ok()?.get(key).cloned()
    }

    /// The entry, removed.
    pub(crate) fn take<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.entries.lock().ok()?.remove(key)
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first_and_take_removes() {
        let lru = Lru::new(3);
        for n in 0..3 {
            lru.insert(n.to_string(), n);
        }
        assert_eq!(lru.get("0"), Some(0), "read: now the most recent");
        lru.insert("3".to_string(), 3);
        assert_eq!(
            lru.get("1"),
            None,
            "the least recently used is dropped when full"
        );
        assert_eq!(lru.take("0"), Some(0));
        assert_eq!(lru.take("0"), None, "taken once");
        assert_eq!((lru.get("2"), lru.get("3")), (Some(2), Some(3)));
    }
}
