//! Secrets and ConfigMaps a pod references through `valueFrom`/`envFrom`: the webhook reads
//! them (as Bank-Vaults does) to find values that are Vault references.
//!
//! # Security
//!
//! A Secret's values are secrets unless they are references. A source returns only the
//! entries whose value is a Vault reference; every other value is dropped inside the source,
//! held in a `Zeroizing` buffer until then, and never logged or copied into a patch.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Which kind of object a reference names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Secret,
    ConfigMap,
}

impl ObjectKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "Secret",
            Self::ConfigMap => "ConfigMap",
        }
    }
}

/// Why a referenced object could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// No API server access is configured (offline `inject`).
    #[error("no Kubernetes API access is configured")]
    Unavailable,
    /// The API server refused or failed the read.
    #[error("reading {kind} {namespace}/{name}: {reason}")]
    Read {
        kind: &'static str,
        namespace: String,
        name: String,
        reason: String,
    },
}

/// The entries of one object whose values are Vault references (key → reference);
/// `None` when the object does not exist.
pub type RefEntries = Option<BTreeMap<String, String>>;

/// The future a source returns; boxed so the trait stays object safe.
pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RefEntries, LookupError>> + Send + 'a>>;

/// Reads referenced Secrets and ConfigMaps.
pub trait ObjectSource: Send + Sync {
    /// The Vault-reference entries of `kind` `namespace/name`.
    fn vault_refs<'a>(
        &'a self,
        kind: ObjectKind,
        namespace: &'a str,
        name: &'a str,
    ) -> LookupFuture<'a>;
}

/// No API access: every lookup is [`LookupError::Unavailable`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObjects;

impl ObjectSource for NoObjects {
    fn vault_refs<'a>(&'a self, _: ObjectKind, _: &'a str, _: &'a str) -> LookupFuture<'a> {
        Box::pin(std::future::ready(Err(LookupError::Unavailable)))
    }
}

/// A fixed set of objects (tests, offline `inject` with a side file).
#[derive(Clone, Debug, Default)]
pub struct StaticObjects {
    objects: BTreeMap<(ObjectKind, String, String), BTreeMap<String, String>>,
}

impl StaticObjects {
    /// Adds an object; only its reference entries are kept.
    pub fn insert(
        &mut self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        data: impl IntoIterator<Item = (String, String)>,
    ) {
        let refs = data
            .into_iter()
            .filter(|(_, v)| vault_env::reference::contains_reference(v))
            .collect();
        self.objects
            .insert((kind, namespace.to_owned(), name.to_owned()), refs);
    }
}

impl ObjectSource for StaticObjects {
    fn vault_refs<'a>(
        &'a self,
        kind: ObjectKind,
        namespace: &'a str,
        name: &'a str,
    ) -> LookupFuture<'a> {
        let found = self
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}

/// Reads objects from the Kubernetes API with `kube`.
#[derive(Clone)]
pub struct KubeObjects {
    client: kube::Client,
}

impl std::fmt::Debug for KubeObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeObjects").finish_non_exhaustive()
    }
}

/// The fields of a Secret or ConfigMap that can hold references; values are zeroized.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    #[serde(default)]
    data: BTreeMap<String, Zeroizing<String>>,
    #[serde(default)]
    binary_data: BTreeMap<String, Zeroizing<String>>,
}

impl KubeObjects {
    /// Wraps a client (in-cluster or from a kubeconfig).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn read(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<RefEntries, LookupError> {
        let read_error = |reason: String| LookupError::Read {
            kind: kind.as_str(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            reason,
        };
        let plural = match kind {
            ObjectKind::Secret => "secrets",
            ObjectKind::ConfigMap => "configmaps",
        };
        let path = format!("/api/v1/namespaces/{namespace}/{plural}/{name}");
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| read_error(e.to_string()))?;
        let raw: RawObject = match self.client.request(request).await {
            Ok(raw) => raw,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(error) => return Err(read_error(error.to_string())),
        };
        let engine = base64::engine::general_purpose::STANDARD;
        let mut refs = BTreeMap::new();
        let decode = |encoded: &Zeroizing<String>| -> Option<Zeroizing<String>> {
            let bytes = Zeroizing::new(engine.decode(encoded.as_bytes()).ok()?);
            let text = std::str::from_utf8(&bytes).ok()?;
            Some(Zeroizing::new(text.to_owned()))
        };
        match kind {
            ObjectKind::Secret => {
                for (key, encoded) in &raw.data {
                    if let Some(value) = decode(encoded) {
                        keep_reference(&mut refs, key, &value);
                    }
                }
            }
            ObjectKind::ConfigMap => {
                for (key, value) in &raw.data {
                    keep_reference(&mut refs, key, value);
                }
                for (key, encoded) in &raw.binary_data {
                    if let Some(value) = decode(encoded) {
                        keep_reference(&mut refs, key, &value);
                    }
                }
            }
        }
        Ok(Some(refs))
    }
}

fn keep_reference(refs: &mut BTreeMap<String, String>, key: &str, value: &str) {
    if vault_env::reference::contains_reference(value) {
        refs.insert(key.to_owned(), value.to_owned());
    }
}

impl ObjectSource for KubeObjects {
    fn vault_refs<'a>(
        &'a self,
        kind: ObjectKind,
        namespace: &'a str,
        name: &'a str,
    ) -> LookupFuture<'a> {
        Box::pin(self.read(kind, namespace, name))
    }
}
