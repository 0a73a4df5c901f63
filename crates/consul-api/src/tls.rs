//! The client's TLS configuration, as Go's `consul/api` builds it from `TLSConfig`: CA file
//! or CA directory, client certificate for `verify_incoming`, server name, and
//! `InsecureSkipVerify`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;
use crate::http::HttpOptions;

/// The rustls client configuration for `options`, and the server name to verify if it is
/// not the address's host.
pub(crate) fn client_config(
    options: &HttpOptions,
) -> Result<(rustls::ClientConfig, Option<ServerName<'static>>), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?;
    let builder = if options.tls_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
    } else {
        builder.with_root_certificates(roots(options)?)
    };
    let config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "CONSUL_CLIENT_CERT")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::config(format!("CONSUL_CLIENT_KEY {}: no private key: {e}", key.display()))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::config(format!(
                    "CONSUL_CLIENT_CERT {} and CONSUL_CLIENT_KEY {} do not go together: {e}",
                    cert.display(),
                    key_path(options)
                ))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::config(
                "both client cert and client key must be provided \
                 (CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY)",
            ));
        }
    };
    let server_name = match &options.tls_server_name {
        Some(name) => Some(server_name(name)?),
        None => None,
    };
    Ok((config, server_name))
}

fn key_path(options: &HttpOptions) -> String {
    options.client_key.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
}

/// `CONSUL_TLS_SERVER_NAME` may carry a port (Go drops it); IPv6 literals keep their
/// brackets' content.
fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    let host = match (name.rfind(':'), name.rfind(']')) {
        (Some(colon), bracket) if bracket.is_none_or(|b| colon > b) => &name[..colon],
        _ => name,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| Error::config(format!("CONSUL_TLS_SERVER_NAME {name:?}: {e}")))
}

/// The trusted CAs: `ca_cert` if set, else every file under `ca_path`. Like Go, the CA
/// file wins when both are set; unlike Go, the system's roots are not loaded when neither
/// is (a Consul cluster's CA is its own).
fn roots(options: &HttpOptions) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    if let Some(file) = &options.ca_cert {
        add_all(&mut roots, certs(file, "CONSUL_CACERT")?, file, "CONSUL_CACERT")?;
    } else if let Some(dir) = &options.ca_path {
        let mut files = Vec::new();
        walk(dir, &mut files)
            .map_err(|e| Error::config(format!("CONSUL_CAPATH {}: {e}", dir.display())))?;
        files.sort();
        for file in files {
            add_all(&mut roots, certs(&file, "CONSUL_CAPATH")?, &file, "CONSUL_CAPATH")?;
        }
    } else {
        return Err(Error::config(
            "https needs the CA that signed Consul's certificate: set CONSUL_CACERT or \
             CONSUL_CAPATH (or CONSUL_HTTP_SSL_VERIFY=false to skip verification)",
        ));
    }
    Ok(roots)
}

fn add_all(
    roots: &mut RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    file: &Path,
    var: &str,
) -> Result<(), Error> {
    for cert in certs {
        roots.add(cert).map_err(|e| {
            Error::config(format!("{var} {}: not a CA certificate: {e}", file.display()))
        })?;
    }
    Ok(())
}

/// Every regular file under `dir`, recursively, as Go's `filepath.Walk` visits them.
fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The certificates of a PEM file; a file with none is an error naming it, as Go's
/// "Couldn't parse PEM in: <file>".
fn certs(file: &Path, var: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::config(format!("{var} {}: {e}", file.display()));
    let certs: Vec<_> = CertificateDer::pem_file_iter(file)
        .map_err(|e| fail(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(&e))?;
    if certs.is_empty() {
        return Err(fail(&"no PEM certificate in the file"));
    }
    Ok(certs)
}

/// Go's `InsecureSkipVerify`: any certificate is accepted, but the handshake's signatures
/// are still checked, so the peer must hold the key of the certificate it sent.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_server_name_drops_a_port_as_go_does() {
        let name = |s| server_name(s).unwrap().to_str().into_owned();
        assert_eq!(name("server.dc1.consul"), "server.dc1.consul");
        assert_eq!(name("server.dc1.consul:8501"), "server.dc1.consul");
        assert_eq!(name("127.0.0.1:8501"), "127.0.0.1");
        assert_eq!(name("[::1]:8501"), "::1");
        assert!(
            server_name("bad name!").unwrap_err().to_string().contains("CONSUL_TLS_SERVER_NAME")
        );
    }
}
