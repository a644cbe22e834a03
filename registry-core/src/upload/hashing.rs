//! Digests computed while bytes stream through, with a sha256 state that can be saved in
//! the upload session and resumed by the next request (on any replica).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use oci_spec_types::{Algorithm, Digest};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};
use storage_traits::{BlobStore, ByteStream, StorageError};

/// A sha256 hasher shared between the stream that feeds it and the handler that reads it
/// once the store has consumed the stream.
#[derive(Debug, Clone)]
pub struct SharedHasher(Arc<Mutex<Sha256>>);

impl SharedHasher {
    /// Resumes from a saved state, or starts fresh when there is none (offset 0).
    pub fn resume(state: Option<&[u8]>) -> Option<SharedHasher> {
        let hasher = match state {
            None => Sha256::new(),
            Some(bytes) => {
                let arr = bytes.try_into().ok()?;
                Sha256::deserialize(arr).ok()?
            }
        };
        Some(SharedHasher(Arc::new(Mutex::new(hasher))))
    }

    /// Wraps `input` so every chunk that passes is hashed.
    pub fn tee<S, E>(&self, input: S) -> ByteStream
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let hasher = self.0.clone();
        input
            .map(move |chunk| {
                let chunk = chunk.map_err(|e| StorageError::Input(e.into()))?;
                if let Ok(mut h) = hasher.lock() {
                    h.update(&chunk);
                }
                Ok(chunk)
            })
            .boxed()
    }

    /// The sha256 state to save in the session (`None` if the lock is poisoned).
    pub fn state(&self) -> Option<Vec<u8>> {
        self.0.lock().ok().map(|h| h.serialize().to_vec())
    }

    /// The digest of the bytes so far (`None` if the lock is poisoned).
    pub fn digest(&self) -> Option<Digest> {
        let h = self.0.lock().ok()?.clone();
        Some(Digest::from_raw(Algorithm::Sha256, &h.finalize()))
    }
}

/// A digest of any algorithm the spec allows, computed as bytes pass.
#[derive(Debug, Clone)]
pub enum DigestHasher {
    /// A sha256 digest.
    Sha256(Sha256),
    /// A sha512 digest.
    Sha512(Sha512),
}

impl DigestHasher {
    /// A hasher for `algorithm` (sha256 for any but sha512).
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha512 => DigestHasher::Sha512(Sha512::new()),
            _ => DigestHasher::Sha256(Sha256::new()),
        }
    }

    /// Hashes `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(data),
            DigestHasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything hashed.
    pub fn finish(self) -> Digest {
        match self {
            DigestHasher::Sha256(h) => Digest::from_raw(Algorithm::Sha256, &h.finalize()),
            DigestHasher::Sha512(h) => Digest::from_raw(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// Computes the digest of a staged upload by reading it back: the fallback when no hash
/// state survived or the client asked for a different algorithm.
pub async fn digest_of_upload(
    store: &dyn BlobStore,
    id: &str,
    algorithm: Algorithm,
) -> Result<Digest, StorageError> {
    let mut stream = store.read_upload(id).await?;
    let mut hasher = DigestHasher::new(algorithm);
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resumed_state_gives_the_whole_digest() {
        let h = SharedHasher::resume(None).unwrap();
        let s = h.tee(futures::stream::iter([Ok::<_, std::io::Error>(
            Bytes::from_static(b"hello "),
        )]));
        let _: Vec<_> = s.collect().await;
        let saved = h.state().unwrap();
        let h2 = SharedHasher::resume(Some(&saved)).unwrap();
        let s = h2.tee(futures::stream::iter([Ok::<_, std::io::Error>(
            Bytes::from_static(b"world"),
        )]));
        let _: Vec<_> = s.collect().await;
        assert_eq!(h2.digest().unwrap(), Digest::sha256_of(b"hello world"));
        assert!(SharedHasher::resume(Some(b"garbage")).is_none());
    }
}
