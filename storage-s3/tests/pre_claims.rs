#![allow(clippy::unwrap_used)]
//! Writes of whole parts claim the part numbers of the session's next write when they
//! record theirs, so the next write from the same process sends its parts without a
//! claim of its own. Against a real SeaweedFS, through a proxy that logs each request:
//! how many requests a chunked upload makes of `state.json`, that no part number is
//! ever sent twice, and that a claim made ahead is never used once anything else
//! changed the session (another replica's write, a failed write).

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use oci_spec_types::Digest;
use storage_s3::S3BlobStore;
use storage_traits::testsuite::blob::{chunked, random_bytes, upload_id};
use storage_traits::{BlobStore, BlobStoreExt, StorageError};

use common::relay::{Cutter, Head, direct, prefix, through};

const MIB: usize = 1024 * 1024;
/// The part size of stores made by `through`.
const PART: usize = 5 * MIB;

/// What the store asked of S3, in order: `GET state`, `PUT state`, `part N`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    async fn proxy(&self) -> Cutter {
        let log = self.clone();
        Cutter::counting(Box::new(move |h: &Head| {
            let path = h.target.split('?').next().unwrap_or("");
            let entry = if path.ends_with("/state.json") {
                format!("{} state", h.method)
            } else if let Some(n) = h.target.split("partNumber=").nth(1) {
                format!("part {}", n.split('&').next().unwrap_or(""))
            } else {
                return false;
            };
            log.0.lock().unwrap().push(entry);
            true
        }))
        .await
    }

    fn count(&self, entry: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| *e == entry)
            .count()
    }

    fn part_numbers(&self) -> Vec<u32> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e.strip_prefix("part "))
            .map(|n| n.parse().unwrap())
            .collect()
    }

    fn assert_no_number_sent_twice(&self) {
        let numbers = self.part_numbers();
        let mut distinct = numbers.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            numbers.len(),
            "a part number sent twice: {numbers:?}"
        );
    }
}

async fn write(store: &S3BlobStore, id: &str, offset: usize, data: &[u8]) -> u64 {
    store
        .write_upload(id, offset as u64, chunked(data, &[MIB]))
        .await
        .unwrap()
}

async fn assert_blob(store: &S3BlobStore, id: &str, data: &[u8]) {
    let digest = Digest::sha256_of(data);
    store
        .finish_upload(id, &digest, data.len() as u64)
        .await
        .unwrap();
    assert!(
        store.get_bytes(&digest).await.unwrap() == data,
        "blob differs"
    );
    assert_eq!(store.upload_keys().await.unwrap(), Vec::<String>::new());
    assert_eq!(
        store.incomplete_multipart_uploads().await.unwrap(),
        Vec::<(String, String)>::new()
    );
}

/// Six writes of one part each: the first reads the state, claims and records; each
/// later one only reads the state and records, under the numbers the one before claimed.
#[tokio::test]
async fn a_chunked_upload_claims_once() {
    let log = Log::default();
    let proxy = log.proxy().await;
    let p = prefix();
    let store = through(&proxy, &p);
    let data = random_bytes(6 * PART);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    for (i, part) in data.chunks(PART).enumerate() {
        write(&store, &id, i * PART, part).await;
    }
    assert_eq!(log.count("GET state"), 6, "one read per write");
    // start, the first write's claim and record, then one record per write.
    assert_eq!(log.count("PUT state"), 1 + 2 + 5);
    assert_eq!(log.part_numbers(), vec![1, 2, 3, 4, 5, 6]);
    assert_blob(&direct(&p), &id, &data).await;
}

/// Two replicas take turns in every order: a claim one made ahead is stale once the other
/// wrote, and is not used; every part number is sent once and the blob is whole.
#[tokio::test]
async fn replicas_taking_turns_never_use_a_stale_claim() {
    let log = Log::default();
    let proxy = log.proxy().await;
    let p = prefix();
    let (a, b) = (through(&proxy, &p), through(&proxy, &p));
    let turns = [&a, &a, &b, &a, &b, &b, &a, &a];
    let data = random_bytes(turns.len() * PART + 17);
    let id = upload_id();
    a.start_upload(&id).await.unwrap();
    let mut offset = 0;
    for (store, part) in turns.iter().zip(data.chunks(PART)) {
        offset = write(store, &id, offset, part).await as usize;
    }
    let last = &data[offset..];
    write(&b, &id, offset, last).await;
    log.assert_no_number_sent_twice();
    assert_blob(&direct(&p), &id, &data).await;
}

/// A write under a claim made ahead fails half way, after sending part of a part: its
/// retry from the same process claims anew, so the numbers the failed write may have
/// used are never sent again.
#[tokio::test]
async fn a_write_that_failed_under_a_claim_made_ahead_is_retried_under_a_new_one() {
    let log = Log::default();
    let proxy = log.proxy().await;
    let p = prefix();
    let store = through(&proxy, &p);
    let data = random_bytes(2 * PART);
    let id = upload_id();
    store.start_upload(&id).await.unwrap();
    write(&store, &id, 0, &data[..PART]).await;
    let half = Bytes::copy_from_slice(&data[PART..PART + 3 * MIB]);
    // The error comes once the part's request is on its way.
    let failing = futures::stream::iter([Ok(half)]).chain(futures::stream::once(async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        Err(StorageError::Input("client went away (test)".into()))
    }));
    let failed = store.write_upload(&id, PART as u64, failing.boxed()).await;
    assert!(matches!(failed, Err(StorageError::Input(_))), "{failed:?}");
    write(&store, &id, PART, &data[PART..]).await;
    assert_eq!(
        log.part_numbers()[..2],
        [1, 2],
        "the failed write sent part 2"
    );
    log.assert_no_number_sent_twice();
    assert_blob(&direct(&p), &id, &data).await;
}
