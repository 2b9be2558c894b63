//! The registry HTTP API v2 client: manifests and config blobs, with basic and token auth.
//!
//! Why not `oci-client`: it builds its own `reqwest::Client` and gives no way to pass a
//! rustls configuration, so with `rustls-tls-no-provider` it only works after a process-wide
//! default crypto provider is installed (the team rule is to install ring explicitly where
//! a client is built), and its per-registry auth store keeps the first credential it saw
//! and shares bearer tokens between callers, which breaks "try every matching credential"
//! and would let one namespace's token serve another's lookup. This client is small: the
//! lookup only needs `GET /v2/<repo>/manifests/<ref>` and `GET /v2/<repo>/blobs/<digest>`.
//!
//! Auth follows the distribution spec: the first request to a registry probes `GET /v2/`
//! and remembers its `WWW-Authenticate` challenge (not a secret) per host; `Basic` sends the
//! credential on every request, `Bearer` fetches a pull-scoped token from the challenge's
//! realm once per lookup session. Tokens are never shared between sessions.
//!
//! # Security
//!
//! Responses are attacker-influenced (an image name can point at any host). Bodies are
//! read with a size cap, content is verified against its digest, token realms must be
//! `https`, and credentials go only to the registry they were matched to or to the realm
//! it names (as docker does). No error message contains a credential or a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use vault_env::client::AcceptAnyCertificate;

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use sha2::Digest as _;

use super::credentials::Credential;
use super::reference::ImageRef;

/// Media types a manifest request accepts, most specific first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (the distribution registry's own limit is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest image config accepted.
const MAX_CONFIG_BYTES: usize = 8 << 20;
/// Largest token response accepted.
const MAX_TOKEN_BYTES: usize = 64 << 10;

/// Why a registry request failed. `Clone` so one failed fetch can answer every waiter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("connect to registry {host}: {reason}")]
    Connect { host: String, reason: String },
    #[error("request to registry {host}: {reason}")]
    Request { host: String, reason: String },
    #[error("registry {host} denied access to {what} (HTTP {status}){hint}")]
    Unauthorized {
        host: String,
        what: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{what} not found in registry {host}")]
    NotFound { host: String, what: String },
    #[error("registry {host} answered HTTP {status} for {what}")]
    Status {
        host: String,
        what: String,
        status: u16,
    },
    #[error("registry {host} sent an invalid {what}: {reason}")]
    Invalid {
        host: String,
        what: String,
        reason: String,
    },
    #[error("token service for registry {host}: {reason}")]
    Token { host: String, reason: String },
}

impl FetchError {
    /// The metrics label for this failure.
    pub fn cause(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Request { .. } => "request",
            Self::Unauthorized { .. } | Self::Token { .. } => "auth",
            Self::NotFound { .. } => "not_found",
            Self::Status { .. } => "status",
            Self::Invalid { .. } => "invalid",
        }
    }

    /// Failures another credential might fix.
    pub fn is_auth_or_not_found(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. } | Self::Token { .. } | Self::NotFound { .. }
        )
    }
}

/// Building the client failed (bad CA bundle).
#[derive(Debug, thiserror::Error)]
pub enum BuildClientError {
    #[error("parse registry CA bundle: no PEM certificate found")]
    ParseCaBundle,
    #[error("add registry CA certificate")]
    AddCaCertificate(#[source] rustls::Error),
    #[error("configure TLS for registry client")]
    ConfigureTls(#[source] rustls::Error),
    #[error("build registry HTTP client")]
    BuildHttpClient(#[source] reqwest::Error),
}

/// TLS trust for registries.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// Accept any server certificate (`REGISTRY_SKIP_VERIFY`).
    pub skip_verify: bool,
    /// PEM CA bundle trusted in addition to the public web roots (`REGISTRY_CA_FILE`).
    pub ca_bundle_pem: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A registry client shared by all lookups (one connection pool, one TLS config).
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// Per-host auth challenge learnt from `GET /v2/`.
    challenges: Arc<Mutex<HashMap<String, Challenge>>>,
}

/// One lookup's authentication state for one credential (or none: anonymous).
pub struct Session<'c> {
    credential: Option<&'c Credential>,
    bearer: Option<SecretString>,
}

impl<'c> Session<'c> {
    pub fn new(credential: Option<&'c Credential>) -> Self {
        Self {
            credential,
            bearer: None,
        }
    }
}

/// A fetched manifest: body, media type and content digest.
pub struct Manifest {
    pub body: Bytes,
    pub media_type: String,
    pub digest: String,
}

impl RegistryClient {
    /// Builds the client with the ring provider and the given trust settings.
    pub fn new(tls: &TlsSettings, connect_timeout: Duration) -> Result<Self, BuildClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(BuildClientError::ConfigureTls)?;
        let config = if tls.skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            if let Some(pem) = &tls.ca_bundle_pem {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                    .filter_map(Result::ok)
                    .collect();
                if certs.is_empty() {
                    return Err(BuildClientError::ParseCaBundle);
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(BuildClientError::AddCaCertificate)?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(connect_timeout)
            .user_agent(concat!("strongroom-webhook/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
            .map_err(BuildClientError::BuildHttpClient)?;
        Ok(Self {
            http,
            challenges: Arc::default(),
        })
    }

    /// `GET /v2/<repo>/manifests/<reference>`; verifies the digest when `reference` is one.
    pub async fn manifest(
        &self,
        session: &mut Session<'_>,
        image: &ImageRef,
        reference: &str,
    ) -> Result<Manifest, FetchError> {
        let host = image.endpoint_host();
        let url = format!(
            "https://{host}/v2/{}/manifests/{reference}",
            image.repository
        );
        let what = format!("manifest {}:{reference}", image.repository);
        let response = self
            .get(session, image, &url, MANIFEST_ACCEPT, &what)
            .await?;
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let body = read_limited(response, MAX_MANIFEST_BYTES, host, &what).await?;
        let digest = sha256_digest(&body);
        if reference.starts_with("sha256:") && reference != digest {
            return Err(FetchError::Invalid {
                host: host.to_owned(),
                what,
                reason: format!("content digest {digest} does not match"),
            });
        }
        Ok(Manifest {
            body,
            media_type,
            digest,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`, verified against `digest`.
    pub async fn blob(
        &self,
        session: &mut Session<'_>,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Bytes, FetchError> {
        let host = image.endpoint_host();
        let url = format!("https://{host}/v2/{}/blobs/{digest}", image.repository);
        let what = format!("config blob {}@{digest}", image.repository);
        let response = self.get(session, image, &url, "*/*", &what).await?;
        let body = read_limited(response, MAX_CONFIG_BYTES, host, &what).await?;
        if digest.starts_with("sha256:") && sha256_digest(&body) != digest {
            return Err(FetchError::Invalid {
                host: host.to_owned(),
                what,
                reason: "content does not match its digest".to_owned(),
            });
        }
        Ok(body)
    }

    /// An authenticated GET; one retry after a fresh challenge if the first try gets 401.
    async fn get(
        &self,
        session: &mut Session<'_>,
        image: &ImageRef,
        url: &str,
        accept: &str,
        what: &str,
    ) -> Result<reqwest::Response, FetchError> {
        let host = image.endpoint_host();
        let mut challenge = match self.known_challenge(host) {
            Some(c) => c,
            None => self.probe(host).await?,
        };
        for attempt in 0..2 {
            let mut request = self.http.get(url).header(ACCEPT, accept);
            match (&challenge, session.credential) {
                (Challenge::Anonymous, _) => {}
                (Challenge::Basic, Some(cred)) => {
                    request =
                        request.basic_auth(&cred.username, Some(cred.password.expose_secret()));
                }
                (Challenge::Basic, None) => {}
                (Challenge::Bearer { realm, service }, _) => {
                    if session.bearer.is_none() {
                        let token = self
                            .token(
                                host,
                                realm,
                                service.as_deref(),
                                &image.repository,
                                session.credential,
                            )
                            .await?;
                        session.bearer = Some(token);
                    }
                    if let Some(token) = &session.bearer {
                        request = request.bearer_auth(token.expose_secret());
                    }
                }
            }
            let response = request
                .send()
                .await
                .map_err(|e| transport_error(host, &e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                // The registry's auth scheme may have changed (or differs per repository):
                // learn the new challenge from this response and retry once.
                // Retrying under the same challenge cannot help: the credential (or the
                // token just obtained with it) was refused.
                if let Some(fresh) = parse_challenge(response.headers())
                    && fresh != challenge
                {
                    self.remember(host, fresh.clone());
                    challenge = fresh;
                    session.bearer = None;
                    continue;
                }
            }
            return Err(status_error(
                host,
                what,
                status,
                session.credential.is_some(),
            ));
        }
        Err(status_error(
            host,
            what,
            StatusCode::UNAUTHORIZED,
            session.credential.is_some(),
        ))
    }

    fn known_challenge(&self, host: &str) -> Option<Challenge> {
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .cloned()
    }

    fn remember(&self, host: &str, challenge: Challenge) {
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_owned(), challenge);
    }

    /// `GET /v2/`: 200 means anonymous access, 401 carries the challenge.
    async fn probe(&self, host: &str) -> Result<Challenge, FetchError> {
        let response = self
            .http
            .get(format!("https://{host}/v2/"))
            .send()
            .await
            .map_err(|e| transport_error(host, &e))?;
        let challenge = match response.status() {
            s if s.is_success() => Challenge::Anonymous,
            StatusCode::UNAUTHORIZED => {
                parse_challenge(response.headers()).ok_or_else(|| FetchError::Invalid {
                    host: host.to_owned(),
                    what: "auth challenge".to_owned(),
                    reason: "401 without a usable WWW-Authenticate header".to_owned(),
                })?
            }
            status => {
                return Err(FetchError::Status {
                    host: host.to_owned(),
                    what: "API version check /v2/".to_owned(),
                    status: status.as_u16(),
                });
            }
        };
        self.remember(host, challenge.clone());
        Ok(challenge)
    }

    /// Fetches a pull token for `repository` from the challenge's realm.
    async fn token(
        &self,
        host: &str,
        realm: &str,
        service: Option<&str>,
        repository: &str,
        credential: Option<&Credential>,
    ) -> Result<SecretString, FetchError> {
        let fail = |reason: String| FetchError::Token {
            host: host.to_owned(),
            reason,
        };
        let realm_url =
            url::Url::parse(realm).map_err(|_| fail("challenge realm is not a URL".to_owned()))?;
        if realm_url.scheme() != "https" {
            return Err(fail(
                "challenge realm is not https; refusing to send credentials".to_owned(),
            ));
        }
        let mut realm_url = realm_url;
        {
            let mut query = realm_url.query_pairs_mut();
            query.append_pair("scope", &format!("repository:{repository}:pull"));
            if let Some(service) = service {
                query.append_pair("service", service);
            }
        }
        let mut request = self.http.get(realm_url);
        if let Some(cred) = credential {
            request = request.basic_auth(&cred.username, Some(cred.password.expose_secret()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| match transport_error(host, &e) {
                FetchError::Connect { reason, .. } | FetchError::Request { reason, .. } => {
                    fail(reason)
                }
                other => other,
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!(
                "token request answered HTTP {}",
                status.as_u16()
            )));
        }
        let body = read_limited(response, MAX_TOKEN_BYTES, host, "token response").await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<SecretString>,
            access_token: Option<SecretString>,
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| fail("token response is not JSON".to_owned()))?;
        parsed
            .token
            .or(parsed.access_token)
            .ok_or_else(|| fail("token response has no token".to_owned()))
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Parses `WWW-Authenticate: Bearer realm="…",service="…"` or `Basic realm="…"`.
fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let value = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_auth_params(params);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
    })
}

/// `key="quoted, value",key2=token` → map (keys lower-cased).
fn parse_auth_params(input: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = input.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    host: &str,
    what: &str,
) -> Result<Bytes, FetchError> {
    let too_large = || FetchError::Invalid {
        host: host.to_owned(),
        what: what.to_owned(),
        reason: format!("larger than {limit} bytes"),
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(host, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A transport failure with its cause chain (reqwest's top-level message is generic).
fn transport_error(host: &str, error: &reqwest::Error) -> FetchError {
    let mut reason = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(err) = source {
        if !reason.is_empty() {
            reason.push_str(": ");
        }
        reason.push_str(&err.to_string());
        source = err.source();
    }
    if reason.is_empty() {
        reason = error.to_string();
    }
    if error.is_connect() {
        FetchError::Connect {
            host: host.to_owned(),
            reason,
        }
    } else {
        FetchError::Request {
            host: host.to_owned(),
            reason,
        }
    }
}

fn status_error(host: &str, what: &str, status: StatusCode, had_credential: bool) -> FetchError {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FetchError::Unauthorized {
            host: host.to_owned(),
            what: what.to_owned(),
            status: status.as_u16(),
            hint: if had_credential {
                ""
            } else {
                "; no image pull secret matches this registry"
            },
        },
        StatusCode::NOT_FOUND => FetchError::NotFound {
            host: host.to_owned(),
            what: what.to_owned(),
        },
        _ => FetchError::Status {
            host: host.to_owned(),
            what: what.to_owned(),
            status: status.as_u16(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn challenge(value: &str) -> Option<Challenge> {
        let mut headers = HeaderMap::new();
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_str(value).expect("header"),
        );
        parse_challenge(&headers)
    }

    #[test]
    fn parse_challenge_bearer_with_quoted_params() {
        let Some(Challenge::Bearer { realm, service }) = challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull,push""#,
        ) else {
            panic!("not bearer");
        };
        assert_eq!(realm, "https://auth.docker.io/token");
        assert_eq!(service.as_deref(), Some("registry.docker.io"));
    }

    #[test]
    fn parse_challenge_basic_and_unknown() {
        assert!(matches!(
            challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        ));
        assert!(challenge("Negotiate abc").is_none());
        assert!(
            challenge("Bearer service=\"x\"").is_none(),
            "bearer without realm"
        );
    }

    #[test]
    fn sha256_digest_known_value() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn client_new_rejects_bundle_without_certificates() {
        let tls = TlsSettings {
            skip_verify: false,
            ca_bundle_pem: Some(b"not a pem".to_vec()),
        };
        assert!(matches!(
            RegistryClient::new(&tls, Duration::from_secs(1)),
            Err(BuildClientError::ParseCaBundle)
        ));
    }
}
