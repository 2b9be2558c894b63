//! Throw-away TLS material: a self-signed CA and a server certificate for `127.0.0.1`/`localhost`,
//! and rustls configs built with the ring provider (never a process default).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::ring::default_provider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, Result};

/// A fresh CA and one server certificate (SANs `127.0.0.1`, `localhost`) it signed.
pub struct TestCa {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl TestCa {
    /// Generates the CA and the server certificate.
    pub fn new() -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| Error::crypto("ca params")(&e))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "strongroom-testbed CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(|e| Error::crypto("generate ca key")(&e))?;
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)
            .map_err(|e| Error::crypto("self-sign ca")(&e))?;

        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(|e| Error::crypto("server params")(&e))?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let leaf_key = KeyPair::generate().map_err(|e| Error::crypto("generate server key")(&e))?;
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca)
            .map_err(|e| Error::crypto("sign server cert")(&e))?;

        Ok(Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server_chain: vec![leaf.der().clone(), ca.der().clone()],
            server_key_der: leaf_key.serialize_der(),
            server_cert_pem: leaf.pem(),
            server_key_pem: leaf_key.serialize_pem(),
        })
    }

    /// The CA certificate, PEM (what clients trust).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The server certificate, PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The server private key, PKCS#8 PEM (a throw-away test key).
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// Writes `ca.crt`, `tls.crt` (server chain) and `tls.key` into `dir` (the key with mode
    /// 0600), the file names a kubernetes.io/tls Secret mount uses, for servers configured by
    /// path (e.g. `TLS_CERT_FILE`/`TLS_PRIVATE_KEY_FILE`).
    pub fn write_files(&self, dir: &std::path::Path) -> Result<TlsFiles> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.ca, &self.ca_pem).map_err(Error::fs("write", &files.ca))?;
        let chain = format!("{}{}", self.server_cert_pem, self.ca_pem);
        std::fs::write(&files.cert, chain).map_err(Error::fs("write", &files.cert))?;
        let mut key = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&files.key)
            .map_err(Error::fs("create", &files.key))?;
        key.write_all(self.server_key_pem.as_bytes())
            .map_err(Error::fs("write", &files.key))?;
        Ok(files)
    }

    /// A rustls server config (ALPN h2 and http/1.1) presenting the server certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::crypto("server tls versions")(&e))?
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .map_err(|e| Error::crypto("server tls cert")(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// Paths written by [`TestCa::write_files`].
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM).
    pub ca: std::path::PathBuf,
    /// The server certificate followed by the CA (PEM chain).
    pub cert: std::path::PathBuf,
    /// The server private key (PKCS#8 PEM, mode 0600).
    pub key: std::path::PathBuf,
}

/// A rustls client config (ring provider) that trusts exactly the CAs in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        let cert: CertificateDer<'static> = cert.map_err(|e| Error::crypto("parse ca pem")(&e))?;
        roots.add(cert).map_err(|e| Error::crypto("add ca")(&e))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::crypto("client tls versions")(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
