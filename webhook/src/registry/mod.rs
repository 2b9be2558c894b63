//! Registry lookup of ENTRYPOINT/CMD: the production [`ImageResolver`].
//!
//! When a container leaves `command` empty, the mutation needs the image's ENTRYPOINT and
//! CMD. [`RegistryResolver`] reads them from the image's registry the way kubelet would
//! pull it: Docker Hub names normalised ([`reference`]), the operator's mirror rules
//! applied, the pod's pull secrets, then its ServiceAccount's, then the operator's defaults
//! tried in turn ([`credentials`]), the index entry for the pod's platform picked and
//! attestations skipped ([`platform`]). Results are cached with bounds, expiry and
//! single-flight ([`cache`]), every lookup has a deadline, and failures follow an explicit
//! operator policy ([`FailurePolicy`]).
//!
//! # Wiring (webhook side)
//!
//! - Flatten [`RegistryArgs`] into the webhook's clap config, build with
//!   [`RegistryArgs::to_config`] and [`RegistryResolver::new`] with a
//!   [`credentials::KubeSecretSource`], register [`RegistryResolver::metrics`], and hand
//!   the resolver to the mutation as `Arc<dyn ImageResolver>`.
//! - Skip the lookup (leave the container unmutated) when the pod has the annotation
//!   [`LOOKUP_ANNOTATION`] `= "false"` ([`lookup_enabled`]).
//! - On `Err` from `resolve`, apply [`RegistryConfig::on_failure`] through
//!   [`FailurePolicy::on_error`]: [`FailureAction::Deny`] → deny the review with that
//!   message; [`FailureAction::AdmitWithWarning`] → allow the pod without a patch and put
//!   the message into the response's `warnings`.
//!
//! # Security
//!
//! The image name, pull secret names and ServiceAccount name come from the admitted pod.
//! References are parsed strictly before any URL is built; credentials are only read from
//! the pod's own namespace (or the operator's configured default) and only sent to the
//! registry their docker config key names. Cached results of credentialed lookups are
//! scoped to the namespace whose secrets fetched them, so a pod cannot learn a private
//! image's entrypoint through another namespace's credentials.

pub mod bench;
pub mod cache;
pub mod client;
pub mod credentials;
pub mod metrics;
pub mod platform;
pub mod reference;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use self::cache::{BoundedCache, CacheLimits, SingleFlight};
use self::client::{FetchError, RegistryClient, Session, TlsSettings};
use self::credentials::{Credential, DefaultPullSecrets, SecretSource};
use self::metrics::RegistryMetrics;
use self::platform::{IndexEntry, PlatformSpec};
use self::reference::{ImageRef, MirrorRule};
use crate::image::{
    ImageEntrypoint, ImageError, ImageLookup, ImageResolver, Platform, ResolveFuture,
};

/// Pod annotation: `"false"` turns the registry lookup off for that pod (for users who set
/// `command` themselves or whose registry the webhook cannot reach).
pub const LOOKUP_ANNOTATION: &str = "strongroom.dev/registry-lookup";

/// False when the pod's annotations opt out of the registry lookup.
pub fn lookup_enabled(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(LOOKUP_ANNOTATION))
        .is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"))
}

/// What the webhook does with a pod whose image lookup failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    /// Deny the pod with a message naming the image and the cause.
    #[default]
    Deny,
    /// Admit the pod without mutation and return an admission warning.
    AdmitUnmutated,
}

/// What the webhook does with a pod after a failed lookup, per [`FailurePolicy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// Deny the review with this message (names the image and the cause).
    Deny(String),
    /// Admit the pod without mutating it and return this admission warning.
    AdmitWithWarning(String),
}

impl FailurePolicy {
    /// The action for a failed `resolve`, with a message a user can act on.
    pub fn on_error(self, error: &ImageError) -> FailureAction {
        match self {
            Self::Deny => FailureAction::Deny(format!(
                "cannot determine the container command: {error}; set `command` in the spec \
                 or annotate the pod {LOOKUP_ANNOTATION}: \"false\""
            )),
            Self::AdmitUnmutated => FailureAction::AdmitWithWarning(format!(
                "pod admitted without Vault injection: cannot determine the container \
                 command: {error}"
            )),
        }
    }
}

/// Operator settings of the registry lookup; flatten into the webhook's clap config.
#[derive(clap::Args, Clone, Debug)]
pub struct RegistryArgs {
    /// Accept any TLS certificate from registries.
    #[arg(long, env = "REGISTRY_SKIP_VERIFY", default_value_t = false, action = clap::ArgAction::Set)]
    pub registry_skip_verify: bool,
    /// PEM bundle of CAs trusted for registries, in addition to the public web roots.
    #[arg(long, env = "REGISTRY_CA_FILE")]
    pub registry_ca_file: Option<PathBuf>,
    /// Pull secret tried after the pod's and its ServiceAccount's.
    #[arg(long, env = "DEFAULT_IMAGE_PULL_SECRET")]
    pub default_image_pull_secret: Option<String>,
    /// Namespace of the default pull secret and ServiceAccount (default: the pod's).
    #[arg(long, env = "DEFAULT_IMAGE_PULL_SECRET_NAMESPACE")]
    pub default_image_pull_secret_namespace: Option<String>,
    /// ServiceAccount whose `imagePullSecrets` are tried last.
    #[arg(long, env = "DEFAULT_IMAGE_PULL_SECRET_SERVICE_ACCOUNT")]
    pub default_image_pull_secret_service_account: Option<String>,
    /// Rewrite rules `FROM=TO` (comma-separated), e.g. `docker.io=registry.local:5000`.
    #[arg(
        long = "registry-mirror",
        env = "REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    pub registry_mirrors: Vec<MirrorRule>,
    /// Deadline of one lookup (`3s`, `500ms`); keep it below the webhook's timeoutSeconds.
    #[arg(long, env = "REGISTRY_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub registry_timeout: Duration,
    /// What to do when a lookup fails: `deny` or `admit-unmutated` (with a warning).
    #[arg(long, env = "REGISTRY_FAILURE_POLICY", value_enum, default_value_t = FailurePolicy::Deny)]
    pub registry_failure_policy: FailurePolicy,
    /// Platform assumed when the pod does not constrain `kubernetes.io/os`/`arch`.
    #[arg(long, env = "DEFAULT_PLATFORM", default_value = "linux/amd64")]
    pub default_platform: PlatformSpec,
    /// How long a tag's lookup is cached.
    #[arg(long, env = "REGISTRY_CACHE_TTL", default_value = "10m", value_parser = parse_duration)]
    pub registry_cache_ttl: Duration,
    /// Cache lifetime for `:latest` and `imagePullPolicy: Always`.
    #[arg(long, env = "REGISTRY_CACHE_LATEST_TTL", default_value = "30s", value_parser = parse_duration)]
    pub registry_cache_latest_ttl: Duration,
    /// Cache lifetime of not-found and authentication failures.
    #[arg(long, env = "REGISTRY_NEGATIVE_CACHE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub registry_negative_cache_ttl: Duration,
    /// Most entries the lookup cache holds.
    #[arg(long, env = "REGISTRY_CACHE_MAX_ENTRIES", default_value_t = 4096)]
    pub registry_cache_max_entries: usize,
    /// Most bytes the lookup cache accounts to its entries.
    #[arg(long, env = "REGISTRY_CACHE_MAX_BYTES", default_value_t = 8 << 20)]
    pub registry_cache_max_bytes: usize,
}

/// Parses `250ms`, `3s`, `10m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 3s, 500ms, 10m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!(
            "invalid duration {text:?}: unit must be ms, s, m or h"
        )),
    }
}

/// Validated settings of the registry lookup.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub tls: TlsSettings,
    pub defaults: DefaultPullSecrets,
    pub mirrors: Vec<MirrorRule>,
    /// Deadline of one lookup.
    pub timeout: Duration,
    /// What the webhook must do when `resolve` fails (see the module docs).
    pub on_failure: FailurePolicy,
    pub default_platform: Platform,
    pub tag_ttl: Duration,
    pub latest_ttl: Duration,
    pub negative_ttl: Duration,
    pub cache_limits: CacheLimits,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            tls: TlsSettings::default(),
            defaults: DefaultPullSecrets::default(),
            mirrors: Vec::new(),
            timeout: Duration::from_secs(3),
            on_failure: FailurePolicy::Deny,
            default_platform: Platform {
                os: "linux".to_owned(),
                architecture: "amd64".to_owned(),
            },
            tag_ttl: Duration::from_secs(600),
            latest_ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(10),
            cache_limits: CacheLimits {
                max_entries: 4096,
                max_bytes: 8 << 20,
            },
        }
    }
}

/// The registry settings could not be turned into a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read registry CA file {path}")]
    ReadCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registry timeout must be between 1 ms and 30 s")]
    Timeout,
    #[error("build registry client")]
    BuildClient(#[from] client::BuildClientError),
}

impl RegistryArgs {
    /// Validates the flags and reads the CA bundle.
    pub fn to_config(&self) -> Result<RegistryConfig, ConfigError> {
        if self.registry_timeout.is_zero() || self.registry_timeout > Duration::from_secs(30) {
            return Err(ConfigError::Timeout);
        }
        let ca_bundle_pem = match &self.registry_ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|source| ConfigError::ReadCaFile {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        Ok(RegistryConfig {
            tls: TlsSettings {
                skip_verify: self.registry_skip_verify,
                ca_bundle_pem,
            },
            defaults: DefaultPullSecrets {
                secret: self.default_image_pull_secret.clone(),
                namespace: self.default_image_pull_secret_namespace.clone(),
                service_account: self.default_image_pull_secret_service_account.clone(),
            },
            mirrors: self.registry_mirrors.clone(),
            timeout: self.registry_timeout,
            on_failure: self.registry_failure_policy,
            default_platform: self.default_platform.0.clone(),
            tag_ttl: self.registry_cache_ttl,
            latest_ttl: self.registry_cache_latest_ttl,
            negative_ttl: self.registry_negative_cache_ttl,
            cache_limits: CacheLimits {
                max_entries: self.registry_cache_max_entries,
                max_bytes: self.registry_cache_max_bytes,
            },
        })
    }
}

/// Whose lookups may see a cache entry.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Scope {
    /// Fetched anonymously: anyone may use it.
    Public,
    /// Fetched with credentials from this namespace (or the operator's defaults).
    Namespace(String),
    /// A failure, remembered only for lookups with exactly these credential sources.
    Requester {
        namespace: String,
        pull_secrets: Vec<String>,
        service_account: String,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct CacheKey {
    reference: String,
    platforms: Vec<Platform>,
    scope: Scope,
}

impl CacheKey {
    fn weight(&self) -> usize {
        let scope = match &self.scope {
            Scope::Public => 0,
            Scope::Namespace(ns) => ns.len(),
            Scope::Requester {
                namespace,
                pull_secrets,
                service_account,
            } => {
                namespace.len()
                    + service_account.len()
                    + pull_secrets.iter().map(String::len).sum::<usize>()
            }
        };
        self.reference.len()
            + scope
            + self
                .platforms
                .iter()
                .map(|p| p.os.len() + p.architecture.len())
                .sum::<usize>()
    }
}

#[derive(Clone, Debug)]
enum Cached {
    Found {
        entrypoint: Arc<ImageEntrypoint>,
        fetched: Instant,
    },
    Failed(Failure),
}

impl Cached {
    fn weight(&self) -> usize {
        // Fixed overhead per entry plus the strings it holds.
        64 + match self {
            Self::Found { entrypoint, .. } => entrypoint
                .entrypoint
                .iter()
                .chain(&entrypoint.cmd)
                .map(|s| s.len() + 24)
                .sum::<usize>(),
            Self::Failed(failure) => failure.message.len(),
        }
    }
}

/// A failed lookup, shareable between the waiters of one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure {
    message: String,
    cause: &'static str,
}

impl Failure {
    fn negative_cacheable(&self) -> bool {
        matches!(self.cause, "auth" | "not_found")
    }
}

impl From<FetchError> for Failure {
    fn from(error: FetchError) -> Self {
        Self {
            cause: error.cause(),
            message: error.to_string(),
        }
    }
}

fn invalid(host: &str, what: &str, reason: impl Into<String>) -> Failure {
    FetchError::Invalid {
        host: host.to_owned(),
        what: what.to_owned(),
        reason: reason.into(),
    }
    .into()
}

/// A successful fetch: the entrypoint, whether it needed credentials, the content digest.
#[derive(Clone, Debug)]
struct Fetched {
    entrypoint: Arc<ImageEntrypoint>,
    anonymous: bool,
    digest: String,
}

type FlightResult = Result<Fetched, Failure>;

/// The registry-backed [`ImageResolver`]. Cheap to clone.
#[derive(Clone)]
pub struct RegistryResolver {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    client: RegistryClient,
    source: Arc<dyn SecretSource>,
    cache: BoundedCache<CacheKey, Cached>,
    flights: SingleFlight<CacheKey, FlightResult>,
    metrics: RegistryMetrics,
}

impl RegistryResolver {
    /// Builds the resolver; `source` reads pull secrets and ServiceAccounts.
    pub fn new(config: RegistryConfig, source: Arc<dyn SecretSource>) -> Result<Self, ConfigError> {
        let client = RegistryClient::new(&config.tls, config.timeout)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cache: BoundedCache::new(config.cache_limits),
                flights: SingleFlight::new(),
                metrics: RegistryMetrics::default(),
                client,
                source,
                config,
            }),
        })
    }

    /// Builds the resolver reading pull secrets through the webhook's in-cluster client.
    pub fn with_kube_client(
        config: RegistryConfig,
        client: kube::Client,
    ) -> Result<Self, ConfigError> {
        Self::new(config, Arc::new(credentials::KubeSecretSource::new(client)))
    }

    /// The lookup's metrics, to register in the webhook's Prometheus registry.
    pub fn metrics(&self) -> &RegistryMetrics {
        &self.inner.metrics
    }

    /// The operator's failure policy (how the webhook must treat a failed `resolve`).
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.config.on_failure
    }

    /// The validated settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Stores a known result, as a successful anonymous fetch would (used by the bench to
    /// measure the hit path without a registry).
    pub fn prime(
        &self,
        lookup: &ImageLookup,
        entrypoint: ImageEntrypoint,
    ) -> Result<(), ImageError> {
        let prepared = self.inner.prepare(lookup)?;
        let fetched = Fetched {
            entrypoint: Arc::new(entrypoint),
            anonymous: true,
            digest: String::new(),
        };
        self.inner
            .store(&prepared, lookup, &Ok(fetched), Instant::now());
        Ok(())
    }

    async fn lookup(&self, lookup: &ImageLookup) -> Result<ImageEntrypoint, ImageError> {
        let started = Instant::now();
        let inner = &self.inner;
        let prepared = match inner.prepare(lookup) {
            Ok(p) => p,
            Err(error) => {
                inner.metrics.count_error("reference");
                inner.metrics.observe_lookup("error", started.elapsed());
                return Err(error);
            }
        };
        match inner.probe(&prepared, lookup, started) {
            Some(Ok(entrypoint)) => {
                inner.metrics.observe_lookup("hit", started.elapsed());
                return Ok(entrypoint);
            }
            Some(Err(failure)) => {
                inner.metrics.observe_lookup("error", started.elapsed());
                return Err(lookup_error(lookup, &failure));
            }
            None => {}
        }
        let flight_key = prepared.key(Scope::Requester {
            namespace: lookup.namespace.clone(),
            pull_secrets: lookup.image_pull_secrets.clone(),
            service_account: lookup.service_account.clone(),
        });
        let work = {
            let inner = Arc::clone(inner);
            let lookup = lookup.clone();
            let prepared = prepared.clone();
            async move {
                let result = inner.fetch_bounded(&lookup, &prepared).await;
                inner.store(&prepared, &lookup, &result, Instant::now());
                if let Err(failure) = &result {
                    inner.metrics.count_error(failure.cause);
                }
                result
            }
        };
        let panicked = || {
            Err(Failure {
                message: "registry lookup task failed".to_owned(),
                cause: "internal",
            })
        };
        // A little grace over the fetch's own deadline so that its message (which names
        // the registry) wins; this outer bound only matters if the runtime is starved.
        let grace = Duration::from_millis(50);
        let outcome = tokio::time::timeout(
            inner.config.timeout + grace,
            inner.flights.run(flight_key, work, panicked),
        )
        .await;
        match outcome {
            Ok(Ok(fetched)) => {
                inner.metrics.observe_lookup("miss", started.elapsed());
                Ok((*fetched.entrypoint).clone())
            }
            Ok(Err(failure)) => {
                inner.metrics.observe_lookup("error", started.elapsed());
                Err(lookup_error(lookup, &failure))
            }
            Err(_) => {
                inner.metrics.observe_lookup("error", started.elapsed());
                Err(ImageError::Timeout {
                    image: lookup.image.clone(),
                    millis: u64::try_from(inner.config.timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        }
    }
}

impl ImageResolver for RegistryResolver {
    fn resolve<'a>(&'a self, lookup: &'a ImageLookup) -> ResolveFuture<'a> {
        Box::pin(self.lookup(lookup))
    }
}

fn lookup_error(lookup: &ImageLookup, failure: &Failure) -> ImageError {
    ImageError::Lookup {
        image: lookup.image.clone(),
        reason: failure.message.clone(),
    }
}

/// A lookup after parsing: what to fetch and for which platforms.
#[derive(Clone, Debug)]
struct Prepared {
    image: ImageRef,
    platforms: Vec<Platform>,
}

impl Prepared {
    fn key(&self, scope: Scope) -> CacheKey {
        CacheKey {
            reference: self.image.to_string(),
            platforms: self.platforms.clone(),
            scope,
        }
    }

    fn digest_key(&self, digest: &str, scope: Scope) -> CacheKey {
        CacheKey {
            reference: self.image.with_digest(digest).to_string(),
            platforms: self.platforms.clone(),
            scope,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize)]
struct ConfigDoc {
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Deserialize)]
struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

impl Inner {
    fn prepare(&self, lookup: &ImageLookup) -> Result<Prepared, ImageError> {
        let parsed = ImageRef::parse(&lookup.image).map_err(|e| ImageError::Lookup {
            image: lookup.image.clone(),
            reason: e.to_string(),
        })?;
        let image = reference::apply_mirrors(&self.config.mirrors, &parsed);
        let mut platforms = if lookup.platforms.is_empty() {
            vec![self.config.default_platform.clone()]
        } else {
            lookup.platforms.clone()
        };
        platforms.sort();
        platforms.dedup();
        Ok(Prepared { image, platforms })
    }

    /// How long a positive result may be used for this lookup (`None`: forever).
    fn ttl(&self, prepared: &Prepared, lookup: &ImageLookup) -> Option<Duration> {
        if prepared.image.digest.is_some() {
            None
        } else if prepared.image.is_latest() || lookup.image_pull_policy == "Always" {
            Some(self.config.latest_ttl)
        } else {
            Some(self.config.tag_ttl)
        }
    }

    /// A cached answer: positive (public or this namespace's) or this requester's failure.
    fn probe(
        &self,
        prepared: &Prepared,
        lookup: &ImageLookup,
        now: Instant,
    ) -> Option<Result<ImageEntrypoint, Failure>> {
        let ttl = self.ttl(prepared, lookup);
        let scopes = [
            Scope::Public,
            Scope::Namespace(lookup.namespace.clone()),
            Scope::Requester {
                namespace: lookup.namespace.clone(),
                pull_secrets: lookup.image_pull_secrets.clone(),
                service_account: lookup.service_account.clone(),
            },
        ];
        let reference = prepared.image.to_string();
        for scope in scopes {
            let key = CacheKey {
                reference: reference.clone(),
                platforms: prepared.platforms.clone(),
                scope,
            };
            match self.cache.get(&key, now) {
                Some(Cached::Found {
                    entrypoint,
                    fetched,
                }) if ttl.is_none_or(|ttl| now.duration_since(fetched) < ttl) => {
                    return Some(Ok((*entrypoint).clone()));
                }
                Some(Cached::Failed(failure)) => return Some(Err(failure)),
                _ => {}
            }
        }
        None
    }

    fn store(
        &self,
        prepared: &Prepared,
        lookup: &ImageLookup,
        result: &FlightResult,
        now: Instant,
    ) {
        match result {
            Ok(fetched) => {
                let scope = if fetched.anonymous {
                    Scope::Public
                } else {
                    Scope::Namespace(lookup.namespace.clone())
                };
                let value = Cached::Found {
                    entrypoint: Arc::clone(&fetched.entrypoint),
                    fetched: now,
                };
                // Stored with the longest TTL any lookup may use; shorter ones (`Always`)
                // are enforced on read from `fetched`.
                let ttl = if prepared.image.digest.is_some() {
                    None
                } else if prepared.image.is_latest() {
                    Some(self.config.latest_ttl)
                } else {
                    Some(self.config.tag_ttl.max(self.config.latest_ttl))
                };
                let key = prepared.key(scope.clone());
                self.cache.insert(
                    key.clone(),
                    value.clone(),
                    key.weight() + value.weight(),
                    ttl,
                    now,
                );
                if prepared.image.digest.is_none() && !fetched.digest.is_empty() {
                    let key = prepared.digest_key(&fetched.digest, scope);
                    self.cache.insert(
                        key.clone(),
                        value.clone(),
                        key.weight() + value.weight(),
                        None,
                        now,
                    );
                }
            }
            Err(failure) if failure.negative_cacheable() => {
                let key = prepared.key(Scope::Requester {
                    namespace: lookup.namespace.clone(),
                    pull_secrets: lookup.image_pull_secrets.clone(),
                    service_account: lookup.service_account.clone(),
                });
                let value = Cached::Failed(failure.clone());
                self.cache.insert(
                    key.clone(),
                    value.clone(),
                    key.weight() + value.weight(),
                    Some(self.config.negative_ttl),
                    now,
                );
            }
            Err(_) => {}
        }
        self.metrics.set_cache_entries(self.cache.len());
    }

    async fn fetch_bounded(&self, lookup: &ImageLookup, prepared: &Prepared) -> FlightResult {
        match tokio::time::timeout(self.config.timeout, self.fetch(lookup, prepared)).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                message: format!(
                    "registry {} did not answer within {} ms",
                    prepared.image.endpoint_host(),
                    self.config.timeout.as_millis()
                ),
                cause: "timeout",
            }),
        }
    }

    /// Tries every matching credential (or none) until one resolves the image.
    async fn fetch(&self, lookup: &ImageLookup, prepared: &Prepared) -> FlightResult {
        let image = &prepared.image;
        let credentials = credentials::collect(
            self.source.as_ref(),
            lookup,
            &self.config.defaults,
            &image.registry,
            &image.repository,
        )
        .await;
        let attempts: Vec<Option<&Credential>> = if credentials.is_empty() {
            vec![None]
        } else {
            credentials.iter().map(Some).collect()
        };
        let mut last: Option<Failure> = None;
        for credential in &attempts {
            let mut session = Session::new(*credential);
            match self.fetch_with(&mut session, lookup, prepared).await {
                Ok((entrypoint, digest)) => {
                    if let Some(cred) = credential {
                        tracing::debug!(image = %image, secret = %cred.origin, "resolved with pull secret");
                    }
                    return Ok(Fetched {
                        entrypoint: Arc::new(entrypoint),
                        anonymous: credential.is_none(),
                        digest,
                    });
                }
                Err(FetchFailure::Fetch(error)) if error.is_auth_or_not_found() => {
                    if let Some(cred) = credential {
                        tracing::debug!(image = %image, secret = %cred.origin, %error, "pull secret did not work; trying the next");
                    }
                    last = Some(error.into());
                }
                Err(FetchFailure::Fetch(error)) => return Err(error.into()),
                Err(FetchFailure::Other(failure)) => return Err(failure),
            }
        }
        let mut failure = last.unwrap_or_else(|| Failure {
            message: "no lookup attempted".to_owned(),
            cause: "internal",
        });
        if !credentials.is_empty() {
            let origins: Vec<&str> = credentials.iter().map(|c| c.origin.as_str()).collect();
            failure.message = format!(
                "{} (tried {} credential(s) from {})",
                failure.message,
                credentials.len(),
                origins.join(", ")
            );
        }
        Err(failure)
    }

    /// Resolves with one session: top manifest, platform manifests, configs.
    async fn fetch_with(
        &self,
        session: &mut Session<'_>,
        lookup: &ImageLookup,
        prepared: &Prepared,
    ) -> Result<(ImageEntrypoint, String), FetchFailure> {
        let image = &prepared.image;
        let host = image.endpoint_host();
        let top = self
            .client
            .manifest(session, image, image.manifest_reference())
            .await?;
        // Content already resolved under another tag or before this tag's TTL ran out.
        if image.digest.is_none() {
            for scope in [Scope::Public, Scope::Namespace(lookup.namespace.clone())] {
                if let Some(Cached::Found { entrypoint, .. }) = self
                    .cache
                    .get(&prepared.digest_key(&top.digest, scope), Instant::now())
                {
                    return Ok(((*entrypoint).clone(), top.digest));
                }
            }
        }
        let doc = parse_manifest(host, &top.body)?;
        let entrypoint = match (doc.manifests, doc.config) {
            (Some(entries), _) => self.resolve_index(session, prepared, &entries).await?,
            (None, Some(config)) => self.config_of(session, image, &config.digest).await?,
            (None, None) => {
                return Err(invalid(
                    host,
                    "manifest",
                    format!(
                        "media type {:?} has neither manifests nor config",
                        top.media_type
                    ),
                )
                .into());
            }
        };
        Ok((entrypoint, top.digest))
    }

    async fn resolve_index(
        &self,
        session: &mut Session<'_>,
        prepared: &Prepared,
        entries: &[IndexEntry],
    ) -> Result<ImageEntrypoint, FetchFailure> {
        let image = &prepared.image;
        let host = image.endpoint_host();
        let selected = platform::select(entries, &prepared.platforms);
        if selected.is_empty() {
            let wanted: Vec<String> = prepared
                .platforms
                .iter()
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            return Err(FetchFailure::Other(Failure {
                message: format!(
                    "image index has no manifest for {} (it offers {})",
                    wanted.join(", "),
                    platform::available(entries).join(", ")
                ),
                cause: "platform",
            }));
        }
        let mut by_digest: HashMap<String, ImageEntrypoint> = HashMap::new();
        let mut candidates = Vec::with_capacity(selected.len());
        for (platform, entry) in selected {
            let entrypoint = match by_digest.get(&entry.digest) {
                Some(known) => known.clone(),
                None => {
                    let manifest = self.client.manifest(session, image, &entry.digest).await?;
                    let doc = parse_manifest(host, &manifest.body)?;
                    let Some(config) = doc.config else {
                        return Err(invalid(
                            host,
                            "platform manifest",
                            "nested index or no config",
                        )
                        .into());
                    };
                    let found = self.config_of(session, image, &config.digest).await?;
                    by_digest.insert(entry.digest.clone(), found.clone());
                    found
                }
            };
            candidates.push((platform, entrypoint));
        }
        match platform::agree(candidates) {
            Ok(Some(entrypoint)) => Ok(entrypoint),
            Ok(None) => Err(invalid(host, "image index", "no candidate manifest").into()),
            Err(disagreement) => Err(FetchFailure::Other(Failure {
                message: format!("the pod's platforms disagree on the command: {disagreement}"),
                cause: "platform",
            })),
        }
    }

    async fn config_of(
        &self,
        session: &mut Session<'_>,
        image: &ImageRef,
        digest: &str,
    ) -> Result<ImageEntrypoint, FetchFailure> {
        let host = image.endpoint_host();
        let body = self.client.blob(session, image, digest).await?;
        let doc: ConfigDoc = serde_json::from_slice(&body)
            .map_err(|e| invalid(host, "image config", e.to_string()))?;
        let run = doc.config.unwrap_or(RunConfig {
            entrypoint: None,
            cmd: None,
        });
        Ok(ImageEntrypoint {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
        })
    }
}

enum FetchFailure {
    Fetch(FetchError),
    Other(Failure),
}

impl From<FetchError> for FetchFailure {
    fn from(error: FetchError) -> Self {
        Self::Fetch(error)
    }
}

impl From<Failure> for FetchFailure {
    fn from(failure: Failure) -> Self {
        Self::Other(failure)
    }
}

fn parse_manifest(host: &str, body: &[u8]) -> Result<ManifestDoc, Failure> {
    let doc: ManifestDoc =
        serde_json::from_slice(body).map_err(|e| invalid(host, "manifest", e.to_string()))?;
    if doc.schema_version != 2 {
        return Err(invalid(
            host,
            "manifest",
            format!(
                "schema version {} is not supported (only 2)",
                doc.schema_version
            ),
        ));
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        registry: RegistryArgs,
    }

    #[test]
    fn parse_duration_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn registry_args_defaults_and_flags_parse() {
        let cli = Cli::try_parse_from(["webhook"]).expect("defaults");
        let config = cli.registry.to_config().expect("config");
        assert_eq!(config.timeout, Duration::from_secs(3));
        assert_eq!(config.on_failure, FailurePolicy::Deny);
        assert_eq!(config.default_platform.architecture, "amd64");
        let cli = Cli::try_parse_from([
            "webhook",
            "--registry-mirror",
            "docker.io=registry.local:5000,quay.io=registry.local:5000/quay",
            "--registry-timeout",
            "800ms",
            "--registry-failure-policy",
            "admit-unmutated",
            "--default-platform",
            "linux/arm64",
            "--registry-skip-verify",
            "true",
            "--default-image-pull-secret",
            "regcred",
        ])
        .expect("flags");
        let config = cli.registry.to_config().expect("config");
        assert_eq!(config.mirrors.len(), 2);
        assert_eq!(config.timeout, Duration::from_millis(800));
        assert_eq!(config.on_failure, FailurePolicy::AdmitUnmutated);
        assert_eq!(config.default_platform.architecture, "arm64");
        assert!(config.tls.skip_verify);
        assert_eq!(config.defaults.secret.as_deref(), Some("regcred"));
    }

    #[test]
    fn registry_args_bad_values_rejected() {
        assert!(Cli::try_parse_from(["webhook", "--registry-mirror", "nonsense"]).is_err());
        assert!(Cli::try_parse_from(["webhook", "--default-platform", "amd64"]).is_err());
        assert!(Cli::try_parse_from(["webhook", "--registry-failure-policy", "allow"]).is_err());
        let cli = Cli::try_parse_from(["webhook", "--registry-timeout", "0s"]).expect("parses");
        assert!(matches!(
            cli.registry.to_config(),
            Err(ConfigError::Timeout)
        ));
        let cli = Cli::try_parse_from(["webhook", "--registry-ca-file", "/nonexistent/ca.pem"])
            .expect("parses");
        assert!(matches!(
            cli.registry.to_config(),
            Err(ConfigError::ReadCaFile { .. })
        ));
    }

    #[test]
    fn failure_policy_on_error_names_image_and_cause() {
        let error = ImageError::Lookup {
            image: "registry.local/app:1".to_owned(),
            reason: "connect to registry registry.local: connection refused".to_owned(),
        };
        let FailureAction::Deny(message) = FailurePolicy::Deny.on_error(&error) else {
            panic!("deny expected");
        };
        assert!(message.contains("registry.local/app:1") && message.contains("connection refused"));
        assert!(message.contains(LOOKUP_ANNOTATION), "{message}");
        let FailureAction::AdmitWithWarning(warning) =
            FailurePolicy::AdmitUnmutated.on_error(&error)
        else {
            panic!("warning expected");
        };
        assert!(
            warning.contains("registry.local/app:1") && warning.contains("without Vault injection")
        );
    }

    #[test]
    fn lookup_enabled_only_false_opts_out() {
        assert!(lookup_enabled(None));
        let map = |v: &str| BTreeMap::from([(LOOKUP_ANNOTATION.to_owned(), v.to_owned())]);
        assert!(!lookup_enabled(Some(&map("false"))));
        assert!(!lookup_enabled(Some(&map(" False "))));
        assert!(lookup_enabled(Some(&map("true"))));
        assert!(lookup_enabled(Some(&BTreeMap::new())));
    }
}
