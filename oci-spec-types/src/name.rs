//! Repository names and tags, with the grammars and limits of the distribution spec.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest repository name accepted. The spec leaves the limit to registries; 255 is what
/// distribution enforces and what clients expect to work everywhere.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag, from the spec's grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub const MAX_TAG_LEN: usize = 128;

/// Why a repository name or a tag did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// An empty name.
    #[error("repository name must not be empty")]
    Empty,
    /// A name longer than the limit.
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// A path component outside the grammar.
    #[error(
        "invalid repository name component {0:?}: lowercase letters and digits, separated by '.', '_', '__' or dashes"
    )]
    InvalidComponent(String),
    /// A tag outside the grammar.
    #[error("invalid tag {0:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag(String),
}

/// A repository name such as `library/alpine`: path components matching
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__", or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        // A separator must be followed by an alphanumeric (not another separator kind).
        if i >= b.len() || !alnum(b[i]) || i == start {
            return false;
        }
    }
    true
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for component in s.split('/') {
            if !valid_component(component) {
                return Err(NameError::InvalidComponent(component.to_string()));
            }
        }
        Ok(RepositoryName(s.to_string()))
    }
}

/// A tag such as `latest` or `v1.2.3`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > MAX_TAG_LEN {
            return Err(NameError::InvalidTag(
                s.chars().take(MAX_TAG_LEN + 8).collect(),
            ));
        }
        Ok(Tag(s.to_string()))
    }
}

macro_rules! string_newtype_traits {
    ($t:ty, $label:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({})"), self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_newtype_traits!(RepositoryName, "RepositoryName");
string_newtype_traits!(Tag, "Tag");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/alpine",
            "a.b_c__d---e/f0",
            "my-org/team/app",
            "x9",
        ] {
            assert!(ok.parse::<RepositoryName>().is_ok(), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a_.b", "a b", "..",
            "a/../b", "a%2fb",
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad}");
        }
        assert_eq!(
            "a".repeat(256).parse::<RepositoryName>(),
            Err(NameError::TooLong)
        );
        assert!("a".repeat(255).parse::<RepositoryName>().is_ok());
    }

    #[test]
    fn tags() {
        for ok in ["latest", "_x", "V1.2.3-rc_1", &"a".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok}");
        }
        for bad in ["", ".a", "-a", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn name_parse_never_panics(s in "\\PC*") {
            let _ = s.parse::<RepositoryName>();
            let _ = s.parse::<Tag>();
        }

        #[test]
        fn grammar_names_parse(s in "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}(/[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}){0,3}") {
            prop_assume!(s.len() <= MAX_NAME_LEN);
            let n: RepositoryName = s.parse().unwrap();
            prop_assert_eq!(n.as_str(), s.as_str());
        }

        #[test]
        fn accepted_names_match_grammar(s in "[a-z0-9._/-]{1,40}") {
            if let Ok(n) = s.parse::<RepositoryName>() {
                // Re-check with an independent formulation of the grammar.
                for c in n.as_str().split('/') {
                    prop_assert!(!c.is_empty());
                    prop_assert!(!c.starts_with(['.', '_', '-']) && !c.ends_with(['.', '_', '-']));
                    prop_assert!(!c.contains("..") && !c.contains("___") && !c.contains("._") && !c.contains("_."));
                }
            }
        }

        #[test]
        fn grammar_tags_parse(s in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            prop_assert!(s.parse::<Tag>().is_ok());
        }
    }
}
