//! Request handlers: decode the request, call the stores (and the upload state machine),
//! encode the answer. Routing is [`crate::route::Route`]; errors become responses in
//! [`crate::error`].

mod blobs;
mod discovery;
pub(crate) mod insights;
mod manifests;
pub(crate) mod visibility;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

use crate::Inner;
use crate::auth::Principal;
use crate::error::RegistryError;
use crate::exchange::{Call, Result, json_response};
use crate::request::{ApiRequest, Params};
use crate::route::Route;
use crate::upload::http as uploads;

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
        Route::Upload(repo, id) if m == Method::GET => uploads::status(call, repo, id).await,
        Route::Upload(repo, id) if m == Method::DELETE => uploads::cancel(call, repo, id).await,
        _ => Err(RegistryError::MethodNotAllowed),
    }
}

/// Pagination parameters `n` and `last`.
pub(crate) fn page(params: &Params) -> storage_traits::Page {
    storage_traits::Page::new(params.last.clone(), params.n)
}
