//! A [`MetadataStore`](storage_traits::MetadataStore) in one SQLite database file: the
//! registry's repositories, blob links, manifests with their references, tags, referrers
//! and upload sessions, for a registry that runs on one machine with no other process.
//!
//! ```
//! use metadata_sqlite::SqliteMetadataStore;
//! use oci_spec_types::{Digest, Reference, RepositoryName};
//! use storage_traits::{MetadataStore, NewManifest, Page};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteMetadataStore::open(dir.path().join("metadata.db"))?;
//!
//! let repo: RepositoryName = "library/hello".parse()?;
//! let config = Digest::sha256_of(b"{}");
//! store.link_blob(&repo, &config, 2).await?;
//!
//! let bytes = br#"{"schemaVersion":2,"config":{"digest":"..."}}"#;
//! let manifest = NewManifest::new(
//!     repo.clone(),
//!     Digest::sha256_of(bytes),
//!     "application/vnd.oci.image.manifest.v1+json".to_string(),
//!     bytes.as_slice().into(),
//! )
//! .with_blob_refs(vec![config])
//! .with_tag(Some("latest".parse()?));
//! store.put_manifest(&manifest).await?;
//!
//! let got = store.get_manifest(&repo, &"latest".parse::<Reference>()?).await?;
//! assert_eq!(got.map(|m| m.digest), Some(manifest.digest));
//! assert_eq!(store.list_repositories(&Page::default()).await?, vec![repo]);
//! # Ok(())
//! # }
//! ```
//!
//! # How it runs
//! - WAL journal, `synchronous=FULL` (a push the client was told succeeded survives a power
//!   loss), `foreign_keys=ON`, a busy timeout for other processes holding the write lock.
//! - One writer connection on its own thread, and a small pool of read-only connections;
//!   in WAL mode readers see a consistent snapshot and never wait for the writer.
//! - Each trait call that changes state is all-or-nothing: `put_manifest` checks
//!   references, inserts the manifest and its reference rows, and moves its tags together.
//!   The writer commits the changes queued at the same moment in one `BEGIN IMMEDIATE`
//!   transaction, each in its own savepoint (group commit), so one WAL sync covers them;
//!   no call returns before its change is durable.
//! - Point lookups (a manifest by tag, a blob link, an upload session) run where they are
//!   awaited; listings and other scans run on tokio's blocking pool, so the store must be
//!   used inside a tokio runtime.
//! - [Migrations](migrations) are applied when the store opens; a database written by a
//!   newer build is refused. The tables are described in [`schema`].
//!
//! # Feature flags
//! None.

#![warn(missing_docs)]

mod gc;
mod insights;
mod pulls;
mod quotas;
mod store;
mod writer;

pub mod migrations;

#[doc = include_str!("../docs/schema.md")]
pub mod schema {}

pub use migrations::{MigrationError, SCHEMA_VERSION};
pub use store::SqliteMetadataStore;
