//! Registry operations used as setup steps by several workflows.

use crate::client::{Client, Req, Resp};
use crate::expect::status;
use crate::fixtures::{Blob, Image, Manifest, accept_manifests};

/// Uploads a blob with `POST` then a monolithic `PUT`.
pub(crate) async fn push_blob(client: &Client, repo: &str, blob: &Blob) -> Result<(), String> {
    let resp = client
        .send(&Req::post(format!("/v2/{repo}/blobs/uploads/")))
        .await?;
    status(&resp, &[202])?;
    let location = resp.location()?;
    let resp = client
        .send(
            &Req::put(location)
                .query("digest", &blob.digest)
                .header("Content-Type", "application/octet-stream")
                .body(blob.bytes.clone()),
        )
        .await?;
    status(&resp, &[201])
}

/// `PUT /v2/<repo>/manifests/<reference>` with the manifest's media type.
pub(crate) async fn put_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<Resp, String> {
    client
        .send(
            &Req::put(format!("/v2/{repo}/manifests/{reference}"))
                .header("Content-Type", manifest.media_type)
                .body(manifest.bytes.clone()),
        )
        .await
}

/// Like [`put_manifest`], but a status other than 201 is an error.
pub(crate) async fn push_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    manifest: &Manifest,
) -> Result<Resp, String> {
    let resp = put_manifest(client, repo, reference, manifest).await?;
    status(&resp, &[201])?;
    Ok(resp)
}

/// Pushes an image's blobs, then its manifest by `tag` (or by digest).
pub(crate) async fn push_image(
    client: &Client,
    repo: &str,
    image: &Image,
    tag: Option<&str>,
) -> Result<(), String> {
    for blob in &image.blobs {
        push_blob(client, repo, blob).await?;
    }
    let reference = tag.unwrap_or(&image.manifest.digest);
    push_manifest(client, repo, reference, &image.manifest).await?;
    Ok(())
}

/// `GET` or `HEAD` of a manifest, accepting every manifest type.
pub(crate) fn manifest_req(method: reqwest::Method, repo: &str, reference: &str) -> Req {
    Req::new(method, format!("/v2/{repo}/manifests/{reference}"))
        .header("Accept", accept_manifests())
}
