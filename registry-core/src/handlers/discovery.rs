//! Content discovery: `_catalog`, `tags/list` and the referrers API.

use std::collections::HashMap;

use axum::response::Response;
use http::StatusCode;
use oci_spec_types::{Descriptor, Digest, ErrorCode, RepositoryName, media_type};

use super::{Result, json_response, page, set_headers};
use crate::Inner;
use crate::error::RegistryError;

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

pub(super) async fn catalog(inner: &Inner, query: &HashMap<String, String>) -> Result<Response> {
    let page = page(query)?;
    let repos: Vec<String> = if page.limit == Some(0) {
        Vec::new()
    } else {
        inner
            .metadata
            .list_repositories(&page)
            .await?
            .into_iter()
            .map(|r| r.to_string())
            .collect()
    };
    let body = serde_json::json!({ "repositories": repos }).to_string();
    Ok(with_next_link(
        json_response(StatusCode::OK, body),
        "/v2/_catalog",
        page.limit,
        &repos,
    ))
}

pub(super) async fn tags(
    inner: &Inner,
    repo: &RepositoryName,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let page = page(query)?;
    let tags = inner
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
    inner: &Inner,
    repo: &RepositoryName,
    subject: &Digest,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let filter = query.get("artifactType").filter(|t| !t.is_empty());
    let records = inner
        .metadata
        .referrers(repo, subject, filter.map(String::as_str))
        .await?;
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
