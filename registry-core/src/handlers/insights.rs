//! `/v2/_ext/`: insights and listings beyond the distribution spec, as JSON. Documented in
//! `docs/insights.md`.
//!
//! - `summary`: totals, and manifests per artifact type grouped into kinds.
//! - `repositories?sort=size|tags|last_push|name&n=`: per-repository footprint.
//! - `blobs?n=`: most reused blobs; `blobs/<digest>`: who links and references one.
//! - `catalog?prefix=&sort=name|last_push&n=&last=`: the catalog, filtered and sorted,
//!   paginated with `Link` like `_catalog`.
//! - `tags/<name>?prefix=&sort=name|last_push&n=&last=`: the same for a repository's tags.

use std::collections::{BTreeMap, HashMap};

use axum::response::Response;
use http::StatusCode;
use oci_spec_types::{ErrorCode, RepositoryName};
use storage_traits::InsightsMetadata;
use storage_traits::insights::RepositoryOrder;

use super::{Result, json_response, set_headers};
use crate::Inner;
use crate::error::RegistryError;
use crate::route::parse_digest;

/// Default and largest page size of the extension listings.
const DEFAULT_N: usize = 100;
const MAX_N: usize = 10_000;

pub(super) async fn get(
    inner: &Inner,
    path: &str,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let store = inner.metadata.insights().ok_or_else(|| {
        RegistryError::oci(
            ErrorCode::Unsupported,
            "this metadata store does not answer insight queries",
        )
    })?;
    let n = match query.get("n") {
        None => DEFAULT_N,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| {
                RegistryError::InvalidParameter(format!(
                    "n must be a non-negative integer, got {v:?}"
                ))
            })?
            .min(MAX_N),
    };
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("");
    let sort = query.get("sort").map(String::as_str).unwrap_or("name");
    let body = match path.split_once('/') {
        None if path == "summary" => summary(store).await?,
        None if path == "repositories" => {
            let order = match sort {
                "size" => RepositoryOrder::Size,
                "tags" => RepositoryOrder::Tags,
                "last_push" => RepositoryOrder::LastPush,
                "name" => RepositoryOrder::Name,
                other => return Err(bad_sort(other)),
            };
            serde_json::json!({ "repositories": store.repository_stats(order, n).await? })
        }
        None if path == "blobs" => {
            serde_json::json!({ "blobs": store.most_reused_blobs(n).await? })
        }
        Some(("blobs", digest)) => {
            let digest = parse_digest(digest)?;
            serde_json::to_value(store.blob_usage(&digest).await?).unwrap_or_default()
        }
        None if path == "catalog" => {
            return catalog(store, prefix, sort, n, query.get("last")).await;
        }
        Some(("tags", name)) => {
            let repo: RepositoryName = name.parse().map_err(|e| RegistryError::name_invalid(&e))?;
            return tags(store, &repo, prefix, sort, n, query.get("last")).await;
        }
        _ => return Err(RegistryError::NotFound),
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}

fn bad_sort(s: &str) -> RegistryError {
    RegistryError::InvalidParameter(format!("unknown sort {s:?}"))
}

/// Broad kinds of artifact, from the artifact type (or config media type) the registry
/// recorded for each manifest.
fn kind_of(artifact_type: Option<&str>) -> &'static str {
    let Some(t) = artifact_type else {
        return "index";
    };
    match t {
        "application/vnd.oci.image.config.v1+json"
        | "application/vnd.docker.container.image.v1+json" => "image",
        t if t.starts_with("application/vnd.cncf.helm.") => "helm-chart",
        t if t.contains("cosign") || t.contains("notary") || t.contains("signature") => "signature",
        t if t.contains("spdx") || t.contains("cyclonedx") || t.contains("sbom") => "sbom",
        t if t.contains("in-toto") || t.contains("attestation") => "attestation",
        _ => "other",
    }
}

async fn summary(store: &dyn InsightsMetadata) -> Result<serde_json::Value> {
    let totals = store.summary().await?;
    let types = store.artifact_types().await?;
    let mut kinds: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for t in &types {
        let e = kinds
            .entry(kind_of(t.artifact_type.as_deref()))
            .or_default();
        e.0 += t.manifests;
        e.1 += t.bytes;
    }
    let kinds: BTreeMap<&str, serde_json::Value> = kinds
        .into_iter()
        .map(|(k, (manifests, bytes))| {
            (
                k,
                serde_json::json!({ "manifests": manifests, "bytes": bytes }),
            )
        })
        .collect();
    Ok(serde_json::json!({ "totals": totals, "kinds": kinds, "artifact_types": types }))
}

/// A `Link` to the next page when this one was full.
fn link(mut res: Response, base: &str, params: &[(&str, &str)], next: Option<String>) -> Response {
    if let Some(next) = next {
        let mut q = String::new();
        for (k, v) in params
            .iter()
            .chain(std::iter::once(&("last", next.as_str())))
        {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(k);
            q.push('=');
            q.push_str(&encode(v));
        }
        set_headers(
            res.headers_mut(),
            &[("Link", format!("<{base}?{q}>; rel=\"next\""))],
        );
    }
    res
}

/// Query-value encoding for the few characters our cursors and names can contain.
fn encode(v: &str) -> String {
    v.replace('%', "%25")
        .replace('&', "%26")
        .replace('+', "%2B")
        .replace(' ', "%20")
}

/// A `last_push` cursor is `<millis>,<name>` (`-,<name>` for never pushed).
fn parse_cursor(s: &str) -> Result<(Option<i64>, String)> {
    let bad = || RegistryError::InvalidParameter(format!("invalid last cursor {s:?}"));
    let (at, name) = s.split_once(',').ok_or_else(bad)?;
    let at = if at == "-" {
        None
    } else {
        Some(at.parse().map_err(|_| bad())?)
    };
    Ok((at, name.to_string()))
}

fn cursor(at: Option<i64>, name: &str) -> String {
    match at {
        Some(at) => format!("{at},{name}"),
        None => format!("-,{name}"),
    }
}

async fn catalog(
    store: &dyn InsightsMetadata,
    prefix: &str,
    sort: &str,
    n: usize,
    last: Option<&String>,
) -> Result<Response> {
    let entries = match sort {
        "name" => {
            store
                .repositories_by_name(prefix, last.map(String::as_str), n)
                .await?
        }
        "last_push" => {
            let after = last.map(|l| parse_cursor(l)).transpose()?;
            store.repositories_by_last_push(prefix, after, n).await?
        }
        other => return Err(bad_sort(other)),
    };
    let next = (n > 0 && entries.len() == n)
        .then(|| entries.last())
        .flatten()
        .map(|e| match sort {
            "name" => e.name.to_string(),
            _ => cursor(e.last_push, e.name.as_str()),
        });
    let body = serde_json::json!({ "repositories": entries }).to_string();
    let n_s = n.to_string();
    let params = [("prefix", prefix), ("sort", sort), ("n", n_s.as_str())];
    Ok(link(
        json_response(StatusCode::OK, body),
        "/v2/_ext/catalog",
        &params,
        next,
    ))
}

async fn tags(
    store: &dyn InsightsMetadata,
    repo: &RepositoryName,
    prefix: &str,
    sort: &str,
    n: usize,
    last: Option<&String>,
) -> Result<Response> {
    let entries = match sort {
        "name" => {
            store
                .tags_by_name(repo, prefix, last.map(String::as_str), n)
                .await?
        }
        "last_push" => {
            let after = match last.map(|l| parse_cursor(l)).transpose()? {
                Some((Some(at), name)) => Some((at, name)),
                Some((None, _)) => {
                    return Err(RegistryError::InvalidParameter(
                        "invalid last cursor".into(),
                    ));
                }
                None => None,
            };
            store.tags_by_last_push(repo, prefix, after, n).await?
        }
        other => return Err(bad_sort(other)),
    }
    .ok_or_else(|| {
        RegistryError::oci(
            ErrorCode::NameUnknown,
            format!("repository {repo} is not known"),
        )
    })?;
    let next = (n > 0 && entries.len() == n)
        .then(|| entries.last())
        .flatten()
        .map(|e| match sort {
            "name" => e.name.clone(),
            _ => cursor(Some(e.updated_at), &e.name),
        });
    let body = serde_json::json!({ "name": repo.as_str(), "tags": entries }).to_string();
    let n_s = n.to_string();
    let params = [("prefix", prefix), ("sort", sort), ("n", n_s.as_str())];
    Ok(link(
        json_response(StatusCode::OK, body),
        &format!("/v2/_ext/tags/{repo}"),
        &params,
        next,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            kind_of(Some("application/vnd.oci.image.config.v1+json")),
            "image"
        );
        assert_eq!(
            kind_of(Some("application/vnd.cncf.helm.config.v1+json")),
            "helm-chart"
        );
        assert_eq!(
            kind_of(Some("application/vnd.dev.cosign.artifact.sig.v1+json")),
            "signature"
        );
        assert_eq!(kind_of(Some("application/spdx+json")), "sbom");
        assert_eq!(kind_of(None), "index");
    }

    #[test]
    fn cursors() {
        assert_eq!(
            parse_cursor("17,a/b").unwrap(),
            (Some(17), "a/b".to_string())
        );
        assert_eq!(parse_cursor("-,x").unwrap(), (None, "x".to_string()));
        assert!(parse_cursor("x").is_err());
        assert!(parse_cursor("y,x").is_err());
        assert_eq!(cursor(Some(5), "n"), "5,n");
    }
}
