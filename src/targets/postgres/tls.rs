//! TLS for the connection pool: rustls, `verify-full` by default, with the CA from the
//! credentials Secret.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{CA_KEY, TargetConfig, TargetError};

/// How TLS is used, from `spec.postgresql.sslMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tls {
    Disable,
    VerifyCa,
    VerifyFull,
}

/// The rustls client configuration `sslMode` asks for.
pub(super) fn client_tls(
    config: &TargetConfig,
    tls: Tls,
) -> Result<rustls::ClientConfig, TargetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TargetError::Config(format!("TLS: {e}")))?;
    let secret = &config.credentials.secret;
    let roots = match tls {
        // A pool over plain TCP never starts a handshake; any valid configuration will do.
        Tls::Disable => RootCertStore::empty(),
        Tls::VerifyCa | Tls::VerifyFull => {
            let pem = config.credentials.bytes(CA_KEY).ok_or_else(|| {
                TargetError::Config(format!(
                    "Secret {secret}: key {CA_KEY:?} is missing; add the PEM CA certificate of the \
                     PostgreSQL server (required by sslMode verify-full and verify-ca)"
                ))
            })?;
            let bad = |why: String| {
                TargetError::Config(format!(
                    "Secret {secret}: key {CA_KEY:?} is not a usable PEM CA certificate: {why}"
                ))
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| bad(e.to_string()))?;
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no CERTIFICATE block found".into()));
            }
            roots
        }
    };
    if tls == Tls::VerifyCa {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| TargetError::Config(format!("TLS: {e}")))?;
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
            .with_no_client_auth())
    } else {
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }
}

/// `verify-ca`: the certificate must chain to the CA; the host name is not checked.
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
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // The chain was verified before the name was looked at.
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
