//! What the benchmark pushes: random blobs (distinct per blob and per run) and a small image
//! (one config, one layer) whose manifests differ only in an annotation.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Bytes with their `sha256:<hex>` digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub data: Bytes,
    pub digest: String,
}

impl Blob {
    pub fn new(data: Bytes) -> Blob {
        let digest = sha256_digest(&data);
        Blob { data, digest }
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// splitmix64: fast, and good enough that no two blobs share content or compress.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = vec![0u8; len];
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = splitmix64(&mut state).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
    out
}

/// A seed that differs per run (time and pid), mixed with a per-blob index.
pub fn run_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut s = nanos ^ (u64::from(std::process::id()) << 32);
    splitmix64(&mut s)
}

/// `count` distinct random blobs of `len` bytes, generated on all cores.
pub fn random_blobs(count: usize, len: usize) -> Vec<Blob> {
    let base = run_seed();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(count.max(1));
    let mut blobs: Vec<Option<Blob>> = vec![None; count];
    std::thread::scope(|scope| {
        for (t, slots) in blobs.chunks_mut(count.div_ceil(threads).max(1)).enumerate() {
            let first = t * count.div_ceil(threads).max(1);
            scope.spawn(move || {
                for (k, slot) in slots.iter_mut().enumerate() {
                    let seed = base ^ ((first + k) as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                    *slot = Some(Blob::new(Bytes::from(random_bytes(seed, len))));
                }
            });
        }
    });
    blobs.into_iter().flatten().collect()
}

/// The shared config and layer of every benchmark manifest.
#[derive(Debug, Clone)]
pub struct SmallImage {
    pub config: Blob,
    pub layer: Blob,
}

impl SmallImage {
    /// Deterministic, so every run and every repository shares the same two blobs.
    pub fn new() -> SmallImage {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "comment": "registry-bench small image",
        });
        SmallImage {
            config: Blob::new(Bytes::from(config.to_string())),
            layer: Blob::new(Bytes::from(random_bytes(0x5EED, 2048))),
        }
    }

    /// An OCI image manifest referencing the shared blobs; `note` makes it distinct.
    pub fn manifest(&self, note: &str) -> Bytes {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": self.config.digest,
                "size": self.config.data.len(),
            },
            "layers": [{
                "mediaType": OCI_LAYER,
                "digest": self.layer.digest,
                "size": self.layer.data.len(),
            }],
            "annotations": {"org.example.bench": note},
        });
        Bytes::from(m.to_string())
    }
}

impl Default for SmallImage {
    fn default() -> Self {
        SmallImage::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_deterministic_per_seed_and_any_length() {
        assert_eq!(random_bytes(1, 13), random_bytes(1, 13));
        assert_ne!(random_bytes(1, 64), random_bytes(2, 64));
        assert_eq!(random_bytes(3, 13).len(), 13);
        assert_eq!(&random_bytes(3, 16)[..13], &random_bytes(3, 13)[..]);
    }

    #[test]
    fn blobs_are_distinct() {
        let blobs = random_blobs(5, 1000);
        assert_eq!(blobs.len(), 5);
        let mut digests: Vec<_> = blobs.iter().map(|b| b.digest.clone()).collect();
        digests.sort();
        digests.dedup();
        assert_eq!(digests.len(), 5);
        assert!(blobs.iter().all(|b| b.data.len() == 1000));
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn manifests_differ_by_note_and_reference_the_blobs() {
        let img = SmallImage::new();
        let a = img.manifest("a");
        assert_ne!(a, img.manifest("b"));
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["config"]["digest"], img.config.digest.as_str());
        assert_eq!(v["layers"][0]["size"], 2048);
    }
}
