//! Tag retention: rules per repository pattern that remove old tags, so garbage collection
//! can free what only they kept alive.
//!
//! A [`RetentionRule`] governs the tags of the repositories its pattern matches whose name
//! its `tags` regex matches (every tag without one). Such a tag is removed when every
//! condition the rule sets holds: it is not among the `keep_last` most recently pushed of
//! the governed tags, it was pushed longer than `delete_older_than` ago, and it was not
//! pulled for `not_pulled_for` (counted from its push when never pulled). A tag the `keep`
//! regex matches is never removed, and neither is any tag of a repository whose tags are
//! immutable ([`Policy::tags_immutable`](crate::Policy::tags_immutable)). When several
//! rules match a repository, a tag goes when any of them removes it; the report names the
//! first such rule.
//!
//! A tag is removed as `DELETE /v2/<name>/manifests/<tag>` removes it (the manifest stays
//! until garbage collection finds it unreferenced), but only if it still points at the
//! manifest, with the update time, that the evaluation saw
//! ([`MetadataStore::delete_tag_if`](storage_traits::MetadataStore::delete_tag_if)): a tag
//! pushed or moved while the rules run is kept by that run.

use std::fmt;
use std::time::Duration;

use oci_spec_types::{Digest, RepositoryName, Tag};
use regex::Regex;
use storage_traits::insights::TagEntry;
use storage_traits::{MetadataError, Page};

use crate::Registry;
use crate::auth::NamePattern;
use crate::clock::now_ms;
use crate::error::RegistryError;

/// One retention rule (see the [module docs](self)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetentionRule {
    /// Repositories the rule applies to.
    pub repositories: NamePattern,
    /// Tags the rule governs (unanchored regex); `None`: every tag.
    pub tags: Option<Regex>,
    /// Keep this many of the most recently pushed governed tags.
    pub keep_last: Option<usize>,
    /// Remove only tags pushed longer ago than this.
    pub delete_older_than: Option<Duration>,
    /// Tags this regex matches are never removed.
    pub keep: Option<Regex>,
    /// Remove only tags whose manifest was not pulled for this long.
    pub not_pulled_for: Option<Duration>,
}

impl RetentionRule {
    /// A rule for `repositories` that removes nothing until a condition is set.
    pub fn new(repositories: NamePattern) -> Self {
        RetentionRule {
            repositories,
            tags: None,
            keep_last: None,
            delete_older_than: None,
            keep: None,
            not_pulled_for: None,
        }
    }
    /// Sets [`RetentionRule::tags`].
    #[must_use]
    pub fn with_tags(mut self, tags: Option<Regex>) -> Self {
        self.tags = tags;
        self
    }
    /// Sets [`RetentionRule::keep_last`].
    #[must_use]
    pub fn with_keep_last(mut self, n: Option<usize>) -> Self {
        self.keep_last = n;
        self
    }
    /// Sets [`RetentionRule::delete_older_than`].
    #[must_use]
    pub fn with_delete_older_than(mut self, age: Option<Duration>) -> Self {
        self.delete_older_than = age;
        self
    }
    /// Sets [`RetentionRule::keep`].
    #[must_use]
    pub fn with_keep(mut self, keep: Option<Regex>) -> Self {
        self.keep = keep;
        self
    }
    /// Sets [`RetentionRule::not_pulled_for`].
    #[must_use]
    pub fn with_not_pulled_for(mut self, idle: Option<Duration>) -> Self {
        self.not_pulled_for = idle;
        self
    }

    /// A rule with no condition would remove every governed tag: almost surely a mistake
    /// in a config file, so it is refused rather than applied.
    pub fn validate(&self) -> Result<(), String> {
        if self.keep_last.is_none()
            && self.delete_older_than.is_none()
            && self.not_pulled_for.is_none()
        {
            return Err(format!(
                "retention rule for {} sets none of keep_last, delete_older_than, not_pulled_for",
                self.repositories
            ));
        }
        Ok(())
    }
}

impl fmt::Display for RetentionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repositories={}", self.repositories)?;
        if let Some(t) = &self.tags {
            write!(f, " tags={}", t.as_str())?;
        }
        if let Some(n) = self.keep_last {
            write!(f, " keep_last={n}")?;
        }
        if let Some(d) = self.delete_older_than {
            write!(f, " delete_older_than={}", Span(d))?;
        }
        if let Some(d) = self.not_pulled_for {
            write!(f, " not_pulled_for={}", Span(d))?;
        }
        if let Some(k) = &self.keep {
            write!(f, " keep={}", k.as_str())?;
        }
        Ok(())
    }
}

/// A tag a run removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionRemoval {
    /// The repository.
    pub repository: RepositoryName,
    /// The tag removed.
    pub tag: Tag,
    /// The manifest it pointed at.
    pub digest: Digest,
    /// Index of the matching rule in the rules given.
    pub rule: usize,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Whether this was a dry run (nothing was removed).
    pub dry_run: bool,
    /// In repository order, each repository's tags oldest push first.
    pub removed: Vec<RetentionRemoval>,
    /// Tags a rule selected that were pushed or moved before they could be removed.
    pub moved: Vec<(RepositoryName, Tag)>,
}

/// Tags read from the store per listing call.
const PAGE: usize = 1000;

impl Registry {
    /// Applies `rules` once to every repository (see the [module docs](crate::retention)). In a
    /// dry run nothing is removed and the report says what would be. Pull figures are
    /// written first, so `not_pulled_for` sees the latest pulls.
    pub async fn apply_retention(
        &self,
        rules: &[RetentionRule],
        dry_run: bool,
    ) -> Result<RetentionReport, RegistryError> {
        let mut report = RetentionReport {
            dry_run,
            ..RetentionReport::default()
        };
        if rules.is_empty() {
            return Ok(report);
        }
        if rules.iter().any(|r| r.not_pulled_for.is_some()) {
            self.flush_pulls().await?;
        }
        let now = now_ms();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .metadata
                .list_repositories(&Page::new(after.clone(), Some(PAGE)))
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.as_str().to_string());
            for repo in &page {
                let matching: Vec<(usize, &RetentionRule)> = rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.repositories.matches(repo.as_str()))
                    .collect();
                if matching.is_empty() || self.inner.config.policy.tags_immutable(repo) {
                    continue;
                }
                self.retain_repository(repo, &matching, now, &mut report)
                    .await?;
            }
            if page.len() < PAGE {
                break;
            }
        }
        if !dry_run && !report.removed.is_empty() {
            // The tag records are removed in the background; a one-off run may exit
            // right after it returns.
            self.inner.recovery.flush().await;
        }
        Ok(report)
    }

    async fn retain_repository(
        &self,
        repo: &RepositoryName,
        rules: &[(usize, &RetentionRule)],
        now: i64,
        report: &mut RetentionReport,
    ) -> Result<(), RegistryError> {
        let Some(tags) = self.tags_newest_first(repo).await? else {
            return Ok(());
        };
        let last_pulls = if rules.iter().any(|(_, r)| r.not_pulled_for.is_some()) {
            self.last_pulls(repo).await?
        } else {
            None
        };
        let mut chosen: Vec<(&TagEntry, usize)> = Vec::new();
        for (index, rule) in rules {
            let governed = tags
                .iter()
                .filter(|t| rule.tags.as_ref().is_none_or(|re| re.is_match(&t.name)));
            for (rank, t) in governed.enumerate() {
                if rule.keep_last.is_some_and(|n| rank < n)
                    || rule.keep.as_ref().is_some_and(|re| re.is_match(&t.name))
                    || chosen.iter().any(|(c, _)| c.name == t.name)
                {
                    continue;
                }
                if let Some(age) = rule.delete_older_than
                    && t.updated_at > now.saturating_sub(ms(age))
                {
                    continue;
                }
                if let Some(idle) = rule.not_pulled_for {
                    // Without pull figures nothing is known to be idle.
                    let Some(pulls) = &last_pulls else { continue };
                    let last = pulls
                        .iter()
                        .find(|(d, _)| *d == t.digest)
                        .and_then(|(_, at)| *at)
                        .unwrap_or(t.updated_at)
                        .max(t.updated_at);
                    if last > now.saturating_sub(ms(idle)) {
                        continue;
                    }
                }
                chosen.push((t, *index));
            }
        }
        // Oldest first: the order an operator reads a cleanup in.
        chosen.sort_by(|(a, _), (b, _)| (a.updated_at, &a.name).cmp(&(b.updated_at, &b.name)));
        for (t, rule) in chosen {
            let tag: Tag = t
                .name
                .parse()
                .map_err(|_| MetadataError::Corrupt(format!("stored tag {:?}", t.name)))?;
            if !report.dry_run {
                let removed = self
                    .inner
                    .metadata
                    .delete_tag_if(repo, &tag, &t.digest, t.updated_at)
                    .await?;
                if !removed {
                    report.moved.push((repo.clone(), tag));
                    continue;
                }
                self.inner.recovery.tag_deleted(repo, &tag).await;
                tracing::info!(repository = %repo, %tag, digest = %t.digest, rule, "tag removed by retention");
            }
            report.removed.push(RetentionRemoval {
                repository: repo.clone(),
                tag,
                digest: t.digest.clone(),
                rule,
            });
        }
        Ok(())
    }

    /// Every tag of `repo` with its manifest and last move, most recently moved first.
    async fn tags_newest_first(
        &self,
        repo: &RepositoryName,
    ) -> Result<Option<Vec<TagEntry>>, RegistryError> {
        let insights = self.inner.metadata.insights().ok_or_else(|| {
            MetadataError::backend(
                "retention",
                "this metadata store does not list tags with their push times",
            )
        })?;
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let Some(page) = insights
                .tags_by_last_push(repo, "", after.clone(), PAGE)
                .await?
            else {
                return Ok(None);
            };
            let full = page.len() == PAGE;
            after = page.last().map(|t| (t.updated_at, t.name.clone()));
            all.extend(page);
            if !full {
                return Ok(Some(all));
            }
        }
    }

    /// Each manifest's last pull, when the store keeps pull figures.
    async fn last_pulls(
        &self,
        repo: &RepositoryName,
    ) -> Result<Option<Vec<(Digest, Option<i64>)>>, RegistryError> {
        let Some(pulls) = self.inner.metadata.pulls() else {
            return Ok(None);
        };
        Ok(Some(
            pulls
                .manifest_pulls(repo)
                .await?
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m.digest, m.last_pull))
                .collect(),
        ))
    }

    /// Starts applying `rules` every `interval` in the background (the first run after
    /// one interval); the removed tags' manifests are then the garbage collector's.
    pub fn spawn_retention(
        &self,
        rules: Vec<RetentionRule>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match registry.apply_retention(&rules, false).await {
                    Ok(r) if r.removed.is_empty() => {}
                    Ok(r) => tracing::info!(
                        removed = r.removed.len(),
                        moved = r.moved.len(),
                        "retention rules applied"
                    ),
                    Err(e) => tracing::warn!(error = %e, "retention run failed"),
                }
            }
        })
    }
}

/// A duration as a config file spells it (`90d`, `12h`, `30m`, `45s`, `250ms`).
struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        if self.0.subsec_nanos() != 0 || s == 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if s.is_multiple_of(len) {
                return write!(f, "{}{unit}", s / len);
            }
        }
        write!(f, "{s}s")
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
