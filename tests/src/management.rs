//! Content management: deleting tags, manifests and blobs.

use reqwest::Method;

use crate::Ctx;
use crate::client::Req;
use crate::expect::{error, status};
use crate::fixtures::{Blob, Image, unique_bytes, unknown_digest};
use crate::ops::{manifest_req, push_blob, push_image, push_manifest};
use crate::report::Recorder;

pub(crate) async fn run(ctx: &Ctx<'_>, rec: &mut Recorder<'_>) {
    let c = ctx.client;
    let repo = ctx.repo("management");

    rec.check("tag-delete", async {
        let image = Image::oci("delete-tag", 200);
        push_image(c, &repo, &image, Some("doomed")).await?;
        push_manifest(c, &repo, "kept", &image.manifest).await?;
        let r = c
            .send(&Req::delete(format!("/v2/{repo}/manifests/doomed")))
            .await?;
        status(&r, &[202]).map_err(|e| {
            if r.status == 400 || r.status == 405 {
                format!("tag deletion unsupported (the spec allows 400/405 only when it is disabled): {e}")
            } else {
                e
            }
        })?;
        let r = c.send(&manifest_req(Method::GET, &repo, "doomed")).await?;
        error(&r, &[404], "MANIFEST_UNKNOWN")
            .map_err(|e| format!("deleted tag still resolves: {e}"))?;
        // Only the tag goes: another tag and the digest still resolve.
        let r = c.send(&manifest_req(Method::GET, &repo, "kept")).await?;
        status(&r, &[200]).map_err(|e| format!("deleting one tag removed another: {e}"))
    })
    .await;

    rec.check("manifest-delete", async {
        let image = Image::oci("delete-manifest", 200);
        push_image(c, &repo, &image, Some("to-untag")).await?;
        let digest = &image.manifest.digest;
        let r = c
            .send(&Req::delete(format!("/v2/{repo}/manifests/{digest}")))
            .await?;
        status(&r, &[202])?;
        let r = c.send(&manifest_req(Method::GET, &repo, digest)).await?;
        error(&r, &[404], "MANIFEST_UNKNOWN")
            .map_err(|e| format!("deleted manifest still served: {e}"))?;
        let r = c
            .send(&manifest_req(Method::HEAD, &repo, "to-untag"))
            .await?;
        status(&r, &[404]).map_err(|e| format!("a tag still points at the deleted manifest: {e}"))
    })
    .await;

    rec.check("blob-delete", async {
        let blob = Blob::new(unique_bytes("delete-blob", 300));
        push_blob(c, &repo, &blob).await?;
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        let r = c.send(&Req::delete(&path)).await?;
        status(&r, &[202])?;
        let r = c.send(&Req::get(&path)).await?;
        error(&r, &[404], "BLOB_UNKNOWN").map_err(|e| format!("deleted blob still served: {e}"))?;
        let r = c.send(&Req::head(&path)).await?;
        status(&r, &[404])
    })
    .await;

    rec.check("manifest-delete-unknown", async {
        let r = c
            .send(&Req::delete(format!(
                "/v2/{repo}/manifests/{}",
                unknown_digest()
            )))
            .await?;
        error(&r, &[404], "MANIFEST_UNKNOWN")
    })
    .await;

    rec.check("blob-delete-unknown", async {
        let r = c
            .send(&Req::delete(format!(
                "/v2/{repo}/blobs/{}",
                unknown_digest()
            )))
            .await?;
        error(&r, &[404], "BLOB_UNKNOWN")
    })
    .await;
}
