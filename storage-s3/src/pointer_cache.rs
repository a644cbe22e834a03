//! The pointer cache: which data key holds a blob's bytes.

use oci_spec_types::Digest;

use crate::lru::Lru;

/// Where blobs' bytes live (`digest -> (data key, size)`), for blobs recently read or
/// published by this process, so a `get` of a blob behind a pointer is one request, not
/// two. A data key never holds other bytes once a pointer names it, so an entry is never
/// wrong, only gone: a `GET` of a deleted data key answers 404, and the entry is dropped
/// and the pointer read again. `stat` and presigned URLs always read the pointer (a URL
/// cannot be retried here).
pub(crate) type PointerCache = Lru<Digest, (String, u64)>;

/// Entries kept (about 200 bytes each).
pub(crate) const POINTER_CACHE: usize = 4096;
