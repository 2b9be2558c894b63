//! The real binary: `serve` with JSON logs, one line per review, nothing from env values in
//! the logs, and a clean exit on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::net::*;
use common::*;
use serde_json::json;
use strongroom_testbed::TestCa;

const CANARY: &str = "canary-e9b0c4d2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_json_logs_one_line_per_review_no_env_values_and_sigterm_exits_cleanly() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    let port = strongroom_testbed::free_port().unwrap();
    let telemetry = strongroom_testbed::free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vault-secrets-webhook"))
        .args(["--log-format", "json", "--log-level", "debug", "serve"])
        .arg(format!("--listen-address=127.0.0.1:{port}"))
        .arg(format!("--telemetry-listen-address=127.0.0.1:{telemetry}"))
        .arg("--tls-cert-file")
        .arg(dir.cert())
        .arg("--tls-private-key-file")
        .arg(dir.key())
        .args([
            "--vault-addr",
            VAULT_ADDR,
            "--vault-addr-allowlist",
            "*.svc.cluster.local",
        ])
        .env_clear()
        .env("KUBECONFIG", "/nonexistent")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let telemetry_addr = std::net::SocketAddr::from(([127, 0, 0, 1], telemetry));
    let ready = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(telemetry_addr).await.is_ok()
            && get(telemetry_addr, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "server did not become ready");

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = connect(addr, default_client(&[&ca])).await;
    // A plain value, a reference and a malformed reference all carry the canary.
    let mut review = fixture_json("pod-basic");
    let env = review["request"]["object"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap();
    env.push(json!({"name": "PLAIN", "value": CANARY}));
    env.push(json!({"name": "REF", "value": format!("vault:secret/data/{CANARY}#key")}));
    let allowed = conn.review(serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(allowed["response"]["allowed"], true);
    review["request"]["uid"] = json!("uid-denied");
    review["request"]["object"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "BAD", "value": format!("vault:{CANARY}")}));
    let denied = conn.review(serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(denied["response"]["allowed"], false);
    let (status, _) = conn
        .post(
            "/pods",
            "application/json",
            format!("{{\"broken\": \"{CANARY}").into_bytes(),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = conn
        .post("/pods", "text/plain", CANARY.as_bytes().to_vec())
        .await;
    assert_eq!(status, 415);
    drop(conn);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut logs = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut logs)
                    .unwrap();
                return (status, logs);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("no exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let (status, logs) = status;
    assert!(status.success(), "exit {status:?}\n{logs}");
    assert!(
        !logs.contains(CANARY),
        "an env value reached the logs:\n{logs}"
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let reviews: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "admission review")
        .collect();
    // Two parsed reviews and the malformed body: one line each.
    assert_eq!(reviews.len(), 3, "{logs}");
    assert_eq!(reviews[0]["decision"], "patched");
    assert_eq!(reviews[0]["namespace"], "fixtures-1");
    assert_eq!(reviews[0]["name"], "pod-basic");
    assert!(reviews[0]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(reviews[1]["decision"], "denied");
    assert_eq!(reviews[1]["uid"], "uid-denied");
    assert_eq!(reviews[2]["decision"], "invalid");
    assert!(lines.iter().any(|l| l["message"] == "shut down"), "{logs}");
}
