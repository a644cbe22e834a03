//! `/ui/storage`: the insights (`docs/insights.md`) as a page: registry-wide totals and
//! artifact types for callers who may pull every repository (as `_ext/summary` decides),
//! and for everyone the largest repositories and most shared layers among those they
//! may pull.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;
use http::request::Parts;
use storage_traits::insights::RepositoryOrder;

use super::{can_log_in, insights, user_of};
use crate::auth::Access;
use crate::error::RegistryError;
use crate::handlers::insights::{kind_of, sees_everything, visible_prefix};
use crate::handlers::visibility::Visibility;
use crate::ui::templates::{BlobRow, CountRow, SizeRow, StoragePage, Totals, render};
use crate::ui::{UiState, admit, format, html, path};

/// Entries of each ranking.
const TOP: usize = 20;

pub(in crate::ui) async fn page(state: &UiState, parts: &Parts) -> Result<Response, RegistryError> {
    let principal = admit(state, &parts.headers, &Access::Base).await?;
    let store = insights(state)?;
    let mut visibility = Visibility::of_principal(&state.inner, principal.clone());
    let (mut totals, mut kinds, mut types) = (None, Vec::new(), Vec::new());
    if sees_everything(state.inner.metadata.as_ref(), &mut visibility).await? {
        let t = store.summary().await?;
        totals = Some(Totals {
            repositories: t.repositories,
            manifests: t.manifests,
            tags: t.tags,
            blobs: t.blobs,
            bytes: format::bytes(t.blob_bytes),
        });
        let counts = store.artifact_types().await?;
        let mut by_kind: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for c in &counts {
            let e = by_kind
                .entry(kind_of(c.artifact_type.as_deref()))
                .or_default();
            e.0 += c.manifests;
            e.1 += c.bytes;
        }
        kinds = by_kind
            .into_iter()
            .map(|(k, (manifests, bytes))| CountRow {
                label: k.to_string(),
                manifests,
                bytes: format::bytes(bytes),
            })
            .collect();
        types = counts
            .into_iter()
            .map(|c| CountRow {
                label: c.artifact_type.unwrap_or_else(|| "(index)".into()),
                manifests: c.manifests,
                bytes: format::bytes(c.bytes),
            })
            .collect();
    }
    let largest = visible_prefix(TOP, store, &mut visibility, move |limit| {
        store.repository_stats(RepositoryOrder::Size, limit)
    })
    .await?
    .into_iter()
    .map(|r| SizeRow {
        href: path::repository(&r.name),
        name: r.name,
        attributed: format::bytes(r.attributed_bytes),
        unique: format::bytes(r.unique_bytes),
        shared: format::bytes(r.shared_bytes),
        manifests: r.manifests,
        tags: r.tags,
    })
    .collect();
    let shared = visible_prefix(TOP, store, &mut visibility, move |limit| {
        store.most_reused_blobs(limit)
    })
    .await?
    .into_iter()
    .map(|b| BlobRow {
        short: format::short_digest(b.digest.as_str()),
        digest: b.digest.to_string(),
        size: format::bytes(b.size),
        repositories: b.repositories,
        manifests: b.manifests,
    })
    .collect();
    let page = StoragePage {
        user: user_of(&principal),
        login: can_log_in(state),
        totals,
        kinds,
        types,
        largest,
        shared,
    };
    Ok(html(StatusCode::OK, render(&page)?))
}
