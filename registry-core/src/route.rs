//! Maps a request path to an endpoint of the distribution API.
//!
//! Repository names contain `/`, so the endpoint is recognised by its suffix, matched from
//! the right (`…/manifests/<ref>`, `…/blobs/uploads/<id>`, `…/tags/list`), and whatever is
//! left is the name, validated with the spec's grammar. Nothing is percent-decoded: an
//! encoded slash or dot is simply not part of a valid name, so a path has one spelling.

use oci_spec_types::{Digest, DigestError, NameError, Reference, ReferenceError, RepositoryName};
use storage_traits::blob::valid_upload_id;

/// An endpoint of the distribution API, with what its path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepositoryName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepositoryName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepositoryName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepositoryName),
    /// `/v2/<name>/blobs/uploads/<id>`; the id is checked here, once, against
    /// [`valid_upload_id`].
    Upload(RepositoryName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepositoryName, Digest),
    /// `/v2/_ext/…`: this registry's own API beyond the spec (insights, sorted and
    /// filtered listings). `_` cannot start a repository name, so it never collides.
    Extension(Extension),
}

/// The endpoints under `/v2/_ext/` (see `docs/insights.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extension {
    /// `/v2/_ext/summary`
    Summary,
    /// `/v2/_ext/repositories`
    Repositories,
    /// `/v2/_ext/blobs`
    Blobs,
    /// `/v2/_ext/blobs/<digest>`
    Blob(Digest),
    /// `/v2/_ext/catalog`
    Catalog,
    /// `/v2/_ext/tags/<name>`
    Tags(RepositoryName),
    /// Usage and limit of each quota.
    Quotas,
}

/// Why a path that names an endpoint could not be decoded. Which response it gets can
/// depend on the method (an invalid manifest reference is `404` to a read, `400` to a
/// push), so the request decoder maps it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The repository name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The digest is invalid.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The manifest reference is neither a tag nor a digest.
    #[error("invalid manifest reference: {0}")]
    Reference(ReferenceError),
    /// The upload id is malformed (empty, over 128 bytes, or not `[A-Za-z0-9_-]`).
    #[error("invalid upload id")]
    UploadId,
}

impl Route {
    /// Parses a path. `None` means the path is not an API endpoint at all (a 404).
    pub fn parse(path: &str) -> Result<Option<Route>, RouteError> {
        let Some(rest) = path.strip_prefix("/v2") else {
            return Ok(None);
        };
        if rest.is_empty() || rest == "/" {
            return Ok(Some(Route::Base));
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Ok(None);
        };
        if rest == "_catalog" {
            return Ok(Some(Route::Catalog));
        }
        if let Some(ext) = rest.strip_prefix("_ext/") {
            return Ok(Extension::parse(ext)?.map(Route::Extension));
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let tail = |k: usize| -> Option<&str> { (n > k).then(|| segs[n - 1 - k]) };
        // `name` is everything before the last `k` segments.
        let name = |k: usize| -> Result<RepositoryName, RouteError> {
            Ok(segs[..n - k].join("/").parse()?)
        };
        let route = match (tail(2), tail(1), tail(0)) {
            (_, Some("tags"), Some("list")) if n > 2 => Route::Tags(name(2)?),
            (Some("blobs"), Some("uploads"), Some("")) if n > 3 => Route::UploadStart(name(3)?),
            (Some("blobs"), Some("uploads"), Some(id)) if n > 3 => {
                let repo = name(3)?;
                if !valid_upload_id(id) {
                    return Err(RouteError::UploadId);
                }
                Route::Upload(repo, id.to_string())
            }
            (_, Some("blobs"), Some("uploads")) if n > 2 => Route::UploadStart(name(2)?),
            (_, Some("blobs"), Some(d)) if n > 2 => Route::Blob(name(2)?, d.parse()?),
            (_, Some("manifests"), Some(r)) if n > 2 => {
                let repo = name(2)?;
                Route::Manifest(repo, r.parse().map_err(RouteError::Reference)?)
            }
            (_, Some("referrers"), Some(d)) if n > 2 => Route::Referrers(name(2)?, d.parse()?),
            _ => return Ok(None),
        };
        Ok(Some(route))
    }

    /// The same endpoint on another repository (a proxied pull's `?ns=` names the
    /// namespace, and the edge serves it from that upstream's prefix).
    #[must_use]
    pub fn with_repository(self, repository: RepositoryName) -> Route {
        match self {
            Route::Tags(_) => Route::Tags(repository),
            Route::Manifest(_, r) => Route::Manifest(repository, r),
            Route::Blob(_, d) => Route::Blob(repository, d),
            Route::UploadStart(_) => Route::UploadStart(repository),
            Route::Upload(_, id) => Route::Upload(repository, id),
            Route::Referrers(_, d) => Route::Referrers(repository, d),
            Route::Extension(Extension::Tags(_)) => Route::Extension(Extension::Tags(repository)),
            other => other,
        }
    }

    /// The repository the endpoint is about, if any.
    pub fn repository(&self) -> Option<&RepositoryName> {
        match self {
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _)
            | Route::Extension(Extension::Tags(n)) => Some(n),
            Route::Base | Route::Catalog | Route::Extension(_) => None,
        }
    }
}

impl Extension {
    fn parse(path: &str) -> Result<Option<Extension>, RouteError> {
        Ok(Some(match path.split_once('/') {
            None if path == "summary" => Extension::Summary,
            None if path == "repositories" => Extension::Repositories,
            None if path == "blobs" => Extension::Blobs,
            None if path == "catalog" => Extension::Catalog,
            None if path == "quotas" => Extension::Quotas,
            Some(("blobs", digest)) => Extension::Blob(digest.parse()?),
            Some(("tags", name)) => Extension::Tags(name.parse()?),
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str) -> Route {
        Route::parse(p).unwrap().unwrap()
    }

    #[test]
    fn routes() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(r("/v2/"), Route::Base);
        assert_eq!(r("/v2"), Route::Base);
        assert_eq!(r("/v2/_catalog"), Route::Catalog);
        assert!(matches!(r("/v2/a/b/tags/list"), Route::Tags(n) if n.as_str() == "a/b"));
        assert!(
            matches!(r("/v2/a/manifests/manifests/latest"), Route::Manifest(n, _) if n.as_str() == "a/manifests")
        );
        assert!(matches!(r(&format!("/v2/a/blobs/{d}")), Route::Blob(_, x) if x == d));
        assert!(matches!(r("/v2/a/blobs/uploads/"), Route::UploadStart(n) if n.as_str() == "a"));
        assert!(matches!(r("/v2/a/blobs/uploads"), Route::UploadStart(_)));
        assert!(
            matches!(r("/v2/blobs/blobs/uploads/abc"), Route::Upload(n, id) if n.as_str() == "blobs" && id == "abc")
        );
        assert!(
            matches!(r(&format!("/v2/x/y/referrers/{d}")), Route::Referrers(n, _) if n.as_str() == "x/y")
        );
        assert_eq!(
            r("/v2/_ext/tags/a/b"),
            Route::Extension(Extension::Tags("a/b".parse().unwrap()))
        );
        assert_eq!(
            r(&format!("/v2/_ext/blobs/{d}")),
            Route::Extension(Extension::Blob(d))
        );
        assert_eq!(r("/v2/_ext/summary"), Route::Extension(Extension::Summary));
    }

    #[test]
    fn bad_paths() {
        assert_eq!(Route::parse("/v3/").unwrap(), None);
        assert_eq!(Route::parse("/v2/a").unwrap(), None);
        assert_eq!(Route::parse("/v2/tags/list").unwrap(), None);
        assert_eq!(Route::parse("/v2/_ext/nothing").unwrap(), None);
        assert!(Route::parse("/v2/A/tags/list").is_err());
        assert!(Route::parse("/v2/a%2fb/tags/list").is_err());
        assert!(Route::parse("/v2/../x/tags/list").is_err());
        assert!(Route::parse("/v2/a/blobs/sha256:zz").is_err());
        assert!(Route::parse("/v2/a/manifests/bad*tag").is_err());
        assert!(Route::parse("/v2/_ext/tags/A").is_err());
        assert!(Route::parse("/v2/_ext/tags/secret%2Fapp").is_err());
        assert_eq!(
            Route::parse("/v2/a/blobs/uploads/..%2Fx"),
            Err(RouteError::UploadId)
        );
    }
}
