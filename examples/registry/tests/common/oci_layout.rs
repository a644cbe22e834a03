//! Builds OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/...`) on disk as
//! test input, without network or external tools: tar and gzip are written by hand (gzip
//! with stored deflate blocks, which every gzip reader accepts).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{random_bytes, sha256};

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A blob as bytes with its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(data: Vec<u8>) -> Blob {
        Blob {
            digest: sha256(&data),
            data,
        }
    }

    pub fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.data.len() })
    }
}

/// One platform image: manifest, config and layers.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub architecture: String,
}

impl Image {
    /// Every blob of the image except the manifest.
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }
}

/// A multi-platform image: the index and its images.
#[derive(Debug, Clone)]
pub struct MultiArch {
    pub index: Blob,
    pub images: Vec<Image>,
}

/// An OCI image layout being written.
#[derive(Debug)]
pub struct Layout {
    pub root: PathBuf,
    refs: Vec<serde_json::Value>,
}

impl Layout {
    pub fn create(root: &Path) -> Layout {
        std::fs::create_dir_all(root.join("blobs/sha256")).expect("create the layout");
        std::fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        let layout = Layout {
            root: root.to_owned(),
            refs: Vec::new(),
        };
        layout.write_index();
        layout
    }

    pub fn write_blob(&self, blob: &Blob) {
        let hex = blob.digest.trim_start_matches("sha256:");
        std::fs::write(self.root.join("blobs/sha256").join(hex), &blob.data).expect("write a blob");
    }

    /// An image of `layer_count` gzip layers (one file of `layer_size` random bytes each).
    pub fn add_image(
        &self,
        architecture: &str,
        seed: u64,
        layer_count: usize,
        layer_size: usize,
    ) -> Image {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for i in 0..layer_count {
            let content = random_bytes(seed.wrapping_add(i as u64 * 7919), layer_size);
            let tar = tar(&[(&format!("layer{i}/data-{seed:x}.bin"), &content)]);
            diff_ids.push(sha256(&tar));
            let layer = Blob::new(gzip_stored(&tar));
            self.write_blob(&layer);
            layers.push(layer);
        }
        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": architecture,
            "os": "linux",
            "config": { "Env": [format!("SEED={seed}")], "Cmd": ["/bin/true"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "oci_layout.rs" }]
        });
        let config = Blob::new(serde_json::to_vec(&config).expect("config JSON"));
        self.write_blob(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config.descriptor(CONFIG),
            "layers": layers.iter().map(|l| l.descriptor(LAYER_GZIP)).collect::<Vec<_>>(),
            "annotations": { "org.opencontainers.image.description": "test image" }
        });
        let manifest = Blob::new(serde_json::to_vec_pretty(&manifest).expect("manifest JSON"));
        self.write_blob(&manifest);
        Image {
            manifest,
            config,
            layers,
            architecture: architecture.to_string(),
        }
    }

    /// An index over one image per architecture.
    pub fn add_multi_arch(
        &self,
        architectures: &[&str],
        seed: u64,
        layer_size: usize,
    ) -> MultiArch {
        let images: Vec<Image> = architectures
            .iter()
            .enumerate()
            .map(|(i, arch)| {
                self.add_image(
                    arch,
                    seed.wrapping_add(1000 * (i as u64 + 1)),
                    2,
                    layer_size,
                )
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": images.iter().map(|img| {
                let mut d = img.manifest.descriptor(MANIFEST);
                d["platform"] = json!({ "architecture": img.architecture, "os": "linux" });
                d
            }).collect::<Vec<_>>()
        });
        let index = Blob::new(serde_json::to_vec(&index).expect("index JSON"));
        self.write_blob(&index);
        MultiArch { index, images }
    }

    /// Names `blob` (a manifest or index of `media_type`) `tag` in `index.json`.
    pub fn tag(&mut self, tag: &str, media_type: &str, blob: &Blob) {
        let mut d = blob.descriptor(media_type);
        d["annotations"] = json!({ REF_NAME: tag });
        self.refs.push(d);
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": self.refs });
        std::fs::write(
            self.root.join("index.json"),
            serde_json::to_vec(&index).expect("index.json"),
        )
        .expect("write index.json");
    }
}

/// The descriptor that `index.json` of the layout at `root` gives for `tag`.
pub fn find_ref(root: &Path, tag: &str) -> Option<serde_json::Value> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).ok()?).ok()?;
    index["manifests"]
        .as_array()?
        .iter()
        .find(|d| d["annotations"][REF_NAME].as_str() == Some(tag))
        .cloned()
}

/// The bytes of blob `digest` in the layout at `root`.
pub fn read_blob(root: &Path, digest: &str) -> Option<Vec<u8>> {
    let hex = digest.strip_prefix("sha256:")?;
    std::fs::read(root.join("blobs/sha256").join(hex)).ok()
}

/// A ustar archive of regular files.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
        assert!(name.len() < 100, "tar name too long");
        put(&mut h, 0, name.as_bytes());
        put(&mut h, 100, b"0000644\0");
        put(&mut h, 108, b"0000000\0");
        put(&mut h, 116, b"0000000\0");
        put(&mut h, 124, format!("{:011o}\0", data.len()).as_bytes());
        put(&mut h, 136, b"14707340400\0"); // 2024-01-01
        put(&mut h, 148, b"        ");
        h[156] = b'0';
        put(&mut h, 257, b"ustar\0");
        put(&mut h, 263, b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// gzip of `data` using stored (uncompressed) deflate blocks.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
