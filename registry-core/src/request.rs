//! One request, decoded once.
//!
//! The outermost layer of [`Registry::router`](crate::Registry::router) turns each request
//! into an [`ApiRequest`]: the route, the method, the query parameters the route takes
//! (percent-decoded once, typed, a repeated one refused), and the body's headers.
//! Authentication, authorisation, policies, metrics, events and handlers all read this one
//! value from the request's extensions; none of them looks at the URI again. That is what
//! makes "what is checked is what is served" hold: a query spelled `%6Dount=` is `mount`
//! for the access check and for the handler alike, because only one of them decodes it.

use form_urlencoded::parse as parse_query;
use http::{HeaderMap, Method, header, request::Parts};
use oci_spec_types::{Digest, ErrorCode, ReferenceError, RepositoryName, Tag};

use crate::error::RegistryError;
use crate::route::{Route, RouteError};
use crate::upload::state::ChunkRange;

/// A decoded API request. Found in the request's extensions by every layer below the
/// edge.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiRequest {
    /// The HTTP method.
    pub method: Method,
    /// The endpoint and what its path names.
    pub route: Route,
    /// The query parameters.
    pub params: Params,
    /// The headers describing the body.
    pub body: BodyHeaders,
    /// The `?ns=` namespace this request is served from, when an upstream answers for it
    /// (the route's repository is then under that upstream's prefix); echoed in the
    /// response's `OCI-Namespace`.
    pub namespace: Option<String>,
}

/// The query parameters of the distribution API, each decoded once. Only the ones the
/// route takes are read; the others are ignored, as are unknown keys (keys are exact and
/// case-sensitive after decoding: `Mount=` is not `mount=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Params {
    /// `digest`: the blob digest closing an upload (`POST` monolithic, `PUT`).
    pub digest: Option<Digest>,
    /// `mount` with `from`: a cross-repository mount. A `from` that is not a valid name,
    /// or a `mount` without `from`, is no mount (the spec's fallback: an ordinary upload).
    pub mount: Option<Mount>,
    /// `tag` (repeatable): the tags of a manifest pushed by digest.
    pub tags: Vec<Tag>,
    /// `n`: page size of listings.
    pub n: Option<usize>,
    /// `last`: where the previous page of a listing ended.
    pub last: Option<String>,
    /// `artifactType`: the referrers filter (empty is no filter).
    pub artifact_type: Option<String>,
    /// `ns`: the namespace a proxied pull is for (the spec's "Registry Proxying").
    pub ns: Option<String>,
    /// `prefix` and `sort` of the `_ext` listings.
    pub prefix: Option<String>,
    /// `sort` of the `_ext` listings.
    pub sort: Option<String>,
}

/// A cross-repository mount: link `digest` from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The blob to link.
    pub digest: Digest,
    /// The repository it is linked from.
    pub from: RepositoryName,
}

/// The headers that describe a request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BodyHeaders {
    /// `Content-Length`.
    pub content_length: Option<u64>,
    /// `Content-Range` of an upload chunk; `Some(None)` when present but malformed (the
    /// upload handler answers that with `416` and the session's progress).
    pub content_range: Option<Option<ChunkRange>>,
    /// `Content-Type`.
    pub content_type: Option<String>,
}

impl ApiRequest {
    /// Decodes a request's head. `Ok(None)`: not an API endpoint (a `404`).
    pub fn decode(parts: &Parts) -> Result<Option<ApiRequest>, RegistryError> {
        let method = parts.method.clone();
        let route = match Route::parse(parts.uri.path()) {
            Ok(Some(route)) => route,
            Ok(None) => return Ok(None),
            Err(e) => return Err(route_error(e, &method)),
        };
        refuse_codings(&parts.headers)?;
        let params = Params::decode(&route, &method, parts.uri.query().unwrap_or(""))?;
        let body = BodyHeaders::decode(&parts.headers);
        Ok(Some(ApiRequest {
            method,
            route,
            params,
            body,
            namespace: None,
        }))
    }

    /// Whether this is a `GET` or `HEAD` (everything else counts as a write).
    pub fn is_read(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }
}

/// A manifest reference that is neither a tag nor a digest names no manifest: a read or
/// delete of it is `404 MANIFEST_UNKNOWN` (as the conformance test expects), a push under
/// it is a bad request.
fn route_error(e: RouteError, method: &Method) -> RegistryError {
    match e {
        RouteError::Name(e) => RegistryError::name_invalid(&e),
        RouteError::Digest(e) => RegistryError::digest_invalid(&e),
        RouteError::Reference(e) if *method != Method::PUT => RegistryError::oci(
            ErrorCode::ManifestUnknown,
            format!("no manifest can have this reference ({e})"),
        ),
        RouteError::Reference(ReferenceError::Digest(e)) => RegistryError::digest_invalid(&e),
        RouteError::Reference(ReferenceError::Tag(e)) => RegistryError::tag_invalid(&e),
        // A kind of reference oci-spec-types may add later: still a bad reference to push to.
        RouteError::Reference(e) => RegistryError::oci(ErrorCode::ManifestInvalid, e.to_string()),
        RouteError::UploadId => RegistryError::oci(
            ErrorCode::BlobUploadUnknown,
            "upload session unknown (cancelled, expired or never started)",
        ),
    }
}

/// Bodies are stored as sent, so a coding the server would not undo (`Transfer-Encoding:
/// gzip, chunked`, `Content-Encoding: gzip`) would store the coded bytes: refused.
fn refuse_codings(headers: &HeaderMap) -> Result<(), RegistryError> {
    let unsupported = |name: header::HeaderName, allowed: &[&str]| {
        headers.get_all(&name).iter().any(|v| {
            v.to_str().map_or(true, |v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .any(|c| !allowed.iter().any(|a| c.eq_ignore_ascii_case(a)))
            })
        })
    };
    if unsupported(header::TRANSFER_ENCODING, &["chunked"]) {
        return Err(RegistryError::UnsupportedCoding(
            "only the chunked transfer coding is supported".into(),
        ));
    }
    if unsupported(header::CONTENT_ENCODING, &["identity"]) {
        return Err(RegistryError::UnsupportedCoding(
            "request bodies must not be content-encoded".into(),
        ));
    }
    Ok(())
}

/// The keys the API defines, with the routes and methods that read each.
fn takes(route: &Route, method: &Method, key: &str) -> bool {
    let post = *method == Method::POST;
    let put = *method == Method::PUT;
    match key {
        "digest" => {
            matches!(route, Route::UploadStart(_)) && post
                || matches!(route, Route::Upload(..)) && put
        }
        "mount" | "from" => matches!(route, Route::UploadStart(_)) && post,
        "tag" => matches!(route, Route::Manifest(..)) && put,
        "n" | "last" => matches!(route, Route::Catalog | Route::Tags(_) | Route::Extension(_)),
        "artifactType" => matches!(route, Route::Referrers(..)),
        "ns" => true,
        "prefix" | "sort" => matches!(route, Route::Extension(_)),
        _ => false,
    }
}

impl Params {
    fn decode(route: &Route, method: &Method, query: &str) -> Result<Params, RegistryError> {
        let mut p = Params::default();
        let mut seen: Vec<String> = Vec::new();
        let (mut mount, mut from) = (None, None);
        for (key, value) in parse_query(query.as_bytes()) {
            if !takes(route, method, &key) {
                continue;
            }
            if key != "tag" {
                if seen.iter().any(|k| *k == key) {
                    return Err(RegistryError::InvalidParameter(format!(
                        "query parameter {key:?} is given more than once"
                    )));
                }
                seen.push(key.to_string());
            }
            let value = value.into_owned();
            match &*key {
                "digest" => p.digest = Some(digest(&value)?),
                "mount" => mount = Some(digest(&value)?),
                "from" => from = Some(value),
                "tag" => {
                    let tag = value.parse().map_err(|e| RegistryError::tag_invalid(&e))?;
                    if !p.tags.contains(&tag) {
                        p.tags.push(tag);
                    }
                }
                "n" => {
                    p.n = Some(value.parse().map_err(|_| {
                        RegistryError::InvalidParameter(format!(
                            "pagination parameter n must be a non-negative integer, got {value:?}"
                        ))
                    })?);
                }
                "last" => p.last = Some(value),
                "artifactType" => p.artifact_type = Some(value).filter(|t| !t.is_empty()),
                "ns" => p.ns = Some(value),
                "prefix" => p.prefix = Some(value),
                "sort" => p.sort = Some(value),
                _ => {}
            }
        }
        p.mount = match (mount, from.and_then(|f| f.parse().ok())) {
            (Some(digest), Some(from)) => Some(Mount { digest, from }),
            _ => None,
        };
        Ok(p)
    }
}

fn digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse().map_err(|e| RegistryError::digest_invalid(&e))
}

impl BodyHeaders {
    fn decode(headers: &HeaderMap) -> BodyHeaders {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        BodyHeaders {
            // hyper refuses a malformed or repeated-and-different Content-Length itself.
            content_length: text(header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok()),
            content_range: headers
                .get(header::CONTENT_RANGE)
                .map(|v| v.to_str().ok().and_then(ChunkRange::parse)),
            content_type: text(header::CONTENT_TYPE).map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(method: Method, uri: &str) -> Result<Option<ApiRequest>, RegistryError> {
        let (parts, ()) = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .map(http::Request::into_parts)
            .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?;
        ApiRequest::decode(&parts)
    }

    fn params(method: Method, uri: &str) -> Params {
        match decode(method, uri) {
            Ok(Some(r)) => r.params,
            other => panic!("{uri}: {other:?}"),
        }
    }

    #[test]
    fn every_spelling_of_a_mount_is_one_mount() {
        let d = Digest::sha256_of(b"x");
        let want = Some(Mount {
            digest: d.clone(),
            from: "secret/app".parse().unwrap(),
        });
        for q in [
            format!("mount={d}&from=secret/app"),
            format!("%6Dount={d}&%66rom=secret/app"),
            format!("%6dount={d}&from=secret%2Fapp"),
            format!("%6D%6F%75%6E%74={d}&%66%72%6F%6D=secret%2Fapp"),
            format!(
                "mount={}&from=secret/app",
                d.to_string().replace(':', "%3A")
            ),
        ] {
            let p = params(Method::POST, &format!("/v2/carol/x/blobs/uploads/?{q}"));
            assert_eq!(p.mount, want, "{q}");
        }
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let d = Digest::sha256_of(b"x");
        for q in [
            format!("mount={d}&from=a&%66rom=secret/app"),
            format!("moun%74={d}&from=secret/app&%66rom=secret/app"),
            format!("mount={d}&mount={d}&from=a"),
            format!("digest={d}&digest={d}"),
        ] {
            let r = decode(Method::POST, &format!("/v2/carol/x/blobs/uploads/?{q}"));
            assert!(
                matches!(r, Err(RegistryError::InvalidParameter(_))),
                "{q}: {r:?}"
            );
        }
    }

    #[test]
    fn case_and_unknown_keys_are_not_the_api_s() {
        let d = Digest::sha256_of(b"x");
        let p = params(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?Mount={d}&FROM=b"),
        );
        assert_eq!(p.mount, None);
        // No valid source: no mount, as the spec's fallback.
        let p = params(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?mount={d}&from=B"),
        );
        assert_eq!(p.mount, None);
    }

    #[test]
    fn tags_repeat_and_parameters_only_count_where_they_belong() {
        let d = Digest::sha256_of(b"x");
        let p = params(
            Method::PUT,
            &format!("/v2/a/manifests/{d}?tag=a&tag=b&%74ag=c&tag=a"),
        );
        let tags: Vec<String> = p.tags.iter().map(ToString::to_string).collect();
        assert_eq!(tags, ["a", "b", "c"]);
        // `n` means nothing to a manifest, so a bad one is no error there.
        assert_eq!(params(Method::GET, "/v2/a/manifests/x?n=zz&n=1").n, None);
        assert!(decode(Method::GET, "/v2/a/tags/list?n=zz").is_err());
        assert!(decode(Method::PUT, &format!("/v2/a/manifests/{d}?tag=bad*")).is_err());
    }

    #[test]
    fn invalid_references_are_unknown_to_reads_and_invalid_to_pushes() {
        let code = |m: Method| match decode(m, "/v2/a/manifests/.INVALID_MANIFEST_NAME") {
            Err(RegistryError::Oci { code, .. }) => Some(code),
            _ => None,
        };
        assert_eq!(code(Method::GET), Some(ErrorCode::ManifestUnknown));
        assert_eq!(code(Method::HEAD), Some(ErrorCode::ManifestUnknown));
        assert_eq!(code(Method::DELETE), Some(ErrorCode::ManifestUnknown));
        assert_eq!(code(Method::PUT), Some(ErrorCode::ManifestInvalid));
    }

    #[test]
    fn codings_other_than_chunked_are_refused() {
        let head = |name: &str, value: &str| {
            let (parts, ()) = http::Request::builder()
                .method(Method::PATCH)
                .uri("/v2/a/blobs/uploads/abc")
                .header(name, value)
                .body(())
                .unwrap()
                .into_parts();
            ApiRequest::decode(&parts)
        };
        assert!(head("transfer-encoding", "chunked").is_ok());
        assert!(head("transfer-encoding", "Chunked").is_ok());
        assert!(head("transfer-encoding", "gzip, chunked").is_err());
        assert!(head("content-encoding", "gzip").is_err());
        assert!(head("content-encoding", "identity").is_ok());
    }
}
