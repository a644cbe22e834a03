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
//! - **`put_manifest`** is one transaction: it holds the `blobs` row of the manifest's own
//!   digest `FOR SHARE` (see [garbage collection](#garbage-collection)), locks the
//!   referenced link rows (`repository_blobs`) and child-manifest rows (`manifests`) with
//!   `SELECT ... FOR SHARE` (in digest order), reports missing ones as
//!   [`MissingReferences`](storage_traits::MetadataError::MissingReferences), then finds
//!   the manifest row `FOR SHARE` or inserts it (`ON CONFLICT DO NOTHING`, looping if a
//!   concurrent insert won), writes its reference rows, and points each of its tags (in
//!   name order): a tag row is locked `FOR UPDATE` (or inserted) before it is read, so of
//!   two puts moving one tag the second sees the first's manifest as the one it untags
//!   and queues it, and an immutable tag pointing elsewhere fails the transaction (so
//!   nothing of the put is stored). A concurrent `unlink_blob` or `delete_manifest` of
//!   anything the put checked or points a tag at either committed first (the put sees
//!   the row missing) or waits for the put to commit. Concurrent puts of one tag
//!   serialise on the tag row; the last to commit wins.
//! - **`delete_manifest`** locks the manifest row `FOR UPDATE` (waiting for puts that hold
//!   it `FOR SHARE`), queues the garbage-collection reviews of what it references, then
//!   deletes it; `ON DELETE CASCADE` removes its tags and reference rows in the same
//!   statement, and the foreign key from `tags` to `manifests` makes a tag pointing at a
//!   missing manifest impossible.
//! - **`update_upload`** is one `UPDATE ... WHERE id = $1 AND byte_offset = $2`: a racing
//!   update waits for the row lock, re-reads the committed row and matches nothing, so
//!   exactly one of many racing appends is acknowledged. The bytes are the blob store's
//!   side: a store replicas share records only one of two writes at an offset and never
//!   cuts recorded bytes (`BlobCapabilities::shared_sessions`), so the acknowledged append
//!   is the one whose bytes the session holds.
//! - **`link_blob`** creates the repository with `INSERT ... ON CONFLICT DO NOTHING`,
//!   re-reading the row in a second statement (which sees what a concurrent transaction
//!   committed meanwhile); it then holds the `blobs` row and the link row `FOR SHARE`
//!   (inserting each if absent), as garbage collection below requires.
//! - **Migrations** run in one transaction holding `pg_advisory_xact_lock` (see
//!   [`migrations`]), so replicas starting together migrate once.
//! - A serialization failure (`40001`) or detected deadlock (`40P01`) is retried up to 5
//!   times with a short jittered backoff; with the lock order above neither is expected.
//! - Garbage collection's decisions are ordered against pushes by row locks too; see
//!   [below](#garbage-collection).
//!
//! The tables are described in [`schema`]. Every name and digest column is
//! `COLLATE "C"`, so the catalog and tag lists are in byte order whatever the cluster's
//! locale.
//!
//! # Garbage collection
//! [`MetadataStore::gc`](storage_traits::MetadataStore::gc) returns this store's
//! [`GcMetadata`](storage_traits::GcMetadata): the review queue (`gc_reviews`), tombstones
//! (`gc_tombstones`) and the collector lease (`gc_lease`) of migration `0002_gc`. Pushes
//! queue reviews in their own transactions (`link_blob`, `unlink_blob`, `put_manifest`
//! when it re-tags or stores an untagged manifest, `delete_manifest`, `delete_tag`). Each
//! `apply_review` is one READ COMMITTED transaction that first locks the row of what it
//! decides about, then reads the review's `since` and re-checks references with fresh
//! statements (so each sees everything committed before the lock was granted):
//! - **Blob decision**: `SELECT ... FROM blobs WHERE digest = $1 FOR UPDATE`, then "does
//!   any link, manifest reference or manifest with this digest exist?", then delete the
//!   row and insert the tombstone. Every push that can make a blob live (`link_blob`, and
//!   `put_manifest` for the manifest's own digest) first holds that same row `FOR SHARE`
//!   (inserting it if absent) and only then checks for a tombstone, in a new statement.
//!   If the push's lock came first, the decision waits for the push to commit and then
//!   sees its link or manifest. If the decision's lock came first, the push waits; when
//!   the decision commits the deletion, the push finds the row gone, inserts it anew, and
//!   its tombstone check (a statement after the decision's commit) fails it with
//!   `BlobBeingDeleted`, rolling the insert back. Checking the tombstone before taking
//!   the lock would leave a window for a decision to commit in between, so the order is
//!   lock, then check. A manifest's blob references need no lock of their own here: the
//!   put holds their link rows `FOR SHARE`, and a linked blob is never deleted.
//! - **Link decision**: `SELECT ... FROM repository_blobs WHERE repo_id = $1 AND digest =
//!   $2 FOR UPDATE`, then "does a manifest of the repository reference it?", then delete.
//!   `put_manifest` holds the link rows it references `FOR SHARE` while it checks and
//!   stores the manifest, and a re-link (`link_blob` of an existing link) holds the row
//!   `FOR SHARE` too, so either commits before the decision reads (and the decision sees
//!   the reference, or the restarted review's new `since`), or waits and then finds the
//!   link gone (the put fails with `MissingReferences`, the re-link inserts it anew).
//! - **Manifest decision** (untagged-manifest policy): the manifest row `FOR UPDATE`, then
//!   "is it tagged, a child of an index, a referrer's subject, or a referrer of a manifest
//!   that exists?". A put that re-pushes or tags it, or names it as an index child, holds
//!   it `FOR SHARE`. A referrer pushed concurrently with its subject's deletion is stored
//!   with an absent subject, which the spec allows (as if the deletion came first).
//! - **The review row** is not locked. A decision removes (or postpones) its review only
//!   `WHERE since = <the since it read>`, so a push that restarted the review meanwhile
//!   (`delete_tag`, a re-tag, a re-link) keeps its fresh review for the next pass.
//! - Lock order is always "the target row, then review rows", and pushes take the blob
//!   row before the link row, so a decision never waits for a push that waits for it. A
//!   detected deadlock would be retried like any other (see above).
//! - **Lease**: one row (`id = 1`), taken by one statement, `INSERT ... ON CONFLICT (id)
//!   DO UPDATE ... WHERE gc_lease.holder = EXCLUDED.holder OR gc_lease.expires_at <= now`,
//!   which says by its row count whether it took the lease. Of replicas racing for an
//!   expired lease, the upsert's row lock makes the second re-check the first's new row
//!   and update nothing.
//! - A dry run runs the same statements and takes the same locks, then rolls back.
//!
//! # Insights
//! [`MetadataStore::insights`](storage_traits::MetadataStore::insights) returns this
//! store's [`InsightsMetadata`](storage_traits::InsightsMetadata), with the same answers
//! as the SQLite store. Each query is a single read-only statement (one snapshot, no
//! locks); the indexes of migration `0003_insights` make a repository's last push an
//! index probe.
//!
//! # Feature flags
//! None.

#![warn(missing_docs)]

mod gc;
mod insights;
mod pulls;
mod quotas;
mod store;

pub mod migrations;

#[doc = include_str!("../docs/schema.md")]
pub mod schema {}

pub use migrations::{MigrationError, SCHEMA_VERSION};
pub use store::{PoolOptions, PostgresMetadataStore};
