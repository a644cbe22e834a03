//! Shared by the `auth_*` tests: test keys, credentials, and a registry served on a socket.
//! The keys are throwaway test keys generated for these tests only.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use base64::Engine as _;
use http::{Method, StatusCode};
use oci_spec_types::Digest;
use registry_core::{Registry, RegistryConfig};

use crate::common::{Reply, TestRegistry, data};

pub const ED_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEINRJ8QFYy5bbdykqoWwZK8DZIC9esJcCkT/Dzt8kboww\n\
-----END PRIVATE KEY-----\n\
";

pub const ED_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MCowBQYDK2VwAyEAfvG20LrCD+QF8WfpBRGfYOt9Irg0kmNcu/c0adA+HUc=\n\
-----END PUBLIC KEY-----\n\
";

pub const OTHER_ED_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEILleqlbWcTIT3fyJtm3OYkXplp8Wb7EL3WbQTc8IYkAL\n\
-----END PRIVATE KEY-----\n\
";

pub const RSA_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCM+9e3BZICFUg4\n\
yKK462fzlWvUVnS/ml+IdF/nSE40clR0AZmu+88J4C9dmxxfEWGPDJP/UFjlVC5T\n\
CPam6lhNnRuyOTvzRLaEz1Kd5jsq9h4BwZ1bgEwhMloSTjRMe5uQ1aclDOFezTzA\n\
d+WrhDy+kUYEOC1vRKI2DZvvS7hATIQDACOmtwyIVw20HluKO3QypYpaafb0EzB4\n\
6IazQdvP5YPTtpXSn55FD8nGRwFHChdS8eI+tuAKpZXELW/87IKHmn3/ppf6a2Pn\n\
aIJkGRRnGTCEFTY8zLtCC+ALIiduOogjbie6kO+OCjrrbRs60vWe3DHHCu24Wnx7\n\
CC5EYh2fAgMBAAECggEAAzMWpYaw1kSZYQCHVjRcJZZh3hh1idZSY2G7aMpRTAtp\n\
iJXItm9B4Z1+4FxMJomEcfSnydw5nZVtf7ZCXW4QFvgr0BL7Hf2UjtW4WvEGArxB\n\
2L8GIook2tQDtfVPETVKRd0zb+R88OPY2cgJeaevS+aMH5MOz5RP13OI8xiq09AK\n\
xSZWAnN8lca5go6uWoAtu0YopgEtvCt+sOb59D50KxCyQPjcoCrzLg8MuAZR2Z4Y\n\
c7CsS++VMIM/53iD8PVgTIZt/s0VZVo6QUj0y9hXfOz7fib+W0GtXx9/aj/M9i5/\n\
Siy1CGNYNV+vN16lWODM7n11ie0GSpRXjxdB58V6EQKBgQDGy3J+JYXQ71ZG9znz\n\
su0FKlLYaJd1CQv1Z+5vJADgHUhr+8GL1RO5Fc8Mk3DDtRZRksEZTIernS5bDQqp\n\
XYNxulb9ZP/vDspHX00znhjAkLsbh0Omkn2Zx7ZU/AoOxmR8IFEFuG1D7QM5ohT4\n\
s6mNAJ3ZWsmciq7XfRzpb356FQKBgQC1jacJFYglsXK6WqLX3CYeHZHvE5ZszVOe\n\
Xl+cOe1DCcmAqhiQpACXGRE2/U0GY0J6DgZUt68u50BPBCxmq5OI9WoVGqMu+/z5\n\
9kjZIoVRqyRK1oYzIubyhgDh2d8z9+hh9OK/mLyj0T1LHeEE4/dpbcDOt8a67aXE\n\
wnRVoxSp4wKBgCOXBs9ovlVSk/quhjSIAwEau6w8xWjRjs+HpNtG8dUtyOp0Lwlu\n\
w1Iuglv5BYY0JGPER0fVOLDTuhnY8uCxejfhKXPCIkPVPQecG0Eze7D1+FmMVOM8\n\
dLoUVCNQ4CgXAqRqULcado1joGEwEFsaJy+0PY5NP60D8xtnLcbpDBalAoGBAIjE\n\
TyK+v7N1e7H6+VWXmHdzWy45GUaZXvacrXXpBV1NECkG+j5r7a3lylwccVvwhnGg\n\
AxDq1uOEfaOIx1IIyrmP9vwy9t88IRTEfZhlMv2U6WAfPzVig4wLerqpAEYL6Vlx\n\
uycOjnzx8TSXK54dhZI8hdS0CNdkk04oFq80jSp1AoGAE3O8PK2c0kZGHIRG47Tt\n\
SIsK5HKwbvtbjqdyItPOBzFcA8TrWGetPWQkI2hWuMHn/Seczse+aAY2Bd8qIiSq\n\
r/4Wf+qVikjASnZEJ2raVpSeWP2LP5oYZukeXnNBKckRWGSSxuMG533bjoOBBxwP\n\
zUv9XvoDpafVvUi+6R4vx2M=\n\
-----END PRIVATE KEY-----\n\
";

pub const RSA_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAjPvXtwWSAhVIOMiiuOtn\n\
85Vr1FZ0v5pfiHRf50hONHJUdAGZrvvPCeAvXZscXxFhjwyT/1BY5VQuUwj2pupY\n\
TZ0bsjk780S2hM9SneY7KvYeAcGdW4BMITJaEk40THubkNWnJQzhXs08wHflq4Q8\n\
vpFGBDgtb0SiNg2b70u4QEyEAwAjprcMiFcNtB5bijt0MqWKWmn29BMweOiGs0Hb\n\
z+WD07aV0p+eRQ/JxkcBRwoXUvHiPrbgCqWVxC1v/OyCh5p9/6aX+mtj52iCZBkU\n\
ZxkwhBU2PMy7QgvgCyInbjqII24nupDvjgo6620bOtL1ntwxxwrtuFp8ewguRGId\n\
nwIDAQAB\n\
-----END PUBLIC KEY-----\n\
";

pub const EC_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6HDs8tOT9dVQX3lH\n\
yricGXbgiGaxDl2U2YRwUrwUI7WhRANCAATfM+LJy1Au0NtnAMKIB7VDSi8+ARTt\n\
acA4W3I/4Eik4MArgM3Hh0TTZ2eqF9aX1FJFIqQjO/6vcrEYEni6iRqj\n\
-----END PRIVATE KEY-----\n\
";

pub const EC_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE3zPiyctQLtDbZwDCiAe1Q0ovPgEU\n\
7WnAOFtyP+BIpODAK4DNx4dE02dnqhfWl9RSRSKkIzv+r3KxGBJ4uokaow==\n\
-----END PUBLIC KEY-----\n\
";

/// An htpasswd text with bcrypt entries as `htpasswd -B` writes them (`$2y$`), at the
/// lowest cost so tests stay fast.
pub fn htpasswd(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(user, password)| {
            let hash = bcrypt::hash_with_result(password, 4)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY);
            format!("{user}:{hash}\n")
        })
        .collect()
}

/// The value of a `Basic` `Authorization` header.
pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

pub async fn as_user(
    reg: &TestRegistry,
    who: (&str, &str),
    method: Method,
    uri: &str,
    body: Vec<u8>,
) -> Reply {
    let a = basic(who.0, who.1);
    reg.send(method, uri, &[("Authorization", &a)], Body::from(body))
        .await
}

/// Monolithic push as `who`; returns the reply.
pub async fn push_blob_as(
    reg: &TestRegistry,
    who: (&str, &str),
    repo: &str,
    bytes: &[u8],
) -> Reply {
    let digest = Digest::sha256_of(bytes);
    as_user(
        reg,
        who,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        bytes.to_vec(),
    )
    .await
}

/// Pushes a one-layer image as `who` (asserting each step succeeds).
/// Returns the manifest's and the layer's digests.
pub async fn push_image_as(
    reg: &TestRegistry,
    who: (&str, &str),
    repo: &str,
    tag: &str,
) -> (Digest, Digest) {
    let config = br#"{"architecture":"amd64"}"#;
    let layer = data(repo.len() as u64, 300);
    for b in [&config[..], &layer[..]] {
        let r = push_blob_as(reg, who, repo, b).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::sha256_of(config).to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": Digest::sha256_of(&layer).to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let a = basic(who.0, who.1);
    let r = reg
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[
                ("Authorization", &a),
                ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            ],
            Body::from(manifest.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    (Digest::sha256_of(&manifest), Digest::sha256_of(&layer))
}

/// A registry on fs + SQLite in a temporary folder, served on a loopback socket.
pub struct Served {
    pub url: String,
    pub registry: Registry,
    pub server: tokio::task::JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub async fn serve(config: RegistryConfig) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let blobs = storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap();
    let metadata =
        metadata_sqlite::SqliteMetadataStore::open(dir.path().join("registry.db")).unwrap();
    let registry = Registry::new(Arc::new(blobs), Arc::new(metadata), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = registry.router();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served {
        url,
        registry,
        server,
        dir,
    }
}

/// Serves any router on a loopback socket; returns its base URL.
pub async fn serve_router(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, server)
}
