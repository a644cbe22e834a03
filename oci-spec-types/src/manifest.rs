//! A read-only view of image manifests, image indexes and their Docker equivalents.
//!
//! The registry stores and serves the exact bytes a client sent (the digest is of those
//! bytes, and unknown fields must survive), so this module never re-serialises: it only
//! extracts what the registry needs to know (which blobs and manifests are referenced,
//! the `subject`, the artifact type) and checks the document is well formed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::media_type::{self, essence};

/// Largest manifest accepted: 4 MiB, the limit the spec recommends registries enforce.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// A content descriptor. Fields the registry does not need are kept in `extra` only when
/// the descriptor is built by the registry itself (referrers responses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the content it describes.
    pub media_type: String,
    /// The content's digest.
    pub digest: Digest,
    /// The content's size in bytes.
    pub size: u64,
    /// The artifact's type (`artifactType`), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Other places the content may be fetched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Annotations, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Which shape a manifest has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestKind {
    /// OCI image manifest or Docker schema 2 manifest: a config and layers.
    Image,
    /// OCI image index or Docker manifest list: child manifests.
    Index,
}

/// Why manifest bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Larger than the size limit.
    #[error("manifest is larger than {MAX_MANIFEST_SIZE} bytes")]
    TooLarge,
    /// JSON text is UTF-8 (RFC 8259, section 8.1). serde_json checks that only in the
    /// strings it decodes; the bytes of a field nobody reads are skipped unchecked.
    #[error("manifest is not valid UTF-8 (byte {at})")]
    NotUtf8 {
        /// The offset of the first byte that is not UTF-8.
        at: usize,
    },
    /// Not JSON, or not the JSON a manifest is.
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    /// A media type the registry does not accept as a manifest.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// The body's `mediaType` differs from the request's `Content-Type`.
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch {
        /// The body's `mediaType`.
        body: String,
        /// The `Content-Type` header.
        header: String,
    },
    /// `schemaVersion` is not 2.
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    /// An image manifest without `config`.
    #[error("image manifest has no config descriptor")]
    MissingConfig,
    /// An index without `manifests`.
    #[error("index has no manifests array")]
    MissingManifests,
}

/// What the registry learns from a manifest's bytes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParsedManifest {
    /// Image or index.
    pub kind: ManifestKind,
    /// The media type the manifest is served with.
    pub media_type: String,
    /// The config descriptor (images).
    pub config: Option<Descriptor>,
    /// The layer descriptors (images).
    pub layers: Vec<Descriptor>,
    /// The child manifests (indexes).
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (`subject`), for the referrers API.
    pub subject: Option<Descriptor>,
    /// The `artifactType` field as written in the manifest.
    pub artifact_type: Option<String>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    /// Parses `bytes` sent with `content_type` (the `Content-Type` header, if any).
    pub fn parse(
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<ParsedManifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge);
        }
        // Checked as a whole, not field by field: an unknown field (whose contents serde
        // skips) is stored and served as sent, so it must be JSON too.
        let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::NotUtf8 {
            at: e.valid_up_to(),
        })?;
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| ManifestError::Json(e.to_string()))?;
        let header = content_type.map(essence).filter(|h| !h.is_empty());
        let body = raw.media_type.as_deref();
        if let (Some(h), Some(b)) = (header, body)
            && h != b
            && is_manifest_type(h)
        {
            return Err(ManifestError::MediaTypeMismatch {
                body: b.to_string(),
                header: h.to_string(),
            });
        }
        // The body's mediaType wins; otherwise the header; otherwise infer from the shape
        // (OCI allows mediaType to be absent).
        let declared = body.or(header.filter(|h| is_manifest_type(h)));
        let kind = match declared {
            Some(media_type::OCI_MANIFEST) | Some(media_type::DOCKER_MANIFEST) => {
                ManifestKind::Image
            }
            Some(media_type::OCI_INDEX) | Some(media_type::DOCKER_MANIFEST_LIST) => {
                ManifestKind::Index
            }
            Some(other) => return Err(ManifestError::UnsupportedMediaType(other.to_string())),
            None if raw.manifests.is_some() => ManifestKind::Index,
            None if raw.config.is_some() => ManifestKind::Image,
            None => return Err(ManifestError::UnsupportedMediaType(String::new())),
        };
        if raw.schema_version != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let media_type = declared.map(str::to_string).unwrap_or_else(|| match kind {
            ManifestKind::Image => media_type::OCI_MANIFEST.to_string(),
            ManifestKind::Index => media_type::OCI_INDEX.to_string(),
        });
        match kind {
            ManifestKind::Image if raw.config.is_none() => {
                return Err(ManifestError::MissingConfig);
            }
            ManifestKind::Index if raw.manifests.is_none() => {
                return Err(ManifestError::MissingManifests);
            }
            _ => {}
        }
        Ok(ParsedManifest {
            kind,
            media_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations.unwrap_or_default(),
        })
    }

    /// Blobs the registry must hold before it accepts this manifest: the config and every
    /// distributable layer.
    pub fn required_blobs(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self
            .config
            .iter()
            .chain(
                self.layers
                    .iter()
                    .filter(|l| !media_type::is_non_distributable(&l.media_type)),
            )
            .map(|d| d.digest.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Child manifests (of an index) the registry must hold.
    pub fn required_manifests(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = self.manifests.iter().map(|d| d.digest.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The artifact type the referrers API reports: `artifactType` if set, else the
    /// config's media type for image manifests (the spec's rule).
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }
}

fn is_manifest_type(t: &str) -> bool {
    matches!(
        t,
        media_type::OCI_MANIFEST
            | media_type::OCI_INDEX
            | media_type::DOCKER_MANIFEST
            | media_type::DOCKER_MANIFEST_LIST
            | media_type::DOCKER_SCHEMA1
            | media_type::DOCKER_SCHEMA1_SIGNED
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]{extra}}}"#,
            media_type::OCI_MANIFEST,
            d(1),
            d(2)
        )
    }

    #[test]
    fn image_manifest() {
        let m = ParsedManifest::parse(None, image(r#","unknown":{"x":1}"#).as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().len(), 2);
        assert_eq!(
            m.effective_artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x-sbom","subject":{{"mediaType":"{}","digest":"{}","size":9}}"#,
            media_type::OCI_MANIFEST,
            d(9)
        );
        let m = ParsedManifest::parse(Some(media_type::OCI_MANIFEST), image(&extra).as_bytes())
            .unwrap();
        assert_eq!(m.subject.as_ref().unwrap().digest.to_string(), d(9));
        assert_eq!(
            m.effective_artifact_type().as_deref(),
            Some("application/x-sbom")
        );
    }

    #[test]
    fn index_without_media_type_is_inferred() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":5}}]}}"#,
            media_type::OCI_MANIFEST,
            d(3)
        );
        let m = ParsedManifest::parse(Some(media_type::OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.media_type, media_type::OCI_INDEX);
        assert_eq!(m.required_manifests().len(), 1);
    }

    #[test]
    fn rejects_bad_manifests() {
        assert!(matches!(
            ParsedManifest::parse(None, b"{"),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            ParsedManifest::parse(Some(media_type::OCI_INDEX), image("").as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let bad_digest = image("").replace(&d(1), "sha256:nothex");
        assert!(ParsedManifest::parse(None, bad_digest.as_bytes()).is_err());
        let v1 = image("").replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert_eq!(
            ParsedManifest::parse(None, v1.as_bytes()),
            Err(ManifestError::SchemaVersion)
        );
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert_eq!(
            ParsedManifest::parse(None, &big),
            Err(ManifestError::TooLarge)
        );
    }

    #[test]
    fn invalid_utf8_anywhere_is_refused() {
        for good in [r#","unknown":"caf\u00e9""#, r#","unknown":"café ☕""#] {
            assert!(ParsedManifest::parse(None, image(good).as_bytes()).is_ok());
        }
        // In a field the parser skips, in one it reads, and a lone continuation byte.
        for (field, bad) in [
            ("unknown", &b"\xff\xfe"[..]),
            ("artifactType", &b"\xc3("[..]),
            ("unknown", &b"\x80"[..]),
        ] {
            let mut bytes = image(&format!(r#","{field}":"@""#)).into_bytes();
            let at = bytes.iter().position(|&b| b == b'@').unwrap();
            bytes.splice(at..=at, bad.iter().copied());
            assert_eq!(
                ParsedManifest::parse(None, &bytes),
                Err(ManifestError::NotUtf8 { at }),
                "{field}: {bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), ct in proptest::option::of("\\PC{0,40}")) {
            let _ = ParsedManifest::parse(ct.as_deref(), &bytes);
        }

        #[test]
        fn parse_never_panics_on_mutated_manifests(pos in 0usize..400, byte in any::<u8>()) {
            let mut b = image("").into_bytes();
            let i = pos % b.len();
            b[i] = byte;
            let _ = ParsedManifest::parse(None, &b);
        }
    }
}
