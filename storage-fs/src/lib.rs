//! A [`BlobStore`](storage_traits::BlobStore) in a local directory: the single-machine
//! backend of the registry.
//!
//! ```
//! use bytes::Bytes;
//! use oci_spec_types::Digest;
//! use storage_fs::FsBlobStore;
//! use storage_traits::{BlobStore, BlobStoreExt, GetRange};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = FsBlobStore::open(dir.path())?;
//!
//! let data = Bytes::from_static(b"layer bytes");
//! let digest = Digest::sha256_of(&data);
//! store.put_bytes("3f6a2c1e-upload", &digest, data.clone()).await?;
//!
//! assert_eq!(store.get_bytes(&digest).await?, data);
//! assert_eq!(store.get(&digest, Some(GetRange::Suffix(5))).await?.range, 6..11);
//! assert!(store.blob_path(&digest).starts_with(dir.path().join("blobs/sha256")));
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! ```text
//! root/blobs/sha256/<first 2 hex>/<hex>
//! root/blobs/sha512/<first 2 hex>/<hex>
//! root/uploads/<upload id>
//! root/recovery/journal
//! ```
//!
//! # Durability
//! A session's bytes are written to `uploads/<id>` with large writes and no fsync. On
//! `finish_upload` the staging file is fdatasync'ed, renamed to its blob path and the
//! blob's directory is fsync'ed, so a blob is visible only complete, and once
//! `finish_upload` returns it survives a crash. `uploads/` must be on the same file system
//! as `blobs/` (it is, under one root) for the rename to be atomic.
//!
//! Recovery records ([`RecoveryLog`](storage_traits::RecoveryLog), the repository and tag
//! names a rebuild of the metadata needs) are appended to one journal,
//! `recovery/journal`, **without fsync**: they are only read when the metadata database
//! is lost, and the registry writes them on every manifest push. A process crash loses
//! none; a machine crash can lose those of the seconds before it (the kernel's writeback
//! delay, about 30 s by default on Linux). Nothing per record is kept in memory: a lookup
//! reads the journal through. Why a journal and not a file per record, its format, its
//! lookups and its compaction: see `src/recovery/mod.rs`.
//!
//! # One process per root
//! A write below a session's length cuts the staging file there (so a retry after a
//! failed write simply proceeds), and sessions are claimed with in-process locks: the
//! store assumes that only this process writes under `root` (it does not declare
//! [`shared_sessions`](storage_traits::BlobCapabilities::shared_sessions)). Replicas that
//! share blobs use an object store such as `storage-s3`.
//!
//! # Feature flags
//! None.

#![warn(missing_docs)]

mod error;
mod file_range;
mod layout;
mod recovery;
mod store;
mod upload;

pub use store::FsBlobStore;
