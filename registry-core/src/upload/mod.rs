//! Blob uploads, in one place: the state machine, the HTTP handlers of the five verbs,
//! the in-process claim on a session, hashing, and the size limit.
//!
//! - [`state`]: the rules, as a pure function `step(state, event) -> (state, effect)`,
//!   tested without HTTP or storage. Every verb is an event: `POST` opens (or, with
//!   `?digest=`, opens and finishes in one request), `PATCH` appends, `PUT` finishes,
//!   `GET` reports progress, `DELETE` discards.
//! - `http` (crate-private): decodes nothing itself (the edge did, into
//!   [`ApiRequest`](crate::request::ApiRequest)); it loads the session, asks [`state`]
//!   what to do, performs the effect against the stores, and answers.
//! - [`hashing`]: SHA-256 computed while the body streams, its state saved with the
//!   session so a chunked upload never rereads its bytes.
//! - `claims` (crate-private): which sessions have a request in flight in this process.
//! - `limit` (crate-private): the blob size limit, enforced on the stream.
//!
//! A cross-repository mount (`POST ?mount=&from=`) is no session: it links the blob or
//! falls through to an ordinary start, which is what the spec asks when a mount cannot be
//! done.

pub(crate) mod claims;
pub mod hashing;
pub(crate) mod http;
pub(crate) mod limit;
pub mod state;
pub(crate) mod verified;
