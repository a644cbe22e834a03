//! Pull workflow: manifests by tag and digest, blobs (whole and ranged), and
//! the error codes for unknown or malformed names and digests.

use reqwest::Method;

use crate::Ctx;
use crate::client::Req;
use crate::expect::{body_eq, ensure, error, header_eq, optional_header_eq, status};
use crate::fixtures::{Image, unknown_digest};
use crate::ops::{manifest_req, push_image};
use crate::report::{Recorder, needs};

const TAG: &str = "pull-tag";
const LAYER_LEN: usize = 4096;

pub(crate) async fn run(ctx: &Ctx<'_>, rec: &mut Recorder<'_>) {
    let c = ctx.client;
    let repo = ctx.repo("pull");
    let image = Image::oci("pull", LAYER_LEN);
    let m = &image.manifest;
    let layer = &image.blobs[1];

    rec.check("api-version-check", async {
        let r = c.send(&Req::get("/v2/")).await?;
        status(&r, &[200, 401])
    })
    .await;

    let ready = rec
        .check("setup-push-image", push_image(c, &repo, &image, Some(TAG)))
        .await;

    for (name, reference) in [("tag", TAG), ("digest", m.digest.as_str())] {
        rec.check(&format!("manifest-get-by-{name}"), async {
            needs(ready, "setup-push-image")?;
            let r = c.send(&manifest_req(Method::GET, &repo, reference)).await?;
            status(&r, &[200])?;
            body_eq(&r, &m.bytes)?;
            header_eq(&r, "Content-Type", m.media_type)?;
            header_eq(&r, "Docker-Content-Digest", &m.digest)
        })
        .await;
        rec.check(&format!("manifest-head-by-{name}"), async {
            needs(ready, "setup-push-image")?;
            let r = c
                .send(&manifest_req(Method::HEAD, &repo, reference))
                .await?;
            status(&r, &[200])?;
            optional_header_eq(&r, "Docker-Content-Digest", &m.digest)
        })
        .await;
    }

    let blob_path = format!("/v2/{repo}/blobs/{}", layer.digest);
    rec.check("blob-get", async {
        needs(ready, "setup-push-image")?;
        let r = c.send(&Req::get(&blob_path)).await?;
        status(&r, &[200])?;
        body_eq(&r, &layer.bytes)?;
        optional_header_eq(&r, "Docker-Content-Digest", &layer.digest)
    })
    .await;

    rec.check("blob-head", async {
        needs(ready, "setup-push-image")?;
        let r = c.send(&Req::head(&blob_path)).await?;
        status(&r, &[200])?;
        header_eq(&r, "Content-Length", &LAYER_LEN.to_string())?;
        optional_header_eq(&r, "Docker-Content-Digest", &layer.digest)
    })
    .await;

    rec.check("blob-get-range", async {
        needs(ready, "setup-push-image")?;
        let r = c
            .send(&Req::get(&blob_path).header("Range", "bytes=10-19"))
            .await?;
        status(&r, &[206])?;
        header_eq(&r, "Content-Range", &format!("bytes 10-19/{LAYER_LEN}"))?;
        body_eq(&r, &layer.bytes[10..20])
    })
    .await;

    rec.check("blob-get-invalid-range", async {
        needs(ready, "setup-push-image")?;
        let range = format!("bytes={}-{}", LAYER_LEN + 10, LAYER_LEN + 20);
        let r = c.send(&Req::get(&blob_path).header("Range", range)).await?;
        status(&r, &[416])
    })
    .await;

    rec.check("manifest-unknown", async {
        let r = c
            .send(&manifest_req(Method::GET, &repo, "no-such-tag"))
            .await?;
        error(&r, &[404], "MANIFEST_UNKNOWN")?;
        let r = c
            .send(&manifest_req(Method::GET, &repo, &unknown_digest()))
            .await?;
        error(&r, &[404], "MANIFEST_UNKNOWN")?;
        let r = c
            .send(&manifest_req(Method::HEAD, &repo, "no-such-tag"))
            .await?;
        status(&r, &[404])
    })
    .await;

    rec.check("blob-unknown", async {
        let path = format!("/v2/{repo}/blobs/{}", unknown_digest());
        let r = c.send(&Req::get(&path)).await?;
        error(&r, &[404], "BLOB_UNKNOWN")?;
        let r = c.send(&Req::head(&path)).await?;
        status(&r, &[404])
    })
    .await;

    // The spec's NAME_INVALID is 400, but a router that cannot match an invalid
    // name answers 404 (distribution does); both tell a client the name is unusable.
    rec.check("name-invalid", async {
        let bad = ctx.repo("Invalid_Name");
        let r = c.send(&manifest_req(Method::GET, &bad, TAG)).await?;
        if r.status == 404 {
            return Ok(());
        }
        error(&r, &[400, 404], "NAME_INVALID")
    })
    .await;

    rec.check("digest-invalid", async {
        // Right algorithm, wrong length: the grammar matches, validation must not.
        let path = format!("/v2/{repo}/blobs/sha256:{}", "ab".repeat(20));
        let r = c.send(&Req::get(&path)).await?;
        error(&r, &[400], "DIGEST_INVALID")?;
        let r = c.send(&Req::head(&path)).await?;
        ensure(r.status == 400 || r.status == 404, || {
            format!("expected 400 or 404, got {}", r.describe())
        })
    })
    .await;
}
