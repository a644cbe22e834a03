//! Issue 13: what a registry must accept, refuse or report that it used to get wrong.
//! Empty Basic credentials (what skopeo, podman and docker send without a login) are
//! anonymous, and a 401 to a caller without credentials never says its password was
//! wrong. `/readyz` fails while a store refuses writes (a full disk) though it still reads.
//! A manifest that is not UTF-8 is `MANIFEST_INVALID`.

#![allow(clippy::unwrap_used)]

mod auth_support;
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use common::{Reply, TestRegistry};
use futures::stream::BoxStream;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use oci_spec_types::Digest;
use registry_core::auth::{AccessPolicy, AccessRule, Action, Htpasswd, TokenAuth};
use registry_core::ops::WRITE_PROBE_TTL;
use registry_core::{Registry, RegistryConfig};
use storage_traits::{
    BlobInfo, BlobSigner, BlobStore, ByteStream, GetRange, GetResult, MetadataStore, Page,
    StorageError,
};
use tower::ServiceExt;

/// `Authorization: Basic` of an empty user and an empty password (`:`).
const EMPTY_BASIC: &str = "Basic Og==";

const ROOT: (&str, &str) = ("root", "root pw");

/// htpasswd with root allowed everything, `public/*` readable by anyone.
fn basic_config() -> RegistryConfig {
    let users = Htpasswd::parse(&auth_support::htpasswd(&[ROOT])).unwrap();
    let policy = AccessPolicy::new()
        .with_public("public/*".parse().unwrap())
        .with_rule(AccessRule::new(["*".parse().unwrap()], Action::ALL).with_users(["root"]));
    RegistryConfig::default()
        .with_authenticator(Arc::new(users))
        .with_authorizer(Arc::new(policy))
}

async fn send_as(reg: &TestRegistry, authorization: &str, method: Method, uri: &str) -> Reply {
    reg.send(
        method,
        uri,
        &[("Authorization", authorization)],
        Body::empty(),
    )
    .await
}

fn message(r: &Reply) -> String {
    r.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Pushes a one-layer image as root; returns the layer's digest.
async fn push_as_root(reg: &TestRegistry, repo: &str, tag: &str) -> Digest {
    let root = auth_support::basic(ROOT.0, ROOT.1);
    let config = br#"{"architecture":"amd64"}"#;
    let layer = common::data(7, 500);
    for bytes in [&config[..], &layer[..]] {
        let digest = Digest::sha256_of(bytes);
        let r = reg
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[("Authorization", &root)],
                Body::from(bytes.to_vec()),
            )
            .await;
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
    let r = reg
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[
                ("Authorization", &root),
                ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            ],
            Body::from(manifest),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    Digest::sha256_of(&layer)
}

#[tokio::test]
async fn empty_basic_credentials_pull_public_repositories() {
    let reg = TestRegistry::with_config(basic_config()).await;
    let layer = push_as_root(&reg, "public/base", "v1").await;
    push_as_root(&reg, "private/app", "v1").await;

    // What skopeo does without a login: `/v2/` first (a challenge), then the pull with
    // empty Basic credentials. Every read of the public repository succeeds.
    let r = send_as(&reg, EMPTY_BASIC, Method::GET, "/v2/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("Basic realm=\"registry\"")
    );
    let reads = [
        (Method::GET, "/v2/public/base/manifests/v1".to_string()),
        (Method::HEAD, "/v2/public/base/manifests/v1".to_string()),
        (Method::GET, "/v2/public/base/tags/list".to_string()),
        (Method::GET, format!("/v2/public/base/blobs/{layer}")),
        (Method::HEAD, format!("/v2/public/base/blobs/{layer}")),
    ];
    for (method, uri) in reads {
        let r = send_as(&reg, EMPTY_BASIC, method.clone(), &uri).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {uri}: {:?}", r.body);
    }
    // Anonymous is all it is: no writes to the public repository, nothing private.
    let r = send_as(
        &reg,
        EMPTY_BASIC,
        Method::DELETE,
        "/v2/public/base/manifests/v1",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send_as(
        &reg,
        EMPTY_BASIC,
        Method::POST,
        "/v2/public/base/blobs/uploads/",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send_as(
        &reg,
        EMPTY_BASIC,
        Method::GET,
        "/v2/private/app/manifests/v1",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("Basic realm=\"registry\"")
    );
}

/// Every 401 a caller without credentials can get (no header, empty Basic, `Basic` with
/// nothing after it) asks for authentication; only credentials that were sent and are
/// wrong are called invalid.
#[tokio::test]
async fn a_401_without_credentials_never_says_the_password_is_wrong() {
    let reg = TestRegistry::with_config(basic_config()).await;
    push_as_root(&reg, "private/app", "v1").await;
    let uris = [
        (Method::GET, "/v2/"),
        (Method::GET, "/v2/_catalog"),
        (Method::GET, "/v2/private/app/manifests/v1"),
        (Method::POST, "/v2/public/base/blobs/uploads/"),
    ];
    for (method, uri) in uris.clone() {
        let none = reg.send(method.clone(), uri, &[], Body::empty()).await;
        for r in [
            none,
            send_as(&reg, EMPTY_BASIC, method.clone(), uri).await,
            send_as(&reg, "Basic", method.clone(), uri).await,
        ] {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert_eq!(r.code(), "UNAUTHORIZED");
            let m = message(&r);
            assert!(m.contains("authentication required"), "{method} {uri}: {m}");
            assert!(!m.contains("invalid"), "{method} {uri}: {m}");
        }
    }
    for (method, uri) in uris {
        let wrong = auth_support::basic(ROOT.0, "not root pw");
        let r = send_as(&reg, &wrong, method.clone(), uri).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(message(&r), "invalid username or password");
    }
}

/// With token auth the registry takes no Basic credentials, but empty ones are still no
/// credentials: the answer asks for authentication instead of naming the scheme. The
/// token server (which does take Basic) gives an anonymous token for them, and that
/// token pulls a public repository.
#[tokio::test]
async fn token_auth_takes_empty_basic_credentials_as_none() {
    const SERVICE: &str = "registry.test";
    const ISSUER: &str = "test-token-server";
    let auth = TokenAuth::from_pem(
        "http://127.0.0.1:1/token",
        SERVICE,
        ISSUER,
        auth_support::ED_PUBLIC.as_bytes(),
    )
    .unwrap();
    let reg =
        TestRegistry::with_config(RegistryConfig::default().with_authenticator(Arc::new(auth)))
            .await;
    let uri = "/v2/public/base/manifests/v1";
    let r = send_as(&reg, EMPTY_BASIC, Method::GET, uri).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("WWW-Authenticate").unwrap().starts_with("Bearer "));
    assert_eq!(message(&r), "authentication required");
    // Real Basic credentials are still the wrong scheme here.
    let r = send_as(&reg, &auth_support::basic("alice", "pw"), Method::GET, uri).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(message(&r), "unsupported authorization scheme");

    let users = Htpasswd::parse(&auth_support::htpasswd(&[("alice", "alice pw")])).unwrap();
    let policy = AccessPolicy::new().with_public("public/*".parse().unwrap());
    let server = token_server::TokenServer::new(
        ISSUER,
        SERVICE,
        auth_support::ED_PRIVATE.as_bytes(),
        users,
        policy,
    )
    .unwrap();
    let req = Request::get(format!(
        "/token?service={SERVICE}&scope=repository:public/base:pull"
    ))
    .header("Authorization", EMPTY_BASIC)
    .body(Body::empty())
    .unwrap();
    let res = Arc::new(server).router().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    // The repository is empty: a 404 (not a 401) shows the token was accepted for it.
    let r = send_as(&reg, &bearer, Method::GET, uri).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
}

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

/// An fs blob store on a disk that may be full: while `full` is set every write fails
/// with ENOSPC, as the fs store's would, and reads, aborts and deletes still work. While
/// `publish_fails` is set, only publishing an upload (`finish_upload`) fails so.
#[derive(Debug)]
struct DiskFull {
    inner: storage_fs::FsBlobStore,
    full: Arc<AtomicBool>,
    publish_fails: Arc<AtomicBool>,
}

impl DiskFull {
    fn write(&self) -> Result<(), StorageError> {
        if self.full.load(Ordering::SeqCst) {
            let enospc = std::io::Error::from_raw_os_error(28);
            Err(StorageError::backend("fs", enospc))
        } else {
            Ok(())
        }
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl BlobStore for DiskFull {
    async fn stat(&self, d: &Digest) -> Result<Option<BlobInfo>, StorageError> {
        self.inner.stat(d).await
    }
    async fn get(&self, d: &Digest, r: Option<GetRange>) -> Result<GetResult, StorageError> {
        self.inner.get(d, r).await
    }
    async fn delete(&self, d: &Digest) -> Result<(), StorageError> {
        self.inner.delete(d).await
    }
    fn list(&self) -> BoxStream<'static, Result<Digest, StorageError>> {
        self.inner.list()
    }
    async fn start_upload(&self, id: &str) -> Result<(), StorageError> {
        self.write()?;
        self.inner.start_upload(id).await
    }
    async fn write_upload(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64, StorageError> {
        self.write()?;
        self.inner.write_upload(id, offset, data).await
    }
    async fn read_upload(&self, id: &str) -> Result<ByteStream, StorageError> {
        self.inner.read_upload(id).await
    }
    async fn finish_upload(&self, id: &str, d: &Digest, n: u64) -> Result<(), StorageError> {
        self.write()?;
        if self.publish_fails.load(Ordering::SeqCst) {
            let enospc = std::io::Error::from_raw_os_error(28);
            return Err(StorageError::backend("fs", enospc));
        }
        self.inner.finish_upload(id, d, n).await
    }
    async fn put_bytes(
        &self,
        id: &str,
        d: &Digest,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        self.write()?;
        self.inner.put_bytes(id, d, data).await
    }
    async fn stage_blob<'a>(
        &'a self,
        blob: storage_traits::StageBlob<'a>,
    ) -> Result<Box<dyn storage_traits::StagedBlob + 'a>, StorageError> {
        self.write()?;
        self.inner.stage_blob(blob).await
    }
    async fn abort_upload(&self, id: &str) -> Result<(), StorageError> {
        self.inner.abort_upload(id).await
    }
    fn capabilities(&self) -> storage_traits::BlobCapabilities {
        self.inner.capabilities().with_presign(false)
    }
    fn signer(&self) -> Option<&dyn BlobSigner> {
        None
    }
    fn recovery(&self) -> Option<&dyn storage_traits::RecoveryLog> {
        self.inner.recovery()
    }
}

async fn readyz(registry: &Registry) -> (StatusCode, serde_json::Value) {
    let req = Request::get("/readyz").body(Body::empty()).unwrap();
    let res = registry.ops_router().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn readyz_fails_while_the_blob_store_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(true));
    let blobs = DiskFull {
        inner: storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap(),
        full: full.clone(),
        publish_fails: Arc::default(),
    };
    let metadata = metadata_sqlite::SqliteMetadataStore::open(dir.path().join("db")).unwrap();
    let registry = Registry::new(
        Arc::new(blobs),
        Arc::new(metadata),
        RegistryConfig::default(),
    );

    // Reads work, so the API still answers; pushes do not.
    let api = registry.router();
    let req = Request::get("/v2/").body(Body::empty()).unwrap();
    assert_eq!(
        api.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    let req = Request::post(format!(
        "/v2/app/blobs/uploads/?digest={}",
        Digest::sha256_of(b"x")
    ))
    .body(Body::from(&b"x"[..]))
    .unwrap();
    let res = api.clone().oneshot(req).await.unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());

    let (status, body) = readyz(&registry).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["metadata"], "ok");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.starts_with("blobs: cannot write"), "{reason}");
    assert!(reason.contains("No space left on device"), "{reason}");

    // Space again: ready at the next call (a failure is not remembered).
    full.store(false, Ordering::SeqCst);
    let (status, body) = readyz(&registry).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["blobs"], "ok");

    // Full again: a passed probe is trusted for WRITE_PROBE_TTL, no longer.
    full.store(true, Ordering::SeqCst);
    tokio::time::sleep(WRITE_PROBE_TTL + Duration::from_millis(200)).await;
    let (status, body) = readyz(&registry).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["reason"].as_str().unwrap().starts_with("blobs: "));
}

/// A commit links the blob before it publishes the bytes; when the publish then fails
/// (here the disk fills as the closing PUT publishes), the link goes too:
/// a HEAD must not answer 200 for bytes a GET cannot serve.
#[tokio::test]
async fn a_blob_whose_publish_fails_is_not_left_linked() {
    let dir = tempfile::tempdir().unwrap();
    let publish_fails = Arc::new(AtomicBool::new(false));
    let blobs = DiskFull {
        inner: storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap(),
        full: Arc::default(),
        publish_fails: publish_fails.clone(),
    };
    let metadata = metadata_sqlite::SqliteMetadataStore::open(dir.path().join("db")).unwrap();
    let api = Registry::new(
        Arc::new(blobs),
        Arc::new(metadata),
        RegistryConfig::default(),
    )
    .router();
    let send = |req: Request<Body>| {
        let api = api.clone();
        async move { api.oneshot(req).await.unwrap() }
    };
    let digest = Digest::sha256_of(b"x");

    let res = send(
        Request::post("/v2/app/blobs/uploads/")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let res = send(
        Request::patch(location.as_str())
            .header("content-type", "application/octet-stream")
            .body(Body::from(&b"x"[..]))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    publish_fails.store(true, Ordering::SeqCst);
    let sep = if location.contains('?') { '&' } else { '?' };
    let res = send(
        Request::put(format!("{location}{sep}digest={digest}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(res.status().is_server_error(), "{}", res.status());

    let head = |uri: String| send(Request::head(uri).body(Body::empty()).unwrap());
    let res = head(format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "a link without bytes");
}

/// The bytes of the SQLite database and its write-ahead log.
fn database_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    bytes.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
    bytes
}

/// The probe writes to both stores and leaves nothing behind: no upload session in
/// either store, no repository in the catalog (a registry with no repository yet gets
/// none from the probe).
#[tokio::test]
async fn readyz_write_probes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let blobs = storage_fs::FsBlobStore::open(dir.path().join("blobs")).unwrap();
    // As a trait object: its methods (upload sessions included) need no trait imports.
    let metadata: Arc<dyn MetadataStore> =
        Arc::new(metadata_sqlite::SqliteMetadataStore::open(&db).unwrap());
    let registry = Registry::new(Arc::new(blobs), metadata.clone(), RegistryConfig::default());
    let uploads = dir.path().join("blobs/uploads");
    let left_in_uploads = || {
        std::fs::read_dir(&uploads)
            .map(|d| d.count())
            .unwrap_or_default()
    };
    let all = Page::new(None, None);

    let (status, body) = readyz(&registry).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(metadata.list_repositories(&all).await.unwrap().is_empty());
    assert_eq!(left_in_uploads(), 0);

    let t = TestRegistry {
        router: registry.router(),
        registry: registry.clone(),
        dir,
    };
    t.push_blob("app", b"a layer").await;
    // A later registry on the same stores: its own probe runs now, not in WRITE_PROBE_TTL.
    let fresh = Registry::new(
        Arc::new(storage_fs::FsBlobStore::open(t.dir.path().join("blobs")).unwrap()),
        metadata.clone(),
        RegistryConfig::default(),
    );
    let before = database_bytes(&db);
    let (status, body) = readyz(&fresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // `!=`, not assert_ne!, which would print both databases.
    assert!(
        database_bytes(&db) != before,
        "the metadata probe wrote nothing"
    );
    let repos = metadata.list_repositories(&all).await.unwrap();
    assert_eq!(repos.len(), 1);
    assert_eq!(repos[0].as_str(), "app");
    assert_eq!(metadata.count_uploads().await.unwrap(), 0);
    assert_eq!(left_in_uploads(), 0);
}
