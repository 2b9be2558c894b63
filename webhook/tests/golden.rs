//! Every captured review against its golden answer (`UPDATE_GOLDEN=1` rewrites them), plus
//! the per-case expectations from the fixtures' README.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use webhook::mutate::Decision;
use webhook::objects::NoObjects;

/// The golden form of an answer: the review with the patch decoded, so diffs are readable.
fn golden_form(review: &Value) -> Value {
    let mut review = review.clone();
    if let Some(patch) = review["response"]["patch"].as_str() {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        review["response"]["patch"] = serde_json::from_slice(&bytes).unwrap();
    }
    review
}

#[test]
fn golden_every_fixture_matches_and_patch_yields_valid_pod() {
    let mutator = test_mutator();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let fixtures = review_fixtures();
    assert!(fixtures.len() >= 21, "fixtures missing: {}", fixtures.len());
    let mut mismatches = Vec::new();
    for (name, body) in fixtures {
        let answer = answer(&mutator, &body);
        assert_eq!(answer.http_status, 200, "{name}");
        let review: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            answer.body()["response"]["uid"],
            review["request"]["uid"],
            "{name}: uid echoed"
        );
        assert_eq!(answer.body()["apiVersion"], review["apiVersion"], "{name}");
        let object = &review["request"]["object"];
        let patched = apply(object, &answer.body());
        if review["request"]["kind"]["kind"] == "Pod" {
            // Must still be a valid Pod after the patch.
            let _pod = as_pod(&patched);
        }
        let got = golden_form(&answer.body());
        let path = fixtures_dir().join("golden").join(format!("{name}.json"));
        if update {
            std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        let want: Value = serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap();
        if want != got {
            mismatches.push(name);
        }
    }
    assert!(mismatches.is_empty(), "golden mismatch: {mismatches:?}");
}

fn patched_pod(name: &str) -> (webhook::handler::Answer, k8s_openapi::api::core::v1::Pod) {
    let body = fixture(name);
    let answer = answer(&test_mutator(), &body);
    let review = fixture_json(name);
    let pod = as_pod(&apply(&review["request"]["object"], &answer.body()));
    (answer, pod)
}

fn env_of(container: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
    container
        .env
        .as_ref()?
        .iter()
        .find(|v| v.name == name)
        .and_then(|v| v.value.clone())
}

#[test]
fn pod_basic_injects_init_volume_command_and_env() {
    let (answer, pod) = patched_pod("pod-basic");
    assert_eq!(answer.outcome.decision, Decision::Patched);
    let spec = pod.spec.unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, "copy-vault-env");
    assert_eq!(
        init.command.as_deref().unwrap(),
        ["/usr/local/bin/vault-env", "copy-self", "/vault/"]
    );
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
        ["ALL"]
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let volume = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "vault-env")
        .unwrap();
    let empty_dir = volume.empty_dir.as_ref().unwrap();
    assert_eq!(empty_dir.medium.as_deref(), Some("Memory"));
    assert!(empty_dir.size_limit.is_some());
    let app = &spec.containers[0];
    assert_eq!(app.command.as_deref().unwrap(), ["/vault/vault-env"]);
    assert_eq!(
        app.args.as_deref().unwrap(),
        ["sh", "-c", "echo $AWS_SECRET_ACCESS_KEY && sleep 10000"]
    );
    let mount = app
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "vault-env")
        .unwrap();
    assert_eq!(mount.mount_path, "/vault/");
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(env_of(app, "VAULT_ADDR").as_deref(), Some(VAULT_ADDR));
    assert_eq!(env_of(app, "VAULT_ROLE").as_deref(), Some("default"));
    assert_eq!(env_of(app, "VAULT_PATH").as_deref(), Some("kubernetes"));
    assert_eq!(
        env_of(app, "VAULT_CACERT").as_deref(),
        Some("/vault/tls/ca.crt")
    );
    assert_eq!(
        env_of(app, "AWS_SECRET_ACCESS_KEY").as_deref(),
        Some("vault:secret/data/accounts/aws#AWS_SECRET_ACCESS_KEY")
    );
    assert_eq!(
        pod.metadata.annotations.unwrap()["strongroom.dev/injected"],
        "0.1.0"
    );
}

#[test]
fn pod_new_prefix_gets_same_injection_as_legacy_prefix() {
    let (_, basic) = patched_pod("pod-basic");
    let (answer, new) = patched_pod("pod-new-prefix");
    assert_eq!(answer.outcome.decision, Decision::Patched);
    assert_eq!(
        basic.spec.unwrap().containers[0].env,
        new.spec.unwrap().containers[0].env
    );
}

#[test]
fn pod_no_vault_and_skip_label_allowed_without_patch() {
    for (name, decision) in [
        ("pod-no-vault", Decision::NothingToInject),
        ("pod-skip-label", Decision::Skipped),
    ] {
        let answer = answer(&test_mutator(), &fixture(name));
        assert_eq!(answer.outcome.decision, decision, "{name}");
        assert_eq!(answer.body()["response"]["allowed"], true, "{name}");
        assert!(answer.body()["response"].get("patch").is_none(), "{name}");
    }
}

#[test]
fn pod_mutate_skip_annotation_allowed_without_patch() {
    let mut review = fixture_json("pod-basic");
    review["request"]["object"]["metadata"]["annotations"]["secrets-webhook.security.bank-vaults.io/mutate"] =
        json!("skip");
    let answer = answer(&test_mutator(), &serde_json::to_vec(&review).unwrap());
    assert_eq!(answer.outcome.decision, Decision::Skipped);
    assert!(answer.body()["response"].get("patch").is_none());
}

#[test]
fn pod_already_mutated_second_review_is_noop() {
    for name in [
        "pod-basic",
        "pod-multi-container",
        "pod-init-and-template",
        "pod-from-path",
    ] {
        let review = fixture_json(name);
        let first = answer(&test_mutator(), &fixture(name));
        let patched = apply(&review["request"]["object"], &first.body());
        let second = answer(&test_mutator(), &pod_review(&patched));
        assert_eq!(second.outcome.decision, Decision::AlreadyMutated, "{name}");
        assert!(second.body()["response"].get("patch").is_none(), "{name}");
        // Even without the marker annotation the init container identifies it.
        let mut unmarked = patched.clone();
        unmarked["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("strongroom.dev/injected");
        let third = answer(&test_mutator(), &pod_review(&unmarked));
        assert_eq!(third.outcome.decision, Decision::AlreadyMutated, "{name}");
    }
}

#[test]
fn pod_v1beta1_answered_in_v1beta1() {
    let answer = answer(&test_mutator(), &fixture("pod-v1beta1"));
    assert_eq!(answer.body()["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(answer.body()["kind"], "AdmissionReview");
    assert_eq!(answer.outcome.decision, Decision::Patched);
}

#[test]
fn pod_dry_run_patched_like_basic() {
    let dry = answer(&test_mutator(), &fixture("pod-dry-run"));
    let basic = answer(&test_mutator(), &fixture("pod-basic"));
    assert!(dry.meta.dry_run);
    assert_eq!(dry.outcome.decision, Decision::Patched);
    // The captures differ only in the random suffix of the service-account volume.
    let normalise = |name: &str, answer: &webhook::handler::Answer| {
        let volume = fixture_json(name)["request"]["object"]["spec"]["volumes"][0]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        serde_json::to_string(&answer.outcome.response.decoded_patch().unwrap())
            .unwrap()
            .replace(&volume, "kube-api-access")
    };
    assert_eq!(
        normalise("pod-dry-run", &dry),
        normalise("pod-basic", &basic)
    );
}

#[test]
fn pod_no_command_uses_image_entrypoint_and_sa_role() {
    let (_, pod) = patched_pod("pod-no-command");
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        app.args.as_deref().unwrap(),
        ["docker-entrypoint.sh", "redis-server"]
    );
    assert_eq!(env_of(app, "VAULT_ROLE").as_deref(), Some("app-sa"));
}

#[test]
fn pod_args_only_keeps_args_replacing_cmd() {
    let (_, pod) = patched_pod("pod-args-only");
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        app.args.as_deref().unwrap(),
        ["docker-entrypoint.sh", "--port", "6380"]
    );
}

#[test]
fn pod_unknown_image_without_command_warns_and_skips_container() {
    let mutator = mutator_with(test_config(), Arc::new(NoObjects));
    let mutator = webhook::mutate::Mutator::new(
        mutator.config().clone(),
        Arc::new(webhook::image::StaticImageResolver::default()),
        Arc::new(NoObjects),
    );
    let answer = answer(&mutator, &fixture("pod-no-command"));
    assert_eq!(answer.outcome.decision, Decision::NothingToInject);
    let body = answer.body();
    let warnings = body["response"]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("container redis")),
        "{warnings:?}"
    );
}

#[test]
fn pod_probes_exec_wrapped() {
    let (_, pod) = patched_pod("pod-probes");
    let app = &pod.spec.as_ref().unwrap().containers[0];
    for probe in [&app.liveness_probe, &app.readiness_probe] {
        let command = probe
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .as_ref()
            .unwrap();
        assert_eq!(command[0], "/vault/vault-env");
        assert!(command.len() > 1);
    }
}

#[test]
fn pod_envfrom_resolves_references_from_secret_and_configmap() {
    let (answer, pod) = patched_pod("pod-envfrom");
    assert_eq!(answer.outcome.decision, Decision::Patched);
    let app = &pod.spec.as_ref().unwrap().containers[0];
    let env = app.env.as_ref().unwrap();
    // valueFrom secretKeyRef whose value is a reference becomes the reference.
    let db = env
        .iter()
        .find(|v| v.value.as_deref() == Some("vault:secret/data/app#db-password"));
    assert!(db.is_some(), "{env:?}");
    // envFrom configMapRef with prefix CFG_ adds the reference key only.
    assert_eq!(
        env_of(app, "CFG_token").as_deref(),
        Some("vault:secret/data/app#token")
    );
    // Plain values never copied.
    let text = serde_json::to_string(&answer.body()).unwrap();
    assert!(!text.contains("not-a-reference"));
    assert!(!text.contains("api.example.com"));
}

#[test]
fn pod_envfrom_without_api_access_warns() {
    let mutator = mutator_with(test_config(), Arc::new(NoObjects));
    let answer = answer(&mutator, &fixture("pod-envfrom"));
    assert_eq!(answer.outcome.decision, Decision::Patched);
    let warnings = answer.body()["response"]["warnings"].to_string();
    assert!(warnings.contains("app-secrets"), "{warnings}");
}

#[test]
fn pod_multi_container_injects_only_containers_with_refs() {
    let (answer, pod) = patched_pod("pod-multi-container");
    assert_eq!(answer.outcome.injected_containers, 3);
    let spec = pod.spec.unwrap();
    let by_name = |name: &str| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .unwrap()
            .clone()
    };
    for name in ["app", "inline", "init-migrate"] {
        assert_eq!(
            by_name(name).command.as_deref().unwrap(),
            ["/vault/vault-env"],
            "{name}"
        );
    }
    for name in ["sidecar", "init-wait"] {
        assert_ne!(
            by_name(name).command.as_deref(),
            Some(&["/vault/vault-env".to_owned()][..]),
            "{name}"
        );
    }
    assert_eq!(spec.init_containers.unwrap()[0].name, "copy-vault-env");
}

#[test]
fn pod_daemon_and_transit_settings_become_env() {
    let (_, pod) = patched_pod("pod-daemon-dynamic");
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(env_of(app, "VAULT_ENV_DAEMON").as_deref(), Some("true"));
    let (_, pod) = patched_pod("pod-transit-inline-write");
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        env_of(app, "VAULT_TRANSIT_KEY_ID").as_deref(),
        Some("my-key")
    );
    let (_, pod) = patched_pod("pod-from-path");
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        env_of(app, "VAULT_ENV_FROM_PATH").as_deref(),
        Some("secret/data/accounts/aws")
    );
}

#[test]
fn secret_and_configmap_allowed_unpatched_with_warning() {
    for name in ["secret-dockerconfig", "configmap-refs", "configmap-update"] {
        let answer = answer(&test_mutator(), &fixture(name));
        assert_eq!(answer.body()["response"]["allowed"], true, "{name}");
        assert!(answer.body()["response"].get("patch").is_none(), "{name}");
        let warnings = answer.body()["response"]["warnings"].to_string();
        assert!(
            warnings.contains("admitted unchanged"),
            "{name}: {warnings}"
        );
    }
}

fn with_annotation(name: &str, key: &str, value: &str) -> Vec<u8> {
    let mut review = fixture_json(name);
    review["request"]["object"]["metadata"]["annotations"][key] = json!(value);
    serde_json::to_vec(&review).unwrap()
}

#[test]
fn pod_ssrf_vault_addr_table_denied_naming_annotation() {
    let key = "vault.security.banzaicloud.io/vault-addr";
    for addr in [
        "http://169.254.169.254",
        "http://metadata.google.internal",
        "http://127.0.0.1:8200",
        "http://localhost:8200",
        "http://10.0.0.1:8200",
        "http://172.16.5.4",
        "http://192.168.0.10",
        "http://100.64.0.1",
        "http://2130706433",
        "http://0x7f.1",
        "http://0177.0.0.1",
        "https://user:pass@vault.default.svc.cluster.local:8200",
        "https://vault.default.svc.cluster.local:8200?x=1",
        "https://vault.default.svc.cluster.local:8200#f",
        "https://vault.evil.example.com:8200",
    ] {
        let answer = answer(&test_mutator(), &with_annotation("pod-basic", key, addr));
        assert_eq!(answer.outcome.decision, Decision::Denied, "{addr}");
        let body = answer.body();
        let message = body["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(key), "{addr}: {message}");
        assert_eq!(answer.body()["response"]["status"]["code"], 403);
    }
    for addr in [
        "https://vault.default.svc.cluster.local:8200",
        "https://vault.team-a.svc.cluster.local:8200",
    ] {
        let answer = answer(&test_mutator(), &with_annotation("pod-basic", key, addr));
        assert_eq!(answer.outcome.decision, Decision::Patched, "{addr}");
    }
}

#[test]
fn pod_vault_env_image_not_allowlisted_denied() {
    let key = "secrets-webhook.security.bank-vaults.io/vault-env-image";
    let answer = answer(
        &test_mutator(),
        &with_annotation("pod-basic", key, "evil.io/x:1"),
    );
    assert_eq!(answer.outcome.decision, Decision::Denied);
    assert!(
        answer.body()["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("vault-env-image")
    );
    let mut config = test_config();
    config.vault_env_image_allowlist = vec!["evil.io/x:*".to_owned()];
    let mutator = mutator_with(config, Arc::new(test_objects()));
    let allowed = common::answer(&mutator, &with_annotation("pod-basic", key, "evil.io/x:1"));
    assert_eq!(allowed.outcome.decision, Decision::Patched);
}

#[test]
fn pod_skip_verify_from_object_ignored_unless_operator_allows() {
    let key = "vault.security.banzaicloud.io/vault-skip-verify";
    let (answer_default, pod) = {
        let a = answer(&test_mutator(), &with_annotation("pod-basic", key, "true"));
        let review: Value =
            serde_json::from_slice(&with_annotation("pod-basic", key, "true")).unwrap();
        let pod = as_pod(&apply(&review["request"]["object"], &a.body()));
        (a, pod)
    };
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(env_of(app, "VAULT_SKIP_VERIFY").as_deref(), Some("false"));
    assert!(
        answer_default.body()["response"]["warnings"]
            .to_string()
            .contains(key)
    );
    let mut config = test_config();
    config.allow_object_skip_verify = true;
    let mutator = mutator_with(config, Arc::new(test_objects()));
    let body = with_annotation("pod-basic", key, "true");
    let review: Value = serde_json::from_slice(&body).unwrap();
    let a = answer(&mutator, &body);
    let pod = as_pod(&apply(&review["request"]["object"], &a.body()));
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(env_of(app, "VAULT_SKIP_VERIFY").as_deref(), Some("true"));
}

#[test]
fn pod_security_annotations_cannot_widen_init_container() {
    let mut review = fixture_json("pod-basic");
    let annotations = &mut review["request"]["object"]["metadata"]["annotations"];
    annotations["vault.security.banzaicloud.io/run-as-user"] = json!("0");
    annotations["vault.security.banzaicloud.io/run-as-group"] = json!("2000");
    annotations["vault.security.banzaicloud.io/run-as-non-root"] = json!("false");
    annotations["vault.security.banzaicloud.io/psp-allow-privilege-escalation"] = json!("true");
    annotations["vault.security.banzaicloud.io/readonly-root-fs"] = json!("false");
    let a = answer(&test_mutator(), &serde_json::to_vec(&review).unwrap());
    let pod = as_pod(&apply(&review["request"]["object"], &a.body()));
    let init = &pod.spec.unwrap().init_containers.unwrap()[0];
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(65534));
    assert_eq!(sc.run_as_group, Some(2000));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        a.body()["response"]["warnings"].as_array().unwrap().len(),
        4
    );
}

#[test]
fn pod_malformed_reference_denied_naming_container_and_variable() {
    let mut review = fixture_json("pod-basic");
    review["request"]["object"]["spec"]["containers"][0]["env"][0]["value"] =
        json!("vault:secret/data/accounts/aws");
    let a = answer(&test_mutator(), &serde_json::to_vec(&review).unwrap());
    assert_eq!(a.outcome.decision, Decision::Denied);
    let body = a.body();
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("container alpine"), "{message}");
    assert!(message.contains("AWS_SECRET_ACCESS_KEY"), "{message}");
    assert!(message.contains("#KEY"), "{message}");
}

#[test]
fn pod_guard_mode_copied_and_passthrough_token_stripped() {
    let mut review = fixture_json("pod-basic");
    let annotations = &mut review["request"]["object"]["metadata"]["annotations"];
    annotations["strongroom.dev/guard-mode"] = json!("audit");
    annotations["vault.security.banzaicloud.io/vault-env-passthrough"] =
        json!("VAULT_ADDR,VAULT_TOKEN");
    let a = answer(&test_mutator(), &serde_json::to_vec(&review).unwrap());
    let pod = as_pod(&apply(&review["request"]["object"], &a.body()));
    let app = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        env_of(app, "STRONGROOM_GUARD_MODE").as_deref(),
        Some("audit")
    );
    // The init container's copy-self writes the mode file ebpf-guard reads.
    let init = pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap();
    let copy = init.iter().find(|c| c.name == "copy-vault-env").unwrap();
    assert_eq!(
        env_of(copy, "STRONGROOM_GUARD_MODE").as_deref(),
        Some("audit")
    );
    assert_eq!(
        env_of(app, "VAULT_ENV_PASSTHROUGH").as_deref(),
        Some("VAULT_ADDR")
    );
}

#[test]
fn pod_object_vault_env_vars_replaced_by_webhook_values() {
    let mut review = fixture_json("pod-basic");
    review["request"]["object"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "VAULT_ADDR", "value": "http://169.254.169.254"}));
    let a = answer(&test_mutator(), &serde_json::to_vec(&review).unwrap());
    let pod = as_pod(&apply(&review["request"]["object"], &a.body()));
    let app = &pod.spec.as_ref().unwrap().containers[0];
    let addrs: Vec<_> = app
        .env
        .as_ref()
        .unwrap()
        .iter()
        .filter(|v| v.name == "VAULT_ADDR")
        .collect();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].value.as_deref(), Some(VAULT_ADDR));
}
