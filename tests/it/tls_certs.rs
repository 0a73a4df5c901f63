//! Certificates for the TLS tests, made fresh by each test with rcgen: a CA, certificates
//! it signs for a server and a client, and a stranger CA nobody trusts. Written as PEM
//! files into a directory removed when the value drops.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that signs leaf certificates.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    /// A self-signed CA named `name`.
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate and its key (PEM), valid for `names` (DNS names or IPs), usable
    /// by a server and a client, as Consul's `consul tls cert create` makes them.
    pub(crate) fn leaf(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.use_authority_key_identifier_extension = true;
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// PEM files in a temporary directory.
pub(crate) struct Pki {
    pub(crate) dir: PathBuf,
    /// The trusted CA's certificate.
    pub(crate) ca: PathBuf,
    /// A directory holding only the CA's certificate (for CONSUL_CAPATH).
    pub(crate) ca_dir: PathBuf,
    /// The server's certificate and key (names given to [`Pki::new`]).
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    /// A client certificate and key signed by the CA.
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    /// A CA that signed nothing here.
    pub(crate) stranger_ca: PathBuf,
    /// A client certificate and key signed by the stranger CA.
    pub(crate) stranger_cert: PathBuf,
    pub(crate) stranger_key: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for `server_names`, a client certificate, and a
    /// stranger CA with a client certificate of its own.
    pub(crate) fn new(server_names: &[&str]) -> Pki {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "consul-ha-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("cas")).expect("temp dir");
        let write = |name: &str, text: &str| -> PathBuf {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write PEM");
            p
        };
        let ca = Ca::new("consul-ha test CA");
        let stranger = Ca::new("a stranger CA");
        let (server_cert, server_key) = ca.leaf(server_names);
        let (client_cert, client_key) = ca.leaf(&["client.dc1.consul"]);
        let (stranger_cert, stranger_key) = stranger.leaf(&["client.dc1.consul"]);
        Pki {
            ca: write("ca.pem", &ca.pem),
            ca_dir: {
                write("cas/ca.pem", &ca.pem);
                dir.join("cas")
            },
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            stranger_ca: write("stranger-ca.pem", &stranger.pem),
            stranger_cert: write("stranger.pem", &stranger_cert),
            stranger_key: write("stranger-key.pem", &stranger_key),
            dir,
        }
    }

    /// A file in the directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `p` as a `&str`, for flags and environment values.
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}
