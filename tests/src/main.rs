//! `oci-conformance`: run the OCI distribution-spec conformance workflows
//! against a registry and print one line per check.
//!
//! ```text
//! oci-conformance --url http://127.0.0.1:5000 [--user U --password P] [--namespace NAME] [--workflow pull ...]
//! ```
//!
//! Prints `PASS <check>` or `FAIL <check>: <reason>` as checks finish, then
//! `N passed, M failed`; exits 1 when a check failed, 2 on a usage error.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use oci_conformance::{Harness, Workflow};

#[derive(Debug, Parser)]
#[command(name = "oci-conformance", version, about)]
struct Args {
    /// Base URL of the registry, e.g. http://127.0.0.1:5000
    #[arg(long, env = "OCI_ROOT_URL")]
    url: String,
    /// User name for Basic auth or token auth.
    #[arg(long, env = "OCI_USERNAME", requires = "password")]
    user: Option<String>,
    /// Password for --user.
    #[arg(long, env = "OCI_PASSWORD", requires = "user", hide_env_values = true)]
    password: Option<String>,
    /// Repository prefix; each run adds a random component below it.
    #[arg(long, default_value = "conformance")]
    namespace: String,
    /// Run only these workflows (pull, push, discovery, management, extras); repeatable.
    #[arg(long = "workflow", value_name = "WORKFLOW")]
    workflows: Vec<Workflow>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let credentials = args.user.zip(args.password);
    let harness = match Harness::new(&args.url, credentials, &args.namespace) {
        Ok(h) if args.workflows.is_empty() => h,
        Ok(h) => h.with_workflows(&args.workflows),
        Err(e) => {
            eprintln!("oci-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    // Write errors (a closed pipe, as with `| head`) must not abort the run.
    let report = harness
        .run_with(|check| {
            let _ = writeln!(std::io::stdout(), "{check}");
        })
        .await;
    let _ = writeln!(std::io::stdout(), "{}", report.summary());
    if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
