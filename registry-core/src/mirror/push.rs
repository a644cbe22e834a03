//! A push mirror: every manifest pushed here is copied to another registry soon after,
//! driven by the registry's push events (see [`crate::ops::events`]), the way
//! [`crate::ops::webhook`] is.
//!
//! - [`middleware`] reads the event the registry attached to each response and queues
//!   pushed tags (and manifests pushed by digest: referrers, copied when the target holds
//!   their subject). Requests never wait: a full queue drops the event (counted as
//!   `registry_mirror_jobs_total{outcome="dropped"}`); the next push of the tag, or a
//!   scheduled sync, catches up.
//! - One task copies them in order with [`Registry::sync_reference`]. A copy that fails
//!   for a reason that may pass (the target unreachable, a 5xx, a store error) goes to a
//!   bounded retry queue and is tried again after an exponential backoff, up to
//!   `max_retries` times; a newer push (or delete) of the same reference replaces its
//!   pending retry.
//! - Deletes are mirrored only when asked ([`PushMirrorConfig::with_deletes`]): a manifest
//!   deleted here by digest, or a tag deleted here, is then deleted on the target too (a
//!   target that no longer has it is fine). Off by default, because a mirror is often
//!   kept as a backup precisely against deletes. Only deletes through the API are
//!   mirrored: what retention or the cache policy removes is not.
//!
//! ```no_run
//! # fn demo(registry: registry_core::Registry) -> Result<(), Box<dyn std::error::Error>> {
//! use registry_core::mirror::push::{PushMirror, PushMirrorConfig};
//! use registry_core::mirror::{Remote, SyncOptions};
//!
//! let options = SyncOptions::to(Remote::new("https://backup.example.com")?, "*".parse()?);
//! let (mirror, _task) = PushMirror::spawn(&registry, PushMirrorConfig::new(options))?;
//! let app = registry.router().layer(axum::middleware::from_fn_with_state(
//!     mirror,
//!     registry_core::mirror::push::middleware,
//! ));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use oci_spec_types::{Reference, RepositoryName};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Direction, MIRROR_JOBS, MirrorConfigError, SyncError, SyncOptions};
use crate::Registry;
use crate::ops::events::{Action, RegistryEvent, Target};
use crate::proxy::UpstreamError;

/// A push mirror's settings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PushMirrorConfig {
    /// Where to ([`Direction::To`]), which repositories and tags.
    pub options: SyncOptions,
    /// Pushes waiting to be copied; more are dropped (default 1024).
    pub queue_capacity: usize,
    /// Failed copies waiting to be tried again; more are dropped (default 1024).
    pub retry_capacity: usize,
    /// Times a failed copy is tried again (default 8, backing off from 1 s to 5 min).
    pub max_retries: usize,
    /// The first retry's delay (default 1 s).
    pub retry_min_delay: Duration,
    /// The longest delay between retries (default 5 min).
    pub retry_max_delay: Duration,
    /// Whether manifest and tag deletes are mirrored too (default `false`).
    pub deletes: bool,
}

impl PushMirrorConfig {
    /// A push mirror copying what `options` selects, with the defaults each field names.
    pub fn new(options: SyncOptions) -> Self {
        PushMirrorConfig {
            options,
            queue_capacity: 1024,
            retry_capacity: 1024,
            max_retries: 8,
            retry_min_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            deletes: false,
        }
    }

    /// Mirrors deletes of manifests (by digest) and tags through the API as well.
    #[must_use]
    pub fn with_deletes(mut self, deletes: bool) -> Self {
        self.deletes = deletes;
        self
    }

    /// Sets [`PushMirrorConfig::queue_capacity`] (at least 1).
    #[must_use]
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// Sets [`PushMirrorConfig::retry_capacity`].
    #[must_use]
    pub fn with_retry_capacity(mut self, capacity: usize) -> Self {
        self.retry_capacity = capacity;
        self
    }

    /// Sets the retries and the bounds of their delay (the maximum at least the minimum).
    #[must_use]
    pub fn with_retries(
        mut self,
        max_retries: usize,
        min_delay: Duration,
        max_delay: Duration,
    ) -> Self {
        self.max_retries = max_retries;
        self.retry_min_delay = min_delay;
        self.retry_max_delay = max_delay.max(min_delay);
        self
    }

    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.retry_min_delay)
            .with_max_delay(self.retry_max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
            .build()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    repository: RepositoryName,
    reference: Reference,
    op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Copy,
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Copy => "copy",
            Op::Delete => "delete",
        }
    }
}

impl Job {
    /// The same manifest or tag, whatever is to be done with it.
    fn same_reference(&self, other: &Job) -> bool {
        self.repository == other.repository && self.reference == other.reference
    }
}

/// The queueing side of a push mirror. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PushMirror {
    tx: mpsc::Sender<Job>,
    options: std::sync::Arc<SyncOptions>,
    deletes: bool,
}

impl PushMirror {
    /// Starts the copying task on the current runtime. It stops once every `PushMirror`
    /// clone is dropped and the queue is drained (pending retries are then abandoned).
    /// An error if the options do not copy to another registry.
    pub fn spawn(
        registry: &Registry,
        config: PushMirrorConfig,
    ) -> Result<(PushMirror, JoinHandle<()>), MirrorConfigError> {
        if !matches!(config.options.direction, Direction::To(_)) {
            return Err(MirrorConfigError(
                "a push mirror copies to another registry (SyncOptions::to)".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let options = std::sync::Arc::new(config.options.clone());
        let deletes = config.deletes;
        let task = tokio::spawn(run(registry.clone(), config, rx));
        Ok((
            PushMirror {
                tx,
                options,
                deletes,
            },
            task,
        ))
    }

    /// Queues the copy of a pushed manifest (or the delete of a deleted one, when
    /// deletes are mirrored), if the mirror's repositories and tags include it. Never
    /// waits.
    pub fn notify(&self, event: &RegistryEvent) {
        let op = match (event.action, event.target) {
            (Action::Push, Target::Manifest) => Op::Copy,
            (Action::Delete, Target::Manifest) if self.deletes => Op::Delete,
            _ => return,
        };
        let Ok(repository) = event.repository.parse::<RepositoryName>() else {
            return;
        };
        if !self.options.repositories.matches(repository.as_str()) {
            return;
        }
        let reference = match (&event.tag, &event.digest) {
            (Some(tag), _) => {
                if self.options.tags.as_ref().is_some_and(|f| !f.matches(tag)) {
                    return;
                }
                tag.parse().map(Reference::Tag).ok()
            }
            (None, Some(digest)) => digest.parse().map(Reference::Digest).ok(),
            (None, None) => None,
        };
        let Some(reference) = reference else {
            return;
        };
        let job = Job {
            repository,
            reference,
            op,
        };
        if self.tx.try_send(job).is_err() {
            metrics::counter!(MIRROR_JOBS, "outcome" => "dropped").increment(1);
            tracing::warn!(repository = %event.repository, action = event.action.as_str(),
                "push mirror queue full: not mirrored");
        }
    }
}

/// Axum middleware (`axum::middleware::from_fn_with_state(mirror, middleware)`) to wrap
/// around [`Registry::router`]: queues the manifests pushed through it.
pub async fn middleware(State(mirror): State<PushMirror>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if let Some(event) = res.extensions().get::<RegistryEvent>() {
        mirror.notify(event);
    }
    res
}

/// A copy waiting to be tried again.
struct Retry {
    job: Job,
    due: Instant,
    /// The delays still allowed; empty once `max_retries` are spent.
    backoff: ExponentialBackoff,
}

/// Worth trying again later: anything but content that cannot be mirrored, or a target
/// that refused or lacks something (those need a person).
fn retryable(e: &SyncError) -> bool {
    !matches!(
        e,
        SyncError::Invalid(_)
            | SyncError::Remote {
                source: UpstreamError::Refused(_) | UpstreamError::NotFound,
                ..
            }
    )
}

async fn run(registry: Registry, config: PushMirrorConfig, mut rx: mpsc::Receiver<Job>) {
    let mut retries: Vec<Retry> = Vec::new();
    loop {
        let next_due = retries.iter().map(|r| r.due).min();
        let due = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let (job, backoff) = tokio::select! {
            received = rx.recv() => match received {
                Some(job) => {
                    // This attempt covers the older one waiting for its retry.
                    retries.retain(|r| !r.job.same_reference(&job));
                    (job, config.backoff())
                }
                None => break,
            },
            () = due => {
                let now = Instant::now();
                let Some(i) = retries.iter().position(|r| r.due <= now) else {
                    continue;
                };
                let r = retries.swap_remove(i);
                (r.job, r.backoff)
            }
        };
        attempt(&registry, &config, job, backoff, &mut retries).await;
    }
    if !retries.is_empty() {
        tracing::warn!(
            pending = retries.len(),
            "push mirror stopped with copies still to retry"
        );
    }
}

async fn attempt(
    registry: &Registry,
    config: &PushMirrorConfig,
    job: Job,
    mut backoff: ExponentialBackoff,
    retries: &mut Vec<Retry>,
) {
    let result = match job.op {
        Op::Copy => registry
            .sync_reference(&config.options, &job.repository, &job.reference)
            .await
            .map(|report| {
                tracing::info!(repository = %job.repository, reference = %job.reference,
                    manifests = report.manifests_copied, blobs = report.blobs_copied,
                    "push mirrored");
            }),
        Op::Delete => delete_on_target(&config.options, &job).await.map(|found| {
            tracing::info!(repository = %job.repository, reference = %job.reference,
                found, "delete mirrored");
        }),
    };
    let e = match result {
        Ok(()) => {
            metrics::counter!(MIRROR_JOBS, "outcome" => "ok").increment(1);
            return;
        }
        Err(e) => e,
    };
    let delay = if retryable(&e) { backoff.next() } else { None };
    match delay {
        Some(delay) if retries.len() < config.retry_capacity => {
            metrics::counter!(MIRROR_JOBS, "outcome" => "retry").increment(1);
            tracing::warn!(repository = %job.repository, reference = %job.reference,
                op = job.op.as_str(), error = %e, retry_in = ?delay, "push mirror copy failed; will retry");
            retries.push(Retry {
                job,
                due: Instant::now() + delay,
                backoff,
            });
        }
        Some(_) => {
            metrics::counter!(MIRROR_JOBS, "outcome" => "dropped").increment(1);
            tracing::warn!(repository = %job.repository, reference = %job.reference,
                op = job.op.as_str(), error = %e, "push mirror copy failed and the retry queue is full: dropped");
        }
        None => {
            metrics::counter!(MIRROR_JOBS, "outcome" => "failed").increment(1);
            tracing::warn!(repository = %job.repository, reference = %job.reference,
                op = job.op.as_str(), error = %e, "push mirror copy failed: given up");
        }
    }
}

/// Deletes the job's manifest or tag on the target; `false` if it was not there.
async fn delete_on_target(options: &SyncOptions, job: &Job) -> Result<bool, SyncError> {
    let Direction::To(target) = &options.direction else {
        // `PushMirror::spawn` accepts only mirrors to another registry.
        return Err(SyncError::Invalid(
            "a push mirror deletes on another registry only".into(),
        ));
    };
    let repository = super::copy::target_name(options.target_prefix.as_ref(), &job.repository)?;
    super::remote::RemoteRegistry::new(target)
        .delete_manifest(&repository, &job.reference)
        .await
}
