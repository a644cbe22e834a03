//! The cache policy: what the pull-through cache stops keeping.
//!
//! An eviction unit is a manifest no other manifest of its repository references (an
//! image, or an index with its children, which are evicted together so an index never
//! loses a child it names). A unit was last used when any of its manifests was last
//! pulled (or, never pulled, pushed into the cache). Evicting deletes the unit's
//! manifests and tags as a `DELETE` would; the garbage collector then frees the blobs no
//! one references any more.
//!
//! - `cache_ttl`: units not used for that long are evicted.
//! - `cache_max_bytes`: then, least recently used first, units are evicted until the
//!   blobs the remaining units name add up to at most the limit (each blob counted once
//!   across all upstreams' repositories; a blob another, local repository also links may
//!   stay after its last cached user is evicted, so the freed bytes can be fewer).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use oci_spec_types::{Digest, ParsedManifest, Reference, RepositoryName};
use storage_traits::Page;

use crate::Inner;
use crate::clock::now_ms;
use crate::error::RegistryError;

/// Repository names read per listing page while looking for a prefix's repositories.
const SCAN_PAGE: usize = 1000;

/// What one eviction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EvictionReport {
    /// `(repository, manifest)` deleted, roots before their children.
    pub manifests: Vec<(RepositoryName, Digest)>,
    /// Bytes of blobs the evicted units named that no remaining cached unit names.
    pub bytes_released: u64,
}

/// One eviction unit.
#[derive(Debug)]
struct Unit {
    repo: RepositoryName,
    /// The root first, then its children.
    manifests: Vec<Digest>,
    last_used: i64,
    blobs: BTreeSet<Digest>,
}

pub(crate) async fn evict(inner: &Inner) -> Result<EvictionReport, RegistryError> {
    let mut report = EvictionReport::default();
    let Some(proxy) = inner.proxy.as_ref() else {
        return Ok(report);
    };
    if proxy.cache_ttl.is_none() && proxy.cache_max_bytes.is_none() {
        return Ok(report);
    }
    let Some(pulls) = inner.metadata.pulls() else {
        tracing::warn!("the cache policy needs pull figures, which this metadata store lacks");
        return Ok(report);
    };
    let mut units = Vec::new();
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    for client in &proxy.clients {
        for repo in repositories_under(inner, &client.upstream().prefix).await? {
            let Some(manifests) = pulls.manifest_pulls(&repo).await? else {
                continue;
            };
            let mut parsed = BTreeMap::new();
            for m in &manifests {
                let record = inner
                    .metadata
                    .get_manifest(&repo, &Reference::Digest(m.digest.clone()))
                    .await?;
                let Some(record) = record else { continue };
                let Ok(p) = ParsedManifest::parse(Some(&record.media_type), &record.content) else {
                    continue;
                };
                for b in p.config.iter().chain(&p.layers) {
                    sizes.insert(b.digest.clone(), b.size);
                }
                let used = m.last_pull.unwrap_or(m.created_at);
                parsed.insert(m.digest.clone(), (p, used));
            }
            units.extend(units_of(&repo, &parsed));
        }
    }
    // Least recently used first.
    units.sort_by_key(|u| u.last_used);
    let mut users: HashMap<&Digest, usize> = HashMap::new();
    for u in &units {
        for b in &u.blobs {
            *users.entry(b).or_default() += 1;
        }
    }
    let mut total: u64 = users
        .keys()
        .map(|d| sizes.get(*d).copied().unwrap_or(0))
        .sum();
    let cutoff = proxy
        .cache_ttl
        .map(|ttl| now_ms().saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)));
    // A child two indexes share is deleted with the last of them.
    let mut manifest_users: HashMap<(&RepositoryName, &Digest), usize> = HashMap::new();
    for u in &units {
        for m in &u.manifests {
            *manifest_users.entry((&u.repo, m)).or_default() += 1;
        }
    }
    for unit in &units {
        let expired = cutoff.is_some_and(|c| unit.last_used < c);
        let over = proxy.cache_max_bytes.is_some_and(|max| total > max);
        // Oldest first: once a unit is young enough and the budget is met, so are the rest.
        if !expired && !over {
            break;
        }
        for digest in &unit.manifests {
            let Some(n) = manifest_users.get_mut(&(&unit.repo, digest)) else {
                continue;
            };
            *n -= 1;
            if *n == 0 && inner.metadata.delete_manifest(&unit.repo, digest).await? {
                inner
                    .recovery
                    .manifest_deleted(&unit.repo, digest, true)
                    .await;
                report.manifests.push((unit.repo.clone(), digest.clone()));
            }
        }
        for b in &unit.blobs {
            if let Some(n) = users.get_mut(b) {
                *n -= 1;
                if *n == 0 {
                    let size = sizes.get(b).copied().unwrap_or(0);
                    total = total.saturating_sub(size);
                    report.bytes_released += size;
                }
            }
        }
    }
    if !report.manifests.is_empty() {
        tracing::info!(
            manifests = report.manifests.len(),
            bytes = report.bytes_released,
            "cache policy evicted cached manifests"
        );
    }
    Ok(report)
}

/// The repositories named `prefix/...`, from the lexical listing: they sort right after
/// `prefix.` and before `prefix0` (`/` lies between `.` and `0`).
async fn repositories_under(
    inner: &Inner,
    prefix: &RepositoryName,
) -> Result<Vec<RepositoryName>, RegistryError> {
    let below = format!("{prefix}/");
    let end = format!("{prefix}0");
    let mut last = Some(format!("{prefix}."));
    let mut found = Vec::new();
    loop {
        let page = inner
            .metadata
            .list_repositories(&Page::new(last.take(), Some(SCAN_PAGE)))
            .await?;
        let full = page.len() == SCAN_PAGE;
        for name in page {
            if name.as_str() >= end.as_str() {
                return Ok(found);
            }
            last = Some(name.to_string());
            if name.as_str().starts_with(&below) {
                found.push(name);
            }
        }
        if !full || last.is_none() {
            return Ok(found);
        }
    }
}

/// Groups a repository's manifests into units: each manifest no other one names, with
/// every manifest it names (recursively).
fn units_of(repo: &RepositoryName, parsed: &BTreeMap<Digest, (ParsedManifest, i64)>) -> Vec<Unit> {
    let named: BTreeSet<&Digest> = parsed
        .values()
        .flat_map(|(p, _)| p.manifests.iter().map(|d| &d.digest))
        .collect();
    let mut units = Vec::new();
    for root in parsed.keys().filter(|d| !named.contains(d)) {
        let mut unit = Unit {
            repo: repo.clone(),
            manifests: Vec::new(),
            last_used: i64::MIN,
            blobs: BTreeSet::new(),
        };
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            if unit.manifests.contains(&d) {
                continue;
            }
            if let Some((p, used)) = parsed.get(&d) {
                unit.last_used = unit.last_used.max(*used);
                unit.blobs
                    .extend(p.config.iter().chain(&p.layers).map(|b| b.digest.clone()));
                stack.extend(p.manifests.iter().map(|c| c.digest.clone()));
            }
            unit.manifests.push(d);
        }
        units.push(unit);
    }
    units
}
