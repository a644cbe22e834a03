//! The shared `RecoveryLog` suite, plus what only the fs journal shows: records survive a
//! reopen, a torn tail is cut, a foreign file is refused, and compaction keeps what lives.

use std::path::Path;

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

fn journal(root: &Path) -> std::path::PathBuf {
    root.join("recovery/journal")
}

async fn get(store: &FsBlobStore, path: &str) -> Option<Bytes> {
    let log = store.recovery().expect("fs keeps records");
    log.get_record(path).await.expect("get")
}

#[tokio::test]
async fn records_survive_a_reopen() {
    let (store, dir) = open();
    let log = store.recovery().expect("fs keeps records");
    log.put_record("r/a/link", Bytes::from_static(b"one"))
        .await
        .expect("put");
    log.put_record("r/b/link", Bytes::from_static(b"two\nlines"))
        .await
        .expect("put");
    log.put_record("r/a/link", Bytes::from_static(b"three"))
        .await
        .expect("put");
    log.delete_record("r/b/link").await.expect("delete");
    drop(store);
    let store = FsBlobStore::open(dir.path()).expect("reopen");
    assert_eq!(
        get(&store, "r/a/link").await,
        Some(Bytes::from_static(b"three"))
    );
    assert_eq!(get(&store, "r/b/link").await, None);
    let log = store.recovery().expect("fs keeps records");
    assert_eq!(log.list_records("r").await.expect("list"), ["a"]);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_appends_go_on() {
    let (store, dir) = open();
    let log = store.recovery().expect("fs keeps records");
    log.put_record("kept", Bytes::from_static(b"1"))
        .await
        .expect("put");
    drop(store);
    // What a machine crash can leave: half an entry, then zeros.
    let mut data = std::fs::read(journal(dir.path())).expect("read");
    let good = data.len();
    data.extend_from_slice(b"+ lost 10\nabc");
    data.extend_from_slice(&[0; 64]);
    std::fs::write(journal(dir.path()), &data).expect("write");

    let store = FsBlobStore::open(dir.path()).expect("reopen");
    assert_eq!(
        std::fs::metadata(journal(dir.path())).expect("stat").len(),
        good as u64
    );
    assert_eq!(get(&store, "kept").await, Some(Bytes::from_static(b"1")));
    assert_eq!(get(&store, "lost").await, None);
    let log = store.recovery().expect("fs keeps records");
    log.put_record("after", Bytes::from_static(b"2"))
        .await
        .expect("put");
    drop(store);
    let store = FsBlobStore::open(dir.path()).expect("reopen");
    assert_eq!(get(&store, "after").await, Some(Bytes::from_static(b"2")));
}

#[tokio::test]
async fn a_foreign_journal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("recovery")).expect("mkdir");
    std::fs::write(journal(dir.path()), b"something else entirely\n").expect("write");
    let err = FsBlobStore::open(dir.path()).expect_err("a foreign journal");
    assert!(err.to_string().contains("not a recovery journal"), "{err}");
}

#[tokio::test]
async fn compaction_keeps_the_live_records() {
    let (store, dir) = open();
    let log = store.recovery().expect("fs keeps records");
    let content = Bytes::from(vec![b'x'; 900]);
    // About 9 MiB of puts of which 1 in 10 stays: past the 4 MiB floor and twice the live
    // size, so the journal is compacted at least once.
    for i in 0..10_000 {
        let path = format!("c/{}/link", i % 1000);
        log.put_record(&path, content.clone()).await.expect("put");
    }
    for i in 0..900 {
        log.delete_record(&format!("c/{i}/link"))
            .await
            .expect("delete");
    }
    let len = std::fs::metadata(journal(dir.path())).expect("stat").len();
    assert!(len < 5 * 1024 * 1024, "journal not compacted: {len} bytes");
    assert!(!dir.path().join("recovery/journal.new").exists());
    drop(store);
    let store = FsBlobStore::open(dir.path()).expect("reopen");
    let log = store.recovery().expect("fs keeps records");
    let names = log.list_records("c").await.expect("list");
    assert_eq!(names.len(), 100);
    for name in names {
        assert_eq!(
            get(&store, &format!("c/{name}/link")).await,
            Some(content.clone())
        );
    }
}
