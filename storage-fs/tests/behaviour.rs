//! The shared `BlobStore` behaviour suite, plus what only a file system can show.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use oci_spec_types::Digest;
use storage_fs::FsBlobStore;
use storage_traits::testsuite::blob::{chunked, put, random_bytes, upload_id};
use storage_traits::{BlobStore, BlobStoreExt};
use tempfile::TempDir;

fn open() -> (FsBlobStore, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path()).expect("open");
    (store, dir)
}

storage_traits::blob_store_tests!(open());

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn finished_blob_is_at_its_path_and_staging_is_gone() {
    let (store, dir) = open();
    let data = random_bytes(70_000);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    assert!(dir.path().join("uploads").join(&id).is_file());
    store
        .write_upload(&id, 0, chunked(&data, &[4_096]))
        .await
        .unwrap();
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();

    let hex = digest.hex();
    let expected = dir.path().join("blobs/sha256").join(&hex[..2]).join(hex);
    assert_eq!(store.blob_path(&digest), expected);
    assert_eq!(std::fs::read(&expected).unwrap(), data);
    assert_eq!(
        files_under(&dir.path().join("uploads")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(files_under(&dir.path().join("blobs")), vec![expected]);

    // sha512 blobs have their own directory.
    let digest = Digest::sha512_of(&data);
    store
        .put_bytes(&upload_id(), &digest, Bytes::from(data.clone()))
        .await
        .unwrap();
    let hex = digest.hex();
    let expected = dir.path().join("blobs/sha512").join(&hex[..2]).join(hex);
    assert_eq!(std::fs::read(&expected).unwrap(), data);
}

#[tokio::test]
async fn no_staging_files_remain() {
    let (store, dir) = open();
    let data = random_bytes(1_000);
    let digest = Digest::sha256_of(&data);

    // Finish onto an existing blob.
    store
        .put_bytes(&upload_id(), &digest, Bytes::from(data.clone()))
        .await
        .unwrap();
    store
        .put_bytes(&upload_id(), &digest, Bytes::from(data.clone()))
        .await
        .unwrap();
    // Abort, after writes and without any.
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    store
        .write_upload(&id, 0, chunked(&data, &[10]))
        .await
        .unwrap();
    store.abort_upload(&id).await.unwrap();
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    store.abort_upload(&id).await.unwrap();

    assert_eq!(
        files_under(&dir.path().join("uploads")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_under(&dir.path().join("blobs")),
        vec![store.blob_path(&digest)]
    );
}

#[tokio::test]
async fn list_skips_foreign_files() {
    let (store, dir) = open();
    let digest = Digest::sha256_of(b"x");
    store
        .put_bytes(&upload_id(), &digest, Bytes::from_static(b"x"))
        .await
        .unwrap();
    let fan_out = store.blob_path(&digest).parent().unwrap().to_path_buf();
    std::fs::write(fan_out.join("not-a-digest"), b"").unwrap();
    std::fs::write(dir.path().join("blobs/sha256/README"), b"").unwrap();
    // A valid digest filed under the wrong fan-out directory is not gettable, so not listed.
    let other = Digest::sha256_of(b"y");
    let wrong = dir.path().join("blobs/sha256/zz");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::write(wrong.join(other.hex()), b"y").unwrap();

    use futures::TryStreamExt;
    let listed: Vec<Digest> = store.list().try_collect().await.unwrap();
    assert_eq!(listed, vec![digest]);
}

#[tokio::test]
async fn reopen_keeps_blobs_and_sessions() {
    let (store, dir) = open();
    let data = random_bytes(500);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    store
        .write_upload(&id, 0, chunked(&data[..200], &[64]))
        .await
        .unwrap();
    drop(store);

    let store = FsBlobStore::open(dir.path()).unwrap();
    store
        .write_upload(&id, 200, chunked(&data[200..], &[64]))
        .await
        .unwrap();
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    drop(store);

    let store = FsBlobStore::open(dir.path()).unwrap();
    assert_eq!(store.get_bytes(&digest).await.unwrap(), data);
}

#[tokio::test]
async fn missing_algorithm_directory_is_recreated() {
    let (store, dir) = open();
    std::fs::remove_dir_all(dir.path().join("blobs/sha512")).unwrap();
    let digest = Digest::sha512_of(b"z");
    store
        .put_bytes(&upload_id(), &digest, Bytes::from_static(b"z"))
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes(&digest).await.unwrap(),
        Bytes::from_static(b"z")
    );
    use futures::TryStreamExt;
    let listed: Vec<Digest> = store.list().try_collect().await.unwrap();
    assert_eq!(listed, vec![digest]);
}

/// A body larger than the early-sync interval (8 MiB), in chunks smaller and larger than
/// the write buffer (some that make it grow in uneven steps), and a second write that resumes past an early sync: every byte lands
/// where it belongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_with_early_syncs_keep_every_byte() {
    let (store, _dir) = open();
    let data = random_bytes(21 * 1024 * 1024 + 123);
    let digest = Digest::sha256_of(&data);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    let first = 17 * 1024 * 1024 + 7;
    let len = store
        .write_upload(
            &id,
            0,
            chunked(
                &data[..first],
                &[65_536, 1_048_576, 3_000, 100_000, 28_000, 131_071],
            ),
        )
        .await
        .unwrap();
    assert_eq!(len, first as u64);
    let len = store
        .write_upload(&id, len, chunked(&data[first..], &[300_000]))
        .await
        .unwrap();
    assert_eq!(len, data.len() as u64);
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), data);
}

/// With the store's folder gone (a volume unmounted under the registry), a missing blob is
/// an outage, not "unknown": `stat` and `get` fail instead of answering not found.
#[tokio::test]
async fn a_removed_folder_is_an_error_not_a_missing_blob() {
    let (store, dir) = open();
    let digest = Digest::sha256_of(b"never stored");
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    std::fs::remove_dir_all(dir.path().join("blobs")).unwrap();
    assert!(matches!(
        store.stat(&digest).await,
        Err(storage_traits::StorageError::Backend { .. })
    ));
    assert!(matches!(
        store.get(&digest, None).await,
        Err(storage_traits::StorageError::Backend { .. })
    ));
}

/// A body that fails after several blocks (one usually still being written when the error
/// comes) returns the input error, and a write dropped mid-body (the client hung up) leaves
/// the session to the retry at offset 0: only the retry's bytes are in the blob. Whether a
/// block still in flight at the drop waits for the lock is not forced here (the blocks are
/// written before the drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_dropped_body_leaves_the_session_to_the_retry() {
    use futures::StreamExt;
    use storage_traits::StorageError;

    let (store, _dir) = open();
    let data = random_bytes(4 * 1024 * 1024);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    let blocks = |byte: u8, n: usize| {
        futures::stream::iter((0..n).map(move |_| Ok(Bytes::from(vec![byte; 256 * 1024]))))
    };

    let failing = blocks(1, 8)
        .chain(futures::stream::once(async {
            Err(StorageError::Input("client went away".into()))
        }))
        .boxed();
    let result = store.write_upload(&id, 0, failing).await;
    assert!(matches!(result, Err(StorageError::Input(_))), "{result:?}");

    // Bytes that must not show: the body stops arriving, and the request is dropped.
    let stalled = blocks(2, 16).chain(futures::stream::pending()).boxed();
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        store.write_upload(&id, 0, stalled),
    )
    .await;
    assert!(dropped.is_err(), "the stalled body cannot finish");

    let len = store
        .write_upload(&id, 0, chunked(&data, &[100_000, 300_000]))
        .await
        .unwrap();
    assert_eq!(len, data.len() as u64);
    let digest = Digest::sha256_of(&data);
    store
        .finish_upload(&id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), data);
}

/// Reading a blob leaves its access time alone (it is opened with `O_NOATIME` on Linux), so
/// a download never writes the inode. Without the flag, `relatime` would update an access
/// time older than the modification time on the first read.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_download_does_not_touch_the_access_time() {
    use std::time::{Duration, SystemTime};

    let (store, _dir) = open();
    let data = random_bytes(300_000);
    let digest = put(&store, &data).await;
    let path = store.blob_path(&digest);
    let long_ago = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(long_ago))
        .unwrap();
    let before = std::fs::metadata(&path).unwrap().accessed().unwrap();
    assert_eq!(before, long_ago);

    assert_eq!(store.get_bytes(&digest).await.unwrap(), data);
    let after = std::fs::metadata(&path).unwrap().accessed().unwrap();
    assert_eq!(after, before);
}
