//! Shows the `BlobStore` trait from the backend's side: `src/lib.rs` implements it in
//! memory in about a page, and this program stores a blob and reads it back, whole and by
//! range, through `Arc<dyn BlobStore>` as the registry would.
//!
//! Run it with `cargo run -p memory-backend`; `cargo test -p memory-backend` runs the
//! shared behaviour suite against the same store (`tests/behaviour.rs`).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use memory_backend::MemoryBlobStore;
use oci_spec_types::Digest;
use storage_traits::{BlobStore, BlobStoreExt, GetRange, StorageError};

#[tokio::main]
async fn main() -> Result<(), StorageError> {
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::new());

    let data = Bytes::from_static(b"hello, registry");
    let digest = Digest::sha256_of(&data);
    store.put_bytes("upload-1", &digest, data).await?;
    println!("stored {digest}: {:?}", store.stat(&digest).await?);

    let whole = store.get_bytes(&digest).await?;
    println!("whole: {:?}", String::from_utf8_lossy(&whole));

    let part = store.get(&digest, Some(GetRange::Suffix(8))).await?;
    let range = part.range.clone();
    let chunks: Vec<Bytes> = part.stream.try_collect().await?;
    println!(
        "bytes {range:?}: {:?}",
        String::from_utf8_lossy(&chunks.concat())
    );

    store.delete(&digest).await?;
    println!("after delete: {:?}", store.stat(&digest).await?);
    Ok(())
}
