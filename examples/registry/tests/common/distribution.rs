//! CNCF distribution (Debian's `docker-registry`) as a peer for the import tests.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use test_support::seaweedfs::SeaweedFs;

/// Starts `docker-registry serve` with its files under `root`; returns it and its address.
pub fn start_distribution(dir: &Path, root: &Path) -> (std::process::Child, String) {
    let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
    start_with_storage(dir, &storage, None)
}

/// Like [`start_distribution`], with its access log (one line per request, in the
/// combined log format, which distribution writes to its stdout) kept in a file; returns
/// it, its address and the access log's path.
pub fn start_distribution_logged(
    dir: &Path,
    root: &Path,
) -> (std::process::Child, String, PathBuf) {
    let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
    let access_log = dir.join("distribution-access.log");
    let (child, addr) = start_with_storage(dir, &storage, Some(&access_log));
    (child, addr, access_log)
}

/// Starts `docker-registry serve` with its `s3` driver on `s3`'s bucket, under the key
/// prefix `rootdirectory`; returns it and its address.
pub fn start_distribution_s3(
    dir: &Path,
    s3: &SeaweedFs,
    rootdirectory: &str,
) -> (std::process::Child, String) {
    // Distribution 2.8 has no path-style switch: SeaweedFS serves path-style requests on
    // its endpoint, which is what the driver sends to a `regionendpoint` it cannot put a
    // bucket name in front of (an IP address).
    let storage = format!(
        "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: {}\n    regionendpoint: {}\n    \
         bucket: {}\n    rootdirectory: /{}\n    secure: false\n    v4auth: true\n  \
         redirect:\n    disable: true\n",
        s3.access_key,
        s3.secret_key,
        s3.region,
        s3.endpoint,
        s3.bucket,
        rootdirectory.trim_matches('/'),
    );
    start_with_storage(dir, &storage, None)
}

/// `storage:` is the YAML of the `storage:` section (minus the `delete:` part), indented
/// by two spaces. The access log does not depend on `log.level` (only errors go to
/// stderr); it goes to `access_log` when given, and nowhere otherwise.
fn start_with_storage(
    dir: &Path,
    storage: &str,
    access_log: Option<&Path>,
) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("distribution.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n{storage}  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
        ),
    )
    .unwrap();
    let log = dir.join("distribution.log");
    let stdout = match access_log {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        // With AWS_CA_BUNDLE set (some CI images set it), the AWS SDK of distribution
        // 2.8 refuses to start its s3 driver ("unable to load custom CA bundle"); the
        // endpoint is plain HTTP anyway.
        .env_remove("AWS_CA_BUNDLE")
        .stdout(stdout)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect(
            "docker-registry is needed: apt-get install docker-registry (scripts/ci-deps.sh does)",
        );
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return (child, addr);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "docker-registry exited at start ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("docker-registry did not start on {addr}");
}
