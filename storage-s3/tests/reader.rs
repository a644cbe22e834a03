//! [`S3BucketReader`] against a real SeaweedFS: folder listings across many pages (the
//! delimiter and continuation tokens together), reads and streamed opens, and what a
//! missing file, a missing folder and a bad path give.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures::TryStreamExt;
use oci_spec_types::Digest;
use storage_s3::{S3BlobStore, S3BucketReader};
use storage_traits::BlobStore;
use storage_traits::testsuite::blob::random_bytes;

#[tokio::test]
async fn lists_folders_page_by_page_and_reads_files() {
    let config = common::config_on(common::server());
    let store = S3BlobStore::new(config.clone()).unwrap();
    // Two keys per page: every listing below needs several pages, and a page can end in
    // the middle of the keys that make up one folder.
    let reader = S3BucketReader::new(config.with_list_page_size(2)).unwrap();
    assert_eq!(reader.prefix(), store.prefix());

    // Blobs land at blobs/sha256/<2 hex>/<hex>: a tree with shared and single folders.
    let mut by_folder: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut blobs = Vec::new();
    for i in 0..12 {
        let data = Bytes::from(random_bytes(100 + i));
        let digest = Digest::sha256_of(&data);
        store
            .put_bytes(&format!("u{i}"), &digest, data.clone())
            .await
            .unwrap();
        let hex = digest.hex().to_string();
        by_folder
            .entry(hex[..2].to_string())
            .or_default()
            .insert(hex.clone());
        blobs.push((hex, data));
    }

    // SeaweedFS also keeps the emptied `_uploads/` folder as a prefix; AWS would not.
    let top = reader.list_folder("").await.unwrap();
    assert!(top.contains(&"blobs".to_string()), "{top:?}");
    assert_eq!(reader.list_folder("/blobs/").await.unwrap(), ["sha256"]);
    let folders: Vec<String> = by_folder.keys().cloned().collect();
    assert_eq!(reader.list_folder("blobs/sha256").await.unwrap(), folders);
    for (folder, hexes) in &by_folder {
        let listed = reader
            .list_folder(&format!("blobs/sha256/{folder}"))
            .await
            .unwrap();
        assert_eq!(listed, hexes.iter().cloned().collect::<Vec<_>>());
    }
    assert!(reader.list_folder("nothing/here").await.unwrap().is_empty());

    for (hex, data) in &blobs {
        let path = format!("blobs/sha256/{}/{hex}", &hex[..2]);
        assert_eq!(reader.read(&path).await.unwrap().as_ref(), Some(data));
        let (size, stream) = reader.open(&path).await.unwrap().unwrap();
        assert_eq!(size, data.len() as u64);
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(chunks.concat(), data.to_vec());
    }
    assert_eq!(reader.read("blobs/sha256/00/missing").await.unwrap(), None);
    assert!(
        reader
            .open("blobs/sha256/00/missing")
            .await
            .unwrap()
            .is_none()
    );
    // A folder is not a file: an error, not a listing or an empty file.
    assert!(reader.read("blobs/").await.is_err());
    assert!(reader.read("").await.is_err());
}
