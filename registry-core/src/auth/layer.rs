//! The middleware in front of every `/v2` handler: parse the route, authenticate,
//! authorise, apply the request-level policies, and hand the [`Principal`] on in the
//! request's extensions (the catalog filters with it). Handlers never see a request that
//! was not allowed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Uri};

use super::{Access, Action, AuthError, Principal, effective_actions};
use crate::Inner;
use crate::error::RegistryError;
use crate::route::{Parsed, Route};

pub(crate) async fn middleware(
    State(inner): State<Arc<Inner>>,
    mut req: Request,
    next: Next,
) -> Response {
    match check(&inner, &mut req).await {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let mut res = e.into_response();
            res.headers_mut().insert(
                "Docker-Distribution-API-Version",
                HeaderValue::from_static("registry/2.0"),
            );
            res
        }
    }
}

/// What the middleware decided about a request that may proceed.
enum Decision {
    Allow,
    /// Allowed, but the caller may not pull from the mount source: drop the mount.
    AllowWithoutMount,
}

async fn check(inner: &Inner, req: &mut Request) -> Result<(), RegistryError> {
    // The route, not the raw path, is what decisions are made on: a path whose name the
    // grammar refuses is a NAME_INVALID here, before anyone is asked anything.
    let route = match req.extensions_mut().remove::<Parsed>() {
        Some(Parsed(route)) => route,
        None => match Route::parse(req.uri().path())? {
            Some(route) => route,
            None => return Ok(()), // not an API endpoint: the dispatcher answers 404
        },
    };
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let access = Access::of(&route, req.method(), &query);
    let authn = &inner.config.authenticator;
    let principal = match authn.authenticate(req.headers()).await {
        Ok(p) => p,
        Err(e @ AuthError::Backend(_)) => return Err(RegistryError::Auth(e)),
        Err(e) => {
            return Err(RegistryError::Unauthorized {
                challenge: authn.challenge(&access, Some(&e)),
                message: e.to_string(),
            });
        }
    };
    let decision = match decide(inner, &principal, &access).await? {
        Some(d) => d,
        None if principal.is_anonymous() || authn.challenge_when_denied() => {
            return Err(RegistryError::Unauthorized {
                challenge: authn.challenge(&access, Some(&AuthError::InsufficientScope)),
                message: "authentication required for this resource".into(),
            });
        }
        None => {
            return Err(RegistryError::oci(
                oci_spec_types::ErrorCode::Denied,
                "requested access to the resource is denied",
            ));
        }
    };
    inner
        .config
        .policy
        .check_request(&route, req.method(), req.headers())?;
    if let Decision::AllowWithoutMount = decision {
        if authn.challenge_when_denied() {
            // Token clients ask for the source scope when challenged for it, and fall
            // back to an ordinary upload if the token server refuses (as with
            // distribution, which requires the source scope).
            return Err(RegistryError::Unauthorized {
                challenge: authn.challenge(&access, Some(&AuthError::InsufficientScope)),
                message: "mounting needs pull access to the source repository".into(),
            });
        }
        *req.uri_mut() = without_mount(req.uri())?;
    }
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(Parsed(route));
    Ok(())
}

/// `None`: not allowed.
async fn decide(
    inner: &Inner,
    principal: &Principal,
    access: &Access,
) -> Result<Option<Decision>, RegistryError> {
    let authz = inner.config.authorizer.as_ref();
    let allowed = match access {
        Access::Base => authz.may_browse(principal).await?,
        Access::Catalog => principal.may_list_catalog() && authz.may_browse(principal).await?,
        Access::Repository {
            name,
            actions,
            mount_from,
        } => {
            let ok = effective_actions(authz, principal, name)
                .await?
                .covers(*actions);
            if ok && let Some(from) = mount_from {
                let pull = effective_actions(authz, principal, from)
                    .await?
                    .contains(Action::Pull);
                return Ok(Some(if pull {
                    Decision::Allow
                } else {
                    Decision::AllowWithoutMount
                }));
            }
            ok
        }
    };
    Ok(allowed.then_some(Decision::Allow))
}

/// The URI with the `mount` and `from` query parameters removed (the rest kept as sent).
/// Fails closed: if the URI cannot be rebuilt, the request is refused rather than passed
/// on with the mount still in it.
fn without_mount(uri: &Uri) -> Result<Uri, RegistryError> {
    let query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            !kv.is_empty() && key != "mount" && key != "from"
        })
        .collect();
    let mut pq = uri.path().to_string();
    if !query.is_empty() {
        pq.push('?');
        pq.push_str(&query.join("&"));
    }
    let refused = |_| RegistryError::InvalidParameter("malformed upload query".into());
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(refused)?);
    Uri::from_parts(parts)
        .map_err(|_| RegistryError::InvalidParameter("malformed upload query".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_mount_keeps_the_rest() {
        let uri: Uri = "/v2/a/blobs/uploads/?mount=sha256:x&from=b&digest=sha256:y"
            .parse()
            .unwrap();
        assert_eq!(
            without_mount(&uri).unwrap().to_string(),
            "/v2/a/blobs/uploads/?digest=sha256:y"
        );
        let uri: Uri = "/v2/a/blobs/uploads/?mount=sha256:x&from=b"
            .parse()
            .unwrap();
        assert_eq!(
            without_mount(&uri).unwrap().to_string(),
            "/v2/a/blobs/uploads/"
        );
    }
}
