//! The upload state machine, as a pure function: every verb of an upload is an event.
//!
//! Handlers decode a request into an [`Event`], call [`step`], perform the returned
//! [`Effect`] (write bytes, persist the offset, compute the digest, commit), and feed the
//! outcome back as the next event. Keeping the rules here, free of HTTP and storage, lets
//! them be tested exhaustively and keeps every handler on the same rules.

use oci_spec_types::Digest;

/// An inclusive byte range from a `Content-Range` header (`start-end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ChunkRange {
    /// Parses `start-end`, also accepting the `bytes ` / `bytes=` prefix and a `/total`
    /// suffix that some clients send.
    pub fn parse(s: &str) -> Option<ChunkRange> {
        let s = s.trim();
        let s = s
            .strip_prefix("bytes=")
            .or_else(|| s.strip_prefix("bytes "))
            .unwrap_or(s);
        let s = s.split('/').next()?;
        let (a, b) = s.split_once('-')?;
        let start: u64 = a.trim().parse().ok()?;
        let end: u64 = b.trim().parse().ok()?;
        (end >= start).then_some(ChunkRange { start, end })
    }

    /// Number of bytes covered (never zero: `end >= start`, both inclusive).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// The `Range` header value for upload progress: `0-<last byte>`. The spec's (ambiguous)
/// convention for an empty session is `0-0`.
pub fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// Where an upload session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No session yet: a `POST` is about to open one.
    New,
    /// Waiting for data; `offset` bytes acknowledged.
    Open {
        /// Bytes acknowledged.
        offset: u64,
    },
    /// A body is being written at `start`; `declared` is the length the client announced;
    /// `finish` is the digest when this is the closing `PUT`.
    Receiving {
        /// Where the body is written.
        start: u64,
        /// The `Content-Length` announced.
        declared: Option<u64>,
        /// The expected digest, when this is the closing `PUT`.
        finish: Option<Digest>,
    },
    /// All bytes are in; the content's digest is being computed.
    Verifying {
        /// Bytes in the session.
        size: u64,
        /// The digest the client named.
        expected: Digest,
    },
    /// The blob is published.
    Committed {
        /// Its size.
        size: u64,
        /// Its digest.
        digest: Digest,
    },
}

/// What happened to an upload session: a request, or the outcome of an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `POST`: open a session; with a digest, the body is the whole blob (monolithic).
    Start {
        /// The blob's digest (`?digest=`), for a monolithic upload.
        digest: Option<Digest>,
        /// `Content-Range`, when sent.
        range: Option<ChunkRange>,
        /// `Content-Length`, when sent.
        length: Option<u64>,
    },
    /// `GET` on the session: its progress.
    Status,
    /// `DELETE` on the session.
    Cancel,
    /// `PATCH` with an optional `Content-Range` and `Content-Length`.
    Patch {
        /// `Content-Range`, when sent.
        range: Option<ChunkRange>,
        /// `Content-Length`, when sent.
        length: Option<u64>,
    },
    /// `PUT ?digest=` (or `POST ?digest=`), with an optional last chunk.
    Put {
        /// The blob's digest (`?digest=`).
        digest: Digest,
        /// `Content-Range` of the last chunk, when sent.
        range: Option<ChunkRange>,
        /// `Content-Length` of the last chunk, when sent.
        length: Option<u64>,
    },
    /// The body was written; the session now holds `new_offset` bytes.
    Received {
        /// Bytes the session holds now.
        new_offset: u64,
    },
    /// The digest of the session's bytes.
    Computed {
        /// The digest computed.
        digest: Digest,
    },
}

/// What a handler must do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer 202 with the new session's location.
    Opened,
    /// Answer 204 with the acknowledged progress.
    Report {
        /// Bytes acknowledged.
        offset: u64,
    },
    /// Drop the session's bytes and record, answer 204.
    Discard,
    /// Write the request body at this offset.
    ReceiveAt(u64),
    /// Persist the new offset and answer 202 with the progress.
    Acknowledge {
        /// The new offset.
        offset: u64,
    },
    /// Compute the digest of all `size` bytes.
    Compute {
        /// Bytes to hash.
        size: u64,
    },
    /// Publish the blob and answer 201.
    Commit {
        /// The blob's digest.
        digest: Digest,
        /// Its size.
        size: u64,
    },
}

/// Why an upload step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// A chunk did not start at the session's offset.
    #[error("chunk must start at offset {expected}")]
    OffsetMismatch {
        /// The session's offset.
        expected: u64,
    },
    /// The body was not as long as its `Content-Length` or `Content-Range` said.
    #[error("declared {declared} bytes, received {received}")]
    LengthMismatch {
        /// Bytes announced.
        declared: u64,
        /// Bytes received.
        received: u64,
    },
    /// The content's digest is not the one the client named.
    #[error("digest mismatch: expected {expected}, computed {computed}")]
    DigestMismatch {
        /// The digest the client named.
        expected: Digest,
        /// The content's digest.
        computed: Digest,
    },
    /// The event is not allowed in the session's state (the reason).
    #[error("{0}")]
    InvalidTransition(&'static str),
}

/// One transition. Errors leave the persisted session as it was: the acknowledged offset
/// only moves on `Acknowledge`, so bytes written by a failed request are overwritten by
/// the next chunk.
pub fn step(state: State, event: Event) -> Result<(State, Effect), UploadError> {
    match (state, event) {
        (State::New, Event::Start { digest: None, .. }) => {
            Ok((State::Open { offset: 0 }, Effect::Opened))
        }
        (
            State::New,
            Event::Start {
                digest: Some(digest),
                range,
                length,
            },
        ) => step(
            State::Open { offset: 0 },
            Event::Put {
                digest,
                range,
                length,
            },
        ),
        (State::Open { offset }, Event::Status) => {
            Ok((State::Open { offset }, Effect::Report { offset }))
        }
        (State::Open { .. }, Event::Cancel) => Ok((State::New, Effect::Discard)),
        (State::Open { offset }, Event::Patch { range, length }) => {
            let declared = declared_length(offset, range, length)?;
            Ok((
                State::Receiving {
                    start: offset,
                    declared,
                    finish: None,
                },
                Effect::ReceiveAt(offset),
            ))
        }
        (
            State::Open { offset },
            Event::Put {
                digest,
                range,
                length,
            },
        ) => {
            let declared = declared_length(offset, range, length)?;
            Ok((
                State::Receiving {
                    start: offset,
                    declared,
                    finish: Some(digest),
                },
                Effect::ReceiveAt(offset),
            ))
        }
        (
            State::Receiving {
                start,
                declared,
                finish,
            },
            Event::Received { new_offset },
        ) => {
            let received = new_offset
                .checked_sub(start)
                .ok_or(UploadError::InvalidTransition(
                    "store reported a shrinking upload",
                ))?;
            if let Some(declared) = declared
                && declared != received
            {
                return Err(UploadError::LengthMismatch { declared, received });
            }
            match finish {
                None => Ok((
                    State::Open { offset: new_offset },
                    Effect::Acknowledge { offset: new_offset },
                )),
                Some(expected) => Ok((
                    State::Verifying {
                        size: new_offset,
                        expected,
                    },
                    Effect::Compute { size: new_offset },
                )),
            }
        }
        (State::Verifying { size, expected }, Event::Computed { digest }) => {
            if digest != expected {
                return Err(UploadError::DigestMismatch {
                    expected,
                    computed: digest,
                });
            }
            Ok((
                State::Committed {
                    size,
                    digest: expected.clone(),
                },
                Effect::Commit {
                    digest: expected,
                    size,
                },
            ))
        }
        _ => Err(UploadError::InvalidTransition(
            "request not valid in this upload state",
        )),
    }
}

fn declared_length(
    offset: u64,
    range: Option<ChunkRange>,
    length: Option<u64>,
) -> Result<Option<u64>, UploadError> {
    match range {
        Some(r) => {
            if r.start != offset {
                return Err(UploadError::OffsetMismatch { expected: offset });
            }
            if let Some(len) = length
                && len != r.len()
            {
                return Err(UploadError::LengthMismatch {
                    declared: r.len(),
                    received: len,
                });
            }
            Ok(Some(r.len()))
        }
        None => Ok(length),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(b: &[u8]) -> Digest {
        Digest::sha256_of(b)
    }

    #[test]
    fn chunk_ranges() {
        assert_eq!(
            ChunkRange::parse("0-9"),
            Some(ChunkRange { start: 0, end: 9 })
        );
        assert_eq!(
            ChunkRange::parse("bytes=5-5"),
            Some(ChunkRange { start: 5, end: 5 })
        );
        assert_eq!(ChunkRange::parse("bytes 0-9/10").map(|r| r.len()), Some(10));
        for bad in ["", "9-0", "a-b", "-5", "5", "1-2-3"] {
            assert_eq!(ChunkRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_verb_is_an_event() {
        assert_eq!(
            step(
                State::New,
                Event::Start {
                    digest: None,
                    range: None,
                    length: None
                }
            ),
            Ok((State::Open { offset: 0 }, Effect::Opened))
        );
        let (s, e) = step(
            State::New,
            Event::Start {
                digest: Some(d(b"abc")),
                range: None,
                length: Some(3),
            },
        )
        .unwrap();
        assert_eq!(e, Effect::ReceiveAt(0));
        let (s, e) = step(s, Event::Received { new_offset: 3 }).unwrap();
        assert_eq!(e, Effect::Compute { size: 3 });
        let (_, e) = step(s, Event::Computed { digest: d(b"abc") }).unwrap();
        assert_eq!(
            e,
            Effect::Commit {
                digest: d(b"abc"),
                size: 3
            }
        );
        assert_eq!(
            step(State::Open { offset: 7 }, Event::Status),
            Ok((State::Open { offset: 7 }, Effect::Report { offset: 7 }))
        );
        assert_eq!(
            step(State::Open { offset: 7 }, Event::Cancel),
            Ok((State::New, Effect::Discard))
        );
        // A session that is not open has no progress to report and nothing to cancel.
        assert!(step(State::New, Event::Status).is_err());
        assert!(step(State::New, Event::Cancel).is_err());
        assert!(
            step(
                State::Open { offset: 0 },
                Event::Start {
                    digest: None,
                    range: None,
                    length: None
                }
            )
            .is_err()
        );
    }

    #[test]
    fn chunked_upload_then_put() {
        let (s, e) = step(
            State::Open { offset: 0 },
            Event::Patch {
                range: Some(ChunkRange { start: 0, end: 3 }),
                length: Some(4),
            },
        )
        .unwrap();
        assert_eq!(e, Effect::ReceiveAt(0));
        let (s, e) = step(s, Event::Received { new_offset: 4 }).unwrap();
        assert_eq!(e, Effect::Acknowledge { offset: 4 });
        let digest = d(b"abcdef");
        let (s, e) = step(
            s,
            Event::Put {
                digest: digest.clone(),
                range: None,
                length: Some(2),
            },
        )
        .unwrap();
        assert_eq!(e, Effect::ReceiveAt(4));
        let (s, e) = step(s, Event::Received { new_offset: 6 }).unwrap();
        assert_eq!(e, Effect::Compute { size: 6 });
        let (s, e) = step(
            s,
            Event::Computed {
                digest: digest.clone(),
            },
        )
        .unwrap();
        assert_eq!(
            e,
            Effect::Commit {
                digest: digest.clone(),
                size: 6
            }
        );
        assert_eq!(s, State::Committed { size: 6, digest });
    }

    #[test]
    fn wrong_offset_is_refused_with_current_offset() {
        let err = step(
            State::Open { offset: 10 },
            Event::Patch {
                range: Some(ChunkRange { start: 0, end: 9 }),
                length: None,
            },
        )
        .unwrap_err();
        assert_eq!(err, UploadError::OffsetMismatch { expected: 10 });
        let err = step(
            State::Open { offset: 10 },
            Event::Put {
                digest: d(b""),
                range: Some(ChunkRange { start: 11, end: 12 }),
                length: None,
            },
        )
        .unwrap_err();
        assert_eq!(err, UploadError::OffsetMismatch { expected: 10 });
    }

    #[test]
    fn truncated_body_is_a_length_mismatch() {
        let (s, _) = step(
            State::Open { offset: 0 },
            Event::Patch {
                range: None,
                length: Some(100),
            },
        )
        .unwrap();
        assert_eq!(
            step(s, Event::Received { new_offset: 40 }).unwrap_err(),
            UploadError::LengthMismatch {
                declared: 100,
                received: 40
            }
        );
        let err = step(
            State::Open { offset: 0 },
            Event::Patch {
                range: Some(ChunkRange { start: 0, end: 9 }),
                length: Some(5),
            },
        )
        .unwrap_err();
        assert!(matches!(err, UploadError::LengthMismatch { .. }));
    }

    #[test]
    fn digest_mismatch_does_not_commit() {
        let s = State::Verifying {
            size: 3,
            expected: d(b"abc"),
        };
        let err = step(s, Event::Computed { digest: d(b"abd") }).unwrap_err();
        assert!(matches!(err, UploadError::DigestMismatch { .. }));
    }

    #[test]
    fn out_of_order_events_are_invalid() {
        for (s, e) in [
            (State::Open { offset: 0 }, Event::Received { new_offset: 1 }),
            (
                State::Open { offset: 0 },
                Event::Computed { digest: d(b"") },
            ),
            (
                State::Committed {
                    size: 0,
                    digest: d(b""),
                },
                Event::Patch {
                    range: None,
                    length: None,
                },
            ),
        ] {
            assert!(matches!(step(s, e), Err(UploadError::InvalidTransition(_))));
        }
        let s = State::Receiving {
            start: 5,
            declared: None,
            finish: None,
        };
        assert!(step(s, Event::Received { new_offset: 4 }).is_err());
    }
}
