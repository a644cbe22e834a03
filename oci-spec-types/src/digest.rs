//! Content digests: `algorithm:hex`, restricted to the algorithms a registry must verify.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A hash algorithm the registry can verify. The spec's grammar admits any algorithm
/// name, but a registry cannot check a digest it cannot compute, so anything else is
/// refused at the edge (as `DIGEST_INVALID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256: 64 hex characters.
    Sha256,
    /// SHA-512: 128 hex characters.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name in a digest string (`sha256`, `sha512`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a digest string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// Not `algorithm:hex`.
    #[error("digest must have the form algorithm:hex")]
    Malformed,
    /// An algorithm other than sha256 and sha512.
    #[error("unsupported digest algorithm {0:?} (sha256 and sha512 are supported)")]
    UnsupportedAlgorithm(String),
    /// The hex part has the wrong length or characters.
    #[error("{algorithm} digest must be {expected} lowercase hex characters")]
    BadEncoding {
        /// The algorithm named.
        algorithm: Algorithm,
        /// The number of lowercase hex characters it needs.
        expected: usize,
    },
}

/// A validated digest such as `sha256:e3b0…`. Stored as its canonical string so it can be
/// borrowed as `&str` for paths, SQL and headers without allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    text: String,
}

impl Digest {
    /// The hash algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    /// The whole digest, `algorithm:hex`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Builds a digest from an algorithm and raw hash output.
    pub fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Digest {
        Digest {
            algorithm,
            text: format!("{}:{}", algorithm.as_str(), hex::encode(raw)),
        }
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::from_raw(Algorithm::Sha256, &sha2::Sha256::digest(data))
    }

    /// The SHA-512 digest of `data`.
    pub fn sha512_of(data: &[u8]) -> Digest {
        Digest::from_raw(Algorithm::Sha512, &sha2::Sha512::digest(data))
    }

    /// Digest of `data` with this digest's algorithm: the check a registry makes before
    /// accepting content under a client-supplied digest.
    pub fn matches(&self, data: &[u8]) -> bool {
        let computed = match self.algorithm {
            Algorithm::Sha256 => Digest::sha256_of(data),
            Algorithm::Sha512 => Digest::sha512_of(data),
        };
        computed == *self
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                if other.is_empty() || hex.is_empty() {
                    return Err(DigestError::Malformed);
                }
                return Err(DigestError::UnsupportedAlgorithm(other.to_string()));
            }
        };
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::BadEncoding {
                algorithm,
                expected: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            text: s.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_sha256() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.as_str().parse::<Digest>(), Ok(d.clone()));
        assert!(d.matches(b""));
        assert!(!d.matches(b"x"));
    }

    #[test]
    fn rejects_bad_digests() {
        assert_eq!("sha256".parse::<Digest>(), Err(DigestError::Malformed));
        assert_eq!(":abc".parse::<Digest>(), Err(DigestError::Malformed));
        assert!(matches!(
            "md5:abc".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(matches!(
            upper.parse::<Digest>(),
            Err(DigestError::BadEncoding { .. })
        ));
        let short = format!("sha512:{}", "a".repeat(64));
        assert!(short.parse::<Digest>().is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn computed_digests_round_trip(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            for d in [Digest::sha256_of(&data), Digest::sha512_of(&data)] {
                let parsed: Digest = d.as_str().parse().unwrap();
                prop_assert_eq!(&parsed, &d);
                prop_assert!(parsed.matches(&data));
            }
        }

        #[test]
        fn valid_hex_parses(hex in "[0-9a-f]{64}") {
            let s = format!("sha256:{hex}");
            let d: Digest = s.parse().unwrap();
            prop_assert_eq!(d.hex(), hex.as_str());
        }
    }
}
