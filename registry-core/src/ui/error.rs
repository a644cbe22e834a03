//! Errors as HTML pages. The status, the headers (a `401`'s `WWW-Authenticate`, which
//! makes a browser ask for a password) and the message are the API's own, from
//! [`RegistryError`]'s one mapping; only the body becomes a page.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::BodyExt;

use super::templates::ErrorPage;
use crate::error::RegistryError;

/// The page, or the error's page.
pub(super) async fn or_page(result: Result<Response, RegistryError>) -> Response {
    match result {
        Ok(res) => res,
        Err(e) => page(e).await,
    }
}

async fn page(e: RegistryError) -> Response {
    let own_message = match &e {
        RegistryError::NotFound => Some("There is no such page."),
        RegistryError::MethodNotAllowed => Some("This page does not take that method."),
        _ => None,
    };
    let res = e.into_response();
    match own_message {
        Some(m) => with_headers_of(res, m.to_string()),
        None => api_error_page(res).await,
    }
}

/// An error response of the API (an OCI error body) as a page with its status, headers
/// and message.
pub(super) async fn api_error_page(res: Response) -> Response {
    let (parts, body) = res.into_parts();
    let message = message_of(body).await;
    with_headers_of(
        Response::from_parts(parts, axum::body::Body::empty()),
        message,
    )
}

fn with_headers_of(res: Response, message: String) -> Response {
    let (mut parts, _) = res.into_parts();
    let status = parts.status;
    let page = ErrorPage::new(status, message);
    let mut res = super::html(status, page.render_or_plain());
    // The error's own headers (the challenge, Retry-After), but the page's content type.
    parts.headers.remove(http::header::CONTENT_TYPE);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    for (name, value) in &parts.headers {
        res.headers_mut().insert(name.clone(), value.clone());
    }
    res
}

/// The first message of an OCI error body (what the API would have said).
async fn message_of(body: axum::body::Body) -> String {
    let Ok(collected) = body.collect().await else {
        return "The request failed.".into();
    };
    serde_json::from_slice::<serde_json::Value>(&collected.to_bytes())
        .ok()
        .and_then(|v| {
            v.pointer("/errors/0/message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "The request failed.".into())
}

/// A page for a status the UI decides itself (a refused cross-site form, say).
pub(super) fn status_page(status: StatusCode, message: impl Into<String>) -> Response {
    let page = ErrorPage::new(status, message.into());
    super::html(status, page.render_or_plain())
}
