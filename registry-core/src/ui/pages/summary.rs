//! What a page shows of a manifest, read from its stored bytes: its kind, sizes,
//! artifact type, and the platforms of an index's children.

use oci_spec_types::{ManifestKind, ParsedManifest};
use serde::Deserialize;
use storage_traits::ManifestRecord;

use crate::error::RegistryError;
use crate::handlers::insights::kind_of;
use crate::ui::UiState;

#[derive(Debug, Clone)]
pub(in crate::ui) struct Summary {
    pub(in crate::ui) kind: &'static str,
    pub(in crate::ui) artifact_type: Option<String>,
    /// Bytes of the manifest itself.
    pub(in crate::ui) size: u64,
    /// The manifest, its config and layers (an image); for an index, the manifest and
    /// its children's manifests, to which [`with_children`] adds their configs and layers.
    pub(in crate::ui) total: u64,
    /// `os/architecture[/variant]` of each child of an index, in order.
    pub(in crate::ui) platforms: Vec<String>,
    pub(in crate::ui) parsed: Option<ParsedManifest>,
}

/// The `platform` of an index's children, which the parsed view does not keep.
#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<RawChild>,
}

#[derive(Deserialize)]
struct RawChild {
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

pub(in crate::ui) fn summarize(record: &ManifestRecord) -> Summary {
    let size = record.content.len() as u64;
    let parsed = ParsedManifest::parse(Some(&record.media_type), &record.content).ok();
    let Some(p) = parsed else {
        return Summary {
            kind: "other",
            artifact_type: None,
            size,
            total: size,
            platforms: Vec::new(),
            parsed: None,
        };
    };
    let artifact_type = p.effective_artifact_type();
    let (kind, total, platforms) = match p.kind {
        ManifestKind::Index => {
            let platforms = serde_json::from_slice::<RawIndex>(&record.content)
                .map(|raw| raw.manifests.iter().map(platform).collect())
                .unwrap_or_default();
            let total = p
                .manifests
                .iter()
                .map(|d| d.size)
                .fold(size, u64::saturating_add);
            let kind = match p.artifact_type.as_deref() {
                Some(t) => kind_of(Some(t)),
                None => "index",
            };
            (kind, total, platforms)
        }
        _ => {
            let total = p
                .config
                .iter()
                .chain(&p.layers)
                .map(|d| d.size)
                .fold(size, u64::saturating_add);
            (kind_of(artifact_type.as_deref()), total, Vec::new())
        }
    };
    Summary {
        kind,
        artifact_type,
        size,
        total,
        platforms,
        parsed: Some(p),
    }
}

fn platform(child: &RawChild) -> String {
    match &child.platform {
        Some(p) => match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        },
        None => String::new(),
    }
}

/// For an index, adds the configs and layers of its children that are in `repo` (one
/// level: an index of indexes counts the inner indexes' manifests only), so its total is
/// what pulling every platform would download. Blobs shared by children count once per
/// child.
pub(in crate::ui) async fn with_children(
    state: &UiState,
    repo: &oci_spec_types::RepositoryName,
    summary: &mut Summary,
) -> Result<(), RegistryError> {
    let Some(parsed) = &summary.parsed else {
        return Ok(());
    };
    if parsed.kind != ManifestKind::Index {
        return Ok(());
    }
    let mut extra: u64 = 0;
    for child in &parsed.manifests {
        let record = state
            .inner
            .metadata
            .get_manifest(
                repo,
                &oci_spec_types::Reference::Digest(child.digest.clone()),
            )
            .await?;
        if let Some(record) = record {
            let s = summarize(&record);
            // The child's own manifest bytes are already counted by the index.
            extra = extra.saturating_add(s.total.saturating_sub(s.size));
        }
    }
    summary.total = summary.total.saturating_add(extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use oci_spec_types::Digest;

    #[test]
    fn an_index_lists_its_platforms() {
        let d = Digest::sha256_of(b"a");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d.to_string(), "size": 10,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d.to_string(), "size": 20,
                 "platform": {"os": "linux", "architecture": "amd64"}}
            ]
        })
        .to_string();
        let record = ManifestRecord::new(
            Digest::sha256_of(index.as_bytes()),
            "application/vnd.oci.image.index.v1+json".into(),
            Bytes::from(index.clone()),
        );
        let s = summarize(&record);
        assert_eq!(s.kind, "index");
        assert_eq!(s.platforms, ["linux/arm64/v8", "linux/amd64"]);
        assert_eq!(s.total, index.len() as u64 + 30);
    }
}
