//! Blob stores on one SeaweedFS per test binary, started on first use.

use std::sync::OnceLock;

use storage_s3::{Credentials, S3BlobStore, S3Config};
use test_support::seaweedfs::SeaweedFs;

pub fn server() -> &'static SeaweedFs {
    static SERVER: OnceLock<SeaweedFs> = OnceLock::new();
    SERVER.get_or_init(SeaweedFs::start)
}

/// A store on the shared server under `prefix` (a second one on the same prefix sees
/// exactly what the first wrote).
pub fn s3_store(prefix: &str) -> S3BlobStore {
    let server = server();
    let cfg = S3Config::from_url(&server.url(prefix))
        .unwrap()
        .with_credentials(Credentials::new(&server.access_key, &server.secret_key));
    S3BlobStore::new(cfg).unwrap()
}
