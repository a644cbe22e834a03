//! HTTPS: the binary serves the API with a certificate issued by a test CA made at test
//! time (rcgen); a rustls client trusting only that CA pulls through it, a client that
//! does not trust it is refused, and skopeo logs in and pushes with `--dest-cert-dir`.
//!
//! The skopeo test needs `skopeo` on PATH and fails, rather than skips, without it.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::oci_layout::{Layout, MANIFEST};
use common::{Api, seed, sha256, tempdir};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

struct TestPki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    /// A folder with `ca.crt`, as skopeo's `--cert-dir` wants.
    cert_dir: PathBuf,
}

/// A CA, and a server certificate from it for `localhost` and `127.0.0.1`.
fn make_pki(dir: &Path) -> TestPki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "registry test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf.signed_by(&leaf_key, &ca).unwrap();

    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let cert_dir = dir.join("certs.d");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::write(cert_dir.join("ca.crt"), ca.pem()).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        cert,
        key,
        cert_dir,
    }
}

/// `registry serve` over HTTPS; killed when dropped.
struct TlsServer {
    child: Child,
    addr: String,
    /// Everything printed on stdout.
    log: Arc<Mutex<String>>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, pki: &TestPki) -> TlsServer {
    let mut cmd = common::registry_command();
    cmd.env_remove("REGISTRY_TLS_CERT")
        .env_remove("REGISTRY_TLS_KEY")
        .env_remove("REGISTRY_LOG_FORMAT")
        .env_remove("REGISTRY_WEBHOOK_URL")
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--storage")
        .arg(data.join("blobs"))
        .arg("--metadata")
        .arg(data.join("registry.db"))
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(String::new()));
    let lines = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on https://").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            if let Ok(mut log) = lines.lock() {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("registry reports an https:// address");
    TlsServer { child, addr, log }
}

fn client(ca_pem: Option<&str>) -> reqwest::Client {
    // Only the test CA (or nothing at all): the system's roots play no part.
    let roots: Vec<reqwest::Certificate> = ca_pem
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .into_iter()
        .collect();
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_rustls()
        .tls_certs_only(roots)
        .build()
        .unwrap()
}

#[tokio::test]
async fn serves_https_to_clients_that_trust_the_ca() {
    let dir = tempdir();
    let pki = make_pki(dir.path());
    let server = start(&dir.path().join("data"), &pki);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let api = Api {
        http: client(Some(&pki.ca_pem)),
        base: format!("https://localhost:{port}"),
    };

    let (status, headers, _) = api.get("/v2/").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("docker-distribution-api-version").unwrap(),
        "registry/2.0"
    );
    // Push and pull over TLS, by name and by IP address.
    let data = common::random_bytes(seed(), 200_000);
    let digest = api.push_blob("tls/repo", &data).await;
    assert_eq!(digest, sha256(&data));
    let by_ip = Api {
        http: client(Some(&pki.ca_pem)),
        base: format!("https://127.0.0.1:{port}"),
    };
    by_ip.assert_blob("tls/repo", &data).await;
    let (status, _, body) = by_ip.get("/healthz").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // A client without the CA is refused; so is plain HTTP on the TLS port.
    let untrusting = client(None);
    assert!(
        untrusting
            .get(format!("https://localhost:{port}/v2/"))
            .send()
            .await
            .is_err()
    );
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = plain
        .get(format!("http://127.0.0.1:{port}/v2/"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(res.is_err() || !res.unwrap().status().is_success());
}

/// Plain HTTP on the HTTPS port gets a readable 400 naming HTTPS (not TLS bytes), the
/// connection is closed, the server logs it, and HTTPS still works afterwards.
#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_readable_400() {
    use std::io::{Read, Write};

    let dir = tempdir();
    let pki = make_pki(dir.path());
    let server = start(&dir.path().join("data"), &pki);

    let mut raw = std::net::TcpStream::connect(&server.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(raw, "GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).unwrap();
    let mut answer = String::new();
    // To the end: the server closes the connection after answering.
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("this port speaks HTTPS"), "{answer}");
    assert!(
        answer.contains(&format!("https://{}/", server.addr)),
        "{answer}"
    );

    // An ordinary HTTP client reads it as a response.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = plain
        .get(format!("http://{}/v2/", server.addr))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("speaks HTTPS"));

    let port = server.addr.rsplit(':').next().unwrap();
    let api = Api {
        http: client(Some(&pki.ca_pem)),
        base: format!("https://localhost:{port}"),
    };
    assert_eq!(api.get("/v2/").await.0, 200);
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("plain HTTP on the HTTPS port"), "{log}");
}

#[test]
fn missing_key_or_unreadable_certificate_fail_at_start() {
    let dir = tempdir();
    let pki = make_pki(dir.path());
    let out = common::registry_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--storage")
        .arg(dir.path().join("blobs"))
        .arg("--metadata")
        .arg(dir.path().join("r.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls-key"), "{err}");

    // The certificate file given as the key.
    let out = common::registry_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.cert)
        .arg("--storage")
        .arg(dir.path().join("blobs"))
        .arg("--metadata")
        .arg(dir.path().join("r.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS key"), "{err}");
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("300")
        .arg("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run timeout(1) and skopeo");
    assert!(
        out.status.success(),
        "skopeo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn skopeo_logs_in_and_pushes_over_tls() {
    let found = Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "skopeo is not installed: this test needs it (apt-get install skopeo, or .ci/run)"
    );
    let dir = tempdir();
    let pki = make_pki(dir.path());
    let server = start(&dir.path().join("data"), &pki);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let host = format!("localhost:{port}");
    let cert_dir = pki.cert_dir.to_str().unwrap();
    let authfile = dir.path().join("auth.json");
    let authfile = authfile.to_str().unwrap();

    // No authentication is configured: any credentials are accepted at /v2/.
    let out = skopeo(&[
        "login",
        "--authfile",
        authfile,
        "--cert-dir",
        cert_dir,
        "--username",
        "anyone",
        "--password",
        "anything",
        &host,
    ]);
    assert!(out.contains("Login Succeeded"), "{out}");

    let src = dir.path().join("src");
    let mut layout = Layout::create(&src);
    let image = layout.add_image("amd64", seed(), 2, 50_000);
    layout.tag("v1", MANIFEST, &image.manifest);
    let remote = format!("docker://{host}/tls/skopeo:v1");
    skopeo(&[
        "copy",
        "--authfile",
        authfile,
        "--dest-cert-dir",
        cert_dir,
        "--dest-tls-verify=true",
        "--preserve-digests",
        &format!("oci:{}:v1", src.display()),
        &remote,
    ]);
    let inspect = skopeo(&[
        "inspect",
        "--raw",
        "--authfile",
        authfile,
        "--cert-dir",
        cert_dir,
        &remote,
    ]);
    assert_eq!(sha256(inspect.as_bytes()), image.manifest.digest);

    // Without the CA, verification fails.
    let out = Command::new("timeout")
        .args(["120", "skopeo", "--insecure-policy", "inspect", "--raw"])
        .arg("--cert-dir")
        .arg(dir.path())
        .arg(&remote)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
}
