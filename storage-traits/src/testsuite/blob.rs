//! Behaviour cases for `BlobStore` implementations.
