//! What the import tests push somewhere (CNCF distribution on a folder or on S3, or our
//! own registry before its database is lost) and then expect `registry serve` to serve
//! after the import: the same tags, manifest bytes (so the same digests) and blobs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::Api;
use super::oci_layout::{self, INDEX, Image, Layout, MANIFEST, MultiArch};
use super::seed;
use super::skopeo_flow::{assert_layout_blobs_intact, blob_set, require_skopeo, skopeo};

/// A single-platform image pushed as `team/app:v1` and `team/app:latest`, and a
/// two-platform index pushed as `multi:v1`.
#[derive(Debug)]
pub struct Sample {
    pub image: Image,
    pub multi: MultiArch,
    src: PathBuf,
}

/// Repositories the sample creates.
pub const REPOSITORIES: usize = 2;
/// The image, the index and its two children.
pub const MANIFESTS: usize = 4;
/// `team/app:v1`, `team/app:latest`, `multi:v1`.
pub const TAGS: usize = 3;

impl Sample {
    /// Builds the images in an OCI layout under `dir/src`: the image has `layers` layers
    /// of `layer_size` bytes, each platform of the index two layers of a quarter of that.
    pub fn create(dir: &Path, layers: usize, layer_size: usize) -> Sample {
        require_skopeo();
        let src = dir.join("src");
        let mut layout = Layout::create(&src);
        let s = seed();
        let image = layout.add_image("amd64", s, layers, layer_size);
        let multi = layout.add_multi_arch(&["amd64", "arm64"], s, layer_size / 4);
        layout.tag("single", MANIFEST, &image.manifest);
        layout.tag("multi", INDEX, &multi.index);
        Sample { image, multi, src }
    }

    /// Every distinct blob digest of the sample (manifests excluded).
    pub fn blob_digests(&self) -> BTreeSet<String> {
        let images = std::iter::once(&self.image).chain(&self.multi.images);
        images
            .flat_map(Image::blobs)
            .map(|b| b.digest.clone())
            .collect()
    }

    /// Pushes the sample with skopeo to the registry at `host` (`127.0.0.1:PORT`, plain
    /// HTTP).
    pub fn push(&self, host: &str) {
        for tag in ["v1", "latest"] {
            self.copy_to(host, "single", &format!("team/app:{tag}"));
        }
        self.copy_to(host, "multi", "multi:v1");
    }

    /// Pushes one image of the sample, `single` or `multi` (every platform), to
    /// `host` as `dest` (`REPO:TAG`).
    pub fn copy_to(&self, host: &str, which: &str, dest: &str) {
        let src = format!("oci:{}:{which}", self.src.display());
        let dest = format!("docker://{host}/{dest}");
        let mut args = vec!["copy", "--dest-tls-verify=false", "--preserve-digests"];
        if which == "multi" {
            args.push("--all");
        }
        args.extend([src.as_str(), dest.as_str()]);
        skopeo(&args);
    }

    /// Asserts the registry at `host` (`base` is its `http://` URL) serves the whole
    /// sample: tags, manifests byte for byte, every blob; and that skopeo pulls both
    /// images back into layouts under `back` with the same digests and intact bytes.
    pub fn assert_served(&self, host: &str, base: &str, back: &Path) {
        let ours = |path: &str| format!("docker://{host}/{path}");
        std::fs::create_dir_all(back).expect("create the folder for pulled layouts");
        for tag in ["v1", "latest"] {
            let raw = skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &ours(&format!("team/app:{tag}")),
            ]);
            assert!(
                raw == self.image.manifest.data,
                "team/app:{tag}: same manifest bytes, so the same digest"
            );
        }
        let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &ours("multi:v1")]);
        assert!(raw == self.multi.index.data, "multi:v1: same index bytes");
        let tags: serde_json::Value = serde_json::from_slice(&skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &ours("team/app"),
        ]))
        .unwrap_or_default();
        assert_eq!(tags["Tags"], serde_json::json!(["latest", "v1"]));

        let single = back.join("single");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            &ours("team/app:latest"),
            &format!("oci:{}:single", single.display()),
        ]);
        let d = oci_layout::find_ref(&single, "single").expect("pulled ref in index.json");
        assert_eq!(
            d["digest"].as_str(),
            Some(self.image.manifest.digest.as_str())
        );
        let mut want: BTreeSet<String> = self
            .image
            .blobs()
            .iter()
            .map(|b| b.digest.clone())
            .collect();
        want.insert(self.image.manifest.digest.clone());
        assert_eq!(blob_set(&single), want);
        assert_layout_blobs_intact(&single);

        let multi = back.join("multi");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--all",
            "--preserve-digests",
            &ours("multi:v1"),
            &format!("oci:{}:multi", multi.display()),
        ]);
        let d = oci_layout::find_ref(&multi, "multi").expect("pulled index in index.json");
        assert_eq!(d["digest"].as_str(), Some(self.multi.index.digest.as_str()));
        let mut want = BTreeSet::from([self.multi.index.digest.clone()]);
        for img in &self.multi.images {
            want.insert(img.manifest.digest.clone());
            want.extend(img.blobs().iter().map(|b| b.digest.clone()));
        }
        assert_eq!(blob_set(&multi), want);
        assert_layout_blobs_intact(&multi);

        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        rt.block_on(async {
            let api = Api::new(base);
            api.assert_manifest("team/app", "v1", MANIFEST, &self.image.manifest.data)
                .await;
            for blob in self.image.blobs() {
                api.assert_blob("team/app", &blob.data).await;
            }
            api.assert_manifest("multi", "v1", INDEX, &self.multi.index.data)
                .await;
            for img in &self.multi.images {
                api.assert_manifest("multi", &img.manifest.digest, MANIFEST, &img.manifest.data)
                    .await;
                for blob in img.blobs() {
                    api.assert_blob("multi", &blob.data).await;
                }
            }
            let (status, _, body) = api.get("/v2/team/app/tags/list").await;
            assert_eq!(status, 200);
            let tags: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            assert_eq!(tags["tags"], serde_json::json!(["latest", "v1"]));
        });
    }
}
