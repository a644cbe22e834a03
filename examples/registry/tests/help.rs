//! Each subcommand's `--help` lists its own settings only: `gc`, `import` and `stats` do
//! not offer the server's flags, and `--config` names the file keys each one reads.

mod common;

use common::registry_command;

fn help(command: &str) -> String {
    let out = registry_command()
        .args([command, "--help"])
        .output()
        .expect("run registry");
    assert!(
        out.status.success(),
        "registry {command} --help: {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SERVE_ONLY: [&str; 6] = [
    "--listen",
    "--tls-cert",
    "--htpasswd",
    "--webhook-url",
    "--max-connections",
    "--gc-interval",
];

#[test]
fn gc_help_shows_gc_settings_only() {
    let gc = help("gc");
    for flag in SERVE_ONLY {
        assert!(!gc.contains(flag), "gc --help mentions {flag}:\n{gc}");
    }
    for flag in [
        "--storage",
        "--metadata",
        "--gc-grace",
        "--dry-run",
        "--config",
    ] {
        assert!(gc.contains(flag), "gc --help lacks {flag}:\n{gc}");
    }
    assert!(gc.contains("gc_grace"), "--config names the keys:\n{gc}");
}

#[test]
fn serve_help_shows_the_server_settings() {
    let serve = help("serve");
    for flag in SERVE_ONLY
        .iter()
        .chain(&["--gc-grace", "--idle-timeout", "--body-timeout"])
    {
        assert!(serve.contains(flag), "serve --help lacks {flag}:\n{serve}");
    }
    for key in [
        "listen",
        "tls_cert",
        "htpasswd",
        "immutable_tags",
        "max_connections",
    ] {
        assert!(
            serve.contains(key),
            "--config help lacks the key {key}:\n{serve}"
        );
    }
}

#[test]
fn import_and_stats_help_show_their_settings_only() {
    let import = help("import");
    let stats = help("stats");
    for flag in SERVE_ONLY.iter().chain(&["--gc-grace"]) {
        assert!(
            !import.contains(flag),
            "import --help mentions {flag}:\n{import}"
        );
        assert!(
            !stats.contains(flag),
            "stats --help mentions {flag}:\n{stats}"
        );
    }
    assert!(
        import.contains("--from") && import.contains("--storage"),
        "{import}"
    );
    assert!(
        stats.contains("--metadata") && !stats.contains("--storage"),
        "{stats}"
    );
}

/// A flag of another command is refused, not ignored.
#[test]
fn gc_refuses_a_serve_flag() {
    let out = registry_command()
        .args(["gc", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run registry");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");
}
