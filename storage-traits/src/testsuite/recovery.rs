//! Behaviour cases for [`RecoveryLog`] implementations, reached through
//! [`BlobStore::recovery`].
//!
//! Every case is a `pub async fn case(store: &dyn BlobStore)` asserting one part of the
//! contract under `# Behavior` on [`RecoveryLog`]. Each works below its own random top
//! folder and deletes what it wrote, so cases can share one store and run in parallel.
//!
//! In a backend crate, next to the blob suite (the expression is the same as for
//! [`blob_store_tests!`](crate::blob_store_tests), see [`crate::testsuite::blob`]):
//!
//! ```ignore
//! storage_traits::recovery_log_tests!(make_store().await);
//! ```

use bytes::Bytes;
use oci_spec_types::{Digest, RepositoryName, Tag};

use crate::recovery::{self, RecoveryLog};
use crate::{BlobStore, StorageError};

/// Turns every case of this module into a `#[tokio::test]`; the syntax is that of
/// [`blob_store_tests!`](crate::blob_store_tests).
#[macro_export]
macro_rules! recovery_log_tests {
    ($make:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) get_missing_is_none);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) put_then_get);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) put_replaces);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) list_direct_children_sorted);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) list_missing_folder_is_empty);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) delete_then_missing);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) delete_missing_is_ok);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) emptied_folder_not_listed);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) invalid_paths_refused);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) distribution_layout_round_trip);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) records_are_not_blobs);
        $crate::__recovery_log_case!([$(#[$attr])*] ($make) records_under_a_folder);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __recovery_log_case {
    ([$($attr:tt)*] ($make:expr) $case:ident) => {
        #[::tokio::test]
        $($attr)*
        async fn $case() {
            let store = $make;
            $crate::testsuite::recovery::$case(
                $crate::testsuite::blob::AsBlobStore::as_blob_store(&store),
            )
            .await;
        }
    };
}

fn log(store: &dyn BlobStore) -> &dyn RecoveryLog {
    store
        .recovery()
        .expect("the store under test keeps recovery records (BlobStore::recovery is None)")
}

/// A fresh top folder for one case.
fn top() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// Suite case: get missing is none.
pub async fn get_missing_is_none(store: &dyn BlobStore) {
    let log = log(store);
    let t = top();
    assert_eq!(
        log.get_record(&format!("{t}/nothing"))
            .await
            .expect("get_record"),
        None
    );
    assert_eq!(
        log.get_record(&format!("{t}/a/b/c"))
            .await
            .expect("get_record"),
        None
    );
}

/// Suite case: put then get.
pub async fn put_then_get(store: &dyn BlobStore) {
    let log = log(store);
    let path = format!("{}/a/b/link", top());
    let content = Bytes::from_static(b"sha256:0123");
    log.put_record(&path, content.clone())
        .await
        .expect("put_record");
    assert_eq!(
        log.get_record(&path).await.expect("get_record"),
        Some(content)
    );
    log.put_record(&format!("{path}-empty"), Bytes::new())
        .await
        .expect("put_record");
    assert_eq!(
        log.get_record(&format!("{path}-empty"))
            .await
            .expect("get_record"),
        Some(Bytes::new())
    );
    log.delete_record(&path).await.expect("delete_record");
    log.delete_record(&format!("{path}-empty"))
        .await
        .expect("delete_record");
}

/// Suite case: put replaces.
pub async fn put_replaces(store: &dyn BlobStore) {
    let log = log(store);
    let path = format!("{}/tag/current/link", top());
    log.put_record(&path, Bytes::from_static(b"a much longer first content"))
        .await
        .expect("put_record");
    log.put_record(&path, Bytes::from_static(b"short"))
        .await
        .expect("put_record");
    assert_eq!(
        log.get_record(&path).await.expect("get_record"),
        Some(Bytes::from_static(b"short"))
    );
    log.delete_record(&path).await.expect("delete_record");
}

/// Suite case: list direct children sorted.
pub async fn list_direct_children_sorted(store: &dyn BlobStore) {
    let log = log(store);
    let t = top();
    let paths = [
        format!("{t}/b/x/link"),
        format!("{t}/a"),
        format!("{t}/c.d/link"),
        format!("{t}/b/y"),
        format!("{t}/B_-1"),
    ];
    for p in &paths {
        log.put_record(p, Bytes::from_static(b"x"))
            .await
            .expect("put_record");
    }
    assert_eq!(
        log.list_records(&t).await.expect("list_records"),
        ["B_-1", "a", "b", "c.d"]
    );
    assert_eq!(
        log.list_records(&format!("{t}/b"))
            .await
            .expect("list_records"),
        ["x", "y"]
    );
    assert_eq!(
        log.list_records(&format!("{t}/b/x"))
            .await
            .expect("list_records"),
        ["link"]
    );
    assert!(
        log.list_records("")
            .await
            .expect("list_records")
            .contains(&t)
    );
    for p in &paths {
        log.delete_record(p).await.expect("delete_record");
    }
}

/// Suite case: list missing folder is empty.
pub async fn list_missing_folder_is_empty(store: &dyn BlobStore) {
    let log = log(store);
    let t = top();
    assert!(log.list_records(&t).await.expect("list_records").is_empty());
    assert!(
        log.list_records(&format!("{t}/x/y"))
            .await
            .expect("list_records")
            .is_empty()
    );
}

/// Suite case: delete then missing.
pub async fn delete_then_missing(store: &dyn BlobStore) {
    let log = log(store);
    let t = top();
    let keep = format!("{t}/keep");
    let gone = format!("{t}/gone");
    log.put_record(&keep, Bytes::from_static(b"1"))
        .await
        .expect("put_record");
    log.put_record(&gone, Bytes::from_static(b"2"))
        .await
        .expect("put_record");
    log.delete_record(&gone).await.expect("delete_record");
    assert_eq!(log.get_record(&gone).await.expect("get_record"), None);
    assert_eq!(
        log.get_record(&keep).await.expect("get_record"),
        Some(Bytes::from_static(b"1"))
    );
    assert_eq!(log.list_records(&t).await.expect("list_records"), ["keep"]);
    log.delete_record(&keep).await.expect("delete_record");
}

/// Suite case: delete missing is ok.
pub async fn delete_missing_is_ok(store: &dyn BlobStore) {
    let log = log(store);
    let t = top();
    log.delete_record(&format!("{t}/never/written"))
        .await
        .expect("delete_record");
    log.put_record(&format!("{t}/a"), Bytes::from_static(b"1"))
        .await
        .expect("put_record");
    log.delete_record(&format!("{t}/a"))
        .await
        .expect("delete_record");
    log.delete_record(&format!("{t}/a"))
        .await
        .expect("delete_record");
}

/// A tag whose record is deleted must not linger as an empty folder: a rebuild would
/// list it as a tag without a target.
pub async fn emptied_folder_not_listed(store: &dyn BlobStore) {
    let log = log(store);
    let t = top();
    let a = format!("{t}/tags/a/current/link");
    let b = format!("{t}/tags/b/current/link");
    log.put_record(&a, Bytes::from_static(b"1"))
        .await
        .expect("put_record");
    log.put_record(&b, Bytes::from_static(b"2"))
        .await
        .expect("put_record");
    log.delete_record(&a).await.expect("delete_record");
    assert_eq!(
        log.list_records(&format!("{t}/tags"))
            .await
            .expect("list_records"),
        ["b"]
    );
    log.delete_record(&b).await.expect("delete_record");
    assert!(
        log.list_records(&format!("{t}/tags"))
            .await
            .expect("list_records")
            .is_empty()
    );
    assert!(
        !log.list_records("")
            .await
            .expect("list_records")
            .contains(&t)
    );
    // The folders come back with the next record.
    log.put_record(&a, Bytes::from_static(b"3"))
        .await
        .expect("put_record");
    assert_eq!(
        log.get_record(&a).await.expect("get_record"),
        Some(Bytes::from_static(b"3"))
    );
    log.delete_record(&a).await.expect("delete_record");
}

/// Suite case: invalid paths refused.
pub async fn invalid_paths_refused(store: &dyn BlobStore) {
    let log = log(store);
    let t = top();
    let bad = [
        String::new(),
        "/abs".to_string(),
        format!("{t}/"),
        format!("{t}//x"),
        format!("{t}/../x"),
        format!("{t}/./x"),
        "..".to_string(),
        format!("{t}/a b"),
        format!("{t}/a:b"),
        format!("{t}/a\\b"),
        format!("{t}/a%2fb"),
        format!("{t}/é"),
        format!("{t}/{}", "x".repeat(recovery::MAX_PATH_LEN)),
    ];
    let refused = |r: Result<(), StorageError>, what: &str, path: &str| match r {
        Err(StorageError::InvalidRecordPath { .. }) => {}
        other => panic!("{what} {path:?}: expected InvalidRecordPath, got {other:?}"),
    };
    for path in &bad {
        refused(
            log.put_record(path, Bytes::from_static(b"x")).await,
            "put",
            path,
        );
        refused(log.get_record(path).await.map(drop), "get", path);
        refused(log.delete_record(path).await, "delete", path);
        if !path.is_empty() {
            refused(log.list_records(path).await.map(drop), "list", path);
        }
    }
    assert!(log.list_records(&t).await.expect("list_records").is_empty());
}

/// Records written with the layout helpers read back as distribution's import engine
/// reads them: list the tags folder, read each `current/link`, parse the digest.
pub async fn distribution_layout_round_trip(store: &dyn BlobStore) {
    let log = log(store);
    let repo: RepositoryName = format!("{}/app__x/web-ui.v2", top())
        .parse()
        .expect("a valid name");
    let manifest = Digest::sha256_of(uuid::Uuid::new_v4().as_bytes());
    let tags: Vec<Tag> = ["latest", "v1.0.0-rc_1", "_x"]
        .iter()
        .map(|t| t.parse().expect("a valid name"))
        .collect();
    let revision = recovery::revision_record(&repo, &manifest);
    log.put_record(&revision, recovery::link_content(&manifest))
        .await
        .expect("put_record");
    for tag in &tags {
        log.put_record(
            &recovery::tag_record(&repo, tag),
            recovery::link_content(&manifest),
        )
        .await
        .expect("put_record");
    }
    let mut listed = log
        .list_records(&recovery::tags_folder(&repo))
        .await
        .expect("list_records");
    let mut expected: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for name in listed.drain(..) {
        let tag: Tag = name.parse().expect("a valid name");
        let content = log
            .get_record(&recovery::tag_record(&repo, &tag))
            .await
            .expect("get_record")
            .expect("the tag record exists");
        assert_eq!(recovery::parse_link(&content), Some(manifest.clone()));
    }
    let revisions = format!("repositories/{repo}/_manifests/revisions/sha256");
    assert_eq!(
        log.list_records(&revisions).await.expect("list_records"),
        [manifest.hex()]
    );
    log.delete_record(&revision).await.expect("delete_record");
    for tag in &tags {
        log.delete_record(&recovery::tag_record(&repo, tag))
            .await
            .expect("delete_record");
    }
    assert!(
        log.list_records(&format!("repositories/{repo}"))
            .await
            .expect("list_records")
            .is_empty()
    );
}

/// Records live apart from the blobs: a record never shows up in `list`, and a record at
/// a path that looks like a blob's does not make `stat` see a blob.
pub async fn records_are_not_blobs(store: &dyn BlobStore) {
    use futures::TryStreamExt;
    let log = log(store);
    let digest = Digest::sha256_of(uuid::Uuid::new_v4().as_bytes());
    let hex = digest.hex().to_string();
    let path = format!("blobs/sha256/{}/{hex}", &hex[..2]);
    log.put_record(&path, Bytes::from_static(b"not a blob"))
        .await
        .expect("put_record");
    assert_eq!(store.stat(&digest).await.expect("stat"), None);
    let listed: Vec<Digest> = store.list().try_collect().await.expect("list");
    assert!(!listed.contains(&digest));
    log.delete_record(&path).await.expect("delete_record");
}

/// `records_under` returns the live records at or below a folder, with their contents,
/// sorted by path: what a rebuild reads in one call.
pub async fn records_under_a_folder(store: &dyn BlobStore) {
    let log = log(store);
    let t = top();
    let written = [
        (format!("{t}/b/x/link"), "1"),
        (format!("{t}/a"), "2"),
        (format!("{t}/b-c/link"), "3"),
        (format!("{t}/b/y"), ""),
        (format!("{t}/b/x/deep/er/link"), "4"),
        (format!("{t}/gone/link"), "5"),
        (format!("{t}/b/replaced"), "old"),
    ];
    for (p, c) in &written {
        log.put_record(p, Bytes::copy_from_slice(c.as_bytes()))
            .await
            .expect("put_record");
    }
    log.put_record(&format!("{t}/b/replaced"), Bytes::from_static(b"new"))
        .await
        .expect("put_record");
    log.delete_record(&format!("{t}/gone/link"))
        .await
        .expect("delete_record");
    let owned = |pairs: &[(String, &str)]| -> Vec<(String, Bytes)> {
        pairs
            .iter()
            .map(|(p, c)| (p.clone(), Bytes::copy_from_slice(c.as_bytes())))
            .collect()
    };
    let under = |dir: String| async move { log.records_under(&dir).await.expect("records_under") };

    // Byte order: `b-c` sorts before `b/`.
    let all = owned(&[
        (format!("{t}/a"), "2"),
        (format!("{t}/b-c/link"), "3"),
        (format!("{t}/b/replaced"), "new"),
        (format!("{t}/b/x/deep/er/link"), "4"),
        (format!("{t}/b/x/link"), "1"),
        (format!("{t}/b/y"), ""),
    ]);
    assert_eq!(under(t.clone()).await, all);
    assert_eq!(under(format!("{t}/b/x")).await, all[3..5].to_vec());
    // Other cases share the store: "" holds theirs too, ours in order among them.
    let everything = under(String::new()).await;
    let ours: Vec<(String, Bytes)> = everything
        .iter()
        .filter(|(p, _)| p.starts_with(&format!("{t}/")))
        .cloned()
        .collect();
    assert_eq!(ours, all);
    assert!(everything.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    // A record's own path: just that record. A prefix of a name is no folder.
    assert_eq!(under(format!("{t}/b/x/link")).await, all[4..5].to_vec());
    assert!(under(format!("{t}/b/x/li")).await.is_empty());
    assert!(under(format!("{t}/gone")).await.is_empty());
    assert!(under(format!("{t}/missing/folder")).await.is_empty());
    match log.records_under(&format!("{t}/../x")).await {
        Err(StorageError::InvalidRecordPath { .. }) => {}
        other => panic!("records_under {t}/../x: expected InvalidRecordPath, got {other:?}"),
    }

    for (p, _) in &written {
        log.delete_record(p).await.expect("delete_record");
    }
    assert!(under(t).await.is_empty());
}
