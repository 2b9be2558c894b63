//! Self-managed TLS against the fake API server: replicas racing at start-up share one CA,
//! the caBundle they patch verifies what each serves (real handshakes, the caBundle as the
//! only root), a restart reuses the Secret, and rotation near expiry reaches the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};
use tokio::net::TcpStream;
use webhook::selfcert::{SelfCertSettings, SelfManagedTls};
use webhook::server::{Server, ServerSettings};
use webhook::telemetry::Metrics;

const NAMESPACE: &str = "strongroom-system";
const SECRET: &str = "strongroom-webhook-tls";
const CONFIGURATION: &str = "strongroom-webhook";
const SERVICE_NAME: &str = "strongroom-webhook.strongroom-system.svc";

fn api() -> FakeApiServer {
    let issuer = ServiceAccountIssuer::new().unwrap();
    let api = FakeApiServer::start(issuer.verifier()).unwrap();
    let webhook = |name: &str| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1", "v1beta1"],
            "sideEffects": "None",
            "clientConfig": {
                "service": { "name": "strongroom-webhook", "namespace": NAMESPACE, "path": "/pods" }
            },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"] }],
        })
    };
    api.insert(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": CONFIGURATION },
        "webhooks": [webhook("pods.vault-secrets-webhook.strongroom.dev"), webhook("second.strongroom.dev")],
    }))
    .unwrap();
    api
}

fn settings(dir: &Path) -> SelfCertSettings {
    SelfCertSettings {
        secret_name: SECRET.to_owned(),
        secret_namespace: NAMESPACE.to_owned(),
        dns_names: vec![
            "strongroom-webhook".to_owned(),
            SERVICE_NAME.to_owned(),
            "localhost".to_owned(),
        ],
        webhook_configuration: CONFIGURATION.to_owned(),
        dir: dir.to_owned(),
        ..SelfCertSettings::defaults()
    }
}

/// One webhook replica: self-managed TLS feeding a server on a loopback port.
struct Replica {
    tls: Arc<SelfManagedTls>,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Reconciles once (as `serve` does before binding), then starts the server; with
    /// `background`, also the periodic re-check.
    async fn start(
        api: &FakeApiServer,
        tweak: impl FnOnce(&mut SelfCertSettings),
        background: bool,
    ) -> (Self, webhook::selfcert::Reconciled) {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings(&dir.path().join("serving-cert"));
        tweak(&mut settings);
        let tls = SelfManagedTls::new(api.kube_client().unwrap(), settings);
        let done = tls.reconcile().await.unwrap();
        let mut server_settings = ServerSettings::loopback(tls.cert_file(), tls.key_file());
        server_settings.tls_reload_interval = Duration::from_millis(100);
        let server = Server::bind_noop(server_settings, Arc::new(Metrics::new()))
            .await
            .unwrap();
        let addr = server.local_addr();
        let mut tasks = vec![tokio::spawn(server.serve(std::future::pending()))];
        if background {
            tasks.push(tokio::spawn(Arc::clone(&tls).run()));
        }
        let replica = Self {
            tls,
            addr,
            tasks,
            _dir: dir,
        };
        (replica, done)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn secret_field(api: &FakeApiServer, key: &str) -> Vec<u8> {
    let secret = api
        .get("secrets", NAMESPACE, SECRET)
        .expect("the secret exists");
    let encoded = secret["data"][key]
        .as_str()
        .expect("the secret has the key");
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap()
}

fn first_der(pem: &[u8]) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .expect("a certificate")
        .unwrap()
}

/// The caBundle of every webhook entry (decoded PEM).
fn ca_bundles(api: &FakeApiServer) -> Vec<Vec<u8>> {
    let config = api
        .get("mutatingwebhookconfigurations", "", CONFIGURATION)
        .unwrap();
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| match &w["clientConfig"]["caBundle"] {
            Value::String(b) => base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
            _ => Vec::new(),
        })
        .collect()
}

/// A real TLS handshake to `addr` as the API server would do it (SNI = the service name),
/// trusting only `ca_bundle`; returns the certificate the server presented.
async fn presented_cert(addr: SocketAddr, ca_bundle: &[u8]) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_bundle[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(SERVICE_NAME).unwrap(), tcp)
        .await
        .expect("the handshake verifies against the caBundle");
    let (_, session) = tls.get_ref();
    session.peer_certificates().unwrap()[0].clone().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcert_two_replicas_starting_together_share_one_ca_that_verifies_both() {
    let api = api();
    let ((first, first_done), (second, second_done)) = tokio::join!(
        Replica::start(&api, |_| {}, false),
        Replica::start(&api, |_| {}, false)
    );

    // Exactly one replica stored the Secret; the other read it.
    assert!(
        first_done.stored ^ second_done.stored,
        "{first_done:?} {second_done:?}"
    );
    let ca = secret_field(&api, "ca.crt");
    let ca_text = String::from_utf8(ca.clone()).unwrap();
    assert_eq!(ca_text.matches("BEGIN CERTIFICATE").count(), 1, "one CA");
    let served = first_der(&secret_field(&api, "tls.crt"));

    // Every webhook entry carries that CA.
    let bundles = ca_bundles(&api);
    assert_eq!(bundles.len(), 2);
    assert!(bundles.iter().all(|b| *b == ca), "caBundle = ca.crt");

    // Both replicas present the stored serving certificate, and it verifies against the
    // patched caBundle alone.
    for replica in [&first, &second] {
        assert_eq!(presented_cert(replica.addr, &bundles[0]).await, served);
        assert_eq!(
            std::fs::read(replica.tls.cert_file()).unwrap(),
            secret_field(&api, "tls.crt")
        );
    }
    let secret = api.get("secrets", NAMESPACE, SECRET).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcert_restart_reuses_stored_secret_without_writes() {
    let api = api();
    let (first, done) = Replica::start(&api, |_| {}, false).await;
    assert!(done.stored);
    assert_eq!(done.patched_webhooks, 2);
    let before = api.get("secrets", NAMESPACE, SECRET).unwrap();
    drop(first);
    api.clear_requests();

    let (restarted, done) = Replica::start(&api, |_| {}, false).await;
    assert!(!done.stored, "{done:?}");
    assert_eq!(done.patched_webhooks, 0, "caBundle already right");
    let after = api.get("secrets", NAMESPACE, SECRET).unwrap();
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert_eq!(before["data"], after["data"]);
    let writes = api.requests().iter().filter(|r| r.method != "GET").count();
    assert_eq!(writes, 0, "a restart only reads");
    let served = first_der(&secret_field(&api, "tls.crt"));
    assert_eq!(
        presented_cert(restarted.addr, &ca_bundles(&api)[0]).await,
        served
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcert_serving_cert_near_expiry_rotates_under_same_ca_and_is_served() {
    let api = api();
    // 6 s certificates are renewed with under 2 s left, i.e. about 4 s after issue.
    let short = |s: &mut SelfCertSettings| {
        s.serving_validity = Duration::from_secs(6);
        s.check_interval = Duration::from_millis(200);
    };
    let (first, _) = Replica::start(&api, short, true).await;
    let (second, _) = Replica::start(&api, short, true).await;
    let ca = secret_field(&api, "ca.crt");
    let original = presented_cert(first.addr, &ca).await;
    assert_eq!(presented_cert(second.addr, &ca).await, original);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut rotated = None;
    while tokio::time::Instant::now() < deadline {
        let now_first = presented_cert(first.addr, &ca).await;
        let now_second = presented_cert(second.addr, &ca).await;
        if now_first != original && now_second != original {
            rotated = Some((now_first, now_second));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (now_first, now_second) = rotated.expect("both replicas serve a renewed certificate");
    // Same CA (the handshakes above trusted only the original ca.crt), still one CA in the
    // Secret, unchanged caBundle; the renewal went through a guarded update of the Secret.
    assert_eq!(secret_field(&api, "ca.crt"), ca);
    assert!(ca_bundles(&api).iter().all(|b| *b == ca));
    assert!(
        api.count_requests(
            "PUT",
            &format!("/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")
        ) >= 1
    );
    for cert in [&now_first, &now_second] {
        assert_ne!(cert, &original);
    }
}
