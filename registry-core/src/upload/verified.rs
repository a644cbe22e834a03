//! Storing a whole blob whose digest is known in advance (import, mirroring): written
//! into an open upload session while it is hashed, checked, then linked and published in
//! the order a push uses.

use oci_spec_types::{Algorithm, Digest, RepositoryName};
use storage_traits::ByteStream;

use super::hashing::{SharedHasher, digest_of_upload};
use crate::Inner;
use crate::error::RegistryError;

/// What [`store_verified`] did.
pub(crate) enum Verified {
    /// Linked in the repository and published; the blob's length.
    Stored(u64),
    /// The bytes hash to this instead: nothing was linked or published, and the session
    /// is the caller's to abort.
    Mismatch(Digest),
}

/// Writes `data` into the open session `id`, checks it against `digest`, and when it
/// matches links the blob in `repo` (within its quotas), then publishes it: the link first,
/// so the collector's re-check sees it and cannot delete the bytes in between.
pub(crate) async fn store_verified(
    inner: &Inner,
    id: &str,
    repo: &RepositoryName,
    digest: &Digest,
    data: ByteStream,
) -> Result<Verified, RegistryError> {
    let blobs = &inner.blobs;
    let hasher = SharedHasher::resume(None);
    let stream = match &hasher {
        Some(h) => h.tee(data),
        None => data,
    };
    let size = blobs.write_upload(id, 0, stream).await?;
    let computed = match hasher.as_ref().and_then(SharedHasher::digest) {
        Some(d) if digest.algorithm() == Algorithm::Sha256 => d,
        _ => digest_of_upload(blobs.as_ref(), id, digest.algorithm()).await?,
    };
    if computed != *digest {
        return Ok(Verified::Mismatch(computed));
    }
    crate::quotas::link_blob(inner, repo, digest, size).await?;
    blobs.finish_upload(id, digest, size).await?;
    Ok(Verified::Stored(size))
}
