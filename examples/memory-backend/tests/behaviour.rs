//! The shared `BlobStore` behaviour suite, run against the in-memory store: it needs no
//! file system or service, which shows the suite depends on the trait alone.

storage_traits::blob_store_tests!(memory_backend::MemoryBlobStore::new());

/// Again through `Arc<dyn BlobStore>`, the way a registry holds its store, with an
/// attribute put on every generated test.
mod as_dyn {
    use std::sync::Arc;

    use storage_traits::BlobStore;

    storage_traits::blob_store_tests!(
        Arc::new(memory_backend::MemoryBlobStore::new()) as Arc<dyn BlobStore>,
        #[cfg_attr(miri, ignore = "8 MiB of data is slow under miri")]
    );
}
