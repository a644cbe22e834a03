#![allow(clippy::unwrap_used)]
//! The store stopped at each step of an upload's finish, a write and a delete, against a
//! real SeaweedFS: a proxy between the store and SeaweedFS drops the connection when a
//! chosen request arrives, so the operation ends right there, as if the process had been
//! killed, and the bucket holds exactly what the steps before it stored. Then a store
//! straight on SeaweedFS (the restarted process, or another replica) takes over.
//!
//! Each case checks what must hold at that point: no partial blob is ever visible, bytes
//! acknowledged stay, the session can be finished or aborted, and afterwards nothing is
//! left (no session object, no multipart upload, no data object without its blob).

mod common;

use futures::TryStreamExt;
use oci_spec_types::Digest;
use storage_s3::S3BlobStore;
use storage_traits::testsuite::blob::{chunked, collect, random_bytes, stream_of, upload_id};
use storage_traits::{BlobStore, BlobStoreExt, StorageError};

use common::relay::{Cutter, Head, Rule, direct, part_upload, prefix, request, through};

const MIB: usize = 1024 * 1024;

fn complete() -> Rule {
    Box::new(|h: &Head| h.method == "POST" && h.target.contains("uploadId="))
}

fn pointer_put() -> Rule {
    Box::new(|h: &Head| h.method == "PUT" && h.header("x-amz-meta-registry-data").is_some())
}

/// A session of `len` random bytes, written in writes of `write` bytes through `store`.
async fn session(store: &S3BlobStore, len: usize, write: usize) -> (String, Vec<u8>, Digest) {
    let data = random_bytes(len);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    let mut offset = 0;
    for w in data.chunks(write) {
        store
            .write_upload(&id, offset as u64, chunked(w, &[MIB / 2]))
            .await
            .unwrap();
        offset += w.len();
    }
    let digest = Digest::sha256_of(&data);
    (id, data, digest)
}

/// The blob is not visible anywhere: stat, get, list.
async fn assert_invisible(store: &S3BlobStore, digest: &Digest) {
    assert_eq!(store.stat(digest).await.unwrap(), None, "a partial blob");
    assert!(matches!(
        store.get(digest, None).await,
        Err(StorageError::NotFound(_))
    ));
    let listed: Vec<Digest> = store.list().try_collect().await.unwrap();
    assert!(!listed.contains(digest), "listed before it was complete");
}

async fn assert_blob(store: &S3BlobStore, digest: &Digest, data: &[u8]) {
    assert_eq!(
        store.stat(digest).await.unwrap().map(|i| i.size),
        Some(data.len() as u64)
    );
    assert!(
        store.get_bytes(digest).await.unwrap() == data,
        "blob differs"
    );
}

/// Nothing of any session is left, and every data object belongs to a blob.
async fn assert_clean(store: &S3BlobStore) {
    assert_eq!(store.upload_keys().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.incomplete_multipart_uploads().await.unwrap(),
        Vec::<(String, String)>::new()
    );
    let digests: Vec<Digest> = store.list().try_collect().await.unwrap();
    let mut owned = Vec::new();
    for d in &digests {
        owned.push(store.blob_data_key(d).await.unwrap().unwrap());
    }
    for key in store.data_keys().await.unwrap() {
        assert!(owned.contains(&key), "data object {key} belongs to no blob");
    }
}

#[tokio::test]
async fn killed_before_complete_then_finished_by_another_process() {
    let cutter = Cutter::start(1, complete()).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let (id, data, digest) = session(&crashing, 12 * MIB + 7, 6 * MIB).await;
    let result = crashing
        .finish_upload(&id, &digest, data.len() as u64)
        .await;
    assert!(result.is_err() && cutter.cut(), "{result:?}");
    assert_invisible(&restarted, &digest).await;
    // The session carries on: its bytes are all there, and it finishes.
    assert!(
        collect(restarted.read_upload(&id).await.unwrap())
            .await
            .unwrap()
            == data
    );
    restarted
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_blob(&restarted, &digest, &data).await;
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn killed_between_complete_and_pointer() {
    let cutter = Cutter::start(1, pointer_put()).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let (id, data, digest) = session(&crashing, 11 * MIB, 11 * MIB).await;
    let result = crashing
        .finish_upload(&id, &digest, data.len() as u64)
        .await;
    assert!(result.is_err() && cutter.cut(), "{result:?}");
    // The data object is complete, but no key names it as the blob.
    assert_eq!(restarted.data_keys().await.unwrap().len(), 1);
    assert_invisible(&restarted, &digest).await;
    // The retry finds the upload completed and publishes it.
    restarted
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_blob(&restarted, &digest, &data).await;
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn killed_between_complete_and_pointer_then_aborted() {
    let cutter = Cutter::start(1, pointer_put()).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let (id, data, digest) = session(&crashing, 7 * MIB, 3 * MIB).await;
    assert!(
        crashing
            .finish_upload(&id, &digest, data.len() as u64)
            .await
            .is_err()
    );
    // The reaper aborts the expired session: the completed data goes with it.
    restarted.abort_upload(&id).await.unwrap();
    assert_invisible(&restarted, &digest).await;
    assert_eq!(restarted.data_keys().await.unwrap(), Vec::<String>::new());
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn killed_after_the_pointer_keeps_the_blob_through_an_abort() {
    let cutter = Cutter::start(1, request("DELETE", "/state.json")).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let (id, data, digest) = session(&crashing, 9 * MIB, 9 * MIB).await;
    let result = crashing
        .finish_upload(&id, &digest, data.len() as u64)
        .await;
    assert!(result.is_err() && cutter.cut(), "{result:?}");
    // Published: complete and visible.
    assert_blob(&restarted, &digest, &data).await;
    // The registry saw an error and discards the session: the blob it published stays.
    restarted.abort_upload(&id).await.unwrap();
    assert_blob(&restarted, &digest, &data).await;
    assert_clean(&restarted).await;
    restarted.delete(&digest).await.unwrap();
    assert_eq!(restarted.data_keys().await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn killed_mid_write_keeps_acknowledged_bytes() {
    // The second part of the second write (the first write sends two).
    let cutter = Cutter::start(4, part_upload()).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let data = random_bytes(30 * MIB + 3);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    crashing.start_upload(&id).await.unwrap();
    let acked = 11 * MIB;
    crashing
        .write_upload(&id, 0, stream_of([data[..acked].to_vec()]))
        .await
        .unwrap();
    let result = crashing
        .write_upload(&id, acked as u64, chunked(&data[acked..], &[MIB]))
        .await;
    assert!(result.is_err() && cutter.cut(), "{result:?}");
    // Parts the failed write sent are in the multipart upload, recorded nowhere.
    assert!(
        collect(restarted.read_upload(&id).await.unwrap())
            .await
            .unwrap()
            == data[..acked]
    );
    assert_eq!(
        restarted
            .write_upload(&id, acked as u64, chunked(&data[acked..], &[3 * MIB]))
            .await
            .unwrap(),
        data.len() as u64
    );
    restarted
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_blob(&restarted, &digest, &data).await;
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn killed_before_the_write_is_recorded() {
    // state.json PUTs: start (If-None-Match), the first write's claim and record, the
    // second write's claim, then its record: the fifth. The first write leaves a run.
    // read_upload completes the upload; the retry copies it into a new one and goes on.
    killed_before_the_second_write_is_recorded(5, 8 * MIB, true).await;
}

/// Killed before recording a write that used numbers the write before claimed for it:
/// another process continues from the recorded state, claims numbers of its own, and the
/// parts the killed write sent are not in the blob.
#[tokio::test]
async fn killed_before_a_write_under_a_claim_made_ahead_is_recorded() {
    // state.json PUTs: start, the first write's claim, its record (claiming ahead: the
    // write was whole parts), then the second write's record: the fourth.
    killed_before_the_second_write_is_recorded(4, 10 * MIB, false).await;
}

/// A session's second write is killed at the `nth` `PUT` of its state (its record): none
/// of its parts counts. Another process (reading the session back first, with
/// `read_back`) writes the rest and finishes: the blob holds only acknowledged bytes.
async fn killed_before_the_second_write_is_recorded(nth: usize, first: usize, read_back: bool) {
    let cutter = Cutter::start(nth, request("PUT", "/state.json")).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let data = random_bytes(20 * MIB);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    crashing.start_upload(&id).await.unwrap();
    crashing
        .write_upload(&id, 0, chunked(&data[..first], &[MIB]))
        .await
        .unwrap();
    let lost = random_bytes(data.len() - first);
    let result = crashing
        .write_upload(&id, first as u64, chunked(&lost, &[MIB]))
        .await;
    assert!(result.is_err() && cutter.cut(), "{result:?}");
    if read_back {
        assert!(
            collect(restarted.read_upload(&id).await.unwrap())
                .await
                .unwrap()
                == data[..first]
        );
    }
    assert_eq!(
        restarted
            .write_upload(&id, first as u64, chunked(&data[first..], &[MIB]))
            .await
            .unwrap(),
        data.len() as u64
    );
    restarted
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_blob(&restarted, &digest, &data).await;
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn killed_mid_delete_then_deleted_again_or_pushed_again() {
    // The blob key's DELETE, after its data's.
    let cutter = Cutter::start(
        1,
        Box::new(|h: &Head| h.method == "DELETE" && h.target.contains("/blobs/sha256/")),
    )
    .await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let (id, data, digest) = session(&restarted, 6 * MIB, 6 * MIB).await;
    restarted
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    let result = crashing.delete(&digest).await;
    assert!(result.is_err() && cutter.cut(), "{result:?}");
    // A pointer to nothing: no bytes to serve.
    assert!(matches!(
        restarted.get(&digest, None).await,
        Err(StorageError::NotFound(_))
    ));
    // Pushed again before the delete is retried: the new bytes replace the old pointer.
    let id = upload_id();
    restarted.start_upload(&id).await.unwrap();
    restarted
        .write_upload(&id, 0, stream_of([data.clone()]))
        .await
        .unwrap();
    restarted
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_blob(&restarted, &digest, &data).await;
    assert_clean(&restarted).await;
    // And the retried delete of a half-deleted blob completes.
    let cutter = Cutter::start(
        1,
        Box::new(|h: &Head| h.method == "DELETE" && h.target.contains("/blobs/sha256/")),
    )
    .await;
    assert!(through(&cutter, &p).delete(&digest).await.is_err());
    restarted.delete(&digest).await.unwrap();
    assert_eq!(restarted.stat(&digest).await.unwrap(), None);
    assert_eq!(restarted.data_keys().await.unwrap(), Vec::<String>::new());
    assert_clean(&restarted).await;
}

/// Not a crash: one part's request fails while its bytes are still arriving. The part is
/// sent again from the bytes the write kept, and the write succeeds.
#[tokio::test]
async fn a_part_whose_request_fails_is_sent_again() {
    let cutter = Cutter::once(2, part_upload()).await;
    let p = prefix();
    let (store, check) = (through(&cutter, &p), direct(&p));
    let data = random_bytes(23 * MIB + 1);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    assert_eq!(
        store
            .write_upload(&id, 0, chunked(&data, &[256 * 1024]))
            .await
            .unwrap(),
        data.len() as u64
    );
    assert!(cutter.cut());
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_blob(&check, &digest, &data).await;
    assert_clean(&check).await;
}

/// Killed after creating the session's multipart upload and before recording it: the
/// retry makes its own, and finishing aborts the one nobody recorded.
#[tokio::test]
async fn killed_before_the_first_upload_is_recorded() {
    let cutter = Cutter::start(1, part_upload()).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let data = random_bytes(17 * MIB);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    crashing.start_upload(&id).await.unwrap();
    let result = crashing
        .write_upload(&id, 0, stream_of([data.clone()]))
        .await;
    assert!(result.is_err() && cutter.cut(), "{result:?}");
    assert_eq!(
        restarted
            .incomplete_multipart_uploads()
            .await
            .unwrap()
            .len(),
        1,
        "the upload the killed write created"
    );
    assert!(
        collect(restarted.read_upload(&id).await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    restarted
        .write_upload(&id, 0, chunked(&data, &[MIB]))
        .await
        .unwrap();
    restarted
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_blob(&restarted, &digest, &data).await;
    assert_clean(&restarted).await;
}

// Staged blobs (`stage_blob`, a monolithic push of known digest): one PUT of the data,
// then the pointer.

fn staged_put() -> Rule {
    Box::new(|h: &Head| h.method == "PUT" && h.header("x-amz-meta-registry-digest").is_some())
}

async fn stage_through<'a>(
    store: &'a S3BlobStore,
    id: &'a str,
    digest: &'a Digest,
    data: &[u8],
) -> Result<Box<dyn storage_traits::StagedBlob + 'a>, StorageError> {
    let blob =
        storage_traits::StageBlob::new(id, digest, data.len() as u64, chunked(data, &[MIB / 2]));
    store.stage_blob(blob).await
}

#[tokio::test]
async fn staged_killed_during_the_data_put_leaves_nothing() {
    let cutter = Cutter::start(1, staged_put()).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let data = random_bytes(6 * MIB + 3);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    let result = stage_through(&crashing, &id, &digest, &data).await;
    assert!(result.is_err() && cutter.cut());
    assert_invisible(&restarted, &digest).await;
    restarted.abort_upload(&id).await.unwrap();
    assert_eq!(restarted.data_keys().await.unwrap(), Vec::<String>::new());
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn staged_killed_before_the_pointer_then_aborted() {
    let cutter = Cutter::start(1, pointer_put()).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let data = random_bytes(6 * MIB + 3);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    let staged = stage_through(&crashing, &id, &digest, &data).await.unwrap();
    assert!(staged.publish().await.is_err() && cutter.cut());
    // The data is stored, no key names it as the blob, and no session records it.
    assert_eq!(restarted.data_keys().await.unwrap().len(), 1);
    assert_invisible(&restarted, &digest).await;
    // The registry's expiry of the upload id aborts it: the data goes.
    restarted.abort_upload(&id).await.unwrap();
    assert_eq!(restarted.data_keys().await.unwrap(), Vec::<String>::new());
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn staged_and_published_keeps_the_blob_through_an_abort() {
    let p = prefix();
    let store = direct(&p);
    let data = random_bytes(6 * MIB + 3);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    let staged = stage_through(&store, &id, &digest, &data).await.unwrap();
    staged.publish().await.unwrap();
    // No session objects: the upload id never had a state.json.
    assert_eq!(store.upload_keys().await.unwrap(), Vec::<String>::new());
    store.abort_upload(&id).await.unwrap();
    assert_blob(&store, &digest, &data).await;
    assert_clean(&store).await;
    // Staged again (a second push of the same blob): the blob is kept, the copy deleted.
    let again = upload_id();
    let staged = stage_through(&store, &again, &digest, &data).await.unwrap();
    staged.publish().await.unwrap();
    assert_eq!(store.data_keys().await.unwrap().len(), 1);
    assert_blob(&store, &digest, &data).await;
    store.delete(&digest).await.unwrap();
    assert_eq!(store.data_keys().await.unwrap(), Vec::<String>::new());
}

// Staged into an open, empty session (a `PUT` of the whole blob after its `POST`): the
// session closed for the digest, one PUT of the data to the session's data key, the
// pointer, then the session removed.

/// The data `PUT` of a blob staged into a session: to a data key, not a part.
fn session_data_put() -> Rule {
    Box::new(|h: &Head| {
        h.method == "PUT" && h.target.contains("/data/") && !h.target.contains("partNumber=")
    })
}

async fn stage_into_session<'a>(
    store: &'a S3BlobStore,
    id: &'a str,
    digest: &'a Digest,
    data: &[u8],
) -> Result<Box<dyn storage_traits::StagedBlob + 'a>, StorageError> {
    let blob =
        storage_traits::StageBlob::new(id, digest, data.len() as u64, chunked(data, &[MIB / 2]))
            .with_open_session();
    store.stage_blob(blob).await
}

#[tokio::test]
async fn staged_in_session_killed_before_the_pointer_then_aborted() {
    let cutter = Cutter::start(1, pointer_put()).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let data = random_bytes(6 * MIB + 3);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    crashing.start_upload(&id).await.unwrap();
    let staged = stage_into_session(&crashing, &id, &digest, &data)
        .await
        .unwrap();
    assert!(staged.publish().await.is_err() && cutter.cut());
    assert_eq!(restarted.data_keys().await.unwrap().len(), 1);
    assert_invisible(&restarted, &digest).await;
    // Closed for the digest: a write is refused.
    let write = restarted
        .write_upload(&id, 0, stream_of([data.clone()]))
        .await;
    assert!(matches!(write, Err(StorageError::Conflict(_))), "{write:?}");
    restarted.abort_upload(&id).await.unwrap();
    assert_eq!(restarted.data_keys().await.unwrap(), Vec::<String>::new());
    assert_invisible(&restarted, &digest).await;
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn staged_in_session_killed_after_the_pointer_keeps_the_blob_through_an_abort() {
    let cutter = Cutter::start(1, request("DELETE", "/state.json")).await;
    let p = prefix();
    let (crashing, restarted) = (through(&cutter, &p), direct(&p));
    let data = random_bytes(6 * MIB + 3);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    crashing.start_upload(&id).await.unwrap();
    let staged = stage_into_session(&crashing, &id, &digest, &data)
        .await
        .unwrap();
    assert!(staged.publish().await.is_err() && cutter.cut());
    assert_blob(&restarted, &digest, &data).await;
    restarted.abort_upload(&id).await.unwrap();
    assert_blob(&restarted, &digest, &data).await;
    assert_clean(&restarted).await;
}

#[tokio::test]
async fn staged_in_session_whose_data_put_fails_leaves_the_session_open() {
    let cutter = Cutter::once(1, session_data_put()).await;
    let p = prefix();
    let store = through(&cutter, &p);
    let data = random_bytes(6 * MIB + 3);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    assert!(
        stage_into_session(&store, &id, &digest, &data)
            .await
            .is_err()
            && cutter.cut()
    );
    assert_invisible(&store, &digest).await;
    // Open and empty again: the client sends the blob once more.
    let staged = stage_into_session(&store, &id, &digest, &data)
        .await
        .unwrap();
    staged.publish().await.unwrap();
    assert_blob(&store, &digest, &data).await;
    assert_clean(&store).await;
}
