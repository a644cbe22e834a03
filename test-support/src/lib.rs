//! Real services for tests, started on loopback in a temporary folder and stopped on drop.
//!
//! Each fixture runs the matching script in `scripts/` (the same scripts a person uses by
//! hand), so there is one way to start each service. A missing binary is a test failure
//! with a message saying what to install, never a silent skip.

pub mod postgres;
pub mod seaweedfs;

/// The workspace root (scripts live in `<root>/scripts`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}
