//! The web UI: server-rendered HTML pages that browse what the registry stores
//! (repositories, tags, manifests and their referrers, where the bytes go), and delete
//! tags and manifests, for people rather than clients. Documented in `docs/ui.md`.
//!
//! It is its own [`axum::Router`] serving `/ui/` and below, so an embedder mounts it next
//! to [`Registry::router`] (or not at all):
//!
//! ```no_run
//! # fn demo(registry: registry_core::Registry) -> axum::Router {
//! let api = registry.router();
//! let ui = registry_core::ui::Ui::new(&registry).with_api(api.clone()).router();
//! api.merge(ui)
//! # }
//! ```
//!
//! - Who may see what is decided exactly as for the API: the same authenticator (Basic,
//!   bearer token) and authorizer, through the same decision function
//!   (`auth::layer::admit`); lists show only the repositories the caller may pull, as
//!   the insights do (`handlers::visibility`).
//! - A deletion is sent through the API router itself (the one given to
//!   [`Ui::with_api`]), as a `DELETE` with the caller's own credentials, so read-only
//!   mode, permissions and whatever layers the embedder put around the API (webhooks,
//!   mirrors) apply to it as to any client's. It is a `POST` after a confirmation page,
//!   refused unless the browser says it comes from this same origin (CSRF).
//! - Templates are compiled into the binary (askama), with the CSS and JavaScript
//!   (`assets`): nothing is fetched from elsewhere.

mod assets;
mod delete;
mod error;
mod format;
mod pages;
mod path;
mod query;
mod ranking;
mod templates;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderMap, Method, StatusCode};

use crate::auth::{Access, Principal};
use crate::error::RegistryError;
use crate::{Inner, Registry};

/// The web UI of a registry; [`Ui::router`] makes its router.
#[derive(Debug, Clone)]
pub struct Ui {
    registry: Registry,
    api: Option<Router>,
}

impl Ui {
    /// The UI of `registry`.
    pub fn new(registry: &Registry) -> Ui {
        Ui {
            registry: registry.clone(),
            api: None,
        }
    }

    /// The API router deletions are sent through (by default [`Registry::router`]
    /// without any layer of yours). Give the one you serve, with its layers, so a
    /// deletion from the UI is seen by them as any other.
    #[must_use]
    pub fn with_api(mut self, api: Router) -> Ui {
        self.api = Some(api);
        self
    }

    /// The pages, under `/ui/`.
    pub fn router(self) -> Router {
        let api = self.api.unwrap_or_else(|| self.registry.router());
        let state = Arc::new(UiState {
            inner: self.registry.inner.clone(),
            api,
            rankings: ranking::Rankings::default(),
        });
        Router::new()
            .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
            .route("/ui/", get(repositories))
            .route("/ui/storage", get(storage))
            .route("/ui/login", get(login))
            .route("/ui/assets/{name}", get(assets::serve))
            .route("/ui/r/{*path}", get(repository_get).post(repository_post))
            .route("/ui/{*rest}", axum::routing::any(not_found))
            .with_state(state)
    }
}

/// The UI of `registry` under `/ui/`, deleting through [`Registry::router`].
pub fn router(registry: &Registry) -> Router {
    Ui::new(registry).router()
}

#[derive(Debug)]
pub(crate) struct UiState {
    inner: Arc<Inner>,
    api: Router,
    rankings: ranking::Rankings,
}

type Shared = State<Arc<UiState>>;

/// The caller, admitted as for `access` by the API's own rules.
async fn admit(
    state: &UiState,
    headers: &HeaderMap,
    access: &Access,
) -> Result<Principal, RegistryError> {
    crate::auth::layer::admit(&state.inner, headers, access).await
}

async fn repositories(State(state): Shared, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    error::or_page(pages::repositories::page(&state, &parts).await).await
}

async fn storage(State(state): Shared, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    error::or_page(pages::storage::page(&state, &parts).await).await
}

/// Asks the browser for credentials (a `401` with the authenticator's challenge) unless
/// it sent some that check out, then goes to the repositories.
async fn login(State(state): Shared, headers: HeaderMap) -> Response {
    if !state.inner.config.authenticator.identifies_callers() {
        // Nobody can log in: everyone is anonymous.
        return Redirect::to("/ui/").into_response();
    }
    let principal = admit(&state, &headers, &Access::Base).await;
    match principal {
        Ok(p) if !p.is_anonymous() => Redirect::to("/ui/").into_response(),
        Ok(_) => {
            let challenge = state
                .inner
                .config
                .authenticator
                .challenge(&Access::Base, None);
            error::or_page(Err(RegistryError::Unauthorized {
                challenge,
                message: "log in to see the repositories you may pull".into(),
            }))
            .await
        }
        Err(e) => error::or_page(Err(e)).await,
    }
}

async fn repository_get(State(state): Shared, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let result = match path::UiPath::parse(parts.uri.path()) {
        Ok(path::UiPath::Repository(repo)) => pages::repository::page(&state, &parts, &repo).await,
        Ok(path::UiPath::Manifest(repo, reference)) => {
            pages::manifest::page(&state, &parts, &repo, &reference).await
        }
        Ok(path::UiPath::Delete(repo, reference)) => {
            delete::confirm(&state, &parts, &repo, &reference).await
        }
        Err(e) => Err(e),
    };
    error::or_page(result).await
}

async fn repository_post(State(state): Shared, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let result = match path::UiPath::parse(parts.uri.path()) {
        Ok(path::UiPath::Delete(repo, reference)) if parts.method == Method::POST => {
            delete::perform(&state, &parts, body, &repo, &reference).await
        }
        Ok(_) => Err(RegistryError::MethodNotAllowed),
        Err(e) => Err(e),
    };
    error::or_page(result).await
}

async fn not_found() -> Response {
    error::status_page(StatusCode::NOT_FOUND, "There is no such page.")
}

/// An HTML page.
fn html(status: StatusCode, body: String) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    // Nothing but our own scripts, styles and images; no framing by other sites.
    res.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    res.headers_mut().insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    res
}
