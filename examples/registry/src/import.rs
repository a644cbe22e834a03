//! `registry import --from ROOT`: copies a CNCF distribution registry's storage (its
//! `rootdirectory`, in a local folder or under an S3 prefix) into our stores with
//! `Registry::import`, then prints what it did and everything it skipped. Skips (a corrupt
//! blob, an invalid name) do not fail the run; an error reading the source or writing the
//! stores does.
//!
//! `registry import --rebuild`: the same engine over our own blob store and the recovery
//! records the registry keeps next to the blobs (`Registry::rebuild`), to refill a lost
//! metadata database; every blob is already in place, so nothing is copied.

use std::path::PathBuf;

use registry_core::RegistryConfig;
use registry_core::import::{FsSource, ImportReport, ImportSource};
#[cfg(feature = "s3")]
use s3::{S3BucketReader, S3Source};

use crate::BoxError;
use crate::config::{ImportCommand, StorageUrl, Stores};
use crate::stats::human_bytes;

/// The folder distribution keeps everything under, inside its root.
const V2: &str = "docker/registry/v2";

/// Where `--from` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local folder: distribution's `filesystem` driver.
    Fs(PathBuf),
    /// `s3://BUCKET/ROOTDIRECTORY?endpoint=..&region=..`: distribution's `s3` driver.
    S3(String),
}

pub async fn run(stores: &Stores, args: &ImportCommand) -> Result<(), BoxError> {
    match &args.from {
        Some(from) => import(stores, from).await,
        // Clap lets no other combination through: `--rebuild` without `--from`.
        None => rebuild(stores).await,
    }
}

async fn import(stores: &Stores, from: &str) -> Result<(), BoxError> {
    let (shown, source): (String, Box<dyn ImportSource>) = match parse_from(from)? {
        Source::Fs(root) => {
            if !root.join(V2).is_dir() {
                return Err(format!(
                    "{} has no {V2} folder: --from takes distribution's storage root (its \
                     `rootdirectory`), the folder that contains {V2}",
                    root.display()
                )
                .into());
            }
            (root.display().to_string(), Box::new(FsSource::new(&root)))
        }
        #[cfg(not(feature = "s3"))]
        Source::S3(url) => {
            return Err(crate::features::not_built("s3", &format!("--from {url}")).into());
        }
        #[cfg(feature = "s3")]
        Source::S3(url) => {
            let reader = S3BucketReader::from_url(&url)
                .map_err(|e| format!("cannot read S3 source {url}: {e}"))?;
            // One request that proves the bucket answers, with these credentials, and
            // that the prefix is a distribution root.
            let top = reader
                .list_folder("docker/registry")
                .await
                .map_err(|e| format!("cannot read S3 source {url}: {e}"))?;
            if !top.iter().any(|name| name == "v2") {
                return Err(format!(
                    "s3://{}/{} has no {V2}/ under it: --from s3://BUCKET/PREFIX takes \
                     distribution's s3 `bucket` and `rootdirectory`",
                    reader.bucket(),
                    reader.prefix()
                )
                .into());
            }
            (url, Box::new(S3Source(reader)))
        }
    };
    let registry = crate::open_registry(stores, None, RegistryConfig::default()).await?;
    let report = registry
        .import(source.as_ref())
        .await
        .map_err(|e| format!("import from {shown} failed: {e}"))?;
    print!("{}", summary(&format!("imported from {shown}"), &report));
    Ok(())
}

/// `--rebuild`: the metadata from the configured blob store's recovery records.
async fn rebuild(stores: &Stores) -> Result<(), BoxError> {
    let shown = match &stores.storage {
        StorageUrl::Fs(root) => {
            // Opening an fs store creates its folder: a mistyped path would rebuild an
            // empty registry instead of saying so.
            if !root.is_dir() {
                return Err(format!(
                    "cannot rebuild from {}: no such folder (--storage names the blob \
                     store to rebuild from)",
                    root.display()
                )
                .into());
            }
            root.display().to_string()
        }
        StorageUrl::S3(url) => url.clone(),
    };
    // Checked before the metadata store is opened (and a SQLite file created).
    let blobs = crate::open_blobs(&stores.storage)?;
    let Some(records) = blobs.recovery() else {
        return Err(format!(
            "cannot rebuild from {shown}: this blob store keeps no recovery records"
        )
        .into());
    };
    let repositories = records
        .list_records(storage_traits::recovery::REPOSITORIES)
        .await
        .map_err(|e| format!("cannot read the recovery records of {shown}: {e}"))?;
    if repositories.is_empty() {
        return Err(format!(
            "nothing to rebuild from {shown}: it holds no recovery records (is --storage \
             the blob store the registry used? Manifests pushed before the registry kept \
             recovery records cannot be recovered from it)"
        )
        .into());
    }
    let registry = crate::open_registry(stores, None, RegistryConfig::default()).await?;
    let report = registry
        .rebuild()
        .await
        .map_err(|e| format!("rebuild from {shown} failed: {e}"))?;
    print!("{}", summary(&format!("rebuilt from {shown}"), &report));
    Ok(())
}

/// What `--from` names: a plain path or `fs://PATH`, or an `s3://` URL in the form
/// `--storage` takes (checked in full when the reader is built).
pub fn parse_from(from: &str) -> Result<Source, String> {
    let from = from.trim();
    let path = match from.split_once("://") {
        None => from,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("fs") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("s3") => {
            return Ok(Source::S3(from.to_string()));
        }
        Some((scheme, _)) => {
            return Err(format!(
                "cannot import from `{from}`: {scheme}:// sources are not supported; --from \
                 takes a local path to the folder that contains {V2} (or fs://PATH), or \
                 s3://BUCKET/ROOTDIRECTORY?endpoint=URL&region=REGION"
            ));
        }
    };
    if path.is_empty() {
        return Err("--from needs a path: the folder that contains docker/registry/v2".into());
    }
    Ok(Source::Fs(PathBuf::from(path)))
}

/// A distribution root under an S3 prefix.
#[cfg(feature = "s3")]
mod s3 {
    use async_trait::async_trait;
    use bytes::Bytes;
    use registry_core::import::ImportSource;
    pub use storage_s3::S3BucketReader;
    use storage_traits::{ByteStream, StorageError};

    #[derive(Debug)]
    pub struct S3Source(pub S3BucketReader);

    #[async_trait]
    impl ImportSource for S3Source {
        async fn list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
            self.0.list_folder(dir).await
        }

        async fn read(&self, path: &str) -> Result<Option<Bytes>, StorageError> {
            self.0.read(path).await
        }

        async fn open(&self, path: &str) -> Result<Option<ByteStream>, StorageError> {
            Ok(self.0.open(path).await?.map(|(_, stream)| stream))
        }
    }
}

/// One line per skipped item, then the totals after `what` (`imported from ROOT`).
fn summary(what: &str, r: &ImportReport) -> String {
    let mut out = String::new();
    for skipped in &r.skipped {
        out.push_str(&format!("skipped: {skipped}\n"));
    }
    out.push_str(&format!(
        "{what}: {} repositories, {} blobs copied ({} bytes, {}), {} links, \
         {} manifests, {} tags; {} skipped\n",
        r.repositories,
        r.blobs_copied,
        r.bytes_copied,
        human_bytes(r.bytes_copied),
        r.links,
        r.manifests,
        r.tags,
        r.skipped.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let fs = |p: &str| Ok(Source::Fs(PathBuf::from(p)));
        assert_eq!(parse_from("/srv/dist"), fs("/srv/dist"));
        assert_eq!(parse_from("fs:///srv/dist"), fs("/srv/dist"));
        assert_eq!(parse_from("rel/dist"), fs("rel/dist"));
        assert_eq!(
            parse_from("s3://bucket/prefix?region=eu-west-1"),
            Ok(Source::S3("s3://bucket/prefix?region=eu-west-1".into()))
        );
        let e = parse_from("gs://bucket/prefix").unwrap_err();
        assert!(
            e.contains("gs://") && e.contains("s3://BUCKET/ROOTDIRECTORY"),
            "{e}"
        );
        assert!(parse_from("").is_err());
        assert!(parse_from("fs://").is_err());
    }

    #[test]
    fn summary_lists_skips_and_totals() {
        let mut r = ImportReport::default();
        r.repositories = 2;
        r.blobs_copied = 3;
        r.bytes_copied = 2048;
        r.skipped.push("a@sha256:x: manifest bytes missing".into());
        let s = summary("imported from /d", &r);
        assert!(
            s.starts_with("skipped: a@sha256:x: manifest bytes missing\n"),
            "{s}"
        );
        assert!(
            s.contains("imported from /d: 2 repositories, 3 blobs copied (2048 bytes, 2.0 KiB)"),
            "{s}"
        );
        assert!(s.ends_with("; 1 skipped\n"), "{s}");
    }
}
