//! Connecting with libpq's `sslmode` semantics.
//!
//! tokio-postgres understands `sslmode=disable|prefer|require` but leaves
//! certificate checks to the TLS connector, and rejects `verify-ca`,
//! `verify-full` and `sslrootcert`. Managed databases (Supabase among them)
//! are reached with exactly those, so this module reads them itself and
//! gives each mode the meaning libpq documents:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | disable | no | — |
//! | allow, prefer (default) | if the server offers it | no |
//! | require | yes | only against `sslrootcert` when given (as libpq does with a root file) |
//! | verify-ca | yes | chain, against `sslrootcert` or the Mozilla roots |
//! | verify-full | yes | chain and host name |

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndHost,
}

/// Connects to `url` and drives the connection on the current Tokio runtime.
pub async fn connect(url: &str) -> Result<Client, Error> {
    let (config, check, root_file) = parse(url)?;
    if config.get_ssl_mode() == SslMode::Disable {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            // Connection errors surface on the client's next call.
            let _ = connection.await;
        });
        return Ok(client);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots(root_file.as_deref())?);
    let verifier = Arc::new(Verifier::new(check, roots, provider.clone())?);
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Tls(err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Splits libpq's TLS options off the URL; the rest goes to tokio-postgres.
fn parse(url: &str) -> Result<(tokio_postgres::Config, Check, Option<String>), Error> {
    let mut parsed = url::Url::parse(url).map_err(|err| Error::BadUrl(err.to_string()))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(Error::BadUrl(format!(
            "the scheme must be postgres:// or postgresql://, not {}://",
            parsed.scheme()
        )));
    }
    let mut mode = String::from("prefer");
    let mut root_file = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(key, value)| match key.as_ref() {
            "sslmode" => {
                mode = value.into_owned();
                None
            }
            "sslrootcert" => {
                root_file = Some(value.into_owned());
                None
            }
            _ => Some((key.into_owned(), value.into_owned())),
        })
        .collect();
    let (ssl_mode, check) = match mode.as_str() {
        "disable" => (SslMode::Disable, Check::Nothing),
        "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
        "require" if root_file.is_some() => (SslMode::Require, Check::Chain),
        "require" => (SslMode::Require, Check::Nothing),
        "verify-ca" => (SslMode::Require, Check::Chain),
        "verify-full" => (SslMode::Require, Check::ChainAndHost),
        other => {
            return Err(Error::BadUrl(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let mut config: tokio_postgres::Config = parsed
        .as_str()
        .parse()
        .map_err(|err: tokio_postgres::Error| Error::BadUrl(err.to_string()))?;
    config.ssl_mode(ssl_mode);
    Ok((config, check, root_file))
}

fn roots(root_file: Option<&str>) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match root_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|err| Error::Tls(format!("{path}: {err}")))?;
                store
                    .add(cert)
                    .map_err(|err| Error::Tls(format!("{path}: {err}")))?;
            }
            if store.is_empty() {
                return Err(Error::Tls(format!("{path} holds no PEM certificate")));
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(store)
}

/// A verifier that checks as much as the sslmode asks for, and always the
/// handshake signatures (so the encryption itself is sound in every mode).
#[derive(Debug)]
struct Verifier {
    check: Check,
    roots: Arc<RootCertStore>,
    full: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    fn new(
        check: Check,
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, Error> {
        let full = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|err| Error::Tls(err.to_string()))?;
        Ok(Verifier {
            check,
            roots,
            full,
            provider,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.check {
            Check::Nothing => Ok(ServerCertVerified::assertion()),
            Check::ChainAndHost => self.full.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            Check::Chain => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &self.roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_modes_map_to_checks() {
        let cases = [
            ("postgres://u@h/db", SslMode::Prefer, Check::Nothing),
            (
                "postgres://u@h/db?sslmode=disable",
                SslMode::Disable,
                Check::Nothing,
            ),
            (
                "postgres://u@h/db?sslmode=require",
                SslMode::Require,
                Check::Nothing,
            ),
            (
                "postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem",
                SslMode::Require,
                Check::Chain,
            ),
            (
                "postgres://u@h/db?sslmode=verify-ca",
                SslMode::Require,
                Check::Chain,
            ),
            (
                "postgresql://u@h:6543/db?sslmode=verify-full&application_name=x",
                SslMode::Require,
                Check::ChainAndHost,
            ),
        ];
        for (url, mode, check) in cases {
            let (config, got, _) = parse(url).unwrap();
            assert_eq!((config.get_ssl_mode(), got), (mode, check), "{url}");
        }
    }

    #[test]
    fn other_options_still_reach_tokio_postgres() {
        let (config, _, root) =
            parse("postgres://u:p%40ss@db.example:5432/app?sslmode=verify-full&sslrootcert=ca.pem&application_name=mig")
                .unwrap();
        assert_eq!(root.as_deref(), Some("ca.pem"));
        assert_eq!(config.get_application_name(), Some("mig"));
        assert_eq!(config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(config.get_dbname(), Some("app"));
    }

    #[test]
    fn unknown_sslmode_and_scheme_are_refused() {
        assert!(matches!(
            parse("postgres://h/db?sslmode=sometimes"),
            Err(Error::BadUrl(_))
        ));
        assert!(matches!(parse("mysql://h/db"), Err(Error::BadUrl(_))));
    }
}
