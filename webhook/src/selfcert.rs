//! Self-managed TLS (`TLS_SELF_MANAGED=true`): the webhook makes its own CA and serving
//! certificate, keeps them in one `kubernetes.io/tls` Secret, patches the `caBundle` of every
//! webhook in its MutatingWebhookConfiguration and rotates the serving certificate (and, much
//! later, the CA) before it expires.
//!
//! Several replicas start at once and must end up with one CA: the Secret is the only source
//! of truth. A replica creates it only if it is absent (`POST`; a `409 AlreadyExists` means
//! another replica won, so it reads and uses theirs) and changes it only with a
//! `resourceVersion`-guarded `PUT` (a `409 Conflict` means another replica rotated first, so it
//! re-reads). Every replica serves whatever the Secret holds, so they converge on the next
//! check.
//!
//! The pair reaches the server through its existing file reload path ([`crate::tls`]): it is
//! written under [`SelfCertSettings::dir`] the way kubelet writes a mounted Secret (a fresh
//! directory, then an atomic `..data` symlink swap), so the server never sees a certificate
//! from one generation with the key of another. The chart mounts `/tmp` as a memory-backed
//! `emptyDir`, so the key lives in RAM exactly like the kubelet-mounted Secret of the other
//! TLS modes.
//!
//! # Security
//!
//! The Secret's content is trusted only as far as the RBAC that guards it: a stored pair that
//! does not parse, does not cover [`SelfCertSettings::dns_names`] or is near expiry is
//! replaced, never repaired. Private keys are held in [`Zeroizing`] buffers here; the typed
//! Kubernetes client copies them into its own request/response buffers, which are not wiped.

use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

/// Secret keys (`kubernetes.io/tls` plus the CA and its key).
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// Common name of every CA this module makes (the issuer of the serving certificates).
const CA_COMMON_NAME: &str = "strongroom-webhook-ca";

/// Create/replace attempts before giving up when other replicas keep winning.
const MAX_ATTEMPTS: usize = 8;

/// `serve` flags for self-managed TLS; the names are the chart's contract
/// (`manifests/README.md`, "Self-managed contract").
#[derive(Debug, Clone, clap::Args)]
pub struct SelfCertArgs {
    /// Generate the CA and serving certificate, keep them in `TLS_SECRET_NAME` and patch the
    /// caBundle of `WEBHOOK_CONFIGURATION_NAME` (`TLS_CERT_FILE` is then ignored).
    #[arg(long, env = "TLS_SELF_MANAGED", default_value_t = false, action = clap::ArgAction::Set)]
    pub tls_self_managed: bool,
    /// The Secret that holds the CA and serving certificate.
    #[arg(
        long,
        env = "TLS_SECRET_NAME",
        default_value = "strongroom-webhook-tls"
    )]
    pub tls_secret_name: String,
    /// Namespace of that Secret (empty: the service account's namespace).
    #[arg(long, env = "TLS_SECRET_NAMESPACE", default_value = "")]
    pub tls_secret_namespace: String,
    /// Names of the serving certificate, comma-separated (DNS names; an IP literal becomes an
    /// IP address SAN).
    #[arg(long, env = "TLS_DNS_NAMES", value_delimiter = ',')]
    pub tls_dns_names: Vec<String>,
    /// The MutatingWebhookConfiguration whose `caBundle`s are patched.
    #[arg(
        long,
        env = "WEBHOOK_CONFIGURATION_NAME",
        default_value = "strongroom-webhook"
    )]
    pub webhook_configuration_name: String,
    /// Where the current pair is written for the server's reload path (memory-backed `/tmp`).
    #[arg(
        long,
        env = "TLS_SELF_MANAGED_DIR",
        default_value = "/tmp/serving-cert"
    )]
    pub tls_self_managed_dir: PathBuf,
}

impl SelfCertArgs {
    /// Validated settings, or `None` when self-managed TLS is off. An empty namespace is
    /// replaced by `default_namespace` (the client's, i.e. the service account's).
    ///
    /// # Errors
    ///
    /// When no DNS name is given.
    pub fn settings(&self, default_namespace: &str) -> anyhow::Result<Option<SelfCertSettings>> {
        if !self.tls_self_managed {
            return Ok(None);
        }
        let dns_names: Vec<String> = self
            .tls_dns_names
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        if dns_names.is_empty() {
            anyhow::bail!("TLS_SELF_MANAGED=true needs TLS_DNS_NAMES");
        }
        let namespace = if self.tls_secret_namespace.is_empty() {
            default_namespace.to_owned()
        } else {
            self.tls_secret_namespace.clone()
        };
        Ok(Some(SelfCertSettings {
            secret_name: self.tls_secret_name.clone(),
            secret_namespace: namespace,
            dns_names,
            webhook_configuration: self.webhook_configuration_name.clone(),
            dir: self.tls_self_managed_dir.clone(),
            ..SelfCertSettings::defaults()
        }))
    }
}

/// Validated self-managed TLS settings.
#[derive(Debug, Clone)]
pub struct SelfCertSettings {
    /// Secret name.
    pub secret_name: String,
    /// Secret namespace.
    pub secret_namespace: String,
    /// Subject alternative names of the serving certificate.
    pub dns_names: Vec<String>,
    /// MutatingWebhookConfiguration to patch.
    pub webhook_configuration: String,
    /// Directory the server reads `tls.crt`/`tls.key` from.
    pub dir: PathBuf,
    /// Validity of a new CA (10 years).
    pub ca_validity: Duration,
    /// Validity of a new serving certificate (1 year).
    pub serving_validity: Duration,
    /// How often the Secret and the webhook configuration are re-checked.
    pub check_interval: Duration,
}

impl SelfCertSettings {
    /// Production lifetimes with empty names (fill in the names).
    pub fn defaults() -> Self {
        Self {
            secret_name: "strongroom-webhook-tls".to_owned(),
            secret_namespace: String::new(),
            dns_names: Vec::new(),
            webhook_configuration: "strongroom-webhook".to_owned(),
            dir: PathBuf::from("/tmp/serving-cert"),
            ca_validity: Duration::from_secs(10 * 365 * 24 * 3600),
            serving_validity: Duration::from_secs(365 * 24 * 3600),
            check_interval: Duration::from_secs(60),
        }
    }
}

/// Why the certificate could not be made, stored, published or written.
#[derive(Debug, thiserror::Error)]
pub enum SelfCertError {
    #[error("generating a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("reading secret {namespace}/{name}")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating secret {namespace}/{name}")]
    CreateSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating secret {namespace}/{name}")]
    UpdateSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("secret {namespace}/{name} kept changing under us ({MAX_ATTEMPTS} attempts)")]
    Contention { namespace: String, name: String },
    #[error("reading mutatingwebhookconfiguration {name}")]
    ReadWebhookConfiguration {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("mutatingwebhookconfiguration {name} kept changing under us ({MAX_ATTEMPTS} attempts)")]
    WebhookConfigurationContention { name: String },
    #[error("patching the caBundle of mutatingwebhookconfiguration {name}")]
    PatchWebhookConfiguration {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the serving certificate under {path}")]
    WriteFiles {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one [`SelfManagedTls::reconcile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reconciled {
    /// This replica created the Secret or replaced its content (first start or rotation).
    pub stored: bool,
    /// The files the server reads changed.
    pub written: bool,
    /// Webhook entries whose `caBundle` this replica patched.
    pub patched_webhooks: usize,
}

/// The pair, its CA and the CA's key, as kept in the Secret.
struct Material {
    /// `ca.crt`: the current CA first, then the previous one while it is still valid (during
    /// a CA rotation both must verify).
    ca_bundle: String,
    ca_key: Zeroizing<String>,
    cert: String,
    key: Zeroizing<String>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("ca_bundle", &self.ca_bundle)
            .field("ca_key", &"<redacted>")
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Whether the stored material can stay.
#[derive(Debug)]
enum Plan {
    Keep(Material),
    Replace(Material),
}

/// Self-managed TLS for one webhook replica.
pub struct SelfManagedTls {
    client: kube::Client,
    settings: SelfCertSettings,
    /// Fingerprint of the pair last written to [`SelfCertSettings::dir`].
    written: Mutex<Option<[u8; 32]>>,
}

impl std::fmt::Debug for SelfManagedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfManagedTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SelfManagedTls {
    /// Self-managed TLS through `client`; nothing happens until [`Self::reconcile`].
    pub fn new(client: kube::Client, settings: SelfCertSettings) -> Arc<Self> {
        Arc::new(Self {
            client,
            settings,
            written: Mutex::new(None),
        })
    }

    /// The certificate file the server should load (`<dir>/tls.crt`).
    pub fn cert_file(&self) -> PathBuf {
        self.settings.dir.join(TLS_CRT)
    }

    /// The key file the server should load (`<dir>/tls.key`).
    pub fn key_file(&self) -> PathBuf {
        self.settings.dir.join(TLS_KEY)
    }

    /// One pass: create-or-read the Secret (rotating what is near expiry), write the pair for
    /// the server, then make every webhook's `caBundle` the Secret's `ca.crt`. Idempotent.
    ///
    /// # Errors
    ///
    /// [`SelfCertError`]; the files are written before the webhook configuration is touched,
    /// so a missing configuration does not keep the server from serving.
    pub async fn reconcile(&self) -> Result<Reconciled, SelfCertError> {
        let (material, stored) = self.sync_secret().await?;
        let written = self.write_files(&material)?;
        let patched_webhooks = self.patch_ca_bundle(&material.ca_bundle).await?;
        Ok(Reconciled {
            stored,
            written,
            patched_webhooks,
        })
    }

    /// Re-runs [`Self::reconcile`] every [`SelfCertSettings::check_interval`], forever
    /// (spawn it; it ends with the runtime). A failed pass is retried sooner, after 1 s,
    /// 2 s, 4 s … up to the interval: a replica that started while the API server was
    /// unreachable has no certificate and is not ready until a pass succeeds.
    pub async fn run(self: Arc<Self>) {
        const FIRST_RETRY: Duration = Duration::from_secs(1);
        let interval = self.settings.check_interval;
        let mut retry = FIRST_RETRY.min(interval);
        loop {
            let wait = match self.reconcile().await {
                Ok(done) => {
                    if done != Reconciled::default() {
                        tracing::info!(
                            stored = done.stored,
                            written = done.written,
                            patched_webhooks = done.patched_webhooks,
                            secret = %self.settings.secret_name,
                            "self-managed TLS updated"
                        );
                    }
                    retry = FIRST_RETRY.min(interval);
                    interval
                }
                Err(error) => {
                    tracing::warn!(
                        error = %error,
                        retry_in_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX),
                        "self-managed TLS check failed; retrying"
                    );
                    let wait = retry;
                    retry = (retry * 2).min(interval);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The Secret's `ca.crt` as it is now (`None` if the Secret or the key is gone).
    async fn stored_ca_bundle(&self) -> Result<Option<String>, SelfCertError> {
        let secrets: Api<Secret> =
            Api::namespaced(self.client.clone(), &self.settings.secret_namespace);
        Ok(self
            .read_secret(&secrets)
            .await?
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(CA_CRT))
            .and_then(|bytes| String::from_utf8(bytes.0).ok()))
    }

    /// The Secret holding the CA and serving certificate, if it exists.
    async fn read_secret(&self, secrets: &Api<Secret>) -> Result<Option<Secret>, SelfCertError> {
        let name = &self.settings.secret_name;
        secrets
            .get_opt(name)
            .await
            .map_err(|source| SelfCertError::ReadSecret {
                namespace: self.settings.secret_namespace.clone(),
                name: name.clone(),
                source,
            })
    }

    /// Create-or-read, then rotate with optimistic concurrency; returns the material to serve
    /// and whether this replica stored it.
    async fn sync_secret(&self) -> Result<(Material, bool), SelfCertError> {
        let namespace = &self.settings.secret_namespace;
        let name = &self.settings.secret_name;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        for _ in 0..MAX_ATTEMPTS {
            let current = self.read_secret(&secrets).await?;
            let now = OffsetDateTime::now_utc();
            match current {
                None => {
                    let material = fresh_material(&self.settings, now, None)?;
                    let secret = secret_with(
                        Secret {
                            metadata: ObjectMeta {
                                name: Some(name.clone()),
                                namespace: Some(namespace.clone()),
                                ..ObjectMeta::default()
                            },
                            ..Secret::default()
                        },
                        &material,
                    );
                    match secrets.create(&PostParams::default(), &secret).await {
                        Ok(_) => return Ok((material, true)),
                        // Another replica created it first: read and use theirs.
                        Err(kube::Error::Api(status)) if status.is_already_exists() => continue,
                        Err(source) => {
                            return Err(SelfCertError::CreateSecret {
                                namespace: namespace.clone(),
                                name: name.clone(),
                                source,
                            });
                        }
                    }
                }
                Some(secret) => match plan(material_of(&secret), &self.settings, now)? {
                    Plan::Keep(material) => return Ok((material, false)),
                    Plan::Replace(material) => {
                        // `secret` still carries the resourceVersion we read: the PUT fails
                        // with 409 if another replica rotated in between.
                        let updated = secret_with(secret, &material);
                        match secrets
                            .replace(name, &PostParams::default(), &updated)
                            .await
                        {
                            Ok(_) => return Ok((material, true)),
                            Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                            Err(source) => {
                                return Err(SelfCertError::UpdateSecret {
                                    namespace: namespace.clone(),
                                    name: name.clone(),
                                    source,
                                });
                            }
                        }
                    }
                },
            }
        }
        Err(SelfCertError::Contention {
            namespace: namespace.clone(),
            name: name.clone(),
        })
    }

    /// Writes the pair kubelet-style; returns whether it changed.
    fn write_files(&self, material: &Material) -> Result<bool, SelfCertError> {
        let mut hasher = Sha256::new();
        hasher.update(material.cert.as_bytes());
        hasher.update(material.key.as_bytes());
        let fingerprint: [u8; 32] = hasher.finalize().into();
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *written == Some(fingerprint) {
            return Ok(false);
        }
        write_atomically(&self.settings.dir, &material.cert, &material.key).map_err(|source| {
            SelfCertError::WriteFiles {
                path: self.settings.dir.clone(),
                source,
            }
        })?;
        *written = Some(fingerprint);
        Ok(true)
    }

    /// Sets `caBundle` on every webhook entry that differs from the Secret's `ca.crt`, with a
    /// merge patch guarded by the configuration's resourceVersion; on a conflict (another
    /// replica patched at the same moment, or someone edited the configuration) it re-reads
    /// and tries again.
    ///
    /// The bundle is read from the Secret *after* the configuration, not taken from this
    /// pass's `fallback` (what [`Self::sync_secret`] returned): a replica that rotates the CA
    /// stores it before it reads the configuration, so a patch that passes the
    /// resourceVersion guard can never carry a bundle older than the last rotation. With
    /// `fallback`, a replica whose pass overlapped another's CA rotation could put the old CA
    /// back alone and leave the rotating replica's certificate untrusted until its next pass.
    /// `fallback` is used only if the Secret has vanished meanwhile.
    async fn patch_ca_bundle(&self, fallback: &str) -> Result<usize, SelfCertError> {
        let name = &self.settings.webhook_configuration;
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        for _ in 0..MAX_ATTEMPTS {
            let config =
                api.get(name)
                    .await
                    .map_err(|source| SelfCertError::ReadWebhookConfiguration {
                        name: name.clone(),
                        source,
                    })?;
            let stored = self.stored_ca_bundle().await?;
            let wanted = ByteString(stored.as_deref().unwrap_or(fallback).as_bytes().to_vec());
            let mut webhooks = config.webhooks.unwrap_or_default();
            let mut changed = 0;
            for webhook in &mut webhooks {
                if webhook.client_config.ca_bundle.as_ref() != Some(&wanted) {
                    webhook.client_config.ca_bundle = Some(wanted.clone());
                    changed += 1;
                }
            }
            if changed == 0 {
                return Ok(0);
            }
            // A merge patch replaces the whole list; the resourceVersion makes sure it is the
            // list we just read.
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": config.metadata.resource_version },
                "webhooks": webhooks,
            });
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(changed),
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(source) => {
                    return Err(SelfCertError::PatchWebhookConfiguration {
                        name: name.clone(),
                        source,
                    });
                }
            }
        }
        Err(SelfCertError::WebhookConfigurationContention { name: name.clone() })
    }
}

/// Decides what to store, given what the Secret holds (`None`: unusable or incomplete).
fn plan(
    stored: Option<Material>,
    settings: &SelfCertSettings,
    now: OffsetDateTime,
) -> Result<Plan, SelfCertError> {
    let Some(stored) = stored else {
        return Ok(Plan::Replace(fresh_material(settings, now, None)?));
    };
    let now_ts = now.unix_timestamp();
    let (Some(ca_info), Some(cert_info)) = (cert_info(&stored.ca_bundle), cert_info(&stored.cert))
    else {
        return Ok(Plan::Replace(fresh_material(settings, now, None)?));
    };
    if ca_info.not_after - now_ts < third(settings.ca_validity) {
        // CA rotation: the old CA stays in the bundle while it can still verify the
        // certificates other replicas serve until they pick up the new one.
        let previous = (ca_info.not_after > now_ts).then(|| first_pem(&stored.ca_bundle));
        return Ok(Plan::Replace(fresh_material(
            settings,
            now,
            previous.flatten().as_deref(),
        )?));
    }
    let covers = settings.dns_names.iter().all(|n| cert_info.covers(n));
    if cert_info.not_after - now_ts < third(settings.serving_validity) || !covers {
        let Some(ca_pem) = first_pem(&stored.ca_bundle) else {
            return Ok(Plan::Replace(fresh_material(settings, now, None)?));
        };
        let Ok((cert, key)) = serving_cert(&ca_pem, &stored.ca_key, settings, now) else {
            // The stored CA key does not fit its certificate: start over.
            return Ok(Plan::Replace(fresh_material(settings, now, None)?));
        };
        return Ok(Plan::Replace(Material {
            ca_bundle: stored.ca_bundle,
            ca_key: stored.ca_key,
            cert,
            key,
        }));
    }
    Ok(Plan::Keep(stored))
}

/// A third of `validity`, in seconds: renew when less than that is left.
fn third(validity: Duration) -> i64 {
    i64::try_from(validity.as_secs() / 3).unwrap_or(i64::MAX)
}

/// A new CA and serving certificate; `previous_ca` (PEM) is appended to the bundle.
fn fresh_material(
    settings: &SelfCertSettings,
    now: OffsetDateTime,
    previous_ca: Option<&str>,
) -> Result<Material, SelfCertError> {
    let ca_key = KeyPair::generate().map_err(SelfCertError::Generate)?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(SelfCertError::Generate)?;
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + settings.ca_validity;
    let ca_cert = params
        .self_signed(&ca_key)
        .map_err(SelfCertError::Generate)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = Zeroizing::new(ca_key.serialize_pem());
    let (cert, key) = serving_cert(&ca_pem, &ca_key_pem, settings, now)?;
    let mut ca_bundle = ca_pem;
    if let Some(previous) = previous_ca {
        ca_bundle.push_str(previous);
    }
    Ok(Material {
        ca_bundle,
        ca_key: ca_key_pem,
        cert,
        key,
    })
}

/// A serving certificate for the configured names, signed by the CA.
fn serving_cert(
    ca_pem: &str,
    ca_key_pem: &str,
    settings: &SelfCertSettings,
    now: OffsetDateTime,
) -> Result<(String, Zeroizing<String>), SelfCertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(SelfCertError::Generate)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(SelfCertError::Generate)?;
    let key = KeyPair::generate().map_err(SelfCertError::Generate)?;
    let mut params =
        CertificateParams::new(settings.dns_names.clone()).map_err(SelfCertError::Generate)?;
    if let Some(first) = settings.dns_names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + settings.serving_validity;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(SelfCertError::Generate)?;
    Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
}

/// What [`plan`] needs from a certificate.
struct CertInfo {
    not_after: i64,
    dns_names: Vec<String>,
    /// IP address SANs: rcgen turns a configured name that parses as an IP into one, so a
    /// check on DNS names alone would never see it and would renew on every pass.
    ip_addresses: Vec<IpAddr>,
}

impl CertInfo {
    /// Whether a configured name (DNS name or IP literal) is among the certificate's SANs.
    fn covers(&self, name: &str) -> bool {
        match name.parse::<IpAddr>() {
            Ok(ip) => self.ip_addresses.contains(&ip),
            Err(_) => self.dns_names.iter().any(|have| have == name),
        }
    }
}

/// Expiry and SAN names of the first certificate in `pem`; `None` if it does not parse.
fn cert_info(pem: &str) -> Option<CertInfo> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        ip_addresses.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        ip_addresses.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    Some(CertInfo {
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        ip_addresses,
    })
}

/// The first PEM block of a bundle.
fn first_pem(bundle: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let end = bundle.find(END)? + END.len();
    let start = bundle.find("-----BEGIN CERTIFICATE-----")?;
    (start < end).then(|| format!("{}\n", &bundle[start..end]))
}

/// The material in a Secret, `None` if a key is missing or not UTF-8.
fn material_of(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Some(Material {
        ca_bundle: text(CA_CRT)?,
        ca_key: Zeroizing::new(text(CA_KEY)?),
        cert: text(TLS_CRT)?,
        key: Zeroizing::new(text(TLS_KEY)?),
    })
}

/// `secret` with its data replaced by `material` (metadata, including the resourceVersion
/// that guards the update, is kept).
fn secret_with(mut secret: Secret, material: &Material) -> Secret {
    let entry = |key: &str, value: &str| (key.to_owned(), ByteString(value.as_bytes().to_vec()));
    secret.data = Some(
        [
            entry(TLS_CRT, &material.cert),
            entry(TLS_KEY, &material.key),
            entry(CA_CRT, &material.ca_bundle),
            entry(CA_KEY, &material.ca_key),
        ]
        .into_iter()
        .collect(),
    );
    secret.string_data = None;
    if secret.type_.is_none() {
        secret.type_ = Some("kubernetes.io/tls".to_owned());
    }
    secret
}

/// Writes `tls.crt`/`tls.key` into a new directory under `dir`, then swaps the `..data`
/// symlink to it (one `rename`), the way kubelet updates a mounted Secret.
fn write_atomically(dir: &Path, cert: &str, key: &str) -> std::io::Result<()> {
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let generation = format!(
        "..{}_{}",
        OffsetDateTime::now_utc().unix_timestamp_nanos(),
        GENERATION.fetch_add(1, Ordering::Relaxed)
    );
    let target = dir.join(&generation);
    std::fs::DirBuilder::new().mode(0o700).create(&target)?;
    write_file(&target.join(TLS_CRT), cert.as_bytes(), 0o644)?;
    write_file(&target.join(TLS_KEY), key.as_bytes(), 0o600)?;
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&generation, &tmp_link)?;
    std::fs::rename(&tmp_link, dir.join("..data"))?;
    for name in [TLS_CRT, TLS_KEY] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?;
        }
    }
    // Older generations are no longer reachable through ..data.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("..")
            && name != generation
            && name != "..data"
            && entry.file_type()?.is_dir()
        {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test assertions")]
mod tests {
    use super::*;

    fn settings() -> SelfCertSettings {
        SelfCertSettings {
            dns_names: vec!["webhook.ns.svc".to_owned(), "localhost".to_owned()],
            ..SelfCertSettings::defaults()
        }
    }

    #[test]
    fn plan_fresh_material_keeps() {
        let now = OffsetDateTime::now_utc();
        let material = fresh_material(&settings(), now, None).unwrap();
        assert!(matches!(
            plan(Some(material), &settings(), now).unwrap(),
            Plan::Keep(_)
        ));
    }

    #[test]
    fn plan_serving_near_expiry_renews_under_same_ca() {
        let now = OffsetDateTime::now_utc();
        let material = fresh_material(&settings(), now, None).unwrap();
        let ca = material.ca_bundle.clone();
        let old_cert = material.cert.clone();
        let later = now + Duration::from_secs(300 * 24 * 3600);
        match plan(Some(material), &settings(), later).unwrap() {
            Plan::Replace(m) => {
                assert_eq!(m.ca_bundle, ca);
                assert_ne!(m.cert, old_cert);
                let info = cert_info(&m.cert).unwrap();
                assert!(info.not_after > later.unix_timestamp() + 364 * 24 * 3600);
            }
            Plan::Keep(_) => panic!("a serving certificate with 65 days left must be renewed"),
        }
    }

    #[test]
    fn plan_missing_dns_name_renews() {
        let now = OffsetDateTime::now_utc();
        let material = fresh_material(&settings(), now, None).unwrap();
        let mut wider = settings();
        wider.dns_names.push("extra.example".to_owned());
        let Plan::Replace(m) = plan(Some(material), &wider, now).unwrap() else {
            panic!("a certificate missing a name must be replaced");
        };
        assert!(
            cert_info(&m.cert)
                .unwrap()
                .dns_names
                .contains(&"extra.example".to_owned())
        );
    }

    #[test]
    fn plan_ip_address_name_keeps_fresh_material() {
        let mut with_ip = settings();
        with_ip.dns_names.push("127.0.0.1".to_owned());
        with_ip.dns_names.push("::1".to_owned());
        let now = OffsetDateTime::now_utc();
        let material = fresh_material(&with_ip, now, None).unwrap();
        let info = cert_info(&material.cert).unwrap();
        assert!(info.covers("127.0.0.1") && info.covers("::1"));
        assert!(!info.covers("10.0.0.1"));
        assert!(matches!(
            plan(Some(material), &with_ip, now).unwrap(),
            Plan::Keep(_)
        ));
    }

    #[test]
    fn plan_ca_near_expiry_rotates_and_keeps_old_ca_in_bundle() {
        let now = OffsetDateTime::now_utc();
        let material = fresh_material(&settings(), now, None).unwrap();
        let old_ca = material.ca_bundle.clone();
        let later = now + Duration::from_secs(7 * 365 * 24 * 3600);
        let Plan::Replace(m) = plan(Some(material), &settings(), later).unwrap() else {
            panic!("a CA with 3 years left must be rotated");
        };
        assert!(m.ca_bundle.ends_with(&old_ca));
        assert_eq!(m.ca_bundle.matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn plan_garbage_secret_replaces() {
        let garbage = Material {
            ca_bundle: "not a cert".to_owned(),
            ca_key: Zeroizing::new(String::new()),
            cert: String::new(),
            key: Zeroizing::new(String::new()),
        };
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            plan(Some(garbage), &settings(), now).unwrap(),
            Plan::Replace(_)
        ));
    }

    #[test]
    fn material_debug_redacts_keys() {
        let material = fresh_material(&settings(), OffsetDateTime::now_utc(), None).unwrap();
        let text = format!("{material:?}");
        assert!(!text.contains("PRIVATE KEY"));
        assert!(text.contains("<redacted>"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patch_ca_bundle_after_another_replicas_rotation_publishes_the_stored_bundle() {
        use base64::Engine as _;
        let issuer = strongroom_testbed::ServiceAccountIssuer::new().unwrap();
        let api = strongroom_testbed::FakeApiServer::start(issuer.verifier()).unwrap();
        api.insert(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": { "name": "strongroom-webhook" },
            "webhooks": [{
                "name": "pods.vault-secrets-webhook.strongroom.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": { "service": { "name": "s", "namespace": "ns", "path": "/pods" } },
            }],
        }))
        .unwrap();
        let settings = SelfCertSettings {
            secret_namespace: "ns".to_owned(),
            ..settings()
        };
        let client = api.kube_client().unwrap();
        let tls = SelfManagedTls::new(client.clone(), settings.clone());
        // This replica's pass read the Secret (it created it)…
        let (stale, _) = tls.sync_secret().await.unwrap();
        // …then another replica rotated the CA before this pass reached the configuration.
        let rotated =
            fresh_material(&settings, OffsetDateTime::now_utc(), Some(&stale.ca_bundle)).unwrap();
        let secrets: Api<Secret> = Api::namespaced(client, "ns");
        let current = secrets.get(&settings.secret_name).await.unwrap();
        secrets
            .replace(
                &settings.secret_name,
                &PostParams::default(),
                &secret_with(current, &rotated),
            )
            .await
            .unwrap();

        assert_eq!(tls.patch_ca_bundle(&stale.ca_bundle).await.unwrap(), 1);
        let config = api
            .get("mutatingwebhookconfigurations", "", "strongroom-webhook")
            .unwrap();
        let published = base64::engine::general_purpose::STANDARD
            .decode(
                config["webhooks"][0]["clientConfig"]["caBundle"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(published, rotated.ca_bundle.as_bytes());
        assert_eq!(published.windows(5).filter(|w| w == b"BEGIN").count(), 2);
    }

    #[test]
    fn write_atomically_replaces_pair_and_prunes_old_generations() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), "cert-1", "key-1").unwrap();
        write_atomically(dir.path(), "cert-2", "key-2").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(TLS_CRT)).unwrap(),
            "cert-2"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(TLS_KEY)).unwrap(),
            "key-2"
        );
        let generations = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_type().unwrap().is_dir()
            })
            .count();
        assert_eq!(generations, 1);
    }
}
