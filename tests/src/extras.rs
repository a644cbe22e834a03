//! Behaviour that real clients (docker, containerd, oras, crane) depend on,
//! beyond what the spec's own conformance suite checks.

use reqwest::Method;

use crate::Ctx;
use crate::client::{Client, Req};
use crate::expect::{body_eq, ensure, header, header_eq, status};
use crate::fixtures::{
    Blob, DOCKER_LIST, Image, Manifest, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, index,
    sha256, unique_bytes,
};
use crate::ops::{manifest_req, push_blob, push_image, push_manifest};
use crate::report::{Check, Recorder};

const MIB: usize = 1024 * 1024;

pub(crate) async fn run(ctx: &Ctx<'_>, rec: &mut Recorder<'_>) {
    let c = ctx.client;
    let repo = ctx.repo("extras");
    let uploads = format!("/v2/{repo}/blobs/uploads/");

    rec.check("api-version-header", async {
        let r = c.send(&Req::get("/v2/")).await?;
        status(&r, &[200, 401])?;
        header_eq(&r, "Docker-Distribution-API-Version", "registry/2.0")
    })
    .await;

    rec.check("manifest-head-headers", async {
        let image = Image::oci("head", 100);
        push_image(c, &repo, &image, Some("head")).await?;
        let m = &image.manifest;
        let r = c.send(&manifest_req(Method::HEAD, &repo, "head")).await?;
        status(&r, &[200])?;
        header_eq(&r, "Content-Length", &m.bytes.len().to_string())?;
        header_eq(&r, "Docker-Content-Digest", &m.digest)?;
        header_eq(&r, "Content-Type", m.media_type)
    })
    .await;

    rec.check("manifest-bytes-roundtrip", async {
        let image = Image::oci("roundtrip", 100);
        for blob in &image.blobs {
            push_blob(c, &repo, blob).await?;
        }
        let m = odd_manifest(&image.blobs[0], &image.blobs[1]);
        push_manifest(c, &repo, "odd", &m).await?;
        for reference in ["odd", m.digest.as_str()] {
            let r = c.send(&manifest_req(Method::GET, &repo, reference)).await?;
            status(&r, &[200])?;
            body_eq(&r, &m.bytes).map_err(|e| {
                format!("manifest bytes not preserved (whitespace, key order, unknown fields): {e}")
            })?;
            header_eq(&r, "Docker-Content-Digest", &m.digest)?;
        }
        Ok(())
    })
    .await;

    rec.check("blob-large-monolithic", async {
        let blob = Blob::new(unique_bytes("large", 5 * MIB + 123));
        push_blob(c, &repo, &blob).await?;
        blob_roundtrip(c, &repo, &blob).await
    })
    .await;

    rec.check("blob-large-chunked", async {
        let blob = Blob::new(unique_bytes("large-chunked", 5 * MIB + 321));
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let mut location = r.location()?;
        for (start, end) in [(0, 2 * MIB), (2 * MIB, 4 * MIB)] {
            let r = c
                .send(
                    &Req::patch(&location)
                        .header("Content-Type", "application/octet-stream")
                        .header("Content-Range", format!("{start}-{}", end - 1))
                        .body(blob.bytes.slice(start..end)),
                )
                .await?;
            status(&r, &[202])?;
            location = r.location()?;
        }
        let r = c
            .send(
                &Req::put(location)
                    .query("digest", &blob.digest)
                    .header("Content-Type", "application/octet-stream")
                    .body(blob.bytes.slice(4 * MIB..)),
            )
            .await?;
        status(&r, &[201])?;
        blob_roundtrip(c, &repo, &blob).await
    })
    .await;

    let docker = Image::docker("docker");
    let docker_ok = rec
        .check("docker-schema2-manifest", async {
            push_image(c, &repo, &docker, Some("docker")).await?;
            served_as(c, &repo, "docker", &docker.manifest).await
        })
        .await;

    rec.check("docker-manifest-list", async {
        crate::report::needs(docker_ok, "docker-schema2-manifest")?;
        let list = index(DOCKER_LIST, &[(&docker.manifest, "amd64")]);
        push_manifest(c, &repo, "docker-list", &list).await?;
        served_as(c, &repo, "docker-list", &list).await
    })
    .await;

    rec.check("oci-index", async {
        let amd = Image::oci("index-amd64", 100);
        let arm = Image::oci("index-arm64", 100);
        push_image(c, &repo, &amd, None).await?;
        push_image(c, &repo, &arm, None).await?;
        let idx = index(
            OCI_INDEX,
            &[(&amd.manifest, "amd64"), (&arm.manifest, "arm64")],
        );
        push_manifest(c, &repo, "multi", &idx).await?;
        served_as(c, &repo, "multi", &idx).await?;
        // A child stays reachable by digest through the index.
        let r = c
            .send(&manifest_req(Method::GET, &repo, &arm.manifest.digest))
            .await?;
        status(&r, &[200])?;
        body_eq(&r, &arm.manifest.bytes)
    })
    .await;

    rec.check("upload-location-resolves", async {
        let r = c.send(&Req::post(&uploads)).await?;
        status(&r, &[202])?;
        let raw = header(&r, "Location")?.to_owned();
        ensure(
            raw.starts_with('/') || raw.starts_with("http://") || raw.starts_with("https://"),
            || format!("upload Location {raw:?} is neither absolute nor rooted at /"),
        )?;
        let r = c.send(&Req::get(r.location()?)).await?;
        status(&r, &[204])
            .map_err(|e| format!("upload Location {raw:?} does not lead to the session: {e}"))
    })
    .await;
}

/// An OCI manifest with tabs, odd spacing, reordered keys, an unknown field and
/// a trailing newline: a registry must store and serve these exact bytes.
fn odd_manifest(config: &Blob, layer: &Blob) -> Manifest {
    let text = format!(
        "{{\n\t\"x-unknown-field\" : {{ \"kept\": [1, 2.50, true, null] }},\n  \"schemaVersion\":   2,\n\"mediaType\":\"{OCI_MANIFEST}\",\n\t\"layers\": [ {{\"size\": {}, \"digest\": \"{}\", \"mediaType\": \"{OCI_LAYER}\"}} ],\r\n  \"config\": {{\"mediaType\": \"{OCI_CONFIG}\", \"digest\": \"{}\", \"size\": {}}}\n}}\n\n",
        layer.bytes.len(),
        layer.digest,
        config.digest,
        config.bytes.len(),
    );
    Manifest::from_bytes(OCI_MANIFEST, text)
}

/// `GET` returns the manifest with its own `Content-Type` and exact bytes.
async fn served_as(c: &Client, repo: &str, reference: &str, m: &Manifest) -> Check {
    let r = c.send(&manifest_req(Method::GET, repo, reference)).await?;
    status(&r, &[200])?;
    header_eq(&r, "Content-Type", m.media_type)?;
    body_eq(&r, &m.bytes)?;
    header_eq(&r, "Docker-Content-Digest", &m.digest)
}

/// `GET` returns the whole blob; its digest matches.
async fn blob_roundtrip(c: &Client, repo: &str, blob: &Blob) -> Check {
    let r = c
        .send(&Req::get(format!("/v2/{repo}/blobs/{}", blob.digest)))
        .await?;
    status(&r, &[200])?;
    let got = sha256(&r.body);
    ensure(
        got == blob.digest && r.body.len() == blob.bytes.len(),
        || {
            format!(
                "blob came back as {} bytes with digest {got}, pushed {} bytes with digest {}",
                r.body.len(),
                blob.bytes.len(),
                blob.digest
            )
        },
    )
}
