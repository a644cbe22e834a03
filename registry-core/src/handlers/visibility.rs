//! Which repositories a caller may see in registry-wide answers (`_catalog`, the
//! insights): those it may pull.

use std::collections::HashMap;

use oci_spec_types::RepositoryName;

use crate::auth::{Action, Authorizer, Principal, effective_actions};
use crate::exchange::{Call, Result};

/// Pull permission per repository name, asked once per name and request.
pub(crate) struct Visibility<'a> {
    authorizer: &'a dyn Authorizer,
    principal: Principal,
    /// With a bearer token, its grants count too (the insights); the catalog asks the
    /// authorizer alone, as distribution does, since a `registry:catalog:*` token names
    /// no repository.
    with_grants: bool,
    known: HashMap<String, bool>,
}

impl<'a> Visibility<'a> {
    /// For the catalog: the authorizer decides.
    pub(crate) fn catalog(call: Call<'a>) -> Self {
        Self::new(call, false)
    }

    /// For the insights: the authorizer and the token's grants decide, exactly as for a
    /// pull of the repository itself.
    pub(crate) fn insights(call: Call<'a>) -> Self {
        Self::new(call, true)
    }

    fn new(call: Call<'a>, with_grants: bool) -> Self {
        Visibility {
            authorizer: call.inner.config.authorizer.as_ref(),
            principal: call.principal.cloned().unwrap_or_default(),
            with_grants,
            known: HashMap::new(),
        }
    }

    /// For the web UI: as the insights decide (the authorizer and the token's grants).
    pub(crate) fn of_principal(inner: &'a crate::Inner, principal: Principal) -> Self {
        Visibility {
            authorizer: inner.config.authorizer.as_ref(),
            principal,
            with_grants: true,
            known: HashMap::new(),
        }
    }

    pub(crate) async fn may_pull(&mut self, name: &str) -> Result<bool> {
        if let Some(&known) = self.known.get(name) {
            return Ok(known);
        }
        // A name the grammar refuses cannot be pulled, so it is not shown either.
        let visible = match name.parse::<RepositoryName>() {
            Ok(repo) if self.with_grants => {
                effective_actions(self.authorizer, &self.principal, &repo)
                    .await?
                    .contains(Action::Pull)
            }
            Ok(repo) => self
                .authorizer
                .allowed(&self.principal, &repo)
                .await?
                .contains(Action::Pull),
            Err(_) => false,
        };
        self.known.insert(name.to_string(), visible);
        Ok(visible)
    }

    /// Keeps the items whose repository may be pulled.
    pub(crate) async fn retain<T>(
        &mut self,
        items: Vec<T>,
        name: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>> {
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            if self.may_pull(name(&item)).await? {
                kept.push(item);
            }
        }
        Ok(kept)
    }
}
