//! valueFrom/envFrom references read from a (fake) kube-apiserver through `kube`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::*;
use serde_json::json;
use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};
use webhook::mutate::Decision;
use webhook::objects::KubeObjects;

const CANARY: &str = "plain-secret-canary-51d2";

fn fake() -> FakeApiServer {
    let issuer = ServiceAccountIssuer::new().unwrap();
    let fake = FakeApiServer::start(issuer.verifier()).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "app-secrets", "namespace": "fixtures-1"},
        "type": "Opaque",
        "data": {
            "db-password": b64("vault:secret/data/app#db-password"),
            "other": b64(CANARY),
        },
    }))
    .unwrap();
    fake.insert(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app-config", "namespace": "fixtures-1"},
        "data": {"api-url": "https://api.example.com", "token": "vault:secret/data/app#token"},
    }))
    .unwrap();
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_objects_envfrom_and_valuefrom_resolved_once_per_object() {
    let fake = fake();
    fake.clear_requests();
    let objects = KubeObjects::new(fake.kube_client().unwrap());
    let mutator = mutator_with(test_config(), Arc::new(objects));
    let answer = webhook::handler::answer(&mutator, &fixture("pod-envfrom")).await;
    assert_eq!(answer.outcome.decision, Decision::Patched);
    let review = fixture_json("pod-envfrom");
    let pod = as_pod(&apply(&review["request"]["object"], &answer.body()));
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(
        env.iter()
            .any(|v| v.value.as_deref() == Some("vault:secret/data/app#db-password"))
    );
    assert!(env.iter().any(|v| v.name == "CFG_token"));
    let text = answer.body().to_string();
    assert!(
        !text.contains(CANARY),
        "a plain Secret value leaked into the answer"
    );
    assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode(CANARY)));
    // Referenced by envFrom and valueFrom: read once per review.
    assert_eq!(
        fake.count_requests("GET", "/api/v1/namespaces/fixtures-1/secrets/app-secrets"),
        1
    );
    assert_eq!(
        fake.count_requests("GET", "/api/v1/namespaces/fixtures-1/configmaps/app-config"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_objects_missing_secret_leaves_reference_to_kubelet() {
    let issuer = ServiceAccountIssuer::new().unwrap();
    let fake = FakeApiServer::start(issuer.verifier()).unwrap();
    let objects = KubeObjects::new(fake.kube_client().unwrap());
    let mutator = mutator_with(test_config(), Arc::new(objects));
    let answer = webhook::handler::answer(&mutator, &fixture("pod-envfrom")).await;
    // The direct vault ref still gets injected; the valueFrom entries stay as they were.
    assert_eq!(answer.outcome.decision, Decision::Patched);
    let review = fixture_json("pod-envfrom");
    let pod = as_pod(&apply(&review["request"]["object"], &answer.body()));
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(env.iter().any(|v| {
        v.value_from
            .as_ref()
            .is_some_and(|f| f.secret_key_ref.is_some())
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_objects_api_unreachable_denies_with_object_name() {
    let fake = fake();
    let client = fake.kube_client().unwrap();
    drop(fake);
    let mutator = mutator_with(test_config(), Arc::new(KubeObjects::new(client)));
    let answer = webhook::handler::answer(&mutator, &fixture("pod-envfrom")).await;
    assert_eq!(answer.outcome.decision, Decision::Denied);
    let body = answer.body();
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("fixtures-1/app-"), "{message}");
}
