//! The vocabulary of the OCI Distribution Spec, parsed and validated at the edge so the
//! rest of the registry only ever holds valid values.
//!
//! Nothing here does I/O. Every parser returns a typed error instead of panicking, so a
//! request handler can turn any bad input into the spec's error code.
//!
//! ```
//! use oci_spec_types::{Digest, RepositoryName, Reference};
//!
//! let name: RepositoryName = "library/alpine".parse().unwrap();
//! let by_tag: Reference = "3.20".parse().unwrap();
//! let digest = Digest::sha256_of(b"hello");
//! assert_eq!(digest.algorithm().as_str(), "sha256");
//! assert!(matches!(by_tag, Reference::Tag(_)));
//! assert_eq!(name.as_str(), "library/alpine");
//! ```

#![warn(missing_docs)]

pub mod digest;
pub mod error_code;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod reference;

pub use digest::{Algorithm, Digest, DigestError};
pub use error_code::{ErrorBody, ErrorCode, ErrorInfo};
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest};
pub use name::{NameError, RepositoryName, Tag};
pub use reference::{Reference, ReferenceError};
