//! A [`MetadataStore`](storage_traits::MetadataStore) in PostgreSQL: the registry's
//! repositories, blob links, manifests with their references, tags, referrers and upload
//! sessions, in one database that any number of stateless registry replicas share.
//!
//! ```no_run
//! use metadata_postgres::PostgresMetadataStore;
//! use oci_spec_types::{Digest, Reference, RepositoryName};
//! use storage_traits::{MetadataStore, NewManifest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Applies pending migrations; refuses a database migrated by a newer build.
//! let store =
//!     PostgresMetadataStore::connect("postgres://registry:secret@db.internal:5432/registry")
//!         .await?;
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
//! # Ok(())
//! # }
//! ```
//!
//! # Connecting
//! [`PostgresMetadataStore::connect`] takes a libpq-style URL
//! (`postgres://user:password@host:port/db?connect_timeout=5&application_name=...`) or
//! key-value string; [`PostgresMetadataStore::connect_with`] also takes [`PoolOptions`].
//! Connections are unencrypted (no TLS connector is built in): run the registry next to
//! the database or inside a private network.
//!
//! # Pool: tokio-postgres with deadpool-postgres
//! [`tokio-postgres`](tokio_postgres) is the native asynchronous client of the
//! rust-postgres project, and [`deadpool-postgres`](deadpool_postgres) a small pool over
//! it with a per-connection prepared-statement cache. Together they build far less than
//! `sqlx` (no macros, no compile-time query checking that would need a database or an
//! offline query cache at build time, no drivers for other databases), and every query
//! here is plain SQL with explicit types anyway. Each call prepares its statements once
//! per connection and reuses them.
//!
//! # Locking scheme
//! Every transaction runs at PostgreSQL's default `READ COMMITTED` isolation; the
//! guarantees come from row locks and single-statement compare-and-swaps rather than from
//! `SERIALIZABLE`, so contended operations wait briefly instead of failing and retrying.
//! - **`put_manifest`** is one transaction: it locks the referenced link rows
//!   (`repository_blobs`) and child-manifest rows (`manifests`) with
//!   `SELECT ... FOR SHARE` (in digest order), reports missing ones as
//!   [`MissingReferences`](storage_traits::MetadataError::MissingReferences), then finds
//!   the manifest row `FOR SHARE` or inserts it (`ON CONFLICT DO NOTHING`, looping if a
//!   concurrent insert won), writes its reference rows, and upserts the tag
//!   (`INSERT ... ON CONFLICT DO UPDATE`, which takes the tag row's lock). A concurrent
//!   `unlink_blob` or `delete_manifest` of anything the put checked or points the tag at
//!   either committed first (the put sees the row missing) or waits for the put to
//!   commit. Concurrent puts of one tag serialise on the tag row; the last to commit wins.
//! - **`delete_manifest`** is one `DELETE` statement; `ON DELETE CASCADE` removes its tags
//!   and reference rows in the same statement, and the foreign key from `tags` to
//!   `manifests` makes a tag pointing at a missing manifest impossible.
//! - **`update_upload`** is one `UPDATE ... WHERE id = $1 AND byte_offset = $2`: a racing
//!   update waits for the row lock, re-reads the committed row and matches nothing, so
//!   exactly one of many racing appends is acknowledged.
//! - **`link_blob`** and the creation of a repository use `INSERT ... ON CONFLICT DO
//!   NOTHING`, re-reading the row in a second statement (which sees what a concurrent
//!   transaction committed meanwhile).
//! - **Migrations** run in one transaction holding `pg_advisory_xact_lock` (see
//!   [`migrations`]), so replicas starting together migrate once.
//! - A serialization failure (`40001`) or detected deadlock (`40P01`) is retried up to 5
//!   times with a short jittered backoff; with the lock order above neither is expected.
//! - Garbage collection (not yet part of the trait) should lock the `blobs` row it is
//!   about to delete `FOR UPDATE` and re-check references in that transaction: linking
//!   the blob anywhere inserts a `repository_blobs` row whose foreign key takes
//!   `FOR KEY SHARE` on that `blobs` row, so the link and the deletion are ordered, and a
//!   put can only reference linked blobs, whose link rows it holds `FOR SHARE`.
//!
//! The tables are described in [`schema`]. Every name and digest column is
//! `COLLATE "C"`, so the catalog and tag lists are in byte order whatever the cluster's
//! locale.
//!
//! # Feature flags
//! None.

mod store;

pub mod migrations;

#[doc = include_str!("../docs/schema.md")]
pub mod schema {}

pub use migrations::{MigrationError, SCHEMA_VERSION};
pub use store::{PoolOptions, PostgresMetadataStore};
