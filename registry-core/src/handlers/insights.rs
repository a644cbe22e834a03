//! `/v2/_ext/`: insights and listings beyond the distribution spec, as JSON. Documented in
//! `docs/insights.md`.
//!
//! Every answer shows only repositories the caller may pull (by the authorizer and, with
//! a bearer token, its grants, exactly as a pull of the repository would be decided);
//! blob-level answers need pull on a repository that links the blob, and the
//! registry-wide `summary` needs pull on every repository.
//!
//! - `summary`: totals, and manifests per artifact type grouped into kinds.
//! - `repositories?sort=size|tags|last_push|name&n=`: per-repository footprint.
//! - `blobs?n=`: most reused blobs; `blobs/<digest>`: who links and references one.
//! - `catalog?prefix=&sort=name|last_push&n=&last=`: the catalog, filtered and sorted,
//!   paginated with `Link` like `_catalog`.
//! - `tags/<name>?prefix=&sort=name|last_push&n=&last=`: the same for a repository's tags.
//! - `quotas`: usage and limit of each quota the caller may see: one whose existing
//!   repositories it may all pull.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;
use oci_spec_types::{ErrorCode, RepositoryName};
use storage_traits::insights::{
    BlobReuse, BlobUsage, NameFilter, RepositoryEntry, RepositoryOrder, RepositoryStats,
};
use storage_traits::{InsightsMetadata, Page, Pulls};

use super::visibility::Visibility;
use crate::error::RegistryError;
use crate::exchange::{Call, Result, json_response, set_headers};
use crate::route::Extension;

/// Default and largest page size of the extension listings.
const DEFAULT_N: usize = 100;
const MAX_N: usize = 10_000;
/// Most entries of a ranking read to fill one filtered page, and the page size of a
/// full scan of the repository names.
const MAX_SCAN: usize = 100_000;
const SCAN_PAGE: usize = 1_000;

pub(super) async fn get(call: Call<'_>, ext: &Extension) -> Result<Response> {
    if let Extension::Quotas = ext {
        return quotas(call).await;
    }
    let store = call.inner.metadata.insights().ok_or_else(|| {
        RegistryError::oci(
            ErrorCode::Unsupported,
            "this metadata store does not answer insight queries",
        )
    })?;
    let params = &call.request.params;
    let n = params.n.unwrap_or(DEFAULT_N).min(MAX_N);
    let prefix = params.prefix.as_deref().unwrap_or("");
    let sort = params.sort.as_deref().unwrap_or("name");
    let last = params.last.as_deref();
    let mut visibility = Visibility::insights(call);
    let body = match ext {
        Extension::Summary => {
            if !sees_everything(call.inner.metadata.as_ref(), &mut visibility).await? {
                return Err(RegistryError::oci(
                    ErrorCode::Denied,
                    "the summary covers every repository: it needs pull access to all of them",
                ));
            }
            summary(store).await?
        }
        Extension::Repositories => {
            let order = match sort {
                "size" => RepositoryOrder::Size,
                "tags" => RepositoryOrder::Tags,
                "last_push" => RepositoryOrder::LastPush,
                "name" => RepositoryOrder::Name,
                other => return Err(bad_sort(other)),
            };
            let ranked = move |limit| store.repository_stats(order, limit);
            let stats = visible_prefix(n, store, &mut visibility, ranked).await?;
            serde_json::json!({ "repositories": with_pulls(call, stats).await? })
        }
        Extension::Blobs => {
            let ranked = move |limit| store.most_reused_blobs(limit);
            let blobs = visible_prefix(n, store, &mut visibility, ranked).await?;
            serde_json::json!({ "blobs": blobs })
        }
        Extension::Blob(digest) => {
            let usage = visible_usage(store.blob_usage(digest).await?, &mut visibility).await?;
            if usage.linked_by.is_empty() {
                return Err(RegistryError::oci(
                    ErrorCode::BlobUnknown,
                    format!("blob {digest} is not in any repository you may pull"),
                ));
            }
            serde_json::to_value(usage).unwrap_or_default()
        }
        Extension::Catalog => return catalog(store, &mut visibility, prefix, sort, n, last).await,
        Extension::Tags(repo) => return tags(store, repo, prefix, sort, n, last).await,
        Extension::Quotas => return quotas(call).await,
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Usage and limit per quota. A quota's usage adds up repositories the caller may not
/// see, so a quota is shown only if the caller may pull every existing repository it
/// covers (its pattern alone names no repository).
async fn quotas(call: Call<'_>) -> Result<Response> {
    let configured = &call.inner.config.quotas;
    let usage = if configured.is_empty() {
        Vec::new()
    } else {
        let store = call.inner.metadata.quotas().ok_or_else(|| {
            RegistryError::oci(
                ErrorCode::Unsupported,
                "this metadata store does not keep quotas",
            )
        })?;
        store.quota_usage(configured.as_slice()).await?
    };
    let mut visibility = Visibility::insights(call);
    let mut hidden = vec![false; usage.len()];
    let mut last = None;
    'scan: while !usage.is_empty() {
        let batch = call
            .inner
            .metadata
            .list_repositories(&Page::new(last.take(), Some(SCAN_PAGE)))
            .await?;
        for name in &batch {
            for (i, q) in configured.as_slice().iter().enumerate() {
                if !hidden[i]
                    && q.covers(name.as_str())
                    && !visibility.may_pull(name.as_str()).await?
                {
                    hidden[i] = true;
                }
            }
            if hidden.iter().all(|h| *h) {
                break 'scan;
            }
        }
        match batch.last() {
            Some(name) if batch.len() == SCAN_PAGE => last = Some(name.to_string()),
            _ => break,
        }
    }
    let shown: Vec<_> = usage
        .into_iter()
        .zip(hidden)
        .filter_map(|(u, hidden)| (!hidden).then_some(u))
        .collect();
    let body = serde_json::json!({ "quotas": shown });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// A repository's footprint with its pull figures.
#[derive(serde::Serialize)]
struct RepositoryWithPulls {
    #[serde(flatten)]
    stats: RepositoryStats,
    #[serde(flatten)]
    pulls: Pulls,
}

/// The pull figures of the (already filtered) repositories, in one query; zeros when the
/// store keeps none.
async fn with_pulls(
    call: Call<'_>,
    stats: Vec<RepositoryStats>,
) -> Result<Vec<RepositoryWithPulls>> {
    let figures = match call.inner.metadata.pulls() {
        Some(p) => {
            let names = stats
                .iter()
                .filter_map(|s| s.name.parse::<RepositoryName>().ok())
                .collect::<Vec<_>>();
            let figures = p.repository_pulls(&names).await?;
            names
                .into_iter()
                .map(|n| n.to_string())
                .zip(figures)
                .collect::<BTreeMap<_, _>>()
        }
        None => BTreeMap::new(),
    };
    Ok(stats
        .into_iter()
        .map(|stats| RepositoryWithPulls {
            pulls: figures.get(&stats.name).copied().unwrap_or_default(),
            stats,
        })
        .collect())
}

/// Whether the caller may pull every repository (the registry-wide totals are then
/// theirs to see).
pub(crate) async fn sees_everything(
    metadata: &dyn storage_traits::MetadataStore,
    visibility: &mut Visibility<'_>,
) -> Result<bool> {
    let mut last = None;
    loop {
        let batch = metadata
            .list_repositories(&Page::new(last.take(), Some(SCAN_PAGE)))
            .await?;
        for name in &batch {
            if !visibility.may_pull(name.as_str()).await? {
                return Ok(false);
            }
        }
        match batch.last() {
            Some(name) if batch.len() == SCAN_PAGE => last = Some(name.to_string()),
            _ => return Ok(true),
        }
    }
}

/// An entry of a ranking, and whether the caller may see it.
pub(crate) trait Ranked {
    async fn visible(
        &self,
        store: &dyn InsightsMetadata,
        visibility: &mut Visibility<'_>,
    ) -> Result<bool>;
}

impl Ranked for RepositoryStats {
    async fn visible(&self, _: &dyn InsightsMetadata, v: &mut Visibility<'_>) -> Result<bool> {
        v.may_pull(&self.name).await
    }
}

/// A blob is visible when a repository the caller may pull links it.
impl Ranked for BlobReuse {
    async fn visible(&self, store: &dyn InsightsMetadata, v: &mut Visibility<'_>) -> Result<bool> {
        let usage = store.blob_usage(&self.digest).await?;
        Ok(!visible_usage(usage, v).await?.linked_by.is_empty())
    }
}

/// The first `n` visible entries of a ranking the store answers by limit: asks for `n`,
/// then for four times as many each time visible entries are still missing, until the
/// store runs out. A caller who sees everything costs one query.
pub(crate) async fn visible_prefix<'s, T, Q, QF>(
    n: usize,
    store: &'s dyn InsightsMetadata,
    visibility: &mut Visibility<'_>,
    mut ranking: Q,
) -> Result<Vec<T>>
where
    T: Ranked,
    Q: FnMut(usize) -> QF,
    QF: Future<Output = std::result::Result<Vec<T>, storage_traits::MetadataError>> + 's,
{
    let mut limit = n;
    loop {
        let all = ranking(limit).await?;
        let exhausted = all.len() < limit;
        let mut visible = Vec::new();
        for entry in all {
            if visible.len() < n && entry.visible(store, visibility).await? {
                visible.push(entry);
            }
        }
        if visible.len() >= n || exhausted || limit >= MAX_SCAN {
            return Ok(visible);
        }
        limit = limit.saturating_mul(4).min(MAX_SCAN);
    }
}

/// A blob's users, without the repositories the caller may not pull (and without its
/// size when none is left).
async fn visible_usage(mut usage: BlobUsage, visibility: &mut Visibility<'_>) -> Result<BlobUsage> {
    usage.linked_by = visibility.retain(usage.linked_by, |n| n.as_str()).await?;
    usage.referenced_by = visibility
        .retain(usage.referenced_by, |u| u.repository.as_str())
        .await?;
    if usage.linked_by.is_empty() {
        usage.size = None;
    }
    Ok(usage)
}

fn bad_sort(s: &str) -> RegistryError {
    RegistryError::InvalidParameter(format!("unknown sort {s:?}"))
}

/// Broad kinds of artifact, from the artifact type (or config media type) the registry
/// recorded for each manifest.
pub(crate) fn kind_of(artifact_type: Option<&str>) -> &'static str {
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
pub(crate) fn parse_cursor(s: &str) -> Result<(Option<i64>, String)> {
    let bad = || RegistryError::InvalidParameter(format!("invalid last cursor {s:?}"));
    let (at, name) = s.split_once(',').ok_or_else(bad)?;
    let at = if at == "-" {
        None
    } else {
        Some(at.parse().map_err(|_| bad())?)
    };
    Ok((at, name.to_string()))
}

pub(crate) fn cursor(at: Option<i64>, name: &str) -> String {
    match at {
        Some(at) => format!("{at},{name}"),
        None => format!("-,{name}"),
    }
}

/// The `_ext/catalog` page: store pages of `n` from the cursor, filtered to what the
/// caller may pull, until `n` are found or the store runs out (as `_catalog` does). The
/// next page's cursor is the last entry returned, so pages neither skip nor repeat.
async fn catalog(
    store: &dyn InsightsMetadata,
    visibility: &mut Visibility<'_>,
    prefix: &str,
    sort: &str,
    n: usize,
    last: Option<&str>,
) -> Result<Response> {
    if !matches!(sort, "name" | "last_push") {
        return Err(bad_sort(sort));
    }
    let mut cursor = last.map(str::to_string);
    let mut entries = Vec::new();
    let mut exhausted = n == 0;
    while !exhausted && entries.len() < n {
        let batch = match sort {
            "name" => {
                store
                    .repositories_by_name(NameFilter::Prefix(prefix), cursor.as_deref(), n)
                    .await?
            }
            "last_push" => {
                let after = cursor.as_deref().map(parse_cursor).transpose()?;
                store
                    .repositories_by_last_push(NameFilter::Prefix(prefix), after, n)
                    .await?
            }
            other => return Err(bad_sort(other)),
        };
        exhausted = batch.len() < n;
        cursor = batch.last().map(|e| cursor_of(sort, e));
        for entry in visibility.retain(batch, |e| e.name.as_str()).await? {
            if entries.len() < n {
                entries.push(entry);
            }
        }
    }
    let next = (n > 0 && entries.len() == n)
        .then(|| entries.last())
        .flatten()
        .map(|e| cursor_of(sort, e));
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

fn cursor_of(sort: &str, e: &RepositoryEntry) -> String {
    match sort {
        "name" => e.name.to_string(),
        _ => cursor(e.last_push, e.name.as_str()),
    }
}

async fn tags(
    store: &dyn InsightsMetadata,
    repo: &RepositoryName,
    prefix: &str,
    sort: &str,
    n: usize,
    last: Option<&str>,
) -> Result<Response> {
    let entries = match sort {
        "name" => store.tags_by_name(repo, prefix, last, n).await?,
        "last_push" => {
            let after = match last.map(parse_cursor).transpose()? {
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
