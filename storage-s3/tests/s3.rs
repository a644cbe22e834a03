#![allow(clippy::unwrap_used)]
//! What only an S3 store can show, against a real SeaweedFS: multipart commits of many
//! chunks, writes at offsets inside stored bytes, sessions moving between replicas and
//! racing on them, blobs as pointers to data objects, sessions of the previous version,
//! corrupt states, presigned downloads, list pagination, and that abort and finish leave
//! nothing behind.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_spec_types::Digest;
use storage_s3::{S3BlobStore, S3Config};
use storage_traits::testsuite::blob::{chunked, collect, random_bytes, stream_of, upload_id};
use storage_traits::{BlobStore, BlobStoreExt, GetRange, StorageError};

const MIB: usize = 1024 * 1024;

/// Nothing of any session is left: no state or segment objects, no multipart uploads.
async fn assert_no_session_leftovers(store: &S3BlobStore) {
    assert_eq!(
        store.upload_keys().await.expect("upload_keys"),
        Vec::<String>::new()
    );
    assert_eq!(
        store
            .incomplete_multipart_uploads()
            .await
            .expect("incomplete_multipart_uploads"),
        Vec::<(String, String)>::new()
    );
}

/// `data` as a blob through one session: one write whose input comes in chunks of 1 MiB.
async fn push_in_chunks_of_a_mib(store: &S3BlobStore, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    store
        .write_upload(&id, 0, chunked(data, &[MIB]))
        .await
        .unwrap();
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    digest
}

#[tokio::test]
async fn many_small_chunks_make_one_multipart_blob() {
    let store = common::store();
    let data = random_bytes(20 * MIB + 12_345);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    // 3 MiB writes: each is under S3's 5 MiB minimum part, so the store has to merge them.
    let mut offset = 0;
    for chunk in data.chunks(3 * MIB) {
        let len = store
            .write_upload(&id, offset as u64, chunked(chunk, &[64 * 1024 + 1]))
            .await
            .unwrap();
        offset += chunk.len();
        assert_eq!(len, offset as u64);
    }
    let held = collect(store.read_upload(&id).await.unwrap())
        .await
        .unwrap();
    assert!(held == data, "read_upload differs");
    // Merged segments are deleted as they are replaced: 20 MiB in 3 MiB writes needs at
    // most a handful of objects, not one per write.
    let keys = store.upload_keys().await.unwrap();
    assert!(keys.len() <= 6, "{} session objects: {keys:?}", keys.len());

    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(
        store.stat(&digest).await.unwrap().map(|i| i.size),
        Some(data.len() as u64)
    );
    assert!(
        store.get_bytes(&digest).await.unwrap() == data,
        "blob differs"
    );
    // A range across the boundary of two parts.
    let res = store
        .get(
            &digest,
            Some(GetRange::Bounded(6 * MIB as u64 - 10..6 * MIB as u64 + 10)),
        )
        .await
        .unwrap();
    assert!(collect(res.stream).await.unwrap() == data[6 * MIB - 10..6 * MIB + 10]);
    assert_no_session_leftovers(&store).await;
    store.delete(&digest).await.unwrap();
}

#[tokio::test]
async fn one_large_write_and_tiny_writes_mixed() {
    let store = common::store();
    let data = random_bytes(17 * MIB + 3);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    let cuts = [0, 1, 100, 4_000, 9 * MIB, 9 * MIB + 1, 17 * MIB + 3];
    for w in cuts.windows(2) {
        store
            .write_upload(&id, w[0] as u64, chunked(&data[w[0]..w[1]], &[MIB / 3]))
            .await
            .unwrap();
    }
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert!(store.get_bytes(&digest).await.unwrap() == data);
    assert_no_session_leftovers(&store).await;
    store.delete(&digest).await.unwrap();
}

/// Replicas share sessions, so stored bytes are never cut: a write back inside a stored
/// segment is refused and changes nothing, and of two replicas writing at the same offset
/// at once exactly one is recorded.
#[tokio::test]
async fn stored_bytes_are_never_replaced() {
    let cfg = common::config_on(common::server());
    let a = S3BlobStore::new(cfg.clone()).unwrap();
    let b = S3BlobStore::new(cfg).unwrap();
    let first = random_bytes(12 * MIB);
    let id = upload_id();
    a.start_upload(&id).await.unwrap();
    a.write_upload(&id, 0, stream_of([first.clone()]))
        .await
        .unwrap();
    let result = b
        .write_upload(
            &id,
            (6 * MIB + 5) as u64,
            stream_of([random_bytes(7 * MIB)]),
        )
        .await;
    assert!(
        matches!(result, Err(StorageError::Conflict(_))),
        "a write inside a stored segment: {result:?}"
    );
    let held = collect(a.read_upload(&id).await.unwrap()).await.unwrap();
    assert!(held == first, "a refused write changed the session");

    // Two replicas append at the same offset at once.
    let (x, y) = (random_bytes(3 * MIB), random_bytes(3 * MIB));
    let at = first.len() as u64;
    let (rx, ry) = tokio::join!(
        a.write_upload(&id, at, stream_of([x.clone()])),
        b.write_upload(&id, at, stream_of([y.clone()])),
    );
    let winner = match (&rx, &ry) {
        (Ok(_), Err(StorageError::Conflict(_))) => &x,
        (Err(StorageError::Conflict(_)), Ok(_)) => &y,
        other => panic!("racing writes: expected one Ok and one Conflict, got {other:?}"),
    };
    let mut expected = first.clone();
    expected.extend_from_slice(winner);
    let held = collect(b.read_upload(&id).await.unwrap()).await.unwrap();
    assert!(
        held == expected,
        "the session holds neither racer's bytes whole"
    );
    let digest = Digest::sha256_of(&expected);
    b.finish_upload(&id, &digest, expected.len() as u64)
        .await
        .unwrap();
    assert!(a.get_bytes(&digest).await.unwrap() == expected);
    assert_no_session_leftovers(&a).await;
    a.delete(&digest).await.unwrap();
}

#[tokio::test]
async fn replicas_continue_each_others_sessions() {
    let cfg = common::config_on(common::server());
    let a = S3BlobStore::new(cfg.clone()).unwrap();
    let b = S3BlobStore::new(cfg).unwrap();
    let data = random_bytes(7 * MIB + 1);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    a.start_upload(&id).await.unwrap();
    let mut offset = 0;
    for (i, chunk) in data.chunks(2 * MIB).enumerate() {
        let store = if i % 2 == 0 { &a } else { &b };
        offset = store
            .write_upload(&id, offset, stream_of([chunk.to_vec()]))
            .await
            .unwrap();
    }
    b.finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert!(a.get_bytes(&digest).await.unwrap() == data);
    a.delete(&digest).await.unwrap();
}

#[tokio::test]
async fn presigned_get_is_fetchable_without_credentials() {
    let store = common::store();
    let data = random_bytes(3 * MIB + 7);
    let digest = Digest::sha256_of(&data);
    store
        .put_bytes(&upload_id(), &digest, Bytes::from(data.clone()))
        .await
        .unwrap();
    let signer = store.signer().expect("S3 stores can presign");
    let url = signer
        .presigned_get(&digest, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(url.contains("X-Amz-Signature="), "{url}");

    let http = reqwest::Client::new();
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert!(body == data, "presigned GET returned other bytes");
    // Ranges work on it too (clients resume downloads).
    let response = http
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), data[10..20]);

    // Without the signature: refused.
    let unsigned = url.split('?').next().unwrap();
    let response = http.get(unsigned).send().await.unwrap();
    assert_eq!(response.status(), 403);
    // A tampered signature: refused.
    let tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);

    assert!(
        signer
            .presigned_get(&digest, Duration::from_secs(8 * 24 * 3600))
            .await
            .is_err(),
        "SigV4 URLs live at most 7 days"
    );
    store.delete(&digest).await.unwrap();
}

#[tokio::test]
async fn abort_leaves_no_objects_or_multipart_uploads() {
    let store = common::store();
    // Several segments, a merged one among them, and a write that failed half way.
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    let data = random_bytes(19 * MIB);
    store
        .write_upload(&id, 0, chunked(&data[..MIB], &[100_000]))
        .await
        .unwrap();
    store
        .write_upload(&id, MIB as u64, stream_of([data[MIB..].to_vec()]))
        .await
        .unwrap();
    let failing = storage_traits::testsuite::blob::failing_stream(random_bytes(9 * MIB));
    assert!(
        store
            .write_upload(&id, data.len() as u64, failing)
            .await
            .is_err()
    );
    assert!(!store.upload_keys().await.unwrap().is_empty());
    store.abort_upload(&id).await.unwrap();
    assert_no_session_leftovers(&store).await;
    assert!(matches!(
        store.read_upload(&id).await,
        Err(storage_traits::StorageError::UploadNotFound(_))
    ));
    let listed: Vec<Digest> = store.list().try_collect().await.unwrap();
    assert!(
        listed.is_empty(),
        "an aborted upload left blobs: {listed:?}"
    );
}

#[tokio::test]
async fn list_pages_through_many_blobs() {
    let cfg = common::config_on(common::server()).with_list_page_size(7);
    let store = S3BlobStore::new(cfg).unwrap();
    let mut stored = Vec::new();
    for i in 0..23u32 {
        let data = format!("blob {i} {}", uuid::Uuid::new_v4());
        let digest = Digest::sha256_of(data.as_bytes());
        store
            .put_bytes(&upload_id(), &digest, Bytes::from(data))
            .await
            .unwrap();
        stored.push(digest);
    }
    let mut listed: Vec<Digest> = store.list().try_collect().await.unwrap();
    listed.sort_by_key(|d| d.to_string());
    stored.sort_by_key(|d| d.to_string());
    assert_eq!(listed, stored);
    for d in &stored {
        store.delete(d).await.unwrap();
    }
}

#[tokio::test]
async fn stores_under_other_prefixes_are_separate() {
    let a = common::store();
    let b = common::store();
    let digest = storage_traits::testsuite::blob::put(&a, b"only in a").await;
    assert_eq!(b.stat(&digest).await.unwrap(), None);
    let listed: Vec<Digest> = b.list().try_collect().await.unwrap();
    assert!(listed.is_empty());
    assert!(a.blob_key(&digest).starts_with(a.prefix()));
    a.delete(&digest).await.unwrap();
}

#[tokio::test]
async fn from_url_and_check() {
    let server = common::server();
    // No credentials in the environment of the test: explicit ones via the config.
    let cfg = S3Config::from_url(&server.url("checked/prefix"))
        .unwrap()
        .with_credentials(storage_s3::Credentials::new(
            &server.access_key,
            &server.secret_key,
        ));
    let store = S3BlobStore::new(cfg).unwrap();
    assert_eq!(store.prefix(), "checked/prefix/");
    assert_eq!(store.bucket(), server.bucket);
    store.check().await.unwrap();

    // Wrong credentials: a clean backend error naming S3's code.
    let cfg = S3Config::from_url(&server.url("x"))
        .unwrap()
        .with_credentials(storage_s3::Credentials::new(&server.access_key, "wrong"));
    let err = S3BlobStore::new(cfg).unwrap().check().await.unwrap_err();
    assert!(
        matches!(
            err,
            storage_traits::StorageError::Backend { backend: "s3", .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test]
async fn incomplete_multipart_uploads_are_reported() {
    use rusty_s3::S3Action;
    let server = common::server();
    let store = common::store();
    let key = format!("{}blobs/sha256/00/stray", store.prefix());
    let bucket = rusty_s3::Bucket::new(
        server.endpoint.parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        server.bucket.clone(),
        server.region.clone(),
    )
    .unwrap();
    let creds = rusty_s3::Credentials::new(&server.access_key, &server.secret_key);
    let url = rusty_s3::actions::CreateMultipartUpload::new(&bucket, Some(&creds), &key)
        .sign(Duration::from_secs(60));
    let body = reqwest::Client::new()
        .post(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&body).unwrap();
    assert_eq!(
        store.incomplete_multipart_uploads().await.unwrap(),
        vec![(key.clone(), created.upload_id().to_string())]
    );
    let url = rusty_s3::actions::AbortMultipartUpload::new(
        &bucket,
        Some(&creds),
        &key,
        created.upload_id(),
    )
    .sign(Duration::from_secs(60));
    reqwest::Client::new().delete(url).send().await.unwrap();
    assert_eq!(
        store.incomplete_multipart_uploads().await.unwrap(),
        Vec::<(String, String)>::new()
    );
}

/// The store that published a blob behind a pointer knows its data key: reading the blob
/// right after is one `GET`, not the pointer's and then the data's. Another store reads
/// the pointer first.
#[tokio::test]
async fn a_blob_just_published_is_read_in_one_request() {
    let gets = common::relay::Cutter::counting(Box::new(|h| h.method == "GET")).await;
    let p = common::relay::prefix();
    let store = common::relay::through(&gets, &p);
    let data = random_bytes(6 * MIB);
    let digest = push_in_chunks_of_a_mib(&store, &data).await;
    let before = gets.matched();
    assert!(store.get_bytes(&digest).await.unwrap() == data);
    assert_eq!(
        gets.matched() - before,
        1,
        "GETs of a blob this store published"
    );
    let other = common::relay::through(&gets, &p);
    let before = gets.matched();
    assert!(other.get_bytes(&digest).await.unwrap() == data);
    assert_eq!(
        gets.matched() - before,
        2,
        "GETs from a store that did not publish it"
    );
    store.delete(&digest).await.unwrap();
}

/// Two replicas write the same session from the same state: the one that saves second
/// is refused with `Conflict`, and the session holds exactly the first one's bytes.
#[tokio::test]
async fn racing_writers_of_one_session_never_replace_each_others_bytes() {
    let cfg = common::config_on(common::server());
    let a = S3BlobStore::new(cfg.clone()).unwrap();
    let b = S3BlobStore::new(cfg).unwrap();
    let id = upload_id();
    a.start_upload(&id).await.unwrap();
    let first = random_bytes(1000);
    let second = random_bytes(1000);
    // A's body stalls until B has written and saved: A read the state before B saved it.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stalled_second = second.clone();
    let stalled = futures::stream::once(async move {
        let _ = rx.await;
        Ok::<_, storage_traits::StorageError>(Bytes::from(stalled_second))
    });
    let a_write = tokio::spawn({
        let a = a.clone();
        let id = id.clone();
        async move { a.write_upload(&id, 0, Box::pin(stalled)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.write_upload(&id, 0, stream_of([first.clone()]))
            .await
            .unwrap(),
        1000
    );
    tx.send(()).unwrap();
    let refused = a_write.await.unwrap();
    assert!(
        matches!(refused, Err(storage_traits::StorageError::Conflict(_))),
        "{refused:?}"
    );
    let held = collect(b.read_upload(&id).await.unwrap()).await.unwrap();
    assert!(
        held == first,
        "the session keeps the bytes of the write that won"
    );
    b.abort_upload(&id).await.unwrap();
}

/// A blob written in parts is one data object, whose key the blob's key points at; one
/// written in one `PUT` (small, or `put_bytes`) is its own key. Either reads the same way,
/// presigned URLs included, and a delete removes the data too.
#[tokio::test]
async fn blobs_in_parts_are_data_objects_behind_a_pointer() {
    let store = common::store();
    let data = random_bytes(21 * MIB + 5);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    store
        .write_upload(&id, 0, chunked(&data, &[64 * 1024 + 3]))
        .await
        .unwrap();
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    let data_key = store.blob_data_key(&digest).await.unwrap().unwrap();
    assert!(
        data_key.starts_with(&format!("{}data/{id}.", store.prefix())),
        "{data_key}"
    );
    assert_eq!(store.data_keys().await.unwrap(), vec![data_key.clone()]);
    assert_eq!(
        store.stat(&digest).await.unwrap().map(|i| i.size),
        Some(data.len() as u64)
    );
    assert!(store.get_bytes(&digest).await.unwrap() == data);
    let res = store
        .get(&digest, Some(GetRange::Suffix(10 * MIB as u64 + 1)))
        .await
        .unwrap();
    assert_eq!(res.size, data.len() as u64);
    assert!(collect(res.stream).await.unwrap() == data[data.len() - 10 * MIB - 1..]);
    let url = store
        .signer()
        .unwrap()
        .presigned_get(&digest, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(url.contains(&data_key), "{url}");
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert!(body == data, "the presigned URL serves other bytes");
    let listed: Vec<Digest> = store.list().try_collect().await.unwrap();
    assert_eq!(listed, vec![digest.clone()]);
    assert_no_session_leftovers(&store).await;

    // Small blobs and put_bytes: the bytes under the blob key.
    let small = random_bytes(MIB);
    let small_digest = storage_traits::testsuite::blob::put(&store, &small).await;
    assert_eq!(
        store.blob_data_key(&small_digest).await.unwrap(),
        Some(store.blob_key(&small_digest))
    );
    let id = upload_id();
    let small2 = random_bytes(3 * MIB);
    let small2_digest = Digest::sha256_of(&small2);
    store.start_upload(&id).await.unwrap();
    store
        .write_upload(&id, 0, stream_of([small2.clone()]))
        .await
        .unwrap();
    store
        .finish_upload(&id, &small2_digest, small2.len() as u64)
        .await
        .unwrap();
    assert_eq!(
        store.blob_data_key(&small2_digest).await.unwrap(),
        Some(store.blob_key(&small2_digest))
    );

    for d in [&digest, &small_digest, &small2_digest] {
        store.delete(d).await.unwrap();
    }
    assert_eq!(store.data_keys().await.unwrap(), Vec::<String>::new());
    let listed: Vec<Digest> = store.list().try_collect().await.unwrap();
    assert!(listed.is_empty());
}

/// Finishing onto a blob already stored keeps that blob's data and drops the session's,
/// and `put_bytes` of it does not replace its pointer.
#[tokio::test]
async fn a_second_upload_of_a_blob_keeps_the_first_data() {
    let store = common::store();
    let data = random_bytes(9 * MIB);
    let digest = Digest::sha256_of(&data);
    for _ in 0..2 {
        let id = upload_id();
        store.start_upload(&id).await.unwrap();
        store
            .write_upload(&id, 0, stream_of([data.clone()]))
            .await
            .unwrap();
        store
            .finish_upload(&id, &digest, data.len() as u64)
            .await
            .unwrap();
    }
    let data_key = store.blob_data_key(&digest).await.unwrap().unwrap();
    store
        .put_bytes(&upload_id(), &digest, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.blob_data_key(&digest).await.unwrap(),
        Some(data_key.clone())
    );
    assert_eq!(store.data_keys().await.unwrap(), vec![data_key]);
    assert!(store.get_bytes(&digest).await.unwrap() == data);
    assert_no_session_leftovers(&store).await;
    store.delete(&digest).await.unwrap();
}

/// Two replicas write parts at the same offset: the one whose write began first stalls
/// after sending a part, the other writes and records its own, then the first sends more.
/// Part numbers are claimed, so none of the stalled writer's parts replaces a part of the
/// recorded write: the blob is exactly the winner's bytes. The first write leaves a run,
/// so the stalled write claims its numbers.
#[tokio::test]
async fn racing_writers_with_parts_never_share_a_part_number() {
    race_with_parts(6 * MIB).await;
}

/// As above, but the first write (by the stalled writer's process) is one whole part and
/// claimed numbers ahead: the stalled write sends its parts under those.
#[tokio::test]
async fn racing_writers_never_share_a_part_number_claimed_ahead() {
    race_with_parts(5 * MIB).await;
}

async fn race_with_parts(first_len: usize) {
    let cfg = common::config_on(common::server()).with_part_size(5 * MIB);
    let a = S3BlobStore::new(cfg.clone()).unwrap();
    let b = S3BlobStore::new(cfg).unwrap();
    let id = upload_id();
    a.start_upload(&id).await.unwrap();
    let first = random_bytes(first_len);
    a.write_upload(&id, 0, stream_of([first.clone()]))
        .await
        .unwrap();
    let at = first.len() as u64;

    // A: 11 MiB at once (so it sends a part), then waits, then 11 MiB more.
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let loser = random_bytes(22 * MIB);
    let (head, tail) = (
        Bytes::copy_from_slice(&loser[..11 * MIB]),
        Bytes::copy_from_slice(&loser[11 * MIB..]),
    );
    let stalled = futures::stream::iter([Ok::<_, StorageError>(head)]).chain(
        futures::stream::once(async move {
            let _ = wait.await;
            Ok(tail)
        }),
    );
    let a_write = tokio::spawn({
        let (a, id) = (a.clone(), id.clone());
        async move { a.write_upload(&id, at, Box::pin(stalled)).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let winner = random_bytes(17 * MIB + 9);
    assert_eq!(
        b.write_upload(&id, at, chunked(&winner, &[MIB]))
            .await
            .unwrap(),
        at + winner.len() as u64
    );
    go.send(()).unwrap();
    let lost = a_write.await.unwrap();
    assert!(
        matches!(lost, Err(StorageError::Conflict(_))),
        "the stalled write: {lost:?}"
    );
    let mut expected = first;
    expected.extend_from_slice(&winner);
    let digest = Digest::sha256_of(&expected);
    a.finish_upload(&id, &digest, expected.len() as u64)
        .await
        .unwrap();
    assert!(
        b.get_bytes(&digest).await.unwrap() == expected,
        "the blob holds bytes of the write that lost"
    );
    assert_no_session_leftovers(&a).await;
    a.delete(&digest).await.unwrap();
}

/// One write of more parts than one claim takes (64): the claim is extended on the way,
/// several parts are sent at once, and the blob is whole.
#[tokio::test]
async fn a_write_of_many_parts_extends_its_claim() {
    let cfg = common::config_on(common::server())
        .with_part_size(5 * MIB)
        .with_upload_concurrency(8);
    let store = S3BlobStore::new(cfg).unwrap();
    let data = random_bytes(66 * 5 * MIB + 1);
    let digest = push_in_chunks_of_a_mib(&store, &data).await;
    assert!(store.get_bytes(&digest).await.unwrap() == data);
    let res = store
        .get(
            &digest,
            Some(GetRange::Bounded(
                64 * 5 * MIB as u64 - 3..65 * 5 * MIB as u64 + 3,
            )),
        )
        .await
        .unwrap();
    assert!(collect(res.stream).await.unwrap() == data[64 * 5 * MIB - 3..65 * 5 * MIB + 3]);
    assert_no_session_leftovers(&store).await;
    store.delete(&digest).await.unwrap();
}

/// Several uploads at once on two replicas, their writes interleaved.
#[tokio::test]
async fn many_uploads_at_once() {
    let cfg = common::config_on(common::server());
    let stores = [
        S3BlobStore::new(cfg.clone()).unwrap(),
        S3BlobStore::new(cfg).unwrap(),
    ];
    let uploads = futures::future::try_join_all((0..6).map(|i| {
        let stores = stores.clone();
        async move {
            let data = random_bytes(13 * MIB + i * 1001);
            let digest = Digest::sha256_of(&data);
            let id = upload_id();
            stores[i % 2].start_upload(&id).await?;
            let mut offset = 0;
            for (j, chunk) in data.chunks(6 * MIB).enumerate() {
                offset = stores[(i + j) % 2]
                    .write_upload(&id, offset, stream_of([chunk.to_vec()]))
                    .await?;
            }
            stores[(i + 1) % 2]
                .finish_upload(&id, &digest, data.len() as u64)
                .await?;
            Ok::<_, StorageError>((digest, data))
        }
    }))
    .await
    .unwrap();
    for (digest, data) in &uploads {
        assert!(stores[0].get_bytes(digest).await.unwrap() == *data);
    }
    assert_no_session_leftovers(&stores[0]).await;
    for (digest, _) in &uploads {
        stores[1].delete(digest).await.unwrap();
    }
    assert_eq!(stores[0].data_keys().await.unwrap(), Vec::<String>::new());
}

/// A session a version-1 store wrote (its bytes in segment objects, a big one and a run
/// of small ones) is continued by this store: read back, appended to, finished.
#[tokio::test]
async fn a_session_written_by_version_1_is_continued() {
    use rusty_s3::S3Action;
    let server = common::server();
    let store = common::store();
    let bucket = rusty_s3::Bucket::new(
        server.endpoint.parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        server.bucket.clone(),
        server.region.clone(),
    )
    .unwrap();
    let creds = rusty_s3::Credentials::new(&server.access_key, &server.secret_key);
    let http = reqwest::Client::new();
    let put = |key: String, body: Vec<u8>| {
        let url = rusty_s3::actions::PutObject::new(&bucket, Some(&creds), &key)
            .sign(Duration::from_secs(60));
        let http = http.clone();
        async move {
            let status = http.put(url).body(body).send().await.unwrap().status();
            assert!(status.is_success(), "{status}");
        }
    };
    let id = upload_id();
    let dir = format!("{}_uploads/{id}/", store.prefix());
    let (big, small) = (random_bytes(6 * MIB), random_bytes(1000));
    let (seg_big, seg_small) = (
        format!("seg-{}", uuid::Uuid::new_v4().simple()),
        format!("seg-{}", uuid::Uuid::new_v4().simple()),
    );
    put(format!("{dir}{seg_big}"), big.clone()).await;
    put(format!("{dir}{seg_small}"), small.clone()).await;
    let state = serde_json::json!({
        "version": 1,
        "segments": [
            { "name": seg_big, "len": big.len() },
            { "name": seg_small, "len": small.len() },
        ],
    });
    put(format!("{dir}state.json"), state.to_string().into_bytes()).await;

    let mut expected = big;
    expected.extend_from_slice(&small);
    assert!(
        collect(store.read_upload(&id).await.unwrap())
            .await
            .unwrap()
            == expected
    );
    let more = random_bytes(7 * MIB);
    assert_eq!(
        store
            .write_upload(&id, expected.len() as u64, stream_of([more.clone()]))
            .await
            .unwrap(),
        (expected.len() + more.len()) as u64
    );
    expected.extend_from_slice(&more);
    let digest = Digest::sha256_of(&expected);
    store
        .finish_upload(&id, &digest, expected.len() as u64)
        .await
        .unwrap();
    assert!(store.get_bytes(&digest).await.unwrap() == expected);
    assert_no_session_leftovers(&store).await;
    store.delete(&digest).await.unwrap();
    assert_eq!(store.data_keys().await.unwrap(), Vec::<String>::new());
}

/// A state object that is not valid JSON, names keys outside its session, or has parts
/// out of order: every use of the session is a clear error, and abort removes it.
#[tokio::test]
async fn corrupt_session_states_are_errors_not_panics() {
    use rusty_s3::S3Action;
    let server = common::server();
    let store = common::store();
    let bucket = rusty_s3::Bucket::new(
        server.endpoint.parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        server.bucket.clone(),
        server.region.clone(),
    )
    .unwrap();
    let creds = rusty_s3::Credentials::new(&server.access_key, &server.secret_key);
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    for state in [
        "not json".to_string(),
        r#"{"version": 9}"#.to_string(),
        format!(r#"{{"version":2,"nonce":"{nonce}","next_part":1,"run":[{{"name":"../../blobs/x","len":1}}]}}"#),
        format!(r#"{{"version":2,"nonce":"{nonce}","next_part":4294967295}}"#),
        format!(r#"{{"version":2,"nonce":"{nonce}","next_part":1,"run":[{{"name":"seg-a","len":18446744073709551615}}]}}"#),
        format!(r#"{{"version":2,"nonce":"{nonce}","next_part":5,"upload_id":"u","parts":[{{"number":3,"etag":"x","len":6000000}},{{"number":2,"etag":"y","len":6000000}}]}}"#),
        r#"{"version":1,"segments":[{"name":"seg-a","len":5}],"multipart":{"key":"elsewhere","upload_id":"u"}}"#.to_string(),
    ] {
        let id = upload_id();
        let key = format!("{}_uploads/{id}/state.json", store.prefix());
        let url = rusty_s3::actions::PutObject::new(&bucket, Some(&creds), &key)
            .sign(Duration::from_secs(60));
        reqwest::Client::new()
            .put(url)
            .body(state.clone())
            .send()
            .await
            .unwrap();
        let corrupt = |what: &str, r: Result<(), StorageError>| match r {
            Err(StorageError::Backend { .. }) => {}
            other => panic!("{what} of state {state}: {other:?}"),
        };
        corrupt(
            "write",
            store
                .write_upload(&id, 0, stream_of([b"x".to_vec()]))
                .await
                .map(drop),
        );
        corrupt("read", store.read_upload(&id).await.map(drop));
        corrupt(
            "finish",
            store
                .finish_upload(&id, &Digest::sha256_of(b"x"), 1)
                .await,
        );
        store.abort_upload(&id).await.unwrap();
        assert!(matches!(
            store.read_upload(&id).await.map(drop),
            Err(StorageError::UploadNotFound(_))
        ));
    }
    assert_no_session_leftovers(&store).await;
}

/// A replica remembers where the bytes of blobs it read live; when another replica deletes
/// a blob, or deletes and uploads it again (new data key), the first replica's reads say
/// `NotFound` or find the new bytes, never fail otherwise.
#[tokio::test]
async fn reads_follow_a_blob_deleted_and_uploaded_again_elsewhere() {
    let cfg = common::config_on(common::server());
    let (a, b) = (
        S3BlobStore::new(cfg.clone()).unwrap(),
        S3BlobStore::new(cfg).unwrap(),
    );
    let data = random_bytes(6 * MIB + 1);
    let digest = Digest::sha256_of(&data);
    let upload = |store: S3BlobStore, data: Vec<u8>, digest: Digest| async move {
        let id = upload_id();
        store.start_upload(&id).await.unwrap();
        store
            .write_upload(&id, 0, stream_of([data.clone()]))
            .await
            .unwrap();
        store
            .finish_upload(&id, &digest, data.len() as u64)
            .await
            .unwrap();
        store.blob_data_key(&digest).await.unwrap().unwrap()
    };
    let first = upload(a.clone(), data.clone(), digest.clone()).await;
    assert!(b.get_bytes(&digest).await.unwrap() == data);
    let ranged = |store: S3BlobStore| {
        let digest = digest.clone();
        async move {
            store
                .get(
                    &digest,
                    Some(GetRange::Bounded(MIB as u64..MIB as u64 + 10)),
                )
                .await
        }
    };
    assert!(ranged(b.clone()).await.is_ok());

    a.delete(&digest).await.unwrap();
    assert!(matches!(
        b.get(&digest, None).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        ranged(b.clone()).await,
        Err(StorageError::NotFound(_))
    ));

    assert!(b.get_bytes(&digest).await.is_err());
    let second = upload(a.clone(), data.clone(), digest.clone()).await;
    assert_ne!(first, second, "a new upload has its own data key");
    assert!(b.get_bytes(&digest).await.unwrap() == data);
    let got = ranged(b.clone()).await.unwrap();
    assert!(collect(got.stream).await.unwrap() == data[MIB..MIB + 10]);
    // Deleted and uploaded again while b still remembers the second key.
    a.delete(&digest).await.unwrap();
    upload(a.clone(), data.clone(), digest.clone()).await;
    assert!(b.get_bytes(&digest).await.unwrap() == data);
    a.delete(&digest).await.unwrap();
    assert_no_session_leftovers(&a).await;
    assert_eq!(a.data_keys().await.unwrap(), Vec::<String>::new());
}

/// Writes of many sizes around the part size, one after the other: part-sized ones (sent
/// from their first byte once the session is in parts), short ones (segments), longer ones
/// (a part and a segment), ends inside a part that is already on its way.
#[tokio::test]
async fn writes_of_every_size_around_the_part_size() {
    let store = common::store();
    let sizes = [
        8 * MIB,
        8 * MIB,
        MIB,
        12 * MIB,
        8 * MIB,
        6 * MIB + 1,
        8 * MIB,
        3 * MIB,
        2 * MIB,
        8 * MIB,
        100,
    ];
    let data = random_bytes(sizes.iter().sum());
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    let mut offset = 0;
    for (i, size) in sizes.iter().enumerate() {
        let chunk = &data[offset..offset + size];
        let len = store
            .write_upload(&id, offset as u64, chunked(chunk, &[128 * 1024 + 7]))
            .await
            .unwrap();
        offset += size;
        assert_eq!(len, offset as u64, "write {i}");
    }
    assert!(
        collect(store.read_upload(&id).await.unwrap())
            .await
            .unwrap()
            == data
    );
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert!(store.get_bytes(&digest).await.unwrap() == data);
    assert_no_session_leftovers(&store).await;
    store.delete(&digest).await.unwrap();
    assert_eq!(store.data_keys().await.unwrap(), Vec::<String>::new());
}
