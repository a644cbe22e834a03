//! Push, pull and delete events, derived from a completed exchange (route, method,
//! status, headers) rather than from inside the handlers, so they see exactly what the
//! client saw.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode, header};
use oci_spec_types::Reference;

use crate::request::ApiRequest;
use crate::route::Route;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Something was pushed.
    Push,
    /// Something was pulled.
    Pull,
    /// Something was deleted.
    Delete,
}

impl Action {
    /// `push`, `pull` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
        }
    }
}

/// What the event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// A manifest (or a tag of one).
    Manifest,
    /// A blob.
    Blob,
}

impl Target {
    /// `manifest` or `blob`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Manifest => "manifest",
            Target::Blob => "blob",
        }
    }
}

/// One push, pull or delete. Found in the response extensions of pushes and deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryEvent {
    /// What happened.
    pub action: Action,
    /// To what kind of object.
    pub target: Target,
    /// The repository's name.
    pub repository: String,
    /// `None` only for a delete by tag.
    pub digest: Option<String>,
    /// The manifest's or blob's media type, when the exchange shows it.
    pub media_type: Option<String>,
    /// Bytes of the manifest or blob (for a ranged pull, the bytes sent). `None` when the
    /// exchange does not show it (a blob push finished by a chunked upload's last `PUT`).
    pub size: Option<u64>,
    /// The tag, when a manifest was pushed, pulled or deleted by tag.
    pub tag: Option<String>,
    /// From the request to the response headers, or, for a blob pull, to the last byte.
    pub duration: Duration,
    /// When the event was recorded.
    pub timestamp: SystemTime,
}

impl RegistryEvent {
    /// Logs the event at target `registry::events` (level `info`).
    pub fn log(&self) {
        tracing::info!(
            target: "registry::events",
            action = self.action.as_str(),
            target_kind = self.target.as_str(),
            repository = %self.repository,
            digest = self.digest.as_deref(),
            media_type = self.media_type.as_deref(),
            size = self.size,
            tag = self.tag.as_deref(),
            duration_ms = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            "{} {} {}",
            self.target.as_str(),
            self.action.as_str(),
            self.repository,
        );
        ::metrics::counter!(
            super::metrics::EVENTS,
            "action" => self.action.as_str(),
            "target" => self.target.as_str()
        )
        .increment(1);
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The event an exchange amounts to, if any. `received` is the request body's size;
/// a blob pull's size is filled in when its body has been sent.
pub(crate) fn from_exchange(
    request: &ApiRequest,
    received: u64,
    status: StatusCode,
    response: &HeaderMap,
) -> Option<RegistryEvent> {
    let method = &request.method;
    let request_content_type = request.body.content_type.as_deref();
    let digest = header(response, "Docker-Content-Digest").map(str::to_string);
    let length = header(response, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
    let event = |action, target, repository: &oci_spec_types::RepositoryName| RegistryEvent {
        action,
        target,
        repository: repository.to_string(),
        digest: digest.clone(),
        media_type: None,
        size: None,
        tag: None,
        duration: Duration::ZERO,
        timestamp: SystemTime::now(),
    };
    // A push by digest names its tags in the query (the first one is the event's).
    let tag_of = |r: &Reference| match r {
        Reference::Tag(t) => Some(t.to_string()),
        Reference::Digest(_) => request.params.tags.first().map(ToString::to_string),
    };
    match &request.route {
        Route::Manifest(repo, reference) if *method == Method::PUT && status.is_success() => {
            Some(RegistryEvent {
                media_type: request_content_type.map(str::to_string),
                size: Some(received),
                tag: tag_of(reference),
                ..event(Action::Push, Target::Manifest, repo)
            })
        }
        Route::Manifest(repo, reference) if *method == Method::GET && status == StatusCode::OK => {
            Some(RegistryEvent {
                media_type: header(response, header::CONTENT_TYPE.as_str()).map(str::to_string),
                size: length,
                tag: tag_of(reference),
                ..event(Action::Pull, Target::Manifest, repo)
            })
        }
        Route::Manifest(repo, reference)
            if *method == Method::DELETE && status == StatusCode::ACCEPTED =>
        {
            let (digest, tag) = match reference {
                Reference::Digest(d) => (Some(d.to_string()), None),
                Reference::Tag(t) => (None, Some(t.to_string())),
            };
            Some(RegistryEvent {
                digest,
                tag,
                ..event(Action::Delete, Target::Manifest, repo)
            })
        }
        Route::Blob(repo, d)
            if *method == Method::GET
                && matches!(
                    status,
                    StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::TEMPORARY_REDIRECT
                ) =>
        {
            Some(RegistryEvent {
                digest: Some(d.to_string()),
                media_type: Some("application/octet-stream".into()),
                ..event(Action::Pull, Target::Blob, repo)
            })
        }
        Route::Blob(repo, d) if *method == Method::DELETE && status == StatusCode::ACCEPTED => {
            Some(RegistryEvent {
                digest: Some(d.to_string()),
                ..event(Action::Delete, Target::Blob, repo)
            })
        }
        // A monolithic `POST ?digest=` carries the whole blob; a mount carries nothing.
        Route::UploadStart(repo) if *method == Method::POST && status == StatusCode::CREATED => {
            Some(RegistryEvent {
                media_type: Some("application/octet-stream".into()),
                size: (received > 0).then_some(received),
                ..event(Action::Push, Target::Blob, repo)
            })
        }
        Route::Upload(repo, _) if *method == Method::PUT && status == StatusCode::CREATED => {
            Some(RegistryEvent {
                media_type: Some("application/octet-stream".into()),
                ..event(Action::Push, Target::Blob, repo)
            })
        }
        _ => None,
    }
}
