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

use crate::lru::Lru;

/// Claims this process saved for its next write, by session id. A claim is taken (removed)
/// by the write that uses it: one that fails half way may have sent parts under its
/// numbers.
pub(crate) type PreClaims = Lru<String, PreClaim>;

/// Sessions remembered; an entry is about 100 bytes.
pub(crate) const PRE_CLAIMS: usize = 4096;

/// Part numbers claimed by the save that returned `etag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreClaim {
    pub(crate) etag: String,
    pub(crate) window: Range<u32>,
}
