//! Part numbers a process set aside for its own next write to a session.
//!
//! A write that sent whole parts and left no run (one `PATCH` of a chunked upload) ends by
//! recording its parts in `state.json`; that same conditional `PUT` also claims the part
//! numbers the session's next write will likely need, and the process keeps that claim
//! here with the ETag the `PUT` returned. The next write that reads `state.json` with that
//! very ETag (nothing changed the session since) sends its parts under those numbers
//! without claiming first: one `PUT` fewer per write. Any other writer claims as usual,
//! past these numbers, so a claim left unused only wastes them.

use std::ops::Range;
use std::sync::Mutex;

use hashlink::LruCache;

/// Sessions remembered; an entry is about 100 bytes.
const ENTRIES: usize = 4096;

/// Claims this process saved for its next write, by session id.
#[derive(Debug)]
pub(crate) struct PreClaims {
    entries: Mutex<LruCache<String, PreClaim>>,
}

/// Part numbers claimed by the save that returned `etag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreClaim {
    pub(crate) etag: String,
    pub(crate) window: Range<u32>,
}

impl Default for PreClaims {
    fn default() -> Self {
        PreClaims {
            entries: Mutex::new(LruCache::new(ENTRIES)),
        }
    }
}

impl PreClaims {
    /// The session's claim, removed: only one write may use it, and one that fails half
    /// way may have sent parts under its numbers.
    pub(crate) fn take(&self, id: &str) -> Option<PreClaim> {
        self.entries.lock().ok()?.remove(id)
    }

    pub(crate) fn insert(&self, id: &str, claim: PreClaim) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(id.to_string(), claim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_taken_once_and_the_oldest_go_first() {
        let claims = PreClaims::default();
        let claim = |n: u32| PreClaim {
            etag: format!("\"{n}\""),
            window: n..n + 2,
        };
        for n in 0..ENTRIES as u32 + 1 {
            claims.insert(&n.to_string(), claim(n));
        }
        assert_eq!(
            claims.take("0"),
            None,
            "the oldest entry is dropped when full"
        );
        assert_eq!(claims.take("1"), Some(claim(1)));
        assert_eq!(claims.take("1"), None, "a claim serves one write");
        let last = ENTRIES as u32;
        assert_eq!(claims.take(&last.to_string()), Some(claim(last)));
    }
}
