//! The `token-server` binary: `--help` and `--version` answer, a missing or unreadable
//! configuration is a clear error, and with a real configuration (a P-256 key made by
//! rcgen, a bcrypt htpasswd) it serves tokens on the address given with `--listen`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_token-server");

#[test]
fn help_describes_the_command() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", out.status);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: token-server"), "{help}");
    assert!(help.contains("<CONFIG>"), "{help}");
    assert!(help.contains("--listen"), "{help}");
    assert!(
        help.contains("private_key"),
        "names the file's keys: {help}"
    );
    assert!(!help.contains("cannot read"), "{help}");

    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("token-server "));
}

#[test]
fn a_missing_configuration_is_a_clear_error() {
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<CONFIG>"), "{err}");

    let out = Command::new(BIN)
        .arg("/nonexistent/token.toml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read /nonexistent/token.toml"), "{err}");
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_tokens_on_the_listen_flags_address() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("token.key"), key.serialize_pem()).unwrap();
    let hash = bcrypt::hash("secret", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
    let config = dir.path().join("token-server.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nissuer = \"test-issuer\"\nservice = \"registry\"\n\
         private_key = \"token.key\"\nhtpasswd = \"htpasswd\"\n\
         [[policy.rules]]\nrepositories = [\"team-a/*\"]\nusers = [\"alice\"]\n\
         actions = [\"pull\"]\n",
    )
    .unwrap();

    let mut child = Command::new(BIN)
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("token-server logs its address");

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = http
        .get(format!(
            "http://{addr}/token?service=registry&scope=repository:team-a/app:pull"
        ))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3),
        "{body}"
    );
    let res = http
        .get(format!("http://{addr}/token?service=registry"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    drop(server);
}
