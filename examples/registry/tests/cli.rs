//! The `registry` command line: precedence of flags, environment and config file over the
//! defaults, clear errors for what this build cannot do, and a clean exit on SIGTERM.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, registry_command, tempdir};

/// `registry serve` in `cwd` with port 0 unless a listen setting is given by the test.
fn serve(cwd: &Path) -> Command {
    let mut cmd = registry_command();
    cmd.current_dir(cwd).arg("serve");
    cmd
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the config file");
}

/// Starts, waits for the listening line, checks `/v2/` answers, stops.
fn run_until_listening(cmd: Command) -> Server {
    let server = Server::spawn(cmd);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let api = common::Api::new(&server.base);
    let (status, _, _) = rt.block_on(api.get("/v2/"));
    assert_ne!(status, 0);
    server
}

fn failure(mut cmd: Command) -> (i32, String) {
    let out = cmd.output().expect("run registry");
    assert!(
        !out.status.success(),
        "expected a failure, got {}",
        out.status
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn defaults_live_under_registry_data() {
    let dir = tempdir();
    let mut cmd = serve(dir.path());
    // Only the port changes: the default address 127.0.0.1:5000 may be taken.
    cmd.args(["--listen", "127.0.0.1:0"]);
    let server = run_until_listening(cmd);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    assert!(dir.path().join("registry-data/blobs").is_dir());
    assert!(dir.path().join("registry-data/registry.db").is_file());
}

#[test]
fn flag_beats_env_beats_file() {
    let dir = tempdir();
    let d = dir.path();
    write_config(
        &d.join("registry.toml"),
        "listen = \"not an address\"\nstorage = \"file-blobs\"\nmetadata = \"sqlite://file.db\"\n",
    );

    // Flags over environment over file, each setting on its own.
    let mut cmd = serve(d);
    cmd.args(["--config", "registry.toml", "--listen", "127.0.0.1:0"])
        .args(["--storage", "fs://flag-blobs"])
        .env("REGISTRY_LISTEN", "also not an address")
        .env("REGISTRY_STORAGE", "env-blobs")
        .env("REGISTRY_METADATA", "sqlite://env.db");
    let server = run_until_listening(cmd);
    assert!(d.join("flag-blobs").is_dir(), "flag wins for storage");
    assert!(!d.join("env-blobs").exists());
    assert!(!d.join("file-blobs").exists());
    assert!(
        d.join("env.db").is_file(),
        "environment wins over file for metadata"
    );
    assert!(!d.join("file.db").exists());
    drop(server);

    // Environment over file; the config file itself named by REGISTRY_CONFIG.
    let mut cmd = serve(d);
    cmd.env("REGISTRY_CONFIG", d.join("registry.toml"))
        .env("REGISTRY_LISTEN", "127.0.0.1:0")
        .env(
            "REGISTRY_STORAGE",
            format!("fs://{}", d.join("env2-blobs").display()),
        );
    let server = run_until_listening(cmd);
    assert!(
        d.join("env2-blobs").is_dir(),
        "environment wins over file for storage"
    );
    assert!(
        d.join("file.db").is_file(),
        "file wins over default for metadata"
    );
    assert!(!d.join("registry-data").exists(), "defaults unused");
    drop(server);
}

#[test]
fn file_beats_defaults() {
    let dir = tempdir();
    let d = dir.path();
    let conf = d.join("conf.toml");
    write_config(
        &conf,
        &format!(
            "listen = \"127.0.0.1:0\"\nstorage = \"fs://{}\"\nmetadata = \"sqlite://{}\"\n",
            d.join("abs-blobs").display(),
            d.join("abs.db").display()
        ),
    );
    let mut cmd = serve(d);
    cmd.arg("--config").arg(&conf);
    let server = run_until_listening(cmd);
    assert!(server.addr.starts_with("127.0.0.1:"));
    assert!(d.join("abs-blobs").is_dir());
    assert!(d.join("abs.db").is_file());
    assert!(!d.join("registry-data").exists());
}

#[test]
fn unsupported_schemes_fail_clearly() {
    let dir = tempdir();
    let mut cmd = serve(dir.path());
    cmd.args(["--listen", "127.0.0.1:0", "--storage", "gs://x"]);
    let (code, stderr) = failure(cmd);
    assert_ne!(code, 0);
    assert!(stderr.contains("gs://"), "{stderr}");
    assert!(
        stderr.contains("fs://"),
        "names the supported scheme: {stderr}"
    );

    let mut cmd = serve(dir.path());
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("REGISTRY_METADATA", "mysql://user@localhost/registry");
    let (_, stderr) = failure(cmd);
    assert!(stderr.contains("mysql://"), "{stderr}");
    assert!(
        stderr.contains("sqlite://"),
        "names the supported scheme: {stderr}"
    );
    assert!(
        !dir.path().join("registry-data").exists(),
        "nothing created on error"
    );
}

#[test]
fn bad_config_and_listen_fail_clearly() {
    let dir = tempdir();
    let d = dir.path();
    write_config(&d.join("typo.toml"), "listn = \"127.0.0.1:0\"\n");
    let mut cmd = serve(d);
    cmd.args(["--config", "typo.toml"]);
    let (_, stderr) = failure(cmd);
    assert!(
        stderr.contains("typo.toml") && stderr.contains("listn"),
        "{stderr}"
    );

    let mut cmd = serve(d);
    cmd.args(["--config", "missing.toml"]);
    let (_, stderr) = failure(cmd);
    assert!(stderr.contains("missing.toml"), "{stderr}");

    let mut cmd = serve(d);
    cmd.args(["--listen", "localhost"]);
    let (_, stderr) = failure(cmd);
    assert!(
        stderr.contains("listen address") && stderr.contains("localhost"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_gracefully() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    // The shell's builtin `kill`: /bin/kill (procps) is not on every minimal system.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", server.pid())])
        .status()
        .expect("run sh");
    assert!(status.success());
    let exit = server
        .wait_timeout(Duration::from_secs(30))
        .expect("registry exits within 30 s of SIGTERM");
    assert!(
        exit.success(),
        "exit status after SIGTERM: {exit}\n{}",
        server.log()
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.log().contains("SIGTERM"), "{}", server.log());
}

#[test]
fn help_lists_every_setting() {
    let out = registry_command()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "--storage",
        "--metadata",
        "--config",
        "REGISTRY_LISTEN",
        "REGISTRY_STORAGE",
        "REGISTRY_METADATA",
    ] {
        assert!(help.contains(needle), "help mentions {needle}:\n{help}");
    }
}

/// A blob upload whose body is still arriving at SIGTERM completes (201, and the blob is
/// stored) before the registry exits.
#[test]
fn sigterm_lets_an_upload_in_flight_finish() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let body = common::random_bytes(common::seed(), 1024 * 1024);
    let digest = common::sha256(&body);
    let mut conn = TcpStream::connect(&server.addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "POST /v2/drain/test/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .unwrap();
    let half = body.len() / 2;
    conn.write_all(&body[..half]).unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let sent = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", server.pid())])
        .status()
        .expect("run sh");
    assert!(sent.success());
    std::thread::sleep(Duration::from_millis(300));
    if let Err(e) = conn.write_all(&body[half..]) {
        panic!("second half of the body: {e}\n{}", server.log());
    }
    let mut head = [0u8; 12];
    conn.read_exact(&mut head)
        .expect("a response after SIGTERM");
    let status = String::from_utf8_lossy(&head).into_owned();
    assert_eq!(status, "HTTP/1.1 201", "{}", server.log());

    let exit = server
        .wait_timeout(Duration::from_secs(30))
        .expect("registry exits within 30 s of SIGTERM");
    assert!(exit.success(), "exit status {exit}\n{}", server.log());
    let stored = dir
        .path()
        .join("blobs/blobs/sha256")
        .join(&digest["sha256:".len().."sha256:".len() + 2])
        .join(&digest["sha256:".len()..]);
    assert_eq!(std::fs::read(&stored).expect("blob file"), body);
}
