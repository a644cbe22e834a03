//! One module per page: each admits the caller, reads the stores, fills its template.

pub(super) mod manifest;
pub(super) mod repositories;
pub(super) mod repository;
pub(super) mod storage;
pub(super) mod summary;

use http::request::Parts;
use oci_spec_types::{ErrorCode, RepositoryName};
use storage_traits::{InsightsMetadata, Pulls};

use super::UiState;
use crate::auth::{Access, Action, Principal};
use crate::error::RegistryError;

/// The name shown as signed in.
pub(super) fn user_of(principal: &Principal) -> Option<String> {
    principal.name.clone()
}

/// Whether logging in could change anything (not with the `Anonymous` authenticator).
pub(super) fn can_log_in(state: &UiState) -> bool {
    state.inner.config.authenticator.identifies_callers()
}

/// The host the browser used, for pull commands (`Host`, else `localhost`).
pub(super) fn host_of(parts: &Parts) -> String {
    parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map_or_else(|| "localhost".to_string(), str::to_string)
}

pub(super) fn insights(state: &UiState) -> Result<&dyn InsightsMetadata, RegistryError> {
    state.inner.metadata.insights().ok_or_else(|| {
        RegistryError::oci(
            ErrorCode::Unsupported,
            "this metadata store does not answer the listings the UI shows",
        )
    })
}

/// Pull access to one repository, decided as for a pull through the API.
pub(super) fn pull(repo: &RepositoryName) -> Access {
    Access::Repository {
        name: repo.clone(),
        actions: Action::Pull.into(),
        mount_from: None,
    }
}

/// Whether the caller may delete in `repo` (then the page offers it).
pub(super) async fn may_delete(
    state: &UiState,
    principal: &Principal,
    repo: &RepositoryName,
) -> Result<bool, RegistryError> {
    Ok(
        crate::auth::effective_actions(state.inner.config.authorizer.as_ref(), principal, repo)
            .await?
            .contains(Action::Delete),
    )
}

/// The repository's pull figures (zeros when the store keeps none).
pub(super) async fn repository_pulls(
    state: &UiState,
    repo: &RepositoryName,
) -> Result<Pulls, RegistryError> {
    Ok(match state.inner.metadata.pulls() {
        Some(p) => p
            .repository_pulls(std::slice::from_ref(repo))
            .await?
            .into_iter()
            .next()
            .unwrap_or_default(),
        None => Pulls::default(),
    })
}
