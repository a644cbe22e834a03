//! Behaviour cases for `MetadataStore` implementations.
