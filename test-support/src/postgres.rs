//! PostgreSQL fixture: a throwaway cluster started by `scripts/postgres.sh` in a temporary
//! folder, listening on a free loopback port with trust authentication.
//!
//! ```no_run
//! use test_support::postgres::Postgres;
//!
//! // One server per test binary, started on first use.
//! let pg = Postgres::shared();
//! // The `registry` database, shared by every test of the binary...
//! let url = &pg.url;
//! // ...or a fresh, empty database of its own for a test that needs one.
//! let fresh = pg.unique_database("migrations");
//! # let _ = (url, fresh);
//! ```
//!
//! Running it needs the PostgreSQL server binaries (Debian: `apt-get install postgresql`).
//! When the tests run as root, the script runs the server as the `postgres` user.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

/// A running PostgreSQL cluster, stopped (and its folder removed) on drop.
///
/// The script also leaves a watchdog that stops the cluster when this process exits, so
/// the [`shared`](Postgres::shared) instance, which lives in a `static` and is never
/// dropped, does not outlive the test binary either.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/registry`.
    pub url: String,
    port: u16,
    dir: TempDir,
}

const INSTALL_HINT: &str = "the PostgreSQL tests need the PostgreSQL server binaries \
     (initdb, pg_ctl, postgres, createdb) on PATH, in $PG_BIN or in /usr/lib/postgresql/*/bin; \
     on Debian/Ubuntu: apt-get install postgresql";

impl Postgres {
    /// Starts a new cluster with a database `registry`.
    ///
    /// # Panics
    /// If the server binaries are missing (with what to install) or the cluster does not
    /// start (with the script's output).
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("pg-")
            .tempdir_in(std::env::temp_dir())
            .unwrap_or_else(|e| panic!("create a temporary folder for PostgreSQL: {e}"));
        let pid = std::process::id().to_string();
        let out = script(&[
            "start",
            path_str(dir.path()),
            "--stop-with-pid",
            pid.as_str(),
        ]);
        let url = line_value(&out, "DATABASE_URL")
            .unwrap_or_else(|| panic!("scripts/postgres.sh printed no DATABASE_URL:\n{out}"));
        let port = line_value(&out, "PGPORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("scripts/postgres.sh printed no PGPORT:\n{out}"));
        Postgres { url, port, dir }
    }

    /// The cluster every test of this binary shares, started on first use.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates the empty database `name` (`[a-z_][a-z0-9_]*`, at most 63 bytes) and
    /// returns its URL.
    ///
    /// # Panics
    /// If the name is invalid or taken, or the server is not running.
    pub fn create_database(&self, name: &str) -> String {
        let out = script(&["createdb", path_str(self.dir.path()), name]);
        line_value(&out, "DATABASE_URL").unwrap_or_else(|| {
            panic!("scripts/postgres.sh createdb printed no DATABASE_URL:\n{out}")
        })
    }

    /// Creates a database with a name of its own, starting with `label`, and returns its
    /// URL: for tests that need an empty database (migrations) rather than a prefix.
    pub fn unique_database(&self, label: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '_' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '_',
            })
            .take(40)
            .collect();
        self.create_database(&format!("t_{label}_{n}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let status = Command::new("bash")
            .arg(crate::workspace_root().join("scripts/postgres.sh"))
            .args(["stop", path_str(self.dir.path())])
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("scripts/postgres.sh stop exited with {s}"),
            Err(e) => eprintln!("scripts/postgres.sh stop: {e}"),
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("temporary folder {} is not UTF-8", p.display()))
}

/// Runs `scripts/postgres.sh ARGS` and returns its stdout, panicking with its output (and
/// what to install, when the binaries are missing) if it fails.
fn script(args: &[&str]) -> String {
    let path = crate::workspace_root().join("scripts/postgres.sh");
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (is bash installed?)", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("not found") {
            panic!("{INSTALL_HINT}\n\nscripts/postgres.sh said:\n{stderr}");
        }
        panic!(
            "scripts/postgres.sh {} failed ({}):\n{stdout}{stderr}",
            args.join(" "),
            out.status
        );
    }
    stdout
}

fn line_value(out: &str, key: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}
