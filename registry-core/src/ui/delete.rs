//! Deleting a tag or a manifest: a confirmation page (`GET …/-/delete/<ref>`) whose form
//! posts back to the same path. The deletion itself is a `DELETE` sent through the API
//! router with the caller's own credentials, so every check a client's `DELETE` gets
//! (permissions, read-only mode, and the embedder's layers) applies unchanged.
//!
//! Browsers send stored Basic credentials with any request to this origin, whoever
//! caused it, so a `POST` is refused unless the browser says it comes from a page of
//! this same origin (`Origin`, else `Sec-Fetch-Site`, else `Referer`); and the form
//! carries the digest the page showed, so a tag moved since is not deleted.

use axum::body::Body;
use axum::response::{IntoResponse, Redirect, Response};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use oci_spec_types::{Digest, ErrorCode, Reference, RepositoryName};
use tower::ServiceExt;

use super::error::{api_error_page, status_page};
use super::pages::manifest::tags_of;
use super::pages::{can_log_in, user_of};
use super::templates::{ConfirmPage, render};
use super::{UiState, admit, format, html, path};
use crate::auth::{Access, Action};
use crate::error::RegistryError;

/// Largest form body accepted.
const MAX_FORM: usize = 4096;

fn delete_access(repo: &RepositoryName) -> Access {
    Access::Repository {
        name: repo.clone(),
        actions: Action::Delete.into(),
        mount_from: None,
    }
}

async fn current_digest(
    state: &UiState,
    repo: &RepositoryName,
    reference: &Reference,
) -> Result<Digest, RegistryError> {
    state
        .inner
        .metadata
        .get_manifest(repo, reference)
        .await?
        .map(|m| m.digest)
        .ok_or_else(|| {
            RegistryError::oci(
                ErrorCode::ManifestUnknown,
                format!("{reference} is not in repository {repo}"),
            )
        })
}

fn describe(reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => format!("tag {t}"),
        Reference::Digest(d) => format!("manifest {}", format::short_digest(d.as_str())),
    }
}

pub(super) async fn confirm(
    state: &UiState,
    parts: &Parts,
    repo: &RepositoryName,
    reference: &Reference,
) -> Result<Response, RegistryError> {
    let principal = admit(state, &parts.headers, &delete_access(repo)).await?;
    let digest = current_digest(state, repo, reference).await?;
    let tags = match reference {
        Reference::Digest(_) => tags_of(state, repo, &digest).await?,
        Reference::Tag(_) => Vec::new(),
    };
    let page = ConfirmPage {
        user: user_of(&principal),
        login: can_log_in(state),
        repo: repo.to_string(),
        repo_href: path::repository(repo.as_str()),
        what: describe(reference),
        digest: digest.to_string(),
        tags,
        action: path::delete(repo.as_str(), &reference.to_string()),
        cancel: match reference {
            Reference::Tag(_) => path::repository(repo.as_str()),
            Reference::Digest(d) => path::manifest(repo.as_str(), d.as_str()),
        },
    };
    Ok(html(StatusCode::OK, render(&page)?))
}

pub(super) async fn perform(
    state: &UiState,
    parts: &Parts,
    body: Body,
    repo: &RepositoryName,
    reference: &Reference,
) -> Result<Response, RegistryError> {
    if !same_origin(parts) {
        return Ok(status_page(
            StatusCode::FORBIDDEN,
            "This form was not sent from a page of this registry, so it is refused \
             (cross-site request forgery protection). Open the page and confirm there.",
        ));
    }
    admit(state, &parts.headers, &delete_access(repo)).await?;
    let form = match Limited::new(body, MAX_FORM).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(RegistryError::InvalidParameter(
                "the form is too large or could not be read".into(),
            ));
        }
    };
    let expected: Digest = form_urlencoded::parse(&form)
        .find(|(k, _)| k == "digest")
        .ok_or_else(|| RegistryError::InvalidParameter("the form names no digest".into()))?
        .1
        .parse()
        .map_err(|e| RegistryError::digest_invalid(&e))?;
    let current = current_digest(state, repo, reference).await?;
    if current != expected {
        return Ok(status_page(
            StatusCode::CONFLICT,
            format!(
                "{} now points at {current}, not at the {expected} you confirmed; nothing \
                 was deleted. Look again before deleting.",
                describe(reference)
            ),
        ));
    }
    let mut req = http::Request::builder()
        .method(Method::DELETE)
        .uri(format!("/v2/{repo}/manifests/{reference}"))
        .body(Body::empty())
        .map_err(|e| RegistryError::InvalidParameter(e.to_string()))?;
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        req.headers_mut()
            .insert(header::AUTHORIZATION, auth.clone());
    }
    // The client's address, for the rate limits of anonymous callers.
    if let Some(info) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        req.extensions_mut().insert(*info);
    }
    let res = match state.api.clone().oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    };
    if res.status() == StatusCode::ACCEPTED {
        let query = super::query::encode(&[("deleted", &reference.to_string())]);
        let to = format!("{}?{query}", path::repository(repo.as_str()));
        return Ok(Redirect::to(&to).into_response());
    }
    Ok(api_error_page(res).await)
}

/// Whether the browser says this request comes from a page of this origin: `Origin`
/// (sent with every `POST` by current browsers) naming the `Host` this request went to,
/// else `Sec-Fetch-Site: same-origin`, else a `Referer` on this host. Nothing said
/// is a refusal.
fn same_origin(parts: &Parts) -> bool {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let Some(host) = header("host") else {
        return false;
    };
    let authority_of = |u: &str| {
        url::Url::parse(u).ok().and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
    };
    if let Some(origin) = header("origin") {
        return authority_of(origin).is_some_and(|a| a.eq_ignore_ascii_case(host));
    }
    if let Some(site) = header("sec-fetch-site") {
        return site == "same-origin";
    }
    header("referer")
        .and_then(authority_of)
        .is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder()
            .method(Method::POST)
            .uri("/ui/r/a/-/delete/v1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_this_origin_may_post() {
        let host = ("host", "reg.example:5000");
        assert!(same_origin(&parts(&[
            host,
            ("origin", "http://reg.example:5000")
        ])));
        assert!(same_origin(&parts(&[
            host,
            ("origin", "https://reg.example:5000")
        ])));
        assert!(!same_origin(&parts(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&parts(&[host, ("origin", "null")])));
        assert!(!same_origin(&parts(&[
            host,
            ("origin", "http://reg.example:5001")
        ])));
        assert!(!same_origin(&parts(&[host])));
        assert!(same_origin(&parts(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&parts(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin(&parts(&[
            host,
            ("referer", "http://reg.example:5000/ui/r/a")
        ])));
        assert!(!same_origin(&parts(&[
            host,
            ("referer", "http://evil.example/")
        ])));
        // A cross-site Origin is refused whatever the other headers say.
        assert!(!same_origin(&parts(&[
            host,
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "same-origin")
        ])));
    }
}
