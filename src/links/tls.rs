//! rustls client settings for the links: trusted roots, a client
//! certificate, and how much of the server's certificate is checked.
//! rustls runs on the ring provider, as the server's own TLS does.

use std::{path::Path, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::ParsedCertificate,
};

use super::LinkError;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: the link is encrypted but the server is not authenticated
    /// (PostgreSQL's `sslmode=prefer` and `require` without a CA).
    Nothing,
    /// Signed by a trusted CA, whatever host it names (`verify-ca`).
    Chain,
    /// Signed by a trusted CA and naming the host connected to
    /// (`verify-full`, and every `rediss://` link).
    ChainAndHost,
}

/// The roots a server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The CA certificates of a PEM file.
    File(String),
    /// The system's trusted roots.
    System,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A client setting for `verify`, trusting `roots`, presenting `identity`
/// (certificate chain and key files) when given. `setting` names what the
/// files came from in errors.
pub fn client_config(
    setting: &'static str,
    verify: Verify,
    roots: Option<&Roots>,
    identity: Option<(&str, &str)>,
) -> Result<ClientConfig, LinkError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| LinkError::Setting(setting, e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, roots) {
        (Verify::Nothing, _) => Arc::new(Lenient { roots: None, provider }),
        (_, None) => return Err(LinkError::Setting(setting, "verifying the server needs a CA".into())),
        (Verify::Chain, Some(roots)) => {
            Arc::new(Lenient { roots: Some(Arc::new(root_store(setting, roots)?)), provider })
        }
        (Verify::ChainAndHost, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(setting, roots)?), provider)
                .build()
                .map_err(|e| LinkError::Setting(setting, e.to_string()))?
        }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(setting, cert)?;
            let key = private_key(setting, key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| LinkError::Setting(setting, format!("client certificate {cert}: {e}")))
        }
    }
}

/// The certificates of a PEM file, at least one.
pub fn certificates(setting: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| LinkError::Setting(setting, format!("cannot read certificates from {path}: {e}")))?;
    if certs.is_empty() {
        return Err(LinkError::Setting(setting, format!("no certificate in {path}")));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(setting: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, LinkError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| LinkError::Setting(setting, format!("no private key in {path}: {e}")))
}

/// A PEM file's bytes, for clients that parse it themselves.
pub fn pem(setting: &'static str, path: &Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|e| LinkError::Setting(setting, format!("cannot read {}: {e}", path.display())))
}

fn root_store(setting: &'static str, roots: &Roots) -> Result<RootCertStore, LinkError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            for cert in certificates(setting, path)? {
                store.add(cert).map_err(|e| {
                    LinkError::Setting(setting, format!("{path} holds an unusable CA certificate: {e}"))
                })?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(LinkError::Setting(setting, "the system has no trusted root certificates".into()));
            }
        }
    }
    Ok(store)
}

/// The rustls error behind an I/O error, if a TLS handshake failed: what
/// tells a certificate that could not be verified (a setting to fix) from a
/// server that is not there (a dependency that is down).
pub fn tls_failure<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsError> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<TlsError>() {
            return Some(tls);
        }
        // An I/O error's `source` skips the error it wraps, and some clients
        // keep theirs behind an `Arc`: both are looked into.
        if let Some(shared) = e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            next = Some(&**shared);
            continue;
        }
        if let Some(tls) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<TlsError>()) {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// What a certificate failure means, in words an operator can act on.
pub fn explain(error: &TlsError, host: &str) -> String {
    match error {
        TlsError::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the server's certificate is not signed by a trusted CA".into()
        }
        TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("the server's certificate does not name the host {host}"),
        TlsError::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// The verifier of the links that do not check the host name: with roots,
/// the chain alone (`verify-ca`), checked on its own rather than by
/// ignoring a full check's name error, so nothing depends on the order in
/// which a full check looks at things; without, nothing (`prefer`,
/// `require`): encryption without authentication. Either way the
/// handshake's signatures are checked, so the key exchange is with the
/// certificate's holder.
#[derive(Debug)]
struct Lenient {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            let algorithms = self.provider.signature_verification_algorithms.all;
            verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, algorithms)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
