//! `/ui/r/<name>`: a repository's tags, most recently pushed first, with each one's
//! digest, size, kind, platforms, artifact type, pull figures and pull command. Paged by
//! `(push time, name)` keysets, as the repositories are.

use std::collections::HashMap;

use axum::response::Response;
use http::StatusCode;
use http::request::Parts;
use oci_spec_types::{Digest, ErrorCode, Reference, RepositoryName};

use super::summary::{Summary, summarize, with_children};
use super::{can_log_in, host_of, insights, may_delete, pull, repository_pulls, user_of};
use crate::error::RegistryError;
use crate::handlers::insights::cursor;
use crate::ui::query::{DEFAULT_N, ListQuery, encode};
use crate::ui::templates::{RepositoryPage, TagRow, UntaggedRow, render};

/// Untagged manifests listed on a repository's first page, newest first.
const MAX_UNTAGGED: usize = 50;
use crate::ui::{UiState, admit, format, html, path};

pub(in crate::ui) async fn page(
    state: &UiState,
    parts: &Parts,
    repo: &RepositoryName,
) -> Result<Response, RegistryError> {
    let principal = admit(state, &parts.headers, &pull(repo)).await?;
    let query = ListQuery::parse(parts.uri.query())?;
    let after = match query.push_cursor()? {
        Some((Some(at), name)) => Some((at, name)),
        Some((None, _)) => {
            return Err(RegistryError::InvalidParameter(
                "invalid page cursor: a tag's cursor has a time".into(),
            ));
        }
        None => None,
    };
    let mut tags = insights(state)?
        .tags_by_last_push(repo, &query.q, after, query.n + 1)
        .await?
        .ok_or_else(|| {
            RegistryError::oci(
                ErrorCode::NameUnknown,
                format!("repository {repo} is not known"),
            )
        })?;
    let more = tags.len() > query.n;
    tags.truncate(query.n);

    let mut summaries: HashMap<Digest, Option<Summary>> = HashMap::new();
    for t in &tags {
        if !summaries.contains_key(&t.digest) {
            let record = state
                .inner
                .metadata
                .get_manifest(repo, &Reference::Digest(t.digest.clone()))
                .await?;
            let summary = match record {
                Some(record) => {
                    let mut summary = summarize(&record);
                    with_children(state, repo, &mut summary).await?;
                    Some(summary)
                }
                None => None,
            };
            summaries.insert(t.digest.clone(), summary);
        }
    }
    // Every manifest of the repository with its pull figures and tags: the tags' figures,
    // and the untagged manifests (only on the first page).
    let manifests = match state.inner.metadata.pulls() {
        Some(p) => p.manifest_pulls(repo).await?.unwrap_or_default(),
        None => Vec::new(),
    };
    let pulls: HashMap<&Digest, (u64, Option<i64>)> = manifests
        .iter()
        .map(|m| (&m.digest, (m.pulls, m.last_pull)))
        .collect();
    let mut untagged: Vec<_> = if query.after.is_none() && query.q.is_empty() {
        manifests.iter().filter(|m| m.tags.is_empty()).collect()
    } else {
        Vec::new()
    };
    untagged.sort_by_key(|m| std::cmp::Reverse(m.created_at));
    let untagged_more = untagged.len() > MAX_UNTAGGED;
    let untagged = untagged
        .into_iter()
        .take(MAX_UNTAGGED)
        .map(|m| UntaggedRow {
            href: path::manifest(repo.as_str(), m.digest.as_str()),
            short: format::short_digest(m.digest.as_str()),
            digest: m.digest.to_string(),
            size: format::bytes(m.size),
            pushed: format::time(Some(m.created_at)),
            pulls: m.pulls,
            last_pull: format::time(m.last_pull),
        })
        .collect();
    let host = host_of(parts);
    let rows = tags
        .iter()
        .map(|t| {
            let summary = summaries.get(&t.digest).and_then(Option::as_ref);
            let (pulls, last_pull) = pulls.get(&t.digest).copied().unwrap_or_default();
            TagRow {
                tag: t.name.clone(),
                href: path::manifest(repo.as_str(), t.digest.as_str()),
                digest: t.digest.to_string(),
                short: format::short_digest(t.digest.as_str()),
                size: summary.map_or_else(String::new, |s| format::bytes(s.total)),
                kind: summary.map_or("unknown", |s| s.kind).to_string(),
                artifact_type: summary
                    .and_then(|s| s.artifact_type.clone())
                    .unwrap_or_default(),
                platforms: summary.map(|s| s.platforms.join(", ")).unwrap_or_default(),
                pushed: format::time(Some(t.updated_at)),
                pulls,
                last_pull: format::time(last_pull),
                pull_command: format!("docker pull {host}/{repo}:{}", t.name),
                delete_href: path::delete(repo.as_str(), &t.name),
            }
        })
        .collect();

    let base = path::repository(repo.as_str());
    let n = if query.n == DEFAULT_N {
        String::new()
    } else {
        query.n.to_string()
    };
    let link = |after: &str| {
        let q = encode(&[("q", &query.q), ("n", &n), ("after", after)]);
        if q.is_empty() {
            base.clone()
        } else {
            format!("{base}?{q}")
        }
    };
    let next = match (more, tags.last()) {
        (true, Some(last)) => Some(link(&cursor(Some(last.updated_at), &last.name))),
        _ => None,
    };
    let first = query.after.is_some().then(|| link(""));
    let repo_pulls = repository_pulls(state, repo).await?;
    let page = RepositoryPage {
        user: user_of(&principal),
        login: can_log_in(state),
        name: repo.to_string(),
        href: base.clone(),
        q: query.q.clone(),
        may_delete: may_delete(state, &principal, repo).await?,
        notice: query
            .deleted
            .filter(|d| d.parse::<Reference>().is_ok())
            .map(|d| format!("Deleted {d}.")),
        rows,
        next,
        first,
        untagged,
        untagged_more,
        pulls: repo_pulls.pulls,
        last_pull: format::time(repo_pulls.last_pull),
    };
    Ok(html(StatusCode::OK, render(&page)?))
}
