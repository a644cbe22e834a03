//! The `<reference>` of a manifest URL: a tag or a digest.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, DigestError, NameError, Tag};

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A tag, such as `latest`.
    Tag(Tag),
    /// A digest, such as `sha256:…`.
    Digest(Digest),
}

/// Why a reference did not parse: which of the two grammars it was meant for decides the
/// error code (`DIGEST_INVALID` for something with a colon, `MANIFEST_INVALID`/`NAME_INVALID`
/// territory otherwise), so keep the two apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Looked like a digest (had a colon) but is not one.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Looked like a tag but is not one.
    #[error(transparent)]
    Tag(#[from] NameError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        let d = Digest::sha256_of(b"x");
        assert_eq!(d.as_str().parse(), Ok(Reference::Digest(d)));
        assert!(matches!(
            "sha256:zz".parse::<Reference>(),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            "bad/tag".parse::<Reference>(),
            Err(ReferenceError::Tag(_))
        ));
    }
}
