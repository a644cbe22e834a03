//! What can go wrong talking to S3. Every failure becomes [`StorageError::Backend`] with
//! the operation and key attached, so the log says which request failed; the client of
//! the registry only ever sees a 500.

use storage_traits::StorageError;

pub(crate) const BACKEND: &str = "s3";

/// The source of a [`StorageError::Backend`] raised by this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// The configuration (URL, credentials, sizes) is unusable.
    #[error("invalid S3 configuration: {0}")]
    Config(String),
    /// The request did not get an HTTP answer (connection refused or reset, timeout).
    #[error("S3 {op} {key}: {source}")]
    Http {
        op: &'static str,
        key: String,
        #[source]
        source: reqwest::Error,
    },
    /// S3 answered with an error status.
    #[error("S3 {op} {key}: HTTP {status} {code}: {message}")]
    Status {
        op: &'static str,
        key: String,
        status: u16,
        code: String,
        message: String,
    },
    /// S3 answered with something this crate cannot use (a missing header, bad XML, a body
    /// of the wrong length).
    #[error("S3 {op} {key}: {message}")]
    Protocol {
        op: &'static str,
        key: String,
        message: String,
    },
    /// An upload session's state object does not decode.
    #[error("corrupt upload session state {key}: {message}")]
    CorruptState { key: String, message: String },
}

impl From<S3Error> for StorageError {
    fn from(e: S3Error) -> Self {
        StorageError::backend(BACKEND, e)
    }
}

pub(crate) fn protocol(op: &'static str, key: &str, message: impl Into<String>) -> StorageError {
    S3Error::Protocol {
        op,
        key: key.to_string(),
        message: message.into(),
    }
    .into()
}

pub(crate) fn config(message: impl Into<String>) -> StorageError {
    S3Error::Config(message.into()).into()
}
