//! `registry retention` through the real binary: tags pushed over HTTP, `[[retention]]`
//! tables and `immutable_tags` in one config file (which the server reads too), then
//! `retention --dry-run` and `retention`: the real run removes exactly what the dry run
//! listed, with the same rules, and the API no longer serves those tags.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::oci_layout::{CONFIG, MANIFEST};
use common::{Api, Server, random_bytes, registry_command, seed, serve_command, sha256, tempdir};
use serde_json::json;

/// `registry retention ARGS` with `config`; returns stdout, panics with stderr on failure.
fn retention(data: &Path, config: &Path, args: &[&str]) -> String {
    let out = registry_command()
        .arg("retention")
        .arg("--config")
        .arg(config)
        .arg("--storage")
        .arg(format!("fs://{}", data.join("blobs").display()))
        .arg("--metadata")
        .arg(format!("sqlite://{}", data.join("registry.db").display()))
        .args(args)
        .env_remove("REGISTRY_IMMUTABLE_TAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "registry retention {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Pushes a distinct one-layer image as `repo:tag`.
async fn push(api: &Api, repo: &str, tag: &str, seed: u64) {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Labels": { "tag": tag } },
        "rootfs": { "type": "layers", "diff_ids": [] }
    }))
    .unwrap();
    let layer = random_bytes(seed, 2000);
    api.push_blob(repo, &config).await;
    api.push_blob(repo, &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": CONFIG, "digest": sha256(&config), "size": config.len() },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": sha256(&layer), "size": layer.len()
        }]
    }))
    .unwrap();
    api.put_manifest(repo, tag, MANIFEST, &manifest).await;
    // Distinct push times, so "most recently pushed" has one answer.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

/// The lines of a report without their verb (`would remove` / `removed`).
fn entries(report: &str, verb: &str) -> Vec<String> {
    report
        .lines()
        .map(|l| {
            l.strip_prefix(verb)
                .unwrap_or_else(|| panic!("{l:?} does not start with {verb:?}"))
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn dry_run_lists_exactly_what_the_real_run_removes() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        r#"immutable_tags = ["frozen/*"]

[[retention]]
repositories = "app/*"
tags = '^v\d+$'
keep_last = 2
keep = '^v1$'

[[retention]]
repositories = "*"
tags = "^dev-"
keep_last = 1
"#,
    )
    .unwrap();
    let server = Server::spawn(serve_command(
        &data,
        &["--config", config.to_str().unwrap()],
    ));
    let api = Api::new(&server.base);
    let s = seed();
    let mut n = s;
    let mut next = || {
        n = n.wrapping_add(1);
        n
    };
    for tag in ["v1", "v2", "v3", "v4", "v5", "latest", "dev-a", "dev-b"] {
        push(&api, "app/web", tag, next()).await;
    }
    for tag in ["v1", "v2", "v3", "dev-a", "dev-b"] {
        push(&api, "frozen/base", tag, next()).await;
    }
    for tag in ["dev-1", "dev-2", "dev-3", "stable"] {
        push(&api, "tools", tag, next()).await;
    }

    let dry = retention(&data, &config, &["--dry-run"]);
    let would = entries(&dry, "would remove ");
    // app/web: v2 and v3 (v1 kept by `keep`, v4 and v5 the last two), dev-a (rule 2);
    // tools: dev-1, dev-2; frozen/base: nothing, its tags are immutable.
    let tags: Vec<&str> = would
        .iter()
        .filter_map(|l| l.split(' ').next())
        .filter(|t| t.contains(':'))
        .collect();
    assert_eq!(
        tags,
        [
            "app/web:v2",
            "app/web:v3",
            "app/web:dev-a",
            "tools:dev-1",
            "tools:dev-2"
        ],
        "{dry}"
    );
    assert!(
        would[0].ends_with(r"by rule 1: repositories=app/* tags=^v\d+$ keep_last=2 keep=^v1$"),
        "{dry}"
    );
    assert!(
        would[2].ends_with("by rule 2: repositories=* tags=^dev- keep_last=1"),
        "{dry}"
    );
    assert_eq!(would.last().unwrap(), "5 tags", "{dry}");
    // A dry run removes nothing.
    assert_eq!(api.get("/v2/app/web/manifests/v2").await.0, 200);

    let real = retention(&data, &config, &[]);
    assert_eq!(
        entries(&real, "removed "),
        would,
        "dry run:\n{dry}\nrun:\n{real}"
    );

    for (repo, tag) in tags.iter().filter_map(|t| t.split_once(':')) {
        let path = format!("/v2/{repo}/manifests/{tag}");
        assert_eq!(api.get(&path).await.0, 404, "{path}");
    }
    for path in [
        "/v2/app/web/manifests/v1",
        "/v2/app/web/manifests/v4",
        "/v2/app/web/manifests/v5",
        "/v2/app/web/manifests/latest",
        "/v2/app/web/manifests/dev-b",
        "/v2/frozen/base/manifests/v1",
        "/v2/frozen/base/manifests/dev-a",
        "/v2/tools/manifests/dev-3",
        "/v2/tools/manifests/stable",
    ] {
        assert_eq!(api.get(path).await.0, 200, "{path}");
    }
    assert_eq!(
        entries(&retention(&data, &config, &["--dry-run"]), "would remove "),
        ["0 tags"],
        "nothing left to remove"
    );
}
