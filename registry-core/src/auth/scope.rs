//! The access a request needs, computed from its parsed route and method.

use http::Method;
use oci_spec_types::RepositoryName;

use super::{Action, Actions};
use crate::request::ApiRequest;
use crate::route::{Extension, Route};

/// What a request needs to be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// `/v2/`: the caller must be someone the registry accepts; no repository involved.
    Base,
    /// `/v2/_catalog`: registry-wide listing, filtered to what the caller may pull.
    Catalog,
    /// Actions on one repository. `mount_from` is the source of a cross-repository mount,
    /// which needs pull there (or the mount is dropped, see the module docs).
    Repository {
        /// The repository.
        name: RepositoryName,
        /// What the request needs there.
        actions: Actions,
        /// The source repository of a cross-repository mount.
        mount_from: Option<RepositoryName>,
    },
}

impl Access {
    /// The access a decoded request needs: a function of the one value every layer
    /// reads, so the mount source checked here is the one the handler mounts from.
    ///
    /// Upload sessions need push for every method, status and cancellation included: they
    /// are part of pushing, and the session id alone must not be a capability.
    pub fn of(request: &ApiRequest) -> Access {
        let method = &request.method;
        let by_method = if request.is_read() {
            Action::Pull
        } else if method == Method::DELETE {
            Action::Delete
        } else {
            Action::Push
        };
        let repo = |name: &RepositoryName, action: Action| Access::Repository {
            name: name.clone(),
            actions: action.into(),
            mount_from: None,
        };
        match &request.route {
            Route::Base => Access::Base,
            // A repository's own tags listing needs pull there; the registry-wide
            // insights need catalog access and are filtered to what the caller may pull.
            Route::Extension(Extension::Tags(n)) => repo(n, Action::Pull),
            Route::Catalog | Route::Extension(_) => Access::Catalog,
            Route::Tags(n) | Route::Manifest(n, _) | Route::Blob(n, _) | Route::Referrers(n, _) => {
                repo(n, by_method)
            }
            Route::Upload(n, _) => repo(n, Action::Push),
            Route::UploadStart(n) => Access::Repository {
                name: n.clone(),
                actions: Action::Push.into(),
                mount_from: request
                    .params
                    .mount
                    .as_ref()
                    .map(|m| m.from.clone())
                    .filter(|from| from != n),
            },
        }
    }

    /// The Docker token scopes that would cover this access, for the `scope` parameter of
    /// a Bearer challenge: `repository:NAME:ACTIONS`, `registry:catalog:*`. Push asks for
    /// pull too, as Docker clients do, since a push reads back what it wrote.
    pub fn token_scopes(&self) -> Vec<String> {
        match self {
            Access::Base => Vec::new(),
            Access::Catalog => vec!["registry:catalog:*".into()],
            Access::Repository {
                name,
                actions,
                mount_from,
            } => {
                let mut wanted = *actions;
                if wanted.contains(Action::Push) {
                    wanted = wanted.with(Action::Pull);
                }
                let mut scopes = vec![format!("repository:{name}:{wanted}")];
                if let Some(from) = mount_from {
                    scopes.push(format!("repository:{from}:pull"));
                }
                scopes
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(method: Method, path: &str) -> Access {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .map(http::Request::into_parts);
        match request.map(|(parts, ())| ApiRequest::decode(&parts)) {
            Ok(Ok(Some(r))) => Access::of(&r),
            _ => Access::Base,
        }
    }

    #[test]
    fn scopes_by_route_and_method() {
        let d = oci_spec_types::Digest::sha256_of(b"x");
        let scopes = |m, p: &str| access(m, p).token_scopes();
        assert_eq!(scopes(Method::GET, "/v2/"), Vec::<String>::new());
        assert_eq!(scopes(Method::GET, "/v2/_catalog"), ["registry:catalog:*"]);
        assert_eq!(
            scopes(Method::HEAD, "/v2/a/b/manifests/latest"),
            ["repository:a/b:pull"]
        );
        assert_eq!(
            scopes(Method::PUT, "/v2/a/manifests/latest"),
            ["repository:a:pull,push"]
        );
        assert_eq!(
            scopes(Method::DELETE, &format!("/v2/a/blobs/{d}")),
            ["repository:a:delete"]
        );
        assert_eq!(
            scopes(Method::DELETE, "/v2/a/blobs/uploads/abc"),
            ["repository:a:pull,push"]
        );
        assert_eq!(
            scopes(Method::GET, "/v2/a/blobs/uploads/abc"),
            ["repository:a:pull,push"]
        );
        assert_eq!(
            scopes(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?mount={d}&from=b/c")
            ),
            ["repository:a:pull,push", "repository:b/c:pull"]
        );
        // An invalid `from` is no mount at all (the handler sees none either).
        assert_eq!(
            scopes(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?mount={d}&from=B")
            ),
            ["repository:a:pull,push"]
        );
    }
}
