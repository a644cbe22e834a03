//! `registry stats`: what the registry stores, asked of the metadata store alone (the
//! insight queries of `storage_traits::InsightsMetadata`, the same ones `/v2/_ext/`
//! serves), as tables or as one JSON document.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use std::collections::BTreeMap;

use serde::Serialize;
use storage_traits::insights::{
    ArtifactTypeCount, BlobReuse, RepositoryOrder, RepositoryStats, Summary,
};
use storage_traits::quotas::{Quota, QuotaUsage};
use storage_traits::{InsightsMetadata, PullMetadata, Pulls, QuotaMetadata};

use crate::BoxError;
use crate::config::MetadataUrl;

/// Everything `stats` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub totals: Summary,
    pub repositories_by_size: Vec<RepositoryStats>,
    pub repositories_by_tags: Vec<RepositoryStats>,
    pub most_reused_blobs: Vec<BlobReuse>,
    /// Manifests per artifact type (or config media type); `null` for indexes.
    pub artifact_types: Vec<ArtifactTypeCount>,
    /// Pull counts and last-pull times of the repositories listed above, by name (empty
    /// when the store keeps none).
    pub pulls: BTreeMap<String, Pulls>,
    /// Usage and limit of each quota given (`--quota`, `[[quota]]`), in bytes.
    pub quotas: Vec<QuotaUsage>,
}

impl Report {
    pub async fn gather(
        store: &dyn InsightsMetadata,
        pulls: Option<&dyn PullMetadata>,
        quotas: Option<(&dyn QuotaMetadata, &[Quota])>,
        top: usize,
    ) -> Result<Report, BoxError> {
        let repositories_by_size = store.repository_stats(RepositoryOrder::Size, top).await?;
        let repositories_by_tags = store.repository_stats(RepositoryOrder::Tags, top).await?;
        let mut names: Vec<oci_spec_types::RepositoryName> = repositories_by_size
            .iter()
            .chain(&repositories_by_tags)
            .filter_map(|r| r.name.parse().ok())
            .collect();
        names.sort();
        names.dedup();
        let figures = match pulls {
            Some(p) => p.repository_pulls(&names).await?,
            None => Vec::new(),
        };
        Ok(Report {
            totals: store.summary().await?,
            repositories_by_size,
            repositories_by_tags,
            most_reused_blobs: store.most_reused_blobs(top).await?,
            artifact_types: store.artifact_types().await?,
            pulls: names
                .into_iter()
                .map(|n| n.to_string())
                .zip(figures)
                .collect(),
            quotas: match quotas {
                Some((store, quotas)) if !quotas.is_empty() => store.quota_usage(quotas).await?,
                _ => Vec::new(),
            },
        })
    }

    fn pulls_of(&self, repo: &str) -> Pulls {
        self.pulls.get(repo).copied().unwrap_or_default()
    }

    /// The report as aligned tables, sizes human-readable.
    pub fn text(&self) -> String {
        let t = &self.totals;
        let mut out = format!(
            "{} repositories, {} manifests, {} tags, {} blobs, {} stored (each blob once)\n",
            t.repositories,
            t.manifests,
            t.tags,
            t.blobs,
            human_bytes(t.blob_bytes)
        );
        section(
            &mut out,
            "Top repositories by size",
            &[
                "REPOSITORY",
                "ATTRIBUTED",
                "UNIQUE",
                "SHARED",
                "BLOBS",
                "MANIFESTS",
                "TAGS",
                "PULLS",
            ],
            self.repositories_by_size
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        human_bytes(r.attributed_bytes),
                        human_bytes(r.unique_bytes),
                        human_bytes(r.shared_bytes),
                        r.blobs.to_string(),
                        r.manifests.to_string(),
                        r.tags.to_string(),
                        self.pulls_of(&r.name).pulls.to_string(),
                    ]
                })
                .collect(),
        );
        section(
            &mut out,
            "Top repositories by tags",
            &[
                "REPOSITORY",
                "TAGS",
                "MANIFESTS",
                "LAST PUSH",
                "PULLS",
                "LAST PULL",
            ],
            self.repositories_by_tags
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.tags.to_string(),
                        r.manifests.to_string(),
                        r.last_push.map_or_else(|| "-".into(), timestamp),
                        self.pulls_of(&r.name).pulls.to_string(),
                        self.pulls_of(&r.name)
                            .last_pull
                            .map_or_else(|| "-".into(), timestamp),
                    ]
                })
                .collect(),
        );
        section(
            &mut out,
            "Most reused blobs",
            &["BLOB", "SIZE", "MANIFESTS", "REPOSITORIES"],
            self.most_reused_blobs
                .iter()
                .map(|b| {
                    vec![
                        b.digest.to_string(),
                        human_bytes(b.size),
                        b.manifests.to_string(),
                        b.repositories.to_string(),
                    ]
                })
                .collect(),
        );
        section(
            &mut out,
            "Artifact types",
            &["ARTIFACT TYPE", "MANIFESTS", "SIZE"],
            self.artifact_types
                .iter()
                .map(|a| {
                    vec![
                        a.artifact_type
                            .clone()
                            .unwrap_or_else(|| "(index or none)".into()),
                        a.manifests.to_string(),
                        human_bytes(a.bytes),
                    ]
                })
                .collect(),
        );
        if !self.quotas.is_empty() {
            section(
                &mut out,
                "Quotas (distinct linked blobs of the repositories each covers)",
                &["PATTERN", "USED", "LIMIT", "USED %"],
                self.quotas
                    .iter()
                    .map(|q| {
                        vec![
                            q.pattern.clone(),
                            human_bytes(q.used),
                            human_bytes(q.limit),
                            match q.limit {
                                0 => "-".into(),
                                limit => format!("{:.1}", q.used as f64 * 100.0 / limit as f64),
                            },
                        ]
                    })
                    .collect(),
            );
        }
        out
    }
}

/// `registry stats`: opens the metadata store (never the blob store) and prints.
pub async fn run(
    metadata_url: &MetadataUrl,
    quotas: &registry_core::quotas::Quotas,
    json: bool,
    top: usize,
) -> Result<(), BoxError> {
    // Opening a SQLite path creates the database; a typo should not print empty stats.
    if let MetadataUrl::Sqlite(path) = metadata_url
        && !path.exists()
    {
        return Err(format!(
            "no metadata database at {}: check --metadata (or REGISTRY_METADATA)",
            path.display()
        )
        .into());
    }
    let metadata = crate::open_metadata(metadata_url).await?;
    let store = metadata
        .insights()
        .ok_or("this metadata store does not answer insight queries")?;
    let quota_store = match (quotas.is_empty(), metadata.quotas()) {
        (true, _) => None,
        (false, Some(q)) => Some((q, quotas.as_slice())),
        (false, None) => return Err("this metadata store does not keep quotas".into()),
    };
    let report = Report::gather(store, metadata.pulls(), quota_store, top).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// A blank line, the title, and the rows under their headers, or `(none)`.
fn section(out: &mut String, title: &str, headers: &[&str], rows: Vec<Vec<String>>) {
    let _ = writeln!(out, "\n{title}:");
    if rows.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    out.push_str(&table(headers, &rows));
}

/// Columns padded to their widest cell: the first left-aligned, the others (numbers and
/// sizes) right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        out.push(' ');
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(out, " {cell:<width$}");
            } else {
                let _ = write!(out, "  {cell:>width$}");
            }
        }
        // No trailing spaces after a padded first column that ends the row.
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    }
    out
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Unix milliseconds as RFC 3339 UTC, to the second.
fn timestamp(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "SIZE"],
            &[
                vec!["a/long/name".into(), "1 B".into()],
                vec!["b".into(), "10.0 KiB".into()],
            ],
        );
        assert_eq!(
            t,
            "  NAME             SIZE\n  a/long/name       1 B\n  b            10.0 KiB\n"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(timestamp(-1), "-");
    }
}
