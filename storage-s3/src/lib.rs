//! A [`BlobStore`](storage_traits::BlobStore) in an S3 bucket, for registry replicas that
//! share their blobs: AWS S3 or any S3-compatible service (MinIO, SeaweedFS, Ceph RGW).
//!
//! ```no_run
//! use bytes::Bytes;
//! use oci_spec_types::Digest;
//! use storage_s3::{S3BlobStore, S3Config};
//! use storage_traits::{BlobStore, BlobStoreExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws/credentials.
//! let store = S3BlobStore::from_url(
//!     "s3://registry/blobs-v1?endpoint=http://127.0.0.1:8333&region=us-east-1",
//! )?;
//! // Or, for AWS, with the builder:
//! let _aws = S3BlobStore::new(S3Config::new("my-bucket").with_prefix("registry").with_region("eu-west-1"))?;
//! store.check().await?;
//!
//! let data = Bytes::from_static(b"layer bytes");
//! let digest = Digest::sha256_of(&data);
//! store.put_bytes("3f6a2c1e-upload", &digest, data.clone()).await?;
//! assert_eq!(store.get_bytes(&digest).await?, data);
//!
//! let signer = store.signer().expect("S3 can presign");
//! let url = signer.presigned_get(&digest, std::time::Duration::from_secs(600)).await?;
//! println!("fetch it without credentials: {url}");
//! # Ok(())
//! # }
//! ```
//!
//! # Configuration
//! [`S3BlobStore::from_url`] takes `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&profile=P]`;
//! [`S3Config`] is the same as a struct with `with_*` setters (part size, timeouts,
//! retries, explicit credentials). A custom endpoint always uses path-style addressing
//! (`endpoint/bucket/key`); without one the store talks to AWS's regional endpoint with
//! virtual-hosted addressing. The region defaults to `AWS_REGION`, the profile's region,
//! then `us-east-1`. Credentials: see [`Credentials`] (the standard `AWS_*` variables, then
//! the shared `~/.aws/credentials` and `~/.aws/config` files, `AWS_PROFILE`). Both
//! constructors are synchronous and send nothing; [`S3BlobStore::check`] does one request.
//!
//! # Layout
//! ```text
//! <prefix>/blobs/sha256/<first 2 hex>/<hex>   committed blobs
//! <prefix>/_uploads/<id>/state.json           an upload session's state
//! <prefix>/_uploads/<id>/seg-<uuid>           the session's bytes, in segments
//! <prefix>/recovery/repositories/<name>/...   recovery records
//! ```
//!
//! Recovery records ([`RecoveryLog`](storage_traits::RecoveryLog): the repository and tag
//! names a rebuild of the metadata needs) are one small object each, written with a plain
//! `PUT`: durable and visible to every replica once written. Folders are key prefixes,
//! listed with `ListObjectsV2` and a `/` delimiter.
//!
//! # Uploads
//! Nothing of a session lives in the process: its state is a small JSON object in the
//! bucket, so any replica can take the next request of any session.
//!
//! - **Writes** buffer at most one part (`part_size`, 8 MiB by default) of the incoming
//!   stream and store each full buffer, and the remainder at the end, as a new *segment*
//!   object. The state (the ordered segments and how many bytes of each count) is written
//!   once the whole input is stored, so a write that fails half way changes nothing the
//!   session records, and its retry at the acknowledged offset simply proceeds.
//! - **Writes append, and only one wins.** Replicas share sessions (the store declares
//!   [`shared_sessions`](storage_traits::BlobCapabilities::shared_sessions)), so a write
//!   below the session's length is [`StorageError::Conflict`]: the bytes there may be
//!   another replica's write that is being acknowledged at that moment. The state is
//!   saved with `If-Match` on the ETag it was read with, so of two writes racing at the
//!   same offset one is recorded and the other gets `Conflict`. Segments are never cut,
//!   so bytes below the recorded length never change, and `finish_upload` refuses a
//!   session whose length is not the size the caller hashed. An offset past the length is
//!   [`StorageError::InvalidOffset`] with the recorded length.
//! - **Chunks of any size.** S3 wants every multipart part but the last to be at least
//!   5 MiB. Invariant: all segments but a trailing *run* of small ones are at least 5 MiB,
//!   and the run totals under 5 MiB. When a write fills a buffer while a run exists, or
//!   brings the run to 5 MiB, the run's bytes are streamed back from S3 and stored
//!   together with the buffer as one segment: each byte is rewritten at most once, and
//!   only bytes of writes smaller than 5 MiB ever are.
//! - **`read_upload`** streams the segments back (each is a readable object; parts of an
//!   unfinished multipart upload would not be).
//! - **`finish_upload`** is atomic: under 5 MiB the blob is one `PUT`; otherwise one
//!   multipart upload straight onto the blob's key, whose parts are server-side copies
//!   (`UploadPartCopy`) of the segments plus the run uploaded as the last part, completed
//!   with `CompleteMultipartUpload`. S3 shows the key only once that completes, so a blob
//!   key exists only with its complete content. The multipart upload's id is recorded in
//!   the state while it runs, so `abort_upload` (or a retried finish) aborts it even after
//!   a crash. Finishing onto an existing blob keeps it. Then the session's objects are
//!   deleted.
//! - **`abort_upload`** aborts a recorded multipart upload, deletes the state, then lists
//!   and deletes everything under the session's folder (segments of failed writes too).
//!
//! Costs: a blob's bytes cross the network between registry and S3 once on the way in
//! (plus once more for bytes written in chunks under 5 MiB); S3 copies them once more
//! internally at finish, and holds them twice until the session is removed. A blob has at
//! most 10,000 parts: 78 GiB with 8 MiB parts; raise `part_size` for larger blobs.
//!
//! Why not parts straight from the writes with a small "tail" object kept aside: unfinished
//! parts cannot be read back, so `read_upload` (the registry's fallback when it lost a
//! session's hash state) could not be served.
//!
//! # Downloads
//! `get` streams the object (with a `Range` request for ranges, resolved against the size
//! from a `HEAD`); a body that ends early is an error, never a short blob. `list` pages
//! through `ListObjectsV2`. [`S3BlobStore::signer`](storage_traits::BlobStore::signer)
//! returns a [`BlobSigner`](storage_traits::BlobSigner) whose `presigned_get` is a SigV4
//! query-signed `GET` URL that any HTTP client can fetch until it expires (at most 7 days;
//! with temporary credentials, no longer than they live).
//!
//! # Reading what others wrote
//! [`S3BucketReader`] reads the objects under any prefix as files in folders (folder
//! listings are `ListObjectsV2` with a `/` delimiter, files are streamed `GET`s), with the
//! same configuration, client, timeouts and retries as the store. It never writes; `registry
//! import` reads CNCF distribution's `s3` driver layout with it.
//!
//! # The S3 client
//! [`rusty-s3`](https://docs.rs/rusty-s3) signs requests and presigns URLs (sans-IO), and
//! the workspace's `reqwest` sends them, streaming bodies both ways; `backon` retries
//! connection failures and 5xx/429 answers a few times with jittered exponential backoff.
//! Compared with the alternatives:
//! - `aws-sdk-s3` covers everything but brings the whole smithy runtime, its own HTTP
//!   stack and one of the largest generated crates there is: minutes of build on a
//!   two-core machine, for a dozen operations.
//! - `object_store` is excellent and well kept, but owns the upload model: its
//!   `MultipartUpload` lives in memory (a session could not move between replicas; its
//!   lower-level `MultipartStore` could, but exposes no `UploadPartCopy`), and it has no
//!   shared-credentials-file support.
//! - `rusty-s3` adds a handful of small crates (it reuses `url`, `sha2`, `hmac` and the
//!   HTTP client we already build), has every operation used here, and lets us sign the
//!   one it lacks (`ListMultipartUploads`) with its public `signing::sign`.
//!
//! # Errors
//! Missing blobs and sessions, ranges and offsets map to their [`StorageError`] variants;
//! everything else is [`StorageError::Backend`] with `backend: "s3"` and an [`S3Error`]
//! source naming the operation and key. Connection and read timeouts (5 s and 60 s by
//! default) mean an unreachable or stalled server is an error, never a hang.
//!
//! # Feature flags
//! - `rustls` (default): HTTPS endpoints. Without it, only `http://` endpoints work.

mod client;
mod config;
mod credentials;
mod error;
mod layout;
mod reader;
mod recovery;
mod store;
mod upload;

pub use config::S3Config;
pub use credentials::Credentials;
pub use error::S3Error;
pub use reader::S3BucketReader;
pub use store::S3BlobStore;

// For the links in the docs above.
#[allow(unused_imports)]
use storage_traits::StorageError;
