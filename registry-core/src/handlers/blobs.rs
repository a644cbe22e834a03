//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::response::Response;
use http::{StatusCode, header};
use oci_spec_types::{Digest, ErrorCode, RepositoryName};
use storage_traits::GetRange;

use crate::Inner;
use crate::error::RegistryError;
use crate::exchange::{Call, Result, empty, header_str, set_headers};

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::oci(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not in this repository"),
    )
}

pub(super) async fn get(
    call: Call<'_>,
    repo: &RepositoryName,
    digest: &Digest,
    head: bool,
) -> Result<Response> {
    let inner = call.inner;
    if let Some(proxied) = inner.proxy.as_ref().and_then(|p| p.resolve(repo)) {
        let ranged = call.headers.contains_key(header::RANGE);
        let fetched = crate::proxy::get_blob(inner, &proxied, repo, digest, head, ranged).await?;
        if let Some(res) = fetched {
            return Ok(res);
        }
    }
    // The repository link is the authority: a blob another repository pushed is not
    // visible here until it is pushed or mounted into this one.
    let size = inner
        .metadata
        .blob_link(repo, digest)
        .await?
        .ok_or_else(|| blob_unknown(digest))?;
    let range = match header_str(call.headers, header::RANGE) {
        Some(r) => Some(parse_range(r).ok_or(RegistryError::RangeNotSatisfiable { size })?),
        None => None,
    };
    let mut common = vec![
        ("Docker-Content-Digest", digest.to_string()),
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
        ("ETag", format!("\"{digest}\"")),
    ];
    if head {
        if let Some(r) = range {
            let r = r
                .resolve(size)
                .ok_or(RegistryError::RangeNotSatisfiable { size })?;
            common.push((
                "Content-Range",
                format!("bytes {}-{}/{size}", r.start, r.end - 1),
            ));
            common.push(("Content-Length", (r.end - r.start).to_string()));
            return Ok(empty(StatusCode::PARTIAL_CONTENT, &common));
        }
        common.push(("Content-Length", size.to_string()));
        return Ok(empty(StatusCode::OK, &common));
    }
    if let Some(url) = presigned(inner, digest, size).await? {
        common.push(("Location", url));
        common.push(("Content-Length", "0".to_string()));
        return Ok(empty(StatusCode::TEMPORARY_REDIRECT, &common));
    }
    let ranged = range.is_some();
    let got = inner.blobs.get(digest, range).await?;
    let status = if ranged {
        common.push((
            "Content-Range",
            format!(
                "bytes {}-{}/{}",
                got.range.start,
                got.range.end - 1,
                got.size
            ),
        ));
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    common.push((
        "Content-Length",
        (got.range.end - got.range.start).to_string(),
    ));
    let mut res = Response::new(Body::from_stream(got.stream));
    *res.status_mut() = status;
    set_headers(res.headers_mut(), &common);
    Ok(res)
}

/// A presigned URL for the blob when redirects are on, the store can sign, and the blob
/// is large enough to be worth the client's extra round trip.
async fn presigned(inner: &Inner, digest: &Digest, size: u64) -> Result<Option<String>> {
    let (Some(cfg), Some(signer)) = (&inner.config.redirect, inner.blobs.signer()) else {
        return Ok(None);
    };
    if size < cfg.min_size {
        return Ok(None);
    }
    Ok(Some(signer.presigned_get(digest, cfg.expires_in).await?))
}

pub(super) async fn delete(
    inner: &Inner,
    repo: &RepositoryName,
    digest: &Digest,
) -> Result<Response> {
    if !inner.metadata.unlink_blob(repo, digest).await? {
        return Err(blob_unknown(digest));
    }
    // The bytes stay in the blob store: other repositories may link them. Reclaiming
    // unreferenced bytes is garbage collection's job.
    Ok(empty(
        StatusCode::ACCEPTED,
        &[("Content-Length", "0".into())],
    ))
}

/// Parses a single-range `Range: bytes=a-b | a- | -n` header.
fn parse_range(s: &str) -> Option<GetRange> {
    let spec = s.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), b.is_empty()) {
        (true, false) => Some(GetRange::Suffix(b.parse().ok()?)),
        (false, true) => Some(GetRange::Offset(a.parse().ok()?)),
        (false, false) => {
            let start: u64 = a.parse().ok()?;
            let end: u64 = b.parse().ok()?;
            (end >= start).then(|| GetRange::Bounded(start..end.saturating_add(1)))
        }
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9"), Some(GetRange::Bounded(0..10)));
        assert_eq!(parse_range("bytes=5-"), Some(GetRange::Offset(5)));
        assert_eq!(parse_range("bytes=-5"), Some(GetRange::Suffix(5)));
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=9-1",
            "0-1",
            "bytes=0-1,3-4",
            "bytes=a-b",
        ] {
            assert_eq!(parse_range(bad), None, "{bad}");
        }
    }
}
