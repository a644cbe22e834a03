//! What a handler gets and how it answers: [`Call`], the result type, and the response
//! builders every handler shares (the upload handlers in [`crate::upload`] included).

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::Inner;
use crate::auth::Principal;
use crate::error::RegistryError;
use crate::request::ApiRequest;

pub(crate) type Result<T> = std::result::Result<T, RegistryError>;

/// What a handler gets: the registry, the decoded request, who is calling (the auth
/// middleware always sets it; absent is anonymous), and the raw headers for the few
/// handlers that read one the edge does not decode (`Range`).
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) inner: &'a Arc<Inner>,
    pub(crate) request: &'a ApiRequest,
    pub(crate) principal: Option<&'a Principal>,
    pub(crate) headers: &'a HeaderMap,
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
