//! `registry retention [--dry-run]` and the config file's `[[retention]]` tables (applied
//! in the background of `serve` every `--retention-interval`): rules that remove old tags
//! (see `registry_core::retention`), whose manifests and blobs garbage collection then
//! frees.

use std::fmt;

use regex::Regex;
use registry_core::RegistryConfig;
use registry_core::retention::{RetentionReport, RetentionRule};
use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::config::{RetentionRun, parse_duration, parse_pattern};

/// One `[[retention]]` table: `repositories` (a pattern), and optionally `tags` (the
/// tags the rule governs, a regular expression), `keep_last` (a count), `delete_older_than`
/// and `not_pulled_for` (durations), `keep` (a regular expression; at least one of
/// `keep_last`, `delete_older_than`, `not_pulled_for` is required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    pub repositories: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_older_than: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_pulled_for: Option<String>,
}

impl fmt::Display for RetentionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repositories)
    }
}

impl RetentionSpec {
    /// The library's rule.
    pub fn to_rule(&self) -> Result<RetentionRule, String> {
        let regex = |key: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| Regex::new(v).map_err(|e| format!("`{key}`: {e}")))
                .transpose()
        };
        let duration = |key: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| parse_duration(key, v).map_err(|e| e.to_string()))
                .transpose()
        };
        let rule = RetentionRule::new(
            parse_pattern(&self.repositories).map_err(|e| format!("`repositories`: {e}"))?,
        )
        .with_tags(regex("tags", &self.tags)?)
        .with_keep_last(self.keep_last)
        .with_delete_older_than(duration("delete_older_than", &self.delete_older_than)?)
        .with_keep(regex("keep", &self.keep)?)
        .with_not_pulled_for(duration("not_pulled_for", &self.not_pulled_for)?);
        rule.validate()?;
        Ok(rule)
    }
}

/// The rules of `specs`, in order; an error names the table.
pub fn rules(specs: &[RetentionSpec]) -> Result<Vec<RetentionRule>, BoxError> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            spec.to_rule()
                .map_err(|e| format!("[[retention]] {} ({spec}): {e}", i + 1).into())
        })
        .collect()
}

/// `registry retention`: applies the rules once and prints each tag removed (or, with
/// `--dry-run`, that would be), with its rule.
pub async fn run(run: &RetentionRun, dry_run: bool) -> Result<(), BoxError> {
    let rules = rules(&run.rules)?;
    if rules.is_empty() {
        return Err("no [[retention]] tables in the config file (see --config)".into());
    }
    let config = RegistryConfig::default().with_policy(
        run.immutable_tags
            .iter()
            .cloned()
            .fold(registry_core::Policy::new(), |p, pattern| {
                p.with_immutable_tags(pattern)
            }),
    );
    let registry = crate::open_registry(&run.stores, None, config).await?;
    let report = registry.apply_retention(&rules, dry_run).await?;
    print!("{}", render(&report, &rules));
    Ok(())
}

/// One line per tag, then a summary: `would remove REPO:TAG (DIGEST) by rule N: RULE`.
pub fn render(report: &RetentionReport, rules: &[RetentionRule]) -> String {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = String::new();
    for r in &report.removed {
        let rule = rules
            .get(r.rule)
            .map(ToString::to_string)
            .unwrap_or_default();
        out.push_str(&format!(
            "{verb} {}:{} ({}) by rule {}: {rule}\n",
            r.repository,
            r.tag,
            r.digest,
            r.rule + 1
        ));
    }
    for (repo, tag) in &report.moved {
        out.push_str(&format!(
            "kept {repo}:{tag}: pushed or moved during the run\n"
        ));
    }
    out.push_str(&format!("{verb} {} tags\n", report.removed.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(text: &str) -> Vec<RetentionSpec> {
        #[derive(Deserialize)]
        struct File {
            retention: Vec<RetentionSpec>,
        }
        toml::from_str::<File>(text).unwrap().retention
    }

    #[test]
    fn tables_make_rules_and_bad_ones_are_named() {
        let got = rules(&specs(
            "[[retention]]\nrepositories = \"app/*\"\ntags = \"^v\"\nkeep_last = 3\nkeep = \"^v1$\"\n\
             [[retention]]\nrepositories = \"*\"\ndelete_older_than = \"90d\"\nnot_pulled_for = \"30d\"",
        ))
        .unwrap();
        assert_eq!(
            got[0].to_string(),
            "repositories=app/* tags=^v keep_last=3 keep=^v1$"
        );
        assert_eq!(
            got[1].to_string(),
            "repositories=* delete_older_than=90d not_pulled_for=30d"
        );
        for (text, needle) in [
            ("repositories = \"a\"", "sets none"),
            (
                "repositories = \"a\"\nkeep_last = 1\ntags = \"(\"",
                "`tags`",
            ),
            (
                "repositories = \"a\"\ndelete_older_than = \"soon\"",
                "delete_older_than",
            ),
        ] {
            let e = rules(&specs(&format!("[[retention]]\n{text}")))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.contains("[[retention]] 1"), "{e}");
        }
    }
}
