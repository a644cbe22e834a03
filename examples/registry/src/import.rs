//! `registry import --from ROOT`: copies a CNCF distribution registry's storage (its
//! `rootdirectory`) into our stores with `Registry::import`, then prints what it did and
//! everything it skipped. Skips (a corrupt blob, an invalid name) do not fail the run;
//! an error reading the source or writing the stores does.

use std::path::PathBuf;

use registry_core::RegistryConfig;
use registry_core::import::{FsSource, ImportReport};

use crate::BoxError;
use crate::config::Settings;
use crate::stats::human_bytes;

/// The folder distribution keeps everything under, inside its root.
const V2: &str = "docker/registry/v2";

pub async fn run(settings: &Settings, from: &str) -> Result<(), BoxError> {
    let root = source_root(from)?;
    if !root.join(V2).is_dir() {
        return Err(format!(
            "{} has no {V2} folder: --from takes distribution's storage root (its \
             `rootdirectory`), the folder that contains {V2}",
            root.display()
        )
        .into());
    }
    let registry = crate::open_registry(settings, RegistryConfig::default()).await?;
    let report = registry
        .import(&FsSource::new(&root))
        .await
        .map_err(|e| format!("import from {} failed: {e}", root.display()))?;
    print!("{}", summary(&root, &report));
    Ok(())
}

/// The local folder `--from` names: a plain path or `fs://PATH`. Object storage is not
/// a source yet.
pub fn source_root(from: &str) -> Result<PathBuf, String> {
    let from = from.trim();
    let path = match from.split_once("://") {
        None => from,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("fs") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "cannot import from `{from}`: {scheme}:// sources are not supported yet; \
                 only filesystem roots are supported (a local path to the folder that \
                 contains {V2})"
            ));
        }
    };
    if path.is_empty() {
        return Err("--from needs a path: the folder that contains docker/registry/v2".into());
    }
    Ok(PathBuf::from(path))
}

/// One line per skipped item, then the totals.
fn summary(root: &std::path::Path, r: &ImportReport) -> String {
    let mut out = String::new();
    for skipped in &r.skipped {
        out.push_str(&format!("skipped: {skipped}\n"));
    }
    out.push_str(&format!(
        "imported from {}: {} repositories, {} blobs copied ({} bytes, {}), {} links, \
         {} manifests, {} tags; {} skipped\n",
        root.display(),
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
        assert_eq!(source_root("/srv/dist"), Ok(PathBuf::from("/srv/dist")));
        assert_eq!(
            source_root("fs:///srv/dist"),
            Ok(PathBuf::from("/srv/dist"))
        );
        assert_eq!(source_root("rel/dist"), Ok(PathBuf::from("rel/dist")));
        let e = source_root("s3://bucket/prefix").unwrap_err();
        assert!(
            e.contains("s3://") && e.contains("only filesystem roots are supported"),
            "{e}"
        );
        assert!(source_root("").is_err());
        assert!(source_root("fs://").is_err());
    }

    #[test]
    fn summary_lists_skips_and_totals() {
        let mut r = ImportReport::default();
        r.repositories = 2;
        r.blobs_copied = 3;
        r.bytes_copied = 2048;
        r.skipped.push("a@sha256:x: manifest bytes missing".into());
        let s = summary(std::path::Path::new("/d"), &r);
        assert!(
            s.starts_with("skipped: a@sha256:x: manifest bytes missing\n"),
            "{s}"
        );
        assert!(
            s.contains("2 repositories, 3 blobs copied (2048 bytes, 2.0 KiB)"),
            "{s}"
        );
        assert!(s.ends_with("; 1 skipped\n"), "{s}");
    }
}
