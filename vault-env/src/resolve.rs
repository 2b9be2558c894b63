//! Resolution: turns the process environment into the app's environment by replacing every
//! `vault:` reference with its value.
//!
//! The work is planned before any request is sent: every value is parsed, references are
//! grouped by [`ReadKey`] (path and version), writes by [`WriteKey`] (path and body) and
//! transit ciphertexts by their text; then all reads, writes and transit batches are issued
//! at once and awaited together. So one login plus one request per distinct `path#version`,
//! however many variables use it, and a dynamic secret's username and password come from the
//! same lease.
//!
//! # Rules
//!
//! - **KV version detection, no extra request.** A read answer whose `data` object has both
//!   a `data` member (object or null) and a `metadata` object is a KV v2 answer and is
//!   unwrapped to `data.data`; any other answer's `data` is taken as is (KV v1, dynamic
//!   secrets). Bank-Vaults asks `sys/internal/ui/mounts/PATH` first, one more request per
//!   path; the shape of the answer tells the same without it. The one documented limit: a
//!   KV v1 secret whose own keys include both `data` and `metadata` (an object) is read as
//!   if it were v2. A version is sent as `?version=N`.
//! - **Missing secrets.** "Missing" means: Vault answers 404 for the path, a KV v2 version
//!   is deleted or destroyed (its `data.data` is null), or the key (or a key a template
//!   reads) is absent. With `VAULT_IGNORE_MISSING_SECRETS=true` the variable using it is
//!   left out of the app's environment, with one warning naming the variable and the
//!   reference; an inline value with one missing reference is left out whole. Everything
//!   else (403, 5xx, a malformed template, a failed transit decryption) always fails.
//! - **`VAULT_ENV_FROM_PATH`.** Every key of each listed secret becomes a variable,
//!   appended after the other variables; a variable already in the environment wins over
//!   a key of the same name. Keys that are not valid variable names fail.
//! - **`vault:login`** is honoured for `VAULT_TOKEN` only, and only when
//!   `VAULT_TOKEN=vault:login` asked for it; elsewhere it is an error.
//!
//! # Security
//!
//! Values are attacker-controlled references; they only ever become request paths (the
//! grammar rejects `..`, `?`, `%` and white space) and bodies. Secret answers are parsed from
//! zeroizing buffers into [`SecretJson`]; values are assembled in zeroizing buffers of exact
//! size. Every error names the variable and the reference, never a value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use base64::Engine;
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use crate::auth::VaultToken;
use crate::client::{ClientError, Method, Request, Transport};
use crate::config::Config;
use crate::reference::{
    self, EnvValue, ReadKey, ReferenceError, SecretRef, Segment, Selector, WriteKey,
};
use crate::secret::SecretJson;
use crate::template::TemplateError;

/// A failure to resolve one variable. Every message names the variable and the reference.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The value looks like a reference but does not parse.
    #[error("variable {var}: invalid reference")]
    ParseReference {
        /// The variable.
        var: String,
        /// Why.
        #[source]
        source: ReferenceError,
    },
    /// A read or write request failed.
    #[error("variable {var}: {reference}")]
    Request {
        /// The variable.
        var: String,
        /// The reference.
        reference: String,
        /// Vault's answer or the transport failure.
        #[source]
        source: ClientError,
    },
    /// Vault has no secret at the path (404, or a deleted KV v2 version).
    #[error("variable {var}: {reference}: no secret at this path")]
    MissingSecret {
        /// The variable.
        var: String,
        /// The reference.
        reference: String,
    },
    /// The secret has no such key.
    #[error("variable {var}: {reference}: key {key:?} not found in the secret")]
    MissingKey {
        /// The variable.
        var: String,
        /// The reference.
        reference: String,
        /// The missing key.
        key: String,
    },
    /// The key template failed to render.
    #[error("variable {var}: {reference}: render the key template")]
    RenderTemplate {
        /// The variable.
        var: String,
        /// The reference.
        reference: String,
        /// Why (names keys and functions, never values).
        #[source]
        source: TemplateError,
    },
    /// Vault's answer is not a JSON object with `data`.
    #[error("variable {var}: {reference}: Vault's answer has no data object")]
    BadAnswer {
        /// The variable.
        var: String,
        /// The reference.
        reference: String,
    },
    /// `vault:login` outside `VAULT_TOKEN=vault:login`.
    #[error("variable {var}: vault:login is only honoured as VAULT_TOKEN=vault:login")]
    LoginNotAllowed {
        /// The variable.
        var: String,
    },
    /// A transit ciphertext with no `VAULT_TRANSIT_KEY_ID`.
    #[error(
        "variable {var}: transit ciphertext {reference} found but VAULT_TRANSIT_KEY_ID is not set"
    )]
    TransitKeyMissing {
        /// The variable.
        var: String,
        /// The ciphertext (not secret).
        reference: String,
    },
    /// Vault could not decrypt a ciphertext.
    #[error("variable {var}: decrypt {reference} with transit key {key}: {reason}")]
    Decrypt {
        /// The variable.
        var: String,
        /// The ciphertext (shortened).
        reference: String,
        /// The transit key id.
        key: String,
        /// Vault's per-item error, or what is wrong with the answer.
        reason: String,
    },
    /// A `VAULT_ENV_FROM_PATH` key cannot be a variable name.
    #[error("VAULT_ENV_FROM_PATH {reference}: key {key:?} is not a valid variable name")]
    BadVariableName {
        /// The path.
        reference: String,
        /// The key.
        key: String,
    },
}

/// One variable of the app's environment. `Debug` prints the name only.
pub struct EnvVar {
    /// The name.
    pub name: OsString,
    /// The value, wiped on drop.
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvVar({:?}=<redacted>)", self.name)
    }
}

/// A lease vault-env obtained while reading (a dynamic secret), for a daemon to renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The read that produced it.
    pub read: ReadKey,
    /// Vault's lease id (an identifier, not a credential).
    pub lease_id: String,
    /// The lease duration.
    pub ttl: Duration,
    /// Whether it can be renewed.
    pub renewable: bool,
}

/// The app's environment, in the original order, and the leases behind it.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The variables to pass to the app.
    pub vars: Vec<EnvVar>,
    /// Leases of dynamic secrets read.
    pub leases: Vec<Lease>,
    /// Variables dropped under `VAULT_IGNORE_MISSING_SECRETS`.
    pub dropped: Vec<String>,
}

impl Resolved {
    /// The environment of a plan that has no reference at all (nothing to fetch).
    pub fn from_plan_without_vault(plan: Plan) -> Resolved {
        let vars = plan
            .planned
            .into_iter()
            .filter_map(|p| match p {
                Planned::Keep(name, raw) => Some(EnvVar {
                    name,
                    value: Zeroizing::new(raw.as_bytes().to_vec()),
                }),
                Planned::Value { .. } => None,
            })
            .collect();
        Resolved {
            vars,
            ..Resolved::default()
        }
    }
}

/// What the environment asked for, before anything is fetched.
enum Planned {
    Keep(OsString, OsString),
    Value { var: String, value: EnvValue },
}

/// The outcome of one read or write.
enum Fetched {
    Found { root: SecretJson, kv_unwrap: bool },
    Missing,
    Failed(Option<ClientError>),
}

impl Fetched {
    fn from_answer(answer: Result<Zeroizing<Vec<u8>>, ClientError>, kv_unwrap: bool) -> Self {
        match answer {
            Err(error) if error.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                Fetched::Missing
            }
            Err(error) => Fetched::Failed(Some(error)),
            Ok(body) if body.is_empty() => Fetched::Found {
                root: SecretJson::Object(BTreeMap::new()),
                kv_unwrap,
            },
            // A body that does not parse is kept as Null; the selector then reports it.
            Ok(body) => Fetched::Found {
                root: SecretJson::from_slice(&body).unwrap_or_default(),
                kv_unwrap,
            },
        }
    }

    /// The data map references select from, `None` for a deleted KV v2 version.
    fn data(&self) -> Option<Option<&SecretJson>> {
        let Fetched::Found { root, kv_unwrap } = self else {
            return None;
        };
        let data = root.get("data");
        if *kv_unwrap && let Some(data) = data {
            let inner = data.get("data");
            let metadata = data.get("metadata");
            if let (Some(inner), Some(SecretJson::Object(_))) = (inner, metadata) {
                return match inner {
                    SecretJson::Null => None,
                    inner => Some(Some(inner)),
                };
            }
        }
        Some(data)
    }
}

/// Why a selection produced no value.
enum SelectError {
    Missing,
    MissingKey(String),
    BadAnswer,
    Template(TemplateError),
    Failed(ClientError),
    AlreadyReported,
}

/// The parsed environment and the requests it needs; built before logging in, so a
/// malformed reference costs no Vault request. A daemon can keep a plan and fetch it again.
pub struct Plan {
    planned: Vec<Planned>,
    reads: Vec<ReadKey>,
    writes: Vec<WriteKey>,
    ciphertexts: Vec<String>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("variables", &self.planned.len())
            .field("reads", &self.reads)
            .field("writes", &self.writes.len())
            .field("ciphertexts", &self.ciphertexts.len())
            .finish()
    }
}

impl Plan {
    /// Parses every value of `environ` (in order) and collects the distinct reads, writes
    /// and ciphertexts. Variables that `config` strips are left out.
    pub fn new(config: &Config, environ: Vec<(OsString, OsString)>) -> Result<Plan, ResolveError> {
        let mut planned = Vec::with_capacity(environ.len());
        let mut reads: Vec<ReadKey> = Vec::new();
        let mut writes: Vec<WriteKey> = Vec::new();
        let mut ciphertexts: Vec<String> = Vec::new();
        let mut seen_reads = HashSet::new();
        let mut seen_writes = HashSet::new();
        let mut seen_ciphertexts = HashSet::new();
        for (name, raw) in environ {
            let Some(var) = name.to_str().map(str::to_owned) else {
                planned.push(Planned::Keep(name, raw));
                continue;
            };
            if config.strips(&var) {
                continue;
            }
            let Some(text) = raw.to_str() else {
                planned.push(Planned::Keep(name, raw));
                continue;
            };
            let value = reference::parse(text).map_err(|source| ResolveError::ParseReference {
                var: var.clone(),
                source,
            })?;
            match &value {
                EnvValue::Plain => {
                    planned.push(Planned::Keep(name, raw));
                    continue;
                }
                EnvValue::Login => {
                    if !(var == "VAULT_TOKEN" && config.token_for_app) {
                        return Err(ResolveError::LoginNotAllowed { var });
                    }
                }
                EnvValue::Secret(_) | EnvValue::Inline(_) => {
                    for secret in value.secret_refs() {
                        let key = secret.read_key();
                        if seen_reads.insert(key.clone()) {
                            reads.push(key);
                        }
                    }
                }
                EnvValue::Write(write) => {
                    let key = write.write_key();
                    if seen_writes.insert(key.clone()) {
                        writes.push(key);
                    }
                }
                EnvValue::Transit(transit) => {
                    if config.transit_key_id.is_none() {
                        return Err(ResolveError::TransitKeyMissing {
                            var,
                            reference: shorten(&transit.ciphertext),
                        });
                    }
                    if seen_ciphertexts.insert(transit.ciphertext.clone()) {
                        ciphertexts.push(transit.ciphertext.clone());
                    }
                }
            }
            planned.push(Planned::Value { var, value });
        }
        for key in &config.from_path {
            if seen_reads.insert(key.clone()) {
                reads.push(key.clone());
            }
        }
        Ok(Plan {
            planned,
            reads,
            writes,
            ciphertexts,
        })
    }

    /// The distinct reads this plan issues, in first-use order.
    pub fn reads(&self) -> &[ReadKey] {
        &self.reads
    }

    /// Whether any variable needs Vault at all.
    pub fn needs_vault(&self) -> bool {
        !self.reads.is_empty()
            || !self.writes.is_empty()
            || !self.ciphertexts.is_empty()
            || self
                .planned
                .iter()
                .any(|p| matches!(p, Planned::Value { .. }))
    }
}

/// Resolves every reference in `environ` (in order) using `token`, as `config` says:
/// [`Plan::new`] followed by [`fetch`].
pub async fn resolve(
    transport: &Transport,
    token: &VaultToken,
    config: &Config,
    environ: Vec<(OsString, OsString)>,
) -> Result<Resolved, ResolveError> {
    let plan = Plan::new(config, environ)?;
    fetch(transport, token, config, plan).await
}

/// Issues every request of `plan` at once and assembles the app's environment in order.
pub async fn fetch(
    transport: &Transport,
    token: &VaultToken,
    config: &Config,
    plan: Plan,
) -> Result<Resolved, ResolveError> {
    let Plan {
        planned,
        reads,
        writes,
        ciphertexts,
    } = plan;

    // 2. Fetch: everything at once.
    let secret = &token.secret;
    let read_futures = reads.iter().map(|key| async move {
        let query: Vec<(&str, String)> = key
            .version
            .map(|v| vec![("version", v.to_string())])
            .unwrap_or_default();
        let answer = transport
            .send(Request {
                operation: "read",
                method: Method::Get,
                path: &key.path,
                query: &query,
                token: Some(secret),
                body: None,
            })
            .await;
        Fetched::from_answer(answer, true)
    });
    let write_futures = writes.iter().map(|key| async move {
        let answer = transport
            .send(Request {
                operation: "write",
                method: Method::Post,
                path: &key.path,
                query: &[],
                token: Some(secret),
                body: Some(key.body.as_bytes()),
            })
            .await;
        Fetched::from_answer(answer, false)
    });
    let transit = TransitPlan {
        key: config.transit_key_id.as_deref().unwrap_or_default(),
        path: format!(
            "{}/decrypt/{}",
            config.transit_path,
            config.transit_key_id.as_deref().unwrap_or_default()
        ),
    };
    let transit_futures = ciphertexts
        .chunks(config.transit_batch_size)
        .map(|batch| transit.decrypt(transport, secret, batch));
    let (read_results, write_results, transit_results) = futures::join!(
        futures::future::join_all(read_futures),
        futures::future::join_all(write_futures),
        futures::future::join_all(transit_futures),
    );
    let mut read_results: HashMap<ReadKey, Fetched> = reads.into_iter().zip(read_results).collect();
    let mut write_results: HashMap<WriteKey, Fetched> =
        writes.into_iter().zip(write_results).collect();
    let mut plaintexts: HashMap<String, Result<Zeroizing<Vec<u8>>, String>> = HashMap::new();
    for (batch, result) in ciphertexts
        .chunks(config.transit_batch_size)
        .zip(transit_results)
    {
        match result {
            Ok(items) => plaintexts.extend(batch.iter().cloned().zip(items)),
            Err(error) => {
                let reason = format!("{:#}", anyhow::Error::new(error));
                plaintexts.extend(batch.iter().map(|c| (c.clone(), Err(reason.clone()))));
            }
        }
    }

    // 3. Assemble, in the original order.
    let mut resolved = Resolved::default();
    for (key, fetched) in &read_results {
        if let Fetched::Found { root, .. } = fetched
            && let Some(lease) = lease_of(key, root)
        {
            resolved.leases.push(lease);
        }
    }
    let mut names: HashSet<OsString> = HashSet::new();
    for item in planned {
        let (var, value) = match item {
            Planned::Keep(name, raw) => {
                names.insert(name.clone());
                resolved.vars.push(EnvVar {
                    name,
                    value: Zeroizing::new(raw.as_bytes().to_vec()),
                });
                continue;
            }
            Planned::Value { var, value } => (var, value),
        };
        let reference = value.to_reference_string().unwrap_or_default();
        let outcome = match &value {
            EnvValue::Plain => continue,
            EnvValue::Login => Ok(Zeroizing::new(secret.expose_secret().as_bytes().to_vec())),
            EnvValue::Secret(secret_ref) => select_read(&mut read_results, secret_ref),
            EnvValue::Inline(segments) => inline(&mut read_results, segments),
            EnvValue::Write(write) => {
                let fetched = write_results.get_mut(&write.write_key());
                select(fetched, &write.selector)
            }
            EnvValue::Transit(transit) => match plaintexts.get(&transit.ciphertext) {
                Some(Ok(plain)) => Ok(plain.clone()),
                Some(Err(reason)) => {
                    return Err(ResolveError::Decrypt {
                        var,
                        reference: shorten(&transit.ciphertext),
                        key: transit_key(config),
                        reason: reason.clone(),
                    });
                }
                None => Err(SelectError::BadAnswer),
            },
        };
        match outcome {
            Ok(bytes) => {
                crate::hygiene::lock(&bytes);
                let name = OsString::from(var);
                names.insert(name.clone());
                resolved.vars.push(EnvVar { name, value: bytes });
            }
            Err(error) => {
                if let Some(error) = missing_or_error(config, &var, reference, error)? {
                    return Err(error);
                }
                resolved.dropped.push(var);
            }
        }
    }

    // 4. VAULT_ENV_FROM_PATH: every key of each path, after the rest.
    for key in &config.from_path {
        let reference = key.to_string();
        let var = "VAULT_ENV_FROM_PATH".to_owned();
        let fetched = read_results.get_mut(key);
        let data = match data_of(fetched) {
            Ok(data) => data,
            Err(error) => {
                if let Some(error) = missing_or_error(config, &var, reference, error)? {
                    return Err(error);
                }
                continue;
            }
        };
        let Some(map) = data.as_object() else {
            return Err(ResolveError::BadAnswer { var, reference });
        };
        for (name, value) in map {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(ResolveError::BadVariableName {
                    reference,
                    key: name.clone(),
                });
            }
            let name = OsString::from(name);
            if names.contains(&name) {
                tracing::debug!(variable = ?name, path = %reference, "VAULT_ENV_FROM_PATH key already set; keeping the variable");
                continue;
            }
            let text = value.to_env_string();
            let bytes = Zeroizing::new(text.as_bytes().to_vec());
            crate::hygiene::lock(&bytes);
            names.insert(name.clone());
            resolved.vars.push(EnvVar { name, value: bytes });
        }
    }
    Ok(resolved)
}

/// Maps a selection failure to `Ok(None)` (dropped under ignore-missing, warned) or the
/// error for `var`.
fn missing_or_error(
    config: &Config,
    var: &str,
    reference: String,
    error: SelectError,
) -> Result<Option<ResolveError>, ResolveError> {
    let var = var.to_owned();
    let error = match error {
        SelectError::Missing => ResolveError::MissingSecret { var, reference },
        SelectError::MissingKey(key) => ResolveError::MissingKey {
            var,
            reference,
            key,
        },
        SelectError::Template(TemplateError::MissingKey { key }) => ResolveError::MissingKey {
            var,
            reference,
            key,
        },
        SelectError::Template(source) => {
            return Ok(Some(ResolveError::RenderTemplate {
                var,
                reference,
                source,
            }));
        }
        SelectError::BadAnswer => return Ok(Some(ResolveError::BadAnswer { var, reference })),
        SelectError::Failed(source) => {
            return Ok(Some(ResolveError::Request {
                var,
                reference,
                source,
            }));
        }
        SelectError::AlreadyReported => {
            return Ok(Some(ResolveError::BadAnswer { var, reference }));
        }
    };
    if config.ignore_missing_secrets {
        tracing::warn!(error = %error, "VAULT_IGNORE_MISSING_SECRETS: leaving the variable out");
        Ok(None)
    } else {
        Ok(Some(error))
    }
}

/// The selected value of one read reference.
fn select_read(
    results: &mut HashMap<ReadKey, Fetched>,
    secret_ref: &SecretRef,
) -> Result<Zeroizing<Vec<u8>>, SelectError> {
    select(
        results.get_mut(&secret_ref.read_key()),
        &secret_ref.selector,
    )
}

/// An inline value: text and references concatenated into one exact-size buffer.
fn inline(
    results: &mut HashMap<ReadKey, Fetched>,
    segments: &[Segment],
) -> Result<Zeroizing<Vec<u8>>, SelectError> {
    let mut parts: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(segments.len());
    for segment in segments {
        parts.push(match segment {
            Segment::Text(text) => Zeroizing::new(text.as_bytes().to_vec()),
            Segment::Ref(secret_ref) => select_read(results, secret_ref)?,
        });
    }
    let mut out = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
    for part in &parts {
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// The data map of a fetched answer.
fn data_of(fetched: Option<&mut Fetched>) -> Result<&SecretJson, SelectError> {
    let Some(fetched) = fetched else {
        return Err(SelectError::BadAnswer);
    };
    if let Fetched::Failed(error) = fetched {
        return Err(match error.take() {
            Some(error) => SelectError::Failed(error),
            None => SelectError::AlreadyReported,
        });
    }
    match fetched.data() {
        None => Err(SelectError::Missing),
        Some(None) => Err(SelectError::BadAnswer),
        Some(Some(data)) => Ok(data),
    }
}

/// Applies a selector (key or template) to a fetched answer.
fn select(
    fetched: Option<&mut Fetched>,
    selector: &Selector,
) -> Result<Zeroizing<Vec<u8>>, SelectError> {
    let data = data_of(fetched)?;
    match selector {
        Selector::Key(key) => match data.get(key) {
            Some(value) => {
                let text = value.to_env_string();
                Ok(Zeroizing::new(text.as_bytes().to_vec()))
            }
            None if data.as_object().is_some() => Err(SelectError::MissingKey(key.clone())),
            None => Err(SelectError::BadAnswer),
        },
        Selector::Template(template) => template
            .render(data)
            .map(|text| Zeroizing::new(text.as_bytes().to_vec()))
            .map_err(SelectError::Template),
    }
}

/// The lease of a dynamic secret's answer, if it has one.
fn lease_of(key: &ReadKey, root: &SecretJson) -> Option<Lease> {
    let lease_id = root.get("lease_id")?.as_str()?;
    if lease_id.is_empty() {
        return None;
    }
    let ttl = root
        .get("lease_duration")
        .map(|d| d.to_env_string())
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(0);
    Some(Lease {
        read: key.clone(),
        lease_id: lease_id.to_owned(),
        ttl: Duration::from_secs(ttl),
        renewable: matches!(root.get("renewable"), Some(SecretJson::Bool(true))),
    })
}

fn transit_key(config: &Config) -> String {
    config.transit_key_id.clone().unwrap_or_default()
}

/// A ciphertext or reference cut to a readable length for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Transit decryption of ciphertext batches with one key.
struct TransitPlan<'a> {
    key: &'a str,
    path: String,
}

/// Why a whole transit batch failed.
#[derive(Debug, thiserror::Error)]
enum TransitError {
    #[error(transparent)]
    Request(ClientError),
    #[error("the answer has no batch_results list of the batch's length")]
    Answer,
}

impl TransitPlan<'_> {
    /// Decrypts one batch with `batch_input`; one result per ciphertext, in order.
    async fn decrypt(
        &self,
        transport: &Transport,
        token: &secrecy::SecretString,
        batch: &[String],
    ) -> Result<Vec<Result<Zeroizing<Vec<u8>>, String>>, TransitError> {
        let mut body = String::from("{\"batch_input\":[");
        for (i, ciphertext) in batch.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str("{\"ciphertext\":");
            crate::secret::write_json_string(ciphertext, &mut body);
            body.push('}');
        }
        body.push_str("]}");
        let answer = transport
            .send(Request {
                operation: "decrypt",
                method: Method::Post,
                path: &self.path,
                query: &[],
                token: Some(token),
                body: Some(body.as_bytes()),
            })
            .await
            .map_err(TransitError::Request)?;
        let root = SecretJson::from_slice(&answer).map_err(|_| TransitError::Answer)?;
        let results = match root.get("data").and_then(|d| d.get("batch_results")) {
            Some(SecretJson::Array(items)) if items.len() == batch.len() => items,
            _ => return Err(TransitError::Answer),
        };
        tracing::debug!(
            key = self.key,
            count = batch.len(),
            "decrypted transit batch"
        );
        Ok(results.iter().map(decode_plaintext).collect())
    }
}

/// One `batch_results` item: its base64 `plaintext` decoded, or its `error`.
fn decode_plaintext(item: &SecretJson) -> Result<Zeroizing<Vec<u8>>, String> {
    if let Some(error) = item.get("error").and_then(SecretJson::as_str)
        && !error.is_empty()
    {
        return Err(error.to_owned());
    }
    let encoded = item
        .get("plaintext")
        .and_then(SecretJson::as_str)
        .ok_or_else(|| "the answer has no plaintext".to_owned())?;
    let mut out = Zeroizing::new(Vec::with_capacity(encoded.len() / 4 * 3 + 3));
    base64::engine::general_purpose::STANDARD
        .decode_vec(encoded, &mut out)
        .map_err(|_| "the plaintext is not base64".to_owned())?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn found(json: &str, kv_unwrap: bool) -> Fetched {
        Fetched::Found {
            root: SecretJson::from_slice(json.as_bytes()).unwrap(),
            kv_unwrap,
        }
    }

    fn key(k: &str) -> Selector {
        Selector::Key(k.to_owned())
    }

    #[test]
    fn select_kv2_answer_is_unwrapped() {
        let mut f = found(
            r#"{"data":{"data":{"a":"1"},"metadata":{"version":2}}}"#,
            true,
        );
        assert_eq!(&select(Some(&mut f), &key("a")).ok().unwrap()[..], b"1");
    }

    #[test]
    fn select_kv1_answer_is_taken_as_is() {
        let mut f = found(r#"{"data":{"data":"x","a":"1"}}"#, true);
        assert_eq!(&select(Some(&mut f), &key("data")).ok().unwrap()[..], b"x");
    }

    #[test]
    fn select_deleted_kv2_version_is_missing() {
        let mut f = found(
            r#"{"data":{"data":null,"metadata":{"deletion_time":"x"}}}"#,
            true,
        );
        assert!(matches!(
            select(Some(&mut f), &key("a")),
            Err(SelectError::Missing)
        ));
    }

    #[test]
    fn select_absent_key_is_missing_key() {
        let mut f = found(r#"{"data":{"a":"1"}}"#, true);
        assert!(matches!(
            select(Some(&mut f), &key("b")),
            Err(SelectError::MissingKey(k)) if k == "b"
        ));
    }

    #[test]
    fn select_write_answer_is_not_unwrapped() {
        let mut f = found(r#"{"data":{"data":{"x":1},"metadata":{}}}"#, false);
        assert_eq!(
            &select(Some(&mut f), &key("data")).ok().unwrap()[..],
            br#"{"x":1}"#
        );
    }

    #[test]
    fn decode_plaintext_item_forms() {
        let ok = SecretJson::from_slice(br#"{"plaintext":"aGk="}"#).unwrap();
        assert_eq!(&decode_plaintext(&ok).unwrap()[..], b"hi");
        let err = SecretJson::from_slice(br#"{"error":"cipher: message authentication failed"}"#)
            .unwrap();
        assert!(
            decode_plaintext(&err)
                .unwrap_err()
                .contains("authentication")
        );
    }

    #[test]
    fn lease_of_dynamic_answer_is_recorded() {
        let root = SecretJson::from_slice(
            br#"{"lease_id":"database/creds/r/abc","lease_duration":3600,"renewable":true,"data":{}}"#,
        )
        .unwrap();
        let rk = ReadKey {
            path: "database/creds/r".into(),
            version: None,
        };
        let lease = lease_of(&rk, &root).unwrap();
        assert_eq!(lease.ttl, Duration::from_secs(3600));
        assert!(lease.renewable);
        let none = SecretJson::from_slice(br#"{"lease_id":"","data":{}}"#).unwrap();
        assert!(lease_of(&rk, &none).is_none());
    }
}
