//! What the test binaries share: one SeaweedFS per binary, a fresh prefix per store.

#![allow(dead_code)]

pub mod relay;

use std::sync::OnceLock;

use storage_s3::{Credentials, S3BlobStore, S3Config};
use test_support::seaweedfs::SeaweedFs;

/// The binary's server, started on first use.
pub fn server() -> &'static SeaweedFs {
    static SERVER: OnceLock<SeaweedFs> = OnceLock::new();
    SERVER.get_or_init(SeaweedFs::start)
}

/// The configuration of a store on `server` under a fresh random prefix.
pub fn config_on(server: &SeaweedFs) -> S3Config {
    let prefix = format!("t-{}", uuid::Uuid::new_v4().simple());
    S3Config::from_url(&server.url(&prefix))
        .expect("fixture URL parses")
        .with_credentials(Credentials::new(&server.access_key, &server.secret_key))
}

/// A store on the shared server under a fresh random prefix.
pub fn store() -> S3BlobStore {
    S3BlobStore::new(config_on(server())).expect("store")
}
