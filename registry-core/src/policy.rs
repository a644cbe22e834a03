//! Registry-wide policies: read-only mode, immutable tags, and size limits for blobs (the
//! limit on a running upload is enforced by the upload module, `upload::limit`).
//! (The manifest size limit is [`RegistryConfig::max_manifest_size`](crate::RegistryConfig).)
//!
//! They are checked after authentication, so an anonymous caller learns nothing about the
//! registry's mode before logging in: in the middleware for what the request line and
//! headers already tell (a write in read-only mode, a declared size over the limit), and in
//! the handlers for what only the body or the stored state can tell (the running size of
//! an upload, the digest a tag points at).

use oci_spec_types::{ErrorCode, RepositoryName};
use serde::Deserialize;

use crate::auth::NamePattern;
use crate::error::RegistryError;
use crate::request::ApiRequest;
use crate::route::Route;

/// Registry-wide rules, on top of what callers are allowed to do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// Refuse every write (`405 UNSUPPORTED`), e.g. during a migration or while the
    /// storage is being repaired. Reads, and upload status queries, still work.
    #[serde(default)]
    pub read_only: bool,
    /// Repositories whose tags, once pushed, always point at the same manifest: a push of
    /// a different manifest over an existing tag is `403 DENIED` and the old one stays.
    /// Re-pushing the same manifest is fine (clients retry), and tags can still be deleted
    /// by whoever may delete. The metadata store checks it in the transaction that moves
    /// the tag, so of two racing first pushes of one tag only one succeeds.
    #[serde(default)]
    pub immutable_tags: Vec<NamePattern>,
    /// Largest blob accepted, in bytes: larger uploads are `400 SIZE_INVALID` and their
    /// session is discarded.
    #[serde(default)]
    pub max_blob_size: Option<u64>,
}

impl Policy {
    /// No rule: writable, mutable tags, no blob size limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`Policy::read_only`].
    #[must_use]
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Makes the tags of repositories matching `repositories` immutable.
    #[must_use]
    pub fn with_immutable_tags(mut self, repositories: NamePattern) -> Self {
        self.immutable_tags.push(repositories);
        self
    }

    /// Sets [`Policy::max_blob_size`].
    #[must_use]
    pub fn with_max_blob_size(mut self, bytes: Option<u64>) -> Self {
        self.max_blob_size = bytes;
        self
    }

    /// Whether `repository`'s tags are immutable.
    pub fn tags_immutable(&self, repository: &RepositoryName) -> bool {
        self.immutable_tags
            .iter()
            .any(|p| p.matches(repository.as_str()))
    }

    /// What can be decided from the request line and headers alone.
    pub(crate) fn check_request(&self, request: &ApiRequest) -> Result<(), RegistryError> {
        let write = !request.is_read();
        let route = &request.route;
        let on_repository = !matches!(route, Route::Base | Route::Catalog | Route::Extension(_));
        if self.read_only && write && on_repository {
            return Err(RegistryError::oci(
                ErrorCode::Unsupported,
                "registry is in read-only mode",
            ));
        }
        if let Some(limit) = self.max_blob_size
            && matches!(route, Route::UploadStart(_) | Route::Upload(..))
            && write
        {
            let declared = request.body.content_length;
            // A chunk's Content-Range end says how large the blob is at least.
            let range_end = request
                .body
                .content_range
                .flatten()
                .map(|r| r.end.saturating_add(1));
            if declared.max(range_end).is_some_and(|n| n > limit) {
                return Err(crate::upload::limit::blob_too_large(limit));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str) -> ApiRequest {
        let (parts, ()) = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-length", "10")
            .body(())
            .unwrap()
            .into_parts();
        ApiRequest::decode(&parts).unwrap().unwrap()
    }

    #[test]
    fn read_only_refuses_writes_only() {
        let p = Policy::new().with_read_only(true);
        assert!(p.check_request(&request("GET", "/v2/a/tags/list")).is_ok());
        assert!(
            p.check_request(&request("POST", "/v2/a/blobs/uploads/"))
                .is_err()
        );
        let p = Policy::new().with_max_blob_size(Some(9));
        assert!(
            p.check_request(&request("POST", "/v2/a/blobs/uploads/"))
                .is_err()
        );
    }
}
