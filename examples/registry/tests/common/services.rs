//! Real backing services for the backend-matrix, replica and fault tests: one SeaweedFS (S3)
//! and one PostgreSQL per test binary, started on first use and shared by every test of the
//! binary; each test gets its own S3 prefix and its own database, so tests stay independent.
//!
//! Both services are kept in `static`s and never dropped: their scripts' watchers stop them
//! when the test process exits.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use test_support::postgres::Postgres;
use test_support::seaweedfs::SeaweedFs;

use super::{Server, registry_command};

/// The SeaweedFS of this test binary.
pub fn seaweedfs() -> &'static SeaweedFs {
    static SERVER: OnceLock<SeaweedFs> = OnceLock::new();
    SERVER.get_or_init(SeaweedFs::start)
}

/// The PostgreSQL cluster of this test binary.
pub fn postgres() -> &'static Postgres {
    Postgres::shared()
}

/// Where blobs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blobs {
    Fs,
    S3,
}

/// Where metadata goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Sqlite,
    Postgres,
}

/// The `--storage` and `--metadata` URLs of one set of (empty, private) stores.
#[derive(Debug, Clone)]
pub struct Backends {
    pub blobs: Blobs,
    pub meta: Meta,
    pub storage: String,
    pub metadata: String,
}

impl Backends {
    /// Fresh, empty stores of the given kinds: a folder (under `dir`) or an S3 prefix of
    /// its own, a SQLite file (under `dir`) or a database of its own. `label` makes the
    /// names readable in logs; a counter makes them unique.
    pub fn fresh(blobs: Blobs, meta: Meta, label: &str, dir: &Path) -> Backends {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name: String = label
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '_',
            })
            .collect();
        let name = format!("{name}_{n}");
        let storage = match blobs {
            Blobs::Fs => format!("fs://{}", dir.join(format!("blobs-{name}")).display()),
            Blobs::S3 => seaweedfs().url(&format!("registry/{name}")),
        };
        let metadata = match meta {
            Meta::Sqlite => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
            Meta::Postgres => postgres().unique_database(&name),
        };
        Backends {
            blobs,
            meta,
            storage,
            metadata,
        }
    }

    /// `registry serve` on a free loopback port on these stores, with the background
    /// garbage collector off, plus `extra` flags.
    pub fn serve(&self, extra: &[&str]) -> Server {
        Server::spawn(self.command(extra))
    }

    /// The command [`Backends::serve`] runs.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut args = vec!["--listen", "127.0.0.1:0", "--gc-interval", "off"];
        args.extend_from_slice(extra);
        self.subcommand("serve", &args)
    }

    /// `registry NAME --storage .. --metadata .. EXTRA` on these stores (no `--storage`
    /// for `stats`), with the S3 credentials in its environment.
    pub fn subcommand(&self, name: &str, extra: &[&str]) -> Command {
        let mut cmd = registry_command();
        cmd.arg(name);
        // `stats` reads the metadata store alone and takes no --storage.
        if name != "stats" {
            cmd.args(["--storage", &self.storage]);
        }
        cmd.args(["--metadata", &self.metadata]).args(extra);
        for var in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"] {
            cmd.env_remove(var);
        }
        if self.blobs == Blobs::S3 {
            let s3 = seaweedfs();
            cmd.env("AWS_ACCESS_KEY_ID", &s3.access_key)
                .env("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
        }
        cmd
    }
}

/// Runs the whole conformance harness against `base` and asserts every check passed.
/// Returns the number of checks that ran.
pub async fn assert_conformance(base: &str, namespace: &str, what: &str) -> usize {
    let harness = oci_conformance::Harness::new(base, None, namespace).expect("harness");
    let report = harness.run_all().await;
    assert!(
        report.passed() > 30,
        "{what}: too few conformance checks ran:\n{report}"
    );
    assert_eq!(
        report.failed(),
        0,
        "{what}: conformance failures:\n{}",
        report
            .failures()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    report.checks.len()
}
