//! A pull mirror: a sync from another registry into this one, run in the background at
//! start and then on a fixed interval.
//!
//! A run that left failures is tried again sooner, backing off from the sync's retry
//! delay up to the interval, at most `max_retries` times; what still fails waits for the
//! next run. Each run is incremental, so trying again costs the `HEAD`s, not the copies.
//!
//! ```no_run
//! # fn demo(registry: registry_core::Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use registry_core::mirror::{Remote, SyncOptions, schedule::PullMirror};
//!
//! let options = SyncOptions::from(Remote::new("https://registry.example.com")?, "library/*".parse()?);
//! let _task = registry.spawn_pull_mirror(PullMirror::new(options, Duration::from_secs(3600)));
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{Direction, MIRROR_JOBS, SyncError, SyncOptions, SyncReport};
use crate::Registry;

/// A sync run on a schedule.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PullMirror {
    /// What each run copies.
    pub options: SyncOptions,
    /// From the start of one run to the start of the next (a run that takes longer is
    /// followed by the next at once).
    pub interval: Duration,
}

impl PullMirror {
    /// Runs `options` every `interval` (at least 1 s).
    pub fn new(options: SyncOptions, interval: Duration) -> Self {
        PullMirror {
            options,
            interval: interval.max(Duration::from_secs(1)),
        }
    }
}

/// Why a run is tried again.
#[derive(Debug)]
enum RunFailed {
    Partial(SyncReport),
    Error(SyncError),
}

impl std::fmt::Display for RunFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunFailed::Partial(r) => write!(
                f,
                "{} failed, first: {}",
                r.failures.len(),
                r.failures.first().map_or("", String::as_str)
            ),
            RunFailed::Error(e) => write!(f, "{e}"),
        }
    }
}

impl Registry {
    /// Starts a [`PullMirror`] on the current runtime; it runs until the handle is
    /// aborted or the runtime shuts down. A mirror in the other direction (to another
    /// registry) runs on the same schedule just as well.
    pub fn spawn_pull_mirror(&self, mirror: PullMirror) -> JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let remote = match &mirror.options.direction {
                Direction::From(r) | Direction::To(r) => r.url().to_string(),
            };
            let mut tick = tokio::time::interval(mirror.interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let run = || async {
                    match registry.sync(&mirror.options).await {
                        Ok(report) if report.is_complete() => Ok(report),
                        Ok(report) => Err(RunFailed::Partial(report)),
                        Err(e) => Err(RunFailed::Error(e)),
                    }
                };
                let backoff = ExponentialBuilder::default()
                    .with_min_delay(mirror.options.retry_delay)
                    .with_max_delay(mirror.interval.max(mirror.options.retry_delay))
                    .with_max_times(mirror.options.max_retries)
                    .with_jitter();
                let result = run
                    .retry(backoff)
                    .sleep(tokio::time::sleep)
                    .notify(|e, after| {
                        metrics::counter!(MIRROR_JOBS, "outcome" => "retry").increment(1);
                        tracing::warn!(remote = %remote, error = %e, retry_in = ?after,
                            "mirror run incomplete; trying again");
                    })
                    .await;
                match result {
                    Ok(r) => {
                        metrics::counter!(MIRROR_JOBS, "outcome" => "ok").increment(1);
                        tracing::info!(remote = %remote, repositories = r.repositories,
                            tags_copied = r.tags_copied, manifests = r.manifests_copied,
                            blobs = r.blobs_copied, bytes = r.bytes_copied, "mirror run done");
                    }
                    Err(e) => {
                        metrics::counter!(MIRROR_JOBS, "outcome" => "failed").increment(1);
                        tracing::warn!(remote = %remote, error = %e,
                            "mirror run failed; next at the next interval");
                    }
                }
            }
        })
    }
}
