//! What a failed image lookup does to a pod whose container has no `command`: the operator's
//! `REGISTRY_FAILURE_POLICY` (deny, or admit unmutated with a warning), the per-pod opt-out
//! annotation, and the static-map-only default (that container is left uninjected).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use webhook::image::StaticImageResolver;
use webhook::mutate::{Decision, MutationConfig, Mutator, Outcome};
use webhook::objects::NoObjects;
use webhook::registry::FailurePolicy;

fn pod_without_command(annotations: serde_json::Value) -> Pod {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "p", "namespace": "ns", "annotations": annotations },
        "spec": {
            "serviceAccountName": "default",
            "containers": [{
                "name": "redis",
                "image": "registry.invalid/team/redis:7",
                "env": [{ "name": "REDIS_PASSWORD", "value": "vault:secret/data/redis#password" }]
            }]
        }
    });
    serde_json::from_value(pod).expect("a valid Pod")
}

async fn review(policy: Option<FailurePolicy>, pod: &Pod) -> Outcome {
    let config = MutationConfig {
        image_failure_policy: policy,
        ..MutationConfig::default()
    };
    let mutator = Mutator::new(
        config,
        Arc::new(StaticImageResolver::default()),
        Arc::new(NoObjects),
    );
    mutator.review_pod("uid-1", pod, "ns").await
}

#[tokio::test]
async fn failed_lookup_with_deny_policy_denies_naming_container_and_image() {
    let outcome = review(Some(FailurePolicy::Deny), &pod_without_command(json!({}))).await;
    assert_eq!(outcome.decision, Decision::Denied);
    assert!(!outcome.response.allowed);
    let message = outcome
        .response
        .status
        .map(|s| s.message)
        .unwrap_or_default();
    assert!(message.contains("container redis"), "{message}");
    assert!(
        message.contains("registry.invalid/team/redis:7"),
        "{message}"
    );
}

#[tokio::test]
async fn failed_lookup_with_admit_policy_allows_unpatched_with_warning() {
    let outcome = review(
        Some(FailurePolicy::AdmitUnmutated),
        &pod_without_command(json!({})),
    )
    .await;
    assert!(outcome.response.allowed);
    assert!(outcome.response.patch.is_none());
    assert!(
        outcome
            .response
            .warnings
            .iter()
            .any(|w| w.contains("without Vault injection") && w.contains("redis")),
        "{:?}",
        outcome.response.warnings
    );
}

#[tokio::test]
async fn opt_out_annotation_skips_lookup_even_with_deny_policy() {
    let pod = pod_without_command(json!({ "strongroom.dev/registry-lookup": "false" }));
    let outcome = review(Some(FailurePolicy::Deny), &pod).await;
    assert!(outcome.response.allowed);
    assert!(outcome.response.patch.is_none());
    assert!(
        outcome
            .response
            .warnings
            .iter()
            .any(|w| w.contains("strongroom.dev/registry-lookup")),
        "{:?}",
        outcome.response.warnings
    );
}

#[tokio::test]
async fn failed_lookup_without_registry_policy_warns_and_skips_container() {
    let outcome = review(None, &pod_without_command(json!({}))).await;
    assert!(outcome.response.allowed);
    assert_eq!(outcome.decision, Decision::NothingToInject);
    assert!(
        outcome
            .response
            .warnings
            .iter()
            .any(|w| w.contains("entrypoint is unknown")),
        "{:?}",
        outcome.response.warnings
    );
}
