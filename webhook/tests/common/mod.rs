//! Shared test helpers: fixtures, a test mutator and patch application.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use webhook::image::{ImageEntrypoint, StaticImageResolver};
use webhook::mutate::{MutationConfig, Mutator};
use webhook::objects::{ObjectKind, ObjectSource, StaticObjects};
use webhook::policy::AddressPolicy;

pub const VAULT_ADDR: &str = "https://vault.default.svc.cluster.local:8200";

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every `*.json` review fixture, sorted by name.
pub fn review_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixtures_dir().join("admission"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        fixtures_dir()
            .join("admission")
            .join(format!("{name}.json")),
    )
    .unwrap()
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

/// The operator config the golden files were made with.
pub fn test_config() -> MutationConfig {
    MutationConfig {
        vault_addr: VAULT_ADDR.to_owned(),
        address_policy: AddressPolicy::new(Some(VAULT_ADDR), &["*.svc.cluster.local".to_owned()]),
        vault_env_image: "ghcr.io/strongroom/vault-env:0.1.0".to_owned(),
        version: "0.1.0".to_owned(),
        ..MutationConfig::default()
    }
}

/// Entrypoints of the images the fixtures use without `command`.
pub fn test_images() -> StaticImageResolver {
    let mut images = BTreeMap::new();
    images.insert(
        "registry.local:5000/team/redis:7".to_owned(),
        ImageEntrypoint {
            entrypoint: vec!["docker-entrypoint.sh".to_owned()],
            cmd: vec!["redis-server".to_owned()],
        },
    );
    images.insert(
        "redis:7".to_owned(),
        ImageEntrypoint {
            entrypoint: vec!["docker-entrypoint.sh".to_owned()],
            cmd: vec!["redis-server".to_owned()],
        },
    );
    StaticImageResolver::new(images)
}

/// The Secret and ConfigMap `pod-envfrom` references, as the namespace held them.
pub fn test_objects() -> StaticObjects {
    let mut objects = StaticObjects::default();
    objects.insert(
        ObjectKind::Secret,
        "fixtures-1",
        "app-secrets",
        [
            (
                "db-password".to_owned(),
                "vault:secret/data/app#db-password".to_owned(),
            ),
            ("plain".to_owned(), "not-a-reference".to_owned()),
        ],
    );
    objects.insert(
        ObjectKind::ConfigMap,
        "fixtures-1",
        "app-config",
        [
            ("api-url".to_owned(), "https://api.example.com".to_owned()),
            ("token".to_owned(), "vault:secret/data/app#token".to_owned()),
        ],
    );
    objects
}

pub fn mutator_with(config: MutationConfig, objects: Arc<dyn ObjectSource>) -> Mutator {
    Mutator::new(config, Arc::new(test_images()), objects)
}

pub fn test_mutator() -> Mutator {
    mutator_with(test_config(), Arc::new(test_objects()))
}

/// Answers a review body on a fresh current-thread runtime.
pub fn answer(mutator: &Mutator, body: &[u8]) -> webhook::handler::Answer {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(webhook::handler::answer(mutator, body))
}

/// Applies a response's patch to `object` with `json-patch`.
pub fn apply(object: &Value, response_review: &Value) -> Value {
    let mut patched = object.clone();
    let Some(patch) = response_review["response"]["patch"].as_str() else {
        return patched;
    };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    json_patch::patch(&mut patched, &patch).unwrap();
    patched
}

pub fn as_pod(value: &Value) -> Pod {
    serde_json::from_value(value.clone()).unwrap()
}

/// A review body around `object` (a Pod), v1.
pub fn pod_review(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0000-test",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "fixtures-1",
            "operation": "CREATE",
            "object": object,
        }
    }))
    .unwrap()
}

pub mod net;
