//! What only an S3 store can show, against a real SeaweedFS: multipart commits of many
//! chunks, writes at offsets inside stored segments, sessions moving between replicas,
//! presigned downloads, list pagination, and that abort and finish leave nothing behind.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
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
