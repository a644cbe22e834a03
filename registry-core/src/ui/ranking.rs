//! The repository list's orders that no index serves (last push, size), as snapshots
//! shared by every page and caller. The store ranks every repository for each such
//! query (about 50 ms at 10,000 repositories, `docs/performance.md`), so the UI ranks
//! them once and serves pages from memory until the snapshot is older than ten times
//! what taking it cost (at least [`MIN_AGE`]): a busy UI spends at most a tenth of its
//! time ranking, and a snapshot is at most a second old while ranking is cheap.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec_types::RepositoryName;
use storage_traits::insights::{NameFilter, RepositoryEntry};
use storage_traits::{InsightsMetadata, MetadataError};
use tokio::sync::Mutex;

use crate::error::RegistryError;
use crate::handlers::insights::{cursor, parse_cursor};
use crate::ui::query::{Sort, size_cursor};

/// The youngest a snapshot is when it is taken again.
const MIN_AGE: Duration = Duration::from_secs(1);

/// A repository of the list, whatever the order.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub(super) name: RepositoryName,
    pub(super) last_push: Option<i64>,
    /// Attributed bytes, known when sorted by size.
    pub(super) size: Option<u64>,
}

impl Listed {
    /// Where the next page starts after this one, in `sort`'s cursor format.
    pub(super) fn cursor(&self, sort: Sort) -> String {
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

/// Every repository in one order, and when it was taken.
#[derive(Debug)]
pub(super) struct Snapshot {
    taken: Instant,
    /// How long taking it took: it is kept for ten times that.
    cost: Duration,
    entries: Vec<Listed>,
}

impl Snapshot {
    /// The entries after the previous page's `after` cursor of `sort`. A cursor naming a
    /// repository no longer in the snapshot still lands where it would have been.
    pub(super) fn after(
        &self,
        sort: Sort,
        after: Option<&str>,
    ) -> Result<&[Listed], RegistryError> {
        let Some(after) = after else {
            return Ok(&self.entries);
        };
        let start = match sort {
            Sort::Size => {
                let (bytes, name) = size_cursor(after)?;
                let key = (Reverse(bytes), name.as_str());
                self.entries
                    .partition_point(|e| (Reverse(e.size.unwrap_or(0)), e.name.as_str()) <= key)
            }
            _ => {
                let (at, name) = parse_cursor(after).map_err(|_| {
                    RegistryError::InvalidParameter(format!("invalid page cursor {after:?}"))
                })?;
                // Pushed first, newest first; never pushed last; ties by name.
                let key = (at.is_none(), Reverse(at), name.as_str());
                self.entries.partition_point(|e| {
                    (e.last_push.is_none(), Reverse(e.last_push), e.name.as_str()) <= key
                })
            }
        };
        Ok(&self.entries[start..])
    }
}

/// The latest snapshot of one order; the lock makes concurrent pages wait for one ranking
/// instead of each running its own.
#[derive(Debug, Default)]
struct Slot(Mutex<Option<Arc<Snapshot>>>);

/// The snapshots of the orders by last push and by size.
#[derive(Debug, Default)]
pub(super) struct Rankings {
    by_push: Slot,
    by_size: Slot,
}

impl Rankings {
    /// A fresh enough snapshot of `sort` (not [`Sort::Name`], which the store pages
    /// through its index), taking one if needed.
    pub(super) async fn get(
        &self,
        sort: Sort,
        store: &dyn InsightsMetadata,
    ) -> Result<Arc<Snapshot>, RegistryError> {
        let slot = match sort {
            Sort::Size => &self.by_size,
            _ => &self.by_push,
        };
        let mut current = slot.0.lock().await;
        if let Some(s) = current.as_ref()
            && s.taken.elapsed() < (s.cost * 10).max(MIN_AGE)
        {
            return Ok(s.clone());
        }
        let start = Instant::now();
        let entries = rank(sort, store).await?;
        let snapshot = Arc::new(Snapshot {
            taken: Instant::now(),
            cost: start.elapsed(),
            entries,
        });
        *current = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// Every repository, in `sort`'s order, from the store.
async fn rank(sort: Sort, store: &dyn InsightsMetadata) -> Result<Vec<Listed>, RegistryError> {
    let all = NameFilter::Prefix("");
    if sort != Sort::Size {
        let entries = store
            .repositories_by_last_push(all, None, usize::MAX)
            .await?;
        return Ok(entries.into_iter().map(Listed::from).collect());
    }
    let stats = store.repositories_by_size(all, None, usize::MAX).await?;
    let listed = stats.into_iter().map(|s| {
        let name = s
            .name
            .parse()
            .map_err(|_| MetadataError::Corrupt(format!("repository name {:?}", s.name)))?;
        Ok(Listed {
            name,
            last_push: s.last_push,
            size: Some(s.attributed_bytes),
        })
    });
    Ok(listed.collect::<Result<_, MetadataError>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, last_push: Option<i64>, size: Option<u64>) -> Listed {
        Listed {
            name: name.parse().unwrap(),
            last_push,
            size,
        }
    }

    fn names(entries: &[Listed]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    fn snapshot(entries: Vec<Listed>) -> Snapshot {
        Snapshot {
            taken: Instant::now(),
            cost: Duration::ZERO,
            entries,
        }
    }

    #[test]
    fn a_cursor_resumes_where_its_entry_is_or_would_be() {
        // The store's order by last push: newest first, never pushed last, ties by name.
        let by_push = snapshot(vec![
            listed("b", Some(30), None),
            listed("a", Some(20), None),
            listed("c", Some(20), None),
            listed("d", None, None),
            listed("e", None, None),
        ]);
        let after = |c: &str| names(by_push.after(Sort::LastPush, Some(c)).unwrap());
        assert_eq!(names(by_push.after(Sort::LastPush, None).unwrap()).len(), 5);
        assert_eq!(after("20,a"), ["c", "d", "e"]);
        // "b2" was deleted since the previous page: the next one starts after its place.
        assert_eq!(after("20,b2"), ["c", "d", "e"]);
        assert_eq!(after("25,zz"), ["a", "c", "d", "e"]);
        assert_eq!(after("-,d"), ["e"]);
        assert_eq!(after("-,a"), ["d", "e"]);

        let by_size = snapshot(vec![
            listed("x", None, Some(50)),
            listed("a", None, Some(10)),
            listed("b", None, Some(10)),
        ]);
        let after = |c: &str| names(by_size.after(Sort::Size, Some(c)).unwrap());
        assert_eq!(after("50,x"), ["a", "b"]);
        assert_eq!(after("10,a"), ["b"]);
        assert_eq!(after("60,a"), ["x", "a", "b"]);
        assert_eq!(after("0,a"), Vec::<&str>::new());

        for (sort, bad) in [(Sort::Size, "x,a"), (Sort::LastPush, "garbage")] {
            assert!(
                matches!(
                    by_size.after(sort, Some(bad)),
                    Err(RegistryError::InvalidParameter(_))
                ),
                "{bad}"
            );
        }
    }
}
