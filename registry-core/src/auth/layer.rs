//! The middleware in front of every `/v2` handler: authenticate, authorise, apply the
//! request-level policies, and hand the [`Principal`] on in the request's extensions (the
//! catalog and the insights filter with it). Handlers never see a request that was not
//! allowed.
//!
//! It decides on the [`ApiRequest`] the edge decoded, never on the URI. When a mount's
//! source may not be read, the mount is taken out of that same value, so the handler
//! cannot mount what was refused, however the query spelled it.
//!
//! Rate limits ([`crate::ratelimit`]) are spent as soon as the caller is known, so a
//! caller over its budget costs no authorisation lookup.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Access, Action, AuthError, Principal, effective_actions};
use crate::Inner;
use crate::error::RegistryError;
use crate::ratelimit::PullHeaders;
use crate::request::ApiRequest;

pub(crate) async fn middleware(
    State(inner): State<Arc<Inner>>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    match check(&inner, &mut parts).await {
        Ok(rate) => {
            let mut res = next.run(Request::from_parts(parts, body)).await;
            if let Some(rate) = rate {
                rate.apply(res.headers_mut());
            }
            res
        }
        Err(e) => e.into_response(),
    }
}

/// What the middleware decided about a request that may proceed.
enum Decision {
    Allow,
    /// Allowed, but the caller may not pull from the mount source: drop the mount.
    AllowWithoutMount,
}

/// `Ok(Some)`: a pull under a rate limit, with the headers its response carries.
async fn check(
    inner: &Inner,
    parts: &mut http::request::Parts,
) -> Result<Option<PullHeaders>, RegistryError> {
    let Some(api) = parts.extensions.get::<ApiRequest>() else {
        return Err(RegistryError::NotDecoded);
    };
    let access = Access::of(api);
    let authn = &inner.config.authenticator;
    let principal = authenticate(inner, &parts.headers, &access).await?;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let rate = inner.rate_limits.check(api, &principal, peer)?;
    let decision = match decide(inner, &principal, &access).await? {
        Some(d) => d,
        None => return Err(refusal(inner, &principal, &access)),
    };
    inner.config.policy.check_request(api)?;
    if let (Some(proxy), Some(repo)) = (&inner.proxy, api.route.repository())
        && !api.is_read()
        && api.method != http::Method::DELETE
    {
        proxy.refuse_write(repo)?;
    }
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
        if let Some(api) = parts.extensions.get_mut::<ApiRequest>() {
            api.params.mount = None;
        }
    }
    parts.extensions.insert(principal);
    Ok(rate)
}

/// Who sent the request, by the configured authenticator: credentials that do not check
/// out are a `401` with the challenge for `access`.
async fn authenticate(
    inner: &Inner,
    headers: &http::HeaderMap,
    access: &Access,
) -> Result<Principal, RegistryError> {
    let authn = &inner.config.authenticator;
    match authn.authenticate(headers).await {
        Ok(p) => Ok(p),
        Err(e @ AuthError::Backend(_)) => Err(e.into()),
        Err(e) => Err(RegistryError::Unauthorized {
            challenge: authn.challenge(access, Some(&e)),
            message: e.to_string(),
        }),
    }
}

/// The answer to a caller without `access`: `401` with a challenge when logging in (or a
/// wider token) could help, `403 DENIED` otherwise.
fn refusal(inner: &Inner, principal: &Principal, access: &Access) -> RegistryError {
    let authn = &inner.config.authenticator;
    if principal.is_anonymous() || authn.challenge_when_denied() {
        RegistryError::Unauthorized {
            challenge: authn.challenge(access, Some(&AuthError::InsufficientScope)),
            message: "authentication required for this resource".into(),
        }
    } else {
        RegistryError::oci(
            oci_spec_types::ErrorCode::Denied,
            "requested access to the resource is denied",
        )
    }
}

/// Authenticates and authorises a request that is not an API request (the web UI's
/// pages) by exactly the API's rules: the principal if `access` is allowed, otherwise
/// the error the API would answer (a `401` with its challenge, or a `403`).
pub(crate) async fn admit(
    inner: &Inner,
    headers: &http::HeaderMap,
    access: &Access,
) -> Result<Principal, RegistryError> {
    let principal = authenticate(inner, headers, access).await?;
    match decide(inner, &principal, access).await? {
        Some(_) => Ok(principal),
        None => Err(refusal(inner, &principal, access)),
    }
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
