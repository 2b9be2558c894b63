//! Tests of `manifests/`: the Helm chart, its plain-YAML renders and the examples.
//!
//! The chart is rendered and linted by Helm's own Go SDK (`helm-python-sdk`, driven by
//! `manifests/render.py`); every object is then checked against the Kubernetes API types of
//! `k8s-openapi`, so an unknown or misspelled field fails, not only a wrong type. Kinds that
//! `k8s-openapi` does not know (cert-manager, prometheus-operator) are checked against small
//! hand-written schemas of the fields the chart may use.
//!
//! A missing `python3` or `helm_python` fails the tests with a message saying how to install them
//! (`cargo xtask test` installs them first); nothing is skipped.
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The values files whose render is committed to `manifests/rendered/` (as in render.py).
const RENDERED: [&str; 4] = ["default", "cert-manager", "self-managed-tls", "guard"];
const NAMESPACE: &str = "strongroom-system";

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .join("manifests")
}

/// Every documented values file, `manifests/values/*.yaml`, sorted.
fn values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(manifests_dir().join("values"))
        .expect("read manifests/values")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn values_file(name: &str) -> PathBuf {
    manifests_dir().join("values").join(format!("{name}.yaml"))
}

/// Runs `python3 manifests/render.py ARGS`; `Err` carries stdout+stderr when it exits non-zero.
/// Panics with installation advice when python3 or helm_python is missing.
fn render_py(args: &[&str]) -> Result<String, String> {
    let script = manifests_dir().join("render.py");
    let output = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run python3 ({error}): the chart tests need python3 and helm-python-sdk; \
                 run `cargo xtask test` (installs both) or `cargo xtask deps`"
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("cannot import helm_python"),
        "{stderr}\nthe chart tests need helm-python-sdk: run `cargo xtask test` (installs it) or \
         `python3 -m pip install helm-python-sdk`"
    );
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

/// The chart rendered with one values file, as multi-document YAML (release `strongroom` in
/// `strongroom-system`, as committed).
fn render(values: &Path) -> String {
    render_as(values, "strongroom", NAMESPACE)
}

/// The chart rendered with one values file for a given release name and namespace. Renders are
/// cached for the whole test binary: each costs a Python start and a load of the Helm library.
fn render_as(values: &Path, release: &str, namespace: &str) -> String {
    type Key = (PathBuf, String, String);
    static CACHE: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    let key = (
        values.to_path_buf(),
        release.to_string(),
        namespace.to_string(),
    );
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(hit) = cache.lock().expect("render cache").get(&key) {
        return hit.clone();
    }
    let path = values.to_str().expect("utf-8 path");
    let args = [
        "render",
        path,
        "--release",
        release,
        "--namespace",
        namespace,
    ];
    let rendered = render_py(&args)
        .unwrap_or_else(|error| panic!("rendering with {}: {error}", values.display()));
    cache
        .lock()
        .expect("render cache")
        .insert(key, rendered.clone());
    rendered
}

/// The non-empty YAML documents of a multi-document string, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("valid YAML document"))
        .filter(|value| !value.is_null())
        .collect()
}

fn kind(object: &Value) -> (&str, &str) {
    (
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    )
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// Deserializes into `T`, serializes back and requires the same JSON: a field `T` does not know
/// (unknown or misspelled) is dropped by the round trip and shows up as a difference.
fn round_trip_as<T: DeserializeOwned + Serialize>(object: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference(object, &back, String::new()) {
        None => Ok(typed),
        Some(path) => Err(format!(
            "field {path} does not survive the k8s-openapi round trip (unknown or misspelled?)"
        )),
    }
}

/// The JSON pointer of the first place where `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|key| {
                let path = format!("{at}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(l), Some(r)) => first_difference(l, r, path),
                    _ => Some(path),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(l, r, format!("{at}/{i}"))),
        _ if a == b => None,
        _ => Some(if at.is_empty() { "/".into() } else { at }),
    }
}

/// Checks one object against its `k8s-openapi` type, or the hand-written schema of a CRD kind.
fn check_object(object: &Value) -> Result<(), String> {
    match kind(object) {
        ("v1", "Pod") => round_trip_as::<Pod>(object).map(drop),
        ("v1", "Service") => round_trip_as::<Service>(object).map(drop),
        ("v1", "ServiceAccount") => round_trip_as::<ServiceAccount>(object).map(drop),
        ("v1", "Secret") => round_trip_as::<Secret>(object).map(drop),
        ("v1", "ConfigMap") => round_trip_as::<ConfigMap>(object).map(drop),
        ("v1", "Namespace") => round_trip_as::<Namespace>(object).map(drop),
        ("apps/v1", "Deployment") => round_trip_as::<Deployment>(object).map(drop),
        ("apps/v1", "DaemonSet") => round_trip_as::<DaemonSet>(object).map(drop),
        ("apps/v1", "StatefulSet") => round_trip_as::<StatefulSet>(object).map(drop),
        ("batch/v1", "Job") => round_trip_as::<Job>(object).map(drop),
        ("batch/v1", "CronJob") => round_trip_as::<CronJob>(object).map(drop),
        ("policy/v1", "PodDisruptionBudget") => {
            round_trip_as::<PodDisruptionBudget>(object).map(drop)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            round_trip_as::<NetworkPolicy>(object).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip_as::<ClusterRole>(object).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip_as::<ClusterRoleBinding>(object).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip_as::<Role>(object).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip_as::<RoleBinding>(object).map(drop)
        }
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
            round_trip_as::<MutatingWebhookConfiguration>(object).map(drop)
        }
        ("cert-manager.io/v1", "Issuer" | "ClusterIssuer") => {
            check_schema(&object["spec"], &issuer_spec_schema(), "/spec")
        }
        ("cert-manager.io/v1", "Certificate") => {
            check_schema(&object["spec"], &certificate_spec_schema(), "/spec")
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            check_schema(&object["spec"], &service_monitor_spec_schema(), "/spec")
        }
        (api_version, kind) => Err(format!(
            "no type or schema for {api_version} {kind}: add it to check_object"
        )),
    }
    .and_then(|()| {
        // CRD objects still carry standard metadata.
        round_trip_as::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
            &object["metadata"],
        )
        .map(drop)
        .map_err(|e| format!("metadata: {e}"))
    })
}

/// Minimal structural schema: an object maps allowed keys to sub-schemas, `"string"`, `"int"`,
/// `"bool"`, `"object"` (any map) are leaves, `["…"]` is a list of that schema.
fn check_schema(value: &Value, schema: &Value, at: &str) -> Result<(), String> {
    match (schema, value) {
        (Value::String(leaf), _) => {
            let ok = match leaf.as_str() {
                "string" => value.is_string(),
                "int" => value.is_i64() || value.is_u64(),
                "bool" => value.is_boolean(),
                "object" => value.is_object(),
                other => return Err(format!("bad schema leaf {other}")),
            };
            ok.then_some(())
                .ok_or_else(|| format!("{at}: expected {leaf}, got {value}"))
        }
        (Value::Array(item), Value::Array(values)) => values
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_schema(v, &item[0], &format!("{at}/{i}"))),
        (Value::Object(fields), Value::Object(map)) => map.iter().try_for_each(|(key, v)| {
            let sub = fields
                .get(key)
                .ok_or_else(|| format!("{at}/{key}: unknown field"))?;
            check_schema(v, sub, &format!("{at}/{key}"))
        }),
        _ => Err(format!("{at}: wrong shape {value}")),
    }
}

/// cert-manager.io/v1 Issuer spec (the fields the chart may set).
fn issuer_spec_schema() -> Value {
    json!({
        "selfSigned": {"crlDistributionPoints": ["string"]},
        "ca": {"secretName": "string", "crlDistributionPoints": ["string"]},
    })
}

/// cert-manager.io/v1 Certificate spec (the fields the chart may set).
fn certificate_spec_schema() -> Value {
    json!({
        "secretName": "string", "commonName": "string", "duration": "string",
        "renewBefore": "string", "isCA": "bool", "dnsNames": ["string"],
        "ipAddresses": ["string"], "usages": ["string"],
        "privateKey": {"algorithm": "string", "size": "int", "rotationPolicy": "string",
                       "encoding": "string"},
        "issuerRef": {"name": "string", "kind": "string", "group": "string"},
        "secretTemplate": {"labels": "object", "annotations": "object"},
    })
}

/// monitoring.coreos.com/v1 ServiceMonitor spec (the fields the chart may set).
fn service_monitor_spec_schema() -> Value {
    json!({
        "selector": {"matchLabels": "object"},
        "namespaceSelector": {"matchNames": ["string"], "any": "bool"},
        "jobLabel": "string",
        "endpoints": [{
            "port": "string", "path": "string", "scheme": "string", "interval": "string",
            "scrapeTimeout": "string",
        }],
    })
}

fn typed<T: DeserializeOwned>(object: &Value) -> T {
    serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{:?} {}: {e}", kind(object), name(object)))
}

fn find<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o).1 == wanted).collect()
}

fn only<T: DeserializeOwned>(objects: &[Value], wanted: &str) -> T {
    let found = find(objects, wanted);
    assert_eq!(found.len(), 1, "expected exactly one {wanted}");
    typed(found[0])
}

#[test]
fn chart_lint_every_values_file_is_clean() {
    let files = values_files();
    assert!(
        files.len() > RENDERED.len(),
        "expected the documented values files in manifests/values, found {files:?}"
    );
    let report = render_py(&["lint"])
        .unwrap_or_else(|report| panic!("helm lint (strict) reported problems:\n{report}"));
    for file in &files {
        let file_name = file.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            report.contains(&format!("lint {file_name}: ok")),
            "lint did not pass {file_name}:\n{report}"
        );
    }
}

#[test]
fn chart_render_every_values_file_produces_namespaced_objects() {
    for file in values_files() {
        let objects = documents(&render(&file));
        assert!(
            find(&objects, "Deployment").len() == 1
                && find(&objects, "MutatingWebhookConfiguration").len() == 1,
            "{}: no webhook Deployment/MutatingWebhookConfiguration",
            file.display()
        );
        for object in &objects {
            let cluster_scoped = matches!(
                kind(object).1,
                "ClusterRole" | "ClusterRoleBinding" | "MutatingWebhookConfiguration"
            );
            let namespace = object["metadata"]["namespace"].as_str();
            assert_eq!(
                namespace,
                (!cluster_scoped).then_some(NAMESPACE),
                "{}: {:?} {} has the wrong namespace",
                file.display(),
                kind(object),
                name(object)
            );
        }
    }
}

#[test]
fn rendered_manifests_match_a_fresh_render() {
    for name in RENDERED {
        let committed_path = manifests_dir()
            .join("rendered")
            .join(format!("{name}.yaml"));
        let committed = fs::read_to_string(&committed_path).unwrap_or_default();
        let fresh = render(&values_file(name));
        assert!(
            committed == fresh,
            "{} is stale (differs from the chart rendered with manifests/values/{name}.yaml): \
             run `cargo xtask manifests` and commit the result",
            committed_path.display()
        );
    }
}

#[test]
fn rendered_objects_round_trip_through_k8s_openapi_types() {
    let mut checked = 0;
    for file in values_files() {
        for object in documents(&render(&file)) {
            check_object(&object).unwrap_or_else(|error| {
                panic!(
                    "{}: {:?} {}: {error}",
                    file.display(),
                    kind(&object),
                    name(&object)
                )
            });
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} objects checked");
}

#[test]
fn round_trip_check_with_misspelled_field_fails() {
    // The check itself must catch what the tests rely on it to catch.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "app", "image": "busybox", "comand": ["sh"]}]}});
    let error = check_object(&pod).expect_err("misspelled field accepted");
    assert!(error.contains("/spec/containers/0/comand"), "{error}");
    let certificate = json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "c"}, "spec": {"secretName": "s", "dnsName": ["x"]}});
    let error = check_object(&certificate).expect_err("misspelled CRD field accepted");
    assert!(error.contains("/spec/dnsName"), "{error}");
}

/// One line per RBAC rule and binding subject, sorted, for every values file.
fn rbac_lines() -> String {
    fn rule_line(out: &mut BTreeSet<String>, scope: &str, rule: &PolicyRule) {
        let join = |items: &Option<Vec<String>>| match items {
            Some(items) if !items.is_empty() => items.join(","),
            _ => "-".into(),
        };
        let groups = match &rule.api_groups {
            Some(groups) if !groups.is_empty() => groups
                .iter()
                .map(|g| if g.is_empty() { "core" } else { g.as_str() })
                .collect::<Vec<_>>()
                .join(","),
            _ => "-".into(),
        };
        out.insert(format!(
            "{scope} groups={groups} resources={} names={} verbs={}",
            join(&rule.resources),
            join(&rule.resource_names),
            rule.verbs.join(",")
        ));
    }
    let mut text = String::new();
    for file in values_files() {
        let stem = file.file_stem().and_then(|s| s.to_str()).expect("stem");
        let mut lines = BTreeSet::new();
        for object in documents(&render(&file)) {
            match kind(&object).1 {
                "ClusterRole" => {
                    let role: ClusterRole = typed(&object);
                    for rule in role.rules.iter().flatten() {
                        let scope = format!("ClusterRole/{}", name(&object));
                        rule_line(&mut lines, &scope, rule);
                    }
                }
                "Role" => {
                    let role: Role = typed(&object);
                    for rule in role.rules.iter().flatten() {
                        let scope = format!("Role/{}/{}", NAMESPACE, name(&object));
                        rule_line(&mut lines, &scope, rule);
                    }
                }
                "ClusterRoleBinding" | "RoleBinding" => {
                    let (role_ref, subjects) = if kind(&object).1 == "RoleBinding" {
                        let b: RoleBinding = typed(&object);
                        (b.role_ref, b.subjects)
                    } else {
                        let b: ClusterRoleBinding = typed(&object);
                        (b.role_ref, b.subjects)
                    };
                    for subject in subjects.iter().flatten() {
                        lines.insert(format!(
                            "{}/{} binds {}/{} to {}/{}/{}",
                            kind(&object).1,
                            name(&object),
                            role_ref.kind,
                            role_ref.name,
                            subject.kind,
                            subject.namespace.as_deref().unwrap_or("-"),
                            subject.name
                        ));
                    }
                }
                _ => {}
            }
        }
        for line in lines {
            text.push_str(&format!("{stem}: {line}\n"));
        }
    }
    text
}

#[test]
fn rbac_rules_match_the_golden_list() {
    let golden_path = manifests_dir().join("rbac.golden.txt");
    let actual = rbac_lines();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&golden_path, &actual).expect("write rbac.golden.txt");
    }
    let golden = fs::read_to_string(&golden_path).unwrap_or_default();
    assert!(
        golden == actual,
        "RBAC differs from {} (review the change, then re-run with UPDATE_GOLDEN=1):\n{actual}",
        golden_path.display()
    );
    // Invariants that hold whatever the golden file says.
    for line in actual.lines() {
        assert!(!line.contains('*'), "wildcard in RBAC: {line}");
        let secrets_read_all = line.contains("resources=configmaps,secrets")
            && (line.contains("list") || line.contains("watch"));
        assert!(!secrets_read_all, "Secrets must be get-only: {line}");
    }
}

fn restricted_container_check(container: &Container) {
    let sc = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(caps.add.as_ref().is_none_or(Vec::is_empty));
    let seccomp = sc.seccomp_profile.as_ref().expect("seccompProfile");
    assert_eq!(seccomp.type_, "RuntimeDefault");
}

#[test]
fn webhook_deployment_is_restricted_and_highly_available() {
    for file in values_files() {
        let objects = documents(&render(&file));
        let deployment: Deployment = only(&objects, "Deployment");
        let spec = deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2), "{}", file.display());
        let pod: PodSpec = spec.template.spec.expect("pod spec");
        assert_eq!(pod.automount_service_account_token, Some(true));
        assert_ne!(pod.host_network, Some(true));
        assert_ne!(pod.host_pid, Some(true));
        let psc = pod.security_context.as_ref().expect("pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("preferred podAntiAffinity");
        assert_eq!(
            anti[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(pod.containers.len(), 1);
        let container = &pod.containers[0];
        restricted_container_check(container);
        assert_eq!(container.args.as_deref(), Some(&["serve".to_string()][..]));
        let env: Vec<(String, String)> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("LISTEN_ADDRESS"), Some(":8443"));
        assert_eq!(get("TELEMETRY_LISTEN_ADDRESS"), Some(":8080"));
        assert!(get("VAULT_ENV_IMAGE").is_some_and(|i| i.contains("vault-env")));
        // TLS: the self-managed contract, or certificate files from the mounted Secret.
        let stem = file.file_stem().and_then(|s| s.to_str()).expect("stem");
        if matches!(stem, "default" | "self-managed-tls" | "guard") {
            assert_eq!(get("TLS_SELF_MANAGED"), Some("true"), "{stem}");
            assert_eq!(get("TLS_SECRET_NAME"), Some("strongroom-webhook-tls"));
            assert_eq!(get("TLS_SECRET_NAMESPACE"), Some(NAMESPACE));
            assert_eq!(
                get("WEBHOOK_CONFIGURATION_NAME"),
                Some("strongroom-webhook")
            );
            let names = get("TLS_DNS_NAMES").expect("TLS_DNS_NAMES");
            assert!(
                names
                    .split(',')
                    .any(|n| n == "strongroom-webhook.strongroom-system.svc")
            );
            assert!(get("TLS_CERT_FILE").is_none());
        } else {
            assert_eq!(
                get("TLS_CERT_FILE"),
                Some("/var/serving-cert/tls.crt"),
                "{stem}"
            );
            assert_eq!(
                get("TLS_PRIVATE_KEY_FILE"),
                Some("/var/serving-cert/tls.key")
            );
            let mounted = container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == "/var/serving-cert" && m.read_only == Some(true));
            assert!(mounted, "{stem}: serving certificate not mounted read-only");
        }
        // Probes on the telemetry port, not the admission port.
        for probe in [&container.readiness_probe, &container.liveness_probe] {
            let http = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("probe");
            assert_eq!(
                http.port,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                    "http-metrics".into()
                )
            );
        }
        let resources = container.resources.as_ref().expect("resources");
        assert!(
            resources
                .requests
                .as_ref()
                .is_some_and(|r| r.contains_key("cpu"))
        );
        let pdb: PodDisruptionBudget = only(&objects, "PodDisruptionBudget");
        assert_eq!(
            pdb.spec.and_then(|s| s.min_available),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
        let policy: NetworkPolicy = find(&objects, "NetworkPolicy")
            .into_iter()
            .find(|p| name(p) == "strongroom-webhook")
            .map(typed)
            .expect("webhook NetworkPolicy");
        let spec = policy.spec.expect("NetworkPolicy spec");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string(), "Egress".to_string()][..])
        );
        // Admission port open to all (the API server's address is unknowable), metrics restricted.
        let ingress = spec.ingress.unwrap_or_default();
        assert_eq!(ingress.len(), 2);
        assert!(ingress[0].from.is_none());
        assert!(
            ingress[1]
                .from
                .as_ref()
                .is_some_and(|from| !from.is_empty())
        );
    }
}

#[test]
fn guard_daemonset_is_not_privileged_and_keeps_minimal_capabilities() {
    let objects = documents(&render(&values_file("guard")));
    let daemonset: DaemonSet = only(&objects, "DaemonSet");
    let pod = daemonset
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    assert_ne!(pod.host_network, Some(true), "guard needs no host network");
    assert_ne!(pod.host_pid, Some(true), "hostPID is off by default");
    assert_ne!(pod.host_ipc, Some(true));
    let container = &pod.containers[0];
    let sc = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(sc.privileged, Some(false), "guard must not be privileged");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(added, BTreeSet::from(["BPF", "PERFMON"]));
    let args = container.args.clone().unwrap_or_default().join(" ");
    assert_eq!(
        args,
        "run --mode enforce --node-name $(NODE_NAME) --kubelet-root /var/lib/kubelet \
         --pin-dir /sys/fs/bpf/strongroom --listen 0.0.0.0:9090 --kube-events"
    );
    // Every host path is read-only except bpffs (pinning), and none propagates mounts back.
    for mount in container.volume_mounts.iter().flatten() {
        assert_ne!(mount.mount_propagation.as_deref(), Some("Bidirectional"));
        if mount.mount_path != "/sys/fs/bpf" {
            assert_eq!(
                mount.read_only,
                Some(true),
                "{} must be read-only",
                mount.mount_path
            );
        }
    }
    let host_paths: BTreeSet<String> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    let expected = [
        "/sys/fs/bpf",
        "/sys/fs/cgroup",
        "/sys/kernel/btf",
        "/sys/kernel/security",
        "/var/lib/kubelet/pods",
    ];
    assert_eq!(host_paths, expected.iter().map(|p| p.to_string()).collect());
    let readiness = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref());
    assert_eq!(readiness.and_then(|h| h.path.as_deref()), Some("/readyz"));
    // Its own NetworkPolicy: metrics in, DNS and the API server out, nothing else.
    let policies: Vec<NetworkPolicy> = find(&objects, "NetworkPolicy")
        .into_iter()
        .map(typed)
        .collect();
    let guard_policy = policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("strongroom-guard"))
        .and_then(|p| p.spec.as_ref())
        .expect("guard NetworkPolicy");
    let egress_ports: BTreeSet<String> = guard_policy
        .egress
        .iter()
        .flatten()
        .flat_map(|rule| rule.ports.iter().flatten())
        .filter_map(|port| port.port.as_ref().map(|p| format!("{p:?}")))
        .collect();
    assert_eq!(egress_ports.len(), 3, "DNS, 443, 6443: {egress_ports:?}");
    // Without Kubernetes Events, no --kube-events flag and no right to create events.
    let dir = tempfile::tempdir().expect("tempdir");
    let quiet = dir.path().join("quiet.yaml");
    fs::write(&quiet, "guard:\n  enabled: true\n  kubeEvents: false\n").expect("write values");
    let quiet_objects = documents(&render(&quiet));
    let quiet_guard: DaemonSet = only(&quiet_objects, "DaemonSet");
    let quiet_args = quiet_guard
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert!(!quiet_args.iter().any(|a| a == "--kube-events"));
    let grants_events = find(&quiet_objects, "ClusterRole").into_iter().any(|role| {
        let role: ClusterRole = typed(role);
        role.rules
            .iter()
            .flatten()
            .any(|r| r.resources.iter().flatten().any(|res| res == "events"))
    });
    assert!(
        !grants_events,
        "events granted although guard.kubeEvents is false"
    );
    // The guard is only rendered when asked for.
    let default = documents(&render(&values_file("default")));
    assert!(find(&default, "DaemonSet").is_empty());
}

#[test]
fn mutating_webhook_configuration_matches_the_admission_contract() {
    for file in values_files() {
        let objects = documents(&render(&file));
        let config: MutatingWebhookConfiguration = only(&objects, "MutatingWebhookConfiguration");
        let webhooks = config.webhooks.expect("webhooks");
        assert_eq!(webhooks.len(), 1, "only pods are mutated");
        let hook = &webhooks[0];
        assert_eq!(hook.admission_review_versions, ["v1", "v1beta1"]);
        assert_eq!(hook.side_effects, "None");
        assert!(matches!(
            hook.failure_policy.as_deref(),
            Some("Ignore" | "Fail")
        ));
        // Above the 3 s registry budget the chart passes as REGISTRY_TIMEOUT.
        assert!(
            hook.timeout_seconds.is_some_and(|t| t > 3),
            "{}",
            file.display()
        );
        let service = hook.client_config.service.as_ref().expect("service");
        assert_eq!(service.path.as_deref(), Some("/pods"));
        assert_eq!(service.namespace, NAMESPACE);
        let rules = hook.rules.as_ref().expect("rules");
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["pods".to_string()][..])
        );
        assert_eq!(
            rules[0].operations.as_deref(),
            Some(&["CREATE".to_string()][..])
        );
        let excluded: BTreeSet<String> = hook
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
            .flat_map(|e| e.values.unwrap_or_default())
            .collect();
        assert!(excluded.contains("kube-system") && excluded.contains(NAMESPACE));
        let skip = hook
            .object_selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .unwrap_or_default();
        assert!(
            skip.iter()
                .any(|e| e.key == "security.banzaicloud.io/mutate"
                    && e.operator == "NotIn"
                    && e.values.as_deref() == Some(&["skip".to_string()][..]))
        );
        let conditions = hook.match_conditions.as_ref().expect("matchConditions");
        assert!(conditions[0].expression.contains("startsWith('vault:')"));
        // Each TLS mode provides the caBundle its own way.
        let stem = file.file_stem().and_then(|s| s.to_str()).expect("stem");
        let inject = config
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("cert-manager.io/inject-ca-from"));
        match stem {
            "cert-manager" => {
                assert_eq!(
                    inject.map(String::as_str),
                    Some("strongroom-system/strongroom-webhook-tls")
                );
                assert!(hook.client_config.ca_bundle.is_none());
            }
            "helm-generated-tls" => {
                let secret: Secret = only(&objects, "Secret");
                let ca = secret
                    .data
                    .expect("data")
                    .get("ca.crt")
                    .cloned()
                    .expect("ca.crt");
                assert_eq!(hook.client_config.ca_bundle.as_ref(), Some(&ca));
            }
            _ => {
                assert!(inject.is_none() && hook.client_config.ca_bundle.is_none());
                assert!(
                    find(&objects, "Secret").is_empty(),
                    "no key material rendered"
                );
            }
        }
    }
}

#[test]
fn chart_render_with_invalid_values_fails_with_a_clear_message() {
    let cases = [
        (
            "podsFailurePolicy: Maybe\n",
            "at '/podsFailurePolicy': value must be one of 'Ignore', 'Fail'",
        ),
        ("timeoutSeconds: 2\n", "must be below timeoutSeconds"),
        (
            "env:\n  TLS_CERT_FILE: /x\n",
            "env.TLS_CERT_FILE is set by the chart",
        ),
        (
            "certificate:\n  selfManaged: false\n",
            "enable one of useCertManager, generate or selfManaged",
        ),
        (
            "secretsMutation: true\n",
            "additional properties 'secretsMutation' not allowed",
        ),
        (
            "guard:\n  capabilities: [BPF, SYS_ADMIN]\n",
            "at '/guard/capabilities/1': value must be one of 'BPF', 'PERFMON', 'SYS_RESOURCE'",
        ),
        (
            "guard:\n  enabled: true\n  mode: permissive\n",
            "at '/guard/mode': value must be one of 'enforce', 'audit'",
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (values, message)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.yaml"));
        fs::write(&path, values).expect("write values");
        let error = render_py(&["render", path.to_str().expect("utf-8")])
            .expect_err(&format!("values {values:?} rendered"));
        assert!(error.contains(message), "values {values:?}: {error}");
    }
}

/// Every YAML document of every file in `manifests/examples/`.
fn examples() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = fs::read_dir(manifests_dir().join("examples"))
        .expect("read manifests/examples")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|path| {
            let text = fs::read_to_string(&path).expect("read example");
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string();
            documents(&text)
                .into_iter()
                .map(move |doc| (file.clone(), doc))
        })
        .collect()
}

#[test]
fn examples_round_trip_through_k8s_openapi_types() {
    let examples = examples();
    assert!(
        examples.len() >= 12,
        "only {} example objects",
        examples.len()
    );
    for (file, object) in &examples {
        check_object(object).unwrap_or_else(|e| panic!("{file}: {:?} {e}", kind(object)));
    }
}

#[test]
fn demo_pod_example_matches_the_demo_contract() {
    let text = fs::read_to_string(manifests_dir().join("examples").join("demo-pod.yaml"))
        .expect("demo-pod.yaml");
    let objects = documents(&text);
    assert_eq!(objects.len(), 1);
    let pod: Pod = typed(&objects[0]);
    assert_eq!(pod.metadata.namespace.as_deref(), Some("demo"));
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let annotation = |key: &str| {
        annotations
            .get(&format!("vault.security.banzaicloud.io/{key}"))
            .map(String::as_str)
    };
    assert!(annotation("vault-addr").is_some());
    assert_eq!(annotation("vault-role"), Some("demo"));
    assert_eq!(annotation("vault-path"), Some("kubernetes"));
    assert_eq!(annotation("vault-env-daemon"), Some("true"));
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert_eq!(spec.containers.len(), 1);
    let app = &spec.containers[0];
    assert_eq!(app.name, "app");
    assert_eq!(app.image.as_deref(), Some("busybox"));
    assert_eq!(app.command.as_ref().map(|c| c[0].as_str()), Some("sh"));
    let env: Vec<(&str, &str)> = app
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(
        env,
        [
            ("DB_PASSWORD", "vault:secret/data/demo/db#password"),
            ("DB_USERNAME", "vault:database/creds/demo#username"),
            ("DB_PASSWORD_DYN", "vault:database/creds/demo#password"),
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", "5432"),
            ("PGDATABASE", "app"),
        ]
    );
}

/// Whether the rendered pod webhook's matchConditions pass each pod, evaluated by a conforming
/// CEL implementation (`render.py match`, cel-python) exactly as written in the manifest.
fn pre_filter(values: &Path, pods: &[Value]) -> Vec<bool> {
    use std::io::Write;
    use std::process::Stdio;

    let script = manifests_dir().join("render.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("match")
        .arg(values)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run python3 ({error}): run `cargo xtask test` (installs python tools)")
        });
    let input = serde_json::to_vec(pods).expect("pods as JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write pods");
    let output = child.wait_with_output().expect("render.py match");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "render.py match failed: {stderr}\nit needs helm-python-sdk and cel-python: run \
         `cargo xtask test` (installs both) or `cargo xtask deps`"
    );
    let verdicts: Vec<bool> = serde_json::from_slice(&output.stdout).expect("JSON verdicts");
    assert_eq!(verdicts.len(), pods.len());
    verdicts
}

/// The pod (metadata + spec) of a Pod or of a workload's pod template.
fn pod_of(object: &Value) -> Option<Value> {
    match kind(object).1 {
        "Pod" => Some(object.clone()),
        "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => {
            let template = &object["spec"]["template"];
            Some(json!({"metadata": template["metadata"], "spec": template["spec"]}))
        }
        "CronJob" => {
            let template = &object["spec"]["jobTemplate"]["spec"]["template"];
            Some(json!({"metadata": template["metadata"], "spec": template["spec"]}))
        }
        _ => None,
    }
}

#[test]
fn pre_filter_passes_every_example_workload() {
    let pods: Vec<(String, Value)> = examples()
        .into_iter()
        .filter_map(|(file, object)| pod_of(&object).map(|pod| (file, pod)))
        .collect();
    assert!(pods.len() >= 12, "only {} example pods", pods.len());
    let values: Vec<Value> = pods.iter().map(|(_, pod)| pod.clone()).collect();
    for ((file, _), passed) in pods
        .iter()
        .zip(pre_filter(&values_file("default"), &values))
    {
        assert!(
            passed,
            "{file}: the CEL pre-filter keeps this pod away from the webhook"
        );
    }
}

#[test]
fn pre_filter_on_real_apiserver_pods_passes_only_pods_with_references() {
    let dir = manifests_dir().join("../../shared/fixtures/admission");
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the shared fixtures sit beside the repo)",
                dir.display()
            )
        })
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    entries.sort();
    let mut names = Vec::new();
    let mut pods = Vec::new();
    for path in entries {
        let review: Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("read fixture")).expect("JSON");
        let request = &review["request"];
        if request["kind"]["kind"] == "Pod" {
            names.push(
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .expect("stem")
                    .to_string(),
            );
            pods.push(request["object"].clone());
        }
    }
    assert!(pods.len() >= 15, "only {} pod fixtures", pods.len());
    for (name, passed) in names.iter().zip(pre_filter(&values_file("default"), &pods)) {
        // pod-no-vault is the only captured pod with nothing to inject.
        assert_eq!(passed, name != "pod-no-vault", "{name}");
    }
}

#[test]
fn pre_filter_matches_each_trigger_and_nothing_else() {
    let with_env = |env: Value| {
        json!({"metadata": {}, "spec": {"containers": [
        {"name": "app", "image": "busybox", "env": env}]}})
    };
    let with_annotation = |key: &str| {
        json!({"metadata": {"annotations": {key: "secret/data/a"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}})
    };
    let cases: Vec<(&str, Value, bool)> = vec![
        (
            "vault:",
            with_env(json!([{"name": "A", "value": "vault:secret/data/a#b"}])),
            true,
        ),
        (
            "transit",
            with_env(json!([{"name": "A", "value": "vault:v1:abcd=="}])),
            true,
        ),
        (
            ">>vault:",
            with_env(json!([{"name": "A", "value": ">>vault:pki/issue/x#certificate"}])),
            true,
        ),
        (
            "${vault:",
            with_env(json!([{"name": "A", "value": "u=${vault:db#user}"}])),
            true,
        ),
        (
            "${>>vault:",
            with_env(json!([{"name": "A", "value": "c=${>>vault:pki/issue/x#certificate}"}])),
            true,
        ),
        (
            "second env entry",
            with_env(json!([{"name": "A", "value": "x"}, {"name": "B", "value": "vault:a#b"}])),
            true,
        ),
        (
            "secretKeyRef",
            with_env(
                json!([{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
            ),
            true,
        ),
        (
            "configMapKeyRef",
            with_env(
                json!([{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]),
            ),
            true,
        ),
        (
            "old prefix from-path",
            with_annotation("vault.security.banzaicloud.io/vault-env-from-path"),
            true,
        ),
        (
            "new prefix from-path",
            with_annotation("secrets-webhook.security.bank-vaults.io/vault-env-from-path"),
            true,
        ),
        (
            "init container only",
            json!({"metadata": {}, "spec": {
            "initContainers": [{"name": "i", "image": "busybox", "env": [{"name": "A", "value": "vault:a#b"}]}],
            "containers": [{"name": "app", "image": "busybox"}]}}),
            true,
        ),
        (
            "envFrom",
            json!({"metadata": {}, "spec": {"containers": [
            {"name": "app", "image": "busybox", "envFrom": [{"configMapRef": {"name": "c"}}]}]}}),
            true,
        ),
        (
            "no env",
            json!({"metadata": {}, "spec": {"containers": [{"name": "app", "image": "busybox"}]}}),
            false,
        ),
        (
            "plain values",
            with_env(
                json!([{"name": "A", "value": "my-vault:x"}, {"name": "B", "value": "${HOME}"},
            {"name": "C", "value": " vault:a#b"}, {"name": "D", "value": "VAULT:a#b"}]),
            ),
            false,
        ),
        ("empty value", with_env(json!([{"name": "A"}])), false),
        (
            "fieldRef",
            with_env(
                json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
            ),
            false,
        ),
        (
            "other annotation",
            with_annotation("vault.security.banzaicloud.io/vault-role"),
            false,
        ),
    ];
    let pods: Vec<Value> = cases.iter().map(|(_, pod, _)| pod.clone()).collect();
    for ((name, _, expected), passed) in
        cases.iter().zip(pre_filter(&values_file("default"), &pods))
    {
        assert_eq!(passed, *expected, "case {name}");
    }
    // With valueFromRefs off, Secret/ConfigMap references no longer pass; Vault references still do.
    let dir = tempfile::tempdir().expect("tempdir");
    let strict = dir.path().join("strict.yaml");
    fs::write(&strict, "preFilter:\n  valueFromRefs: false\n").expect("write values");
    let verdicts = pre_filter(&strict, &pods);
    for ((name, _, expected), passed) in cases.iter().zip(verdicts) {
        let by_reference = matches!(*name, "secretKeyRef" | "configMapKeyRef" | "envFrom");
        assert_eq!(
            passed,
            *expected && !by_reference,
            "valueFromRefs=false, case {name}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

#[test]
fn chart_lint_with_a_broken_template_fails() {
    // The lint test above is only worth something if lint can fail: a copy of the chart with one
    // unparsable template must be reported, with the template named.
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("chart");
    copy_dir(&manifests_dir().join("chart"), &chart);
    fs::write(
        chart.join("templates").join("broken.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: [\n",
    )
    .expect("write broken template");
    let values = values_file("default");
    let report = render_py(&[
        "lint",
        "--chart",
        chart.to_str().expect("utf-8"),
        values.to_str().expect("utf-8"),
    ])
    .expect_err("lint passed a chart with an unparsable template");
    assert!(report.contains("templates/broken.yaml"), "{report}");
}

#[test]
fn rendered_objects_reference_each_other_consistently_for_any_release() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    for (release, namespace) in [("strongroom", NAMESPACE), ("acme", "secrets")] {
        for file in values_files() {
            let at = format!("{} as {release} in {namespace}", file.display());
            let objects = documents(&render_as(&file, release, namespace));
            let deployment: Deployment = only(&objects, "Deployment");
            let name_of = |o: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                o.name.clone().unwrap_or_default()
            };
            let webhook = name_of(&deployment.metadata);
            let spec = deployment.spec.clone().expect("spec");
            let selector = spec.selector.match_labels.clone().expect("matchLabels");
            let pod_labels = spec
                .template
                .metadata
                .clone()
                .and_then(|m| m.labels)
                .expect("labels");
            assert!(
                selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
                "{at}"
            );
            let pod = spec.template.spec.clone().expect("pod spec");
            let container = &pod.containers[0];
            let env = |key: &str| {
                container
                    .env
                    .iter()
                    .flatten()
                    .find(|e| e.name == key)
                    .and_then(|e| e.value.clone())
            };

            // Service -> pods and port; webhook configuration -> Service.
            let service: Service = only(&objects, "Service");
            assert_eq!(name_of(&service.metadata), webhook, "{at}");
            let service_spec = service.spec.expect("service spec");
            assert_eq!(service_spec.selector.as_ref(), Some(&selector), "{at}");
            let https = service_spec
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("https"))
                .expect("https port");
            let container_ports: Vec<String> = container
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.name.clone())
                .collect();
            assert_eq!(https.target_port, Some(IntOrString::String("https".into())));
            assert!(container_ports.contains(&"https".to_string()), "{at}");
            let config: MutatingWebhookConfiguration =
                only(&objects, "MutatingWebhookConfiguration");
            let hook = &config.webhooks.as_ref().expect("webhooks")[0];
            let target = hook.client_config.service.as_ref().expect("service ref");
            assert_eq!(
                (target.name.as_str(), target.namespace.as_str()),
                (webhook.as_str(), namespace)
            );
            assert_eq!(target.port, Some(https.port), "{at}");
            let excluded = hook
                .namespace_selector
                .as_ref()
                .and_then(|s| s.match_expressions.clone())
                .unwrap_or_default();
            assert!(
                excluded
                    .iter()
                    .any(|e| e.values.iter().flatten().any(|v| v == namespace)),
                "{at}: own namespace not excluded"
            );

            // PDB and NetworkPolicy select the webhook pods.
            let pdb: PodDisruptionBudget = only(&objects, "PodDisruptionBudget");
            let pdb_selector = pdb
                .spec
                .and_then(|s| s.selector)
                .and_then(|s| s.match_labels);
            assert_eq!(pdb_selector.as_ref(), Some(&selector), "{at}");
            let policy_selects_webhook = find(&objects, "NetworkPolicy").into_iter().any(|p| {
                let policy: NetworkPolicy = typed(p);
                policy
                    .spec
                    .and_then(|s| s.pod_selector.and_then(|p| p.match_labels))
                    .as_ref()
                    == Some(&selector)
            });
            assert!(policy_selects_webhook, "{at}");

            // ServiceAccount -> bindings -> roles.
            let account = pod
                .service_account_name
                .clone()
                .expect("serviceAccountName");
            let accounts: Vec<String> = find(&objects, "ServiceAccount")
                .into_iter()
                .map(|o| name(o).to_string())
                .collect();
            assert!(accounts.contains(&account), "{at}");
            let cluster_roles: Vec<ClusterRole> = find(&objects, "ClusterRole")
                .into_iter()
                .map(typed)
                .collect();
            for binding in find(&objects, "ClusterRoleBinding") {
                let binding: ClusterRoleBinding = typed(binding);
                assert!(
                    cluster_roles
                        .iter()
                        .any(|r| name_of(&r.metadata) == binding.role_ref.name),
                    "{at}: binding to a missing ClusterRole"
                );
                for subject in binding.subjects.iter().flatten() {
                    assert!(accounts.contains(&subject.name), "{at}");
                    assert_eq!(subject.namespace.as_deref(), Some(namespace), "{at}");
                }
            }

            // TLS: names the webhook, RBAC and cert-manager use must agree.
            let stem = file.file_stem().and_then(|s| s.to_str()).expect("stem");
            let config_name = name_of(&config.metadata);
            let svc_dns = format!("{webhook}.{namespace}.svc");
            match stem {
                "cert-manager" => {
                    let certificates: Vec<&Value> = find(&objects, "Certificate");
                    let serving = certificates
                        .iter()
                        .find(|c| c["spec"]["dnsNames"].is_array())
                        .expect("serving Certificate");
                    let inject = config
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("cert-manager.io/inject-ca-from").cloned());
                    assert_eq!(
                        inject,
                        Some(format!("{namespace}/{}", name(serving))),
                        "{at}"
                    );
                    let dns: Vec<&str> = serving["spec"]["dnsNames"]
                        .as_array()
                        .expect("dnsNames")
                        .iter()
                        .filter_map(Value::as_str)
                        .collect();
                    assert!(dns.contains(&svc_dns.as_str()), "{at}");
                    let issuer = serving["spec"]["issuerRef"]["name"]
                        .as_str()
                        .expect("issuer");
                    assert!(
                        find(&objects, "Issuer").iter().any(|i| name(i) == issuer),
                        "{at}"
                    );
                    let secret = serving["spec"]["secretName"].as_str().expect("secretName");
                    let volume_secret = pod
                        .volumes
                        .iter()
                        .flatten()
                        .find_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()));
                    assert_eq!(volume_secret.as_deref(), Some(secret), "{at}");
                }
                "helm-generated-tls" => {
                    let secret: Secret = only(&objects, "Secret");
                    let volume_secret = pod
                        .volumes
                        .iter()
                        .flatten()
                        .find_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()));
                    assert_eq!(volume_secret, secret.metadata.name, "{at}");
                }
                _ => {
                    assert_eq!(env("WEBHOOK_CONFIGURATION_NAME"), Some(config_name.clone()));
                    assert_eq!(env("TLS_SECRET_NAMESPACE").as_deref(), Some(namespace));
                    let dns = env("TLS_DNS_NAMES").expect("TLS_DNS_NAMES");
                    assert!(dns.split(',').any(|n| n == svc_dns), "{at}");
                    let secret_name = env("TLS_SECRET_NAME").expect("TLS_SECRET_NAME");
                    let mwc_rule = cluster_roles
                        .iter()
                        .flat_map(|r| r.rules.iter().flatten())
                        .find(|rule| {
                            rule.resources
                                .iter()
                                .flatten()
                                .any(|r| r == "mutatingwebhookconfigurations")
                        })
                        .expect("caBundle rule");
                    assert_eq!(mwc_rule.resource_names.as_deref(), Some(&[config_name][..]));
                    let role: Role = only(&objects, "Role");
                    assert_eq!(role.metadata.namespace.as_deref(), Some(namespace));
                    let named = role
                        .rules
                        .iter()
                        .flatten()
                        .find(|rule| rule.resource_names.is_some())
                        .expect("named Secret rule");
                    assert_eq!(
                        named.resource_names.as_deref(),
                        Some(&[secret_name][..]),
                        "{at}"
                    );
                }
            }
        }
    }
}
