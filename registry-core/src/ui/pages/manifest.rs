//! `/ui/r/<name>/-/manifest/<tag or digest>`: one manifest: its config and layers with
//! sizes, an index's platforms, annotations, the tags pointing at it, its subject, and
//! the tree of what refers to it (signatures, SBOMs, attestations, and what refers to
//! those).

use std::collections::HashSet;

use axum::response::Response;
use http::StatusCode;
use http::request::Parts;
use oci_spec_types::{Descriptor, Digest, ErrorCode, Reference, RepositoryName};
use storage_traits::ReferrerRecord;

use super::summary::{summarize, with_children};
use super::{can_log_in, host_of, may_delete, pull, user_of};
use crate::error::RegistryError;
use crate::handlers::insights::kind_of;
use crate::ui::templates::{DescriptorRow, Link, ManifestPage, ReferrerRow, render};
use crate::ui::{UiState, admit, format, html, path};

/// How deep the referrers tree goes, and how many entries it shows at most.
const MAX_DEPTH: usize = 4;
const MAX_REFERRERS: usize = 200;

pub(in crate::ui) async fn page(
    state: &UiState,
    parts: &Parts,
    repo: &RepositoryName,
    reference: &Reference,
) -> Result<Response, RegistryError> {
    let principal = admit(state, &parts.headers, &pull(repo)).await?;
    let metadata = &state.inner.metadata;
    let record = metadata
        .get_manifest(repo, reference)
        .await?
        .ok_or_else(|| {
            RegistryError::oci(
                ErrorCode::ManifestUnknown,
                format!("manifest {reference} is not in repository {repo}"),
            )
        })?;
    let digest = record.digest.clone();
    let mut summary = summarize(&record);
    with_children(state, repo, &mut summary).await?;
    let tags = tags_of(state, repo, &digest).await?;
    let (pulls, last_pull) = match metadata.pulls() {
        Some(p) => p
            .manifest_pulls(repo)
            .await?
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.digest == digest)
            .map_or((0, None), |m| (m.pulls, m.last_pull)),
        None => (0, None),
    };
    let row = |d: &Descriptor, linked: bool, platform: String| DescriptorRow {
        href: linked.then(|| path::manifest(repo.as_str(), d.digest.as_str())),
        digest: d.digest.to_string(),
        short: format::short_digest(d.digest.as_str()),
        size: format::bytes(d.size),
        media_type: d.media_type.clone(),
        platform,
    };
    let (config, layers, children, subject, annotations) = match &summary.parsed {
        Some(p) => (
            p.config.as_ref().map(|c| row(c, false, String::new())),
            p.layers
                .iter()
                .map(|l| row(l, false, String::new()))
                .collect(),
            p.manifests
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    row(
                        m,
                        true,
                        summary.platforms.get(i).cloned().unwrap_or_default(),
                    )
                })
                .collect(),
            p.subject.as_ref().map(|s| Link {
                href: path::manifest(repo.as_str(), s.digest.as_str()),
                label: s.digest.to_string(),
            }),
            p.annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => (None, Vec::new(), Vec::new(), None, Vec::new()),
    };
    let (referrers, referrers_truncated) = referrer_tree(state, repo, &digest).await?;
    let content = serde_json::from_slice::<serde_json::Value>(&record.content)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&record.content).into_owned());
    let page = ManifestPage {
        user: user_of(&principal),
        login: can_log_in(state),
        repo: repo.to_string(),
        repo_href: path::repository(repo.as_str()),
        digest: digest.to_string(),
        media_type: record.media_type.clone(),
        kind: summary.kind.to_string(),
        artifact_type: summary.artifact_type.clone().unwrap_or_default(),
        size: format::bytes(summary.size),
        total_size: format::bytes(summary.total),
        tags,
        pull_command: format!("docker pull {}/{repo}@{digest}", host_of(parts)),
        pulls,
        last_pull: format::time(last_pull),
        config,
        layers,
        children,
        subject,
        annotations,
        referrers,
        referrers_truncated,
        may_delete: may_delete(state, &principal, repo).await?,
        delete_href: path::delete(repo.as_str(), digest.as_str()),
        content,
    };
    Ok(html(StatusCode::OK, render(&page)?))
}

/// The tags pointing at `digest`, by name.
pub(in crate::ui) async fn tags_of(
    state: &UiState,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<Vec<String>, RegistryError> {
    if let Some(p) = state.inner.metadata.pulls()
        && let Some(manifests) = p.manifest_pulls(repo).await?
    {
        return Ok(manifests
            .into_iter()
            .find(|m| &m.digest == digest)
            .map(|m| m.tags)
            .unwrap_or_default());
    }
    Ok(Vec::new())
}

/// Referrers of `root`, depth first, each followed by its own referrers; at most
/// [`MAX_REFERRERS`] entries and [`MAX_DEPTH`] levels (a digest seen once is not
/// followed again). The bool says whether some were left out.
async fn referrer_tree(
    state: &UiState,
    repo: &RepositoryName,
    root: &Digest,
) -> Result<(Vec<ReferrerRow>, bool), RegistryError> {
    let metadata = &state.inner.metadata;
    let mut out = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::from([root.clone()]);
    let mut truncated = false;
    // Pre-order: a node's row, then its referrers' subtrees. The stack holds nodes still
    // to show, the next one on top.
    let mut stack: Vec<(usize, ReferrerRecord)> = Vec::new();
    let push_children = |stack: &mut Vec<(usize, ReferrerRecord)>,
                         seen: &mut HashSet<Digest>,
                         depth: usize,
                         found: Vec<ReferrerRecord>| {
        let fresh: Vec<_> = found
            .into_iter()
            .filter(|r| seen.insert(r.digest.clone()))
            .collect();
        stack.extend(fresh.into_iter().rev().map(|r| (depth, r)));
    };
    let found = metadata.referrers(repo, root, None).await?;
    push_children(&mut stack, &mut seen, 0, found);
    while let Some((depth, r)) = stack.pop() {
        if out.len() >= MAX_REFERRERS {
            truncated = true;
            break;
        }
        let found = metadata.referrers(repo, &r.digest, None).await?;
        if depth + 1 < MAX_DEPTH {
            push_children(&mut stack, &mut seen, depth + 1, found);
        } else if !found.is_empty() {
            truncated = true;
        }
        let annotations = r
            .annotations
            .iter()
            .take(3)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(ReferrerRow {
            depth,
            href: path::manifest(repo.as_str(), r.digest.as_str()),
            short: format::short_digest(r.digest.as_str()),
            kind: r
                .artifact_type
                .as_deref()
                .map_or("other", |t| kind_of(Some(t)))
                .to_string(),
            artifact_type: r.artifact_type.clone().unwrap_or_default(),
            size: format::bytes(r.size),
            annotations,
        });
    }
    Ok((out, truncated))
}
