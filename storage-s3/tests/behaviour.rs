//! The shared `BlobStore` behaviour suite against a real SeaweedFS, each case under its own
//! random prefix of one server.

mod common;

storage_traits::blob_store_tests!(common::store());
