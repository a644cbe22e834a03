//! `--pull-rate-limit` against the real binary: the server keys anonymous callers by the
//! address the connection came from (127.0.0.1 and 127.0.0.2 are both loopback), so one
//! client over its limit does not hold back another.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use common::{Server, registry_command, tempdir};

fn client_from(addr: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn anonymous_callers_are_limited_per_client_address() {
    let dir = tempdir();
    let mut cmd = registry_command();
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--storage")
        .arg(dir.path().join("blobs"))
        .arg("--metadata")
        .arg(dir.path().join("registry.db"))
        .args(["--pull-rate-limit", "1/1h"]);
    let server = Server::spawn(cmd);
    let url = format!("{}/v2/lib/app/manifests/v1", server.base);

    let first = client_from("127.0.0.1");
    let r = first.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404, "a pull of a missing manifest still spends");
    assert_eq!(r.headers()["ratelimit-limit"], "1;w=3600");
    assert_eq!(r.headers()["ratelimit-remaining"], "0;w=3600");
    let r = first.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&wait), "Retry-After {wait}");
    assert!(r.text().await.unwrap().contains("TOOMANYREQUESTS"));

    let other = client_from("127.0.0.2");
    assert_eq!(other.get(&url).send().await.unwrap().status(), 404);
}

#[test]
fn a_malformed_rate_limit_is_refused_at_start() {
    let dir = tempdir();
    let out = registry_command()
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--storage")
        .arg(dir.path().join("blobs"))
        .arg("--metadata")
        .arg(dir.path().join("registry.db"))
        .args(["--pull-rate-limit", "100 per hour"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pull-rate-limit"), "{stderr}");
}
