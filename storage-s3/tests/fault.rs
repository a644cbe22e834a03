//! The S3 server goes away mid-upload: the store returns errors (no panic, no hang), and
//! after a restart everything committed before is intact, no partial blob is visible,
//! and the interrupted session carries on from its last acknowledged offset.
//!
//! Each test runs its own SeaweedFS (it stops and restarts it).

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_spec_types::Digest;
use storage_s3::S3BlobStore;
use storage_traits::testsuite::blob::{chunked, collect, put, random_bytes, upload_id};
use storage_traits::{BlobStore, BlobStoreExt, ByteStream, StorageError};
use test_support::seaweedfs::SeaweedFs;
use tokio::time::timeout;

const MIB: usize = 1024 * 1024;
/// Far above what a failing request takes with the timeouts below; only a hang exceeds it.
const NO_HANG: Duration = Duration::from_secs(60);

fn store_on(server: &SeaweedFs) -> S3BlobStore {
    let cfg = common::config_on(server)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(10))
        .with_max_retries(2);
    S3BlobStore::new(cfg).expect("store")
}

fn assert_backend_error<T: std::fmt::Debug>(what: &str, r: Result<T, StorageError>) {
    match r {
        Err(StorageError::Backend { backend: "s3", .. }) => {}
        other => panic!("{what} while S3 is down: expected a backend error, got {other:?}"),
    }
}

/// `data` in 1 MiB chunks, pausing between them; `stopped` fires after the second chunk.
fn slow_stream(data: Vec<u8>, stopped: tokio::sync::oneshot::Sender<()>) -> ByteStream {
    let chunks: Vec<Bytes> = Bytes::from(data)
        .chunks(MIB)
        .map(Bytes::copy_from_slice)
        .collect();
    let mut signal = Some(stopped);
    futures::stream::iter(chunks.into_iter().enumerate())
        .then(move |(i, c)| {
            if i == 2
                && let Some(s) = signal.take()
            {
                let _ = s.send(());
            }
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(c)
            }
        })
        .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_mid_write() {
    let server = SeaweedFs::start();
    let store = store_on(&server);

    // Committed before the outage: a small blob and a multipart one.
    let small = random_bytes(1_000);
    let small_digest = put(&store, &small).await;
    let big = random_bytes(13 * MIB + 5);
    let big_digest = Digest::sha256_of(&big);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    store
        .write_upload(&id, 0, chunked(&big, &[3 * MIB]))
        .await
        .unwrap();
    store
        .finish_upload(&id, &big_digest, big.len() as u64)
        .await
        .unwrap();

    // A session with 3 MiB acknowledged, then a write the outage interrupts.
    let data = random_bytes(14 * MIB);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    let acked = 3 * MIB;
    store
        .write_upload(&id, 0, chunked(&data[..acked], &[MIB]))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let write = tokio::spawn({
        let store = store.clone();
        let id = id.clone();
        let rest = data[acked..].to_vec();
        async move {
            store
                .write_upload(&id, acked as u64, slow_stream(rest, tx))
                .await
        }
    });
    rx.await.unwrap();
    tokio::task::block_in_place(|| server.stop());
    let result = timeout(NO_HANG, write)
        .await
        .expect("write_upload hung after the server stopped")
        .expect("write_upload panicked");
    assert_backend_error("write_upload", result);

    // Everything else fails cleanly too while the server is down.
    let during = async {
        assert_backend_error("stat", store.stat(&small_digest).await);
        assert_backend_error("get", store.get(&small_digest, None).await.map(drop));
        assert_backend_error("read_upload", store.read_upload(&id).await.map(drop));
        assert_backend_error(
            "finish_upload",
            store.finish_upload(&id, &digest, data.len() as u64).await,
        );
        let listed: Result<Vec<Digest>, _> = store.list().try_collect().await;
        assert_backend_error("list", listed);
        // Signing needs to know which key holds the bytes (the blob key or the data key
        // its pointer names): a HEAD, so an error too.
        let signer = store.signer().unwrap();
        assert_backend_error(
            "presigned_get",
            signer
                .presigned_get(&small_digest, Duration::from_secs(60))
                .await,
        );
    };
    timeout(NO_HANG, during)
        .await
        .expect("an operation hung while the server was down");

    tokio::task::block_in_place(|| server.restart());

    // Committed blobs are intact; the interrupted blob is not visible.
    assert_eq!(store.get_bytes(&small_digest).await.unwrap(), small);
    assert!(store.get_bytes(&big_digest).await.unwrap() == big);
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    let mut listed: Vec<Digest> = store.list().try_collect().await.unwrap();
    listed.sort_by_key(|d| d.to_string());
    let mut expected = vec![small_digest.clone(), big_digest.clone()];
    expected.sort_by_key(|d| d.to_string());
    assert_eq!(listed, expected);

    // The session holds what was acknowledged and continues from there.
    let held = collect(store.read_upload(&id).await.unwrap())
        .await
        .unwrap();
    assert!(held == data[..acked], "the session lost acknowledged bytes");
    assert_eq!(
        store
            .write_upload(&id, acked as u64, chunked(&data[acked..], &[2 * MIB]))
            .await
            .unwrap(),
        data.len() as u64
    );
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert!(store.get_bytes(&digest).await.unwrap() == data);
    assert_eq!(store.upload_keys().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.incomplete_multipart_uploads().await.unwrap(),
        Vec::<(String, String)>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_mid_finish() {
    let server = SeaweedFs::start();
    let store = store_on(&server);
    let data = random_bytes(41 * MIB);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    store
        .write_upload(&id, 0, chunked(&data, &[MIB]))
        .await
        .unwrap();

    let finish = tokio::spawn({
        let store = store.clone();
        let id = id.clone();
        let digest = digest.clone();
        let len = data.len() as u64;
        async move { store.finish_upload(&id, &digest, len).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    tokio::task::block_in_place(|| server.stop());
    let result = timeout(NO_HANG, finish)
        .await
        .expect("finish_upload hung after the server stopped")
        .expect("finish_upload panicked");
    eprintln!("finish_upload racing the outage: {result:?}");
    tokio::task::block_in_place(|| server.restart());

    // Whichever way the race went, the blob is complete or absent, never partial.
    match store.stat(&digest).await.unwrap() {
        Some(info) => {
            assert_eq!(info.size, data.len() as u64, "a partial blob is visible");
            assert!(store.get_bytes(&digest).await.unwrap() == data);
        }
        None => assert!(result.is_err(), "finish succeeded but the blob is missing"),
    }
    if result.is_err() {
        // The caller aborts the failed session; that must clean up everything, including
        // a multipart upload the interrupted finish had begun.
        store.abort_upload(&id).await.unwrap();
    }
    assert_eq!(store.upload_keys().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.incomplete_multipart_uploads().await.unwrap(),
        Vec::<(String, String)>::new()
    );
}
