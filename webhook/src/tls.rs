//! The serving certificate: loaded from `TLS_CERT_FILE`/`TLS_PRIVATE_KEY_FILE`, reloaded when
//! the files change (including kubelet's atomic `..data` symlink swap of a mounted Secret)
//! without rebinding the listener. Handshakes pick the current certificate through
//! [`CertStore`]'s `ResolvesServerCert` impl, so open connections keep the one they started
//! with and new connections see the new one.
//!
//! Files are polled (by path, every `interval`) rather than watched with inotify: a symlink
//! swap replaces the directory entry the watch would be on, and polling two small files once
//! a second costs nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Why a certificate could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoPrivateKey { path: PathBuf },
    #[error("the private key in {path} is not usable")]
    UnusableKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the TLS server configuration")]
    ServerConfig(#[source] rustls::Error),
}

/// The current certificate and where it comes from.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    fingerprint: RwLock<Option<[u8; 32]>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl CertStore {
    /// A store for the two files; nothing is loaded yet.
    pub fn new(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            current: RwLock::new(None),
            fingerprint: RwLock::new(None),
        })
    }

    /// Whether a certificate is loaded (readiness).
    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// Reads both files and swaps the certificate in if they changed; returns whether it did.
    ///
    /// # Errors
    ///
    /// [`TlsError`] when a file cannot be read or parsed; the previous certificate stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read(&self.cert_path)?;
        let key_pem = Zeroizing::new(read(&self.key_path)?);
        let mut hasher = Sha256::new();
        hasher.update(&cert_pem);
        hasher.update(key_pem.as_slice());
        let fingerprint: [u8; 32] = hasher.finalize().into();
        if self
            .fingerprint
            .read()
            .map(|f| *f == Some(fingerprint))
            .unwrap_or(false)
        {
            return Ok(false);
        }
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert_path.clone(),
            });
        }
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .ok()
            .flatten()
            .ok_or_else(|| TlsError::NoPrivateKey {
                path: self.key_path.clone(),
            })?;
        let signing_key =
            ring::sign::any_supported_type(&key).map_err(|source| TlsError::UnusableKey {
                path: self.key_path.clone(),
                source,
            })?;
        let certified = Arc::new(CertifiedKey::new(certs, signing_key));
        if let Ok(mut current) = self.current.write() {
            *current = Some(certified);
        }
        if let Ok(mut f) = self.fingerprint.write() {
            *f = Some(fingerprint);
        }
        Ok(true)
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3, ALPN h2 and http/1.1) that
    /// serves whatever certificate the store holds at handshake time.
    ///
    /// # Errors
    ///
    /// [`TlsError::ServerConfig`] if the provider rejects the protocol versions.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(TlsError::ServerConfig)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Polls the files every `interval` until `shutdown` resolves, logging reloads and
    /// failures (the old certificate keeps serving on failure).
    pub async fn watch(self: Arc<Self>, interval: Duration, on_reload: impl Fn(bool) + Send) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert_path.display(), "TLS certificate loaded");
                    on_reload(true);
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "TLS certificate reload failed; keeping the previous one");
                    on_reload(false);
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_owned(),
        source,
    })
}
