//! HTTPS test plumbing: kubelet-style certificate directories, an in-process server and a
//! small rustls + hyper client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use strongroom_testbed::TestCa;
use tokio::net::TcpStream;
use webhook::mutate::Mutator;
use webhook::server::{Server, ServerSettings};
use webhook::telemetry::Metrics;

/// A Secret volume as kubelet lays it out: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<timestamp>/`; [`SecretDir::rotate`] swaps `..data` atomically.
pub struct SecretDir {
    pub dir: tempfile::TempDir,
    generation: u32,
}

impl SecretDir {
    pub fn new(ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut this = Self { dir, generation: 0 };
        this.rotate(ca);
        std::os::unix::fs::symlink("..data/tls.crt", this.cert()).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", this.key()).unwrap();
        this
    }

    /// A directory with no certificate files yet.
    pub fn empty() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
        }
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// Writes a new timestamped directory and swaps `..data` to it with a rename.
    pub fn rotate(&mut self, ca: &TestCa) {
        self.generation += 1;
        let root = self.dir.path();
        let versioned = format!(
            "..2026_11_29_00_00_0{}.{}",
            self.generation,
            std::process::id()
        );
        let target = root.join(&versioned);
        std::fs::create_dir(&target).unwrap();
        ca.write_files(&target).unwrap();
        let tmp = root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&versioned, &tmp).unwrap();
        let old = std::fs::read_link(root.join("..data")).ok();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(root.join(old)).unwrap();
        }
    }
}

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub telemetry: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
    pub metrics: Arc<Metrics>,
}

impl TestServer {
    pub async fn start(mutator: Mutator, settings: ServerSettings) -> Self {
        let metrics = Arc::new(Metrics::new());
        let server = Server::bind(settings, mutator, Arc::clone(&metrics))
            .await
            .unwrap();
        let addr = server.local_addr();
        let telemetry = server.telemetry_addr();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.serve(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            telemetry,
            shutdown: Some(tx),
            task: Some(task),
            metrics,
        }
    }

    /// Starts shutdown and returns the serve task to await.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Settings for a test: loopback ports and short timeouts.
pub fn test_settings(dir: &SecretDir) -> ServerSettings {
    let mut settings = ServerSettings::loopback(dir.cert(), dir.key());
    settings.tls_reload_interval = Duration::from_millis(100);
    settings.header_read_timeout = Duration::from_secs(2);
    settings.body_read_timeout = Duration::from_secs(2);
    settings.body_limit = 1024 * 1024;
    settings.shutdown_grace = Duration::from_secs(10);
    settings
}

pub fn client_config(
    cas: &[&TestCa],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.ca_der().clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

pub fn default_client(cas: &[&TestCa]) -> Arc<rustls::ClientConfig> {
    client_config(cas, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

/// One keep-alive HTTP/1.1 connection over TLS.
pub struct Conn {
    pub sender: SendRequest<Full<Bytes>>,
    pub peer_cert: CertificateDer<'static>,
    pub version: rustls::ProtocolVersion,
}

pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Conn {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    let peer_cert = session.peer_certificates().unwrap()[0].clone().into_owned();
    let version = session.protocol_version().unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    Conn {
        sender,
        peer_cert,
        version,
    }
}

impl Conn {
    pub async fn post(&mut self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Bytes) {
        self.sender.ready().await.unwrap();
        let request = http::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    pub async fn review(&mut self, body: Vec<u8>) -> serde_json::Value {
        let (status, body) = self
            .post("/pods?timeout=10s", "application/json", body)
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }
}

/// A plain GET to the telemetry listener: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `check` is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}
