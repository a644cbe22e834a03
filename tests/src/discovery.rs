//! Content discovery: tags list, catalog, their `n`/`last` pagination with
//! `Link` headers, and the referrers API.

use reqwest::Method;
use serde_json::Value;

use crate::Ctx;
use crate::client::{Client, Req, Resp};
use crate::expect::{ensure, header_eq, status};
use crate::fixtures::{Image, OCI_INDEX, OCI_MANIFEST, unknown_digest};
use crate::ops::{push_blob, push_image, push_manifest};
use crate::report::{Recorder, needs};

/// Pushed in this order, so a registry that does not sort is caught.
const TAGS: [&str; 5] = ["v3", "v1", "v5", "v2", "v4"];
const SBOM: &str = "application/vnd.example.sbom.v1+json";
const SIGNATURE: &str = "application/vnd.example.signature.v1+json";

pub(crate) async fn run(ctx: &Ctx<'_>, rec: &mut Recorder<'_>) {
    tags(ctx, rec).await;
    catalog(ctx, rec).await;
    referrers(ctx, rec).await;
}

async fn tags(ctx: &Ctx<'_>, rec: &mut Recorder<'_>) {
    let c = ctx.client;
    let repo = ctx.repo("discovery");
    let tags_path = format!("/v2/{repo}/tags/list");
    let mut sorted = TAGS.map(str::to_owned).to_vec();
    sorted.sort();

    let ready = rec
        .check("setup-push-tags", async {
            let image = Image::oci("tags", 200);
            push_image(c, &repo, &image, None).await?;
            for tag in TAGS {
                push_manifest(c, &repo, tag, &image.manifest).await?;
            }
            Ok(())
        })
        .await;

    rec.check("tags-list", async {
        needs(ready, "setup-push-tags")?;
        let r = c.send(&Req::get(&tags_path)).await?;
        status(&r, &[200])?;
        let body = r.json()?;
        ensure(body["name"] == repo.as_str(), || {
            format!("tags list name is {}, expected {repo:?}", body["name"])
        })?;
        list_eq(&r, "tags", &sorted)
    })
    .await;

    rec.check("tags-list-paginated", async {
        needs(ready, "setup-push-tags")?;
        let r = c.send(&Req::get(&tags_path).query("n", "2")).await?;
        status(&r, &[200])?;
        list_eq(&r, "tags", &sorted[..2])?;
        let all = follow_links(c, r, "tags").await?;
        ensure(all == sorted, || {
            format!("following Link rel=\"next\" from n=2 yielded {all:?}, expected {sorted:?}")
        })
    })
    .await;

    rec.check("tags-list-last", async {
        needs(ready, "setup-push-tags")?;
        let r = c
            .send(&Req::get(&tags_path).query("n", "2").query("last", "v2"))
            .await?;
        status(&r, &[200])?;
        list_eq(&r, "tags", &sorted[2..4])
    })
    .await;
}

async fn catalog(ctx: &Ctx<'_>, rec: &mut Recorder<'_>) {
    let c = ctx.client;
    let names: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|s| ctx.repo(&format!("catalog-{s}")))
        .collect();
    // Sorts just before our repositories, so other repositories cannot interfere.
    let last = ctx.repo("catalog-");

    let ready = rec
        .check("setup-push-repositories", async {
            for name in &names {
                push_image(c, name, &Image::oci("catalog", 100), Some("latest")).await?;
            }
            Ok(())
        })
        .await;

    rec.check("catalog-list", async {
        needs(ready, "setup-push-repositories")?;
        let r = c
            .send(
                &Req::get("/v2/_catalog")
                    .query("n", "100")
                    .query("last", &last),
            )
            .await?;
        status(&r, &[200])?;
        let repos = string_list(&r, "repositories")?;
        ensure(repos.starts_with(&names), || {
            format!("catalog after {last:?} is {repos:?}, expected it to start with {names:?}")
        })
    })
    .await;

    rec.check("catalog-paginated", async {
        needs(ready, "setup-push-repositories")?;
        let r = c
            .send(
                &Req::get("/v2/_catalog")
                    .query("n", "2")
                    .query("last", &last),
            )
            .await?;
        status(&r, &[200])?;
        list_eq(&r, "repositories", &names[..2])?;
        let next = next_link(&r)?.ok_or_else(|| {
            format!(
                "{} has no Link rel=\"next\" header although more repositories exist",
                r.describe()
            )
        })?;
        let r = c.send(&Req::get(next)).await?;
        status(&r, &[200])?;
        let repos = string_list(&r, "repositories")?;
        ensure(repos.first() == Some(&names[2]), || {
            format!(
                "the next catalog page is {repos:?}, expected it to start with {:?}",
                names[2]
            )
        })
    })
    .await;
}

async fn referrers(ctx: &Ctx<'_>, rec: &mut Recorder<'_>) {
    let c = ctx.client;
    let repo = ctx.repo("referrers");
    let subject = Image::oci("referrers-subject", 300);
    let sbom = Image::artifact(&subject.manifest, SBOM, "sbom");
    let signature = Image::artifact(&subject.manifest, SIGNATURE, "signature");
    let path = format!("/v2/{repo}/referrers/{}", subject.manifest.digest);

    let ready = rec
        .check("setup-push-referrers", async {
            push_image(c, &repo, &subject, Some("subject")).await?;
            for artifact in [&sbom, &signature] {
                for blob in &artifact.blobs {
                    push_blob(c, &repo, blob).await?;
                }
                let m = &artifact.manifest;
                push_manifest(c, &repo, &m.digest, m).await?;
            }
            Ok(())
        })
        .await;

    rec.check("referrers-list", async {
        needs(ready, "setup-push-referrers")?;
        let r = c.send(&Req::get(&path)).await?;
        status(&r, &[200])?;
        header_eq(&r, "Content-Type", OCI_INDEX)?;
        let found = index_manifests(&r)?;
        ensure(found.len() == 2, || {
            format!(
                "referrers index lists {} descriptors, expected 2: {found:?}",
                found.len()
            )
        })?;
        for (artifact, artifact_type, note) in
            [(&sbom, SBOM, "sbom"), (&signature, SIGNATURE, "signature")]
        {
            let m = &artifact.manifest;
            let d = found
                .iter()
                .find(|d| d["digest"] == m.digest.as_str())
                .ok_or_else(|| format!("referrers index lacks {}: {found:?}", m.digest))?;
            ensure(
                d["mediaType"] == OCI_MANIFEST
                    && d["size"] == m.bytes.len()
                    && d["artifactType"] == artifact_type
                    && d["annotations"]["org.example.conformance"] == note,
                || {
                    format!(
                        "descriptor for {} lacks mediaType, size, artifactType or annotations: {d}",
                        m.digest
                    )
                },
            )?;
        }
        Ok(())
    })
    .await;

    rec.check("referrers-filter", async {
        needs(ready, "setup-push-referrers")?;
        let r = c.send(&Req::get(&path).query("artifactType", SBOM)).await?;
        status(&r, &[200])?;
        header_eq(&r, "OCI-Filters-Applied", "artifactType")?;
        let found = index_manifests(&r)?;
        ensure(
            found.len() == 1 && found[0]["digest"] == sbom.manifest.digest.as_str(),
            || format!("filtered referrers should list only the {SBOM} artifact, got {found:?}"),
        )
    })
    .await;

    rec.check("referrers-unknown-subject", async {
        let r = c
            .send(&Req::get(format!(
                "/v2/{repo}/referrers/{}",
                unknown_digest()
            )))
            .await?;
        status(&r, &[200])?;
        header_eq(&r, "Content-Type", OCI_INDEX)?;
        let found = index_manifests(&r)?;
        ensure(found.is_empty(), || {
            format!("referrers of an unknown digest should be empty, got {found:?}")
        })
    })
    .await;

    // Keep clients that only know manifests happy: the subject is still pullable.
    rec.check("referrers-subject-unchanged", async {
        needs(ready, "setup-push-referrers")?;
        let r = c
            .send(&crate::ops::manifest_req(Method::GET, &repo, "subject"))
            .await?;
        status(&r, &[200])?;
        crate::expect::body_eq(&r, &subject.manifest.bytes)
    })
    .await;
}

/// The `manifests` of an OCI index body, checking the index's own fields.
fn index_manifests(r: &Resp) -> Result<Vec<Value>, String> {
    let body = r.json()?;
    ensure(
        body["schemaVersion"] == 2 && body["mediaType"] == OCI_INDEX,
        || {
            format!(
                "referrers response is not an OCI index (schemaVersion 2, mediaType {OCI_INDEX}): {body}"
            )
        },
    )?;
    body["manifests"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("referrers index has no manifests array: {body}"))
}

/// The strings of the JSON array `field` of the body.
fn string_list(r: &Resp, field: &str) -> Result<Vec<String>, String> {
    let body = r.json()?;
    body[field]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .ok_or_else(|| format!("{} has no {field:?} array", r.describe()))
}

fn list_eq(r: &Resp, field: &str, want: &[String]) -> Result<(), String> {
    let got = string_list(r, field)?;
    ensure(got == want, || {
        format!("{} lists {field} {got:?}, expected {want:?}", r.describe())
    })
}

/// The target of a `Link: <url>; rel="next"` header, resolved to an absolute URL.
fn next_link(r: &Resp) -> Result<Option<String>, String> {
    for value in r.headers.get_all("Link") {
        let Ok(value) = value.to_str() else { continue };
        for link in value.split(',') {
            let (target, params) = link.split_once(';').unwrap_or((link, ""));
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            let target = target.trim().trim_start_matches('<').trim_end_matches('>');
            if is_next {
                return r
                    .url
                    .join(target)
                    .map(|u| Some(u.to_string()))
                    .map_err(|e| format!("Link target {target:?} is not a URL reference: {e}"));
            }
        }
    }
    Ok(None)
}

/// Collects `field` from `first` and every page reached through `Link` headers.
async fn follow_links(c: &Client, first: Resp, field: &str) -> Result<Vec<String>, String> {
    let mut all = string_list(&first, field)?;
    let mut page = first;
    for _ in 0..50 {
        let Some(next) = next_link(&page)? else {
            return Ok(all);
        };
        page = c.send(&Req::get(next)).await?;
        status(&page, &[200])?;
        all.extend(string_list(&page, field)?);
    }
    Err("more than 50 pages: the Link headers loop".to_owned())
}
