//! The harness tested against a reference registry: CNCF distribution 2.8
//! (`docker-registry`, e.g. Debian's package). A harness that cannot fail is
//! worthless, so this pins both directions: the checks distribution 2.8 is known
//! to fail must fail, and every other check must pass. Skipped when
//! `docker-registry` is not on PATH or is not version 2.8.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Failures observed against docker-registry 2.8.2 (see tests/README.md for why).
const EXPECTED_FAILURES: [&str; 10] = [
    "pull.blob-get-invalid-range",
    "push.blob-patch-out-of-order",
    "push.manifest-put-subject",
    "discovery.tags-list",
    "discovery.tags-list-paginated",
    "discovery.tags-list-last",
    "discovery.referrers-list",
    "discovery.referrers-filter",
    "discovery.referrers-unknown-subject",
    "management.tag-delete",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_2_8_fails_exactly_the_known_checks() {
    let version = match Command::new("docker-registry").arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => panic!(
            "docker-registry (CNCF distribution 2.8) is needed to prove the harness can fail: \
             apt-get install docker-registry (scripts/ci-deps.sh does): {e}"
        ),
    };
    // The expected failures are those of 2.8; another version is a different baseline.
    assert!(
        version.contains(" 2.8."),
        "expected docker-registry 2.8, found {version:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // Built before the registry starts, so nothing can panic while it runs.
    let harness =
        oci_conformance::Harness::new(&format!("http://127.0.0.1:{port}"), None, "selftest")
            .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let report = if up {
        Some(harness.run_all().await)
    } else {
        None
    };
    let _ = registry.kill();
    let _ = registry.wait();

    let report = report.expect("docker-registry did not start listening");
    let failed: BTreeSet<String> = report.failures().map(|c| c.id()).collect();
    let expected: BTreeSet<String> = EXPECTED_FAILURES.iter().map(|s| s.to_string()).collect();
    assert_eq!(failed, expected, "{report}");
    assert!(report.passed() >= 40, "{report}");
}
