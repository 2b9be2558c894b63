//! Offline `inject` equals the server's patch applied to the same pod template.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// A pod template from pod-basic's object (what a controller would stamp out).
fn template() -> Value {
    let object = fixture_json("pod-basic")["request"]["object"].clone();
    let mut metadata = object["metadata"].clone();
    let meta = metadata.as_object_mut().unwrap();
    for key in ["name", "namespace", "managedFields"] {
        meta.remove(key);
    }
    meta.insert("labels".to_owned(), json!({"app": "demo"}));
    json!({"metadata": metadata, "spec": object["spec"]})
}

fn workloads() -> Vec<(&'static str, Value)> {
    let t = template();
    let meta = json!({"name": "demo", "namespace": "fixtures-1"});
    let selector = json!({"matchLabels": {"app": "demo"}});
    vec![
        (
            "Deployment",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": 2, "selector": selector, "template": t}}),
        ),
        (
            "StatefulSet",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
            "spec": {"serviceName": "demo", "selector": selector, "template": t}}),
        ),
        (
            "DaemonSet",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
            "spec": {"selector": selector, "template": t}}),
        ),
        (
            "Job",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"template": t}}),
        ),
        (
            "CronJob",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": t}}}}),
        ),
    ]
}

fn template_of(kind: &str, object: &Value) -> Value {
    let pointer = if kind == "CronJob" {
        "/spec/jobTemplate/spec/template"
    } else {
        "/spec/template"
    };
    object.pointer(pointer).unwrap().clone()
}

/// The server's answer for a pod made from the template, applied to it.
fn server_patched_template() -> Value {
    let t = template();
    let pod =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": t["metadata"], "spec": t["spec"]});
    let answer = answer(&test_mutator(), &pod_review(&pod));
    assert!(answer.body()["response"]["patch"].is_string());
    let patched = apply(&pod, &answer.body());
    json!({"metadata": patched["metadata"], "spec": patched["spec"]})
}

#[test]
fn inject_every_workload_kind_equals_server_patch() {
    let expected = server_patched_template();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (kind, object) in workloads() {
        let injected = runtime
            .block_on(webhook::inject::inject_documents(
                &test_mutator(),
                vec![object.clone()],
                "fixtures-1",
            ))
            .unwrap();
        let out = &injected[0].object;
        assert_eq!(template_of(kind, out), expected, "{kind}");
        // Everything outside the template is untouched.
        assert_eq!(out["metadata"], object["metadata"], "{kind}");
    }
}

#[test]
fn inject_binary_deployment_yaml_equals_server_patch() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("workloads.yaml");
    let mut text = String::new();
    for (_, object) in workloads() {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(&object).unwrap());
    }
    // A Service passes through unchanged.
    text.push_str("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: demo\nspec:\n  ports:\n  - port: 80\n");
    std::fs::write(&manifest, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vault-secrets-webhook"))
        .args(["inject", "-f"])
        .arg(&manifest)
        .args(["--namespace", "fixtures-1", "--vault-addr", VAULT_ADDR])
        .args(["--vault-addr-allowlist", "*.svc.cluster.local"])
        .args(["--vault-env-image", "ghcr.io/strongroom/vault-env:0.1.0"])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let documents =
        webhook::inject::parse_documents(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(documents.len(), 6);
    let expected = server_patched_template();
    for ((kind, _), document) in workloads().iter().zip(&documents) {
        let mut got = template_of(kind, document);
        // The binary writes its own crate version; the test mutator writes 0.1.0.
        got["metadata"]["annotations"]["strongroom.dev/injected"] = json!("0.1.0");
        assert_eq!(got, expected, "{kind}");
    }
    assert_eq!(documents[5]["kind"], "Service");
    assert!(documents[5]["metadata"].get("annotations").is_none());
}

#[test]
fn inject_refused_template_fails_with_annotation_named() {
    let mut object = workloads().remove(0).1;
    object["spec"]["template"]["metadata"]["annotations"]["vault.security.banzaicloud.io/vault-addr"] =
        json!("http://169.254.169.254");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(webhook::inject::inject_documents(
            &test_mutator(),
            vec![object],
            "fixtures-1",
        ))
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("Deployment demo") && text.contains("vault-addr"),
        "{text}"
    );
}
