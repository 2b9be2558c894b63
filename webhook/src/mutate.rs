//! The admission decision and the pod mutation: a function of the review, the operator's
//! [`MutationConfig`], the [`ImageResolver`] (only for containers without `command`) and the
//! [`ObjectSource`] (only for `valueFrom`/`envFrom` references). It has no side effects; the
//! HTTP server and the offline `inject` command both call [`Mutator::review`].
//!
//! # Security
//!
//! Every annotation and env value is attacker-controlled. References are parsed with
//! vault-env's grammar and a malformed one denies the pod; object overrides go through
//! [`crate::policy`]; the injected init container is Pod Security "restricted" and
//! annotations can only narrow it. Env values never reach a log line: the decision reports
//! its reason as a fixed code, the message only goes back to the client.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Probe, VolumeMount};
use serde_json::Value;
use vault_env::copy_self::GUARD_MODE_ENV;

use crate::admission::{AdmissionRequest, AdmissionResponse, JsonItems, JsonPatch};
use crate::annotations::{self, Annotations};
use crate::image::{ImageLookup, ImageResolver, Platform};
use crate::objects::{LookupError, ObjectKind, ObjectSource};
use crate::policy::{self, AddressPolicy};

/// Name of the injected emptyDir volume.
pub const VOLUME_NAME: &str = "vault-env";
/// Where the volume is mounted.
pub const MOUNT_PATH: &str = "/vault/";
/// Name of the injected init container.
pub const INIT_CONTAINER_NAME: &str = "copy-vault-env";
/// The command injected containers run.
pub const VAULT_ENV_COMMAND: &str = "/vault/vault-env";
/// Name of the volume holding the Vault CA from `vault-tls-secret`.
pub const TLS_VOLUME_NAME: &str = "vault-tls";
/// Where the CA volume is mounted.
pub const TLS_MOUNT_PATH: &str = "/vault/tls";
/// The webhook's version, written into [`annotations::INJECTED`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The operator's settings the mutation uses (validated; see [`crate::config`]).
#[derive(Clone, Debug)]
pub struct MutationConfig {
    pub vault_addr: String,
    pub vault_role: String,
    pub vault_path: String,
    pub vault_auth_method: String,
    pub vault_namespace: String,
    pub vault_tls_secret: String,
    pub vault_client_timeout: String,
    pub vault_skip_verify: bool,
    /// Honour `vault-skip-verify` from objects.
    pub allow_object_skip_verify: bool,
    pub vault_ignore_missing_secrets: bool,
    pub vault_env_passthrough: String,
    pub vault_json_log: bool,
    pub vault_log_level: String,
    pub address_policy: AddressPolicy,
    pub vault_env_image: String,
    pub vault_env_image_pull_policy: String,
    /// Images an object's `vault-env-image` may name.
    pub vault_env_image_allowlist: Vec<String>,
    /// Path of the vault-env binary inside its image.
    pub vault_env_binary_path: String,
    pub volume_size_limit: String,
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
    pub run_as_user: i64,
    pub run_as_group: i64,
    /// The value of [`annotations::INJECTED`].
    pub version: String,
    /// What a failed image lookup does to the pod (`REGISTRY_FAILURE_POLICY`, when the
    /// registry lookup is on); `None`: only that container is left uninjected, with a warning.
    pub image_failure_policy: Option<crate::registry::FailurePolicy>,
}

impl Default for MutationConfig {
    fn default() -> Self {
        Self {
            vault_addr: "https://vault:8200".to_owned(),
            vault_role: String::new(),
            vault_path: "kubernetes".to_owned(),
            vault_auth_method: "kubernetes".to_owned(),
            vault_namespace: String::new(),
            vault_tls_secret: String::new(),
            vault_client_timeout: "10s".to_owned(),
            vault_skip_verify: false,
            allow_object_skip_verify: false,
            vault_ignore_missing_secrets: false,
            vault_env_passthrough: String::new(),
            vault_json_log: false,
            vault_log_level: String::new(),
            address_policy: AddressPolicy::new(Some("https://vault:8200"), &[]),
            vault_env_image: "ghcr.io/strongroom/vault-env:latest".to_owned(),
            vault_env_image_pull_policy: "IfNotPresent".to_owned(),
            vault_env_image_allowlist: Vec::new(),
            vault_env_binary_path: "/usr/local/bin/vault-env".to_owned(),
            volume_size_limit: "64Mi".to_owned(),
            cpu_request: "50m".to_owned(),
            memory_request: "64Mi".to_owned(),
            cpu_limit: "250m".to_owned(),
            memory_limit: "64Mi".to_owned(),
            run_as_user: 65534,
            run_as_group: 65534,
            version: VERSION.to_owned(),
            image_failure_policy: None,
        }
    }
}

/// What the webhook decided; a fixed vocabulary for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed with a patch.
    Patched,
    /// Allowed, nothing to inject.
    NothingToInject,
    /// Allowed, skipped by label or annotation.
    Skipped,
    /// Allowed, the pod was already mutated.
    AlreadyMutated,
    /// Allowed, not a Pod CREATE (Secrets, ConfigMaps, other kinds and operations).
    NotOurs,
    /// Refused by policy or a malformed reference.
    Denied,
    /// Refused: the review or object is malformed.
    Invalid,
}

impl Decision {
    /// The label value used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::NothingToInject => "nothing_to_inject",
            Self::Skipped => "skipped",
            Self::AlreadyMutated => "already_mutated",
            Self::NotOurs => "not_ours",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
        }
    }
}

/// The response plus what was decided and how many containers were injected.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub response: AdmissionResponse,
    pub decision: Decision,
    pub injected_containers: usize,
}

/// The webhook's decision maker.
#[derive(Clone)]
pub struct Mutator {
    config: Arc<MutationConfig>,
    images: Arc<dyn ImageResolver>,
    objects: Arc<dyn ObjectSource>,
}

impl std::fmt::Debug for Mutator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Which list of the pod spec a container lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListKind {
    Init,
    App,
}

impl ListKind {
    fn field(self) -> &'static str {
        match self {
            Self::Init => "initContainers",
            Self::App => "containers",
        }
    }
}

/// A refusal raised while planning; becomes a 403 or 400 response.
enum Refusal {
    Deny(String),
    Invalid(String),
    /// Allowed without a patch, with this warning (the registry failure policy).
    AdmitUnmutated(String),
}

impl Mutator {
    /// Builds a mutator from the operator config and the two lookups.
    pub fn new(
        config: MutationConfig,
        images: Arc<dyn ImageResolver>,
        objects: Arc<dyn ObjectSource>,
    ) -> Self {
        Self {
            config: Arc::new(config),
            images,
            objects,
        }
    }

    /// The operator config in use.
    pub fn config(&self) -> &MutationConfig {
        &self.config
    }

    /// Answers one admission request.
    pub async fn review(&self, request: &AdmissionRequest<'_>) -> Outcome {
        self.review_named(request).await.0
    }

    /// Answers one admission request; when the object was parsed as a Pod, also returns its
    /// `metadata.generateName` (empty when unset) for the log line, so that the handler
    /// need not parse the object a second time.
    pub async fn review_named(&self, request: &AdmissionRequest<'_>) -> (Outcome, Option<String>) {
        let uid = request.uid.as_str();
        let kind = &request.kind;
        if kind.group.is_empty() && matches!(kind.kind.as_str(), "Secret" | "ConfigMap") {
            return (not_ours_secret_or_configmap(uid, request), None);
        }
        if !(kind.group.is_empty() && kind.kind == "Pod") || request.operation != "CREATE" {
            return (
                outcome(AdmissionResponse::allow(uid), Decision::NotOurs, 0),
                None,
            );
        }
        let Some(object) = request.object.as_ref() else {
            return (
                outcome(
                    AdmissionResponse::invalid(uid, "the review has no request.object"),
                    Decision::Invalid,
                    0,
                ),
                None,
            );
        };
        // Parsed once, straight from the body's text into the Pod.
        let pod: Pod = match serde_json::from_str(object.get()) {
            Ok(pod) => pod,
            Err(error) => {
                return (
                    outcome(
                        AdmissionResponse::invalid(
                            uid,
                            format!("request.object is not a Pod: {}", message_only(&error)),
                        ),
                        Decision::Invalid,
                        0,
                    ),
                    None,
                );
            }
        };
        let namespace = request
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        let decided = self.review_pod(uid, &pod, &namespace).await;
        (
            decided,
            Some(pod.metadata.generate_name.unwrap_or_default()),
        )
    }

    /// Decides for one pod and returns the response (used by `inject` for templates too).
    pub async fn review_pod(&self, uid: &str, pod: &Pod, namespace: &str) -> Outcome {
        let annotations = Annotations::parse(pod.metadata.annotations.as_ref());
        if let Some(decision) = skip_reason(pod, &annotations) {
            return outcome(AdmissionResponse::allow(uid), decision, 0);
        }
        let mut warnings = annotations.warnings().to_vec();
        match self.plan(pod, namespace, &annotations, &mut warnings).await {
            Ok((patch, injected)) if injected > 0 => outcome(
                AdmissionResponse::allow(uid)
                    .with_patch(patch)
                    .with_warnings(warnings),
                Decision::Patched,
                injected,
            ),
            Ok(_) => outcome(
                AdmissionResponse::allow(uid).with_warnings(warnings),
                Decision::NothingToInject,
                0,
            ),
            Err(Refusal::Deny(message)) => outcome(
                AdmissionResponse::deny(uid, message).with_warnings(warnings),
                Decision::Denied,
                0,
            ),
            Err(Refusal::Invalid(message)) => outcome(
                AdmissionResponse::invalid(uid, message).with_warnings(warnings),
                Decision::Invalid,
                0,
            ),
            Err(Refusal::AdmitUnmutated(message)) => {
                warnings.push(message);
                outcome(
                    AdmissionResponse::allow(uid).with_warnings(warnings),
                    Decision::NothingToInject,
                    0,
                )
            }
        }
    }

    /// Computes the patch; returns the operations and the number of injected containers.
    async fn plan(
        &self,
        pod: &Pod,
        namespace: &str,
        annotations: &Annotations,
        warnings: &mut Vec<String>,
    ) -> Result<(JsonPatch, usize), Refusal> {
        let Some(spec) = pod.spec.as_ref() else {
            return Err(Refusal::Invalid("the Pod has no spec".to_owned()));
        };
        let from_path = annotations
            .get("vault-env-from-path")
            .filter(|v| !v.is_empty());
        if let Some(value) = from_path {
            vault_env::reference::parse_from_path(value).map_err(|error| {
                Refusal::Deny(format!(
                    "annotation {}vault-env-from-path: {error}",
                    annotations::LEGACY_PREFIX
                ))
            })?;
        }

        // Per container: the env list after resolving valueFrom/envFrom, and whether it
        // has references.
        let mut cache = BTreeMap::new();
        let mut planned = Vec::new();
        let lists = [
            (
                ListKind::Init,
                spec.init_containers.as_deref().unwrap_or_default(),
            ),
            (ListKind::App, spec.containers.as_slice()),
        ];
        for (list, containers) in lists {
            for (index, container) in containers.iter().enumerate() {
                let (env, has_refs) = self
                    .container_env(container, namespace, &mut cache, warnings)
                    .await?;
                if has_refs || from_path.is_some() {
                    planned.push((list, index, container, env));
                }
            }
        }
        if planned.is_empty() {
            return Ok((JsonPatch::new(), 0));
        }

        let settings = self.pod_settings(pod, annotations, warnings)?;
        let shared = SharedItems::new(&settings).map_err(patch_failed)?;
        let mut ops = JsonPatch::new();
        let mut injected = 0;
        for (list, index, container, env) in planned {
            let Some(args) = self
                .container_args(pod, namespace, container, warnings)
                .await?
            else {
                continue;
            };
            injected += 1;
            self.container_ops(
                list, index, container, &env, args, &settings, &shared, &mut ops,
            )
            .map_err(patch_failed)?;
        }
        if injected == 0 {
            return Ok((JsonPatch::new(), 0));
        }
        self.pod_ops(pod, &settings, &mut ops)
            .map_err(patch_failed)?;
        Ok((ops, injected))
    }

    /// The container's env after resolving references held in Secrets/ConfigMaps, and
    /// whether any value is a Vault reference.
    async fn container_env<'c>(
        &self,
        container: &'c Container,
        namespace: &str,
        cache: &mut BTreeMap<(ObjectKind, String), Option<BTreeMap<String, String>>>,
        warnings: &mut Vec<String>,
    ) -> Result<(Cow<'c, [EnvVar]>, bool), Refusal> {
        let declared = container.env.as_deref().unwrap_or_default();
        // The common case: plain values only, nothing to read from Secrets/ConfigMaps, so
        // the container's own list is used as is.
        if container.env_from.is_none() && declared.iter().all(|var| var.value_from.is_none()) {
            let mut has_refs = false;
            for var in declared {
                if let Some(value) = var.value.as_deref()
                    && vault_env::reference::contains_reference(value)
                {
                    check_reference(&container.name, &var.name, value)?;
                    has_refs = true;
                }
            }
            return Ok((Cow::Borrowed(declared), has_refs));
        }
        let mut env = declared.to_vec();
        let mut has_refs = false;
        for var in &mut env {
            if let Some(value) = var.value.as_deref() {
                if vault_env::reference::contains_reference(value) {
                    check_reference(&container.name, &var.name, value)?;
                    has_refs = true;
                }
                continue;
            }
            let Some(source) = var.value_from.as_ref() else {
                continue;
            };
            let (kind, name, key, optional) = if let Some(r) = &source.secret_key_ref {
                (
                    ObjectKind::Secret,
                    r.name.clone(),
                    r.key.clone(),
                    r.optional,
                )
            } else if let Some(r) = &source.config_map_key_ref {
                (
                    ObjectKind::ConfigMap,
                    r.name.clone(),
                    r.key.clone(),
                    r.optional,
                )
            } else {
                continue;
            };
            let refs = self
                .lookup(kind, namespace, &name, optional, cache, warnings)
                .await?;
            if let Some(reference) = refs.and_then(|r| r.get(&key).cloned()) {
                check_reference(&container.name, &var.name, &reference)?;
                var.value = Some(reference);
                var.value_from = None;
                has_refs = true;
            }
        }
        let explicit: BTreeSet<String> = env.iter().map(|v| v.name.clone()).collect();
        for source in container.env_from.as_deref().unwrap_or_default() {
            let prefix = source.prefix.clone().unwrap_or_default();
            let (kind, name, optional) = if let Some(r) = &source.secret_ref {
                (ObjectKind::Secret, r.name.clone(), r.optional)
            } else if let Some(r) = &source.config_map_ref {
                (ObjectKind::ConfigMap, r.name.clone(), r.optional)
            } else {
                continue;
            };
            let refs = self
                .lookup(kind, namespace, &name, optional, cache, warnings)
                .await?;
            for (key, reference) in refs.unwrap_or_default() {
                let var_name = format!("{prefix}{key}");
                // An explicit env entry wins over envFrom in Kubernetes; keep that.
                if explicit.contains(&var_name) {
                    continue;
                }
                check_reference(&container.name, &var_name, &reference)?;
                env.push(EnvVar {
                    name: var_name,
                    value: Some(reference),
                    value_from: None,
                });
                has_refs = true;
            }
        }
        Ok((Cow::Owned(env), has_refs))
    }

    /// Reads (once per review) the reference entries of a referenced object.
    async fn lookup(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        optional: Option<bool>,
        cache: &mut BTreeMap<(ObjectKind, String), Option<BTreeMap<String, String>>>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<BTreeMap<String, String>>, Refusal> {
        let cache_key = (kind, name.to_owned());
        if let Some(hit) = cache.get(&cache_key) {
            return Ok(hit.clone());
        }
        let found = match self.objects.vault_refs(kind, namespace, name).await {
            Ok(found) => found,
            Err(LookupError::Unavailable) => {
                warnings.push(format!(
                    "{} {namespace}/{name} was not read (no Kubernetes API access); Vault \
                     references in it are not injected",
                    kind.as_str()
                ));
                None
            }
            Err(error) if optional == Some(true) => {
                warnings.push(format!("{error}; the reference is optional, skipped"));
                None
            }
            Err(error) => return Err(Refusal::Deny(error.to_string())),
        };
        cache.insert(cache_key, found.clone());
        Ok(found)
    }

    /// What a container runs after injection (original command + args), or `None` with a
    /// warning when neither the spec nor the resolver knows it. With a registry failure
    /// policy configured, a failed lookup refuses (deny) or admits the pod unmutated instead.
    async fn container_args(
        &self,
        pod: &Pod,
        namespace: &str,
        container: &Container,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Vec<String>>, Refusal> {
        let command = container.command.clone().unwrap_or_default();
        let args = container.args.clone().unwrap_or_default();
        if !command.is_empty() {
            return Ok(Some(command.into_iter().chain(args).collect()));
        }
        if !crate::registry::lookup_enabled(pod.metadata.annotations.as_ref()) {
            warnings.push(format!(
                "container {}: no command and {}: \"false\"; vault-env is not injected into it",
                container.name,
                crate::registry::LOOKUP_ANNOTATION
            ));
            return Ok(None);
        }
        let lookup = image_lookup(pod, namespace, container);
        match self.images.resolve(&lookup).await {
            Ok(entrypoint) => {
                // Kubernetes semantics: args replace the image's CMD, ENTRYPOINT stays.
                let tail = if args.is_empty() {
                    entrypoint.cmd
                } else {
                    args
                };
                let all: Vec<String> = entrypoint.entrypoint.into_iter().chain(tail).collect();
                if all.is_empty() {
                    warnings.push(format!(
                        "container {}: image {} has neither ENTRYPOINT nor CMD and the \
                         container has no command; vault-env is not injected into it",
                        container.name, lookup.image
                    ));
                    return Ok(None);
                }
                Ok(Some(all))
            }
            Err(error) => match self.config.image_failure_policy {
                Some(policy) => match policy.on_error(&error) {
                    crate::registry::FailureAction::Deny(message) => Err(Refusal::Deny(format!(
                        "container {}: {message}",
                        container.name
                    ))),
                    crate::registry::FailureAction::AdmitWithWarning(message) => Err(
                        Refusal::AdmitUnmutated(format!("container {}: {message}", container.name)),
                    ),
                },
                None => {
                    warnings.push(format!(
                        "container {}: no command and the entrypoint is unknown ({error}); \
                         vault-env is not injected into it; set `command` in the spec",
                        container.name
                    ));
                    Ok(None)
                }
            },
        }
    }

    /// Settings shared by all injected containers, after policy.
    fn pod_settings(
        &self,
        pod: &Pod,
        annotations: &Annotations,
        warnings: &mut Vec<String>,
    ) -> Result<PodSettings, Refusal> {
        let config = &self.config;
        let annotation_name = |name: &str| format!("{}{name}", annotations::LEGACY_PREFIX);
        let get = |name: &str| annotations.get(name).filter(|v| !v.is_empty());

        let vault_addr = match get("vault-addr") {
            Some(addr) => {
                config.address_policy.check(addr).map_err(|error| {
                    Refusal::Deny(format!(
                        "annotation {} is refused: the address {error}",
                        annotation_name("vault-addr")
                    ))
                })?;
                addr.to_owned()
            }
            None => config.vault_addr.clone(),
        };
        let image = match get("vault-env-image") {
            Some(image) if image == config.vault_env_image => image.to_owned(),
            Some(image) => {
                if !policy::image_allowed(image, &config.vault_env_image_allowlist) {
                    return Err(Refusal::Deny(format!(
                        "annotation {} is refused: image {image:?} is not in the operator's \
                         VAULT_ENV_IMAGE_ALLOWLIST",
                        annotation_name("vault-env-image")
                    )));
                }
                image.to_owned()
            }
            None => config.vault_env_image.clone(),
        };
        let pull_policy = match get("vault-env-image-pull-policy") {
            Some(p @ ("Always" | "IfNotPresent" | "Never")) => p.to_owned(),
            Some(other) => {
                return Err(Refusal::Deny(format!(
                    "annotation {} must be Always, IfNotPresent or Never, not {other:?}",
                    annotation_name("vault-env-image-pull-policy")
                )));
            }
            None => config.vault_env_image_pull_policy.clone(),
        };
        let mut skip_verify = config.vault_skip_verify;
        if let Some(value) = annotations.flag("vault-skip-verify") {
            if config.allow_object_skip_verify {
                skip_verify = value;
            } else if value != skip_verify {
                warnings.push(format!(
                    "annotation {} is ignored: the operator does not let objects change TLS \
                     verification",
                    annotation_name("vault-skip-verify")
                ));
            }
        }
        if annotations.flag("registry-skip-verify") == Some(true) {
            warnings.push(format!(
                "annotation {} is ignored: registry TLS verification is an operator setting",
                annotation_name("registry-skip-verify")
            ));
        }
        let mut passthrough = get("vault-env-passthrough")
            .map(str::to_owned)
            .unwrap_or_else(|| config.vault_env_passthrough.clone());
        let entries: Vec<&str> = passthrough.split(',').map(str::trim).collect();
        if entries.contains(&"VAULT_TOKEN") && !config.vault_env_passthrough.contains("VAULT_TOKEN")
        {
            warnings.push(format!(
                "annotation {}: VAULT_TOKEN is removed; an object may not pass the Vault token \
                 to the app",
                annotation_name("vault-env-passthrough")
            ));
            passthrough = entries
                .into_iter()
                .filter(|e| *e != "VAULT_TOKEN" && !e.is_empty())
                .collect::<Vec<_>>()
                .join(",");
        }
        let role = get("vault-role")
            .map(str::to_owned)
            .or_else(|| (!config.vault_role.is_empty()).then(|| config.vault_role.clone()))
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".to_owned());

        let mut security = SecuritySettings {
            run_as_user: config.run_as_user,
            run_as_group: config.run_as_group,
        };
        for (name, slot) in [
            ("run-as-user", &mut security.run_as_user),
            ("run-as-group", &mut security.run_as_group),
        ] {
            if let Some(value) = get(name) {
                match value.parse::<i64>() {
                    Ok(id) if id > 0 => *slot = id,
                    _ => warnings.push(format!(
                        "annotation {} is ignored: injected containers run as a non-zero id",
                        annotation_name(name)
                    )),
                }
            }
        }
        for (name, widening) in [
            ("run-as-non-root", false),
            ("readonly-root-fs", false),
            ("psp-allow-privilege-escalation", true),
        ] {
            if annotations.flag(name) == Some(widening) {
                warnings.push(format!(
                    "annotation {} is ignored: it would weaken the restricted security context \
                     of the injected containers",
                    annotation_name(name)
                ));
            }
        }

        let mut env = vec![
            ("VAULT_ADDR", vault_addr),
            ("VAULT_SKIP_VERIFY", skip_verify.to_string()),
            (
                "VAULT_AUTH_METHOD",
                get("vault-auth-method")
                    .map_or_else(|| config.vault_auth_method.clone(), str::to_owned),
            ),
            (
                "VAULT_PATH",
                get("vault-path").map_or_else(|| config.vault_path.clone(), str::to_owned),
            ),
            ("VAULT_ROLE", role),
            (
                "VAULT_IGNORE_MISSING_SECRETS",
                annotations
                    .flag("vault-ignore-missing-secrets")
                    .unwrap_or(config.vault_ignore_missing_secrets)
                    .to_string(),
            ),
            ("VAULT_ENV_PASSTHROUGH", passthrough),
            (
                "VAULT_JSON_LOG",
                annotations
                    .flag("enable-json-log")
                    .unwrap_or(config.vault_json_log)
                    .to_string(),
            ),
            (
                "VAULT_CLIENT_TIMEOUT",
                get("vault-client-timeout")
                    .map_or_else(|| config.vault_client_timeout.clone(), str::to_owned),
            ),
        ];
        let tls_secret = get("vault-tls-secret").map(str::to_owned).or_else(|| {
            (!config.vault_tls_secret.is_empty()).then(|| config.vault_tls_secret.clone())
        });
        if tls_secret.is_some() {
            env.push(("VAULT_CACERT", format!("{TLS_MOUNT_PATH}/ca.crt")));
        }
        let optional = [
            (
                "VAULT_NAMESPACE",
                get("vault-namespace").map(str::to_owned).or_else(|| {
                    (!config.vault_namespace.is_empty()).then(|| config.vault_namespace.clone())
                }),
            ),
            (
                "VAULT_ENV_DAEMON",
                (annotations.flag("vault-env-daemon") == Some(true)).then(|| "true".to_owned()),
            ),
            ("VAULT_ENV_DELAY", get("vault-env-delay").map(str::to_owned)),
            (
                "VAULT_ENV_FROM_PATH",
                get("vault-env-from-path").map(str::to_owned),
            ),
            (
                "VAULT_TRANSIT_KEY_ID",
                get("transit-key-id").map(str::to_owned),
            ),
            ("VAULT_TRANSIT_PATH", get("transit-path").map(str::to_owned)),
            (
                "VAULT_TRANSIT_BATCH_SIZE",
                get("transit-batch-size").map(str::to_owned),
            ),
            (
                "VAULT_LOG_LEVEL",
                get("log-level").map(str::to_owned).or_else(|| {
                    (!config.vault_log_level.is_empty()).then(|| config.vault_log_level.clone())
                }),
            ),
        ];
        env.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        match annotations.project(annotations::GUARD_MODE) {
            Some(mode @ ("enforce" | "audit")) => env.push((GUARD_MODE_ENV, mode.to_owned())),
            Some(other) => warnings.push(format!(
                "annotation {} must be enforce or audit, not {other:?}; ignored",
                annotations::GUARD_MODE
            )),
            None => {}
        }
        Ok(PodSettings {
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            image,
            pull_policy,
            tls_secret,
            mutate_probes: annotations.flag("mutate-probes") == Some(true),
            security,
        })
    }

    /// Patch operations for one injected container.
    #[allow(clippy::too_many_arguments)]
    fn container_ops(
        &self,
        list: ListKind,
        index: usize,
        container: &Container,
        env: &[EnvVar],
        args: Vec<String>,
        settings: &PodSettings,
        shared: &SharedItems,
        ops: &mut JsonPatch,
    ) -> Result<(), serde_json::Error> {
        let index = index.to_string();
        let at = |field: &'static str| ["spec", list.field(), index.as_str(), field];
        // The webhook's VAULT_* values replace any the object set itself.
        let kept: Vec<&EnvVar> = env
            .iter()
            .filter(|var| !settings.env.iter().any(|(name, _)| *name == var.name))
            .collect();
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        ops.add(&at("command"), &[VAULT_ENV_COMMAND])?;
        ops.add(&at("args"), &args)?;
        ops.add_array(&at("env"), &kept, &shared.env)?;
        ops.add_array(&at("volumeMounts"), mounts, &shared.mounts)?;
        if settings.mutate_probes {
            let probes = [
                ("livenessProbe", &container.liveness_probe),
                ("readinessProbe", &container.readiness_probe),
                ("startupProbe", &container.startup_probe),
            ];
            for (field, probe) in probes {
                if let Some(command) = exec_command(probe.as_ref()) {
                    let wrapped: Vec<&str> = std::iter::once(VAULT_ENV_COMMAND)
                        .chain(command.iter().map(String::as_str))
                        .collect();
                    let [a, b, c, d] = at(field);
                    ops.add(&[a, b, c, d, "exec", "command"], &wrapped)?;
                }
            }
        }
        Ok(())
    }

    /// Pod-level operations: volumes, the init container and the injected annotation. They
    /// come after the container operations, whose init container indexes are the original
    /// ones.
    fn pod_ops(
        &self,
        pod: &Pod,
        settings: &PodSettings,
        ops: &mut JsonPatch,
    ) -> Result<(), serde_json::Error> {
        let config = &self.config;
        let mut volumes = vec![InjectedVolume::EmptyDir {
            name: VOLUME_NAME,
            empty_dir: EmptyDirSource {
                medium: "Memory",
                size_limit: &config.volume_size_limit,
            },
        }];
        if let Some(secret) = &settings.tls_secret {
            volumes.push(InjectedVolume::Secret {
                name: TLS_VOLUME_NAME,
                secret: SecretSource {
                    secret_name: secret,
                    default_mode: 0o444,
                },
            });
        }
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.volumes.as_ref()).is_some() {
            for volume in &volumes {
                ops.add(&["spec", "volumes", "-"], volume)?;
            }
        } else {
            ops.add(&["spec", "volumes"], &volumes)?;
        }
        let init = self.init_container(settings);
        if spec.and_then(|s| s.init_containers.as_ref()).is_some() {
            // First, so that injected init containers find vault-env in place.
            ops.add(&["spec", "initContainers", "0"], &init)?;
        } else {
            ops.add(&["spec", "initContainers"], &[init])?;
        }
        if pod.metadata.annotations.is_some() {
            ops.add(
                &["metadata", "annotations", annotations::INJECTED],
                &config.version,
            )?;
        } else {
            ops.add(
                &["metadata", "annotations"],
                &BTreeMap::from([(annotations::INJECTED, config.version.as_str())]),
            )?;
        }
        Ok(())
    }

    /// The `copy-vault-env` init container, Pod Security "restricted".
    fn init_container<'a>(&'a self, settings: &'a PodSettings) -> InitContainer<'a> {
        let config = &self.config;
        // copy-self writes the pod's guard mode next to the binary for ebpf-guard to read.
        let env = settings
            .env
            .iter()
            .filter(|(name, _)| name == GUARD_MODE_ENV)
            .map(|(name, value)| NameValue { name, value })
            .collect();
        InitContainer {
            name: INIT_CONTAINER_NAME,
            image: &settings.image,
            image_pull_policy: &settings.pull_policy,
            command: [&config.vault_env_binary_path, "copy-self", MOUNT_PATH],
            volume_mounts: [NameMount {
                name: VOLUME_NAME,
                mount_path: MOUNT_PATH,
            }],
            resources: Resources {
                requests: CpuMemory {
                    cpu: &config.cpu_request,
                    memory: &config.memory_request,
                },
                limits: CpuMemory {
                    cpu: &config.cpu_limit,
                    memory: &config.memory_limit,
                },
            },
            security_context: RestrictedSecurityContext {
                run_as_non_root: true,
                run_as_user: settings.security.run_as_user,
                run_as_group: settings.security.run_as_group,
                allow_privilege_escalation: false,
                read_only_root_filesystem: true,
                privileged: false,
                capabilities: DropCapabilities { drop: ["ALL"] },
                seccomp_profile: SeccompProfile {
                    type_: "RuntimeDefault",
                },
            },
            env,
        }
    }
}

// Patch values written straight to JSON (field order as the JSON the patch always had).

/// What every injected container of a pod gets appended, serialised once per pod: the
/// webhook's env entries and the vault-env (and TLS) mounts.
struct SharedItems {
    env: JsonItems,
    mounts: JsonItems,
}

impl SharedItems {
    fn new(settings: &PodSettings) -> Result<Self, serde_json::Error> {
        let env: Vec<NameValue<'_>> = settings
            .env
            .iter()
            .map(|(name, value)| NameValue { name, value })
            .collect();
        let mut mounts = vec![VolumeMount {
            name: VOLUME_NAME.to_owned(),
            mount_path: MOUNT_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }];
        if settings.tls_secret.is_some() {
            mounts.push(VolumeMount {
                name: TLS_VOLUME_NAME.to_owned(),
                mount_path: TLS_MOUNT_PATH.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
        Ok(Self {
            env: JsonItems::new(&env)?,
            mounts: JsonItems::new(&mounts)?,
        })
    }
}

/// An env entry with a plain value (serialises as `EnvVar` does).
#[derive(serde::Serialize)]
struct NameValue<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum InjectedVolume<'a> {
    EmptyDir {
        name: &'a str,
        #[serde(rename = "emptyDir")]
        empty_dir: EmptyDirSource<'a>,
    },
    Secret {
        name: &'a str,
        secret: SecretSource<'a>,
    },
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EmptyDirSource<'a> {
    medium: &'a str,
    size_limit: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretSource<'a> {
    secret_name: &'a str,
    default_mode: u32,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct InitContainer<'a> {
    name: &'a str,
    image: &'a str,
    image_pull_policy: &'a str,
    command: [&'a str; 3],
    volume_mounts: [NameMount<'a>; 1],
    resources: Resources<'a>,
    security_context: RestrictedSecurityContext,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<NameValue<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NameMount<'a> {
    name: &'a str,
    mount_path: &'a str,
}

#[derive(serde::Serialize)]
struct Resources<'a> {
    requests: CpuMemory<'a>,
    limits: CpuMemory<'a>,
}

#[derive(serde::Serialize)]
struct CpuMemory<'a> {
    cpu: &'a str,
    memory: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RestrictedSecurityContext {
    run_as_non_root: bool,
    run_as_user: i64,
    run_as_group: i64,
    allow_privilege_escalation: bool,
    read_only_root_filesystem: bool,
    privileged: bool,
    capabilities: DropCapabilities,
    seccomp_profile: SeccompProfile,
}

#[derive(serde::Serialize)]
struct DropCapabilities {
    drop: [&'static str; 1],
}

#[derive(serde::Serialize)]
struct SeccompProfile {
    #[serde(rename = "type")]
    type_: &'static str,
}

/// Pod-wide injection settings after policy.
struct PodSettings {
    env: Vec<(String, String)>,
    image: String,
    pull_policy: String,
    tls_secret: Option<String>,
    mutate_probes: bool,
    security: SecuritySettings,
}

struct SecuritySettings {
    run_as_user: i64,
    run_as_group: i64,
}

fn patch_failed(error: serde_json::Error) -> Refusal {
    Refusal::Invalid(format!("building the patch failed: {error}"))
}

fn outcome(response: AdmissionResponse, decision: Decision, injected: usize) -> Outcome {
    Outcome {
        response,
        decision,
        injected_containers: injected,
    }
}

/// Why a pod is left alone before looking at it further.
fn skip_reason(pod: &Pod, annotations: &Annotations) -> Option<Decision> {
    let meta = &pod.metadata;
    let skip_label = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(annotations::SKIP_LABEL))
        .is_some_and(|v| v == "skip");
    let skip_annotation = annotations.get("mutate") == Some("skip");
    if skip_label || skip_annotation {
        return Some(Decision::Skipped);
    }
    let marked = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(annotations::INJECTED));
    let has_init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == INIT_CONTAINER_NAME));
    (marked || has_init).then_some(Decision::AlreadyMutated)
}

/// Secrets and ConfigMaps: Bank-Vaults resolves their references by calling Vault from the
/// webhook; Strongroom's webhook never calls Vault, so they are admitted unchanged, with a
/// warning when they hold references.
fn not_ours_secret_or_configmap(uid: &str, request: &AdmissionRequest<'_>) -> Outcome {
    let mut response = AdmissionResponse::allow(uid);
    let holds_refs = request
        .object
        .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        .is_some_and(|object| object_has_references(&request.kind.kind, &object));
    if holds_refs {
        response.warnings.push(format!(
            "{} holds Vault references; Strongroom does not resolve references in Secrets or \
             ConfigMaps at admission (the webhook never calls Vault); it is admitted \
             unchanged. Reference it from a pod with valueFrom/envFrom instead",
            request.kind.kind
        ));
    }
    outcome(response, Decision::NotOurs, 0)
}

fn object_has_references(kind: &str, object: &Value) -> bool {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let decoded_has_ref = |v: &Value| {
        v.as_str()
            .and_then(|s| engine.decode(s).ok())
            .map(zeroize::Zeroizing::new)
            .is_some_and(|bytes| {
                std::str::from_utf8(&bytes).is_ok_and(vault_env::reference::contains_reference)
                    || String::from_utf8_lossy(&bytes).contains("vault:")
            })
    };
    let data = object.get("data").and_then(Value::as_object);
    let binary = object.get("binaryData").and_then(Value::as_object);
    let string_data = object.get("stringData").and_then(Value::as_object);
    let plain_has_ref = |v: &Value| {
        v.as_str()
            .is_some_and(vault_env::reference::contains_reference)
    };
    match kind {
        "Secret" => {
            data.is_some_and(|d| d.values().any(decoded_has_ref))
                || string_data.is_some_and(|d| d.values().any(plain_has_ref))
        }
        _ => {
            data.is_some_and(|d| d.values().any(plain_has_ref))
                || binary.is_some_and(|d| d.values().any(decoded_has_ref))
        }
    }
}

/// Denies a malformed reference with the container, variable and syntax problem.
fn check_reference(container: &str, variable: &str, value: &str) -> Result<(), Refusal> {
    vault_env::reference::parse(value)
        .map(drop)
        .map_err(|error| {
            Refusal::Deny(format!(
                "container {container}: env {variable}: malformed Vault reference: {error}"
            ))
        })
}

/// A serde error's message without its "at line L column C" suffix: the position is within
/// `request.object`, not the body, and the message read the same when the object was parsed
/// from a tree.
fn message_only(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_owned(),
        None => message,
    }
}

fn exec_command(probe: Option<&Probe>) -> Option<&Vec<String>> {
    probe?
        .exec
        .as_ref()?
        .command
        .as_ref()
        .filter(|c| !c.is_empty())
}

/// The registry lookup for a container, from the pod's pull secrets, service account and
/// platform constraints.
fn image_lookup(pod: &Pod, namespace: &str, container: &Container) -> ImageLookup {
    let spec = pod.spec.as_ref();
    let mut platforms = Vec::new();
    if let Some(selector) = spec.and_then(|s| s.node_selector.as_ref())
        && let Some(arch) = selector.get("kubernetes.io/arch")
    {
        platforms.push(Platform {
            os: selector
                .get("kubernetes.io/os")
                .cloned()
                .unwrap_or_else(|| "linux".to_owned()),
            architecture: arch.clone(),
        });
    }
    ImageLookup {
        image: container.image.clone().unwrap_or_default(),
        namespace: namespace.to_owned(),
        image_pull_secrets: spec
            .and_then(|s| s.image_pull_secrets.as_ref())
            .map(|secrets| secrets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default(),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        image_pull_policy: container.image_pull_policy.clone().unwrap_or_default(),
        platforms,
    }
}
