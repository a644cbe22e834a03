//! The shared `RecoveryLog` suite, plus what only the fs journal shows: records survive a
//! reopen, a torn tail is cut, a foreign file is refused, a journal written before the
//! index went away opens, and compaction keeps what lives, even under concurrent lookups.

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

/// A journal as the store wrote it when it kept an index in memory (the format did not
/// change): written byte for byte here, it opens and reads back.
#[tokio::test]
async fn a_journal_of_the_earlier_code_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("recovery")).expect("mkdir");
    let data = b"oci-registry recovery journal v1\n\
+ repositories/a/_manifests/tags/v1/current/link 9\nsha256:01\n\
+ repositories/a/_manifests/tags/v2/current/link 9\nsha256:02\n\
+ repositories/b/_manifests/revisions/sha256/03/link 9\nsha256:03\n\
- repositories/a/_manifests/tags/v1/current/link\n\
+ repositories/a/_manifests/tags/v2/current/link 9\nsha256:04\n\
+ multi 5\nx\ny\nz\n\
+ empty 0\n\n";
    std::fs::write(journal(dir.path()), data).expect("write");
    let store = FsBlobStore::open(dir.path()).expect("open");
    assert_eq!(
        std::fs::metadata(journal(dir.path())).expect("stat").len(),
        data.len() as u64,
        "nothing cut"
    );
    let log = store.recovery().expect("fs keeps records");
    assert_eq!(
        log.list_records("repositories/a/_manifests/tags")
            .await
            .expect("list"),
        ["v2"]
    );
    assert_eq!(
        log.records_under("").await.expect("records_under"),
        [
            ("empty".to_string(), Bytes::new()),
            ("multi".to_string(), Bytes::from_static(b"x\ny\nz")),
            (
                "repositories/a/_manifests/tags/v2/current/link".to_string(),
                Bytes::from_static(b"sha256:04")
            ),
            (
                "repositories/b/_manifests/revisions/sha256/03/link".to_string(),
                Bytes::from_static(b"sha256:03")
            ),
        ]
    );
    assert_eq!(
        log.list_records("").await.expect("list"),
        ["empty", "multi", "repositories"]
    );
}

/// A crash right after the journal was created can leave part of its header, then zeros:
/// the journal starts over (with a whole header, so it opens again afterwards).
#[tokio::test]
async fn a_partial_header_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("recovery")).expect("mkdir");
    for partial in [
        &b"oci-regis"[..],
        b"oci-registry recovery\0\0\0\0",
        &[0; 100],
    ] {
        std::fs::write(journal(dir.path()), partial).expect("write");
        let store = FsBlobStore::open(dir.path()).expect("open");
        let log = store.recovery().expect("fs keeps records");
        log.put_record("a", Bytes::from_static(b"1"))
            .await
            .expect("put");
        drop(store);
        let store = FsBlobStore::open(dir.path()).expect("reopen");
        assert_eq!(get(&store, "a").await, Some(Bytes::from_static(b"1")));
    }
    std::fs::write(journal(dir.path()), b"oci-regis\0\0x").expect("write");
    FsBlobStore::open(dir.path()).expect_err("not zeros after the partial header");
}

/// Lookups running while appends compact the journal again and again always see every
/// record: each reads a whole journal, the old one or the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_see_every_record_across_compactions() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let (store, dir) = open();
    let store = Arc::new(store);
    let log = store.recovery().expect("fs keeps records");
    let stable: Arc<Vec<String>> =
        Arc::new((0..50).map(|i| format!("stable/{i:02}/link")).collect());
    for p in stable.iter() {
        log.put_record(p, Bytes::from(p.clone()))
            .await
            .expect("put");
    }
    let done = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (store, stable) = (Arc::clone(&store), Arc::clone(&stable));
            let (done, rounds) = (Arc::clone(&done), Arc::clone(&rounds));
            tokio::spawn(async move {
                let log = store.recovery().expect("fs keeps records");
                let mut i = r;
                while !done.load(Ordering::Relaxed) {
                    i += 1;
                    let under = log.records_under("stable").await.expect("records_under");
                    assert_eq!(under.len(), stable.len());
                    for (p, c) in &under {
                        assert_eq!(c.as_ref(), p.as_bytes());
                    }
                    let names = log.list_records("stable").await.expect("list");
                    assert_eq!(names.len(), stable.len());
                    let p = &stable[i % stable.len()];
                    assert_eq!(get(&store, p).await, Some(Bytes::from(p.clone())));
                    assert!(log.list_records("churn").await.expect("list").len() <= 10);
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let content = Bytes::from(vec![b'x'; 4000]);
    // About 40 MiB over 10 paths: compacted about ten times past the 4 MiB floor.
    for i in 0..10_000 {
        log.put_record(&format!("churn/{}", i % 10), content.clone())
            .await
            .expect("put");
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("reader");
    }
    let len = std::fs::metadata(journal(dir.path())).expect("stat").len();
    assert!(len < 8 * 1024 * 1024, "journal not compacted: {len} bytes");
    let rounds = rounds.load(Ordering::Relaxed);
    assert!(
        rounds > 10,
        "lookups ran alongside the writes: {rounds} rounds"
    );
}

/// Appends from many tasks while the journal compacts again and again: every record put
/// is kept, whether it landed before a compaction began, while it copied the live records
/// (the lock is free then), or after; and each path's last put wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_across_compactions_keep_every_record() {
    use std::sync::Arc;

    const WRITERS: usize = 4;
    const PUTS: usize = 6_000;
    let (store, dir) = open();
    let store = Arc::new(store);
    let content = |w: usize, i: usize| {
        let mut c = format!("{w}/{i}:").into_bytes();
        c.resize(1000, b'x');
        Bytes::from(c)
    };
    // Each writer puts PUTS records of its own and replaces one more record as often
    // (about 48 MB appended in all, so the journal doubles and compacts a few times past
    // the 4 MiB floor); one in ten of its own records is deleted again.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let log = store.recovery().expect("fs keeps records");
                for i in 0..PUTS {
                    log.put_record(&format!("r/{w}/{i:05}"), content(w, i))
                        .await
                        .expect("put");
                    log.put_record(&format!("r/{w}/last"), content(w, i))
                        .await
                        .expect("put");
                    if i % 10 == 9 {
                        log.delete_record(&format!("r/{w}/{:05}", i - 5))
                            .await
                            .expect("delete");
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let mut expected: Vec<(String, Bytes)> = Vec::new();
    for w in 0..WRITERS {
        for i in (0..PUTS).filter(|i| i % 10 != 4) {
            expected.push((format!("r/{w}/{i:05}"), content(w, i)));
        }
        expected.push((format!("r/{w}/last"), content(w, PUTS - 1)));
    }
    let check = |got: Vec<(String, Bytes)>| {
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e);
        }
    };
    let log = store.recovery().expect("fs keeps records");
    check(log.records_under("r").await.expect("records_under"));
    // Compacted: shorter than the puts' contents alone.
    let len = std::fs::metadata(journal(dir.path())).expect("stat").len();
    let appended = (WRITERS * PUTS * 2 * 1000) as u64;
    assert!(len < appended, "journal not compacted: {len} bytes");
    // And the same after a reopen, from the journal alone.
    drop(store);
    let reopened = FsBlobStore::open(dir.path()).expect("reopen");
    let log = reopened.recovery().expect("fs keeps records");
    check(log.records_under("r").await.expect("records_under"));
}
