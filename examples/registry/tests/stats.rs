//! `registry stats` through the real binary: push two images that share a layer into two
//! repositories, stop the server, and check the numbers `stats --json` reads from the
//! metadata store (and that the text mode prints the same repositories).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::oci_layout::{CONFIG, MANIFEST};
use common::{Api, Server, random_bytes, registry_command, seed, sha256, tempdir};
use serde_json::{Value, json};

/// An image manifest over `config` and `layers`.
fn manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": { "mediaType": CONFIG, "digest": sha256(config), "size": config.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": sha256(l), "size": l.len()
        })).collect::<Vec<_>>()
    }))
    .unwrap()
}

fn config(label: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Labels": { "label": label } },
        "rootfs": { "type": "layers", "diff_ids": [] }
    }))
    .unwrap()
}

/// `registry stats ARGS` over `data`; returns stdout, panics with stderr on failure.
fn stats(data: &Path, args: &[&str]) -> String {
    let out = registry_command()
        .arg("stats")
        .arg("--metadata")
        .arg(format!("sqlite://{}", data.join("registry.db").display()))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "registry stats {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test]
async fn stats_count_shared_layers_once() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let s = seed();
    let shared = random_bytes(s, 6000);
    let only_one = random_bytes(s.wrapping_add(1), 3000);
    let only_two = random_bytes(s.wrapping_add(2), 4000);
    let (config_one, config_two) = (config("one"), config("two"));
    let manifest_one = manifest(&config_one, &[&shared, &only_one]);
    let manifest_two = manifest(&config_two, &[&shared, &only_two]);
    {
        let server = Server::start(&data);
        let api = Api::new(&server.base);
        for blob in [&config_one, &shared, &only_one] {
            api.push_blob("a/one", blob).await;
        }
        for blob in [&config_two, &shared, &only_two] {
            api.push_blob("b/two", blob).await;
        }
        api.put_manifest("a/one", "v1", MANIFEST, &manifest_one)
            .await;
        api.put_manifest("a/one", "latest", MANIFEST, &manifest_one)
            .await;
        api.put_manifest("b/two", "v1", MANIFEST, &manifest_two)
            .await;
    }

    // The server is gone: stats reads the database alone.
    let report: Value = serde_json::from_str(&stats(&data, &["--json"])).unwrap();
    let totals = &report["totals"];
    assert_eq!(u(&totals["repositories"]), 2, "{report:#}");
    assert_eq!(u(&totals["manifests"]), 2, "{report:#}");
    assert_eq!(u(&totals["tags"]), 3, "{report:#}");
    // Each blob once, the manifests' own bytes included.
    let sizes = |blobs: &[&Vec<u8>]| blobs.iter().map(|b| b.len() as u64).sum::<u64>();
    let all = sizes(&[
        &config_one,
        &config_two,
        &shared,
        &only_one,
        &only_two,
        &manifest_one,
        &manifest_two,
    ]);
    assert_eq!(u(&totals["blobs"]), 7, "{report:#}");
    assert_eq!(u(&totals["blob_bytes"]), all, "{report:#}");

    // Quotas: the blobs linked in the repositories each covers, a shared blob once.
    let report: Value = serde_json::from_str(&stats(
        &data,
        &["--json", "--quota", "*=1MiB", "--quota", "b/*=100000"],
    ))
    .unwrap();
    let quotas = report["quotas"].as_array().unwrap();
    let everything = all - sizes(&[&manifest_one, &manifest_two]);
    assert_eq!(quotas[0]["pattern"], "*", "{report:#}");
    assert_eq!(u(&quotas[0]["used"]), everything, "{report:#}");
    assert_eq!(u(&quotas[0]["limit"]), 1 << 20, "{report:#}");
    assert_eq!(
        u(&quotas[1]["used"]),
        sizes(&[&config_two, &shared, &only_two]),
        "{report:#}"
    );
    assert!(stats(&data, &["--quota", "b/*=100000"]).contains("Quotas"));

    // By size: the shared layer is shared by both and split between them.
    let by_size = report["repositories_by_size"].as_array().unwrap();
    assert_eq!(by_size.len(), 2);
    let repo = |name: &str| {
        by_size
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {report:#}"))
    };
    // Repository footprints count the blobs a repository links (config and layers); a
    // manifest's own bytes are in the totals but not linked, so attributed bytes add up
    // to the total without them.
    let one = repo("a/one");
    assert_eq!(u(&one["shared_bytes"]), shared.len() as u64);
    assert_eq!(u(&one["unique_bytes"]), sizes(&[&config_one, &only_one]));
    assert_eq!(
        u(&one["attributed_bytes"]),
        u(&one["unique_bytes"]) + shared.len() as u64 / 2
    );
    assert_eq!(u(&one["blobs"]), 3);
    assert_eq!(u(&one["manifests"]), 1);
    assert_eq!(u(&one["tags"]), 2);
    let two = repo("b/two");
    assert_eq!(u(&two["shared_bytes"]), shared.len() as u64);
    assert_eq!(u(&two["unique_bytes"]), sizes(&[&config_two, &only_two]));
    assert_eq!(
        u(&one["attributed_bytes"]) + u(&two["attributed_bytes"]),
        all - sizes(&[&manifest_one, &manifest_two]),
    );
    // b/two holds the larger unique layer, so it comes first.
    assert_eq!(by_size[0]["name"], "b/two");

    // By tags: a/one has two.
    let by_tags = report["repositories_by_tags"].as_array().unwrap();
    assert_eq!(by_tags[0]["name"], "a/one");
    assert_eq!(u(&by_tags[0]["tags"]), 2);

    // The shared layer is the most reused blob.
    let reused = &report["most_reused_blobs"][0];
    assert_eq!(reused["digest"], sha256(&shared));
    assert_eq!(u(&reused["size"]), shared.len() as u64);
    assert_eq!(u(&reused["manifests"]), 2);
    assert_eq!(u(&reused["repositories"]), 2);

    // Two image manifests.
    let types = report["artifact_types"].as_array().unwrap();
    assert_eq!(types.len(), 1, "{report:#}");
    assert_eq!(types[0]["artifact_type"], CONFIG);
    assert_eq!(u(&types[0]["manifests"]), 2);

    // --top limits every list.
    let top: Value = serde_json::from_str(&stats(&data, &["--json", "--top", "1"])).unwrap();
    for list in [
        "repositories_by_size",
        "repositories_by_tags",
        "most_reused_blobs",
    ] {
        assert_eq!(top[list].as_array().unwrap().len(), 1, "{list}");
    }

    // Text: the same repositories, sizes human-readable.
    let text = stats(&data, &[]);
    assert!(
        text.starts_with("2 repositories, 2 manifests, 3 tags, 7 blobs"),
        "{text}"
    );
    for needle in [
        "Top repositories by size",
        "Top repositories by tags",
        "Most reused blobs",
        "Artifact types",
        "a/one",
        "b/two",
        "KiB",
        &sha256(&shared),
        CONFIG,
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn stats_needs_an_existing_database() {
    let dir = tempdir();
    let db = dir.path().join("nothing.db");
    let out = registry_command()
        .arg("stats")
        .arg("--metadata")
        .arg(format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no metadata database"), "{err}");
    assert!(!db.exists(), "stats must not create a database");
}
