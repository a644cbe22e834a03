//! Results of a run: one [`CheckResult`] per check, gathered in a [`Report`].

use std::fmt;
use std::future::Future;
use std::str::FromStr;

/// The distribution-spec workflow a check belongs to (plus our `extras`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Workflow {
    /// Pulling manifests and blobs, error codes for unknown or invalid things.
    Pull,
    /// Blob uploads (monolithic, streamed, chunked, mount) and manifest pushes.
    Push,
    /// Tags list, catalog, referrers, and their pagination.
    ContentDiscovery,
    /// Deleting tags, manifests and blobs.
    ContentManagement,
    /// Behaviour that real clients (docker, containerd, oras) rely on.
    Extras,
}

impl Workflow {
    /// Every workflow, in the order [`crate::Harness::run_all`] runs them.
    pub const ALL: [Workflow; 5] = [
        Workflow::Pull,
        Workflow::Push,
        Workflow::ContentDiscovery,
        Workflow::ContentManagement,
        Workflow::Extras,
    ];

    /// Short name used in check ids (`pull`, `push`, `discovery`, `management`, `extras`).
    pub fn as_str(self) -> &'static str {
        match self {
            Workflow::Pull => "pull",
            Workflow::Push => "push",
            Workflow::ContentDiscovery => "discovery",
            Workflow::ContentManagement => "management",
            Workflow::Extras => "extras",
        }
    }
}

impl fmt::Display for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Workflow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workflow::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown workflow {s:?} (expected pull, push, discovery, management or extras)"
                )
            })
    }
}

/// Whether a check passed, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The registry behaved as the spec requires.
    Pass,
    /// The registry did not; the string says what was expected and what came back.
    Fail(String),
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckResult {
    /// The check's name within its workflow, e.g. `manifest-get-by-tag`.
    pub name: String,
    /// The workflow the check belongs to.
    pub workflow: Workflow,
    /// Pass, or fail with a reason.
    pub outcome: Outcome,
}

impl CheckResult {
    /// `workflow.name`, e.g. `pull.manifest-get-by-tag`: unique within a run.
    pub fn id(&self) -> String {
        format!("{}.{}", self.workflow, self.name)
    }

    /// True when the outcome is [`Outcome::Pass`].
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }
}

/// `PASS <id>` or `FAIL <id>: <reason>`, always one line.
impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass => write!(f, "PASS {}", self.id()),
            Outcome::Fail(reason) => write!(f, "FAIL {}: {}", self.id(), reason),
        }
    }
}

/// Every check of a run, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The results, in run order.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Number of checks that passed.
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed()).count()
    }

    /// Number of checks that failed.
    pub fn failed(&self) -> usize {
        self.checks.len() - self.passed()
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed())
    }

    /// True when no check failed.
    pub fn is_success(&self) -> bool {
        self.failed() == 0
    }

    /// The summary line: `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

/// One line per check, then the summary line.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        write!(f, "{}", self.summary())
    }
}

/// What a check body returns: `Err` carries the failure reason.
pub(crate) type Check = Result<(), String>;

/// Runs check bodies of one workflow and records their outcomes.
pub(crate) struct Recorder<'a> {
    workflow: Workflow,
    checks: &'a mut Vec<CheckResult>,
    on_result: &'a mut dyn FnMut(&CheckResult),
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(
        workflow: Workflow,
        checks: &'a mut Vec<CheckResult>,
        on_result: &'a mut dyn FnMut(&CheckResult),
    ) -> Self {
        Recorder {
            workflow,
            checks,
            on_result,
        }
    }

    /// Runs one check to completion and records it; returns whether it passed,
    /// so later checks can depend on a setup step without aborting the run.
    pub(crate) async fn check(&mut self, name: &str, body: impl Future<Output = Check>) -> bool {
        let outcome = match body.await {
            Ok(()) => Outcome::Pass,
            // Reasons often quote response bodies; keep the output one line per check.
            Err(reason) => Outcome::Fail(reason.split_whitespace().collect::<Vec<_>>().join(" ")),
        };
        let result = CheckResult {
            name: name.to_owned(),
            workflow: self.workflow,
            outcome,
        };
        let passed = result.passed();
        (self.on_result)(&result);
        self.checks.push(result);
        passed
    }
}

/// Fails a check that depends on a setup step that failed.
pub(crate) fn needs(setup_passed: bool, setup: &str) -> Check {
    if setup_passed {
        Ok(())
    } else {
        Err(format!("not run: setup check `{setup}` failed"))
    }
}
