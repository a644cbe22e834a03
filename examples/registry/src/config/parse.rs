//! Parsing of setting values (addresses, durations, URLs, limits) and the errors that
//! name the setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use registry_core::auth::NamePattern;

use super::*;

#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    File {
        path: Option<PathBuf>,
        message: String,
    },
    Listen {
        value: String,
        message: String,
    },
    UnsupportedScheme {
        setting: &'static str,
        url: String,
        scheme: String,
        supported: &'static str,
    },
    EmptyPath {
        setting: &'static str,
        url: String,
    },
    Duration {
        setting: &'static str,
        value: String,
        message: String,
    },
    /// Only one of the certificate and the key was given.
    TlsIncomplete {
        missing: &'static str,
    },
    LogFormat {
        value: String,
    },
    WebhookUrl {
        value: String,
        message: String,
    },
    /// Both an htpasswd file and token settings.
    AuthConflict,
    /// Some but not all of the token settings.
    TokenIncomplete {
        missing: Vec<&'static str>,
    },
    TokenRealm {
        value: String,
        message: String,
    },
    Pattern {
        value: String,
        message: String,
    },
    /// A limit or timeout set to zero.
    Zero {
        setting: &'static str,
    },
    Number {
        setting: &'static str,
        value: String,
        message: String,
    },
    /// A setting that chooses by last pull while pull counting is off.
    NeedsPullCounts {
        setting: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File {
                path: Some(p),
                message,
            } => write!(f, "config file {}: {message}", p.display()),
            ConfigError::File {
                path: None,
                message,
            } => write!(f, "config file: {message}"),
            ConfigError::Listen { value, message } => {
                write!(f, "invalid listen address `{value}`: {message}")
            }
            ConfigError::UnsupportedScheme {
                setting,
                url,
                scheme,
                supported,
            } => write!(
                f,
                "unsupported {setting} scheme `{scheme}://` in `{url}`: this build supports {supported}"
            ),
            ConfigError::EmptyPath { setting, url } => {
                write!(f, "{setting} URL `{url}` has no path")
            }
            ConfigError::Duration {
                setting,
                value,
                message,
            } => write!(
                f,
                "invalid {setting} `{value}`: {message} (examples: 0s, 90s, 15m, 24h, 7days)"
            ),
            ConfigError::TlsIncomplete { missing } => write!(
                f,
                "TLS needs both a certificate and a key: {missing} is missing"
            ),
            ConfigError::LogFormat { value } => {
                write!(f, "invalid log format `{value}`: expected `text` or `json`")
            }
            ConfigError::WebhookUrl { value, message } => write!(
                f,
                "invalid webhook URL `{value}`: {message} (expected http:// or https://)"
            ),
            ConfigError::AuthConflict => write!(
                f,
                "htpasswd and token authentication are mutually exclusive: \
                 give either --htpasswd or the --token-* settings, not both"
            ),
            ConfigError::TokenIncomplete { missing } => write!(
                f,
                "token authentication needs --token-realm, --token-service, --token-issuer \
                 and --token-key: missing {}",
                missing.join(", ")
            ),
            ConfigError::TokenRealm { value, message } => write!(
                f,
                "invalid token realm `{value}`: {message} (expected the token server's \
                 http:// or https:// URL)"
            ),
            ConfigError::Pattern { value, message } => {
                write!(f, "invalid immutable-tags pattern `{value}`: {message}")
            }
            ConfigError::Zero { setting } => write!(f, "{setting} must be greater than zero"),
            ConfigError::Number {
                setting,
                value,
                message,
            } => write!(
                f,
                "invalid {setting} `{value}`: {message} (expected a number or `off`)"
            ),
            ConfigError::NeedsPullCounts { setting } => write!(
                f,
                "{setting} chooses by last pull, which needs pull counting: \
                 remove --pull-counts=false or the setting"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

pub fn parse_listen(value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|e: std::net::AddrParseError| ConfigError::Listen {
            value: value.to_string(),
            message: format!("{e} (expected IP:PORT, e.g. 127.0.0.1:5000 or [::]:5000)"),
        })
}

pub(crate) fn parse_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::TlsIncomplete { missing: "tls-key" }),
        (None, Some(_)) => Err(ConfigError::TlsIncomplete {
            missing: "tls-cert",
        }),
    }
}

pub fn parse_pattern(value: &str) -> Result<NamePattern, ConfigError> {
    value.parse().map_err(|e| ConfigError::Pattern {
        value: value.to_string(),
        message: format!("{e}"),
    })
}

pub(crate) fn parse_token_realm(value: &str) -> Result<url::Url, ConfigError> {
    let err = |message: String| ConfigError::TokenRealm {
        value: value.to_string(),
        message,
    };
    let url = url::Url::parse(value.trim()).map_err(|e| err(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(format!("unsupported scheme `{}`", url.scheme())));
    }
    Ok(url)
}

pub fn parse_log_format(value: &str) -> Result<LogFormat, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "text" | "" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError::LogFormat {
            value: value.to_string(),
        }),
    }
}

pub fn parse_webhook_url(value: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(value.trim()).map_err(|e| ConfigError::WebhookUrl {
        value: value.to_string(),
        message: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::WebhookUrl {
            value: value.to_string(),
            message: format!("unsupported scheme `{}`", url.scheme()),
        });
    }
    Ok(url)
}

/// A positive count, or `off` for none.
pub(crate) fn parse_limit(setting: &'static str, value: &str) -> Result<Option<u64>, ConfigError> {
    match value.trim() {
        "off" => Ok(None),
        n => match n.parse::<u64>() {
            Ok(0) => Err(ConfigError::Zero { setting }),
            Ok(n) => Ok(Some(n)),
            Err(e) => Err(ConfigError::Number {
                setting,
                value: value.to_string(),
                message: e.to_string(),
            }),
        },
    }
}

/// `N/PERIOD` (`100/6h`; a bare unit is one of it: `10/s`), or nothing.
pub(crate) fn parse_rate_limit(
    setting: &'static str,
    value: Option<&str>,
) -> Result<Option<registry_core::ratelimit::RateLimit>, ConfigError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let invalid = |message: String| ConfigError::Number {
        setting,
        value: value.to_string(),
        message,
    };
    let (count, period) = value
        .split_once('/')
        .ok_or_else(|| invalid("expected N/PERIOD, as in 100/6h".into()))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| invalid(e.to_string()))?;
    let period = period.trim();
    let period = if period.starts_with(|c: char| c.is_ascii_alphabetic()) {
        parse_duration(setting, &format!("1{period}"))?
    } else {
        parse_duration(setting, period)?
    };
    registry_core::ratelimit::RateLimit::new(count, period)
        .map(Some)
        .ok_or(ConfigError::Zero { setting })
}

/// A duration that must not be zero (a zero timeout would close every connection).
pub(crate) fn positive_duration(
    setting: &'static str,
    value: &str,
) -> Result<Duration, ConfigError> {
    let d = parse_duration(setting, value)?;
    if d.is_zero() {
        return Err(ConfigError::Zero { setting });
    }
    Ok(d)
}

pub fn parse_duration(setting: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| ConfigError::Duration {
        setting,
        value: value.to_string(),
        message: e.to_string(),
    })
}

/// Splits `scheme://rest`; `None` for a plain path.
pub(crate) fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let is_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some((scheme, rest))
}

pub(crate) fn non_empty(
    setting: &'static str,
    url: &str,
    path: &str,
) -> Result<PathBuf, ConfigError> {
    if path.is_empty() {
        return Err(ConfigError::EmptyPath {
            setting,
            url: url.to_string(),
        });
    }
    Ok(PathBuf::from(path))
}

/// `fs:///abs/path`, `fs://relative/path` or a plain path.
pub fn parse_storage(url: &str) -> Result<StorageUrl, ConfigError> {
    match split_scheme(url) {
        None => non_empty("storage", url, url).map(StorageUrl::Fs),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("fs") => {
            non_empty("storage", url, rest).map(StorageUrl::Fs)
        }
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("s3") => {
            Ok(StorageUrl::S3(url.to_string()))
        }
        Some((scheme, _)) => Err(ConfigError::UnsupportedScheme {
            setting: "storage",
            url: url.to_string(),
            scheme: scheme.to_string(),
            supported: STORAGE_SCHEMES,
        }),
    }
}

/// `sqlite://relative/path`, `sqlite:///abs/path` or a plain path.
pub fn parse_metadata(url: &str) -> Result<MetadataUrl, ConfigError> {
    match split_scheme(url) {
        None => non_empty("metadata", url, url).map(MetadataUrl::Sqlite),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sqlite") => {
            non_empty("metadata", url, rest).map(MetadataUrl::Sqlite)
        }
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("postgres")
                || scheme.eq_ignore_ascii_case("postgresql") =>
        {
            Ok(MetadataUrl::Postgres(url.to_string()))
        }
        Some((scheme, _)) => Err(ConfigError::UnsupportedScheme {
            setting: "metadata",
            url: url.to_string(),
            scheme: scheme.to_string(),
            supported: METADATA_SCHEMES,
        }),
    }
}
