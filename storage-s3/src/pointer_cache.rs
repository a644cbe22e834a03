//! The pointer cache: which data key holds a blob's bytes.

use std::sync::Mutex;

use hashlink::LruCache;
use oci_spec_types::Digest;

/// Where blobs' bytes live (`digest -> (data key, size)`), for blobs recently read or
/// published by this process, so a `get` of a blob behind a pointer is one request, not
/// two. A data key never holds other bytes once
/// a pointer names it, so an entry is never wrong, only gone: a `GET` of a deleted data
/// key answers 404, and the entry is dropped and the pointer read again. `stat` and
/// presigned URLs always read the pointer (a URL cannot be retried here).
#[derive(Debug)]
pub(crate) struct PointerCache {
    entries: Mutex<LruCache<Digest, (String, u64)>>,
}

/// Entries kept (about 200 bytes each).
const POINTER_CACHE: usize = 4096;

impl Default for PointerCache {
    fn default() -> Self {
        PointerCache {
            entries: Mutex::new(LruCache::new(POINTER_CACHE)),
        }
    }
}

impl PointerCache {
    pub(crate) fn get(&self, digest: &Digest) -> Option<(String, u64)> {
        self.entries.lock().ok()?.get(digest).cloned()
    }

    pub(crate) fn insert(&self, digest: &Digest, data: &str, size: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(digest.clone(), (data.to_string(), size));
        }
    }

    pub(crate) fn remove(&self, digest: &Digest) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(digest);
        }
    }
}
