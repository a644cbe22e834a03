//! HTTPS: a rustls server configuration from PEM files. The server loop
//! ([`crate::server`]) runs each handshake in its connection's own task, with a time limit,
//! so a slow or silent client cannot hold up the others.
//!
//! The crypto provider is aws-lc-rs, named explicitly: it is already in the build through
//! the S3 client's rustls, so TLS here adds no second provider (ring) to compile.
//!
//! Built without the `tls` feature, [`acceptor`] refuses the TLS flags (naming the
//! feature) and [`Acceptor`] is a type with no values, so the server loop is the same code.

#[cfg(feature = "tls")]
pub use with_tls::{Acceptor, acceptor};
#[cfg(not(feature = "tls"))]
pub use without_tls::{Acceptor, acceptor};

#[cfg(feature = "tls")]
mod with_tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    pub type Acceptor = tokio_rustls::TlsAcceptor;

    /// Reads a certificate chain and a private key (PKCS#8, PKCS#1 or SEC1), PEM-encoded.
    pub fn acceptor(cert: &Path, key: &Path) -> Result<Acceptor, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read TLS certificate {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate in {}", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("cannot read TLS key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("TLS certificate and key do not fit together: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Acceptor::from(Arc::new(config)))
    }
}

#[cfg(not(feature = "tls"))]
mod without_tls {
    use std::path::Path;

    use tokio::net::TcpStream;

    /// No values: without TLS the server is never handed one.
    #[derive(Debug, Clone)]
    pub enum Acceptor {}

    impl Acceptor {
        pub async fn accept(&self, _tcp: TcpStream) -> std::io::Result<TcpStream> {
            match *self {}
        }
    }

    pub fn acceptor(_cert: &Path, _key: &Path) -> Result<Acceptor, String> {
        Err(crate::features::not_built("tls", "--tls-cert/--tls-key"))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn tls_flags_are_refused_naming_the_feature() {
            let e = super::acceptor("cert.pem".as_ref(), "key.pem".as_ref()).unwrap_err();
            assert!(
                e.starts_with("--tls-cert/--tls-key needs the `tls` feature"),
                "{e}"
            );
        }
    }
}
