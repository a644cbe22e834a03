//! Pull analytics without a database write per pull: the edge tallies each manifest
//! `GET` answered `200` here, in memory, and [`Registry::flush_pulls`] hands the store one
//! batch every few seconds (from the maintenance task) and at shutdown.
//!
//! The tally is a set of shards, each a `Mutex<HashMap>`, and each thread tallies into its
//! own shard (threads are assigned shards round-robin on first use). Tokio's workers thus
//! never wait for each other on a pull, even of one hot tag: a shard's lock is taken by
//! one worker, and only contended while a flush swaps the shard's map out (a pointer
//! swap). A flush merges the shards; the same manifest tallied on several threads adds up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use storage_traits::PullCount;

use crate::{Registry, RegistryError};

/// Shards of the tally: more than the threads that usually serve requests, so two
/// workers rarely share one.
const SHARDS: usize = 64;

/// `(repository, digest)`, as the pull event has them.
type Key = (String, String);

/// foldhash, not std's SipHash: hashing the key was most of what a tally costs a manifest
/// GET (callgrind). Keys are names of stored manifests (only a `200` is tallied), seeded
/// per process.
type Map = HashMap<Key, Tally, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    last_pull: i64,
}

/// Pulls tallied since the last flush.
#[derive(Debug)]
pub(crate) struct PullTally {
    /// Off when the metadata store keeps no pull figures.
    enabled: bool,
    shards: Box<[Mutex<Map>]>,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

fn lock(shard: &Mutex<Map>) -> MutexGuard<'_, Map> {
    // A panic while holding the lock leaves a map of plain counts: still consistent.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PullTally {
    pub(crate) fn new(enabled: bool) -> Self {
        PullTally {
            enabled,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Counts one pull of `digest` in `repository` at `at` (Unix milliseconds).
    pub(crate) fn record(&self, repository: String, digest: String, at: i64) {
        if !self.enabled {
            return;
        }
        let i = SHARD.with(|s| *s) % self.shards.len();
        let mut map = lock(&self.shards[i]);
        map.entry((repository, digest))
            .and_modify(|t| {
                t.count = t.count.saturating_add(1);
                t.last_pull = t.last_pull.max(at);
            })
            .or_insert(Tally {
                count: 1,
                last_pull: at,
            });
    }

    /// Takes everything tallied so far, merged. Entries whose names do not parse (none
    /// the edge produces) are dropped.
    pub(crate) fn take(&self) -> Vec<PullCount> {
        let mut merged = Map::default();
        for shard in &self.shards {
            let map = std::mem::take(&mut *lock(shard));
            for (key, t) in map {
                merged
                    .entry(key)
                    .and_modify(|m| {
                        m.count = m.count.saturating_add(t.count);
                        m.last_pull = m.last_pull.max(t.last_pull);
                    })
                    .or_insert(t);
            }
        }
        merged
            .into_iter()
            .filter_map(|((repo, digest), t)| {
                Some(PullCount::new(
                    repo.parse().ok()?,
                    digest.parse().ok()?,
                    t.count,
                    t.last_pull,
                ))
            })
            .collect()
    }

    /// Puts a batch the store refused back, to go with the next flush.
    pub(crate) fn restore(&self, batch: Vec<PullCount>) {
        let mut map = lock(&self.shards[0]);
        for p in batch {
            map.entry((p.repository.to_string(), p.digest.to_string()))
                .and_modify(|t| {
                    t.count = t.count.saturating_add(p.count);
                    t.last_pull = t.last_pull.max(p.last_pull);
                })
                .or_insert(Tally {
                    count: p.count,
                    last_pull: p.last_pull,
                });
        }
    }
}

impl Registry {
    /// Writes the pulls tallied since the last flush to the metadata store in one batch;
    /// returns how many manifests the batch named. The maintenance task calls this every
    /// [`RegistryConfig::pull_flush_interval`](crate::RegistryConfig); call it once more
    /// at shutdown, after the server has stopped. On failure the batch is kept for the
    /// next flush.
    pub async fn flush_pulls(&self) -> Result<usize, RegistryError> {
        let Some(store) = self.inner.metadata.pulls() else {
            return Ok(0);
        };
        let batch = self.inner.pulls.take();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.record_pulls(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                self.inner.pulls.restore(batch);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        oci_spec_types::Digest::sha256_of(&[n]).to_string()
    }

    #[test]
    fn pulls_on_many_threads_add_up_and_keep_the_latest_time() {
        let tally = std::sync::Arc::new(PullTally::new(true));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let tally = tally.clone();
                std::thread::spawn(move || {
                    for n in 0..100 {
                        tally.record("lib/a".into(), digest(1), i * 1000 + n);
                    }
                    tally.record("lib/b".into(), digest(2), 5);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("tally thread");
        }
        let mut batch = tally.take();
        batch.sort_by(|a, b| a.repository.cmp(&b.repository));
        assert_eq!(batch.len(), 2, "{batch:?}");
        assert_eq!((batch[0].count, batch[0].last_pull), (800, 7099));
        assert_eq!(batch[0].digest.to_string(), digest(1));
        assert_eq!((batch[1].count, batch[1].last_pull), (8, 5));
        assert!(tally.take().is_empty(), "a take empties the tally");
    }

    #[test]
    fn a_restored_batch_adds_to_what_came_since() {
        let tally = PullTally::new(true);
        tally.record("lib/a".into(), digest(1), 10);
        let batch = tally.take();
        tally.record("lib/a".into(), digest(1), 5);
        tally.restore(batch);
        let batch = tally.take();
        assert_eq!(batch.len(), 1);
        assert_eq!((batch[0].count, batch[0].last_pull), (2, 10));
    }

    #[test]
    fn a_disabled_tally_keeps_nothing_and_bad_names_are_dropped() {
        let off = PullTally::new(false);
        off.record("lib/a".into(), digest(1), 1);
        assert!(off.take().is_empty());
        let on = PullTally::new(true);
        on.record("Not A Name".into(), digest(1), 1);
        on.record("lib/a".into(), "sha256:nope".into(), 1);
        assert!(on.take().is_empty());
    }
}
