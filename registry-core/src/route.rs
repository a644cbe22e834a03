//! Maps a request path to an endpoint of the distribution API.
//!
//! Repository names contain `/`, so the endpoint is recognised by its suffix, matched from
//! the right (`…/manifests/<ref>`, `…/blobs/uploads/<id>`, `…/tags/list`), and whatever is
//! left is the name, validated with the spec's grammar. Nothing is percent-decoded: an
//! encoded slash or dot is simply not part of a valid name.

use oci_spec_types::{Digest, NameError, Reference, RepositoryName};

use crate::error::RegistryError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    Tags(RepositoryName),
    Manifest(RepositoryName, Reference),
    Blob(RepositoryName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepositoryName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepositoryName, String),
    Referrers(RepositoryName, Digest),
    /// `/v2/_ext/<rest>`: this registry's own API beyond the spec (insights, sorted and
    /// filtered listings). `_` cannot start a repository name, so it never collides.
    Extension(String),
}

/// The route of a request, parsed once by the outermost middleware of
/// [`Registry::router`](crate::Registry::router) and handed on in the request's extensions
/// to authorisation and the dispatcher, which hands it back in the response's extensions
/// for the event it amounts to. Crate-private, so no other layer can put one there; a
/// request without it is parsed again.
#[derive(Debug, Clone)]
pub(crate) struct Parsed(pub(crate) Route);

impl Route {
    /// Parses a path. `None` means the path is not an API endpoint at all (a 404).
    pub fn parse(path: &str) -> Result<Option<Route>, RegistryError> {
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
            return Ok(Some(Route::Extension(ext.to_string())));
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let tail = |k: usize| -> Option<&str> { (n > k).then(|| segs[n - 1 - k]) };
        // `name` is everything before the last `k` segments.
        let name = |k: usize| -> Result<RepositoryName, RegistryError> {
            let joined = segs[..n - k].join("/");
            joined
                .parse()
                .map_err(|e: NameError| RegistryError::name_invalid(&e))
        };
        let route = match (tail(2), tail(1), tail(0)) {
            (_, Some("tags"), Some("list")) if n > 2 => Route::Tags(name(2)?),
            (Some("blobs"), Some("uploads"), Some("")) if n > 3 => Route::UploadStart(name(3)?),
            (Some("blobs"), Some("uploads"), Some(id)) if n > 3 => {
                Route::Upload(name(3)?, id.to_string())
            }
            (_, Some("blobs"), Some("uploads")) if n > 2 => Route::UploadStart(name(2)?),
            (_, Some("blobs"), Some(d)) if n > 2 => Route::Blob(name(2)?, parse_digest(d)?),
            (_, Some("manifests"), Some(r)) if n > 2 => {
                let repo = name(2)?;
                let reference = r.parse().map_err(|e| match e {
                    oci_spec_types::ReferenceError::Digest(e) => RegistryError::digest_invalid(&e),
                    oci_spec_types::ReferenceError::Tag(e) => RegistryError::tag_invalid(&e),
                })?;
                Route::Manifest(repo, reference)
            }
            (_, Some("referrers"), Some(d)) if n > 2 => {
                Route::Referrers(name(2)?, parse_digest(d)?)
            }
            _ => return Ok(None),
        };
        Ok(Some(route))
    }
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse().map_err(|e| RegistryError::digest_invalid(&e))
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
    }

    #[test]
    fn bad_paths() {
        assert_eq!(Route::parse("/v3/").unwrap(), None);
        assert_eq!(Route::parse("/v2/a").unwrap(), None);
        assert_eq!(Route::parse("/v2/tags/list").unwrap(), None);
        assert!(Route::parse("/v2/A/tags/list").is_err());
        assert!(Route::parse("/v2/a%2fb/tags/list").is_err());
        assert!(Route::parse("/v2/../x/tags/list").is_err());
        assert!(Route::parse("/v2/a/blobs/sha256:zz").is_err());
        assert!(Route::parse("/v2/a/manifests/bad*tag").is_err());
    }
}
