//! 200 concurrent TLS connections sending reviews for 10 s: every answer is correct.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::net::*;
use common::*;
use serde_json::json;
use strongroom_testbed::TestCa;
use webhook::admission::PatchText;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_200_connections_10s_every_review_answered_correctly() {
    let ca = TestCa::new().unwrap();
    let dir = SecretDir::new(&ca);
    let mut settings = test_settings(&dir);
    settings.header_read_timeout = Duration::from_secs(10);
    let server = TestServer::start(test_mutator(), settings).await;
    let client = default_client(&[&ca]);
    let basic = fixture_json("pod-basic");
    let plain = fixture_json("pod-no-vault");
    let expected_patch = {
        let answer = webhook::handler::answer(&test_mutator(), &fixture("pod-basic")).await;
        answer.outcome.response.decoded_patch().unwrap()
    };
    let answered = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = server.addr;
    let mut tasks = Vec::new();
    for connection in 0..200 {
        let client = Arc::clone(&client);
        let (basic, plain, expected_patch) = (basic.clone(), plain.clone(), expected_patch.clone());
        let answered = Arc::clone(&answered);
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(addr, client).await;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let uid = format!("c{connection}-r{i}");
                let with_vault = i.is_multiple_of(2);
                let mut review = if with_vault {
                    basic.clone()
                } else {
                    plain.clone()
                };
                review["request"]["uid"] = json!(uid);
                let answer = conn.review(serde_json::to_vec(&review).unwrap()).await;
                assert_eq!(answer["response"]["uid"], json!(uid));
                assert_eq!(answer["response"]["allowed"], true);
                if with_vault {
                    let got = webhook::admission::AdmissionResponse {
                        patch: answer["response"]["patch"]
                            .as_str()
                            .map(|text| PatchText::from_base64(text).unwrap()),
                        ..webhook::admission::AdmissionResponse::allow(&uid)
                    };
                    assert_eq!(got.decoded_patch().as_ref(), Some(&expected_patch), "{uid}");
                } else {
                    assert!(answer["response"].get("patch").is_none(), "{uid}");
                }
                answered.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let mut failures = 0;
    for task in tasks {
        if task.await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 0,
        "connections that saw a wrong or missing answer"
    );
    let total = answered.load(Ordering::Relaxed);
    assert!(total >= 400, "only {total} reviews answered in 10 s");
    eprintln!("answered {total} reviews over 200 connections in 10 s");
}
