//! Which upload sessions have a request in flight in this process.
//!
//! Two requests writing the same session at once would interleave bytes at the same
//! offset; the offset compare-and-swap in the metadata store would reject one of them, but
//! only after both had written. Claiming the session first refuses the second request up
//! front. (Across replicas the compare-and-swap remains the guard; a shared lease is the
//! PostgreSQL store's job.)

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use oci_spec_types::ErrorCode;

use crate::error::RegistryError;

#[derive(Debug, Default, Clone)]
pub(crate) struct Claims(Arc<Mutex<HashSet<String>>>);

#[derive(Debug)]
pub(crate) struct Claim {
    locks: Claims,
    id: String,
}

impl Claims {
    pub(crate) fn claim(&self, id: &str) -> Result<Claim, RegistryError> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(id.to_string()) {
            return Err(RegistryError::oci(
                ErrorCode::BlobUploadInvalid,
                "another request is writing to this upload session",
            ));
        }
        Ok(Claim {
            locks: self.clone(),
            id: id.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.locks.0.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_fails_until_first_is_dropped() {
        let locks = Claims::default();
        let g = locks.claim("a").unwrap();
        assert!(locks.claim("a").is_err());
        assert!(locks.claim("b").is_ok());
        drop(g);
        assert!(locks.claim("a").is_ok());
    }
}
