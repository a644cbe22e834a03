//! The shared behaviour suite. Each case is a `pub async fn` taking the store under test;
//! the macros in each module turn every case into its own `#[tokio::test]` in a backend
//! crate, so a failure names both the case and the backend.

pub mod blob;
pub mod gc;
pub mod insights;
pub mod metadata;
pub mod pulls;
pub mod quotas;
pub mod recovery;
pub mod upload;
