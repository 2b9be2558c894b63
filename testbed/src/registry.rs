//! A real CNCF distribution registry (Debian `docker-registry`) on a free loopback port, with TLS
//! and optional htpasswd auth, plus helpers that push test images through the registry HTTP API
//! (no docker needed) and count requests from its access log.
//!
//! ```no_run
//! # fn main() -> strongroom_testbed::Result<()> {
//! use strongroom_testbed::registry::{Registry, TestImage};
//!
//! let reg = Registry::start()?; // TLS + htpasswd; Registry::start_anonymous() for no auth
//! let amd = TestImage::linux("amd64").entrypoint(["/bin/app-amd64"]).cmd(["serve"]);
//! let arm = TestImage::linux("arm64").entrypoint(["/bin/app-arm64"]).cmd(["serve"]);
//! let index_digest = reg.push_index("team/multi", "1.0", &[amd, arm], true)?;
//! let only_cmd = reg.push_image("team/cmd-only", "1", &TestImage::linux("amd64").cmd(["sh"]))?;
//! // Trust reg.ca_pem(); log in with reg.username()/reg.password() or reg.docker_config_json().
//! assert_eq!(reg.count_requests("GET", "team/multi", "manifests")?, 0);
//! # let _ = (index_digest, only_cmd); Ok(()) }
//! ```

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::net::{free_port, random_hex};
use crate::process::{ChildGuard, spawn_guarded};
use crate::runtime::block_on;
use crate::tls::TestCa;

/// The user [`Registry::start`] creates in its htpasswd file.
pub const REGISTRY_USER: &str = "strongroom";

/// OCI media types used by the pushed images.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// An image to push: platform and the two config fields the webhook reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestImage {
    /// `os` of the config and index entry.
    pub os: String,
    /// `architecture` of the config and index entry.
    pub architecture: String,
    /// ENTRYPOINT, absent when `None`.
    pub entrypoint: Option<Vec<String>>,
    /// CMD, absent when `None`.
    pub cmd: Option<Vec<String>>,
}

impl TestImage {
    /// A linux image for `architecture` with neither ENTRYPOINT nor CMD.
    pub fn linux(architecture: &str) -> Self {
        Self {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            entrypoint: None,
            cmd: None,
        }
    }

    /// Sets ENTRYPOINT.
    pub fn entrypoint<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets CMD.
    pub fn cmd<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    fn config_json(&self, layer_diff_id: &str) -> Value {
        let mut config = serde_json::Map::new();
        if let Some(e) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(e));
        }
        if let Some(c) = &self.cmd {
            config.insert("Cmd".into(), json!(c));
        }
        config.insert("Env".into(), json!(["PATH=/usr/local/bin:/usr/bin:/bin"]));
        json!({
            "architecture": self.architecture,
            "os": self.os,
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": [layer_diff_id] },
        })
    }
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// HTTP method.
    pub method: String,
    /// Request path (with query).
    pub path: String,
    /// Response status.
    pub status: u16,
}

/// A running distribution registry. Killed and its temp dir removed on drop.
pub struct Registry {
    child: ChildGuard,
    host: String,
    ca: TestCa,
    password: Option<String>,
    log_path: PathBuf,
    client: reqwest::Client,
    token_server: Option<TokenServer>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("auth", &self.password.is_some())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Starts a registry with TLS and htpasswd auth (user [`REGISTRY_USER`], random password).
    pub fn start() -> Result<Self> {
        Self::launch(Auth::Htpasswd)
    }

    /// Starts a registry with TLS and anonymous read/write access.
    pub fn start_anonymous() -> Result<Self> {
        Self::launch(Auth::None)
    }

    /// Starts a registry with TLS and token auth (the Docker Hub scheme): requests without a
    /// token get `401` with a `Bearer realm=…` challenge pointing at an in-process HTTPS token
    /// server, which issues ES256 JWTs (`x5c` signed, as the registry verifies them) for user
    /// [`REGISTRY_USER`] and [`Registry::password`], and pull-less tokens anonymously.
    pub fn start_token_auth() -> Result<Self> {
        Self::launch(Auth::Token)
    }

    fn launch(mode: Auth) -> Result<Self> {
        let auth = mode != Auth::None;
        let dir = crate::tempdir::create("registry")?;
        let ca = TestCa::new()?;
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server-key.pem");
        std::fs::write(&cert, ca.server_cert_pem()).map_err(Error::fs("write", &cert))?;
        std::fs::write(&key, ca.server_key_pem()).map_err(Error::fs("write", &key))?;
        let password = auth.then(|| random_hex(16));
        let htpasswd = dir.path().join("htpasswd");
        if let Some(password) = &password {
            let out = Command::new("htpasswd")
                .args(["-Bbn", REGISTRY_USER, password])
                .stdin(Stdio::null())
                .output()
                .map_err(|source| Error::Spawn {
                    program: "htpasswd".into(),
                    source,
                })?;
            if !out.status.success() {
                return Err(Error::Command {
                    program: "htpasswd".into(),
                    status: out.status,
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            std::fs::write(&htpasswd, &out.stdout).map_err(Error::fs("write", &htpasswd))?;
        }
        let token_server = match (&mode, &password) {
            (Auth::Token, Some(password)) => Some(TokenServer::start(&ca, password)?),
            _ => None,
        };
        let token_bundle = dir.path().join("token-signer.pem");
        if let Some(server) = &token_server {
            std::fs::write(&token_bundle, &server.signer_cert_pem)
                .map_err(Error::fs("write", &token_bundle))?;
        }
        let data = dir.path().join("data");
        let config_path = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        let client = crate::tls::client_config(ca.ca_pem()).and_then(|tls| {
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .map_err(|e| Error::crypto("build http client")(&e))
        })?;

        for _attempt in 0..5 {
            let port = free_port()?;
            let auth_yaml = match (&mode, &token_server) {
                (Auth::Token, Some(server)) => format!(
                    "auth:\n  token:\n    realm: https://{}/token\n    service: {TOKEN_SERVICE}\n    \
                     issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    server.addr,
                    token_bundle.display()
                ),
                (Auth::Htpasswd, _) => format!(
                    "auth:\n  htpasswd:\n    realm: strongroom-testbed\n    path: {}\n",
                    htpasswd.display()
                ),
                _ => String::new(),
            };
            let yaml = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {cert}\n    key: {key}\n\
                 {auth_yaml}",
                data = data.display(),
                cert = cert.display(),
                key = key.display(),
            );
            std::fs::write(&config_path, yaml).map_err(Error::fs("write", &config_path))?;
            let log = std::fs::File::create(&log_path).map_err(Error::fs("create", &log_path))?;
            let log2 = log
                .try_clone()
                .map_err(Error::fs("clone handle", &log_path))?;
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            let child = spawn_guarded(cmd, None).map_err(|source| Error::Spawn {
                program: "docker-registry".into(),
                source,
            })?;
            let mut child = ChildGuard::new(child, Signal::SIGTERM, Duration::from_secs(2));
            let host = format!("127.0.0.1:{port}");
            match wait_ready(&mut child, &client, &host, &log_path) {
                Ok(()) => {
                    return Ok(Self {
                        child,
                        host,
                        ca,
                        password,
                        log_path,
                        client,
                        token_server,
                        _dir: dir,
                    });
                }
                Err(Ready::PortInUse) => continue,
                Err(Ready::Failed(e)) => return Err(e),
            }
        }
        Err(Error::NotReady {
            what: "docker-registry".into(),
            detail: "port already in use on 5 attempts".into(),
        })
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The PEM CA certificate that signed the registry's server certificate.
    pub fn ca_pem(&self) -> &str {
        self.ca.ca_pem()
    }

    /// The htpasswd user name, if auth is on.
    pub fn username(&self) -> Option<&str> {
        self.password.as_ref().map(|_| REGISTRY_USER)
    }

    /// The htpasswd password (a throw-away test secret), if auth is on.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// A `.dockerconfigjson` document with this registry's credentials (`None` without auth).
    pub fn docker_config_json(&self) -> Option<String> {
        let password = self.password.as_ref()?;
        Some(docker_config_json(&self.host, REGISTRY_USER, password))
    }

    /// The process id (for tests that stop the registry).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the registry now (later requests get "connection refused").
    pub fn stop(&mut self) {
        self.child.stop();
    }

    /// Pushes one image (empty layer, config, manifest) as `repo:tag`; returns the manifest digest.
    pub fn push_image(&self, repo: &str, tag: &str, image: &TestImage) -> Result<String> {
        let (digest, manifest) = self.push_platform_image(repo, image)?;
        self.put_manifest(repo, tag, OCI_MANIFEST, &manifest)?;
        Ok(digest)
    }

    /// Pushes an image index for `images` (one manifest per platform) as `repo:tag`, plus a
    /// BuildKit-style attestation manifest (platform `unknown/unknown`, annotated
    /// `vnd.docker.reference.type: attestation-manifest`) when `attestation` is set. Its config
    /// has ENTRYPOINT `["/attestation-must-not-be-used"]`, so a resolver that picks it is caught.
    /// Returns the index digest.
    pub fn push_index(
        &self,
        repo: &str,
        tag: &str,
        images: &[TestImage],
        attestation: bool,
    ) -> Result<String> {
        let mut entries = Vec::new();
        for image in images {
            let (digest, manifest) = self.push_platform_image(repo, image)?;
            entries.push(json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": manifest.len(),
                "platform": { "architecture": image.architecture, "os": image.os },
            }));
        }
        if attestation && let Some(first) = entries.first().cloned() {
            let fake = TestImage {
                os: "unknown".into(),
                architecture: "unknown".into(),
                entrypoint: Some(vec!["/attestation-must-not-be-used".into()]),
                cmd: None,
            };
            let (digest, manifest) = self.push_platform_image(repo, &fake)?;
            entries.push(json!({
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": manifest.len(),
                "platform": { "architecture": "unknown", "os": "unknown" },
                "annotations": {
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": first["digest"],
                },
            }));
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| Error::Decode {
            what: "image index",
            detail: e.to_string(),
        })?;
        self.put_manifest(repo, tag, OCI_INDEX, &bytes)?;
        Ok(sha256_digest(&bytes))
    }

    /// Parsed access log lines, oldest first.
    pub fn access_log(&self) -> Result<Vec<AccessLogEntry>> {
        let text =
            std::fs::read_to_string(&self.log_path).map_err(Error::fs("read", &self.log_path))?;
        Ok(text.lines().filter_map(parse_access_line).collect())
    }

    /// Requests with `method` to `/v2/<repo>/<kind>/…` (`kind`: `manifests` or `blobs`) that the
    /// registry answered successfully (2xx; 401 challenges are not fetches).
    pub fn count_requests(&self, method: &str, repo: &str, kind: &str) -> Result<usize> {
        let prefix = format!("/v2/{repo}/{kind}/");
        Ok(self
            .access_log()?
            .iter()
            .filter(|e| e.method == method && e.path.starts_with(&prefix))
            .filter(|e| (200..300).contains(&e.status))
            .count())
    }

    /// Pushes layer, config and manifest (by digest, untagged); returns (digest, manifest).
    fn push_platform_image(&self, repo: &str, image: &TestImage) -> Result<(String, Vec<u8>)> {
        // An empty tar archive: two 512-byte zero blocks.
        let layer = vec![0u8; 1024];
        let layer_digest = sha256_digest(&layer);
        self.push_blob(repo, &layer)?;
        let config =
            serde_json::to_vec(&image.config_json(&layer_digest)).map_err(|e| Error::Decode {
                what: "image config",
                detail: e.to_string(),
            })?;
        let config_digest = sha256_digest(&config);
        self.push_blob(repo, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer.len() }],
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Decode {
            what: "image manifest",
            detail: e.to_string(),
        })?;
        let digest = sha256_digest(&bytes);
        self.put_manifest(repo, &digest, OCI_MANIFEST, &bytes)?;
        Ok((digest, bytes))
    }

    fn request(&self, method: reqwest::Method, url: &str, repo: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match (&self.token_server, &self.password) {
            (Some(server), _) => request.bearer_auth(server.signer.token(
                REGISTRY_USER,
                &[(repo.to_owned(), vec!["pull".to_owned(), "push".to_owned()])],
            )),
            (None, Some(password)) => request.basic_auth(REGISTRY_USER, Some(password)),
            (None, None) => request,
        }
    }

    /// Token requests the token server answered with a token (token auth only).
    pub fn token_requests(&self) -> usize {
        self.token_server
            .as_ref()
            .map_or(0, |s| s.issued.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn push_blob(&self, repo: &str, content: &[u8]) -> Result<()> {
        let digest = sha256_digest(content);
        let start_url = format!("https://{}/v2/{repo}/blobs/uploads/", self.host);
        block_on(async {
            let response = self
                .request(reqwest::Method::POST, &start_url, repo)
                .send()
                .await
                .map_err(http_error("POST", &start_url))?;
            let response = expect_status(response, "POST", &start_url, 202).await?;
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Decode {
                    what: "upload location",
                    detail: "no Location header".into(),
                })?
                .to_owned();
            let base = if location.starts_with("http") {
                location
            } else {
                format!("https://{}{location}", self.host)
            };
            let sep = if base.contains('?') { '&' } else { '?' };
            let put_url = format!("{base}{sep}digest={digest}");
            let response = self
                .request(reqwest::Method::PUT, &put_url, repo)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(content.to_vec())
                .send()
                .await
                .map_err(http_error("PUT", &start_url))?;
            expect_status(response, "PUT", &start_url, 201).await?;
            Ok(())
        })
    }

    fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<()> {
        let url = format!("https://{}/v2/{repo}/manifests/{reference}", self.host);
        block_on(async {
            let response = self
                .request(reqwest::Method::PUT, &url, repo)
                .header(reqwest::header::CONTENT_TYPE, media_type)
                .body(body.to_vec())
                .send()
                .await
                .map_err(http_error("PUT", &url))?;
            expect_status(response, "PUT", &url, 201).await?;
            Ok(())
        })
    }

    /// Fetches a manifest or index (`reference`: tag or digest) with the test credentials.
    /// The request shows in the access log like any other.
    pub fn fetch_manifest(&self, repo: &str, reference: &str) -> Result<Vec<u8>> {
        let url = format!("https://{}/v2/{repo}/manifests/{reference}", self.host);
        block_on(async {
            let response = self
                .request(reqwest::Method::GET, &url, repo)
                .header(
                    reqwest::header::ACCEPT,
                    format!("{OCI_MANIFEST}, {OCI_INDEX}"),
                )
                .send()
                .await
                .map_err(http_error("GET", &url))?;
            let response = expect_status(response, "GET", &url, 200).await?;
            let bytes = response.bytes().await.map_err(http_error("GET", &url))?;
            Ok(bytes.to_vec())
        })
    }
}

/// How a registry authenticates clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    None,
    Htpasswd,
    Token,
}

/// `service` of the token-auth registry (the JWT audience).
pub const TOKEN_SERVICE: &str = "strongroom-testbed-registry";
/// `iss` of the tokens the test token server issues.
pub const TOKEN_ISSUER: &str = "strongroom-testbed-token-issuer";

/// Signs registry tokens: ES256 with a self-signed certificate sent in `x5c`.
struct TokenSigner {
    key: ring::signature::EcdsaKeyPair,
    cert_der_b64: String,
    password: String,
}

impl TokenSigner {
    /// A JWT for `subject` granting `access` (repository name, actions).
    fn token(&self, subject: &str, access: &[(String, Vec<String>)]) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = crate::net::unix_now();
        let header = json!({ "alg": "ES256", "typ": "JWT", "x5c": [self.cert_der_b64] });
        let access: Vec<Value> = access
            .iter()
            .map(
                |(name, actions)| json!({ "type": "repository", "name": name, "actions": actions }),
            )
            .collect();
        let claims = json!({
            "iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": random_hex(8),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        // Signing with a valid in-memory P-256 key only fails if the system RNG fails.
        match self.key.sign(&rng, input.as_bytes()) {
            Ok(sig) => format!("{input}.{}", b64(sig.as_ref())),
            Err(_) => input,
        }
    }

    /// The token endpoint: `GET /token?service=…&scope=repository:NAME:ACTIONS`.
    fn answer(&self, authorization: Option<&str>, query: &str) -> (u16, String) {
        let mut scopes = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "scope" {
                let value = percent_decode(value);
                let mut parts = value.splitn(3, ':');
                if let (Some("repository"), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    scopes.push((
                        name.to_owned(),
                        actions.split(',').map(str::to_owned).collect::<Vec<_>>(),
                    ));
                }
            }
        }
        let subject = match authorization.and_then(|h| h.strip_prefix("Basic ")) {
            None => None,
            Some(encoded) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok());
                match decoded.as_deref().and_then(|d| d.split_once(':')) {
                    Some((user, pass)) if user == REGISTRY_USER && pass == self.password => {
                        Some(user.to_owned())
                    }
                    _ => return (401, json!({ "details": "invalid credentials" }).to_string()),
                }
            }
        };
        // Anonymous callers get a token without access, as Docker Hub's token service does for
        // private repositories; the registry then refuses it.
        let granted: Vec<(String, Vec<String>)> = match &subject {
            Some(_) => scopes,
            None => Vec::new(),
        };
        let token = self.token(subject.as_deref().unwrap_or(""), &granted);
        (
            200,
            json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string(),
        )
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The in-process HTTPS token service of a token-auth registry. Stops on drop.
struct TokenServer {
    addr: std::net::SocketAddr,
    signer_cert_pem: String,
    signer: std::sync::Arc<TokenSigner>,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl TokenServer {
    fn start(ca: &TestCa, password: &str) -> Result<Self> {
        let key_pair =
            rcgen::KeyPair::generate().map_err(|e| Error::crypto("generate token key")(&e))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| Error::crypto("token cert params")(&e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "strongroom-testbed token signer");
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| Error::crypto("self-sign token cert")(&e))?;
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| Error::crypto("load token key")(&e))?;
        let signer = std::sync::Arc::new(TokenSigner {
            key,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            password: password.to_owned(),
        });
        let tls = tokio_rustls::TlsAcceptor::from(ca.server_config()?);
        let listener =
            block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0))).map_err(|source| {
                Error::Io {
                    op: "bind token server",
                    source,
                }
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            op: "read token server address",
            source,
        })?;
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        crate::runtime::runtime().spawn(token_accept_loop(
            listener,
            tls,
            std::sync::Arc::clone(&signer),
            std::sync::Arc::clone(&issued),
            rx,
        ));
        Ok(Self {
            addr,
            signer_cert_pem: cert.pem(),
            signer,
            issued,
            shutdown,
        })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn token_accept_loop(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    signer: std::sync::Arc<TokenSigner>,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let tls = tls.clone();
        let signer = std::sync::Arc::clone(&signer);
        let issued = std::sync::Arc::clone(&issued);
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let signer = std::sync::Arc::clone(&signer);
                    let issued = std::sync::Arc::clone(&issued);
                    async move {
                        let authorization = req
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok());
                        let (status, body) = if req.uri().path() == "/token" {
                            signer.answer(authorization, req.uri().query().unwrap_or(""))
                        } else {
                            (404, String::new())
                        };
                        if status == 200 {
                            issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        let mut response = http::Response::new(Full::new(bytes::Bytes::from(body)));
                        *response.status_mut() = http::StatusCode::from_u16(status)
                            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_shutdown.changed() => {}
            }
        });
    }
}

/// A `.dockerconfigjson` document holding one `auth` entry for `registry`.
pub fn docker_config_json(registry: &str, username: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    json!({ "auths": { registry: { "auth": auth } } }).to_string()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

enum Ready {
    PortInUse,
    Failed(Error),
}

fn wait_ready(
    child: &mut ChildGuard,
    client: &reqwest::Client,
    host: &str,
    log_path: &std::path::Path,
) -> Result<(), Ready> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = format!("https://{host}/v2/");
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait() {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            if log.contains("address already in use") {
                return Err(Ready::PortInUse);
            }
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(Ready::Failed(Error::NotReady {
                what: "docker-registry".into(),
                detail: format!("exited with {status}: {tail}"),
            }));
        }
        // 200 (anonymous) or 401 (htpasswd, token) both mean the API is up.
        match block_on(async { client.get(&url).send().await.map(|r| r.status().as_u16()) }) {
            Ok(200 | 401) => return Ok(()),
            Ok(s) => last = format!("/v2/ answered {s}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Ready::Failed(Error::NotReady {
        what: "docker-registry".into(),
        detail: last,
    }))
}

/// Parses `… "GET /v2/x/manifests/1 HTTP/1.1" 200 …` (gorilla combined log format).
fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    let start = line.find('"')?;
    let rest = &line[start + 1..];
    let end = rest.find('"')?;
    let mut request = rest[..end].split(' ');
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    let protocol = request.next()?;
    if !protocol.starts_with("HTTP/") {
        return None;
    }
    let status = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
    Some(AccessLogEntry {
        method,
        path,
        status,
    })
}

fn http_error(method: &'static str, url: &str) -> impl FnOnce(reqwest::Error) -> Error {
    let url = url.to_owned();
    move |source| Error::Http {
        method: method.into(),
        url,
        source,
    }
}

async fn expect_status(
    response: reqwest::Response,
    method: &str,
    url: &str,
    want: u16,
) -> Result<reqwest::Response> {
    let status = response.status().as_u16();
    if status == want {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(Error::Api {
        method: method.into(),
        path: url.into(),
        status,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_access_line_combined_format() {
        let line = r#"127.0.0.1 - - [29/Nov/2026:20:00:00 +0000] "GET /v2/a/b/manifests/1.0 HTTP/1.1" 200 527 "" "strongroom-webhook/0.1.0""#;
        assert_eq!(
            parse_access_line(line),
            Some(AccessLogEntry {
                method: "GET".into(),
                path: "/v2/a/b/manifests/1.0".into(),
                status: 200,
            })
        );
        assert_eq!(
            parse_access_line("time=\"x\" level=info msg=\"listening\""),
            None
        );
    }

    #[test]
    fn sha256_digest_empty_input_known_value() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn percent_decode_scope_value() {
        assert_eq!(
            percent_decode("repository%3Ateam%2Fapp%3Apull"),
            "repository:team/app:pull"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }

    #[test]
    fn registry_token_auth_push_and_pull_with_bearer() -> Result<()> {
        let reg = Registry::start_token_auth()?;
        let digest = reg.push_image("t/tok", "1", &TestImage::linux("amd64").cmd(["x"]))?;
        assert_eq!(sha256_digest(&reg.fetch_manifest("t/tok", "1")?), digest);
        // Without a token the registry challenges with the token realm.
        let url = format!("https://{}/v2/t/tok/manifests/1", reg.host());
        let challenge = block_on(async {
            reg.client.get(&url).send().await.map(|r| {
                r.headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
        })
        .map_err(http_error("GET", &url))?
        .unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"https://127.0.0.1:"),
            "{challenge}"
        );
        Ok(())
    }

    #[test]
    fn registry_push_index_and_count_fetches() -> Result<()> {
        let reg = Registry::start()?;
        let amd = TestImage::linux("amd64").entrypoint(["/amd"]).cmd(["run"]);
        let arm = TestImage::linux("arm64").entrypoint(["/arm"]).cmd(["run"]);
        let digest = reg.push_index("t/multi", "1", &[amd, arm], true)?;
        assert!(digest.starts_with("sha256:"));
        // Anonymous reads are refused: auth is on.
        let url = format!("https://{}/v2/t/multi/manifests/1", reg.host());
        let status = block_on(async {
            reg.client
                .get(&url)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
        .map_err(http_error("GET", &url))?;
        assert_eq!(status, 401);
        let fetched = reg.fetch_manifest("t/multi", &digest);
        assert!(fetched.is_ok());
        assert_eq!(reg.count_requests("GET", "t/multi", "manifests")?, 1);
        Ok(())
    }
}
