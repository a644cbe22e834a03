//! Recovery records: the little a metadata database knows that content-addressed blobs
//! cannot tell, kept next to the blobs so the database can be rebuilt from the blob store
//! alone.
//!
//! Manifest bytes are blobs (the registry copies every pushed manifest into the blob
//! store), but which repository holds a manifest and which tags point at it are names, not
//! content. A blob store that offers [`RecoveryLog`] (through
//! [`BlobStore::recovery`](crate::BlobStore::recovery)) keeps small named records for
//! them, laid out as CNCF distribution lays out its repository tree, so the import engine
//! that reads distribution's storage reads ours too:
//!
//! ```text
//! repositories/<name>/_manifests/revisions/<algorithm>/<hex>/link   a manifest of <name>
//! repositories/<name>/_manifests/tags/<tag>/current/link            what <tag> points at
//! ```
//!
//! Each `link` holds a digest string (`sha256:<hex>`), as distribution's link files do;
//! [`revision_record`], [`tag_record`] and [`parse_link`] build and read them.
//!
//! # What the records guarantee
//! They trail the metadata database: the registry writes them after its database commit
//! (in the background, see `registry-core`'s `Registry::flush_recovery`), and neither a
//! failed write nor a crash fails the request that was already committed. So a rebuild
//! recovers what the records say, which is the database's state except for:
//! - the last changes before a crash: records still queued in the registry, or not yet
//!   durable in the store. A lost write loses a manifest or tag; a lost removal brings a
//!   deleted tag back, or a deleted manifest if its bytes were not collected yet;
//! - races on one tag: a request queues its record right after its commit, not
//!   atomically with it, so requests changing the same tag at the same moment (in one
//!   process or on several replicas) may leave the record naming the tag's previous
//!   target, until the tag's next change.
//!
//! Records never name a manifest that was not committed.

use async_trait::async_trait;
use bytes::Bytes;
use oci_spec_types::{Digest, RepositoryName, Tag};

use crate::StorageError;

/// Small named records kept next to the blobs so the metadata database can be rebuilt
/// from the blob store alone (see the [module docs](self) for their layout and what they
/// guarantee).
///
/// Paths are `/`-separated and relative: non-empty segments of `[A-Za-z0-9._-]`, never
/// `.` or `..`, no leading or trailing `/`, at most [`MAX_PATH_LEN`] bytes. That admits
/// every repository name, tag, algorithm and hex digest, and keeps every path safe as a
/// file name and an object key. Other paths are refused with
/// [`StorageError::InvalidRecordPath`].
///
/// # Behavior
/// - `put_record` creates or replaces the record atomically: a reader sees the old content
///   or the new, never a mix. It need not be durable when it returns; each store documents
///   how long a crash may take it back.
/// - `get_record` of a missing record is `Ok(None)`.
/// - `list_records(dir)` returns the names directly inside `dir` (records and folders
///   holding records alike), sorted, without duplicates; `""` is the top. A `dir` with
///   nothing below it lists empty. A folder whose last record was deleted is not listed.
/// - `delete_record` of a missing record succeeds.
/// - `records_under(dir)` returns every record whose path is `dir` or starts with `dir/`
///   (`""`: every record), with its content, sorted by path (byte order, so `a/b-c`
///   before `a/b/c`). A missing `dir` gives an empty list; a record's path gives just
///   that record.
/// - A path is never a record and a folder at once (`a` and `a/b`): the record layout
///   (see the [module docs](self)) never needs it, and a store kept as a file tree
///   cannot hold it. A store need not refuse such a pair, but what its listings then show
///   is its own.
#[async_trait]
pub trait RecoveryLog: Send + Sync {
    /// Writes or replaces a record. Need not be durable when it returns: see the store's
    /// docs for the window a crash can lose.
    async fn put_record(&self, path: &str, content: Bytes) -> Result<(), StorageError>;

    /// A record's content, `None` if there is none.
    async fn get_record(&self, path: &str) -> Result<Option<Bytes>, StorageError>;

    /// Names directly inside `dir` (sorted); empty when `dir` does not exist.
    async fn list_records(&self, dir: &str) -> Result<Vec<String>, StorageError>;

    /// Removes a record; a missing one is fine.
    async fn delete_record(&self, path: &str) -> Result<(), StorageError>;

    /// Every record at or below `dir` (`""` = all), with its content, sorted by path.
    /// One call instead of a walk of `list_records` + `get_record`: a store whose
    /// lookups each cost a scan (the fs journal) answers it in one pass.
    ///
    /// The default walks the tree: a `get_record` per name, and a `list_records` per name
    /// that is no record (a folder, since a path is never both).
    async fn records_under(&self, dir: &str) -> Result<Vec<(String, Bytes)>, StorageError> {
        validate_record_dir(dir)?;
        let mut out = Vec::new();
        if !dir.is_empty()
            && let Some(content) = self.get_record(dir).await?
        {
            return Ok(vec![(dir.to_string(), content)]);
        }
        // Depth first, with an explicit stack (an async fn cannot recurse unboxed).
        let mut folders = vec![dir.to_string()];
        while let Some(folder) = folders.pop() {
            for name in self.list_records(&folder).await? {
                let path = if folder.is_empty() {
                    name
                } else {
                    format!("{folder}/{name}")
                };
                match self.get_record(&path).await? {
                    Some(content) => out.push((path, content)),
                    None => folders.push(path),
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The longest record path accepted (S3 keys are at most 1024 bytes, and a store adds its
/// own prefix).
pub const MAX_PATH_LEN: usize = 768;

/// Checks a record path (see [`RecoveryLog`] for the rules).
pub fn validate_record_path(path: &str) -> Result<(), StorageError> {
    let invalid = |reason: &'static str| StorageError::InvalidRecordPath {
        path: path.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("it is empty"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(invalid("it is longer than 768 bytes"));
    }
    if path.starts_with('/') {
        return Err(invalid("it starts with /"));
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err(invalid("it has an empty segment"));
        }
        if segment == "." || segment == ".." {
            return Err(invalid("it has a . or .. segment"));
        }
        if !segment.bytes().all(valid_byte) {
            return Err(invalid("a segment has a character outside [A-Za-z0-9._-]"));
        }
    }
    Ok(())
}

/// Checks a folder to list: `""` (the top) or a valid record path.
pub fn validate_record_dir(dir: &str) -> Result<(), StorageError> {
    if dir.is_empty() {
        Ok(())
    } else {
        validate_record_path(dir)
    }
}

/// True for a name that can be one segment of a record path. Stores use it to leave
/// anything else (their own staging files) out of listings.
pub fn valid_record_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name.bytes().all(valid_byte)
}

fn valid_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// The top folder of the records, as in distribution's layout.
pub const REPOSITORIES: &str = "repositories";

/// `repositories/<name>/_manifests/revisions/<algorithm>/<hex>/link`: the record saying
/// `repo` holds the manifest `digest`.
pub fn revision_record(repo: &RepositoryName, digest: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{repo}/_manifests/revisions/{}/{}/link",
        digest.algorithm().as_str(),
        digest.hex()
    )
}

/// `repositories/<name>/_manifests/tags/<tag>/current/link`: the record of what `tag`
/// of `repo` points at.
pub fn tag_record(repo: &RepositoryName, tag: &Tag) -> String {
    format!("{REPOSITORIES}/{repo}/_manifests/tags/{tag}/current/link")
}

/// `repositories/<name>/_manifests/tags`: the folder whose entries are `repo`'s tags.
pub fn tags_folder(repo: &RepositoryName) -> String {
    format!("{REPOSITORIES}/{repo}/_manifests/tags")
}

/// The content of a link record: the digest string.
pub fn link_content(digest: &Digest) -> Bytes {
    Bytes::from(digest.to_string())
}

/// The digest a link record holds; `None` for anything else (an empty record a crash left
/// behind, say), which a reader treats as no record.
pub fn parse_link(content: &[u8]) -> Option<Digest> {
    std::str::from_utf8(content).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// The smallest log, to run the default `records_under` (every store overrides it).
    #[derive(Default)]
    struct MapLog(Mutex<BTreeMap<String, Bytes>>);

    impl MapLog {
        fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    #[async_trait]
    impl RecoveryLog for MapLog {
        async fn put_record(&self, path: &str, content: Bytes) -> Result<(), StorageError> {
            validate_record_path(path)?;
            self.map().insert(path.to_string(), content);
            Ok(())
        }

        async fn get_record(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
            validate_record_path(path)?;
            Ok(self.map().get(path).cloned())
        }

        async fn list_records(&self, dir: &str) -> Result<Vec<String>, StorageError> {
            validate_record_dir(dir)?;
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let mut names: Vec<String> = self
                .map()
                .keys()
                .filter_map(|p| p.strip_prefix(&prefix)?.split('/').next())
                .map(str::to_string)
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        }

        async fn delete_record(&self, path: &str) -> Result<(), StorageError> {
            validate_record_path(path)?;
            self.map().remove(path);
            Ok(())
        }
    }

    #[test]
    fn default_records_under_walks_the_tree() {
        futures::executor::block_on(async {
            let log = MapLog::default();
            for (p, c) in [
                ("t/b/x/link", "1"),
                ("t/a", "2"),
                ("t/b-c/link", "3"),
                ("t/b/x/deep/link", "4"),
                ("u/link", "5"),
            ] {
                log.put_record(p, Bytes::from_static(c.as_bytes()))
                    .await
                    .unwrap();
            }
            let paths = |dir: &'static str| {
                let log = &log;
                async move {
                    let got = log.records_under(dir).await.unwrap();
                    got.into_iter().map(|(p, _)| p).collect::<Vec<_>>()
                }
            };
            assert_eq!(
                paths("t").await,
                ["t/a", "t/b-c/link", "t/b/x/deep/link", "t/b/x/link"]
            );
            assert_eq!(paths("").await.len(), 5);
            assert_eq!(paths("t/b/x/link").await, ["t/b/x/link"]);
            assert!(paths("t/b/x/li").await.is_empty());
            assert!(paths("missing").await.is_empty());
            assert_eq!(
                log.records_under("t/a").await.unwrap(),
                [("t/a".to_string(), Bytes::from_static(b"2"))]
            );
            assert!(log.records_under("t/../a").await.is_err());
        });
    }

    #[test]
    fn paths() {
        for ok in [
            "a",
            "repositories/library/ubuntu/_manifests/tags/v1.2_rc-3/current/link",
            "x/sha256/0123abcdef/link",
            "a..b",
        ] {
            assert!(validate_record_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "a/./b", "a/../b", "..", "a b", "a\\b", "a:b", "ä", "a\0",
        ] {
            assert!(
                matches!(
                    validate_record_path(bad),
                    Err(StorageError::InvalidRecordPath { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(validate_record_path(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
        assert!(validate_record_dir("").is_ok());
        assert!(!valid_record_name("~staging"));
    }

    #[test]
    fn layout() {
        let repo: RepositoryName = "library/ubuntu".parse().unwrap();
        let tag: Tag = "v1.0".parse().unwrap();
        let digest = Digest::sha256_of(b"m");
        let rev = revision_record(&repo, &digest);
        assert_eq!(
            rev,
            format!(
                "repositories/library/ubuntu/_manifests/revisions/sha256/{}/link",
                digest.hex()
            )
        );
        assert!(validate_record_path(&rev).is_ok());
        let t = tag_record(&repo, &tag);
        assert_eq!(
            t,
            "repositories/library/ubuntu/_manifests/tags/v1.0/current/link"
        );
        assert!(t.starts_with(&tags_folder(&repo)));
        assert_eq!(parse_link(&link_content(&digest)), Some(digest.clone()));
        assert_eq!(parse_link(format!("{digest}\n").as_bytes()), Some(digest));
        assert_eq!(parse_link(b""), None);
    }
}
