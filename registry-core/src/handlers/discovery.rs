//! Content discovery: `_catalog`, `tags/list` and the referrers API.

use axum::response::Response;
use http::StatusCode;
use oci_spec_types::{Descriptor, Digest, ErrorCode, RepositoryName, media_type};
use storage_traits::Page;

use super::page;
use super::visibility::Visibility;
use crate::error::RegistryError;
use crate::exchange::{Call, Result, json_response, set_headers};

/// Adds `Link: <…?n=N&last=LAST>; rel="next"` when a full page was returned, so clients
/// know to ask for more.
fn with_next_link(mut res: Response, base: &str, n: Option<usize>, items: &[String]) -> Response {
    if let (Some(n), Some(last)) = (n, items.last())
        && n > 0
        && items.len() == n
    {
        let link = format!("<{base}?n={n}&last={last}>; rel=\"next\"");
        set_headers(res.headers_mut(), &[("Link", link)]);
    }
    res
}

pub(super) async fn catalog(call: Call<'_>) -> Result<Response> {
    let page = page(&call.request.params);
    let repos: Vec<String> = if page.limit == Some(0) {
        Vec::new()
    } else {
        visible_repositories(call, &page).await?
    };
    let body = serde_json::json!({ "repositories": repos }).to_string();
    Ok(with_next_link(
        json_response(StatusCode::OK, body),
        "/v2/_catalog",
        page.limit,
        &repos,
    ))
}

/// The catalog lists only repositories the caller may pull, as the authorizer says (a
/// token's `registry:catalog:*` grant lets it list, the authorizer decides what it sees;
/// distribution does the same). Filtering happens after listing: the store is asked for
/// pages of `n` names from `last` (all names when there is no `n`), the visible ones are
/// kept, until `n` visible names are found or the store runs out. The `Link` header's
/// `last` is then the last name returned, which is exactly where the next page starts, so
/// pages neither skip nor repeat; the cost is that a caller who sees few of many
/// repositories makes the registry scan further for one page. A request without a
/// principal (the middleware always sets one) is treated as anonymous.
async fn visible_repositories(call: Call<'_>, page: &Page) -> Result<Vec<String>> {
    let inner = call.inner;
    let mut visibility = Visibility::catalog(call);
    let mut visible = Vec::new();
    let mut last = page.last.clone();
    loop {
        let batch = inner
            .metadata
            .list_repositories(&Page::new(last.clone(), page.limit))
            .await?;
        let exhausted = page.limit.is_none_or(|n| batch.len() < n);
        for name in &batch {
            if visibility.may_pull(name.as_str()).await? {
                visible.push(name.to_string());
                if Some(visible.len()) == page.limit {
                    return Ok(visible);
                }
            }
        }
        match batch.last() {
            Some(name) if !exhausted => last = Some(name.to_string()),
            _ => return Ok(visible),
        }
    }
}

pub(super) async fn tags(call: Call<'_>, repo: &RepositoryName) -> Result<Response> {
    let page = page(&call.request.params);
    let tags = call
        .inner
        .metadata
        .list_tags(repo, &page)
        .await?
        .ok_or_else(|| {
            RegistryError::oci(
                ErrorCode::NameUnknown,
                format!("repository {repo} is not known"),
            )
        })?;
    let tags: Vec<String> = if page.limit == Some(0) {
        Vec::new()
    } else {
        tags.into_iter().map(|t| t.to_string()).collect()
    };
    let body = serde_json::json!({ "name": repo.as_str(), "tags": tags }).to_string();
    let base = format!("/v2/{repo}/tags/list");
    Ok(with_next_link(
        json_response(StatusCode::OK, body),
        &base,
        page.limit,
        &tags,
    ))
}

pub(super) async fn referrers(
    call: Call<'_>,
    repo: &RepositoryName,
    subject: &Digest,
) -> Result<Response> {
    let filter = call.request.params.artifact_type.as_deref();
    let records = call.inner.metadata.referrers(repo, subject, filter).await?;
    let manifests: Vec<Descriptor> = records
        .into_iter()
        .map(|r| Descriptor {
            media_type: r.media_type,
            digest: r.digest,
            size: r.size,
            artifact_type: r.artifact_type,
            urls: None,
            annotations: (!r.annotations.is_empty()).then_some(r.annotations),
        })
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let mut res = json_response(StatusCode::OK, body);
    let mut headers = vec![("Content-Type", media_type::OCI_INDEX.to_string())];
    if filter.is_some() {
        headers.push(("OCI-Filters-Applied", "artifactType".to_string()));
    }
    set_headers(res.headers_mut(), &headers);
    Ok(res)
}
