//! Retention rules on fs + SQLite: `keep_last`, `delete_older_than`, `keep`,
//! `not_pulled_for`, immutable tags, dry runs, and the garbage collector freeing what the
//! removed tags kept alive.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestRegistry;
use regex::Regex;
use registry_core::retention::{RetentionReport, RetentionRule};
use registry_core::{GcConfig, Policy, RegistryConfig};
use storage_traits::{MetadataStore, Page};

fn rule(pattern: &str) -> RetentionRule {
    RetentionRule::new(pattern.parse().unwrap())
}

fn removed(report: &RetentionReport) -> Vec<String> {
    report
        .removed
        .iter()
        .map(|r| format!("{}:{}", r.repository, r.tag))
        .collect()
}

async fn tags(r: &TestRegistry, repo: &str) -> Vec<String> {
    let metadata: &dyn MetadataStore = &*metadata(r);
    metadata
        .list_tags(&repo.parse().unwrap(), &Page::default())
        .await
        .unwrap()
        .unwrap_or_default()
        .iter()
        .map(|t| t.to_string())
        .collect()
}

fn metadata(r: &TestRegistry) -> std::sync::Arc<dyn MetadataStore> {
    std::sync::Arc::new(
        metadata_sqlite::SqliteMetadataStore::open(r.dir.path().join("registry.db")).unwrap(),
    )
}

/// Pushes `names` in order, a few milliseconds apart so their push times differ.
async fn push_tags(r: &TestRegistry, repo: &str, names: &[&str]) {
    for name in names {
        r.push_image(repo, name, &[name.as_bytes()]).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn keep_last_keeps_the_most_recently_pushed_matching_tags_and_gc_frees_the_rest() {
    let r = TestRegistry::new().await;
    push_tags(&r, "app/web", &["v1", "v2", "v3", "v4", "latest"]).await;
    push_tags(&r, "other/db", &["v1", "v2"]).await;
    let rules = [rule("app/*")
        .with_tags(Some(Regex::new(r"^v\d+$").unwrap()))
        .with_keep_last(Some(2))];

    let dry = r.registry.apply_retention(&rules, true).await.unwrap();
    assert!(dry.dry_run);
    assert_eq!(removed(&dry), ["app/web:v1", "app/web:v2"]);
    assert_eq!(
        tags(&r, "app/web").await.len(),
        5,
        "a dry run removes nothing"
    );

    let run = r.registry.apply_retention(&rules, false).await.unwrap();
    assert_eq!(
        run.removed, dry.removed,
        "the dry run said what the run did"
    );
    assert!(run.moved.is_empty());
    assert_eq!(run.removed[0].rule, 0);
    assert_eq!(tags(&r, "app/web").await, ["latest", "v3", "v4"]);
    assert_eq!(tags(&r, "other/db").await, ["v1", "v2"], "not matched");
    assert!(
        r.registry
            .apply_retention(&rules, false)
            .await
            .unwrap()
            .removed
            .is_empty(),
        "a second run finds nothing more"
    );

    // The untagged manifests are the collector's.
    let gc = GcConfig::default()
        .with_grace(Duration::ZERO)
        .with_untagged_manifest_ttl(Some(Duration::ZERO));
    let freed = r.registry.collect_garbage(&gc, false).await.unwrap();
    let mut gone: Vec<_> = freed
        .manifests
        .iter()
        .map(|(repo, _)| repo.to_string())
        .collect();
    gone.sort();
    assert_eq!(gone, ["app/web", "app/web"], "{freed:?}");
    assert!(r.get("/v2/app/web/manifests/v3").await.status.is_success());
}

#[tokio::test]
async fn delete_older_than_removes_only_tags_pushed_before_the_cutoff() {
    let r = TestRegistry::new().await;
    push_tags(&r, "app", &["old-1", "old-2"]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    push_tags(&r, "app", &["new-1", "new-2"]).await;
    let rules = [rule("app").with_delete_older_than(Some(Duration::from_millis(400)))];
    let run = r.registry.apply_retention(&rules, false).await.unwrap();
    assert_eq!(removed(&run), ["app:old-1", "app:old-2"]);
    assert_eq!(tags(&r, "app").await, ["new-1", "new-2"]);
}

#[tokio::test]
async fn keep_regex_is_never_removed_whatever_the_other_conditions() {
    let r = TestRegistry::new().await;
    push_tags(
        &r,
        "app",
        &["release-1", "dev-1", "release-2", "dev-2", "dev-3"],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rules = [rule("*")
        .with_keep_last(Some(1))
        .with_delete_older_than(Some(Duration::from_millis(10)))
        .with_keep(Some(Regex::new("^release-").unwrap()))];
    let run = r.registry.apply_retention(&rules, false).await.unwrap();
    assert_eq!(removed(&run), ["app:dev-1", "app:dev-2"]);
    assert_eq!(tags(&r, "app").await, ["dev-3", "release-1", "release-2"]);
}

#[tokio::test]
async fn immutable_tags_are_never_removed_by_a_rule() {
    let policy = Policy::new().with_immutable_tags("prod/*".parse().unwrap());
    let r = TestRegistry::with_config(RegistryConfig::default().with_policy(policy)).await;
    push_tags(&r, "prod/api", &["v1", "v2", "v3"]).await;
    push_tags(&r, "dev/api", &["v1", "v2", "v3"]).await;
    let rules = [rule("*").with_keep_last(Some(1))];
    let dry = r.registry.apply_retention(&rules, true).await.unwrap();
    let run = r.registry.apply_retention(&rules, false).await.unwrap();
    assert_eq!(removed(&dry), ["dev/api:v1", "dev/api:v2"]);
    assert_eq!(run.removed, dry.removed);
    assert_eq!(tags(&r, "prod/api").await, ["v1", "v2", "v3"]);
    assert_eq!(tags(&r, "dev/api").await, ["v3"]);
}

#[tokio::test]
async fn not_pulled_for_keeps_tags_pulled_recently() {
    let r = TestRegistry::new().await;
    push_tags(&r, "app", &["pulled", "idle"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let got = r
        .send(
            http::Method::GET,
            "/v2/app/manifests/pulled",
            &accept,
            axum::body::Body::empty(),
        )
        .await;
    assert!(got.status.is_success());
    // The pull is only tallied in memory; the run writes it before deciding.
    let rules = [rule("app").with_not_pulled_for(Some(Duration::from_millis(300)))];
    let run = r.registry.apply_retention(&rules, false).await.unwrap();
    assert_eq!(removed(&run), ["app:idle"]);
    assert_eq!(tags(&r, "app").await, ["pulled"]);
}

#[tokio::test]
async fn the_first_rule_that_removes_a_tag_is_reported_and_empty_rules_are_refused() {
    let r = TestRegistry::new().await;
    push_tags(&r, "a", &["x1", "x2", "y1", "y2"]).await;
    let rules = [
        rule("a")
            .with_tags(Some(Regex::new("^x").unwrap()))
            .with_keep_last(Some(1)),
        rule("*").with_keep_last(Some(3)),
    ];
    let run = r.registry.apply_retention(&rules, true).await.unwrap();
    let by_rule: Vec<(String, usize)> = run
        .removed
        .iter()
        .map(|r| (r.tag.to_string(), r.rule))
        .collect();
    assert_eq!(by_rule, [("x1".to_string(), 0)]);
    assert!(rule("a").validate().is_err());
    assert!(rules[0].validate().is_ok());
    assert_eq!(rules[0].to_string(), "repositories=a tags=^x keep_last=1");
}
