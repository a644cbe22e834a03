//! `oci-conformance` runs the OCI distribution-spec workflows (pull, push,
//! content discovery, content management) plus a few behaviours real clients
//! rely on, against any registry reachable over HTTP, and reports one result
//! per check. It speaks only HTTP, so it tests ours, CNCF distribution or zot
//! alike.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oci_conformance::HarnessError> {
//! let harness = oci_conformance::Harness::new("http://127.0.0.1:5000", None, "conformance")?;
//! let report = harness.run_all().await;
//! for failure in report.failures() {
//!     eprintln!("{failure}");
//! }
//! assert_eq!(report.failed(), 0, "{report}");
//! # Ok(())
//! # }
//! ```
//!
//! Every run pushes into fresh repositories named `<namespace>/<random>/<workflow>`,
//! so runs never collide and a registry may be shared. A check never panics: an
//! unexpected response is a failed check with a reason, and later checks still
//! run. The command-line tool `oci-conformance` wraps [`Harness`]; see the
//! crate's README for the list of checks.
//!
//! Only `http://` URLs are supported (the workspace builds `reqwest` without TLS).

mod client;
mod discovery;
mod expect;
mod extras;
mod fixtures;
mod management;
mod ops;
mod pull;
mod push;
mod report;

use std::time::Duration;

pub use report::{CheckResult, Outcome, Report, Workflow};

use client::Client;
use report::Recorder;

/// Why a [`Harness`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The base URL does not parse or is not `http://`.
    #[error("invalid registry URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The namespace is not a valid repository name prefix.
    #[error(
        "invalid namespace {0:?}: expected lowercase path components like `conformance` or `team/ci`"
    )]
    InvalidNamespace(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Runs conformance checks against one registry.
#[derive(Debug)]
pub struct Harness {
    client: Client,
    namespace: String,
    workflows: Vec<Workflow>,
}

impl Harness {
    /// A harness for the registry at `base_url` (e.g. `http://127.0.0.1:5000`).
    ///
    /// `credentials` are sent as Basic auth, or exchanged for a token when the
    /// registry answers with a `Bearer` challenge. Repositories are created
    /// under `namespace` (e.g. `conformance`).
    pub fn new(
        base_url: &str,
        credentials: Option<(String, String)>,
        namespace: &str,
    ) -> Result<Self, HarnessError> {
        let invalid = |reason: String| HarnessError::InvalidUrl {
            url: base_url.to_owned(),
            reason,
        };
        let base = reqwest::Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if base.scheme() != "http" {
            return Err(invalid("only http:// is supported".to_owned()));
        }
        if !valid_namespace(namespace) {
            return Err(HarnessError::InvalidNamespace(namespace.to_owned()));
        }
        Ok(Harness {
            client: Client::new(base, credentials, Duration::from_secs(120))?,
            namespace: namespace.to_owned(),
            workflows: Workflow::ALL.to_vec(),
        })
    }

    /// Runs only these workflows (in the order given).
    pub fn with_workflows(mut self, workflows: &[Workflow]) -> Self {
        self.workflows = workflows.to_vec();
        self
    }

    /// Runs every selected workflow and returns all results.
    pub async fn run_all(&self) -> Report {
        self.run_with(|_| {}).await
    }

    /// Like [`Harness::run_all`], calling `on_result` as each check finishes
    /// (the command-line tool prints progress this way).
    pub async fn run_with(&self, mut on_result: impl FnMut(&CheckResult)) -> Report {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let ctx = Ctx {
            client: &self.client,
            prefix: format!("{}/{}", self.namespace, &run_id[..12]),
        };
        let mut checks = Vec::new();
        for workflow in &self.workflows {
            let mut rec = Recorder::new(*workflow, &mut checks, &mut on_result);
            match workflow {
                Workflow::Pull => pull::run(&ctx, &mut rec).await,
                Workflow::Push => push::run(&ctx, &mut rec).await,
                Workflow::ContentDiscovery => discovery::run(&ctx, &mut rec).await,
                Workflow::ContentManagement => management::run(&ctx, &mut rec).await,
                Workflow::Extras => extras::run(&ctx, &mut rec).await,
            }
        }
        Report { checks }
    }
}

/// What every workflow needs: the client and this run's repository prefix.
pub(crate) struct Ctx<'a> {
    pub(crate) client: &'a Client,
    prefix: String,
}

impl Ctx<'_> {
    /// This run's repository called `name`.
    pub(crate) fn repo(&self, name: &str) -> String {
        format!("{}/{}", self.prefix, name)
    }
}

/// Each `/`-separated component matches `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.split('/').all(|component| {
            let bytes = component.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            let sep = |b: &u8| matches!(b, b'.' | b'_' | b'-');
            bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || sep(b))
                && !bytes
                    .windows(2)
                    .any(|w| sep(&w[0]) && sep(&w[1]) && !(w == b"__" || w == b"--"))
                && !component.contains("___")
        })
}

#[cfg(test)]
mod unit {
    use super::valid_namespace;

    #[test]
    fn namespaces() {
        for ok in ["conformance", "team/ci", "a.b", "a__b", "a---b", "x1"] {
            assert!(valid_namespace(ok), "{ok}");
        }
        for bad in [
            "", "Upper", "a//b", "-a", "a-", "a..b", "a_.b", "a___b", "a/",
        ] {
            assert!(!valid_namespace(bad), "{bad}");
        }
    }
}
