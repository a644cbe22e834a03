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
//! <prefix>/blobs/sha256/<first 2 hex>/<hex>   committed blobs: the bytes, or a pointer
//! <prefix>/data/<upload id>.<nonce>           bytes of blobs uploaded in parts
//! <prefix>/_uploads/<id>/state.json           an upload session's state
//! <prefix>/_uploads/<id>/seg-<uuid>           the session's writes shorter than 5 MiB
//! <prefix>/recovery/repositories/<name>/...   recovery records
//! ```
//!
//! A blob's key is its digest. It holds the blob's bytes when they were written in one
//! `PUT` (`put_bytes`, blobs under 5 MiB, blobs written by versions before the data keys),
//! or an empty *pointer* object whose metadata (`x-amz-meta-registry-data`,
//! `x-amz-meta-registry-size`) names the data key holding the bytes and their size.
//! Readers follow a pointer: `stat` is one `HEAD`; `get` is one more `GET` than for a
//! blob in its own key the first time, then one `GET` (a store remembers the data keys of
//! the 4,096 blobs it read or published most recently, and reads the pointer again when
//! one answers 404);
//! presigned URLs point at the data key (one `HEAD` to find it). `list` lists the blob
//! keys, so garbage collection and `registry import --rebuild` see every blob by its
//! digest as before, whichever way its bytes are kept.
//!
//! Recovery records ([`RecoveryLog`](storage_traits::RecoveryLog): the repository and tag
//! names a rebuild of the metadata needs) are one small object each, written with a plain
//! `PUT`: durable and visible to every replica once written. Folders are key prefixes,
//! listed with `ListObjectsV2` and a `/` delimiter.
//!
//! # Uploads
//! Nothing of a session lives in the process: its state is a small JSON object in the
//! bucket, so any replica can take the next request of any session (the store declares
//! [`shared_sessions`](storage_traits::BlobCapabilities::shared_sessions)).
//!
//! - **Each byte is written once.** A write streams its input into an S3 multipart upload
//!   onto the session's data key, in parts of `part_size` (8 MiB by default), each part's
//!   request taking its bytes as they arrive, the part's buffers kept until it is stored
//!   so a failed request is sent again; up to `upload_concurrency` (4) parts are on their
//!   way at once. A request is declared `part_size` long, and S3 wants every part but the
//!   last to be at least 5 MiB, so a part starts once it holds 5 MiB (from its first byte
//!   for the first part of a write following a part-sized one, as in a chunked upload);
//!   if the input ends inside it, that request is dropped and the part sent again as long
//!   as it turned out. A write's end too short to be a part is stored as a segment
//!   object, and the segments (fewer than 5 MiB in all) are read back from S3 as the
//!   start of the next part, or as the last part at finish. So S3 stores every byte once;
//!   the bytes of writes shorter than 5 MiB, and of a write's last part when shorter than
//!   `part_size`, cross the network twice.
//! - **Finishing** completes the multipart upload (`CompleteMultipartUpload`, no copy)
//!   and then writes the pointer under the blob's key with `If-None-Match: *`. A session
//!   under 5 MiB in all is one `PUT` of its bytes straight to the blob key. Blob keys
//!   appear only once complete: the pointer is written after its data is, so a killed
//!   process never leaves a partial blob visible. Finishing onto an existing blob keeps
//!   it (same digest, same bytes) and discards the session's data.
//! - **`put_bytes`** (a whole blob in memory, digest known) is one `PUT` to the blob's key.
//! - **`stage_blob`** (a whole blob of known length and expected digest, streamed: a
//!   monolithic push) writes no multipart upload: up to `single_put_max` (1 GiB) its bytes
//!   go in one streamed `PUT` to a data key, and publishing writes the pointer; under 5
//!   MiB they are held in memory and published with one `PUT` to the blob's key (after a
//!   `HEAD` of it at staging, so that an unreachable S3 fails the push before the
//!   registry links the blob). Into an
//!   open, empty session (a `PUT` of the whole blob after its `POST`) the session is
//!   first closed for the digest, as a finish records it, and the data goes to the
//!   session's data key; publishing removes the session; a failure or a discard deletes
//!   the data and opens the session again, empty. Under an id with no session
//!   (`POST ?digest=`) the data key is a fresh one of the id recording the digest in its
//!   metadata, which an abort of the id deletes unless that digest's pointer names it.
//!   The single `PUT` cannot be sent again: a failure fails the push (the client sends
//!   it again). See `staged.rs`.
//! - **Writes append, and only one wins.** A write below the session's length is
//!   [`StorageError::Conflict`]; an offset past it is [`StorageError::InvalidOffset`] with
//!   the recorded length. Every change of `state.json` is a `PUT` with `If-Match` on the
//!   ETag it was read with. Before its first part, a write takes a window of part numbers
//!   that way (a *claim*), so two writers (a client's retry reaching another replica while
//!   its first attempt still streams) never send the same part number, and the loser's
//!   parts are never in the completed blob. A write that sent whole parts and left no
//!   run also claims, in the `PUT` recording its parts, the numbers of the session's next
//!   write; the next write from the same process uses them without a claim of its own if
//!   it reads `state.json` with the ETag that `PUT` returned (nothing changed the session
//!   since), so each `PATCH` of a chunked upload is a state `GET`, its parts and one state
//!   `PUT`. A write records its parts only once its whole input is stored: a write that
//!   fails half way changes nothing the session records, and its retry at the
//!   acknowledged offset proceeds (under a new claim). `finish_upload` first
//!   records that it is closing the session (refusing writes from then on), and refuses a
//!   session whose length is not the size the caller hashed.
//! - **`read_upload`** needs the bytes readable, which parts of an unfinished multipart
//!   upload are not: it completes the upload into the data object first, then streams it
//!   and the segments. (The registry reads a session back only when it lost the hash
//!   state or the client asked for sha512.) A write after that copies the data object into
//!   a new multipart upload server-side (`UploadPartCopy`) and goes on.
//! - **`abort_upload`** aborts every multipart upload under the session's data prefix (a
//!   `ListMultipartUploads`, so one a crash left unrecorded goes too), deletes its data
//!   object unless a blob points at it, deletes the state, then lists and deletes the
//!   session's segments (of failed writes too). Finishing cleans up the same way.
//! - **`delete`** of a pointer's blob deletes the data first, then the pointer: a delete
//!   that stops half way leaves a pointer to nothing, which reads as missing, which the
//!   next finish of that digest replaces, and which a retried delete removes.
//!
//! Costs: the bytes cross the network between registry and S3 once, and S3 stores them
//! once. A push of a whole blob of known length (`stage_blob`) makes, besides the data's
//! `PUT`: the pointer `PUT` (`POST ?digest=`); or, for a `PUT` after its `POST`, the
//! state `PUT` at start, the state `GET` and closing `PUT`, the pointer `PUT`, the state
//! `DELETE` and the listing of the session's segments. Besides its parts, a push in one
//! request without a declared length makes 11 small ones: the state `PUT` at
//! start; the state `GET`, the claim, `CreateMultipartUpload` and the state `PUT` of the
//! write; the state `GET`, the closing `PUT`, `CompleteMultipartUpload`, the pointer
//! `PUT`, the state `DELETE` and a listing of the session's segments at finish (and a
//! listing of its multipart uploads when a writer may have left one unrecorded). Each
//! further `PATCH` of a chunked upload adds a state `GET` and `PUT` (and a claim when
//! the write before it was on another replica or left a run). A blob
//! has at most 10,000 parts: about 78 GiB with 8 MiB parts; raise `part_size` for larger
//! blobs.
//! Sessions a version-1 store wrote (segments concatenated at finish) are continued: their
//! segments are copied into the multipart upload server-side. A version-1 store cannot
//! read the sessions this one writes.
//!
//! Why a pointer rather than the data under the digest key: a multipart upload's key is
//! fixed when it starts, and a chunked upload's digest is known only at its end; copying
//! the data to the digest key at finish is what wrote every byte twice before (and is
//! what CNCF distribution's driver does).
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

#![warn(missing_docs)]

mod client;
mod config;
mod credentials;
mod error;
mod layout;
mod lru;
mod pointer_cache;
mod pre_claims;
mod reader;
mod recovery;
mod staged;
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
