//! Where things live in the bucket, under the store's prefix:
//!
//! ```text
//! <prefix>/blobs/sha256/<first 2 hex>/<hex>      committed blobs (as storage-fs lays them out):
//! <prefix>/blobs/sha512/<first 2 hex>/<hex>      the bytes, or an empty pointer to a data key
//! <prefix>/data/<upload id>.<nonce>              a blob's bytes, written by its upload session
//! <prefix>/_uploads/<upload id>/state.json       an upload session's state
//! <prefix>/_uploads/<upload id>/seg-<uuid>       the session's small writes, in segments
//! <prefix>/recovery/<record path>                 recovery records
//! ```
//!
//! Blob keys never share the `_uploads/` or `data/` prefixes, so listing `blobs/` finds only
//! complete blobs, listing `_uploads/<id>/` finds every segment a session wrote, and listing
//! the multipart uploads under `data/<id>.` finds every one a session started (ids have no
//! `.`, so that prefix is one session's alone).

use oci_spec_types::Digest;
use storage_traits::StorageError;
use storage_traits::blob::valid_upload_id;

use crate::error::config;

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Empty, or the prefix with a trailing `/`.
    prefix: String,
}

impl Layout {
    /// `prefix` is a `/`-separated path of `[A-Za-z0-9._-]` segments (no `.` or `..`);
    /// leading and trailing slashes are ignored. The restriction keeps every key safe to
    /// put in a URL path and in an `x-amz-copy-source` header without escaping.
    pub(crate) fn new(prefix: &str) -> Result<Self, StorageError> {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(Layout {
                prefix: String::new(),
            });
        }
        for segment in trimmed.split('/') {
            let ok = !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(config(format!(
                    "prefix {prefix:?}: each /-separated part must be non-empty [A-Za-z0-9._-], not . or .."
                )));
            }
        }
        Ok(Layout {
            prefix: format!("{trimmed}/"),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn blobs_prefix(&self) -> String {
        format!("{}blobs/", self.prefix)
    }

    pub(crate) fn blob_key(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        // A validated digest has at least 64 hex characters; `get` just avoids a panic path.
        let fan_out = hex.get(..2).unwrap_or(hex);
        format!(
            "{}blobs/{}/{fan_out}/{hex}",
            self.prefix,
            digest.algorithm().as_str()
        )
    }

    /// The digest a key under [`Layout::blobs_prefix`] names, if it is one this store wrote.
    pub(crate) fn parse_blob_key(&self, key: &str) -> Option<Digest> {
        let rest = key.strip_prefix(&self.blobs_prefix())?;
        let mut parts = rest.split('/');
        let (algorithm, fan_out, hex) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || fan_out.len() != 2 || !hex.starts_with(fan_out) {
            return None;
        }
        format!("{algorithm}:{hex}").parse().ok()
    }

    /// Where the recovery records live (see [`storage_traits::recovery`]).
    pub(crate) fn recovery_prefix(&self) -> String {
        format!("{}recovery/", self.prefix)
    }

    pub(crate) fn data_prefix(&self) -> String {
        format!("{}data/", self.prefix)
    }

    /// The key a pointer names (`data/<id>.<nonce>`, relative to the prefix), if it is one
    /// this store makes: a corrupt or foreign pointer cannot send reads elsewhere.
    pub(crate) fn data_key_of_pointer(&self, relative: &str) -> Option<String> {
        let rest = relative.strip_prefix("data/")?;
        let (id, nonce) = rest.split_once('.')?;
        (valid_upload_id(id) && valid_nonce(nonce)).then(|| format!("{}{relative}", self.prefix))
    }

    /// A data key relative to the prefix, as pointers record it.
    pub(crate) fn relative<'k>(&self, key: &'k str) -> &'k str {
        key.strip_prefix(&self.prefix).unwrap_or(key)
    }

    pub(crate) fn uploads_prefix(&self) -> String {
        format!("{}_uploads/", self.prefix)
    }

    /// `<prefix>/_uploads/<id>/`; the id is checked first, so it cannot escape it.
    pub(crate) fn upload_dir(&self, id: &str) -> Result<String, StorageError> {
        if !valid_upload_id(id) {
            return Err(StorageError::InvalidUploadId(id.to_string()));
        }
        Ok(format!("{}{id}/", self.uploads_prefix()))
    }
}

/// The keys of one upload session.
#[derive(Debug, Clone)]
pub(crate) struct SessionKeys {
    pub(crate) dir: String,
    /// `<prefix>data/<id>.`: the session's data keys, and its multipart uploads, start so.
    pub(crate) data_prefix: String,
}

impl SessionKeys {
    pub(crate) fn new(layout: &Layout, id: &str) -> Result<Self, StorageError> {
        Ok(SessionKeys {
            dir: layout.upload_dir(id)?,
            data_prefix: format!("{}{id}.", layout.data_prefix()),
        })
    }

    /// Where the session's multipart upload puts the blob's bytes: `nonce` is new for each
    /// session, so a session restarted under the same id never names an older blob's data.
    pub(crate) fn data(&self, nonce: &str) -> String {
        format!("{}{nonce}", self.data_prefix)
    }

    pub(crate) fn state(&self) -> String {
        format!("{}state.json", self.dir)
    }

    pub(crate) fn segment(&self, name: &str) -> String {
        format!("{}{name}", self.dir)
    }
}

/// A fresh segment name; unique, so a write never overwrites an object another (perhaps
/// stale) write of the same session may still be sending.
pub(crate) fn new_segment_name() -> String {
    format!("seg-{}", uuid::Uuid::new_v4().simple())
}

/// A fresh data key nonce.
pub(crate) fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// True for nonces [`new_nonce`] makes (checked when a state or pointer is decoded).
pub(crate) fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

/// True for names [`new_segment_name`] makes (checked when a state object is decoded, so a
/// corrupt state cannot name keys outside its session).
pub(crate) fn valid_segment_name(name: &str) -> bool {
    name.strip_prefix("seg-").is_some_and(|rest| {
        !rest.is_empty() && rest.len() <= 64 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let layout = Layout::new("/a/b/").unwrap();
        let d = Digest::sha256_of(b"");
        let key = layout.blob_key(&d);
        assert_eq!(
            key,
            "a/b/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(layout.parse_blob_key(&key), Some(d));
        let d = Digest::sha512_of(b"");
        assert_eq!(layout.parse_blob_key(&layout.blob_key(&d)), Some(d));
        assert_eq!(layout.parse_blob_key("a/b/blobs/sha256/zz/e3b0"), None);
        assert_eq!(layout.parse_blob_key("a/b/blobs/sha256/README"), None);
        assert_eq!(layout.upload_dir("u-1").unwrap(), "a/b/_uploads/u-1/");
        assert!(matches!(
            layout.upload_dir("../x"),
            Err(StorageError::InvalidUploadId(_))
        ));
        assert_eq!(Layout::new("").unwrap().blobs_prefix(), "blobs/");
        let keys = SessionKeys::new(&layout, "u-1").unwrap();
        let nonce = new_nonce();
        let data = keys.data(&nonce);
        assert_eq!(data, format!("a/b/data/u-1.{nonce}"));
        assert_eq!(
            layout.data_key_of_pointer(layout.relative(&data)),
            Some(data.clone())
        );
        for bad in [
            "data/u-1.x",
            "data/../u.0",
            "blobs/x",
            "data/u/1.abc",
            "data/u-1",
        ] {
            assert_eq!(layout.data_key_of_pointer(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_prefixes() {
        for bad in ["a//b", "a/../b", ".", "a b", "a?b", "a%2f"] {
            assert!(Layout::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_names() {
        assert!(valid_segment_name(&new_segment_name()));
        for bad in ["seg-", "state.json", "seg-../x", "seg-a/b"] {
            assert!(!valid_segment_name(bad), "{bad}");
        }
    }
}
