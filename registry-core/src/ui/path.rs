//! The UI's paths below `/ui/r/`: a repository name (which contains `/`), then `/-/` and
//! what about it. `-` alone is never a component of a repository name, so the split is
//! unambiguous. Nothing is percent-decoded, as for the API: a name has one spelling.

use oci_spec_types::{Reference, RepositoryName};

use crate::error::RegistryError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UiPath {
    /// `/ui/r/<name>`: the repository's tags.
    Repository(RepositoryName),
    /// `/ui/r/<name>/-/manifest/<tag or digest>`.
    Manifest(RepositoryName, Reference),
    /// `/ui/r/<name>/-/delete/<tag or digest>`: the confirmation page (`GET`), the
    /// deletion (`POST`).
    Delete(RepositoryName, Reference),
}

impl UiPath {
    pub(super) fn parse(path: &str) -> Result<UiPath, RegistryError> {
        let rest = path.strip_prefix("/ui/r/").ok_or(RegistryError::NotFound)?;
        let (name, action) = match rest.split_once("/-/") {
            Some((name, action)) => (name, Some(action)),
            None => (rest.trim_end_matches('/'), None),
        };
        let repo: RepositoryName = name.parse().map_err(|e| RegistryError::name_invalid(&e))?;
        let reference = |r: &str| -> Result<Reference, RegistryError> {
            r.parse().map_err(|e| {
                RegistryError::InvalidParameter(format!("{r:?} is neither a tag nor a digest: {e}"))
            })
        };
        Ok(match action.map(|a| a.split_once('/')) {
            None => UiPath::Repository(repo),
            Some(Some(("manifest", r))) => UiPath::Manifest(repo, reference(r)?),
            Some(Some(("delete", r))) => UiPath::Delete(repo, reference(r)?),
            Some(_) => return Err(RegistryError::NotFound),
        })
    }
}

/// The UI path of a repository (names and references need no escaping in a path: their
/// grammars allow no character that would).
pub(super) fn repository(repo: &str) -> String {
    format!("/ui/r/{repo}")
}

pub(super) fn manifest(repo: &str, reference: &str) -> String {
    format!("/ui/r/{repo}/-/manifest/{reference}")
}

pub(super) fn delete(repo: &str, reference: &str) -> String {
    format!("/ui/r/{repo}/-/delete/{reference}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slashes_and_references() {
        let d = oci_spec_types::Digest::sha256_of(b"x");
        assert_eq!(
            UiPath::parse("/ui/r/a/b/c").unwrap(),
            UiPath::Repository("a/b/c".parse().unwrap())
        );
        assert_eq!(
            UiPath::parse("/ui/r/a/b/").unwrap(),
            UiPath::Repository("a/b".parse().unwrap())
        );
        assert_eq!(
            UiPath::parse(&format!("/ui/r/a/manifest/-/manifest/{d}")).unwrap(),
            UiPath::Manifest("a/manifest".parse().unwrap(), Reference::Digest(d))
        );
        assert_eq!(
            UiPath::parse("/ui/r/x/-/delete/v1.0").unwrap(),
            UiPath::Delete(
                "x".parse().unwrap(),
                Reference::Tag("v1.0".parse().unwrap())
            )
        );
    }

    #[test]
    fn bad_paths_are_client_errors() {
        for p in [
            "/ui/r/A",
            "/ui/r/a%2fb",
            "/ui/r/../x",
            "/ui/r/a/-/manifest/bad*tag",
            "/ui/r/a/-/manifest/sha256:zz",
            "/ui/r/a/-/nothing/x",
            "/ui/r/a/-/manifest",
        ] {
            assert!(UiPath::parse(p).is_err(), "{p}");
        }
    }
}
