//! Where things live under the root:
//!
//! ```text
//! root/blobs/sha256/<first 2 hex>/<hex>   committed blobs, one directory per algorithm
//! root/blobs/sha512/<first 2 hex>/<hex>
//! root/uploads/<upload id>                staged sessions
//! root/recovery/journal                   recovery records, appended
//! ```
//!
//! The two-character fan-out keeps directories small (as distribution's layout does).
//! Staging lives under the same root so a commit is a `rename` within one file system.

use std::path::{Path, PathBuf};

use oci_spec_types::{Algorithm, Digest};
use storage_traits::StorageError;
use storage_traits::blob::valid_upload_id;

/// Every algorithm a digest can have, so `open` and `list` know the directories.
pub(crate) const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub(crate) fn algorithm_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.blobs_dir().join(algorithm.as_str())
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        // A validated digest has at least 64 hex characters; `get` just avoids a panic path.
        let prefix = hex.get(..2).unwrap_or(hex);
        self.algorithm_dir(digest.algorithm())
            .join(prefix)
            .join(hex)
    }

    /// The recovery records (see [`storage_traits::recovery`]).
    pub(crate) fn recovery_dir(&self) -> PathBuf {
        self.root.join("recovery")
    }

    pub(crate) fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// The staging file of a session; the id is checked first, so it cannot name a path
    /// outside `uploads/`.
    pub(crate) fn upload_path(&self, id: &str) -> Result<PathBuf, StorageError> {
        if !valid_upload_id(id) {
            return Err(StorageError::InvalidUploadId(id.to_string()));
        }
        Ok(self.uploads_dir().join(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let layout = Layout::new(PathBuf::from("/r"));
        let d = Digest::sha256_of(b"");
        assert_eq!(
            layout.blob_path(&d),
            PathBuf::from(
                "/r/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
        );
        let d = Digest::sha512_of(b"");
        let p = layout.blob_path(&d);
        assert!(p.starts_with("/r/blobs/sha512/cf/"));
        assert_eq!(
            layout.upload_path("abc-1").unwrap(),
            PathBuf::from("/r/uploads/abc-1")
        );
        assert!(matches!(
            layout.upload_path("../x"),
            Err(StorageError::InvalidUploadId(_))
        ));
    }
}
