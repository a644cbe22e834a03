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
        /// The S3 operation (`PutObject`, `UploadPart`, ...).
        op: &'static str,
        /// The object key it was about.
        key: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// S3 answered with an error status.
    #[error("S3 {op} {key}: HTTP {status} {code}: {message}")]
    Status {
        /// The S3 operation.
        op: &'static str,
        /// The object key it was about.
        key: String,
        /// The HTTP status.
        status: u16,
        /// S3's error code (`NoSuchKey`, `AccessDenied`, ...), empty if the body had none.
        code: String,
        /// S3's error message.
        message: String,
    },
    /// S3 answered with something this crate cannot use (a missing header, bad XML, a body
    /// of the wrong length).
    #[error("S3 {op} {key}: {message}")]
    Protocol {
        /// The S3 operation.
        op: &'static str,
        /// The object key it was about.
        key: String,
        /// What was wrong with the answer.
        message: String,
    },
    /// An upload session's state object does not decode.
    #[error("corrupt upload session state {key}: {message}")]
    CorruptState {
        /// The state object's key.
        key: String,
        /// Why it does not decode.
        message: String,
    },
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
