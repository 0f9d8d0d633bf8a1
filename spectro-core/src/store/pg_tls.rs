//! TLS for [`PostgresStore`](super::PostgresStore) connections: rustls with ring, libpq's
//! `sslmode` semantics.
//!
//! | `sslmode` | TLS | server certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | only with a root certificate (chain) |
//! | `require` | always | only with a root certificate (chain) |
//! | `verify-ca` | always | chain up to the root certificates |
//! | `verify-full` | always | chain, and the host name (or IP) is in the certificate |
//!
//! Root certificates come from `sslrootcert=<path>` (PEM, one or more CA certificates),
//! `sslrootcert=system` (the operating system's store; implies `verify-full`, like libpq),
//! or [`TlsOptions::root_certs`]. `verify-ca` and `verify-full` without any use the system's
//! store. As with libpq, `require` without a root certificate encrypts but does not
//! authenticate the server: use `verify-full` against anything but a trusted network.
//!
//! tokio-postgres knows neither `verify-*` nor `sslrootcert`: they are taken out of the
//! connection string here and the rest goes to tokio-postgres unchanged. Channel binding
//! (`channel_binding=require`, SCRAM-SHA-256-PLUS) works over these connections.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{CoreError, Result};

/// When to use TLS and what to check (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain TCP otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked only when root certificates are
    /// given (then as `VerifyCa`).
    Require,
    /// TLS, the server's certificate chains up to the root certificates.
    VerifyCa,
    /// TLS, the certificate chains up to the root certificates and names the host.
    VerifyFull,
}

impl TlsMode {
    /// Parses libpq's `sslmode` value.
    pub fn parse(s: &str) -> Result<TlsMode> {
        Ok(match s {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(config_error(format!(
                    "sslmode={other} is not supported: use disable, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    /// libpq's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// The certificate authorities a server's certificate is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The operating system's store (`sslrootcert=system`).
    System,
    /// A PEM file with one or more CA certificates (`sslrootcert=<path>`).
    PemFile(PathBuf),
    /// PEM text with one or more CA certificates (e.g. from a secret store).
    Pem(String),
}

/// How a [`PostgresStore`](super::PostgresStore) secures its connections. Parsed from the
/// connection string by `PostgresStore::connect`, or given to `connect_with`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// When to use TLS and what to check.
    pub mode: TlsMode,
    /// The CAs to check the server against; `None`: no check in `prefer`/`require`, the
    /// system's store in `verify-ca`/`verify-full`.
    pub root_certs: Option<RootCerts>,
}

impl TlsOptions {
    /// TLS with the full check (chain and host name) against `root_certs`.
    pub fn verify_full(root_certs: RootCerts) -> Self {
        TlsOptions {
            mode: TlsMode::VerifyFull,
            root_certs: Some(root_certs),
        }
    }

    /// The mode tokio-postgres negotiates with.
    pub(crate) fn pg_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The connector for these options (reads the root certificates now, so a bad file fails
    /// at connect time, not at the first query).
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match (&self.root_certs, self.mode) {
            (_, TlsMode::Disable) => None,
            (Some(r), _) => Some(load_roots(r)?),
            (None, TlsMode::VerifyCa | TlsMode::VerifyFull) => {
                Some(load_roots(&RootCerts::System)?)
            }
            (None, TlsMode::Prefer | TlsMode::Require) => None,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CoreError::store("configure TLS", e))?;
        let config = match roots {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
            Some(roots) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| CoreError::store("configure TLS", e))?;
                if self.mode == TlsMode::VerifyFull {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn config_error(message: String) -> CoreError {
    CoreError::store("parse database URL", std::io::Error::other(message))
}

fn load_roots(r: &RootCerts) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let (certs, source): (Vec<CertificateDer<'static>>, String) = match r {
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            (found.certs, "the system's certificate store".into())
        }
        RootCerts::PemFile(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                CoreError::store(
                    "read sslrootcert",
                    std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
                )
            })?;
            (
                parse_pem(&pem).map_err(|e| tls_file_error(path.display().to_string(), e))?,
                path.display().to_string(),
            )
        }
        RootCerts::Pem(text) => (
            parse_pem(text.as_bytes())
                .map_err(|e| tls_file_error("the root certificates".into(), e))?,
            "the root certificates".into(),
        ),
    };
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(CoreError::store(
            "read sslrootcert",
            std::io::Error::other(format!("{source} holds no usable CA certificate")),
        ));
    }
    Ok(store)
}

fn parse_pem(pem: &[u8]) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn tls_file_error(source: String, e: String) -> CoreError {
    CoreError::store(
        "read sslrootcert",
        std::io::Error::other(format!("{source}: {e}")),
    )
}

/// `prefer`/`require` without root certificates: encrypted, the server not authenticated
/// (libpq's behaviour). The handshake's signatures are still checked, so the session key is
/// bound to the certificate the server sent.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with root certificates): the chain is checked, the
/// host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last: a name error means the chain
        // (and validity, usage, revocation data given) passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS settings of a connection string (libpq's `sslmode`, `sslrootcert`), and the
/// string without them (for tokio-postgres). Both forms: `postgres://…?sslmode=…&…` and
/// `host=… sslmode=…`.
pub(crate) fn split_tls_params(url: &str) -> Result<(String, Option<TlsOptions>)> {
    let mut mode: Option<String> = None;
    let mut root: Option<String> = None;
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((head, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    match k {
                        "sslmode" => mode = Some(percent_decode(v)?),
                        "sslrootcert" => root = Some(percent_decode(v)?),
                        _ => kept.push(pair),
                    }
                }
                if kept.is_empty() {
                    head.to_string()
                } else {
                    format!("{head}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value, raw) in key_values(url)? {
            match key.as_str() {
                "sslmode" => mode = Some(value),
                "sslrootcert" => root = Some(value),
                _ => kept.push(raw),
            }
        }
        kept.join(" ")
    };
    if mode.is_none() && root.is_none() {
        return Ok((rest, None));
    }
    let root_certs = root.map(|r| match r.as_str() {
        "system" => RootCerts::System,
        path => RootCerts::PemFile(PathBuf::from(path)),
    });
    let mode = match (mode, &root_certs) {
        (Some(m), _) => TlsMode::parse(&m)?,
        (None, Some(RootCerts::System)) => TlsMode::VerifyFull,
        (None, _) => TlsMode::default(),
    };
    if root_certs == Some(RootCerts::System) && mode != TlsMode::VerifyFull {
        return Err(config_error(format!(
            "sslrootcert=system needs sslmode=verify-full (not {})",
            mode.as_str()
        )));
    }
    Ok((rest, Some(TlsOptions { mode, root_certs })))
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| config_error("a bad %-escape in the database URL".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| config_error("the database URL is not UTF-8".into()))
}

/// libpq's `key=value` form: (key, unquoted value, the pair as written).
fn key_values(s: &str) -> Result<Vec<(String, String, String)>> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < c.len() && c[i].is_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= c.len() {
            return Ok(out);
        }
        let start = i;
        let mut key = String::new();
        while i < c.len() && c[i] != '=' && !c[i].is_whitespace() {
            key.push(c[i]);
            i += 1;
        }
        i = skip_ws(i);
        if c.get(i) != Some(&'=') {
            return Err(config_error(format!(
                "connection string: `{key}` has no value"
            )));
        }
        i = skip_ws(i + 1);
        let mut value = String::new();
        if c.get(i) == Some(&'\'') {
            i += 1;
            loop {
                match c.get(i) {
                    None => {
                        return Err(config_error(format!(
                            "connection string: the value of `{key}` has no closing quote"
                        )))
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        if let Some(&n) = c.get(i + 1) {
                            value.push(n);
                        }
                        i += 2;
                    }
                    Some(&ch) => {
                        value.push(ch);
                        i += 1;
                    }
                }
            }
        } else {
            while i < c.len() && !c[i].is_whitespace() {
                if c[i] == '\\' {
                    if let Some(&n) = c.get(i + 1) {
                        value.push(n);
                    }
                    i += 2;
                } else {
                    value.push(c[i]);
                    i += 1;
                }
            }
        }
        let raw: String = c[start..i.min(c.len())].iter().collect();
        out.push((key, value, raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form() {
        let (rest, tls) = split_tls_params(
            "postgres://u:p@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(
            tls,
            Some(TlsOptions::verify_full(RootCerts::PemFile(
                "/etc/ca x.pem".into()
            )))
        );
        let (rest, tls) = split_tls_params("postgresql://db/x?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://db/x");
        assert_eq!(tls.unwrap().mode, TlsMode::Require);
        let (rest, tls) = split_tls_params("postgres://db/x").unwrap();
        assert_eq!((rest.as_str(), tls), ("postgres://db/x", None));
        // sslrootcert=system implies verify-full, weaker modes are refused (as libpq).
        let (_, tls) = split_tls_params("postgres://db/x?sslrootcert=system").unwrap();
        assert_eq!(tls, Some(TlsOptions::verify_full(RootCerts::System)));
        assert!(split_tls_params("postgres://db/x?sslrootcert=system&sslmode=require").is_err());
        let e = split_tls_params("postgres://db/x?sslmode=allow").unwrap_err();
        assert!(
            e.to_string().contains("sslmode=allow is not supported"),
            "{e}"
        );
        assert!(split_tls_params("postgres://db/x?sslrootcert=%zz").is_err());
    }

    #[test]
    fn key_value_form() {
        let (rest, tls) = split_tls_params(
            "host=db port=5432 sslmode = verify-ca sslrootcert='/etc/my ca.pem' password='a b\\'c'",
        )
        .unwrap();
        assert_eq!(rest, "host=db port=5432 password='a b\\'c'");
        assert_eq!(
            tls,
            Some(TlsOptions {
                mode: TlsMode::VerifyCa,
                root_certs: Some(RootCerts::PemFile("/etc/my ca.pem".into())),
            })
        );
        assert!(split_tls_params("host=db sslmode").is_err());
        assert!(split_tls_params("host=db password='open").is_err());
    }

    #[test]
    fn bad_root_certificates_are_clear_errors() {
        let missing = TlsOptions {
            mode: TlsMode::VerifyFull,
            root_certs: Some(RootCerts::PemFile("/nonexistent/ca.pem".into())),
        };
        let e = missing.connector().err().expect("missing file").to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let empty = TlsOptions::verify_full(RootCerts::Pem("no certificate here".into()));
        let e = empty.connector().err().expect("no certificate").to_string();
        assert!(e.contains("no usable CA certificate"), "{e}");
        // Without root certificates, require only encrypts: no file is needed.
        let require = TlsOptions {
            mode: TlsMode::Require,
            root_certs: None,
        };
        assert!(require.connector().is_ok());
    }
}
