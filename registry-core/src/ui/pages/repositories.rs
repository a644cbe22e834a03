//! `/ui/`: the repositories the caller may pull, searched by a part of their name, sorted
//! by name or last push, a page at a time. Pages are keyset ranges of the store (after the
//! previous page's last name, or last `(push time, name)`), so page 1,000 costs what page
//! 1 does. As for `_catalog`, the store is read in pages and filtered to what the caller
//! may pull until the page is full.

use axum::response::Response;
use http::StatusCode;
use http::request::Parts;
use storage_traits::insights::{NameFilter, RepositoryEntry};

use super::{can_log_in, insights, user_of};
use crate::auth::Access;
use crate::error::RegistryError;
use crate::handlers::insights::cursor;
use crate::handlers::visibility::Visibility;
use crate::ui::query::{DEFAULT_N, ListQuery, Sort, encode};
use crate::ui::templates::{RepoRow, RepositoriesPage, render};
use crate::ui::{UiState, admit, format, html, path};

pub(in crate::ui) async fn page(state: &UiState, parts: &Parts) -> Result<Response, RegistryError> {
    let principal = admit(state, &parts.headers, &Access::Base).await?;
    let query = ListQuery::parse(parts.uri.query())?;
    let store = insights(state)?;
    let mut visibility = Visibility::of_principal(&state.inner, principal.clone());
    // One more than shown: whether there is a next page.
    let want = query.n + 1;
    let mut by_name = query.after.clone();
    let mut by_push = match query.sort {
        Sort::LastPush => query.push_cursor()?,
        Sort::Name => None,
    };
    let filter = if query.q.is_empty() {
        NameFilter::Prefix("")
    } else {
        NameFilter::Contains(&query.q)
    };
    let mut entries: Vec<RepositoryEntry> = Vec::with_capacity(want);
    loop {
        let batch = match query.sort {
            Sort::Name => {
                store
                    .repositories_by_name(filter, by_name.as_deref(), want)
                    .await?
            }
            Sort::LastPush => {
                store
                    .repositories_by_last_push(filter, by_push.clone(), want)
                    .await?
            }
        };
        let exhausted = batch.len() < want;
        if let Some(last) = batch.last() {
            by_name = Some(last.name.to_string());
            by_push = Some((last.last_push, last.name.to_string()));
        }
        for entry in visibility.retain(batch, |e| e.name.as_str()).await? {
            if entries.len() < want {
                entries.push(entry);
            }
        }
        if exhausted || entries.len() >= want {
            break;
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
        (true, Some(last)) => Some(link(&match query.sort {
            Sort::Name => last.name.to_string(),
            Sort::LastPush => cursor(last.last_push, last.name.as_str()),
        })),
        _ => None,
    };
    let first = query.after.is_some().then(|| link(""));
    let page = RepositoriesPage {
        user: user_of(&principal),
        login: can_log_in(state),
        q: query.q.clone(),
        sort: query.sort.as_str(),
        n: query.n,
        rows,
        next,
        first,
    };
    Ok(html(StatusCode::OK, render(&page)?))
}
