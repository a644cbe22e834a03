//! The cargo features this binary was built with (`s3`, `postgres`, `tls`; all in
//! `default`), and the one error a left-out feature gives: a setting that needs it is
//! refused at start, naming the feature to build with, instead of failing later or
//! quietly doing something else.

/// The error for `what` (a setting, as the user wrote it) when `feature` was left out.
pub fn not_built(feature: &str, what: &str) -> String {
    format!(
        "{what} needs the `{feature}` feature, which this registry binary was built without; \
         rebuild with `cargo build --release -p registry --features {feature}` (the default \
         features include it)"
    )
}

/// Refuses an `https://` URL the binary would have to speak TLS to when it was built
/// without `tls` (the HTTP client would otherwise fail on the first request).
pub fn check_outbound(url: &str, what: &str) -> Result<(), String> {
    let https = url
        .trim()
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if https && !cfg!(feature = "tls") {
        return Err(not_built("tls", &format!("{what} {url}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_names_the_feature_and_the_setting() {
        let e = not_built("s3", "--storage s3://bucket");
        assert!(
            e.starts_with("--storage s3://bucket needs the `s3` feature"),
            "{e}"
        );
        assert!(e.contains("--features s3"), "{e}");
    }

    #[test]
    fn plain_http_never_needs_tls() {
        assert_eq!(
            check_outbound("http://127.0.0.1:5000", "--upstream"),
            Ok(())
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn https_is_accepted_with_tls() {
        assert_eq!(
            check_outbound("https://registry-1.docker.io", "--upstream"),
            Ok(())
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn https_is_refused_without_tls() {
        let e = check_outbound("HTTPS://registry-1.docker.io", "--upstream").unwrap_err();
        assert!(e.contains("`tls` feature"), "{e}");
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_storage_is_refused_naming_the_feature() {
        let url = crate::config::StorageUrl::S3("s3://bucket/prefix".into());
        let e = crate::open_blobs(&url).unwrap_err().to_string();
        assert!(
            e.starts_with("--storage s3://bucket/prefix needs the `s3` feature"),
            "{e}"
        );
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn postgres_metadata_is_refused_naming_the_feature_not_the_password() {
        let url = crate::config::MetadataUrl::Postgres("postgres://u:secret@db/registry".into());
        let e = crate::open_metadata(&url).await.unwrap_err().to_string();
        assert!(e.contains("needs the `postgres` feature"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
