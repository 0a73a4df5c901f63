//! HTTPS for the sim's server, as a Consul agent serves it with `cert_file`, `key_file`,
//! `ca_file` and `verify_incoming_https`: rustls on the ring provider.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The server side of TLS: the agent's certificate and key, and, with `verify_incoming`,
/// the CA every client certificate must be signed by.
#[derive(Clone)]
pub struct TlsConfig(pub(crate) Arc<rustls::ServerConfig>);

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TlsConfig {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

/// Why a TLS configuration could not be made: names the file and what was wrong.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl TlsConfig {
    /// From PEM files. With `verify_incoming`, a client that does not present a
    /// certificate signed by `ca` is refused during the handshake, as Consul's
    /// `verify_incoming_https` refuses it; `verify_incoming` without a CA is an error, as
    /// in Consul. Without it, no client certificate is asked for.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        ca: Option<&Path>,
        verify_incoming: bool,
    ) -> Result<TlsConfig, TlsError> {
        let fail = |what: &str, file: &Path, e: &dyn fmt::Display| {
            TlsError(format!("{what} {}: {e}", file.display()))
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| fail("--tls-cert", cert, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail("--tls-cert", cert, &e))?;
        if chain.is_empty() {
            return Err(fail("--tls-cert", cert, &"no PEM certificate in the file"));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| fail("--tls-key", key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS: {e}")))?;
        let builder = match (ca, verify_incoming) {
            (Some(ca), true) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).map_err(|e| fail("--tls-ca", ca, &e))? {
                    let c = c.map_err(|e| fail("--tls-ca", ca, &e))?;
                    roots.add(c).map_err(|e| fail("--tls-ca", ca, &e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| fail("--tls-ca", ca, &e))?;
                builder.with_client_cert_verifier(Arc::new(GoAlerts(verifier)))
            }
            (None, true) => {
                return Err(TlsError(
                    "--verify-incoming needs --tls-ca: the CA client certificates are checked against"
                        .into(),
                ));
            }
            (_, false) => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_single_cert(chain, key_der).map_err(|e| fail("--tls-key", key, &e))?;
        // Consul's HTTPS listener speaks HTTP/1.1 (and h2, which this server does not).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig(Arc::new(config)))
    }

    /// From a rustls configuration made elsewhere.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig(config)
    }
}

/// The CA's verifier, refusing a client certificate with the alert Go's TLS server sends
/// for any certificate it rejects, `bad_certificate` (42), as Consul 1.8.7 was seen to do
/// (rustls would say `unknown_ca` for a stranger's certificate).
#[derive(Debug)]
struct GoAlerts(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for GoAlerts {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now).map_err(|e| match e {
            rustls::Error::InvalidCertificate(_) => {
                rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
            }
            other => other,
        })
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
