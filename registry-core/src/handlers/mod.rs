//! Request handlers: decode the request, call the stores (and the upload state machine),
//! encode the answer. Routing is [`crate::route::Route`]; errors become responses in
//! [`crate::error`].

mod blobs;
mod discovery;
mod insights;
mod manifests;
mod uploads;
mod visibility;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::Inner;
use crate::auth::Principal;
use crate::error::RegistryError;
use crate::request::{ApiRequest, Params};
use crate::route::Route;

pub(crate) type Result<T> = std::result::Result<T, RegistryError>;

/// The one handler behind every `/v2` path.
pub(crate) async fn dispatch(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let Some(request) = parts.extensions.remove::<ApiRequest>() else {
        return RegistryError::NotDecoded.into_response();
    };
    let principal = parts.extensions.remove::<Principal>();
    let call = Call {
        inner: &inner,
        request: &request,
        principal: principal.as_ref(),
        headers: &parts.headers,
    };
    let mut res = match route_to(call, body).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    };
    // Back to the edge, which derives the request's event from it.
    res.extensions_mut().insert(request);
    res
}

/// What a handler gets: the registry, the decoded request, who is calling (the auth
/// middleware always sets it; absent is anonymous), and the raw headers for the few
/// handlers that read one the edge does not decode (`Range`).
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) request: &'a ApiRequest,
    pub(crate) principal: Option<&'a Principal>,
    pub(crate) headers: &'a HeaderMap,
}

async fn route_to(call: Call<'_>, body: Body) -> Result<Response> {
    let inner = call.inner;
    let request = call.request;
    let m = &request.method;
    let head = *m == Method::HEAD;
    match &request.route {
        Route::Base if request.is_read() => Ok(json_response(StatusCode::OK, "{}".into())),
        Route::Catalog if m == Method::GET => discovery::catalog(call).await,
        Route::Tags(repo) if m == Method::GET => discovery::tags(call, repo).await,
        Route::Extension(ext) if m == Method::GET => insights::get(call, ext).await,
        Route::Referrers(repo, digest) if m == Method::GET => {
            discovery::referrers(call, repo, digest).await
        }
        Route::Manifest(repo, r) if request.is_read() => manifests::get(inner, repo, r, head).await,
        Route::Manifest(repo, r) if m == Method::PUT => manifests::put(call, repo, r, body).await,
        Route::Manifest(repo, r) if m == Method::DELETE => manifests::delete(inner, repo, r).await,
        Route::Blob(repo, d) if request.is_read() => blobs::get(call, repo, d, head).await,
        Route::Blob(repo, d) if m == Method::DELETE => blobs::delete(inner, repo, d).await,
        Route::UploadStart(repo) if m == Method::POST => uploads::start(call, repo, body).await,
        Route::Upload(repo, id) if m == Method::PATCH => uploads::patch(call, repo, id, body).await,
        Route::Upload(repo, id) if m == Method::PUT => uploads::put(call, repo, id, body).await,
        Route::Upload(repo, id) if m == Method::GET => uploads::status(inner, repo, id).await,
        Route::Upload(repo, id) if m == Method::DELETE => uploads::cancel(inner, repo, id).await,
        _ => Err(RegistryError::MethodNotAllowed),
    }
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

/// Pagination parameters `n` and `last`.
pub(crate) fn page(params: &Params) -> storage_traits::Page {
    storage_traits::Page::new(params.last.clone(), params.n)
}

pub(crate) use crate::clock::now_ms;
