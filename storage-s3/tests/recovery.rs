//! The shared `RecoveryLog` suite against a real SeaweedFS, each case under its own random
//! prefix of one server, plus where the records land in the bucket.

mod common;

use bytes::Bytes;
use storage_traits::BlobStore;

storage_traits::recovery_log_tests!(common::store());

#[tokio::test]
async fn records_are_objects_under_recovery() {
    let store = common::store();
    let log = store.recovery().expect("s3 keeps records");
    let path = "repositories/a/b/_manifests/tags/v1/current/link";
    log.put_record(path, Bytes::from_static(b"sha256:00"))
        .await
        .expect("put");
    // A reader of the bucket's raw keys sees the record where the docs say it is.
    let reader = storage_s3::S3BucketReader::new(
        common::config_on(common::server()).with_prefix(store.prefix()),
    )
    .expect("reader");
    assert_eq!(
        reader
            .read(&format!("recovery/{path}"))
            .await
            .expect("read"),
        Some(Bytes::from_static(b"sha256:00"))
    );
    assert_eq!(
        store.upload_keys().await.expect("uploads"),
        Vec::<String>::new()
    );
    log.delete_record(path).await.expect("delete");
    assert!(log.list_records("").await.expect("list").is_empty());
}
