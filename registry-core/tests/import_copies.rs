//! Import copies a repository's blobs several at a time, reports what it skips in the same
//! order on every run, and links everything it copied.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use oci_spec_types::Digest;
use registry_core::import::{FsSource, ImportSource};
use storage_traits::{ByteStream, StorageError};

use common::{TestRegistry, data};

const V2: &str = "docker/registry/v2";

/// Writes a blob's `data` file and the repository's `_layers` link to it.
fn add_blob(root: &Path, repo: &str, content: &[u8], stored: &[u8]) -> Digest {
    let digest = Digest::sha256_of(content);
    let hex = digest.hex();
    let dir = root.join(format!("{V2}/blobs/sha256/{}/{hex}", &hex[..2]));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data"), stored).unwrap();
    let link = root.join(format!("{V2}/repositories/{repo}/_layers/sha256/{hex}"));
    std::fs::create_dir_all(&link).unwrap();
    std::fs::write(link.join("link"), digest.to_string()).unwrap();
    digest
}

/// An [`FsSource`] whose blob streams open slowly and count how many are open at once.
#[derive(Debug)]
struct Counting {
    inner: FsSource,
    open: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    /// Every `open` call.
    opened: Arc<AtomicUsize>,
    /// Opening this path fails, as a source that went away would.
    fail: Option<String>,
}

impl Counting {
    fn new(root: &Path) -> Counting {
        Counting {
            inner: FsSource::new(root),
            open: Arc::default(),
            most: Arc::default(),
            opened: Arc::default(),
            fail: None,
        }
    }
}

struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ImportSource for Counting {
    async fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list(dir).await
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
        self.inner.read(path).await
    }

    async fn open(&self, path: &str) -> Result<Option<ByteStream>, StorageError> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        if self.fail.as_deref() == Some(path) {
            return Err(StorageError::backend("test", "source unreachable"));
        }
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let guard = Open(self.open.clone());
        // Slow enough that copies started together are open at the same time, and slower
        // for digests that sort first, so copies finish in another order than they start.
        let nibble = path
            .rsplit('/')
            .nth(1)
            .and_then(|hex| u64::from_str_radix(&hex[..1], 16).ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(30 + 8 * (15 - nibble))).await;
        let Some(stream) = self.inner.open(path).await? else {
            return Ok(None);
        };
        // Counted as open until the copy has read (and dropped) the stream.
        Ok(Some(
            stream
                .map(move |chunk| {
                    let _held = &guard;
                    chunk
                })
                .boxed(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_are_copied_several_at_a_time_and_reported_in_order() {
    let reg = TestRegistry::new().await;
    let source_dir = tempfile::tempdir().unwrap();
    let root = source_dir.path();
    let mut good = Vec::new();
    let mut corrupt = Vec::new();
    for i in 0..10u64 {
        let content = data(i, 40_000 + i as usize);
        if i % 4 == 3 {
            // Bytes that do not match the digest: skipped, with the reason.
            corrupt.push(add_blob(root, "app", &content, b"not the content"));
        } else {
            good.push((add_blob(root, "app", &content, &content), content));
        }
    }
    let source = Counting::new(root);
    let (open, most) = (source.open.clone(), source.most.clone());

    let report = reg.registry.import(&source).await.unwrap();

    let most = most.load(Ordering::SeqCst);
    assert!((2..=4).contains(&most), "{most} blob streams open at once");
    assert_eq!(open.load(Ordering::SeqCst), 0, "every stream dropped");
    assert_eq!(report.blobs_copied, good.len());
    assert_eq!(report.links, good.len());
    let expected_bytes: usize = good.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(report.bytes_copied, expected_bytes as u64);
    // In the order the links were listed (sorted by digest), every run.
    let mut sorted = corrupt.clone();
    sorted.sort_by_key(|d| d.to_string());
    let reasons: Vec<String> = sorted
        .iter()
        .map(|d| format!("blob {d}: source bytes do not match the digest"))
        .collect();
    assert_eq!(report.skipped, reasons);
    let again = reg.registry.import(&source).await.unwrap();
    assert_eq!(again.skipped, reasons);
    assert_eq!((again.blobs_copied, again.links), (0, good.len()));

    // Every good blob is stored and linked; no corrupt one is.
    for (digest, content) in &good {
        let reply = reg.get(&format!("/v2/app/blobs/{digest}")).await;
        assert_eq!(reply.status, 200, "{digest}");
        assert_eq!(reply.body, content.as_slice());
    }
    for digest in &corrupt {
        let reply = reg.get(&format!("/v2/app/blobs/{digest}")).await;
        assert_eq!(reply.status, 404, "{digest}");
    }
}

/// A source that fails part way: the import returns that error, starts no copy after it
/// (only those already running finish), and what it copied before is linked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_stops_the_copies_and_keeps_what_was_linked() {
    let reg = TestRegistry::new().await;
    let source_dir = tempfile::tempdir().unwrap();
    let root = source_dir.path();
    let mut digests: Vec<Digest> = (0..12u64)
        .map(|i| {
            let content = data(100 + i, 10_000);
            add_blob(root, "app", &content, &content)
        })
        .collect();
    digests.sort_by_key(|d| d.to_string());
    let broken = &digests[1];
    let mut source = Counting::new(root);
    source.fail = Some(format!(
        "{V2}/blobs/sha256/{}/{}/data",
        &broken.hex()[..2],
        broken.hex()
    ));
    let opened = source.opened.clone();

    let err = reg.registry.import(&source).await.unwrap_err();
    assert!(err.to_string().contains("source unreachable"), "{err}");
    // The failing copy and at most the few started with it: not all twelve.
    let opened = opened.load(Ordering::SeqCst);
    assert!(opened <= 5, "{opened} blobs opened after the failure");
    let first = reg.get(&format!("/v2/app/blobs/{}", digests[0])).await;
    assert_eq!(first.status, 200, "the copy before the failure is linked");
    let last = reg.get(&format!("/v2/app/blobs/{}", digests[11])).await;
    assert_eq!(last.status, 404, "no copy started after the failure");
}

/// A blob store that checks, whenever a blob is published, that the metadata already
/// links it into `app`: an import links before it publishes, as a push does, so the
/// collector can never delete bytes that are about to be linked.
#[derive(Debug)]
struct LinkFirst {
    inner: storage_fs::FsBlobStore,
    metadata: Arc<metadata_sqlite::SqliteMetadataStore>,
    published: AtomicUsize,
    unlinked: AtomicUsize,
}

#[async_trait]
impl storage_traits::BlobStore for LinkFirst {
    async fn stat(&self, d: &Digest) -> Result<Option<storage_traits::BlobInfo>, StorageError> {
        self.inner.stat(d).await
    }
    async fn get(
        &self,
        d: &Digest,
        r: Option<storage_traits::GetRange>,
    ) -> Result<storage_traits::GetResult, StorageError> {
        self.inner.get(d, r).await
    }
    async fn delete(&self, d: &Digest) -> Result<(), StorageError> {
        self.inner.delete(d).await
    }
    fn list(&self) -> futures::stream::BoxStream<'static, Result<Digest, StorageError>> {
        self.inner.list()
    }
    async fn start_upload(&self, id: &str) -> Result<(), StorageError> {
        self.inner.start_upload(id).await
    }
    async fn write_upload(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError> {
        self.inner.write_upload(id, offset, data).await
    }
    async fn read_upload(&self, id: &str) -> Result<ByteStream, StorageError> {
        self.inner.read_upload(id).await
    }
    async fn finish_upload(&self, id: &str, d: &Digest, n: u64) -> Result<(), StorageError> {
        use storage_traits::MetadataStore;
        let repo = "app".parse().unwrap();
        let linked = self.metadata.blob_link(&repo, d).await.unwrap().is_some();
        self.published.fetch_add(1, Ordering::SeqCst);
        if !linked {
            self.unlinked.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.finish_upload(id, d, n).await
    }
    async fn abort_upload(&self, id: &str) -> Result<(), StorageError> {
        self.inner.abort_upload(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_blob_is_linked_before_its_bytes_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let metadata =
        Arc::new(metadata_sqlite::SqliteMetadataStore::open(dir.path().join("db")).unwrap());
    let blobs = Arc::new(LinkFirst {
        inner: storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap(),
        metadata: metadata.clone(),
        published: AtomicUsize::new(0),
        unlinked: AtomicUsize::new(0),
    });
    let registry = registry_core::Registry::new(
        blobs.clone(),
        metadata,
        registry_core::RegistryConfig::default(),
    );
    let source_dir = tempfile::tempdir().unwrap();
    for i in 0..6u64 {
        let content = data(200 + i, 5_000);
        add_blob(source_dir.path(), "app", &content, &content);
    }

    let report = registry
        .import(&FsSource::new(source_dir.path()))
        .await
        .unwrap();

    assert_eq!((report.blobs_copied, report.links), (6, 6));
    assert_eq!(blobs.published.load(Ordering::SeqCst), 6);
    assert_eq!(
        blobs.unlinked.load(Ordering::SeqCst),
        0,
        "published before linked"
    );
}
