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
        Self::launch(true)
    }

    /// Starts a registry with TLS and anonymous read/write access.
    pub fn start_anonymous() -> Result<Self> {
        Self::launch(false)
    }

    fn launch(auth: bool) -> Result<Self> {
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
            let auth_yaml = if auth {
                format!(
                    "auth:\n  htpasswd:\n    realm: strongroom-testbed\n    path: {}\n",
                    htpasswd.display()
                )
            } else {
                String::new()
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

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.password {
            Some(password) => request.basic_auth(REGISTRY_USER, Some(password)),
            None => request,
        }
    }

    fn push_blob(&self, repo: &str, content: &[u8]) -> Result<()> {
        let digest = sha256_digest(content);
        let start_url = format!("https://{}/v2/{repo}/blobs/uploads/", self.host);
        block_on(async {
            let response = self
                .request(reqwest::Method::POST, &start_url)
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
                .request(reqwest::Method::PUT, &put_url)
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
                .request(reqwest::Method::PUT, &url)
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
                .request(reqwest::Method::GET, &url)
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
        // 200 (anonymous) or 401 (htpasswd) both mean the API is up.
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
