//! `/ui/`: the repositories the caller may pull, searched by a part of their name, sorted
//! by name, last push or size, a page at a time. Pages are keyset ranges of the store
//! (after the previous page's last name, last `(push time, name)` or `(bytes, name)`), so
//! they neither skip nor repeat; by name page 1,000 costs what page 1 does, by size every
//! page computes every repository's footprint. As for `_catalog`, the store is read in pages and filtered to what the caller
//! may pull until the page is full.

use axum::response::Response;
use http::StatusCode;
use http::request::Parts;
use oci_spec_types::RepositoryName;
use storage_traits::insights::{NameFilter, RepositoryEntry};
use storage_traits::{InsightsMetadata, MetadataError};

use super::{can_log_in, insights, user_of};
use crate::auth::Access;
use crate::error::RegistryError;
use crate::handlers::insights::{cursor, parse_cursor};
use crate::handlers::visibility::Visibility;
use crate::ui::query::{DEFAULT_N, ListQuery, Sort, encode, size_cursor};
use crate::ui::templates::{RepoRow, RepositoriesPage, render};
use crate::ui::{UiState, admit, format, html, path};

/// A repository of the list, whatever the order.
struct Listed {
    name: RepositoryName,
    last_push: Option<i64>,
    /// Attributed bytes, known when sorted by size.
    size: Option<u64>,
}

impl Listed {
    /// Where the next page starts after this one, in `sort`'s cursor format.
    fn cursor(&self, sort: Sort) -> String {
        match (sort, self.size) {
            (Sort::LastPush, _) => cursor(self.last_push, self.name.as_str()),
            (Sort::Size, Some(bytes)) => format!("{bytes},{}", self.name),
            _ => self.name.to_string(),
        }
    }
}

impl From<RepositoryEntry> for Listed {
    fn from(e: RepositoryEntry) -> Listed {
        Listed {
            name: e.name,
            last_push: e.last_push,
            size: None,
        }
    }
}

/// One page of the store in `query`'s order, after `after` (a cursor of that order).
async fn batch(
    store: &dyn InsightsMetadata,
    query: &ListQuery,
    filter: NameFilter<'_>,
    after: Option<&str>,
    want: usize,
) -> Result<Vec<Listed>, RegistryError> {
    let entries = |v: Vec<RepositoryEntry>| v.into_iter().map(Listed::from).collect();
    Ok(match query.sort {
        Sort::Name => entries(store.repositories_by_name(filter, after, want).await?),
        Sort::LastPush => {
            let after = after.map(parse_cursor).transpose()?;
            entries(store.repositories_by_last_push(filter, after, want).await?)
        }
        Sort::Size => {
            let after = after.map(size_cursor).transpose()?;
            store
                .repositories_by_size(filter, after, want)
                .await?
                .into_iter()
                .map(|s| {
                    let name = s.name.parse().map_err(|_| {
                        MetadataError::Corrupt(format!("repository name {:?}", s.name))
                    })?;
                    Ok(Listed {
                        name,
                        last_push: s.last_push,
                        size: Some(s.attributed_bytes),
                    })
                })
                .collect::<Result<_, MetadataError>>()?
        }
    })
}

pub(in crate::ui) async fn page(state: &UiState, parts: &Parts) -> Result<Response, RegistryError> {
    let principal = admit(state, &parts.headers, &Access::Base).await?;
    let query = ListQuery::parse(parts.uri.query())?;
    let store = insights(state)?;
    let mut visibility = Visibility::of_principal(&state.inner, principal.clone());
    let filter = if query.q.is_empty() {
        NameFilter::Prefix("")
    } else {
        NameFilter::Contains(&query.q)
    };
    // One more than shown: whether there is a next page.
    let want = query.n + 1;
    let mut after = query.after.clone();
    let mut entries: Vec<Listed> = Vec::with_capacity(want);
    loop {
        let batch = batch(store, &query, filter, after.as_deref(), want).await?;
        let exhausted = batch.len() < want;
        if let Some(last) = batch.last() {
            after = Some(last.cursor(query.sort));
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
