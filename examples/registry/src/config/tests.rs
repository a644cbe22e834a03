use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;

use super::*;

/// The subcommand and its matches from `argv`. Clap reads the test process's
/// environment too: these tests expect no `REGISTRY_*` variables.
fn parse_cli(argv: &[&str]) -> (Command, ArgMatches) {
    let matches = command()
        .try_get_matches_from(["registry"].iter().chain(argv))
        .unwrap();
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
    let (_, sub) = matches.subcommand().unwrap();
    (cli.command, sub.clone())
}

/// `registry serve ARGV` with `file` as the config file.
fn serve(argv: &[&str], file: &str) -> Result<Settings, ConfigError> {
    let argv: Vec<&str> = ["serve"].iter().chain(argv).copied().collect();
    let (Command::Serve(cmd), matches) = parse_cli(&argv) else {
        panic!("expected serve");
    };
    cmd.settings(&Layers::parse(&matches, None, file)?)
}

#[test]
fn defaults() {
    let s = serve(&[], "").unwrap();
    assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
    assert_eq!(
        s.stores.storage,
        StorageUrl::Fs(PathBuf::from("./registry-data/blobs"))
    );
    assert_eq!(
        s.stores.metadata,
        MetadataUrl::Sqlite(PathBuf::from("./registry-data/registry.db"))
    );
    assert_eq!(s.log_format, LogFormat::Text);
    assert_eq!(
        s.connections,
        ConnectionSettings {
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    );
}

#[test]
fn flags_win_over_file_which_wins_over_defaults() {
    let file = "listen = \"0.0.0.0:6000\"\nstorage = \"/file/blobs\"\n\
                metadata = \"sqlite:///file.db\"\n";
    let s = serve(&["--listen", "127.0.0.1:7000"], file).unwrap();
    assert_eq!(s.listen, "127.0.0.1:7000".parse().unwrap());
    assert_eq!(
        s.stores.storage,
        StorageUrl::Fs(PathBuf::from("/file/blobs"))
    );
    assert_eq!(
        s.stores.metadata,
        MetadataUrl::Sqlite(PathBuf::from("/file.db"))
    );

    let s = serve(&["--metadata", "x.db"], "storage = \"fs:///only/storage\"").unwrap();
    assert_eq!(s.listen, "127.0.0.1:5000".parse().unwrap());
    assert_eq!(
        s.stores.storage,
        StorageUrl::Fs(PathBuf::from("/only/storage"))
    );
    assert_eq!(
        s.stores.metadata,
        MetadataUrl::Sqlite(PathBuf::from("x.db"))
    );

    // A bad file value that a flag overrides is never parsed.
    let s = serve(&["--listen", "127.0.0.1:0"], "listen = \"not an address\"").unwrap();
    assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
}

#[test]
fn file_rejects_unknown_keys_bad_toml_and_mistyped_values() {
    let e = serve(&[], "listn = \"x\"").unwrap_err();
    assert!(e.to_string().contains("listn"), "{e}");
    assert!(e.to_string().contains("listen"), "names the keys: {e}");
    assert!(serve(&[], "listen = ").is_err());
    let e = serve(&[], "read_only = \"maybe\"").unwrap_err();
    assert!(e.to_string().contains("read_only"), "{e}");
    let e = serve(&[], "max_connections = -1").unwrap_err();
    assert!(e.to_string().contains("max_connections"), "{e}");
}

/// Every flag of every command but `--config` (and those of one run: `import`'s,
/// `sync`'s) is a key of the file, named as the flag with `_` for `-`; and every key
/// is some command's flag, or one of [`FILE_ONLY_KEYS`].
#[test]
fn flags_and_file_keys_match() {
    let keys = file_keys();
    let only_flags = [
        "config",
        "dry-run",
        "from",
        "rebuild",
        "json",
        "top",
        "to",
        "repositories",
        "tags",
        "target-prefix",
        "username",
        "password-file",
    ];
    let mut flags = BTreeSet::new();
    for sub in command().get_subcommands() {
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if only_flags.contains(&long) || long == "help" {
                continue;
            }
            let key = long.replace('-', "_");
            assert!(keys.contains(&key), "--{long} has no file key");
            flags.insert(key);
        }
    }
    flags.extend(FILE_ONLY_KEYS.iter().map(|(_, key)| key.to_string()));
    assert_eq!(flags, keys);
}

#[test]
fn each_command_has_only_its_own_flags() {
    let cli = command();
    let longs = |name: &str| -> Vec<String> {
        cli.find_subcommand(name)
            .unwrap()
            .get_arguments()
            .filter_map(|a| a.get_long().map(String::from))
            .collect()
    };
    let gc = longs("gc");
    for serve_only in [
        "listen",
        "tls-cert",
        "htpasswd",
        "webhook-url",
        "gc-interval",
    ] {
        assert!(!gc.iter().any(|l| l == serve_only), "gc has --{serve_only}");
    }
    assert!(gc.iter().any(|l| l == "gc-grace"));
    let stats = longs("stats");
    assert!(!stats.iter().any(|l| l == "storage" || l == "gc-grace"));
    assert!(stats.iter().any(|l| l == "metadata"));
    let import = longs("import");
    assert!(!import.iter().any(|l| l == "gc-grace" || l == "listen"));
    assert!(import.iter().any(|l| l == "storage"));
}

/// A file written for `serve` works for `gc`, which reads its own keys from it.
#[test]
fn commands_share_one_file() {
    let file = "listen = \"0.0.0.0:1\"\ntls_cert = \"only-half.pem\"\n\
                storage = \"/srv/blobs\"\ngc_grace = \"1h\"";
    let (Command::Gc(cmd), matches) = parse_cli(&["gc", "--dry-run"]) else {
        panic!("expected gc");
    };
    let run = cmd
        .settings(&Layers::parse(&matches, None, file).unwrap())
        .unwrap();
    assert!(cmd.dry_run);
    assert_eq!(run.stores.storage, StorageUrl::Fs("/srv/blobs".into()));
    assert_eq!(run.gc.grace, Duration::from_secs(3600));
    assert_eq!(run.gc.interval, None);
    assert!(serve(&[], file).is_err(), "serve does check the TLS pair");
}

#[test]
fn config_help_names_the_commands_keys() {
    let cli = command();
    let help = |name: &str| {
        cli.find_subcommand(name)
            .unwrap()
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap()
    };
    let serve = help("serve");
    for key in file_keys() {
        assert!(
            serve.contains(&key),
            "serve's --config help names {key}: {serve}"
        );
    }
    let gc = help("gc");
    assert!(gc.contains("gc_grace") && gc.contains("storage"), "{gc}");
    assert!(!gc.contains("listen"), "{gc}");
}

#[test]
fn clap_reads_flags() {
    let (Command::Serve(a), _) = parse_cli(&[
        "serve",
        "--listen",
        "[::1]:5001",
        "--storage",
        "fs:///srv/blobs",
        "--metadata",
        "sqlite:///srv/registry.db",
        "--config",
        "/etc/registry.toml",
    ]) else {
        panic!("expected serve");
    };
    assert_eq!(a.serve.listen, "[::1]:5001");
    assert_eq!(a.storage.storage, "fs:///srv/blobs");
    assert_eq!(a.common.metadata, "sqlite:///srv/registry.db");
    assert_eq!(a.common.config, Some(PathBuf::from("/etc/registry.toml")));
}

#[test]
fn storage_urls() {
    let fs = |p: &str| Ok(StorageUrl::Fs(PathBuf::from(p)));
    assert_eq!(parse_storage("fs:///abs/path"), fs("/abs/path"));
    assert_eq!(parse_storage("fs://rel/path"), fs("rel/path"));
    assert_eq!(parse_storage("FS:///abs"), fs("/abs"));
    assert_eq!(parse_storage("/plain/abs"), fs("/plain/abs"));
    assert_eq!(parse_storage("./plain/rel"), fs("./plain/rel"));
    assert!(matches!(
        parse_storage("fs://"),
        Err(ConfigError::EmptyPath { .. })
    ));
    assert!(matches!(
        parse_storage(""),
        Err(ConfigError::EmptyPath { .. })
    ));
}

#[test]
fn metadata_urls() {
    let sq = |p: &str| Ok(MetadataUrl::Sqlite(PathBuf::from(p)));
    assert_eq!(parse_metadata("sqlite:///abs/r.db"), sq("/abs/r.db"));
    assert_eq!(parse_metadata("sqlite://rel/r.db"), sq("rel/r.db"));
    assert_eq!(
        parse_metadata("sqlite://./registry-data/registry.db"),
        sq("./registry-data/registry.db")
    );
    assert_eq!(parse_metadata("/plain/r.db"), sq("/plain/r.db"));
    assert!(parse_metadata("sqlite://").is_err());
}

#[test]
fn unknown_schemes_name_the_supported_ones() {
    let e = parse_storage("gs://bucket/prefix").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("gs://"), "{msg}");
    assert!(msg.contains("fs://") && msg.contains("s3://"), "{msg}");
    assert_eq!(
        parse_storage("s3://b/p?region=x"),
        Ok(StorageUrl::S3("s3://b/p?region=x".into()))
    );

    let e = parse_metadata("mysql://user@host/db").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("mysql://"), "{msg}");
    assert!(
        msg.contains("sqlite://") && msg.contains("postgres://"),
        "{msg}"
    );
    assert_eq!(
        parse_metadata("postgres://u@h:5432/db"),
        Ok(MetadataUrl::Postgres("postgres://u@h:5432/db".into()))
    );
}

#[test]
fn gc_settings() {
    let s = serve(&[], "").unwrap();
    assert_eq!(s.gc.grace, Duration::from_secs(24 * 3600));
    assert_eq!(s.gc.interval, Some(Duration::from_secs(600)));
    assert_eq!(s.gc.untagged_ttl, None);
    let file = "gc_grace = \"0s\"\ngc_interval = \"off\"\ngc_untagged_ttl = \"7days\"";
    let s = serve(&[], file).unwrap();
    assert_eq!(s.gc.grace, Duration::ZERO);
    assert_eq!(s.gc.interval, None);
    assert_eq!(s.gc.untagged_ttl, Some(Duration::from_secs(7 * 86400)));
    let e = serve(&[], "gc_grace = \"soon\"").unwrap_err();
    assert!(e.to_string().contains("soon"), "{e}");
}

#[test]
fn ops_settings() {
    let s = serve(&[], "").unwrap();
    assert_eq!(s.tls, None);
    assert!(s.webhooks.urls.is_empty());
    assert_eq!(s.webhooks.timeout, Duration::from_secs(5));

    let file = "tls_cert = \"/etc/r/cert.pem\"\ntls_key = \"/etc/r/key.pem\"\n\
                log_format = \"json\"\nwebhook_url = \"http://hooks/a\"\n\
                webhook_timeout = \"2s\"";
    let s = serve(&[], file).unwrap();
    assert_eq!(
        s.tls,
        Some(TlsFiles {
            cert: "/etc/r/cert.pem".into(),
            key: "/etc/r/key.pem".into()
        })
    );
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.webhooks.urls.len(), 1);
    assert_eq!(s.webhooks.timeout, Duration::from_secs(2));

    // The list form works, flags win over the file, one of cert/key is an error.
    let list = "webhook_url = [\"http://a/\", \"https://b/x\"]";
    assert_eq!(serve(&[], list).unwrap().webhooks.urls.len(), 2);
    let flags = [
        "--webhook-url",
        "http://one/",
        "--webhook-url",
        "http://two/",
        "--log-format",
        "TEXT",
        "--tls-cert",
        "c.pem",
    ];
    let s = serve(&flags, file).unwrap();
    assert_eq!(s.webhooks.urls.len(), 2);
    assert_eq!(s.log_format, LogFormat::Text);
    assert_eq!(
        s.tls,
        Some(TlsFiles {
            cert: "c.pem".into(),
            key: "/etc/r/key.pem".into()
        })
    );
    let e = serve(&flags, "").unwrap_err();
    assert!(e.to_string().contains("tls-key"), "{e}");
    assert!(parse_log_format("xml").is_err());
    assert!(parse_webhook_url("file:///etc/passwd").is_err());
    assert!(parse_webhook_url("not a url").is_err());
}

#[test]
fn connection_settings() {
    let s = serve(
        &["--idle-timeout", "5s"],
        "idle_timeout = \"1s\"\nbody_timeout = \"2m\"\nmax_connections = 8",
    )
    .unwrap();
    assert_eq!(s.connections.idle_timeout, Duration::from_secs(5));
    assert_eq!(s.connections.body_timeout, Duration::from_secs(120));
    assert_eq!(s.connections.max_connections, 8);
    let e = serve(&["--max-connections", "0"], "").unwrap_err();
    assert_eq!(
        e,
        ConfigError::Zero {
            setting: "max-connections"
        }
    );
    let e = serve(&[], "header_timeout = \"0s\"").unwrap_err();
    assert!(e.to_string().contains("header-timeout"), "{e}");
}

#[test]
fn upload_settings() {
    let s = serve(&[], "").unwrap();
    assert_eq!(
        s.uploads,
        UploadSettings {
            expiry: Duration::from_secs(24 * 3600),
            max_open: Some(10_000),
        }
    );
    let s = serve(&["--max-uploads", "off"], "upload_expiry = \"90m\"").unwrap();
    assert_eq!(s.uploads.expiry, Duration::from_secs(90 * 60));
    assert_eq!(s.uploads.max_open, None);
    let s = serve(&[], "max_uploads = \"3\"").unwrap();
    assert_eq!(s.uploads.max_open, Some(3));
    let s = serve(&[], "max_uploads = 4").unwrap();
    assert_eq!(s.uploads.max_open, Some(4));
    let e = serve(&["--max-uploads", "many"], "").unwrap_err();
    assert!(
        e.to_string().contains("max-uploads") && e.to_string().contains("many"),
        "{e}"
    );
    assert!(serve(&["--max-uploads", "0"], "").is_err());
    assert!(serve(&["--upload-expiry", "0s"], "").is_err());
}

#[test]
fn access_settings() {
    let s = serve(&[], "").unwrap();
    assert_eq!(s.access, AccessSettings::default());
    assert_eq!(s.access.auth, AuthMode::None);
    assert_eq!(s.policy, PolicySettings::default());

    let file = "htpasswd = \"/etc/r/htpasswd\"\naccess_policy = \"/etc/r/policy.toml\"";
    let s = serve(&[], file).unwrap();
    assert_eq!(s.access.auth, AuthMode::Htpasswd("/etc/r/htpasswd".into()));
    assert_eq!(s.access.access_policy, Some("/etc/r/policy.toml".into()));

    let token = "token_realm = \"https://auth.example/token\"\n\
                 token_service = \"registry\"\ntoken_issuer = \"issuer\"\n\
                 token_key = \"/etc/r/token.pub\"";
    let s = serve(&[], token).unwrap();
    assert_eq!(
        s.access.auth,
        AuthMode::Token(TokenSettings {
            realm: "https://auth.example/token".parse().unwrap(),
            service: "registry".into(),
            issuer: "issuer".into(),
            key: "/etc/r/token.pub".into(),
        })
    );

    // A flag's token setting overrides the file's.
    let s = serve(
        &["--token-service", "other", "--access-policy", "p.toml"],
        token,
    )
    .unwrap();
    let AuthMode::Token(t) = s.access.auth else {
        panic!("expected token auth");
    };
    assert_eq!(t.service, "other");
    assert_eq!(s.access.access_policy, Some("p.toml".into()));

    // Both kinds: a clear error, whichever side each comes from.
    let e = serve(&["--htpasswd", "h"], token).unwrap_err();
    assert_eq!(e, ConfigError::AuthConflict);
    assert!(e.to_string().contains("mutually exclusive"), "{e}");

    // Half of the token settings: names what is missing.
    let e = serve(
        &["--token-realm", "http://t/token", "--token-key", "k.pem"],
        "",
    )
    .unwrap_err();
    assert_eq!(
        e,
        ConfigError::TokenIncomplete {
            missing: vec!["token-service", "token-issuer"]
        }
    );
    assert!(e.to_string().contains("token-service, token-issuer"), "{e}");
    let e = serve(
        &[
            "--token-realm",
            "ftp://t/token",
            "--token-service",
            "s",
            "--token-issuer",
            "i",
            "--token-key",
            "k.pem",
        ],
        "",
    )
    .unwrap_err();
    assert!(e.to_string().contains("ftp"), "{e}");
}

#[test]
fn policy_settings() {
    let file = "read_only = true\nimmutable_tags = [\"prod/*\", \"release\"]\nmax_blob_size = 1024";
    let s = serve(&[], file).unwrap();
    assert!(s.policy.read_only);
    assert_eq!(
        s.policy.immutable_tags,
        vec![
            parse_pattern("prod/*").unwrap(),
            parse_pattern("release").unwrap()
        ]
    );
    assert_eq!(s.policy.max_blob_size, Some(1024));
    let one = serve(&[], "immutable_tags = \"prod/*\"").unwrap();
    assert_eq!(one.policy.immutable_tags.len(), 1);

    // `--read-only` alone is true, `--read-only=false` overrides the file's true.
    assert!(serve(&["--read-only"], "").unwrap().policy.read_only);
    assert!(
        !serve(&["--read-only=false"], file)
            .unwrap()
            .policy
            .read_only
    );
    assert!(serve(&["--read-only=yes"], "").unwrap().policy.read_only);

    let s = serve(
        &[
            "--immutable-tags",
            "a/*",
            "--immutable-tags",
            "b",
            "--max-blob-size",
            "7",
        ],
        file,
    )
    .unwrap();
    assert_eq!(
        s.policy.immutable_tags,
        vec![parse_pattern("a/*").unwrap(), parse_pattern("b").unwrap()]
    );
    assert_eq!(s.policy.max_blob_size, Some(7));
    assert!(s.policy.read_only, "the file's read_only still applies");

    let e = serve(&["--immutable-tags", "Prod/*"], "").unwrap_err();
    assert!(e.to_string().contains("Prod/*"), "{e}");
}

#[test]
fn import_and_stats_take_the_store_settings() {
    let (Command::Import(a), _) =
        parse_cli(&["import", "--from", "/srv/dist", "--storage", "/srv/blobs"])
    else {
        panic!("expected import");
    };
    assert_eq!(a.from.as_deref(), Some("/srv/dist"));
    assert!(!a.rebuild);
    assert_eq!(a.storage.storage, "/srv/blobs");
    let Err(neither) = command().try_get_matches_from(["registry", "import"]) else {
        panic!("import needs --from or --rebuild");
    };
    let message = neither.to_string();
    assert!(
        message.contains("--from") && message.contains("--rebuild"),
        "{message}"
    );
    let (Command::Import(a), _) = parse_cli(&["import", "--rebuild"]) else {
        panic!("expected import");
    };
    assert!(a.rebuild && a.from.is_none());
    assert!(
        command()
            .try_get_matches_from(["registry", "import", "--rebuild", "--from", "/srv/dist"])
            .is_err()
    );

    let (Command::Stats(a), matches) = parse_cli(&["stats", "--json", "--metadata", "x.db"]) else {
        panic!("expected stats");
    };
    assert!(a.json);
    assert_eq!(a.top, 10);
    let common = a
        .settings(&Layers::parse(&matches, None, "metadata = \"file.db\"").unwrap())
        .unwrap();
    assert_eq!(common.metadata, MetadataUrl::Sqlite("x.db".into()));
    let (Command::Stats(a), _) = parse_cli(&["stats", "--top", "3"]) else {
        panic!("expected stats");
    };
    assert!(!a.json);
    assert_eq!(a.top, 3);
}

#[test]
fn listen_addresses() {
    assert!(parse_listen("0.0.0.0:5000").is_ok());
    assert!(parse_listen("[::]:5000").is_ok());
    assert!(parse_listen("127.0.0.1:0").is_ok());
    let e = parse_listen("localhost").unwrap_err();
    assert!(e.to_string().contains("localhost"), "{e}");
}

#[test]
fn the_web_ui_is_off_unless_asked_for() {
    assert!(!serve(&[], "").unwrap().ui);
    assert!(serve(&["--ui"], "").unwrap().ui);
    assert!(serve(&[], "ui = true").unwrap().ui);
    // The flag wins over the file.
    assert!(!serve(&["--ui=false"], "ui = true").unwrap().ui);
    let e = serve(&[], "ui = \"sometimes\"").unwrap_err();
    assert!(e.to_string().contains("ui"), "{e}");
}

#[test]
fn pull_counts_default_on_and_what_needs_them_refuses_them_off() {
    assert!(serve(&[], "").unwrap().pull_counts);
    assert!(!serve(&["--pull-counts=false"], "").unwrap().pull_counts);
    assert!(!serve(&[], "pull_counts = false").unwrap().pull_counts);
    assert!(
        serve(&["--pull-counts"], "pull_counts = false")
            .unwrap()
            .pull_counts
    );
    for (argv, file, needle) in [
        (&["--cache-ttl=30d"][..], "", "--cache-ttl"),
        (&["--cache-max-bytes=1000"][..], "", "--cache-max-bytes"),
        (
            &[][..],
            "[[retention]]\nrepositories = \"*\"\nkeep_last = 3\n\
             [[retention]]\nrepositories = \"*\"\nnot_pulled_for = \"90d\"",
            "[[retention]] 2 (`not_pulled_for`)",
        ),
    ] {
        let mut with_off = argv.to_vec();
        with_off.push("--pull-counts=false");
        let e = serve(&with_off, file).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("pull counting"), "{e}");
        assert!(serve(argv, file).is_ok(), "{argv:?} with pull counts on");
    }
}
