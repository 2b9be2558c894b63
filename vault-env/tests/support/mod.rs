//! Shared helpers for vault-env's integration tests: a configured OpenBao, a service-account
//! JWT file, and running the real `vault-env` binary in front of the test app.
#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;
use strongroom_testbed::OpenBao;

/// The binary under test.
pub const VAULT_ENV: &str = env!("CARGO_BIN_EXE_vault-env");
/// The app vault-env execs in the tests.
pub const TESTAPP: &str = env!("CARGO_BIN_EXE_vault-env-testapp");

/// An OpenBao dev server plus a temp dir holding a JWT the kubernetes and jwt roles accept.
pub struct Bed {
    pub bao: OpenBao,
    pub dir: tempfile::TempDir,
    pub jwt_file: PathBuf,
}

impl Bed {
    pub fn start() -> Bed {
        Self::with(OpenBao::start().unwrap())
    }

    pub fn start_tls() -> Bed {
        Self::with(OpenBao::start_tls().unwrap())
    }

    fn with(bao: OpenBao) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let jwt = bao.issuer().issue("demo", "app-sa").unwrap();
        let jwt_file = dir.path().join("token");
        std::fs::write(&jwt_file, jwt).unwrap();
        Bed { bao, dir, jwt_file }
    }

    /// Kubernetes-auth login settings, as the webhook would inject them.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("VAULT_ADDR".into(), self.bao.addr().into()),
            ("VAULT_AUTH_METHOD".into(), "kubernetes".into()),
            ("VAULT_PATH".into(), "kubernetes".into()),
            ("VAULT_ROLE".into(), "default".into()),
            ("VAULT_JWT_FILE".into(), self.jwt_file.display().to_string()),
            ("VAULT_CLIENT_TIMEOUT".into(), "5s".into()),
        ]
    }

    /// The audit log as text (request paths in clear, values HMACed).
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.bao.audit_log_path()).unwrap_or_default()
    }

    /// Number of audit request entries so far.
    pub fn audit_requests(&self) -> usize {
        self.bao
            .audit_entries()
            .unwrap()
            .iter()
            .filter(|e| e.is_request())
            .count()
    }

    /// Number of audit read requests for `path` (setup writes to the same path excluded).
    pub fn reads(&self, path: &str) -> usize {
        self.bao
            .audit_entries()
            .unwrap()
            .iter()
            .filter(|e| e.is_request() && e.path == path && e.operation == "read")
            .count()
    }

    /// A marker path the test app writes when it starts.
    pub fn marker(&self) -> PathBuf {
        self.dir.path().join("app-started")
    }
}

/// What the test app printed.
#[derive(Debug, Deserialize)]
pub struct Report {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub fds: Vec<(u32, String)>,
}

impl Report {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn names(&self) -> Vec<&str> {
        self.env.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// One run of vault-env.
pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn success(&self) -> bool {
        self.output.status.success()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The app's report; panics with vault-env's stderr when the app did not run.
    pub fn report(&self) -> Report {
        assert!(
            self.success(),
            "vault-env failed: {}\nstderr:\n{}",
            self.output.status,
            self.stderr()
        );
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| {
            panic!(
                "bad app output ({e}): {}\nstderr:\n{}",
                String::from_utf8_lossy(&self.output.stdout),
                self.stderr()
            )
        })
    }

    /// The single `vault-env: error:` line; asserts there is exactly one and that the run
    /// failed without starting the app.
    pub fn error_line(&self) -> String {
        assert!(!self.success(), "vault-env succeeded unexpectedly");
        assert!(
            self.output.stdout.is_empty(),
            "the app ran: {}",
            String::from_utf8_lossy(&self.output.stdout)
        );
        let stderr = self.stderr();
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("vault-env: error:"))
            .collect();
        assert_eq!(lines.len(), 1, "expected one error line in:\n{stderr}");
        lines[0].to_owned()
    }
}

/// Runs `vault-env TESTAPP args…` with exactly `env` (plus nothing inherited).
pub fn run(env: &[(String, String)], args: &[&str]) -> Run {
    run_program(VAULT_ENV, env, TESTAPP, args)
}

/// Runs `vault_env program args…` with exactly `env`.
pub fn run_program(
    vault_env: impl AsRef<Path>,
    env: &[(String, String)],
    program: &str,
    args: &[&str],
) -> Run {
    let output = Command::new(vault_env.as_ref())
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run { output }
}

/// `env` with `extra` appended (later entries win in vault-env's config).
pub fn with(env: &[(String, String)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = env.to_vec();
    all.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    all
}

/// A value that must never appear outside the app's environment.
pub fn canary(label: &str) -> String {
    format!("canary-{label}-{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

/// Asserts that none of `secrets` occurs in `text` (`what` names the place for the message).
pub fn assert_absent(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "secret value found in {what}:\n{text}"
        );
    }
}
