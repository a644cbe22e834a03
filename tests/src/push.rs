//! Push workflow: every way to upload a blob (monolithic, single POST,
//! streamed, chunked, mount), upload session status and cancellation, and
//! manifest pushes by tag, by digest, with missing blobs and with a subject.

use bytes::Bytes;

use crate::Ctx;
use crate::client::{Client, Req};
use crate::expect::{ensure, error, header, header_eq, optional_header_eq, status};
use crate::fixtures::{Blob, Image, unique_bytes, unknown_digest};
use crate::ops::{push_blob, push_image, push_manifest, put_manifest};
use crate::report::{Check, Recorder};

pub(crate) async fn run(ctx: &Ctx<'_>, rec: &mut Recorder<'_>) {
    let c = ctx.client;
    let repo = ctx.repo("push");
    let uploads = format!("/v2/{repo}/blobs/uploads/");

    rec.check("blob-post-put", async {
        let blob = Blob::new(unique_bytes("post-put", 1000));
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let location = r.location()?;
        let r = c
            .send(
                &Req::put(location)
                    .query("digest", &blob.digest)
                    .header("Content-Type", "application/octet-stream")
                    .body(blob.bytes.clone()),
            )
            .await?;
        status(&r, &[201])?;
        header(&r, "Location")?;
        optional_header_eq(&r, "Docker-Content-Digest", &blob.digest)?;
        blob_exists(c, &repo, &blob).await
    })
    .await;

    rec.check("blob-post-monolithic", async {
        let blob = Blob::new(unique_bytes("post-digest", 1000));
        let r = c
            .send(
                &Req::post(&uploads)
                    .query("digest", &blob.digest)
                    .header("Content-Type", "application/octet-stream")
                    .body(blob.bytes.clone()),
            )
            .await?;
        status(&r, &[201, 202])?;
        if r.status == 202 {
            // The spec lets a registry decline single-request uploads by opening a session.
            let r = c
                .send(
                    &Req::put(r.location()?)
                        .query("digest", &blob.digest)
                        .header("Content-Type", "application/octet-stream")
                        .body(blob.bytes.clone()),
                )
                .await?;
            status(&r, &[201])?;
        } else {
            header(&r, "Location")?;
        }
        blob_exists(c, &repo, &blob).await
    })
    .await;

    rec.check("blob-patch-streamed", async {
        let blob = Blob::new(unique_bytes("streamed", 3000));
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let r = c
            .send(
                &Req::patch(r.location()?)
                    .header("Content-Type", "application/octet-stream")
                    .body(blob.bytes.clone()),
            )
            .await?;
        status(&r, &[202])?;
        header_eq(&r, "Range", &format!("0-{}", blob.bytes.len() - 1))?;
        let r = c
            .send(&Req::put(r.location()?).query("digest", &blob.digest))
            .await?;
        status(&r, &[201])?;
        blob_exists(c, &repo, &blob).await
    })
    .await;

    rec.check("blob-patch-chunked", async {
        let blob = Blob::new(unique_bytes("chunked", 3000));
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let mut location = r.location()?;
        for (start, end) in [(0, 1000), (1000, 2000)] {
            let r = patch_chunk(c, &location, &blob.bytes, start, end).await?;
            status(&r, &[202])?;
            header_eq(&r, "Range", &format!("0-{}", end - 1))?;
            location = r.location()?;
        }
        // The last chunk travels with the closing PUT.
        let r = c
            .send(
                &Req::put(location)
                    .query("digest", &blob.digest)
                    .header("Content-Type", "application/octet-stream")
                    .body(blob.bytes.slice(2000..)),
            )
            .await?;
        status(&r, &[201])?;
        blob_exists(c, &repo, &blob).await
    })
    .await;

    rec.check("blob-patch-out-of-order", async {
        let data = unique_bytes("out-of-order", 3000);
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let r = patch_chunk(c, &r.location()?, &data, 0, 1000).await?;
        status(&r, &[202])?;
        let location = r.location()?;
        let r = patch_chunk(c, &location, &data, 2000, 3000).await?;
        status(&r, &[416]).map_err(|e| {
            format!(
                "a chunk starting at byte 2000 of a session holding 1000 bytes must be refused: {e}"
            )
        })?;
        optional_header_eq(&r, "Range", "0-999")?;
        // The session survives and still reports the last good offset.
        let r = c.send(&Req::get(&location)).await?;
        status(&r, &[204])?;
        header_eq(&r, "Range", "0-999")
    })
    .await;

    rec.check("upload-status", async {
        let data = unique_bytes("status", 1500);
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let r = patch_chunk(c, &r.location()?, &data, 0, 1500).await?;
        status(&r, &[202])?;
        let r = c.send(&Req::get(r.location()?)).await?;
        status(&r, &[204])?;
        header_eq(&r, "Range", "0-1499")?;
        header(&r, "Location")?;
        Ok(())
    })
    .await;

    rec.check("blob-put-digest-mismatch", async {
        let data = unique_bytes("mismatch", 500);
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let r = c
            .send(
                &Req::put(r.location()?)
                    .query("digest", unknown_digest())
                    .header("Content-Type", "application/octet-stream")
                    .body(data),
            )
            .await?;
        error(&r, &[400], "DIGEST_INVALID")
    })
    .await;

    let source = ctx.repo("push-mount-source");
    rec.check("blob-mount", async {
        let blob = Blob::new(unique_bytes("mount", 700));
        push_blob(c, &source, &blob)
            .await
            .map_err(|e| format!("setup: pushing to the source repository: {e}"))?;
        let r = c
            .send(
                &Req::post(&uploads)
                    .query("mount", &blob.digest)
                    .query("from", &source),
            )
            .await?;
        status(&r, &[201])?;
        header(&r, "Location")?;
        optional_header_eq(&r, "Docker-Content-Digest", &blob.digest)?;
        blob_exists(c, &repo, &blob).await
    })
    .await;

    rec.check("blob-mount-unknown-fallback", async {
        let blob = Blob::new(unique_bytes("mount-fallback", 700));
        let r = c
            .send(
                &Req::post(&uploads)
                    .query("mount", &blob.digest)
                    .query("from", &source),
            )
            .await?;
        status(&r, &[202])?;
        // The fallback is an ordinary session: finishing it must work.
        let r = c
            .send(
                &Req::put(r.location()?)
                    .query("digest", &blob.digest)
                    .header("Content-Type", "application/octet-stream")
                    .body(blob.bytes.clone()),
            )
            .await?;
        status(&r, &[201])?;
        blob_exists(c, &repo, &blob).await
    })
    .await;

    for by_tag in [true, false] {
        let name = if by_tag {
            "manifest-put-by-tag"
        } else {
            "manifest-put-by-digest"
        };
        rec.check(name, async {
            let image = Image::oci(name, 600);
            for blob in &image.blobs {
                push_blob(c, &repo, blob).await?;
            }
            let m = &image.manifest;
            let reference = if by_tag {
                "pushed-tag"
            } else {
                m.digest.as_str()
            };
            let r = put_manifest(c, &repo, reference, m).await?;
            status(&r, &[201])?;
            header(&r, "Location")?;
            header_eq(&r, "Docker-Content-Digest", &m.digest)
        })
        .await;
    }

    rec.check("manifest-put-blob-unknown", async {
        let image = Image::oci("blob-unknown", 600);
        // Push the config but not the layer.
        push_blob(c, &repo, &image.blobs[0]).await?;
        let r = put_manifest(c, &repo, "missing-layer", &image.manifest).await?;
        error(&r, &[400, 404], "MANIFEST_BLOB_UNKNOWN")
    })
    .await;

    rec.check("manifest-put-subject", async {
        let subject = Image::oci("subject", 300);
        push_image(c, &repo, &subject, None).await?;
        let artifact = Image::artifact(&subject.manifest, "application/vnd.example.test", "push");
        for blob in &artifact.blobs {
            push_blob(c, &repo, blob).await?;
        }
        let r = push_manifest(c, &repo, &artifact.manifest.digest, &artifact.manifest).await?;
        header_eq(&r, "OCI-Subject", &subject.manifest.digest)
    })
    .await;

    rec.check("upload-cancel", async {
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let location = r.location()?;
        let r = c.send(&Req::delete(&location)).await?;
        status(&r, &[204])?;
        let r = c.send(&Req::get(&location)).await?;
        error(&r, &[404], "BLOB_UPLOAD_UNKNOWN")
    })
    .await;
}

/// `PATCH` bytes `start..end` of `data` with a `Content-Range`.
async fn patch_chunk(
    c: &Client,
    location: &str,
    data: &Bytes,
    start: usize,
    end: usize,
) -> Result<crate::client::Resp, String> {
    c.send(
        &Req::patch(location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{start}-{}", end - 1))
            .body(data.slice(start..end)),
    )
    .await
}

/// `HEAD` finds the blob in `repo` with its size.
async fn blob_exists(c: &Client, repo: &str, blob: &Blob) -> Check {
    let r = c
        .send(&Req::head(format!("/v2/{repo}/blobs/{}", blob.digest)))
        .await?;
    status(&r, &[200]).map_err(|e| format!("blob not readable after upload: {e}"))?;
    let len = r.header("Content-Length").unwrap_or("");
    ensure(len == blob.bytes.len().to_string(), || {
        format!(
            "HEAD after upload: Content-Length {len:?}, expected {}",
            blob.bytes.len()
        )
    })
}
