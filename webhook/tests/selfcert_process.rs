//! Self-managed TLS as operators run it: real `vault-secrets-webhook serve` processes with
//! `--tls-self-managed=true`, reaching the fake API server through a kubeconfig. Two processes
//! starting at once end up with one CA Secret, the caBundle they patch verifies both serving
//! certificates (real handshakes, the caBundle as the only root), and both answer a captured
//! AdmissionReview over that TLS. A process that starts while the API server refuses it
//! becomes ready soon after it stops refusing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::fixture;
use common::net::{eventually, get};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};
use tokio::net::TcpStream;

const NAMESPACE: &str = "strongroom-system";
const SECRET: &str = "strongroom-webhook-tls";
const CONFIGURATION: &str = "strongroom-webhook";
const SERVICE_NAME: &str = "strongroom-webhook.strongroom-system.svc";
const VAULT_ADDR: &str = "https://vault.default.svc.cluster.local:8200";

/// The fake API server holding the chart's MutatingWebhookConfiguration (no caBundle yet).
fn api() -> FakeApiServer {
    let issuer = ServiceAccountIssuer::new().unwrap();
    let api = FakeApiServer::start(issuer.verifier()).unwrap();
    api.insert(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": CONFIGURATION },
        "webhooks": [{
            "name": "pods.vault-secrets-webhook.strongroom.dev",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "sideEffects": "None",
            "clientConfig": {
                "service": { "name": "strongroom-webhook", "namespace": NAMESPACE, "path": "/pods" }
            },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"] }],
        }],
    }))
    .unwrap();
    api
}

/// A kubeconfig for `api` whose context namespace is [`NAMESPACE`]: the processes get the
/// Secret's namespace from it (`TLS_SECRET_NAMESPACE` left empty, as in a pod).
fn write_kubeconfig(api: &FakeApiServer, dir: &Path) -> PathBuf {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "fake", "cluster": {
            "server": api.url(),
            "certificate-authority-data": b64(api.ca_pem()),
        }}],
        "users": [{ "name": "webhook", "user": { "token": api.token() } }],
        "contexts": [{ "name": "fake", "context": {
            "cluster": "fake", "user": "webhook", "namespace": NAMESPACE,
        }}],
        "current-context": "fake",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

/// One `serve` process; killed and reaped on drop. Its log goes to a file (a pipe nobody
/// reads could fill up and stall it).
struct Webhook {
    child: Child,
    addr: SocketAddr,
    telemetry: SocketAddr,
    cert_dir: PathBuf,
    log: PathBuf,
}

impl Webhook {
    fn spawn(kubeconfig: &Path, work: &Path, index: usize) -> Self {
        let port = strongroom_testbed::free_port().unwrap();
        let telemetry = strongroom_testbed::free_port().unwrap();
        let cert_dir = work.join(format!("serving-cert-{index}"));
        let log = work.join(format!("webhook-{index}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_vault-secrets-webhook"))
            .args(["--log-level", "info", "serve"])
            .arg(format!("--listen-address=127.0.0.1:{port}"))
            .arg(format!("--telemetry-listen-address=127.0.0.1:{telemetry}"))
            .args(["--vault-addr", VAULT_ADDR])
            .args(["--vault-addr-allowlist", "*.svc.cluster.local"])
            .args(["--tls-reload-interval-ms", "100"])
            // Nothing from the test's environment (no KUBERNETES_SERVICE_HOST, no HOME).
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            // The chart's environment for self-managed TLS (names from SelfCertArgs);
            // TLS_SECRET_NAMESPACE is left to the kubeconfig's namespace, as in a pod.
            .env("TLS_SELF_MANAGED", "true")
            .env("TLS_SECRET_NAME", SECRET)
            .env(
                "TLS_DNS_NAMES",
                format!("strongroom-webhook,{SERVICE_NAME},127.0.0.1"),
            )
            .env("WEBHOOK_CONFIGURATION_NAME", CONFIGURATION)
            .env("TLS_SELF_MANAGED_DIR", &cert_dir)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            telemetry: SocketAddr::from(([127, 0, 0, 1], telemetry)),
            cert_dir,
            log,
        }
    }

    async fn ready(&self) -> bool {
        TcpStream::connect(self.telemetry).await.is_ok()
            && get(self.telemetry, "/readyz").await.0 == 200
    }

    /// Waits for `/readyz`; on timeout, fails with the process's log.
    async fn wait_ready(&self, timeout: Duration) {
        if !eventually(timeout, || self.ready()).await {
            panic!(
                "serve did not become ready:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode(b64: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().expect("a base64 string"))
        .unwrap()
}

fn first_der(pem: &[u8]) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .expect("a certificate")
        .unwrap()
}

/// A TLS connection to `addr` as the API server opens it: SNI = the service name, the
/// caBundle as the only root. Returns the HTTP/1.1 sender and the presented certificate.
async fn connect(
    addr: SocketAddr,
    ca_bundle: &[u8],
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    CertificateDer<'static>,
) {
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
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVICE_NAME).unwrap(), tcp)
        .await
        .expect("the handshake verifies against the caBundle alone");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    (sender, presented)
}

/// POSTs a review over `sender` and returns the decoded answer.
async fn review(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    body: Vec<u8>,
) -> Value {
    sender.ready().await.unwrap();
    let request = http::Request::post("/pods?timeout=10s")
        .header("host", SERVICE_NAME)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcert_process_two_serve_processes_share_one_ca_and_answer_reviews_over_it() {
    let api = api();
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(&api, work.path());
    // Both start before either can have created the Secret.
    let webhooks = [
        Webhook::spawn(&kubeconfig, work.path(), 0),
        Webhook::spawn(&kubeconfig, work.path(), 1),
    ];
    for webhook in &webhooks {
        webhook.wait_ready(Duration::from_secs(20)).await;
    }

    // Exactly one Secret in the namespace, holding one CA.
    let secrets_path = format!("/api/v1/namespaces/{NAMESPACE}/secrets");
    let listed = api.kube_client().unwrap();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(listed, NAMESPACE);
    let names: Vec<String> = secrets
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert_eq!(names, [SECRET]);
    assert!(
        api.count_requests("POST", &secrets_path) >= 1,
        "a process created the Secret"
    );
    let secret = api.get("secrets", NAMESPACE, SECRET).unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let ca = decode(&secret["data"]["ca.crt"]);
    assert_eq!(
        String::from_utf8_lossy(&ca)
            .matches("BEGIN CERTIFICATE")
            .count(),
        1,
        "one CA"
    );
    let stored_cert = decode(&secret["data"]["tls.crt"]);

    // The webhook configuration's caBundle is that CA.
    let configuration = api
        .get("mutatingwebhookconfigurations", "", CONFIGURATION)
        .unwrap();
    let ca_bundle = decode(&configuration["webhooks"][0]["clientConfig"]["caBundle"]);
    assert_eq!(ca_bundle, ca, "caBundle = ca.crt");

    // Each process serves the stored certificate, it verifies against the caBundle alone, and
    // a captured review gets its patch over that connection.
    let body = fixture("pod-basic");
    for webhook in &webhooks {
        let (mut sender, presented) = connect(webhook.addr, &ca_bundle).await;
        assert_eq!(presented, first_der(&stored_cert));
        assert_eq!(
            std::fs::read(webhook.cert_dir.join("tls.crt")).unwrap(),
            stored_cert
        );
        let answer = review(&mut sender, body.clone()).await;
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let patch = decode(&answer["response"]["patch"]);
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert!(
            patch
                .as_array()
                .unwrap()
                .iter()
                .any(|op| op["value"]["name"] == "copy-vault-env"
                    || op["value"][0]["name"] == "copy-vault-env"),
            "the patch adds the init container: {patch}"
        );
    }

    // Once both background checks have run (each process reconciles at start and again in its
    // first check), neither has rewritten the Secret: the IP name 127.0.0.1 among
    // TLS_DNS_NAMES must not look "missing" on every pass. A pass ends by reading the webhook
    // configuration once, plus once more after each lost patch race; exactly one patch
    // succeeds (the caBundle is set once), so passes = GETs - (PATCHes - 1).
    let secret_path = format!("{secrets_path}/{SECRET}");
    let configuration_path = format!(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIGURATION}"
    );
    let puts = || api.count_requests("PUT", &secret_path);
    let passes = || {
        (api.count_requests("GET", &configuration_path) + 1)
            .saturating_sub(api.count_requests("PATCH", &configuration_path))
    };
    let checked = eventually(Duration::from_secs(10), || async {
        passes() >= 4 || puts() > 0
    })
    .await;
    assert!(checked, "both processes re-checked the Secret");
    assert_eq!(puts(), 0, "no rotation");
    let again = api.get("secrets", NAMESPACE, SECRET).unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"],
        secret["metadata"]["resourceVersion"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selfcert_process_api_failing_at_start_becomes_ready_after_retry() {
    let api = api();
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(&api, work.path());
    let secret_path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}");
    // The start-up pass and the first retry fail as they do while the RoleBinding is not
    // there yet (403; kube's client retries 503 itself, not this). The check interval is
    // 60 s, so only a quicker retry makes the process ready within the deadline.
    api.inject_failure("GET", &secret_path, 403, 2);
    let webhook = Webhook::spawn(&kubeconfig, work.path(), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    webhook.wait_ready(Duration::from_secs(15)).await;
    assert!(api.count_requests("GET", &secret_path) >= 3);
    let log = std::fs::read_to_string(&webhook.log).unwrap();
    assert!(
        log.contains("self-managed TLS check failed; retrying"),
        "{log}"
    );
    let secret = api.get("secrets", NAMESPACE, SECRET).unwrap();
    let (_, presented) = connect(webhook.addr, &decode(&secret["data"]["ca.crt"])).await;
    assert_eq!(presented, first_der(&decode(&secret["data"]["tls.crt"])));
}
