//! Behaviour cases for `BlobStore` implementations.
//!
//! Every case is a `pub async fn case(store: &dyn BlobStore)` that asserts one part of the
//! contract written under `# Behavior` on [`BlobStore`], using its own random content and
//! upload ids, and deleting what it stored before it returns, so cases can share one
//! store and run in parallel.
//!
//! # Running the suite in a backend crate
//! Add `tokio` (with the `macros` and `rt` features) and `storage-traits` with the
//! `testsuite` feature to the backend's `[dev-dependencies]`, then, in a test file:
//!
//! ```ignore
//! // tests/behaviour.rs
//! storage_traits::blob_store_tests!(make_store().await);
//!
//! async fn make_store() -> (my_backend::MyStore, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = my_backend::MyStore::open(dir.path()).await.unwrap();
//!     (store, dir)
//! }
//! ```
//!
//! The macro's shape is `blob_store_tests!(expr $(, #[attr])* $(,)?)`:
//! - `expr` is evaluated once per case, inside that case's `async fn`, so it may `.await`
//!   and every case gets a fresh store (or a handle to a shared one).
//! - `expr` may evaluate to anything implementing [`AsBlobStore`]: a store `S: BlobStore`,
//!   an `Arc<S>` or `Arc<dyn BlobStore>`, or a tuple `(store, guard)` whose second half
//!   (a `TempDir`, a container handle...) is kept alive until the case ends.
//! - Attributes after the expression are put on every generated test, for example
//!   `blob_store_tests!(s3_store().await, #[ignore = "needs S3"]);`. (They come after it
//!   because an expression may itself begin with `#[...]`.)
//!
//! It expands to one `#[tokio::test] async fn <case>()` per case, named as the case, so a
//! failure names both the case and the backend. Invoke it once per module (wrap it in a
//! `mod` to run the suite against several configurations in one file).
//!
//! Beyond the written contract, the cases also expect (and the reference backends do):
//! an upload session can be finished without any write (an empty blob), and an error
//! yielded by the input stream is returned as is (normally [`StorageError::Input`]).

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use oci_spec_types::Digest;

use crate::{BlobStore, BlobStoreExt, ByteStream, GetRange, StageBlob, StorageError};

/// How a case gets the store out of whatever the macro's expression built.
pub trait AsBlobStore {
    /// The store the cases run against.
    fn as_blob_store(&self) -> &dyn BlobStore;
}

impl<S: BlobStore> AsBlobStore for S {
    fn as_blob_store(&self) -> &dyn BlobStore {
        self
    }
}

impl AsBlobStore for dyn BlobStore {
    fn as_blob_store(&self) -> &dyn BlobStore {
        self
    }
}

impl<S: AsBlobStore + ?Sized> AsBlobStore for Arc<S> {
    fn as_blob_store(&self) -> &dyn BlobStore {
        (**self).as_blob_store()
    }
}

/// A store together with something that must outlive it (a temporary directory).
impl<S: AsBlobStore, G> AsBlobStore for (S, G) {
    fn as_blob_store(&self) -> &dyn BlobStore {
        self.0.as_blob_store()
    }
}

/// Turns every case of this module into a `#[tokio::test]`; see the [module
/// docs](crate::testsuite::blob) for the syntax.
#[macro_export]
macro_rules! blob_store_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__blob_store_case!([$(#[$attr])*] ($make) capabilities_match_the_abilities);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) stat_missing_is_none);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) get_missing_is_not_found);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) put_then_stat_and_get);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) sha512_blob);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) get_ranges);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) get_unsatisfiable_ranges);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) empty_blob);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) delete_blob);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) delete_missing_is_ok);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) list_includes_stored);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) upload_in_chunks);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) write_at_wrong_offset);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) rewrite_below_length);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) finish_with_wrong_size_refused);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) read_upload_returns_written);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) finish_makes_blob_visible);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) finish_onto_existing_keeps_blob);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) uploads_are_independent);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) abort_leaves_nothing);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) abort_unknown_is_ok);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) invalid_upload_ids_refused);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) failing_input_stream);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) large_blob_streamed);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) read_between_large_writes);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) staged_blob_published);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) staged_blob_discarded);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) staged_failing_stream_leaves_nothing);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) staged_then_abandoned_is_aborted);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) staged_in_open_session_published);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) staged_in_open_session_discarded);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) staged_in_open_session_failing_stream);
        $crate::__blob_store_case!([$(#[$attr])*] ($make) staged_in_open_session_abandoned);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __blob_store_case {
    ([$($attr:tt)*] ($make:expr) $case:ident) => {
        #[::tokio::test]
        $($attr)*
        async fn $case() {
            let store = $make;
            $crate::testsuite::blob::$case(
                $crate::testsuite::blob::AsBlobStore::as_blob_store(&store),
            )
            .await;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Helpers, public so a backend's own tests can use them.

/// `len` pseudo-random bytes, different on every call.
pub fn random_bytes(len: usize) -> Vec<u8> {
    // xorshift64*, seeded from a v4 uuid: no extra dependency, and fast enough for 8 MiB.
    let mut x = (uuid::Uuid::new_v4().as_u128() as u64) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A fresh, valid upload id.
pub fn upload_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A stream yielding `chunks` in order.
pub fn stream_of<I>(chunks: I) -> ByteStream
where
    I: IntoIterator,
    I::Item: Into<Bytes>,
{
    let chunks: Vec<Result<Bytes, StorageError>> =
        chunks.into_iter().map(|c| Ok(c.into())).collect();
    stream::iter(chunks).boxed()
}

/// `data` cut into chunks of the given sizes, cycling through `sizes` (0 means an empty chunk).
pub fn chunked(data: &[u8], sizes: &[usize]) -> ByteStream {
    if sizes.iter().all(|&s| s == 0) {
        return stream_of([data.to_vec()]);
    }
    let mut chunks = Vec::new();
    let mut rest = Bytes::copy_from_slice(data);
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(rest.len())
            .min(rest.len());
        chunks.push(rest.split_to(n));
        i += 1;
    }
    stream_of(chunks)
}

/// A stream yielding `good`, then an [`StorageError::Input`] error, then more bytes that
/// must never be written.
pub fn failing_stream(good: Vec<u8>) -> ByteStream {
    let items: Vec<Result<Bytes, StorageError>> = vec![
        Ok(Bytes::from(good)),
        Err(StorageError::Input("client went away (test)".into())),
        Ok(Bytes::from_static(b"never written")),
    ];
    stream::iter(items).boxed()
}

/// Collects a byte stream into memory.
pub async fn collect(stream: ByteStream) -> Result<Vec<u8>, StorageError> {
    stream
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await
}

/// Stores `data` through a one-shot session and returns its sha256 digest.
pub async fn put(store: &dyn BlobStore, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    store
        .put_bytes(&upload_id(), &digest, Bytes::copy_from_slice(data))
        .await
        .expect("put_bytes");
    digest
}

async fn get_range(
    store: &dyn BlobStore,
    digest: &Digest,
    range: Option<GetRange>,
) -> (u64, std::ops::Range<u64>, Vec<u8>) {
    let res = store
        .get(digest, range.clone())
        .await
        .unwrap_or_else(|e| panic!("get {range:?}: {e}"));
    let bytes = collect(res.stream)
        .await
        .unwrap_or_else(|e| panic!("reading get {range:?}: {e}"));
    (res.size, res.range, bytes)
}

async fn read_upload(store: &dyn BlobStore, id: &str) -> Vec<u8> {
    let stream = store.read_upload(id).await.expect("read_upload");
    collect(stream).await.expect("reading read_upload stream")
}

async fn write(store: &dyn BlobStore, id: &str, offset: u64, data: ByteStream) -> u64 {
    store
        .write_upload(id, offset, data)
        .await
        .unwrap_or_else(|e| panic!("write_upload at {offset}: {e}"))
}

async fn cleanup(store: &dyn BlobStore, digests: &[&Digest]) {
    for d in digests {
        store.delete(d).await.expect("delete during cleanup");
    }
}

// ---------------------------------------------------------------------------------------
// Cases.

/// A store declares `presign` exactly when it has a signer, and that signer signs (a URL
/// for any digest: signing does not look the blob up). `shared_sessions` is checked by
/// what `rewrite_below_length` expects of it.
pub async fn capabilities_match_the_abilities(store: &dyn BlobStore) {
    let caps = store.capabilities();
    assert_eq!(
        caps.presign,
        store.signer().is_some(),
        "capabilities {caps:?} against signer(): declared presign must match"
    );
    if let Some(signer) = store.signer() {
        let digest = Digest::sha256_of(&random_bytes(16));
        let url = signer
            .presigned_get(&digest, std::time::Duration::from_secs(60))
            .await
            .expect("presigned_get");
        assert!(!url.is_empty(), "an empty presigned URL");
    }
}

/// Suite case: stat missing is none.
pub async fn stat_missing_is_none(store: &dyn BlobStore) {
    let digest = Digest::sha256_of(&random_bytes(32));
    assert_eq!(store.stat(&digest).await.expect("stat"), None);
}

/// Suite case: get missing is not found.
pub async fn get_missing_is_not_found(store: &dyn BlobStore) {
    let digest = Digest::sha256_of(&random_bytes(32));
    for range in [
        None,
        Some(GetRange::Bounded(0..1)),
        Some(GetRange::Suffix(1)),
    ] {
        match store.get(&digest, range.clone()).await {
            Err(StorageError::NotFound(d)) => assert_eq!(d, digest),
            other => panic!("get {range:?} of a missing blob: expected NotFound, got {other:?}"),
        }
    }
}

/// Suite case: put then stat and get.
pub async fn put_then_stat_and_get(store: &dyn BlobStore) {
    let data = random_bytes(1000);
    let digest = put(store, &data).await;
    let info = store
        .stat(&digest)
        .await
        .expect("stat")
        .expect("blob exists");
    assert_eq!(info.size, 1000);
    let (size, range, bytes) = get_range(store, &digest, None).await;
    assert_eq!((size, range), (1000, 0..1000));
    assert_eq!(bytes, data);
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
    cleanup(store, &[&digest]).await;
}

/// Suite case: sha512 blob.
pub async fn sha512_blob(store: &dyn BlobStore) {
    let data = random_bytes(333);
    let digest = Digest::sha512_of(&data);
    store
        .put_bytes(&upload_id(), &digest, Bytes::from(data.clone()))
        .await
        .expect("put_bytes");
    assert_eq!(
        store.stat(&digest).await.expect("stat").map(|i| i.size),
        Some(333)
    );
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
    let listed: Vec<Digest> = store.list().try_collect().await.expect("list");
    assert!(listed.contains(&digest), "list misses the sha512 blob");
    // The same bytes under sha256 are a different blob.
    assert_eq!(
        store.stat(&Digest::sha256_of(&data)).await.expect("stat"),
        None
    );
    cleanup(store, &[&digest]).await;
}

/// Suite case: get ranges.
pub async fn get_ranges(store: &dyn BlobStore) {
    let data = random_bytes(1000);
    let digest = put(store, &data).await;
    let cases = [
        (GetRange::Bounded(10..20), 10..20),
        (GetRange::Bounded(0..1), 0..1),
        (GetRange::Bounded(999..1000), 999..1000),
        (GetRange::Bounded(990..5000), 990..1000),
        (GetRange::Bounded(0..u64::MAX), 0..1000),
        (GetRange::Offset(0), 0..1000),
        (GetRange::Offset(500), 500..1000),
        (GetRange::Offset(999), 999..1000),
        (GetRange::Suffix(100), 900..1000),
        (GetRange::Suffix(1), 999..1000),
        (GetRange::Suffix(5000), 0..1000),
    ];
    for (range, expected) in cases {
        let (size, got, bytes) = get_range(store, &digest, Some(range.clone())).await;
        assert_eq!(size, 1000, "size for {range:?}");
        assert_eq!(got, expected, "range for {range:?}");
        let (s, e) = (expected.start as usize, expected.end as usize);
        assert!(bytes == data[s..e], "bytes for {range:?}");
    }
    cleanup(store, &[&digest]).await;
}

/// Suite case: get unsatisfiable ranges.
pub async fn get_unsatisfiable_ranges(store: &dyn BlobStore) {
    let data = random_bytes(1000);
    let digest = put(store, &data).await;
    #[allow(clippy::reversed_empty_ranges)]
    let cases = [
        GetRange::Bounded(1000..1010),
        GetRange::Bounded(5000..6000),
        GetRange::Bounded(5..5),
        GetRange::Bounded(20..10),
        GetRange::Offset(1000),
        GetRange::Offset(u64::MAX),
        GetRange::Suffix(0),
    ];
    for range in cases {
        match store.get(&digest, Some(range.clone())).await {
            Err(StorageError::RangeNotSatisfiable { size }) => assert_eq!(size, 1000, "{range:?}"),
            other => panic!("get {range:?}: expected RangeNotSatisfiable, got {other:?}"),
        }
    }
    cleanup(store, &[&digest]).await;
}

/// Suite case: empty blob.
pub async fn empty_blob(store: &dyn BlobStore) {
    // Every case uses random content except this one: the empty blob has one digest. Leave
    // it as found in case the store is shared.
    let digest = Digest::sha256_of(b"");
    let existed = store.stat(&digest).await.expect("stat").is_some();

    // A session finished without a single write is an empty blob.
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    assert!(read_upload(store, &id).await.is_empty());
    store
        .finish_upload(&id, &digest, 0)
        .await
        .expect("finish_upload");

    assert_eq!(
        store.stat(&digest).await.expect("stat").map(|i| i.size),
        Some(0)
    );
    let (size, range, bytes) = get_range(store, &digest, None).await;
    assert_eq!((size, range, bytes.len()), (0, 0..0, 0));
    for range in [
        GetRange::Bounded(0..1),
        GetRange::Offset(0),
        GetRange::Suffix(1),
    ] {
        match store.get(&digest, Some(range.clone())).await {
            Err(StorageError::RangeNotSatisfiable { size: 0 }) => {}
            other => panic!(
                "get {range:?} of the empty blob: expected RangeNotSatisfiable, got {other:?}"
            ),
        }
    }

    // And through explicit empty writes.
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    assert_eq!(
        write(store, &id, 0, stream_of(Vec::<Bytes>::new())).await,
        0
    );
    assert_eq!(write(store, &id, 0, stream_of([Bytes::new()])).await, 0);
    store
        .finish_upload(&id, &digest, 0)
        .await
        .expect("finish_upload");
    assert_eq!(
        store.stat(&digest).await.expect("stat").map(|i| i.size),
        Some(0)
    );

    if !existed {
        cleanup(store, &[&digest]).await;
    }
}

/// Suite case: delete blob.
pub async fn delete_blob(store: &dyn BlobStore) {
    let keep = put(store, &random_bytes(10)).await;
    let digest = put(store, &random_bytes(100)).await;
    store.delete(&digest).await.expect("delete");
    assert_eq!(store.stat(&digest).await.expect("stat"), None);
    assert!(matches!(
        store.get(&digest, None).await,
        Err(StorageError::NotFound(_))
    ));
    store.delete(&digest).await.expect("deleting again");
    assert_eq!(
        store.stat(&keep).await.expect("stat").map(|i| i.size),
        Some(10),
        "another blob was touched"
    );
    // A deleted blob can be stored again.
    let data = random_bytes(50);
    let again = put(store, &data).await;
    assert_eq!(store.get_bytes(&again).await.expect("get_bytes"), data);
    cleanup(store, &[&keep, &again]).await;
}

/// Suite case: delete missing is ok.
pub async fn delete_missing_is_ok(store: &dyn BlobStore) {
    let digest = Digest::sha256_of(&random_bytes(32));
    store
        .delete(&digest)
        .await
        .expect("delete of a missing blob");
    let digest = Digest::sha512_of(&random_bytes(32));
    store
        .delete(&digest)
        .await
        .expect("delete of a missing sha512 blob");
}

/// Suite case: list includes stored.
pub async fn list_includes_stored(store: &dyn BlobStore) {
    let a = put(store, &random_bytes(1)).await;
    let b = put(store, &random_bytes(2)).await;
    let c = put(store, &random_bytes(3)).await;
    let listed: Vec<Digest> = store.list().try_collect().await.expect("list");
    for d in [&a, &b, &c] {
        assert!(listed.contains(d), "list misses {d}");
        assert_eq!(
            listed.iter().filter(|x| *x == d).count(),
            1,
            "{d} listed twice"
        );
    }
    store.delete(&b).await.expect("delete");
    let listed: Vec<Digest> = store.list().try_collect().await.expect("list");
    assert!(!listed.contains(&b), "list still has a deleted blob");
    assert!(listed.contains(&a) && listed.contains(&c));
    // An upload in progress is not a blob.
    let id = upload_id();
    let pending = random_bytes(10);
    store.start_upload(&id).await.expect("start_upload");
    write(store, &id, 0, stream_of([pending.clone()])).await;
    let listed: Vec<Digest> = store.list().try_collect().await.expect("list");
    assert!(!listed.contains(&Digest::sha256_of(&pending)));
    store.abort_upload(&id).await.expect("abort_upload");
    cleanup(store, &[&a, &c]).await;
}

/// Suite case: upload in chunks.
pub async fn upload_in_chunks(store: &dyn BlobStore) {
    let data = random_bytes(200_003);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    // Several writes of odd sizes, empty ones among them, each itself a stream of odd chunks.
    let cuts = [0usize, 1, 1, 8, 4_100, 4_100, 70_001, 200_003];
    let mut expected_len = 0u64;
    for w in cuts.windows(2) {
        let part = &data[w[0]..w[1]];
        let len = write(
            store,
            &id,
            expected_len,
            chunked(part, &[1, 0, 7, 4_093, 65_537]),
        )
        .await;
        expected_len += part.len() as u64;
        assert_eq!(
            len, expected_len,
            "write_upload returns the session's new length"
        );
    }
    assert_eq!(
        write(store, &id, expected_len, stream_of(Vec::<Bytes>::new())).await,
        expected_len
    );
    assert!(
        read_upload(store, &id).await == data,
        "read_upload differs from what was written"
    );
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .expect("finish_upload");
    assert_eq!(
        store.stat(&digest).await.expect("stat").map(|i| i.size),
        Some(200_003)
    );
    assert!(
        store.get_bytes(&digest).await.expect("get_bytes") == data,
        "blob differs"
    );
    cleanup(store, &[&digest]).await;
}

/// Suite case: write at wrong offset.
pub async fn write_at_wrong_offset(store: &dyn BlobStore) {
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    match store.write_upload(&id, 1, stream_of([b"x".to_vec()])).await {
        Err(StorageError::InvalidOffset {
            expected: 0,
            got: 1,
        }) => {}
        other => panic!("write at 1 into an empty session: expected InvalidOffset, got {other:?}"),
    }
    let data = random_bytes(10);
    assert_eq!(write(store, &id, 0, stream_of([data.clone()])).await, 10);
    for offset in [11, 12, 1 << 40] {
        match store
            .write_upload(&id, offset, stream_of([b"y".to_vec()]))
            .await
        {
            Err(StorageError::InvalidOffset { expected: 10, got }) => assert_eq!(got, offset),
            other => panic!(
                "write at {offset} into a 10-byte session: expected InvalidOffset, got {other:?}"
            ),
        }
    }
    assert_eq!(
        read_upload(store, &id).await,
        data,
        "a refused write changed the session"
    );
    // Appending at exactly the end is fine.
    assert_eq!(write(store, &id, 10, stream_of([b"z".to_vec()])).await, 11);
    store.abort_upload(&id).await.expect("abort_upload");
}

/// A write below the session's length: truncation on a store one process writes, a
/// refusal that keeps every byte on a store replicas share (see
/// [`BlobCapabilities::shared_sessions`](crate::BlobCapabilities::shared_sessions)).
pub async fn rewrite_below_length(store: &dyn BlobStore) {
    let first = random_bytes(100);
    let second = random_bytes(10);
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    assert_eq!(write(store, &id, 0, stream_of([first.clone()])).await, 100);
    if store.capabilities().shared_sessions {
        for offset in [0, 40, 99] {
            match store
                .write_upload(&id, offset, stream_of([second.clone()]))
                .await
            {
                Err(StorageError::Conflict(_)) => {}
                other => panic!(
                    "write at {offset} into a shared 100-byte session: expected Conflict, \
                     got {other:?}"
                ),
            }
            assert_eq!(
                read_upload(store, &id).await,
                first,
                "a refused write changed the session"
            );
        }
        // An empty write below the length is refused too: it would truncate.
        assert!(matches!(
            store
                .write_upload(&id, 45, stream_of(Vec::<Bytes>::new()))
                .await,
            Err(StorageError::Conflict(_))
        ));
        let digest = Digest::sha256_of(&first);
        store
            .finish_upload(&id, &digest, 100)
            .await
            .expect("finish_upload");
        assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), first);
        cleanup(store, &[&digest]).await;
        return;
    }
    assert_eq!(write(store, &id, 40, stream_of([second.clone()])).await, 50);
    let mut expected = first[..40].to_vec();
    expected.extend_from_slice(&second);
    assert_eq!(read_upload(store, &id).await, expected);
    // An empty write at an earlier offset truncates too.
    assert_eq!(
        write(store, &id, 45, stream_of(Vec::<Bytes>::new())).await,
        45
    );
    expected.truncate(45);
    assert_eq!(read_upload(store, &id).await, expected);
    let digest = Digest::sha256_of(&expected);
    store
        .finish_upload(&id, &digest, expected.len() as u64)
        .await
        .expect("finish_upload");
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), expected);
    cleanup(store, &[&digest]).await;
}

/// Finishing with a size the session does not hold publishes nothing and keeps the
/// session, which then finishes with the right size.
pub async fn finish_with_wrong_size_refused(store: &dyn BlobStore) {
    let data = random_bytes(3_000);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    write(store, &id, 0, chunked(&data, &[1_000])).await;
    for size in [0, 2_999, 3_001] {
        match store.finish_upload(&id, &digest, size).await {
            Err(StorageError::Conflict(_)) => {}
            other => panic!(
                "finish with size {size} of a 3000-byte session: expected Conflict, got {other:?}"
            ),
        }
        assert_eq!(
            store.stat(&digest).await.expect("stat"),
            None,
            "a refused finish published a blob"
        );
    }
    assert_eq!(
        read_upload(store, &id).await,
        data,
        "a refused finish lost bytes"
    );
    store
        .finish_upload(&id, &digest, 3_000)
        .await
        .expect("finish_upload");
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
    cleanup(store, &[&digest]).await;
}

/// Suite case: read upload returns written.
pub async fn read_upload_returns_written(store: &dyn BlobStore) {
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    assert!(
        read_upload(store, &id).await.is_empty(),
        "a new session holds bytes"
    );
    let a = random_bytes(3_000);
    let b = random_bytes(5);
    write(store, &id, 0, stream_of([a.clone()])).await;
    assert_eq!(read_upload(store, &id).await, a);
    write(store, &id, 3_000, stream_of([b.clone()])).await;
    let mut ab = a.clone();
    ab.extend_from_slice(&b);
    // Reading does not consume: read twice.
    assert_eq!(read_upload(store, &id).await, ab);
    assert_eq!(read_upload(store, &id).await, ab);
    store.abort_upload(&id).await.expect("abort_upload");
}

/// Suite case: finish makes blob visible.
pub async fn finish_makes_blob_visible(store: &dyn BlobStore) {
    let data = random_bytes(4_321);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    write(store, &id, 0, chunked(&data, &[1_000])).await;
    assert_eq!(
        store.stat(&digest).await.expect("stat"),
        None,
        "visible before finish"
    );
    assert!(matches!(
        store.get(&digest, None).await,
        Err(StorageError::NotFound(_))
    ));
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .expect("finish_upload");
    assert_eq!(
        store.stat(&digest).await.expect("stat").map(|i| i.size),
        Some(4_321)
    );
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
    let listed: Vec<Digest> = store.list().try_collect().await.expect("list");
    assert!(listed.contains(&digest));
    cleanup(store, &[&digest]).await;
}

/// Suite case: finish onto existing keeps blob.
pub async fn finish_onto_existing_keeps_blob(store: &dyn BlobStore) {
    let data = random_bytes(2_000);
    let digest = put(store, &data).await;
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    write(store, &id, 0, chunked(&data, &[777])).await;
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .expect("finish onto an existing blob");
    assert_eq!(
        store.stat(&digest).await.expect("stat").map(|i| i.size),
        Some(2_000)
    );
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
    // The session is gone; aborting it is still fine.
    store
        .abort_upload(&id)
        .await
        .expect("abort_upload after finish");
    // And put_bytes of an existing blob succeeds too, keeping the stored bytes and
    // leaving no session behind.
    let id = upload_id();
    store
        .put_bytes(&id, &digest, Bytes::from(data.clone()))
        .await
        .expect("put_bytes of an existing blob");
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
    assert!(
        matches!(
            store.read_upload(&id).await.map(drop),
            Err(StorageError::UploadNotFound(_))
        ),
        "put_bytes left its session"
    );
    cleanup(store, &[&digest]).await;
}

/// Suite case: uploads are independent.
pub async fn uploads_are_independent(store: &dyn BlobStore) {
    let (a, b) = (random_bytes(3_000), random_bytes(3_001));
    let (ia, ib) = (upload_id(), upload_id());
    store.start_upload(&ia).await.expect("start_upload");
    store.start_upload(&ib).await.expect("start_upload");
    write(store, &ia, 0, stream_of([a[..1_000].to_vec()])).await;
    write(store, &ib, 0, stream_of([b[..2_000].to_vec()])).await;
    write(store, &ia, 1_000, stream_of([a[1_000..].to_vec()])).await;
    write(store, &ib, 2_000, stream_of([b[2_000..].to_vec()])).await;
    let (da, db) = (Digest::sha256_of(&a), Digest::sha256_of(&b));
    store
        .finish_upload(&ib, &db, b.len() as u64)
        .await
        .expect("finish_upload");
    assert_eq!(
        read_upload(store, &ia).await,
        a,
        "finishing one session touched another"
    );
    store
        .finish_upload(&ia, &da, a.len() as u64)
        .await
        .expect("finish_upload");
    assert_eq!(store.get_bytes(&da).await.expect("get_bytes"), a);
    assert_eq!(store.get_bytes(&db).await.expect("get_bytes"), b);
    cleanup(store, &[&da, &db]).await;
}

/// Suite case: abort leaves nothing.
pub async fn abort_leaves_nothing(store: &dyn BlobStore) {
    let data = random_bytes(1_234);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    write(store, &id, 0, stream_of([data.clone()])).await;
    store.abort_upload(&id).await.expect("abort_upload");
    assert!(
        store.read_upload(&id).await.is_err(),
        "an aborted session can still be read"
    );
    assert!(
        store
            .finish_upload(&id, &digest, data.len() as u64)
            .await
            .is_err(),
        "an aborted session can still be finished"
    );
    assert_eq!(
        store.stat(&digest).await.expect("stat"),
        None,
        "an aborted upload left a blob"
    );
    store.abort_upload(&id).await.expect("aborting twice");
}

/// Suite case: abort unknown is ok.
pub async fn abort_unknown_is_ok(store: &dyn BlobStore) {
    store
        .abort_upload(&upload_id())
        .await
        .expect("abort of an unknown session");
}

/// Suite case: invalid upload ids refused.
pub async fn invalid_upload_ids_refused(store: &dyn BlobStore) {
    let digest = Digest::sha256_of(b"x");
    let long = "a".repeat(129);
    for id in [
        "../x", "..", "a/b", "/tmp/x", "a.b", "", "a\0b", "a b", "\u{e9}", &long,
    ] {
        let check = |what: &str, r: Result<(), StorageError>| match r {
            Err(StorageError::InvalidUploadId(got)) => assert_eq!(got, id, "{what} names the id"),
            other => panic!("{what} with id {id:?}: expected InvalidUploadId, got {other:?}"),
        };
        check("start_upload", store.start_upload(id).await);
        check(
            "write_upload",
            store
                .write_upload(id, 0, stream_of([b"x".to_vec()]))
                .await
                .map(drop),
        );
        check("read_upload", store.read_upload(id).await.map(drop));
        check("finish_upload", store.finish_upload(id, &digest, 0).await);
        check("abort_upload", store.abort_upload(id).await);
        check(
            "put_bytes",
            store.put_bytes(id, &digest, Bytes::from_static(b"x")).await,
        );
    }
    // The longest valid id is accepted.
    let id = "a".repeat(128);
    store
        .start_upload(&id)
        .await
        .expect("start_upload with a 128-character id");
    store.abort_upload(&id).await.expect("abort_upload");
}

/// Suite case: failing input stream.
pub async fn failing_input_stream(store: &dyn BlobStore) {
    let existing = random_bytes(500);
    let existing_digest = put(store, &existing).await;

    // A session whose first write fails.
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    match store
        .write_upload(&id, 0, failing_stream(random_bytes(300)))
        .await
    {
        Err(StorageError::Input(_)) => {}
        other => {
            panic!("write_upload of a failing stream: expected its Input error, got {other:?}")
        }
    }
    store.abort_upload(&id).await.expect("abort_upload");

    // A session that fails half way, then is retried at the last acknowledged offset.
    let data = random_bytes(1_000);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    assert_eq!(
        write(store, &id, 0, stream_of([data[..400].to_vec()])).await,
        400
    );
    let result = store
        .write_upload(&id, 400, failing_stream(random_bytes(250)))
        .await;
    assert!(
        matches!(result, Err(StorageError::Input(_))),
        "expected the stream's error, got {result:?}"
    );
    // Nothing committed: no new blob, the existing one untouched.
    assert_eq!(store.stat(&digest).await.expect("stat"), None);
    assert_eq!(
        store.get_bytes(&existing_digest).await.expect("get_bytes"),
        existing
    );
    // The session kept at least what was acknowledged; the retry overwrites the rest.
    let held = read_upload(store, &id).await;
    assert!(
        held.len() >= 400 && held[..400] == data[..400],
        "acknowledged bytes were lost"
    );
    assert_eq!(
        write(store, &id, 400, chunked(&data[400..], &[100])).await,
        1_000
    );
    assert_eq!(read_upload(store, &id).await, data);
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .expect("finish_upload");
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
    cleanup(store, &[&digest, &existing_digest]).await;
}

/// Suite case: large blob streamed.
pub async fn large_blob_streamed(store: &dyn BlobStore) {
    const LEN: usize = 8 * 1024 * 1024 + 3;
    let data = random_bytes(LEN);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    let half = 5 * 1024 * 1024 + 11;
    assert_eq!(
        write(store, &id, 0, chunked(&data[..half], &[65_537, 16_383])).await,
        half as u64
    );
    assert_eq!(
        write(store, &id, half as u64, chunked(&data[half..], &[1 << 20])).await,
        LEN as u64
    );
    store
        .finish_upload(&id, &digest, LEN as u64)
        .await
        .expect("finish_upload");
    assert_eq!(
        store.stat(&digest).await.expect("stat").map(|i| i.size),
        Some(LEN as u64)
    );

    // Read it back as a stream, chunk by chunk, without assuming chunk sizes.
    let res = store.get(&digest, None).await.expect("get");
    assert_eq!((res.size, res.range.clone()), (LEN as u64, 0..LEN as u64));
    let mut stream = res.stream;
    let mut pos = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("reading the large blob");
        assert!(pos + chunk.len() <= LEN, "more bytes than the blob holds");
        assert!(
            chunk[..] == data[pos..pos + chunk.len()],
            "bytes differ at {pos}"
        );
        pos += chunk.len();
    }
    assert_eq!(pos, LEN);

    // Ranges that cross any plausible buffer boundary.
    for (start, end) in [
        (262_143, 262_145 + 1_048_576),
        (LEN as u64 - 5, LEN as u64 + 5),
    ] {
        let (_, range, bytes) =
            get_range(store, &digest, Some(GetRange::Bounded(start..end))).await;
        let end = end.min(LEN as u64);
        assert_eq!(range, start..end);
        assert!(
            bytes == data[start as usize..end as usize],
            "range {start}..{end} differs"
        );
    }
    let (_, range, bytes) = get_range(store, &digest, Some(GetRange::Suffix(300_000))).await;
    assert_eq!(range, LEN as u64 - 300_000..LEN as u64);
    assert!(bytes == data[LEN - 300_000..]);
    cleanup(store, &[&digest]).await;
}

/// Reading a session back does not end it: writes go on after it, and the blob holds every
/// byte. Past 5 MiB, where a store may keep the bytes in a form it cannot read back
/// directly (an S3 store's parts of an unfinished multipart upload).
pub async fn read_between_large_writes(store: &dyn BlobStore) {
    const MIB: usize = 1024 * 1024;
    let data = random_bytes(13 * MIB + 17);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.expect("start_upload");
    let cut = 6 * MIB + 5;
    write(store, &id, 0, chunked(&data[..cut], &[MIB])).await;
    assert!(
        read_upload(store, &id).await == data[..cut],
        "read_upload after the first write differs"
    );
    assert_eq!(
        write(store, &id, cut as u64, chunked(&data[cut..], &[MIB])).await,
        data.len() as u64
    );
    assert!(
        read_upload(store, &id).await == data,
        "read_upload after the second write differs"
    );
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .expect("finish_upload");
    assert!(
        store.get_bytes(&digest).await.expect("get_bytes") == data,
        "blob differs"
    );
    assert!(
        store.read_upload(&id).await.is_err(),
        "the session is still readable after finish"
    );
    cleanup(store, &[&digest]).await;
}

// ---------------------------------------------------------------------------------------
// Staged blobs (`stage_blob`): a monolithic push of known digest.

/// Lengths a staging case tries: empty, small, and past S3's 5 MiB minimum part (a store
/// may write small and large blobs differently).
const STAGED_LENGTHS: [usize; 3] = [0, 1_234, 6 * 1024 * 1024 + 7];

async fn stage<'a>(
    store: &'a dyn BlobStore,
    id: &'a str,
    digest: &'a Digest,
    data: &[u8],
) -> Box<dyn crate::StagedBlob + 'a> {
    let blob = StageBlob::new(id, digest, data.len() as u64, chunked(data, &[65_536]));
    store
        .stage_blob(blob)
        .await
        .unwrap_or_else(|e| panic!("stage_blob of {} bytes: {e}", data.len()))
}

/// A staged blob cannot be read until it is published; then it reads as any blob, and
/// publishing the same bytes again keeps it.
pub async fn staged_blob_published(store: &dyn BlobStore) {
    for len in STAGED_LENGTHS {
        let data = random_bytes(len);
        let digest = Digest::sha256_of(&data);
        let id = upload_id();
        let staged = stage(store, &id, &digest, &data).await;
        assert_eq!(
            store.stat(&digest).await.expect("stat"),
            None,
            "a staged blob of {len} bytes is readable before it is published"
        );
        staged.publish().await.expect("publish");
        assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
        // The staging's id is done with: aborting it (as an expiry would) keeps the blob.
        store.abort_upload(&id).await.expect("abort_upload");
        assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
        let again = upload_id();
        stage(store, &again, &digest, &data)
            .await
            .publish()
            .await
            .expect("publishing an existing blob again");
        store.abort_upload(&again).await.expect("abort_upload");
        assert_eq!(
            store.get_bytes(&digest).await.expect("get_bytes"),
            data,
            "publishing a blob that exists changed it"
        );
        cleanup(store, &[&digest]).await;
    }
}

/// Bytes whose digest is not the expected one (the caller's check fails): discarded,
/// nothing is readable under either digest, and the id can be aborted.
pub async fn staged_blob_discarded(store: &dyn BlobStore) {
    for len in STAGED_LENGTHS {
        let data = random_bytes(len);
        let claimed = Digest::sha256_of(&random_bytes(16));
        let id = upload_id();
        stage(store, &id, &claimed, &data)
            .await
            .discard()
            .await
            .expect("discard");
        assert_eq!(store.stat(&claimed).await.expect("stat"), None);
        let actual = Digest::sha256_of(&data);
        if len > 0 {
            assert_eq!(store.stat(&actual).await.expect("stat"), None);
        }
        store.abort_upload(&id).await.expect("abort_upload");
    }
}

/// A stream that fails half way, or ends before its declared length: an error (the
/// stream's own when it failed), and nothing staged or readable.
pub async fn staged_failing_stream_leaves_nothing(store: &dyn BlobStore) {
    for good in [300, 6 * 1024 * 1024] {
        let id = upload_id();
        let digest = Digest::sha256_of(&random_bytes(16));
        let blob = StageBlob::new(
            &id,
            &digest,
            good as u64 + 1_000,
            failing_stream(random_bytes(good)),
        );
        match store.stage_blob(blob).await {
            Err(StorageError::Input(_)) => {}
            Err(other) => panic!("stage_blob of a failing stream: got {other}, not its error"),
            Ok(_) => panic!("stage_blob of a failing stream succeeded"),
        }
        assert_eq!(store.stat(&digest).await.expect("stat"), None);
        store.abort_upload(&id).await.expect("abort_upload");

        let id = upload_id();
        let short = random_bytes(good);
        let blob = StageBlob::new(&id, &digest, good as u64 + 1, stream_of([short]));
        assert!(
            store.stage_blob(blob).await.is_err(),
            "a stream shorter than its declared length was staged"
        );
        assert_eq!(store.stat(&digest).await.expect("stat"), None);
        store.abort_upload(&id).await.expect("abort_upload");
    }
}

/// A staging neither published nor discarded (its process died) is removed by aborting
/// its upload id, as the registry's expiry of the session does; nothing becomes readable.
pub async fn staged_then_abandoned_is_aborted(store: &dyn BlobStore) {
    for len in STAGED_LENGTHS {
        let data = random_bytes(len);
        let digest = Digest::sha256_of(&data);
        let id = upload_id();
        drop(stage(store, &id, &digest, &data).await);
        store.abort_upload(&id).await.expect("abort_upload");
        assert_eq!(
            store.stat(&digest).await.expect("stat"),
            None,
            "an abandoned staging of {len} bytes became readable"
        );
    }
}

async fn stage_in_open_session<'a>(
    store: &'a dyn BlobStore,
    id: &'a str,
    digest: &'a Digest,
    data: &[u8],
) -> Box<dyn crate::StagedBlob + 'a> {
    store.start_upload(id).await.expect("start_upload");
    let blob =
        StageBlob::new(id, digest, data.len() as u64, chunked(data, &[65_536])).with_open_session();
    store
        .stage_blob(blob)
        .await
        .unwrap_or_else(|e| panic!("stage_blob of {} bytes into a session: {e}", data.len()))
}

/// Writes `data` into the session `id` from offset 0 and finishes it: the session was
/// open and empty.
async fn finish_whole(store: &dyn BlobStore, id: &str, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    let len = store
        .write_upload(id, 0, chunked(data, &[65_536]))
        .await
        .expect("write_upload into the session after the staging");
    assert_eq!(len, data.len() as u64, "the session was not empty");
    store
        .finish_upload(id, &digest, len)
        .await
        .expect("finish_upload");
    assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
    digest
}

/// Staged into an open, empty session (a `PUT` of the whole blob after its `POST`): not
/// readable until published; publishing ends the session, and aborting its id keeps the
/// blob.
pub async fn staged_in_open_session_published(store: &dyn BlobStore) {
    for len in STAGED_LENGTHS {
        let data = random_bytes(len);
        let digest = Digest::sha256_of(&data);
        let id = upload_id();
        let staged = stage_in_open_session(store, &id, &digest, &data).await;
        assert_eq!(
            store.stat(&digest).await.expect("stat"),
            None,
            "a blob of {len} bytes staged into a session is readable before it is published"
        );
        staged.publish().await.expect("publish");
        assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
        assert!(
            store
                .write_upload(&id, 0, stream_of([data.clone()]))
                .await
                .is_err(),
            "the session of {len} bytes is still open after its blob was published"
        );
        store.abort_upload(&id).await.expect("abort_upload");
        assert_eq!(store.get_bytes(&digest).await.expect("get_bytes"), data);
        cleanup(store, &[&digest]).await;
    }
}

/// Bytes whose digest is not the expected one, discarded: nothing readable, and the
/// session is open and empty again (the whole blob can be sent once more).
pub async fn staged_in_open_session_discarded(store: &dyn BlobStore) {
    for len in STAGED_LENGTHS {
        let data = random_bytes(len);
        let claimed = Digest::sha256_of(&random_bytes(16));
        let id = upload_id();
        stage_in_open_session(store, &id, &claimed, &data)
            .await
            .discard()
            .await
            .expect("discard");
        assert_eq!(store.stat(&claimed).await.expect("stat"), None);
        if len > 0 {
            let actual = Digest::sha256_of(&data);
            assert_eq!(store.stat(&actual).await.expect("stat"), None);
        }
        let digest = finish_whole(store, &id, &data).await;
        cleanup(store, &[&digest]).await;
    }
}

/// A stream that fails half way into a session: its error, nothing readable, and the
/// session open and empty again.
pub async fn staged_in_open_session_failing_stream(store: &dyn BlobStore) {
    for good in [300, 6 * 1024 * 1024] {
        let id = upload_id();
        store.start_upload(&id).await.expect("start_upload");
        let digest = Digest::sha256_of(&random_bytes(16));
        let blob = StageBlob::new(
            &id,
            &digest,
            good as u64 + 1_000,
            failing_stream(random_bytes(good)),
        )
        .with_open_session();
        match store.stage_blob(blob).await {
            Err(StorageError::Input(_)) => {}
            Err(other) => panic!("stage_blob of a failing stream: got {other}, not its error"),
            Ok(_) => panic!("stage_blob of a failing stream succeeded"),
        }
        assert_eq!(store.stat(&digest).await.expect("stat"), None);
        let digest = finish_whole(store, &id, &random_bytes(good)).await;
        cleanup(store, &[&digest]).await;
    }
}

/// A staging into a session neither published nor discarded (its process died) is
/// removed by aborting the session; nothing becomes readable.
pub async fn staged_in_open_session_abandoned(store: &dyn BlobStore) {
    for len in STAGED_LENGTHS {
        let data = random_bytes(len);
        let digest = Digest::sha256_of(&data);
        let id = upload_id();
        drop(stage_in_open_session(store, &id, &digest, &data).await);
        store.abort_upload(&id).await.expect("abort_upload");
        assert_eq!(
            store.stat(&digest).await.expect("stat"),
            None,
            "an abandoned staging of {len} bytes into a session became readable"
        );
    }
}
