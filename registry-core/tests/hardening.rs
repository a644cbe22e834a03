//! Issue 13: what a registry must refuse or report that it used to let through. A manifest
//! that is not UTF-8 is `MANIFEST_INVALID`.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestRegistry;
use http::StatusCode;
use oci_spec_types::Digest;

#[tokio::test]
async fn a_manifest_that_is_not_utf8_is_manifest_invalid() {
    let reg = TestRegistry::new().await;
    let config = reg.push_blob("app", br#"{"architecture":"amd64"}"#).await;
    let manifest = |note: &[u8]| {
        let mut m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":24}},"layers":[],"note":""#
        )
        .into_bytes();
        m.extend_from_slice(note);
        m.extend_from_slice(b"\"}");
        m
    };
    // The same manifest with a valid note is accepted, so only the bytes are at fault.
    let good = manifest("caf\u{e9}".as_bytes());
    let r = reg.put_manifest("app", "good", &good).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    for note in [&b"caf\xe9"[..], b"\xff\xfe", b"\xed\xa0\x80"] {
        let bad = manifest(note);
        let r = reg.put_manifest("app", "bad", &bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{note:?}: {:?}", r.body);
        assert_eq!(r.code(), "MANIFEST_INVALID", "{note:?}");
        let by_digest = format!("/v2/app/manifests/{}", Digest::sha256_of(&bad));
        assert_eq!(reg.get(&by_digest).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        reg.get("/v2/app/manifests/bad").await.status,
        StatusCode::NOT_FOUND
    );
}
