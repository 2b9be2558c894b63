//! The HTTPS server end to end on loopback: real TLS, certificate rotation, health and
//! metrics, bad input, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::*;
use common::*;
use serde_json::json;
use strongroom_testbed::TestCa;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls12_and_tls13_review_patched_and_v1beta1_kept() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    let server = TestServer::start(test_mutator(), test_settings(&dir)).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut conn = connect(server.addr, client_config(&[&ca], &[version])).await;
        assert_eq!(conn.version, version.version);
        let review = conn.review(fixture("pod-basic")).await;
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let patched = apply(&fixture_json("pod-basic")["request"]["object"], &review);
        as_pod(&patched);
        let review = conn.review(fixture("pod-v1beta1")).await;
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(
            review["response"]["uid"],
            fixture_json("pod-v1beta1")["request"]["uid"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_data_symlink_swap_new_connections_see_new_cert_open_one_keeps_working() {
    let old_ca = TestCa::new().unwrap();
    let new_ca = TestCa::new().unwrap();
    let mut dir = SecretDir::new(&old_ca);
    // The open connection waits idle through the rotation: the idle deadline (120 s), not the
    // tests' 2 s head deadline, applies to it.
    let server = TestServer::start(test_mutator(), test_settings(&dir)).await;
    let both = default_client(&[&old_ca, &new_ca]);
    let mut open = connect(server.addr, Arc::clone(&both)).await;
    let old_cert = open.peer_cert.clone();
    assert_eq!(
        open.review(fixture("pod-basic")).await["response"]["allowed"],
        true
    );

    dir.rotate(&new_ca);
    // Probes must do full handshakes: a TLS 1.3 resumption sends no certificate, and the
    // client then reports the one of the resumed session (the old one).
    let mut probe = (*both).clone();
    probe.resumption = rustls::client::Resumption::disabled();
    let probe = Arc::new(probe);
    let rotated = eventually(Duration::from_secs(5), || {
        let probe = Arc::clone(&probe);
        let old_cert = old_cert.clone();
        async move { connect(server.addr, probe).await.peer_cert != old_cert }
    })
    .await;
    assert!(rotated, "new connections never saw the rotated certificate");
    // A client trusting only the new CA now connects.
    let mut fresh = connect(server.addr, default_client(&[&new_ca])).await;
    assert_eq!(
        fresh.review(fixture("pod-basic")).await["response"]["allowed"],
        true
    );
    // The connection opened before the swap keeps working.
    assert_eq!(
        open.review(fixture("pod-no-vault")).await["response"]["allowed"],
        true
    );
    let (_, metrics) = get(server.telemetry, "/metrics").await;
    assert!(
        metrics.contains("vault_secrets_webhook_tls_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_not_ready_until_certificates_appear() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::empty();
    let server = TestServer::start(test_mutator(), test_settings(&dir)).await;
    assert_eq!(get(server.telemetry, "/livez").await.0, 200);
    assert_eq!(get(server.telemetry, "/readyz").await.0, 503);
    ca.write_files(dir.dir.path()).unwrap();
    let ready = eventually(Duration::from_secs(5), || async {
        get(server.telemetry, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready);
    let mut conn = connect(server.addr, default_client(&[&ca])).await;
    assert_eq!(
        conn.review(fixture("pod-basic")).await["response"]["allowed"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reviews_with_bounded_labels_and_sub_ms_buckets() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    let server = TestServer::start(test_mutator(), test_settings(&dir)).await;
    let mut conn = connect(server.addr, default_client(&[&ca])).await;
    conn.review(fixture("pod-basic")).await;
    conn.review(fixture("pod-dry-run")).await;
    conn.review(fixture("pod-no-vault")).await;
    conn.review(fixture("secret-dockerconfig")).await;
    let (status, text) = get(server.telemetry, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "vault_secrets_webhook_admission_reviews_total{kind=\"Pod\",operation=\"CREATE\",decision=\"patched\"} 2",
        "vault_secrets_webhook_admission_reviews_total{kind=\"Pod\",operation=\"CREATE\",decision=\"nothing_to_inject\"} 1",
        "vault_secrets_webhook_admission_reviews_total{kind=\"Secret\",operation=\"CREATE\",decision=\"not_ours\"} 1",
        // The dry run is not counted as an injection.
        "vault_secrets_webhook_injections_total 1",
        "vault_secrets_webhook_admission_duration_seconds_bucket{le=\"0.0001\"}",
        "vault_secrets_webhook_admission_duration_seconds_count 4",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    assert!(
        !text.contains("fixtures-1"),
        "namespace must not be a label"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_each_answered_and_server_keeps_serving() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    let server = TestServer::start(test_mutator(), test_settings(&dir)).await;
    let client = default_client(&[&ca]);
    let mut conn = connect(server.addr, Arc::clone(&client)).await;

    // Malformed JSON: 400 with an AdmissionReview saying why.
    let (status, body) = conn
        .post("/pods", "application/json", b"{\"apiVersion\": ".to_vec())
        .await;
    assert_eq!(status, 400);
    let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["allowed"], false);
    assert!(
        review["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not an AdmissionReview")
    );

    // A review without an object.
    let mut no_object = fixture_json("pod-basic");
    no_object["request"]
        .as_object_mut()
        .unwrap()
        .remove("object");
    let review = conn.review(serde_json::to_vec(&no_object).unwrap()).await;
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(review["response"]["status"]["code"], 400);
    assert!(
        review["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("no request.object")
    );

    // A review without a request.
    let (status, _) = conn
        .post(
            "/pods",
            "application/json",
            serde_json::to_vec(
                &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            )
            .unwrap(),
        )
        .await;
    assert_eq!(status, 400);

    // A non-Pod object under kind Pod is invalid; another kind is allowed untouched.
    let mut not_pod = fixture_json("pod-basic");
    not_pod["request"]["object"]["spec"] = json!("not a spec");
    let review = conn.review(serde_json::to_vec(&not_pod).unwrap()).await;
    assert_eq!(review["response"]["status"]["code"], 400);
    let mut deployment = fixture_json("pod-basic");
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let review = conn.review(serde_json::to_vec(&deployment).unwrap()).await;
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none());

    // Wrong Content-Type.
    let (status, _) = conn.post("/pods", "text/plain", fixture("pod-basic")).await;
    assert_eq!(status, 415);

    // Over the body limit (1 MiB in tests): declared length and streamed body.
    // Raw connections: the server answers 413 and closes before the client has written
    // the whole body, which a full HTTP client reports as a broken pipe.
    let (status, _) =
        oversized_post(server.addr, &client, 2 * 1024 * 1024, Framing::Declared).await;
    assert_eq!(status, 413);
    let (status, _) = oversized_post(server.addr, &client, 2 * 1024 * 1024, Framing::Chunked).await;
    assert_eq!(status, 413);

    // Unknown path and wrong method.
    assert_eq!(
        conn.post("/other", "application/json", fixture("pod-basic"))
            .await
            .0,
        404
    );

    // Still serving.
    assert_eq!(
        conn.review(fixture("pod-basic")).await["response"]["allowed"],
        true
    );
    let (_, metrics) = get(server.telemetry, "/metrics").await;
    assert!(
        metrics.contains("http_rejections_total{reason=\"too_large\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_rejections_total{reason=\"content_type\"} 1"),
        "{metrics}"
    );
}

/// How an oversized body announces itself.
#[derive(Clone, Copy)]
enum Framing {
    /// `Content-Length` says how big it is up front.
    Declared,
    /// No length: chunked transfer encoding, so only counting reveals the size.
    Chunked,
}

/// Sends a `len`-byte body, stopping when the server closes; returns the status and response text.
async fn oversized_post(
    addr: std::net::SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    len: usize,
    framing: Framing,
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(client));
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let length = match framing {
        Framing::Declared => format!("content-length: {len}"),
        Framing::Chunked => "transfer-encoding: chunked".to_string(),
    };
    let head = format!(
        "POST /pods HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let written = match framing {
            Framing::Declared => tls.write_all(&chunk).await.is_ok(),
            Framing::Chunked => {
                let frame = format!("{:x}\r\n", chunk.len());
                tls.write_all(frame.as_bytes()).await.is_ok()
                    && tls.write_all(&chunk).await.is_ok()
                    && tls.write_all(b"\r\n").await.is_ok()
            }
        };
        if !written {
            break;
        }
        sent += chunk.len();
    }
    let mut response = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut response))
        .await
        .unwrap()
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&response[..n]).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_idle_past_head_deadline_is_kept_then_closed_at_idle_deadline() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    let mut settings = test_settings(&dir);
    settings.header_read_timeout = Duration::from_millis(300);
    settings.idle_timeout = Duration::from_millis(1500);
    let server = TestServer::start(test_mutator(), settings).await;
    let client = default_client(&[&ca]);

    // Reviews on one connection with pauses longer than the head deadline: all answered.
    let mut conn = connect(server.addr, Arc::clone(&client)).await;
    for _ in 0..3 {
        assert_eq!(
            conn.review(fixture("pod-basic")).await["response"]["allowed"],
            true
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
    }

    // After an answer, a connection left idle is closed at the idle deadline, not before.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&client))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let body = fixture("pod-basic");
    let head = format!(
        "POST /pods HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut last_data = Instant::now();
    let closed_after = loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                received.extend_from_slice(&buf[..n]);
                last_data = Instant::now();
            }
            Ok(_) => break last_data.elapsed(),
            Err(_) => panic!("idle connection still open after 10 s"),
        }
    };
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received[..received.len().min(64)])
    );
    assert!(
        closed_after >= Duration::from_millis(1200),
        "closed {closed_after:?} after the answer: the head deadline applied to an idle connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_one_byte_per_second_cut_off_while_others_served() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    let server = TestServer::start(test_mutator(), test_settings(&dir)).await;
    let client = default_client(&[&ca]);

    // After the handshake, headers trickle in one byte a second.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client));
    let mut slow = connector
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in
            b"POST /pods HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n".iter()
        {
            if slow.write_all(&[*byte]).await.is_err() || slow.flush().await.is_err() {
                return Instant::now();
            }
            let mut buf = [0u8; 256];
            // A read that returns (EOF or a 408) means the server gave up.
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await
            {
                return Instant::now();
            }
        }
        Instant::now()
    });
    // Meanwhile another client is served normally.
    let mut conn = connect(server.addr, Arc::clone(&client)).await;
    for _ in 0..3 {
        assert_eq!(
            conn.review(fixture("pod-basic")).await["response"]["allowed"],
            true
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cut = trickle.await.unwrap();
    let lasted = cut - started;
    // Header timeout is 2 s in tests; the header is 70 bytes (70 s if never cut).
    assert!(
        lasted < Duration::from_secs(6),
        "slow client lasted {lasted:?}"
    );

    // A client that never finishes the TLS handshake is dropped too.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(&[0x16]).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "handshake trickle not cut: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_review_then_refuses_new_connections() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    // The image lookup takes 1 s, so the review is in flight when shutdown starts.
    let mutator = webhook::mutate::Mutator::new(
        test_config(),
        Arc::new(SlowImages(Duration::from_secs(1))),
        Arc::new(test_objects()),
    );
    let mut server = TestServer::start(mutator, test_settings(&dir)).await;
    let mut conn = connect(server.addr, default_client(&[&ca])).await;
    let in_flight = tokio::spawn(async move { conn.review(fixture("pod-no-command")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let serving = server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get(server.telemetry, "/readyz").await.0,
        503,
        "not ready while draining"
    );
    let review = in_flight.await.unwrap();
    assert_eq!(review["response"]["allowed"], true);
    assert!(
        review["response"]["patch"].is_string(),
        "in-flight review completed with its patch"
    );
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

struct SlowImages(Duration);

impl webhook::image::ImageResolver for SlowImages {
    fn resolve<'a>(
        &'a self,
        lookup: &'a webhook::image::ImageLookup,
    ) -> webhook::image::ResolveFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            test_images().resolve(lookup).await
        })
    }
}
