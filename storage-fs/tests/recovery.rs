//! The shared `RecoveryLog` suite, plus where the records land on disk.

use bytes::Bytes;
use storage_fs::FsBlobStore;
use storage_traits::BlobStore;
use tempfile::TempDir;

fn open() -> (FsBlobStore, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path()).expect("open");
    (store, dir)
}

storage_traits::recovery_log_tests!(open());

#[tokio::test]
async fn records_are_files_under_recovery_and_staging_is_left_empty() {
    let (store, dir) = open();
    let log = store.recovery().expect("fs keeps records");
    let path = "repositories/a/b/_manifests/tags/v1/current/link";
    log.put_record(path, Bytes::from_static(b"sha256:00"))
        .await
        .expect("put");
    let file = dir.path().join("recovery").join(path);
    assert_eq!(std::fs::read(&file).expect("read"), b"sha256:00");
    let staging = dir.path().join("recovery/~staging");
    assert_eq!(std::fs::read_dir(&staging).expect("staging").count(), 0);
    log.delete_record(path).await.expect("delete");
    assert!(!dir.path().join("recovery/repositories").exists());
    assert!(staging.is_dir());
}

#[tokio::test]
async fn open_clears_staging_left_by_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let staging = dir.path().join("recovery/~staging");
    std::fs::create_dir_all(&staging).expect("mkdir");
    std::fs::write(staging.join("123-4"), b"half").expect("write");
    let store = FsBlobStore::open(dir.path()).expect("open");
    assert_eq!(std::fs::read_dir(&staging).expect("staging").count(), 0);
    let log = store.recovery().expect("fs keeps records");
    assert!(log.list_records("").await.expect("list").is_empty());
}
