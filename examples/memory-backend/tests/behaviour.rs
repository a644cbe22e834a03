//! The shared `BlobStore` behaviour suite, run against the in-memory store: it needs no
//! filesystem or service, which shows the suite depends on the trait alone.

storage_traits::blob_store_tests!(memory_backend::MemoryBlobStore::new());
