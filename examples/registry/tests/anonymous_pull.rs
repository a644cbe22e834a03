//! Anonymous pulls of a public repository from the real binary under `--htpasswd` and
//! `--access-policy`, with skopeo as a client that is not ours. The registry answers `/v2/`
//! with a `Basic` challenge, and skopeo without a login then sends empty Basic credentials
//! (`Basic Og==`) with every request: those must count as anonymous, not as a wrong
//! password. Needs `skopeo` on PATH; fails without it.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::oci_layout::{Layout, MANIFEST};
use common::skopeo_flow::{assert_layout_blobs_intact, require_skopeo};
use common::{Server, seed, serve_command, sha256, tempdir};

/// Runs `skopeo --insecure-policy ARGS` with `home` as its home (so no login of the
/// machine's user is found) and a time limit; returns success, stdout and stderr.
fn skopeo_in(home: &Path, args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("timeout")
        .arg("300")
        .arg("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .output()
        .expect("run timeout(1)");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn skopeo_ok(home: &Path, args: &[&str]) -> Vec<u8> {
    let (ok, stdout, stderr) = skopeo_in(home, args);
    assert!(ok, "skopeo {} failed:\n{stderr}", args.join(" "));
    stdout
}

#[test]
fn skopeo_pulls_a_public_repository_without_credentials() {
    require_skopeo();
    let dir = tempdir();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let users = dir.path().join("htpasswd");
    let hash = bcrypt::hash_with_result("alice pw", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "public = [\"library/*\"]\n\n\
         [[rules]]\nrepositories = [\"*\"]\nusers = [\"alice\"]\nactions = [\"pull\", \"push\", \"delete\"]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let cmd = serve_command(
        &data,
        &[
            "--htpasswd",
            &users.display().to_string(),
            "--access-policy",
            &policy.display().to_string(),
        ],
    );
    let server = Server::spawn(cmd);
    let host = server.addr.clone();

    // alice pushes one image to a public repository and one to a private one.
    let src = dir.path().join("src");
    let mut layout = Layout::create(&src);
    let image = layout.add_image("amd64", seed(), 2, 50_000);
    layout.tag("v1", MANIFEST, &image.manifest);
    let public = format!("docker://{host}/library/app:v1");
    let private = format!("docker://{host}/team/app:v1");
    for dest in [&public, &private] {
        skopeo_ok(
            &home,
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                "alice:alice pw",
                "--preserve-digests",
                &format!("oci:{}:v1", src.display()),
                dest,
            ],
        );
    }

    // No login at all (an auth file with no entries), and `--no-creds`: both pull the
    // public image, byte for byte.
    let empty = dir.path().join("auth.json");
    std::fs::write(&empty, "{}").unwrap();
    let empty = empty.to_str().unwrap();
    for creds in [
        &["--authfile", empty][..],
        &["--no-creds", "--authfile", empty],
    ] {
        let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
        args.extend_from_slice(creds);
        args.push(&public);
        let raw = skopeo_ok(&home, &args);
        assert_eq!(sha256(&raw), image.manifest.digest, "{args:?}");
    }
    let dst = dir.path().join("dst");
    skopeo_ok(
        &home,
        &[
            "copy",
            "--src-tls-verify=false",
            "--authfile",
            empty,
            &public,
            &format!("oci:{}:v1", dst.display()),
        ],
    );
    assert_layout_blobs_intact(&dst);
    let pulled = common::oci_layout::find_ref(&dst, "v1").unwrap();
    assert_eq!(pulled["digest"], image.manifest.digest.as_str());

    // The private repository stays closed, and skopeo is told to authenticate, not that
    // a password it never sent was wrong.
    let (ok, _, err) = skopeo_in(
        &home,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            empty,
            &private,
        ],
    );
    assert!(!ok, "anonymous inspect of a private repository must fail");
    assert!(err.contains("authentication required"), "{err}");
    assert!(!err.contains("invalid username or password"), "{err}");
    drop(server);
}
