//! Request handlers: decode the request, call the stores (and the upload state machine),
//! encode the answer. Routing is [`crate::route::Route`]; errors become responses in
//! [`crate::error`].

mod blobs;
mod discovery;
mod insights;
mod manifests;
mod uploads;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::Inner;
use crate::error::RegistryError;
use crate::route::{Parsed, Route};

pub(crate) type Result<T> = std::result::Result<T, RegistryError>;

/// The one handler behind every `/v2` path.
pub(crate) async fn dispatch(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let mut res = match handle(&inner, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    };
    res.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    res
}

async fn handle(inner: &Inner, req: Request) -> Result<Response> {
    let (mut parts, body) = req.into_parts();
    let route = match parts.extensions.remove::<Parsed>() {
        Some(Parsed(route)) => route,
        None => Route::parse(parts.uri.path())?.ok_or(RegistryError::NotFound)?,
    };
    let mut res = route_to(inner, &route, parts, body).await?;
    // Back to the metrics middleware, which derives the request's event from it.
    res.extensions_mut().insert(Parsed(route));
    Ok(res)
}

async fn route_to(
    inner: &Inner,
    route: &Route,
    parts: http::request::Parts,
    body: Body,
) -> Result<Response> {
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let m = &parts.method;
    let h = &parts.headers;
    match route {
        Route::Base if m == Method::GET || m == Method::HEAD => {
            Ok(json_response(StatusCode::OK, "{}".into()))
        }
        Route::Catalog if m == Method::GET => {
            let principal = parts.extensions.get::<crate::auth::Principal>();
            discovery::catalog(inner, &query, principal).await
        }
        Route::Tags(repo) if m == Method::GET => discovery::tags(inner, repo, &query).await,
        Route::Extension(path) if m == Method::GET => insights::get(inner, path, &query).await,
        Route::Referrers(repo, digest) if m == Method::GET => {
            discovery::referrers(inner, repo, digest, &query).await
        }
        Route::Manifest(repo, r) if m == Method::GET || m == Method::HEAD => {
            manifests::get(inner, repo, r, m == Method::HEAD).await
        }
        Route::Manifest(repo, r) if m == Method::PUT => {
            manifests::put(inner, repo, r, h, body).await
        }
        Route::Manifest(repo, r) if m == Method::DELETE => manifests::delete(inner, repo, r).await,
        Route::Blob(repo, d) if m == Method::GET || m == Method::HEAD => {
            blobs::get(inner, repo, d, h, m == Method::HEAD).await
        }
        Route::Blob(repo, d) if m == Method::DELETE => blobs::delete(inner, repo, d).await,
        Route::UploadStart(repo) if m == Method::POST => {
            uploads::start(inner, repo, &query, h, body).await
        }
        Route::Upload(repo, id) if m == Method::PATCH => {
            uploads::patch(inner, repo, id, h, body).await
        }
        Route::Upload(repo, id) if m == Method::PUT => {
            uploads::put(inner, repo, id, &query, h, body).await
        }
        Route::Upload(repo, id) if m == Method::GET => uploads::status(inner, repo, id).await,
        Route::Upload(repo, id) if m == Method::DELETE => uploads::cancel(inner, repo, id).await,
        _ => Err(RegistryError::MethodNotAllowed),
    }
}

/// The `Range` header value for upload progress: `0-<last byte>`. The spec's (ambiguous)
/// convention for an empty session is `0-0`.
pub(crate) fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// An empty-bodied response with the given headers (values that are not valid header
/// text are dropped rather than failing the request; ours are all ASCII).
pub(crate) fn empty(status: StatusCode, headers: &[(&str, String)]) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    set_headers(res.headers_mut(), headers);
    res
}

pub(crate) fn set_headers(map: &mut HeaderMap, headers: &[(&str, String)]) {
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(n, v);
        }
    }
}

pub(crate) fn header_str(h: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// Pagination parameters `n` and `last`. A non-numeric `n` is a client error.
pub(crate) fn page(query: &HashMap<String, String>) -> Result<storage_traits::Page> {
    let limit = match query.get("n") {
        None => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            RegistryError::InvalidParameter(format!(
                "pagination parameter n must be a non-negative integer, got {n:?}"
            ))
        })?),
    };
    Ok(storage_traits::Page::new(query.get("last").cloned(), limit))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
