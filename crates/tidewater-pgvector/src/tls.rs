//! TLS to PostgreSQL as libpq's connection parameters ask for it, through rustls.
//!
//! The driver parses `sslmode` only as `disable`, `prefer` or `require` and refuses
//! `sslrootcert`, so [`connection`] takes both out of the connection string first and
//! builds the TLS settings itself:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | when the server offers it | not checked, unless `sslrootcert` is given (then as `verify-ca`) |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | signed by `sslrootcert`'s certificates (or the system's) |
//! | `verify-full` | always | as `verify-ca`, and issued for the host connected to |
//!
//! Without `sslrootcert`, `verify-ca` and `verify-full` trust the system's certificate
//! store (libpq reads `~/.postgresql/root.crt`).

use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{describe, PgVectorError};

/// How connections are made: in the clear, or through rustls.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

impl Tls {
    /// Connects with `config`.
    pub(crate) fn connect(&self, config: &postgres::Config) -> Result<Client, postgres::Error> {
        match self {
            Self::Plain => config.connect(NoTls),
            Self::Rustls(tls) => config.connect(tls.clone()),
        }
    }
}

/// What the server's certificate must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Anything (encryption without authentication, as libpq's `require`).
    Nothing,
    /// Signed by a trusted authority.
    Authority,
    /// Signed by a trusted authority and issued for the host.
    AuthorityAndHost,
}

/// The driver's settings for `dsn` and the TLS its `sslmode` and `sslrootcert` ask for.
pub(crate) fn connection(dsn: &str) -> Result<(postgres::Config, Tls), PgVectorError> {
    let invalid = |what: String| PgVectorError::Config(format!("dsn: {what}"));
    let (rest, sslmode, rootcert) = take_tls_params(dsn).map_err(invalid)?;
    let mut config: postgres::Config = rest
        .parse()
        .map_err(|e: postgres::Error| invalid(describe(&e)))?;
    let (mode, check) = match sslmode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, None),
        "allow" | "prefer" => (SslMode::Prefer, Some(Check::Nothing)),
        "require" => (SslMode::Require, Some(Check::Nothing)),
        "verify-ca" => (SslMode::Require, Some(Check::Authority)),
        "verify-full" => (SslMode::Require, Some(Check::AuthorityAndHost)),
        other => {
            return Err(invalid(format!(
                "sslmode \"{other}\" is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            )))
        }
    };
    config.ssl_mode(mode);
    let Some(mut check) = check else {
        return Ok((config, Tls::Plain));
    };
    if check == Check::Nothing && rootcert.is_some() {
        // libpq: a root certificate file given means the chain is checked.
        check = Check::Authority;
    }
    let tls = client_config(check, rootcert.as_deref()).map_err(invalid)?;
    Ok((config, Tls::Rustls(MakeRustlsConnect::new(tls))))
}

/// Splits `sslmode` and `sslrootcert` off a connection string in either of libpq's
/// forms (`key=value …` or a `postgresql://` URL): the rest, and the two values.
#[allow(clippy::type_complexity)]
fn take_tls_params(dsn: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let (mut sslmode, mut rootcert) = (None, None);
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let Some((base, query)) = dsn.split_once('?') else {
            return Ok((dsn.to_owned(), None, None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("sslmode", v)) => sslmode = Some(percent_decode(v)?),
                Some(("sslrootcert", v)) => rootcert = Some(percent_decode(v)?),
                _ => kept.push(pair),
            }
        }
        let rest = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        return Ok((rest, sslmode, rootcert));
    }
    let mut rest = String::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        if first == '=' {
            return Err("a parameter without a name".into());
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("parameter \"{key}\" has no value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        // The value as written (kept verbatim for the driver) and as meant.
        let (mut raw, mut value) = (String::new(), String::new());
        if chars.next_if_eq(&'\'').is_some() {
            raw.push('\'');
            loop {
                match chars.next() {
                    Some('\\') => {
                        let escaped = chars.next().ok_or("an unfinished escape")?;
                        raw.push('\\');
                        raw.push(escaped);
                        value.push(escaped);
                    }
                    Some('\'') => {
                        raw.push('\'');
                        break;
                    }
                    Some(c) => {
                        raw.push(c);
                        value.push(c);
                    }
                    None => return Err(format!("parameter \"{key}\": an unclosed quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                raw.push(c);
                value.push(c);
            }
        }
        match key.as_str() {
            "sslmode" => sslmode = Some(value),
            "sslrootcert" => rootcert = Some(value),
            _ => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(&key);
                rest.push('=');
                rest.push_str(&raw);
            }
        }
    }
    Ok((rest, sslmode, rootcert))
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad escape in \"{value}\""))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("\"{value}\" is not UTF-8"))
}

/// rustls settings that check the server's certificate as `check` says, against the
/// certificates in `rootcert` (a PEM file) or the system's.
fn client_config(check: Check, rootcert: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(AnyCertificate(provider)),
        Check::Authority | Check::AuthorityAndHost => {
            let roots = Arc::new(roots(rootcert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("the trusted certificates: {e}"))?;
            match check {
                Check::Authority => Arc::new(AnyHost(webpki)),
                _ => webpki,
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The certificates of the PEM file `rootcert`, or of the system.
fn roots(rootcert: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match rootcert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("sslrootcert {path}: no certificate in the file"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no certificate in the system's store to check the server's against; \
                     name a file with sslrootcert"
                        .into(),
                );
            }
        }
    }
    Ok(roots)
}

/// Accepts any certificate (libpq's `require`: encrypted, not authenticated); the
/// handshake's signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain but not the host name (`verify-ca`).
#[derive(Debug)]
struct AnyHost(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_either_form() {
        let (rest, mode, root) = take_tls_params(
            "host=db port = 5432 sslmode=verify-full password='a b\\'c' sslrootcert = '/etc/ca.pem'",
        )
        .unwrap();
        assert_eq!(rest, "host=db port=5432 password='a b\\'c'");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let parsed: postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"a b'c"[..]));

        let (rest, mode, root) = take_tls_params(
            "postgresql://u:p@db:5432/app?sslmode=require&connect_timeout=5&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u:p@db:5432/app?connect_timeout=5");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root.as_deref(), Some("/ca.pem"));

        assert_eq!(
            take_tls_params("host=db").unwrap(),
            ("host=db".to_owned(), None, None)
        );
        assert!(take_tls_params("host=db password='open").is_err());
    }

    #[test]
    fn modes_choose_plain_or_tls_and_bad_ones_are_refused() {
        let (config, tls) = connection("host=db sslmode=disable").unwrap();
        assert!(matches!(tls, Tls::Plain));
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        let (config, tls) = connection("host=db").unwrap();
        assert!(matches!(tls, Tls::Rustls(_)), "prefer by default, as libpq");
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer);
        let (config, _) = connection("host=db sslmode=require").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        let err = connection("host=db sslmode=sometimes").err().unwrap();
        assert!(err.to_string().contains("sslmode \"sometimes\""), "{err}");
        let err = connection("host=db sslmode=verify-ca sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
