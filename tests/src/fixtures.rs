//! Test content: blobs, image manifests, indexes and artifacts, each unique per
//! run so no check can pass on content left behind by an earlier run.

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub(crate) const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header a modern client sends for manifests.
pub(crate) fn accept_manifests() -> String {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ")
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A digest of content that no registry holds.
pub(crate) fn unknown_digest() -> String {
    sha256(uuid::Uuid::new_v4().as_bytes())
}

/// Some bytes that differ on every call.
pub(crate) fn unique_bytes(label: &str, len: usize) -> Bytes {
    let seed = format!("{label} {} ", uuid::Uuid::new_v4());
    // xorshift keeps large blobs incompressible without a rand dependency.
    let mut state = u64::from_le_bytes(
        Sha256::digest(seed.as_bytes())[..8]
            .try_into()
            .unwrap_or([7; 8]),
    ) | 1;
    let mut out = Vec::with_capacity(len);
    out.extend(seed.bytes().take(len));
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend(state.to_le_bytes().iter().take(len - out.len()));
    }
    Bytes::from(out)
}

/// Content-addressed bytes.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub(crate) bytes: Bytes,
    pub(crate) digest: String,
}

impl Blob {
    pub(crate) fn new(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let digest = sha256(&bytes);
        Blob { bytes, digest }
    }

    pub(crate) fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// A manifest exactly as it is pushed: the bytes, their digest, their media type.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub(crate) bytes: Bytes,
    pub(crate) digest: String,
    pub(crate) media_type: &'static str,
}

impl Manifest {
    pub(crate) fn from_bytes(media_type: &'static str, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Manifest {
            digest: sha256(&bytes),
            bytes,
            media_type,
        }
    }

    pub(crate) fn from_json(media_type: &'static str, value: &Value) -> Self {
        Manifest::from_bytes(media_type, value.to_string())
    }

    pub(crate) fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// An image: its blobs and its manifest.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) blobs: Vec<Blob>,
    pub(crate) manifest: Manifest,
}

impl Image {
    /// An OCI image manifest with a config and one layer of `layer_len` bytes.
    pub(crate) fn oci(label: &str, layer_len: usize) -> Self {
        let config = config_blob(label, "amd64");
        let layer = Blob::new(unique_bytes(label, layer_len));
        let manifest = Manifest::from_json(
            OCI_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(OCI_CONFIG),
                "layers": [layer.descriptor(OCI_LAYER)],
            }),
        );
        Image {
            blobs: vec![config, layer],
            manifest,
        }
    }

    /// A Docker image manifest, schema 2.
    pub(crate) fn docker(label: &str) -> Self {
        let config = config_blob(label, "amd64");
        let layer = Blob::new(unique_bytes(label, 512));
        let manifest = Manifest::from_json(
            DOCKER_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": config.descriptor(DOCKER_CONFIG),
                "layers": [layer.descriptor(DOCKER_LAYER)],
            }),
        );
        Image {
            blobs: vec![config, layer],
            manifest,
        }
    }

    /// An artifact manifest (empty config) whose `subject` is `subject`.
    pub(crate) fn artifact(subject: &Manifest, artifact_type: &str, annotation: &str) -> Self {
        let empty = Blob::new(Bytes::from_static(b"{}"));
        let layer = Blob::new(unique_bytes(artifact_type, 128));
        let manifest = Manifest::from_json(
            OCI_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": empty.descriptor(OCI_EMPTY),
                "layers": [layer.descriptor("application/octet-stream")],
                "subject": subject.descriptor(),
                "annotations": { "org.example.conformance": annotation },
            }),
        );
        Image {
            blobs: vec![empty, layer],
            manifest,
        }
    }
}

/// An index (`media_type` is the OCI index or the Docker manifest list) of
/// `children`, each given a platform.
pub(crate) fn index(media_type: &'static str, children: &[(&Manifest, &str)]) -> Manifest {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(m, arch)| {
            let mut d = m.descriptor();
            d["platform"] = json!({ "architecture": arch, "os": "linux" });
            d
        })
        .collect();
    Manifest::from_json(
        media_type,
        &json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests }),
    )
}

fn config_blob(label: &str, arch: &str) -> Blob {
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [] },
        "config": { "Labels": { "org.example.conformance": label, "run": uuid::Uuid::new_v4().to_string() } },
    });
    Blob::new(config.to_string())
}
