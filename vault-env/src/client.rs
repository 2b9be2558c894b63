//! The HTTP transport to Vault: a reqwest client with rustls (ring provider), hickory DNS,
//! `VAULT_CACERT` roots, `VAULT_SKIP_VERIFY`, the namespace header, and bounded retries.
//!
//! Generic reads and writes (secrets, logins, transit) go through [`Transport::send`], which
//! returns the body in a [`Zeroizing`] buffer so a secret is never copied into a plain
//! `String`. Typed vaultrs calls that carry no secret in their answer (token revocation) get a
//! [`vaultrs::client::VaultClient`] built around the same reqwest client with
//! [`Transport::vaultrs`].
//!
//! Retry rule: connection failures, timeouts and 5xx answers (except 501, "not implemented")
//! are retried with exponential backoff (100 ms doubling to at most 2 s, full jitter) until the
//! next attempt would start later than `VAULT_CLIENT_TIMEOUT` after the first; 4xx answers are
//! final. A mesh proxy that comes up a second after the app container is therefore survived,
//! and a Vault that is down fails the pod within about one client timeout plus one request.
//!
//! # Security
//!
//! Errors name the operation, the path and the HTTP status, plus Vault's own `errors`
//! strings (which describe the failure, e.g. "permission denied"); never a request or
//! response body. The token header is marked sensitive so that it is not logged by hyper.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use secrecy::{ExposeSecret, SecretString};
use zeroize::{Zeroize, Zeroizing};

use crate::config::ClientConfig;

/// First retry delay; doubles per attempt.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A failure to build the transport or to get a successful answer from Vault.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `VAULT_CACERT` file could not be read or parsed.
    #[error("read CA bundle {path}")]
    ReadCaCert {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The `VAULT_CACERT` file holds no usable certificate.
    #[error("CA bundle {path} contains no usable certificate")]
    EmptyCaCert {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the TLS configuration.
    #[error("configure TLS")]
    ConfigureTls(#[source] rustls::Error),
    /// The namespace is not a valid header value.
    #[error("VAULT_NAMESPACE is not a valid HTTP header value")]
    InvalidNamespace,
    /// reqwest could not build the client.
    #[error("build the HTTP client")]
    BuildClient(#[source] reqwest::Error),
    /// The path does not form a valid URL below `VAULT_ADDR`.
    #[error("{operation} {path}: not a valid Vault path")]
    InvalidPath {
        /// What was being done.
        operation: &'static str,
        /// The Vault path.
        path: String,
    },
    /// No answer after every attempt (connection refused, DNS, TLS, timeout).
    #[error("{operation} {path}: no answer from Vault after {attempts} attempts")]
    Unreachable {
        /// What was being done.
        operation: &'static str,
        /// The Vault path.
        path: String,
        /// How many requests were sent.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },
    /// Vault answered with a non-success status.
    #[error(
        "{operation} {path}: Vault answered {status}{}{}",
        format_vault_errors(.errors),
        format_attempts(*.attempts)
    )]
    Status {
        /// What was being done.
        operation: &'static str,
        /// The Vault path.
        path: String,
        /// The HTTP status.
        status: StatusCode,
        /// Vault's `errors` array (descriptions, not data).
        errors: Vec<String>,
        /// How many requests were sent (more than one only for 5xx).
        attempts: u32,
    },
    /// The answer's body could not be read.
    #[error("{operation} {path}: read the answer")]
    ReadBody {
        /// What was being done.
        operation: &'static str,
        /// The Vault path.
        path: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
}

impl ClientError {
    /// The HTTP status Vault answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn format_attempts(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

fn format_vault_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

/// The HTTP method of a Vault request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A read.
    Get,
    /// A write (login, write reference, transit decrypt, revoke).
    Post,
}

/// One request to the Vault API.
pub struct Request<'a> {
    /// A short verb phrase for errors and logs: "read secret", "log in".
    pub operation: &'static str,
    /// The method.
    pub method: Method,
    /// The API path below `/v1/`, without a leading slash.
    pub path: &'a str,
    /// Query parameters (e.g. `version`).
    pub query: &'a [(&'a str, String)],
    /// The token, if the request is authenticated.
    pub token: Option<&'a SecretString>,
    /// A JSON body for `POST`.
    pub body: Option<&'a [u8]>,
}

/// The transport: one reqwest client shared by every request of a run.
#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    base: url::Url,
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Builds the transport from the validated client settings.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = tls_config(provider, config.ca_cert.as_deref(), config.skip_verify)?;
        let mut headers = HeaderMap::new();
        if let Some(namespace) = &config.namespace {
            let value =
                HeaderValue::from_str(namespace).map_err(|_| ClientError::InvalidNamespace)?;
            headers.insert(HeaderName::from_static("x-vault-namespace"), value);
        }
        // Vault asks for this header to tell API calls from browser requests.
        headers.insert(
            HeaderName::from_static("x-vault-request"),
            HeaderValue::from_static("true"),
        );
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // hickory reads /etc/resolv.conf and /etc/hosts itself: no glibc NSS needed,
            // which is what a static binary in a scratch image has.
            .hickory_dns(true)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .default_headers(headers)
            .user_agent(concat!("strongroom-vault-env/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::BuildClient)?;
        let mut base = config.addr.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            http,
            base,
            timeout: config.timeout,
        })
    }

    /// Sends `request`, retrying as the module documentation says, and returns the body of
    /// the successful answer.
    pub async fn send(&self, request: Request<'_>) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let url = self
            .base
            .join("v1/")
            .and_then(|v1| v1.join(request.path.trim_start_matches('/')))
            .map_err(|_| ClientError::InvalidPath {
                operation: request.operation,
                path: request.path.to_owned(),
            })?;
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = self.attempt(&request, url.clone()).await;
            let retry = match &outcome {
                Ok((status, _)) if status.is_success() => false,
                Ok((status, _)) => {
                    status.is_server_error() && *status != StatusCode::NOT_IMPLEMENTED
                }
                Err(error) => error.is_connect() || error.is_timeout() || error.is_request(),
            };
            let delay = backoff(attempts);
            if retry && started.elapsed() + delay < self.timeout {
                tracing::debug!(
                    operation = request.operation,
                    path = request.path,
                    attempt = attempts,
                    delay_ms = delay.as_millis() as u64,
                    "retrying Vault request"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
            return match outcome {
                Ok((status, body)) if status.is_success() => Ok(body),
                Ok((status, body)) => Err(ClientError::Status {
                    operation: request.operation,
                    path: request.path.to_owned(),
                    status,
                    errors: vault_errors(&body),
                    attempts,
                }),
                Err(source) if source.is_body() || source.is_decode() => {
                    Err(ClientError::ReadBody {
                        operation: request.operation,
                        path: request.path.to_owned(),
                        source,
                    })
                }
                Err(source) => Err(ClientError::Unreachable {
                    operation: request.operation,
                    path: request.path.to_owned(),
                    attempts,
                    source,
                }),
            };
        }
    }

    /// One request/answer exchange.
    async fn attempt(
        &self,
        request: &Request<'_>,
        mut url: url::Url,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), reqwest::Error> {
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(request.query);
        }
        let mut builder = match request.method {
            Method::Get => self.http.get(url),
            Method::Post => self.http.post(url),
        };
        if let Some(token) = request.token {
            // An invalid header value cannot carry a secret we send; such a token is simply
            // not sent and Vault answers 403, which names the path, not the token.
            if let Ok(mut value) = HeaderValue::from_str(token.expose_secret()) {
                value.set_sensitive(true);
                builder = builder.header("x-vault-token", value);
            }
        }
        if let Some(body) = request.body {
            // The body (a login JWT, for one) is handed to reqwest in a buffer that wipes
            // itself when reqwest drops it.
            let owned = Zeroizing::new(body.to_vec());
            builder = builder
                .header("content-type", "application/json")
                .body(bytes::Bytes::from_owner(owned));
        }
        let mut response = builder.send().await?;
        let status = response.status();
        let mut body = Zeroizing::new(Vec::with_capacity(
            response.content_length().unwrap_or(1024).min(1 << 20) as usize,
        ));
        // Chunks are copied into the zeroizing buffer and wiped at once, so the body never
        // sits in a plain allocation longer than one chunk's life.
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            wipe_bytes(chunk);
        }
        Ok((status, body))
    }

    /// A vaultrs client around the same reqwest client, for typed calls. The token it holds
    /// is wiped when the returned guard is dropped.
    pub fn vaultrs(&self, token: &SecretString) -> VaultrsClient {
        let settings = vaultrs::client::VaultClientSettings {
            address: self.base.clone(),
            ca_certs: Vec::new(),
            identity: None,
            timeout: Some(self.timeout),
            token: token.expose_secret().to_owned(),
            verify: true,
            version: 1,
            wrapping: false,
            namespace: None,
            proxy: None,
        };
        let middle = vaultrs::api::EndpointMiddleware {
            token: token.expose_secret().to_owned(),
            version: "v1".into(),
            wrap: None,
            // The namespace header is already a default header of the reqwest client.
            namespace: None,
        };
        let base = self.base.as_str().trim_end_matches('/');
        VaultrsClient(vaultrs::client::VaultClient {
            http: rustify::clients::reqwest::Client::new(base, self.http.clone()),
            middle,
            settings,
        })
    }
}

/// A [`vaultrs::client::VaultClient`] whose token copies are zeroized on drop.
pub struct VaultrsClient(pub vaultrs::client::VaultClient);

impl Drop for VaultrsClient {
    fn drop(&mut self) {
        self.0.settings.token.zeroize();
        self.0.middle.token.zeroize();
    }
}

/// Wipes a response chunk when this process holds its only reference.
fn wipe_bytes(chunk: bytes::Bytes) {
    if let Ok(mut owned) = chunk.try_into_mut() {
        owned.zeroize();
    }
}

/// The delay before attempt `attempts + 1`: exponential with full jitter.
fn backoff(attempts: u32) -> Duration {
    let ceiling = BACKOFF_START
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(rand::random_range(millis / 2..=millis))
}

/// Vault's `{"errors": [...]}`, each string shortened; empty for anything else.
fn vault_errors(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    serde_json::from_slice::<Errors>(body)
        .map(|e| {
            e.errors
                .into_iter()
                .map(|s| {
                    let line = s.replace('\n', " ");
                    match line.char_indices().nth(200) {
                        Some((cut, _)) => format!("{}…", &line[..cut]),
                        None => line,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rustls configuration: ring provider, the given roots (or webpki's), HTTP/1.1.
fn tls_config(
    provider: Arc<CryptoProvider>,
    ca_cert: Option<&Path>,
    skip_verify: bool,
) -> Result<rustls::ClientConfig, ClientError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ClientError::ConfigureTls)?;
    let mut config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match ca_cert {
            Some(path) => {
                let read_error = |source| ClientError::ReadCaCert {
                    path: path.to_owned(),
                    source,
                };
                for cert in CertificateDer::pem_file_iter(path).map_err(read_error)? {
                    // A bundle may hold certificates rustls cannot use; skip those, as
                    // Go's AppendCertsFromPEM does.
                    let _ = roots.add(cert.map_err(read_error)?);
                }
                if roots.is_empty() {
                    return Err(ClientError::EmptyCaCert {
                        path: path.to_owned(),
                    });
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `VAULT_SKIP_VERIFY=true` (and the webhook's `REGISTRY_SKIP_VERIFY`): accepts any server
/// certificate, still checking that the handshake signatures are valid for the certificate
/// presented.
#[derive(Debug)]
pub struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyCertificate {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_bounds() {
        for attempt in 1..40 {
            let delay = backoff(attempt);
            assert!(delay <= BACKOFF_MAX, "{delay:?}");
            assert!(delay >= BACKOFF_START / 2, "{delay:?}");
        }
    }

    #[test]
    fn vault_errors_are_extracted_and_shortened() {
        let long = "x".repeat(500);
        let body = format!(r#"{{"errors":["permission denied","{long}"]}}"#);
        let errors = vault_errors(body.as_bytes());
        assert_eq!(errors[0], "permission denied");
        assert_eq!(errors[1].chars().count(), 201);
        assert!(vault_errors(b"not json").is_empty());
    }

    #[test]
    fn tls_config_missing_ca_file_is_an_error() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let err = tls_config(provider, Some(Path::new("/nonexistent/ca.pem")), false).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }
}
