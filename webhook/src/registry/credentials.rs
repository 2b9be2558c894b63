//! Registry credentials: where they come from, how they are parsed and which ones apply.
//!
//! Kubelet pulls with the pod's `imagePullSecrets`, then its ServiceAccount's; the webhook
//! looks images up with the same credentials in the same order, then with the operator's
//! default secret (`DEFAULT_IMAGE_PULL_SECRET` in `DEFAULT_IMAGE_PULL_SECRET_NAMESPACE`)
//! and the pull secrets of the operator's default ServiceAccount
//! (`DEFAULT_IMAGE_PULL_SECRET_SERVICE_ACCOUNT`). Every credential whose key matches the
//! registry is kept, so the resolver can try them in turn until one works.
//!
//! The Kubernetes API is reached through [`SecretSource`], so tests can point it at a fake
//! API server; [`KubeSecretSource`] is the `kube` implementation.
//!
//! # Security
//!
//! Secret contents are read into [`SecretString`] as they are deserialised and are never
//! logged or formatted: [`Credential`]'s `Debug` prints `<redacted>`. Which registry a
//! credential is sent to is decided by the key it is filed under in the docker config, as
//! kubelet does, never by anything in the image name alone.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::reference::DOCKER_HUB;
use crate::image::ImageLookup;

/// `type` of a Secret holding a `~/.docker/config.json`.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// `type` of a Secret holding a legacy `~/.dockercfg`.
pub const DOCKER_CFG_TYPE: &str = "kubernetes.io/dockercfg";

/// The future returned by [`SecretSource`] methods; boxed so the trait stays object safe.
pub type SourceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SourceError>> + Send + 'a>>;

/// Read access to the two Kubernetes objects credential selection needs.
pub trait SecretSource: Send + Sync {
    /// `GET /api/v1/namespaces/{namespace}/secrets/{name}`; `None` when it does not exist.
    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> SourceFuture<'a, Option<Secret>>;
    /// `GET /api/v1/namespaces/{namespace}/serviceaccounts/{name}`; `None` when missing.
    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> SourceFuture<'a, Option<ServiceAccount>>;
}

/// A failed Kubernetes API read (the message never contains secret data).
#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    #[error("read {kind} {namespace}/{name} from the kubernetes api: {reason}")]
    ReadObject {
        kind: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },
}

/// [`SecretSource`] over a `kube::Client` (the webhook's in-cluster client).
#[derive(Clone)]
pub struct KubeSecretSource {
    client: kube::Client,
}

impl KubeSecretSource {
    /// Wraps a ready client; its RBAC needs `get` on secrets and serviceaccounts.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn get<K>(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, SourceError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + fmt::Debug,
        K::DynamicType: Default,
    {
        let api: kube::Api<K> = kube::Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(|err| SourceError::ReadObject {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                reason: err.to_string(),
            })
    }
}

impl SecretSource for KubeSecretSource {
    fn secret<'a>(&'a self, namespace: &'a str, name: &'a str) -> SourceFuture<'a, Option<Secret>> {
        Box::pin(self.get("secret", namespace, name))
    }

    fn service_account<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> SourceFuture<'a, Option<ServiceAccount>> {
        Box::pin(self.get("serviceaccount", namespace, name))
    }
}

/// A username/password pair for one registry, with where it came from (for logs).
#[derive(Clone)]
pub struct Credential {
    /// `namespace/secret-name` the credential was read from; safe to log.
    pub origin: String,
    /// The docker config key it was filed under (`registry.local:5000`); safe to log.
    pub key: String,
    pub username: String,
    pub password: SecretString,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("origin", &self.origin)
            .field("key", &self.key)
            .field("username", &"<redacted>")
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// True when both credentials would authenticate identically.
    fn same_as(&self, other: &Self) -> bool {
        self.username == other.username
            && self.password.expose_secret() == other.password.expose_secret()
    }
}

/// Operator defaults tried after the pod's own credentials.
#[derive(Clone, Debug, Default)]
pub struct DefaultPullSecrets {
    /// `DEFAULT_IMAGE_PULL_SECRET`.
    pub secret: Option<String>,
    /// `DEFAULT_IMAGE_PULL_SECRET_NAMESPACE` (the webhook's namespace when unset).
    pub namespace: Option<String>,
    /// `DEFAULT_IMAGE_PULL_SECRET_SERVICE_ACCOUNT`: its `imagePullSecrets` are tried last.
    pub service_account: Option<String>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<SecretString>,
    #[serde(default)]
    auth: Option<SecretString>,
}

/// Why a pull secret could not be used (the message never contains its data).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseSecretError {
    #[error("secret {origin} has type {kind:?}, not a docker config secret")]
    WrongType { origin: String, kind: String },
    #[error("secret {origin} has no {key} entry")]
    MissingKey { origin: String, key: &'static str },
    #[error("secret {origin}: {key} is not a valid docker config")]
    ParseDockerConfig { origin: String, key: &'static str },
}

/// All credentials of a docker config Secret, in key order.
pub fn parse_pull_secret(
    origin: &str,
    secret: &Secret,
) -> Result<Vec<Credential>, ParseSecretError> {
    let kind = secret.type_.clone().unwrap_or_default();
    let key = match kind.as_str() {
        DOCKER_CONFIG_JSON_TYPE => ".dockerconfigjson",
        DOCKER_CFG_TYPE => ".dockercfg",
        _ => {
            return Err(ParseSecretError::WrongType {
                origin: origin.to_owned(),
                kind,
            });
        }
    };
    let data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| ParseSecretError::MissingKey {
            origin: origin.to_owned(),
            key,
        })?;
    let bad = || ParseSecretError::ParseDockerConfig {
        origin: origin.to_owned(),
        key,
    };
    let auths = if kind == DOCKER_CONFIG_JSON_TYPE {
        serde_json::from_slice::<DockerConfigJson>(&data.0)
            .map_err(|_| bad())?
            .auths
    } else {
        serde_json::from_slice::<BTreeMap<String, AuthEntry>>(&data.0).map_err(|_| bad())?
    };
    Ok(auths
        .into_iter()
        .filter_map(|(key, entry)| credential_from_entry(origin, key, entry))
        .collect())
}

/// Username/password from an entry: explicit fields, else the base64 `auth` field.
fn credential_from_entry(origin: &str, key: String, entry: AuthEntry) -> Option<Credential> {
    let (username, password) = match (entry.username, entry.password) {
        (Some(user), Some(password)) if !user.is_empty() => (user, password),
        _ => {
            let encoded = entry.auth?;
            let decoded = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.expose_secret().trim())
                    .ok()?,
            );
            let text = std::str::from_utf8(&decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            (user.to_owned(), SecretString::from(password.to_owned()))
        }
    };
    Some(Credential {
        origin: origin.to_owned(),
        key,
        username,
        password,
    })
}

/// Whether a docker config key applies to `registry`/`repository`, as kubelet matches:
/// scheme and a trailing `/v1/`-style path are ignored, the host (with `*` globs per label)
/// and port must match, and a key path must be a component prefix of the repository.
pub fn key_matches(key: &str, registry: &str, repository: &str) -> bool {
    let trimmed = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let host = host.to_ascii_lowercase();
    let is_hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    if registry == DOCKER_HUB {
        // Docker's own keys look like `https://index.docker.io/v1/`: the path is an API
        // version, not a repository prefix.
        return is_hub(&host);
    }
    let split_port = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), port.to_owned()),
            None => (h.to_owned(), String::new()),
        }
    };
    let (key_name, key_port) = split_port(&host);
    let (reg_name, reg_port) = split_port(&registry.to_ascii_lowercase());
    if key_port != reg_port {
        return false;
    }
    let key_labels: Vec<&str> = key_name.split('.').collect();
    let reg_labels: Vec<&str> = reg_name.split('.').collect();
    if key_labels.len() != reg_labels.len()
        || !key_labels
            .iter()
            .zip(&reg_labels)
            .all(|(k, r)| glob_label(k, r))
    {
        return false;
    }
    let path = path.trim_end_matches('/');
    if path.is_empty() || path == "v1" || path == "v2" {
        return true;
    }
    repository == path || repository.starts_with(&format!("{path}/"))
}

/// `*` matches any run of characters within one DNS label.
fn glob_label(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == label,
        Some((prefix, suffix)) => {
            label.len() >= prefix.len() + suffix.len()
                && label.starts_with(prefix)
                && glob_label_tail(suffix, &label[prefix.len()..])
        }
    }
}

fn glob_label_tail(pattern: &str, rest: &str) -> bool {
    if !pattern.contains('*') {
        return rest.ends_with(pattern);
    }
    (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob_label(pattern, &rest[i..]))
}

/// Collects, in kubelet's order, every credential that applies to `registry`/`repository`:
/// pod pull secrets, the pod's ServiceAccount's, the operator's default secret, the default
/// ServiceAccount's. Missing or unreadable secrets are skipped with a warning, as kubelet
/// does; duplicates are dropped.
pub async fn collect(
    source: &dyn SecretSource,
    lookup: &ImageLookup,
    defaults: &DefaultPullSecrets,
    registry: &str,
    repository: &str,
) -> Vec<Credential> {
    let namespace = lookup.namespace.as_str();
    let mut names: Vec<(String, String)> = lookup
        .image_pull_secrets
        .iter()
        .map(|n| (namespace.to_owned(), n.clone()))
        .collect();
    if !lookup.service_account.is_empty() {
        names.extend(
            service_account_secrets(source, namespace, &lookup.service_account)
                .await
                .into_iter()
                .map(|n| (namespace.to_owned(), n)),
        );
    }
    let default_ns = defaults
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.to_owned());
    if let Some(secret) = &defaults.secret {
        names.push((default_ns.clone(), secret.clone()));
    }
    if let Some(sa) = &defaults.service_account {
        names.extend(
            service_account_secrets(source, &default_ns, sa)
                .await
                .into_iter()
                .map(|n| (default_ns.clone(), n)),
        );
    }

    let mut seen = HashSet::new();
    let mut out: Vec<Credential> = Vec::new();
    for (ns, name) in names {
        if name.is_empty() || !seen.insert((ns.clone(), name.clone())) {
            continue;
        }
        let origin = format!("{ns}/{name}");
        let secret = match source.secret(&ns, &name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                tracing::warn!(secret = %origin, "image pull secret not found; skipped");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "image pull secret unreadable; skipped");
                continue;
            }
        };
        match parse_pull_secret(&origin, &secret) {
            Ok(creds) => {
                for cred in creds {
                    if key_matches(&cred.key, registry, repository)
                        && !out.iter().any(|c| c.same_as(&cred))
                    {
                        out.push(cred);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "image pull secret unusable; skipped"),
        }
    }
    out
}

async fn service_account_secrets(
    source: &dyn SecretSource,
    namespace: &str,
    name: &str,
) -> Vec<String> {
    match source.service_account(namespace, name).await {
        Ok(Some(sa)) => sa
            .image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect(),
        Ok(None) => Vec::new(),
        Err(error) => {
            tracing::warn!(%error, "service account unreadable; its pull secrets skipped");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(kind: &str, key: &str, json: serde_json::Value) -> Secret {
        Secret {
            type_: Some(kind.into()),
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(serde_json::to_vec(&json).expect("json")),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn parse_pull_secret_auth_field_and_explicit_fields() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let s = secret(
            DOCKER_CONFIG_JSON_TYPE,
            ".dockerconfigjson",
            serde_json::json!({"auths": {
                "registry.local:5000": {"auth": auth},
                "quay.io": {"username": "bob", "password": "pw"},
                "broken.io": {"auth": "!!!"}
            }}),
        );
        let creds = parse_pull_secret("ns/s", &s).expect("parse");
        assert_eq!(creds.len(), 2);
        let local = creds
            .iter()
            .find(|c| c.key == "registry.local:5000")
            .expect("local");
        assert_eq!(local.username, "alice");
        assert_eq!(local.password.expose_secret(), "s3cr:et");
        let quay = creds.iter().find(|c| c.key == "quay.io").expect("quay");
        assert_eq!(quay.username, "bob");
    }

    #[test]
    fn parse_pull_secret_legacy_dockercfg_supported() {
        let s = secret(
            DOCKER_CFG_TYPE,
            ".dockercfg",
            serde_json::json!({"https://index.docker.io/v1/": {"username": "u", "password": "p"}}),
        );
        let creds = parse_pull_secret("ns/s", &s).expect("parse");
        assert_eq!(creds.len(), 1);
        assert!(key_matches(&creds[0].key, DOCKER_HUB, "library/redis"));
    }

    #[test]
    fn parse_pull_secret_wrong_type_or_garbage_rejected_without_data() {
        let opaque = secret("Opaque", ".dockerconfigjson", serde_json::json!({}));
        assert!(matches!(
            parse_pull_secret("ns/s", &opaque),
            Err(ParseSecretError::WrongType { .. })
        ));
        let mut garbage = secret(
            DOCKER_CONFIG_JSON_TYPE,
            ".dockerconfigjson",
            serde_json::json!({}),
        );
        garbage.data = Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(b"{\"auths\": \"hunter2".to_vec()),
        )]));
        let err = parse_pull_secret("ns/s", &garbage).expect_err("garbage");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn credential_debug_redacted() {
        let cred = Credential {
            origin: "ns/s".into(),
            key: "r".into(),
            username: "alice".into(),
            password: SecretString::from("hunter2".to_owned()),
        };
        let text = format!("{cred:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("alice"),
            "{text}"
        );
    }

    /// Secrets and ServiceAccounts in memory, keyed by (namespace, name).
    #[derive(Default)]
    struct Objects {
        secrets: BTreeMap<(String, String), Secret>,
        accounts: BTreeMap<(String, String), ServiceAccount>,
    }

    impl SecretSource for Objects {
        fn secret<'a>(&'a self, ns: &'a str, name: &'a str) -> SourceFuture<'a, Option<Secret>> {
            let found = self.secrets.get(&(ns.to_owned(), name.to_owned())).cloned();
            Box::pin(std::future::ready(Ok(found)))
        }

        fn service_account<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> SourceFuture<'a, Option<ServiceAccount>> {
            let found = self
                .accounts
                .get(&(ns.to_owned(), name.to_owned()))
                .cloned();
            Box::pin(std::future::ready(Ok(found)))
        }
    }

    fn pull_secret(registry: &str, user: &str) -> Secret {
        secret(
            DOCKER_CONFIG_JSON_TYPE,
            ".dockerconfigjson",
            serde_json::json!({"auths": {registry: {"username": user, "password": format!("pw-{user}")}}}),
        )
    }

    fn account(secrets: &[&str]) -> ServiceAccount {
        ServiceAccount {
            image_pull_secrets: Some(
                secrets
                    .iter()
                    .map(|n| k8s_openapi::api::core::v1::LocalObjectReference {
                        name: (*n).to_owned(),
                    })
                    .collect(),
            ),
            ..ServiceAccount::default()
        }
    }

    #[tokio::test]
    async fn collect_kubelet_order_then_defaults_matching_only() {
        let reg = "registry.local:5000";
        let mut objects = Objects::default();
        let mut put = |ns: &str, name: &str, s: Secret| {
            objects.secrets.insert((ns.to_owned(), name.to_owned()), s);
        };
        put("app", "pod-1", pull_secret(reg, "pod-1"));
        put("app", "pod-2", pull_secret(reg, "pod-2"));
        put("app", "other-registry", pull_secret("quay.io", "quay"));
        put("app", "sa-1", pull_secret(reg, "sa-1"));
        put("ops", "default", pull_secret(reg, "default"));
        put("ops", "default-sa-1", pull_secret(reg, "default-sa-1"));
        objects.accounts.insert(
            ("app".into(), "app-sa".into()),
            account(&["sa-1", "pod-1", "missing"]),
        );
        objects
            .accounts
            .insert(("ops".into(), "puller".into()), account(&["default-sa-1"]));
        let lookup = ImageLookup {
            image: format!("{reg}/team/app:1"),
            namespace: "app".into(),
            image_pull_secrets: vec!["pod-1".into(), "other-registry".into(), "pod-2".into()],
            service_account: "app-sa".into(),
            ..ImageLookup::default()
        };
        let defaults = DefaultPullSecrets {
            secret: Some("default".into()),
            namespace: Some("ops".into()),
            service_account: Some("puller".into()),
        };
        let creds = collect(&objects, &lookup, &defaults, reg, "team/app").await;
        let users: Vec<&str> = creds.iter().map(|c| c.username.as_str()).collect();
        assert_eq!(users, ["pod-1", "pod-2", "sa-1", "default", "default-sa-1"]);
        assert_eq!(creds[3].origin, "ops/default");
    }

    #[test]
    fn key_matches_kubelet_rules() {
        let cases = [
            ("registry.local:5000", "registry.local:5000", "a/b", true),
            (
                "https://registry.local:5000/v2/",
                "registry.local:5000",
                "a/b",
                true,
            ),
            ("registry.local", "registry.local:5000", "a/b", false),
            ("registry.local:5000", "registry.local", "a/b", false),
            ("registry.local:5000/a", "registry.local:5000", "a/b", true),
            (
                "registry.local:5000/a",
                "registry.local:5000",
                "ab/c",
                false,
            ),
            ("*.example.com", "eu.example.com", "x", true),
            ("*.example.com", "example.com", "x", false),
            ("*.example.com", "a.b.example.com", "x", false),
            (
                "https://index.docker.io/v1/",
                "docker.io",
                "library/redis",
                true,
            ),
            ("docker.io", "docker.io", "library/redis", true),
            ("quay.io", "docker.io", "library/redis", false),
            ("127.0.0.1:5000", "127.0.0.1:5000", "x", true),
            ("127.0.0.1:5001", "127.0.0.1:5000", "x", false),
        ];
        for (key, registry, repo, want) in cases {
            assert_eq!(
                key_matches(key, registry, repo),
                want,
                "{key} vs {registry}/{repo}"
            );
        }
    }
}
