//! `/ui/`: the repositories the caller may pull, searched by a part of their name, sorted
//! by name, last push or size, a page at a time. By name, pages are keyset ranges of the
//! store's name index (after the previous page's last name), so page 1,000 costs what
//! page 1 does. By last push or size, pages are ranges of a shared snapshot of that order
//! ([`ranking`](crate::ui::ranking)), after the previous page's last `(push time, name)`
//! or `(bytes, name)`. Either way, as for `_catalog`, entries are filtered to what the
//! caller may pull until the page is full.

use axum::response::Response;
use http::StatusCode;
use http::request::Parts;
use storage_traits::insights::NameFilter;

use super::{can_log_in, insights, user_of};
use crate::auth::Access;
use crate::error::RegistryError;
use crate::handlers::visibility::Visibility;
use crate::ui::query::{DEFAULT_N, ListQuery, Sort, encode};
use crate::ui::ranking::Listed;
use crate::ui::templates::{RepoRow, RepositoriesPage, render};
use crate::ui::{UiState, admit, format, html, path};

/// Adds the entries of `batch` the caller may pull to `page`, up to `want`.
async fn keep_visible(
    page: &mut Vec<Listed>,
    visibility: &mut Visibility<'_>,
    batch: Vec<Listed>,
    want: usize,
) -> Result<(), RegistryError> {
    for entry in visibility.retain(batch, |e| e.name.as_str()).await? {
        if page.len() < want {
            page.push(entry);
        }
    }
    Ok(())
}

pub(in crate::ui) async fn page(state: &UiState, parts: &Parts) -> Result<Response, RegistryError> {
    let principal = admit(state, &parts.headers, &Access::Base).await?;
    let query = ListQuery::parse(parts.uri.query())?;
    let store = insights(state)?;
    let mut visibility = Visibility::of_principal(&state.inner, principal.clone());
    // One more than shown: whether there is a next page.
    let want = query.n + 1;
    let mut entries: Vec<Listed> = Vec::with_capacity(want);
    if query.sort == Sort::Name {
        let filter = if query.q.is_empty() {
            NameFilter::Prefix("")
        } else {
            NameFilter::Contains(&query.q)
        };
        let mut after = query.after.clone();
        loop {
            let batch: Vec<Listed> = store
                .repositories_by_name(filter, after.as_deref(), want)
                .await?
                .into_iter()
                .map(Listed::from)
                .collect();
            let exhausted = batch.len() < want;
            if let Some(last) = batch.last() {
                after = Some(last.name.to_string());
            }
            keep_visible(&mut entries, &mut visibility, batch, want).await?;
            if exhausted || entries.len() >= want {
                break;
            }
        }
    } else {
        let snapshot = state.rankings.get(query.sort, store).await?;
        let mut rest = snapshot
            .after(query.sort, query.after.as_deref())?
            .iter()
            .filter(|e| e.name.as_str().contains(query.q.as_str()));
        loop {
            let batch: Vec<Listed> = rest.by_ref().take(want).cloned().collect();
            let exhausted = batch.len() < want;
            keep_visible(&mut entries, &mut visibility, batch, want).await?;
            if exhausted || entries.len() >= want {
                break;
            }
        }
    }
    let more = entries.len() > query.n;
    entries.truncate(query.n);

    let names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
    let pulls = match state.inner.metadata.pulls() {
        Some(p) if !names.is_empty() => p.repository_pulls(&names).await?,
        _ => vec![Default::default(); names.len()],
    };
    let rows = entries
        .iter()
        .zip(pulls)
        .map(|(e, p)| RepoRow {
            name: e.name.to_string(),
            href: path::repository(e.name.as_str()),
            last_push: format::time(e.last_push),
            size: e.size.map(format::bytes),
            pulls: p.pulls,
            last_pull: format::time(p.last_pull),
        })
        .collect();

    let n = if query.n == DEFAULT_N {
        String::new()
    } else {
        query.n.to_string()
    };
    let link = |after: &str| {
        let q = encode(&[
            ("q", &query.q),
            (
                "sort",
                if query.sort == Sort::Name {
                    ""
                } else {
                    query.sort.as_str()
                },
            ),
            ("n", &n),
            ("after", after),
        ]);
        if q.is_empty() {
            "/ui/".to_string()
        } else {
            format!("/ui/?{q}")
        }
    };
    let next = match (more, entries.last()) {
        (true, Some(last)) => Some(link(&last.cursor(query.sort))),
        _ => None,
    };
    let first = query.after.is_some().then(|| link(""));
    let page = RepositoriesPage {
        user: user_of(&principal),
        login: can_log_in(state),
        q: query.q.clone(),
        sort: query.sort.as_str(),
        n: query.n,
        by_size: query.sort == Sort::Size,
        rows,
        next,
        first,
    };
    Ok(html(StatusCode::OK, render(&page)?))
}
