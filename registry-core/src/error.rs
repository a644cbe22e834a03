//! The one place where anything that went wrong becomes an HTTP response with an OCI error
//! code. Backend failures become a 500 whose cause is logged, never sent to the client.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use oci_spec_types::{DigestError, ErrorBody, ErrorCode, ManifestError, NameError};
use storage_traits::{MetadataError, StorageError};

use crate::upload::state::UploadError;

/// Everything a request can fail with; its `IntoResponse` impl is the one mapping to an
/// HTTP status and OCI error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A spec error with its code's own status.
    #[error("{code}: {message}")]
    Oci {
        /// The spec's error code.
        code: ErrorCode,
        /// Said to the client.
        message: String,
        /// The error body's `detail`, when there is one.
        detail: Option<serde_json::Value>,
    },
    /// A request reached a layer without the decoded request the edge puts in its
    /// extensions: the layers were assembled wrongly. A 500, never a second decode.
    #[error("request was not decoded by the registry's edge layer")]
    NotDecoded,
    /// No API endpoint at this path.
    #[error("no such endpoint")]
    NotFound,
    /// The endpoint exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A query parameter the API defines was malformed (`n` not a number, say).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// A manifest over the size limit: `413`.
    #[error("manifest larger than {limit} bytes")]
    ManifestTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A `Range` outside the blob: `416` with `Content-Range: bytes */SIZE`.
    #[error("range not satisfiable for blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// A chunk did not start at the session's offset: 416 with the current `Range`.
    #[error("upload chunk must start at offset {offset}")]
    UploadOffset {
        /// Bytes the session holds.
        offset: u64,
        /// The session's URL.
        location: String,
    },
    /// Garbage collection cannot run now (unsupported store, or another pass running).
    #[error("garbage collection unavailable: {0}")]
    GcUnavailable(&'static str),
    /// No credentials, or bad ones: 401 with the authenticator's `WWW-Authenticate`
    /// challenge, which tells the client how to log in.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The `WWW-Authenticate` value.
        challenge: String,
        /// Said to the client.
        message: String,
    },
    /// An authenticator or authorizer backend failed: a 500 with the cause logged.
    /// (`From<AuthError>` is in the `auth` module, which depends on this one, not the
    /// other way round.)
    #[error("authentication backend failed: {0}")]
    AuthBackend(String),
    /// A web UI page could not be rendered: a 500 with the cause logged.
    #[error("page rendering failed: {0}")]
    Render(String),
    /// A request body in a coding the server does not undo (`Transfer-Encoding: gzip`,
    /// `Content-Encoding: gzip`): storing it would store the coded bytes.
    #[error("unsupported coding: {0}")]
    UnsupportedCoding(String),
    /// A pull-through cache's upstream failed or served something unusable: `502`.
    #[error("upstream registry: {0}")]
    Upstream(String),
    /// Too many open upload sessions: `429` until some finish or expire.
    #[error("too many open upload sessions (limit {limit})")]
    TooManyUploads {
        /// The limit of open sessions.
        limit: u64,
    },
    /// The caller spent its budget of pulls or writes ([`crate::ratelimit`]): `429` with
    /// `Retry-After`, and the `RateLimit-*` headers when a pull was refused.
    #[error("rate limit reached; retry in {retry_after:?}")]
    RateLimited {
        /// How long until the next request would be admitted.
        retry_after: std::time::Duration,
        /// The pull limit, for the `RateLimit-*` headers, when a pull was refused.
        pull_limit: Option<crate::ratelimit::RateLimit>,
    },
    /// A blob store error: its spec code where it has one (a missing blob is
    /// `BLOB_UNKNOWN`), otherwise a 5xx with the cause logged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A metadata store error: its spec code where it has one (`MANIFEST_BLOB_UNKNOWN`,
    /// `DENIED` for an immutable tag), otherwise a 5xx with the cause logged.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

impl RegistryError {
    /// A spec error with `code` and `message`, no detail.
    pub fn oci(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError::Oci {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// `NAME_INVALID` for a repository name that does not parse.
    pub fn name_invalid(e: &NameError) -> Self {
        Self::oci(ErrorCode::NameInvalid, e.to_string())
    }

    /// `MANIFEST_INVALID` for a tag that does not parse.
    pub fn tag_invalid(e: &NameError) -> Self {
        Self::oci(ErrorCode::ManifestInvalid, e.to_string())
    }

    /// `DIGEST_INVALID` for a digest that does not parse.
    pub fn digest_invalid(e: &DigestError) -> Self {
        Self::oci(ErrorCode::DigestInvalid, e.to_string())
    }

    /// `MANIFEST_INVALID`, or `413` for a manifest over the size limit.
    pub fn manifest_invalid(e: &ManifestError) -> Self {
        match e {
            ManifestError::TooLarge => RegistryError::ManifestTooLarge {
                limit: oci_spec_types::manifest::MAX_MANIFEST_SIZE,
            },
            other => Self::oci(ErrorCode::ManifestInvalid, other.to_string()),
        }
    }

    /// The response to a refused upload step; `location` is the session's URL.
    pub fn upload(e: UploadError, location: &str) -> Self {
        match e {
            UploadError::OffsetMismatch { expected } => RegistryError::UploadOffset {
                offset: expected,
                location: location.to_string(),
            },
            UploadError::LengthMismatch { declared, received } => Self::oci(
                ErrorCode::SizeInvalid,
                format!("declared {declared} bytes but received {received}"),
            ),
            UploadError::DigestMismatch { expected, computed } => RegistryError::Oci {
                code: ErrorCode::DigestInvalid,
                message: format!("content has digest {computed}, not {expected}"),
                detail: Some(serde_json::json!({ "digest": expected.to_string() })),
            },
            UploadError::InvalidTransition(what) => Self::oci(ErrorCode::BlobUploadInvalid, what),
        }
    }
}

fn error_response(
    status: StatusCode,
    code: ErrorCode,
    message: String,
    detail: Option<serde_json::Value>,
) -> Response {
    let body = ErrorBody::new(code, message, detail).to_json();
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST)
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        match self {
            RegistryError::Oci {
                code,
                message,
                detail,
            } => error_response(status_of(code), code, message, detail),
            RegistryError::NotFound => error_response(
                StatusCode::NOT_FOUND,
                ErrorCode::Unsupported,
                "no such endpoint in the distribution API".into(),
                None,
            ),
            RegistryError::MethodNotAllowed => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Unsupported,
                "method not allowed on this endpoint".into(),
                None,
            ),
            RegistryError::GcUnavailable(why) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unsupported,
                format!("garbage collection unavailable: {why}"),
                None,
            ),
            RegistryError::InvalidParameter(message) => error_response(
                StatusCode::BAD_REQUEST,
                ErrorCode::Unsupported,
                message,
                None,
            ),
            RegistryError::ManifestTooLarge { limit } => error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::SizeInvalid,
                format!("manifest is larger than the limit of {limit} bytes"),
                None,
            ),
            RegistryError::RangeNotSatisfiable { size } => {
                // No OCI code fits a bad Range; HTTP's own answer is the 416 and the size.
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    res.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                res
            }
            RegistryError::UploadOffset { offset, location } => {
                let mut res = error_response(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    ErrorCode::BlobUploadInvalid,
                    format!("chunk must start at offset {offset}"),
                    None,
                );
                let h = res.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&crate::upload::state::range_header(offset)) {
                    h.insert(header::RANGE, v);
                }
                if let Ok(v) = HeaderValue::from_str(&location) {
                    h.insert(header::LOCATION, v);
                }
                res
            }
            RegistryError::Unauthorized { challenge, message } => {
                let mut res = error_response(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    message,
                    None,
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                res
            }
            e @ (RegistryError::AuthBackend(_)
            | RegistryError::Render(_)
            | RegistryError::NotDecoded) => internal(&e),
            RegistryError::Upstream(message) => {
                tracing::warn!(error = %message, "upstream registry failed");
                let body = ErrorBody::new(ErrorCode::Unsupported, message, None).to_json();
                let body = body.replacen("\"UNSUPPORTED\"", "\"UNKNOWN\"", 1);
                let mut res = Response::new(Body::from(body));
                *res.status_mut() = StatusCode::BAD_GATEWAY;
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                res
            }
            RegistryError::UnsupportedCoding(message) => error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::Unsupported,
                message,
                None,
            ),
            RegistryError::TooManyUploads { limit } => {
                let mut res = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    format!(
                        "too many open upload sessions (limit {limit}); finish or cancel some, or retry later"
                    ),
                    None,
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
                res
            }
            RegistryError::RateLimited {
                retry_after,
                pull_limit,
            } => {
                let mut res = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TooManyRequests,
                    format!(
                        "rate limit reached; retry in {} s",
                        crate::ratelimit::retry_after_secs(retry_after)
                    ),
                    None,
                );
                crate::ratelimit::refusal_headers(retry_after, pull_limit, res.headers_mut());
                res
            }
            RegistryError::Storage(e) => match e {
                StorageError::NotFound(d) => error_response(
                    StatusCode::NOT_FOUND,
                    ErrorCode::BlobUnknown,
                    format!("blob {d} not found"),
                    None,
                ),
                StorageError::UploadNotFound(_) | StorageError::InvalidUploadId(_) => {
                    error_response(
                        StatusCode::NOT_FOUND,
                        ErrorCode::BlobUploadUnknown,
                        "upload session unknown".into(),
                        None,
                    )
                }
                StorageError::RangeNotSatisfiable { size } => {
                    RegistryError::RangeNotSatisfiable { size }.into_response()
                }
                StorageError::Conflict(_) => error_response(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BlobUploadInvalid,
                    "upload session changed during this request".into(),
                    None,
                ),
                StorageError::Input(source) => error_response(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BlobUploadInvalid,
                    format!("request body failed: {source}"),
                    None,
                ),
                e @ StorageError::Backend { .. } => unavailable(&e),
                other => internal(&other),
            },
            RegistryError::Metadata(e) => match e {
                MetadataError::MissingReferences { blobs, manifests } => {
                    let missing: Vec<String> = blobs
                        .iter()
                        .chain(manifests.iter())
                        .map(|d| d.to_string())
                        .collect();
                    error_response(
                        status_of(ErrorCode::ManifestBlobUnknown),
                        ErrorCode::ManifestBlobUnknown,
                        format!(
                            "manifest references unknown content: {}",
                            missing.join(", ")
                        ),
                        Some(serde_json::json!({ "missing": missing })),
                    )
                }
                MetadataError::BlobBeingDeleted(d) => {
                    let mut res = error_response(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::TooManyRequests,
                        format!("blob {d} is being garbage-collected; retry in a moment"),
                        None,
                    );
                    res.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    res
                }
                MetadataError::TagImmutable { tag, current } => error_response(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Denied,
                    format!("tag {tag} is immutable: it already points at {current}"),
                    None,
                ),
                e @ MetadataError::Backend { .. } => unavailable(&e),
                other => internal(&other),
            },
        }
    }
}

/// A backend that failed (unreachable, timing out, refusing): `503` with `Retry-After`,
/// so clients and load balancers treat it as the passing condition it usually is rather
/// than as a bug of this registry. The detail goes to the log, not to the client.
fn unavailable(e: &dyn std::error::Error) -> Response {
    tracing::error!(error = %e, "a storage backend failed");
    let body = r#"{"errors":[{"code":"UNKNOWN","message":"a storage backend is unavailable; retry later"}]}"#;
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

fn internal(e: &dyn std::error::Error) -> Response {
    tracing::error!(error = %e, "request failed in a backend");
    let body = r#"{"errors":[{"code":"UNKNOWN","message":"internal server error"}]}"#;
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
