//! vault-env's configuration: every `VAULT_*` variable parsed and validated into a [`Config`]
//! before anything talks to Vault or touches the process.
//!
//! Names, meanings and defaults follow Bank-Vaults' vault-env (and the vault-sdk client it
//! uses): role `default`, auth path `kubernetes`, JWT file
//! `/var/run/secrets/kubernetes.io/serviceaccount/token`, client timeout `10s`, transit path
//! `transit`, transit batch size 25. Where Bank-Vaults silently treats a malformed value as
//! its default (a boolean `"yes"`, a timeout `"ten"`), this parser refuses it, so a typo in a
//! pod spec fails the pod instead of weakening it.
//!
//! # Security
//!
//! The environment comes from a pod spec, so every value is attacker-influenced. Nothing
//! here is executed or dereferenced; paths are only stored. The literal `VAULT_TOKEN` is
//! moved into a [`SecretString`] at once and never printed.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::reference::{ReadKey, ReferenceError};

/// The value of `VAULT_TOKEN` that asks vault-env to hand its login token to the app.
pub const VAULT_LOGIN: &str = "vault:login";

/// Where Kubernetes mounts the service-account token (vault-sdk's default JWT file).
pub const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The variables Bank-Vaults' vault-env removes from the app's environment, each with whether
/// it is a Vault *client* variable that `VAULT_TOKEN=vault:login` keeps so the app can use
/// the token it is handed (the `login: true` entries of Bank-Vaults' `sanitizeEnvmap`).
pub const STRIPPED_VARIABLES: &[(&str, bool)] = &[
    ("VAULT_TOKEN", true),
    ("VAULT_ADDR", true),
    ("VAULT_AGENT_ADDR", true),
    ("VAULT_CACERT", true),
    ("VAULT_CAPATH", true),
    ("VAULT_CLIENT_CERT", true),
    ("VAULT_CLIENT_KEY", true),
    ("VAULT_CLIENT_TIMEOUT", true),
    ("VAULT_SRV_LOOKUP", true),
    ("VAULT_SKIP_VERIFY", true),
    ("VAULT_NAMESPACE", true),
    ("VAULT_TLS_SERVER_NAME", true),
    ("VAULT_WRAP_TTL", true),
    ("VAULT_MFA", true),
    ("VAULT_MAX_RETRIES", true),
    ("VAULT_CLUSTER_ADDR", false),
    ("VAULT_REDIRECT_ADDR", false),
    ("VAULT_CLI_NO_COLOR", false),
    ("VAULT_RATE_LIMIT", false),
    ("VAULT_ROLE", false),
    ("VAULT_PATH", false),
    ("VAULT_AUTH_METHOD", false),
    ("VAULT_TRANSIT_KEY_ID", false),
    ("VAULT_TRANSIT_PATH", false),
    ("VAULT_TRANSIT_BATCH_SIZE", false),
    ("VAULT_IGNORE_MISSING_SECRETS", false),
    ("VAULT_ENV_PASSTHROUGH", false),
    ("VAULT_JSON_LOG", false),
    ("VAULT_LOG_LEVEL", false),
    ("VAULT_REVOKE_TOKEN", false),
    ("VAULT_ENV_DAEMON", false),
    ("VAULT_ENV_FROM_PATH", false),
    ("VAULT_ENV_DELAY", false),
    // Daemon-mode settings (project-owned names, see `daemon::Settings`).
    ("VAULT_ENV_EXPIRY_POLICY", false),
    ("VAULT_ENV_GRACE_PERIOD", false),
    ("VAULT_ENV_RENEW_FRACTION", false),
    ("VAULT_ENV_REVOKE_ON_EXIT", false),
];

/// A configuration value that could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds bytes that are not UTF-8.
    #[error("{name} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        name: &'static str,
    },
    /// A variable that must be set is missing or empty.
    #[error("{name} must be set")]
    Missing {
        /// The variable.
        name: &'static str,
    },
    /// A variable's value has the wrong form; `expected` says which form.
    #[error("{name}={value:?} is invalid: expected {expected}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// The rejected value (never used for secret-bearing variables).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// `VAULT_ENV_FROM_PATH` does not parse.
    #[error("VAULT_ENV_FROM_PATH is invalid")]
    FromPath {
        /// Which entry and why.
        #[source]
        source: ReferenceError,
    },
    /// `VAULT_AUTH_METHOD` names a Bank-Vaults method this build does not implement.
    #[error(
        "VAULT_AUTH_METHOD={method:?} is not supported: use kubernetes, jwt or a token (VAULT_TOKEN, VAULT_TOKEN_FILE)"
    )]
    UnsupportedAuthMethod {
        /// The requested method.
        method: String,
    },
}

/// How vault-env obtains its Vault token.
pub enum AuthConfig {
    /// A literal token from `VAULT_TOKEN`.
    Token(SecretString),
    /// A token read from `VAULT_TOKEN_FILE` (vault-agent's `.vault-token`, for example).
    TokenFile(PathBuf),
    /// A login with a service-account JWT at `auth/{mount}/login`.
    Login {
        /// `kubernetes` or `jwt`; both post `{role, jwt}`, so this only names the method.
        method: LoginMethod,
        /// The auth mount (`VAULT_PATH`, default `kubernetes`).
        mount: String,
        /// The role (`VAULT_ROLE`, default `default`).
        role: String,
        /// The JWT file (`VAULT_JWT_FILE`).
        jwt_file: PathBuf,
    },
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile(path) => f.debug_tuple("TokenFile").field(path).finish(),
            Self::Login {
                method,
                mount,
                role,
                jwt_file,
            } => f
                .debug_struct("Login")
                .field("method", method)
                .field("mount", mount)
                .field("role", role)
                .field("jwt_file", jwt_file)
                .finish(),
        }
    }
}

/// The JWT-based login methods vault-env implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    /// Vault's kubernetes auth method (TokenReview against the API server).
    Kubernetes,
    /// Vault's jwt auth method (signature checked by Vault). Bank-Vaults' default.
    Jwt,
}

impl LoginMethod {
    /// The name used in `VAULT_AUTH_METHOD` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::Jwt => "jwt",
        }
    }
}

/// Log output settings (`VAULT_LOG_LEVEL`, `VAULT_JSON_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// The most verbose level emitted.
    pub level: tracing::Level,
    /// JSON lines instead of text.
    pub json: bool,
}

/// Settings for the HTTP transport to Vault.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `VAULT_ADDR`.
    pub addr: Url,
    /// `VAULT_NAMESPACE`, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// `VAULT_CACERT`: a PEM bundle that replaces the built-in roots.
    pub ca_cert: Option<PathBuf>,
    /// `VAULT_SKIP_VERIFY`.
    pub skip_verify: bool,
    /// `VAULT_CLIENT_TIMEOUT`: the time one request may take, and the budget for retrying.
    pub timeout: Duration,
}

/// Everything vault-env was asked to do, validated.
#[derive(Debug)]
pub struct Config {
    /// The transport.
    pub client: ClientConfig,
    /// How to get a token.
    pub auth: AuthConfig,
    /// `VAULT_TOKEN=vault:login`: pass the token (and the client variables) to the app.
    pub token_for_app: bool,
    /// `VAULT_IGNORE_MISSING_SECRETS`.
    pub ignore_missing_secrets: bool,
    /// `VAULT_ENV_PASSTHROUGH`: variables kept although they are in [`STRIPPED_VARIABLES`].
    pub passthrough: HashSet<String>,
    /// `VAULT_ENV_FROM_PATH`.
    pub from_path: Vec<ReadKey>,
    /// `VAULT_ENV_DAEMON`.
    pub daemon: bool,
    /// Daemon-mode settings (`VAULT_ENV_EXPIRY_POLICY`, `VAULT_ENV_GRACE_PERIOD`, …).
    pub daemon_settings: crate::daemon::Settings,
    /// `VAULT_ENV_DELAY`: sleep before exec.
    pub delay: Duration,
    /// `VAULT_REVOKE_TOKEN`: revoke the token before exec.
    pub revoke_token: bool,
    /// `VAULT_TRANSIT_KEY_ID`.
    pub transit_key_id: Option<String>,
    /// `VAULT_TRANSIT_PATH` (default `transit`).
    pub transit_path: String,
    /// `VAULT_TRANSIT_BATCH_SIZE` (default 25, at least 1).
    pub transit_batch_size: usize,
    /// Logging.
    pub log: LogConfig,
}

impl Config {
    /// Parses the configuration from `vars` (normally `std::env::vars_os()`).
    ///
    /// Later duplicates win, as with `getenv` on a well-formed environment.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: Into<OsString>,
    {
        let mut raw = Vars::default();
        for (name, value) in vars {
            if let Some(name) = name.as_ref().to_str()
                && name.starts_with("VAULT_")
            {
                raw.set(name, value.into());
            }
        }
        raw.into_config()
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars_os())
    }

    /// Whether `name` must be removed from the app's environment under this configuration.
    pub fn strips(&self, name: &str) -> bool {
        if self.passthrough.contains(name) {
            return false;
        }
        match STRIPPED_VARIABLES.iter().find(|(n, _)| *n == name) {
            None => false,
            Some((_, client_var)) => !(self.token_for_app && *client_var),
        }
    }

    /// The log settings alone, for setting up logging before the rest is validated.
    pub fn log_from_vars<I, K, V>(vars: I) -> LogConfig
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut level = None;
        let mut json = None;
        for (name, value) in vars {
            match name.as_ref().to_str() {
                Some("VAULT_LOG_LEVEL") => level = value.as_ref().to_str().map(parse_level),
                Some("VAULT_JSON_LOG") => json = value.as_ref().to_str().map(parse_bool),
                _ => {}
            }
        }
        LogConfig {
            level: level.flatten().unwrap_or(tracing::Level::INFO),
            json: json.flatten().unwrap_or(false),
        }
    }
}

/// The raw `VAULT_*` values, before validation.
#[derive(Default)]
struct Vars {
    values: Vec<(String, OsString)>,
}

impl Vars {
    fn set(&mut self, name: &str, value: OsString) {
        self.values.retain(|(n, _)| n != name);
        self.values.push((name.to_owned(), value));
    }

    /// The value of `name`, `None` when unset or empty (Bank-Vaults treats both alike).
    fn get(&self, name: &'static str) -> Result<Option<&str>, ConfigError> {
        match self.values.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, value)) => {
                let value = value.to_str().ok_or(ConfigError::NotUnicode { name })?;
                Ok(Some(value).filter(|v| !v.is_empty()))
            }
        }
    }

    fn bool(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.get(name)? {
            None => Ok(false),
            Some(value) => parse_bool(value).ok_or_else(|| ConfigError::Invalid {
                name,
                value: value.to_owned(),
                expected: "true or false",
            }),
        }
    }

    fn duration(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(name)? {
            None => Ok(default),
            Some(value) => parse_duration(value).ok_or_else(|| ConfigError::Invalid {
                name,
                value: value.to_owned(),
                expected: "a duration such as 10s, 1m30s or 500ms",
            }),
        }
    }

    fn into_config(self) -> Result<Config, ConfigError> {
        let addr_text = self
            .get("VAULT_ADDR")?
            .ok_or(ConfigError::Missing { name: "VAULT_ADDR" })?;
        let addr = Url::parse(addr_text)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| ConfigError::Invalid {
                name: "VAULT_ADDR",
                value: addr_text.to_owned(),
                expected: "an http:// or https:// URL",
            })?;
        let client = ClientConfig {
            addr,
            namespace: self.get("VAULT_NAMESPACE")?.map(str::to_owned),
            ca_cert: self.get("VAULT_CACERT")?.map(PathBuf::from),
            skip_verify: self.bool("VAULT_SKIP_VERIFY")?,
            timeout: self.duration("VAULT_CLIENT_TIMEOUT", Duration::from_secs(10))?,
        };
        if client.timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "VAULT_CLIENT_TIMEOUT",
                value: "0".into(),
                expected: "a positive duration",
            });
        }

        // VAULT_TOKEN is read without get() so that its value never lands in an error.
        let token = match self.values.iter().find(|(n, _)| n == "VAULT_TOKEN") {
            None => None,
            Some((_, value)) => Some(value.to_str().ok_or(ConfigError::NotUnicode {
                name: "VAULT_TOKEN",
            })?),
        }
        .filter(|t| !t.is_empty());
        let token_for_app = token == Some(VAULT_LOGIN);
        let auth = if let Some(file) = self.get("VAULT_TOKEN_FILE")? {
            AuthConfig::TokenFile(PathBuf::from(file))
        } else if let Some(token) = token.filter(|_| !token_for_app) {
            AuthConfig::Token(SecretString::from(token.to_owned()))
        } else {
            let method = match self.get("VAULT_AUTH_METHOD")? {
                None | Some("jwt") => LoginMethod::Jwt,
                Some("kubernetes") => LoginMethod::Kubernetes,
                Some(other) => {
                    return Err(ConfigError::UnsupportedAuthMethod {
                        method: other.to_owned(),
                    });
                }
            };
            let mount = self
                .get("VAULT_PATH")?
                .unwrap_or("kubernetes")
                .trim_matches('/')
                .to_owned();
            if mount.is_empty() || mount.split('/').any(|s| s.is_empty() || s == "..") {
                return Err(ConfigError::Invalid {
                    name: "VAULT_PATH",
                    value: mount,
                    expected: "an auth mount path such as kubernetes",
                });
            }
            AuthConfig::Login {
                method,
                mount,
                role: self.get("VAULT_ROLE")?.unwrap_or("default").to_owned(),
                jwt_file: PathBuf::from(self.get("VAULT_JWT_FILE")?.unwrap_or(DEFAULT_JWT_FILE)),
            }
        };

        let passthrough = self
            .get("VAULT_ENV_PASSTHROUGH")?
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();

        let from_path = match self.get("VAULT_ENV_FROM_PATH")? {
            None => Vec::new(),
            Some(value) => crate::reference::parse_from_path(value)
                .map_err(|source| ConfigError::FromPath { source })?,
        };

        let transit_batch_size = match self.get("VAULT_TRANSIT_BATCH_SIZE")? {
            None => 25,
            Some(value) => value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ConfigError::Invalid {
                    name: "VAULT_TRANSIT_BATCH_SIZE",
                    value: value.to_owned(),
                    expected: "a positive integer",
                })?,
        };

        let log = LogConfig {
            level: match self.get("VAULT_LOG_LEVEL")? {
                None => tracing::Level::INFO,
                Some(value) => parse_level(value).ok_or_else(|| ConfigError::Invalid {
                    name: "VAULT_LOG_LEVEL",
                    value: value.to_owned(),
                    expected: "trace, debug, info, warn or error",
                })?,
            },
            json: self.bool("VAULT_JSON_LOG")?,
        };

        Ok(Config {
            client,
            auth,
            token_for_app,
            ignore_missing_secrets: self.bool("VAULT_IGNORE_MISSING_SECRETS")?,
            passthrough,
            from_path,
            daemon: self.bool("VAULT_ENV_DAEMON")?,
            daemon_settings: crate::daemon::Settings::parse(|name| self.get(name))?,
            delay: self.duration("VAULT_ENV_DELAY", Duration::ZERO)?,
            revoke_token: self.bool("VAULT_REVOKE_TOKEN")?,
            transit_key_id: self.get("VAULT_TRANSIT_KEY_ID")?.map(str::to_owned),
            transit_path: self
                .get("VAULT_TRANSIT_PATH")?
                .unwrap_or("transit")
                .trim_matches('/')
                .to_owned(),
            transit_batch_size,
            log,
        })
    }
}

/// Booleans as Go's `strconv.ParseBool` (which Bank-Vaults uses through `cast.ToBool`).
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Levels as Go's `slog.Level.UnmarshalText` names them, plus `trace`.
fn parse_level(value: &str) -> Option<tracing::Level> {
    match value.to_ascii_lowercase().as_str() {
        "trace" => Some(tracing::Level::TRACE),
        "debug" => Some(tracing::Level::DEBUG),
        "info" => Some(tracing::Level::INFO),
        "warn" | "warning" => Some(tracing::Level::WARN),
        "error" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

/// A Go `time.ParseDuration` string (`300ms`, `1.5s`, `2m30s`, `1h`); a bare number is seconds,
/// as `cast.ToDuration` reads it.
pub fn parse_duration(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let mut rest = value;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn config_minimal_has_bank_vaults_defaults() {
        let cfg = config(&[("VAULT_ADDR", "https://vault:8200")]).unwrap();
        assert_eq!(cfg.client.timeout, Duration::from_secs(10));
        assert_eq!(cfg.transit_path, "transit");
        assert_eq!(cfg.transit_batch_size, 25);
        assert!(!cfg.token_for_app && !cfg.ignore_missing_secrets && !cfg.revoke_token);
        match cfg.auth {
            AuthConfig::Login {
                method,
                mount,
                role,
                jwt_file,
            } => {
                assert_eq!(method, LoginMethod::Jwt);
                assert_eq!(mount, "kubernetes");
                assert_eq!(role, "default");
                assert_eq!(jwt_file, PathBuf::from(DEFAULT_JWT_FILE));
            }
            other => panic!("unexpected auth {other:?}"),
        }
    }

    #[test]
    fn config_missing_addr_is_refused() {
        let err = config(&[]).unwrap_err();
        assert_eq!(err.to_string(), "VAULT_ADDR must be set");
    }

    #[test]
    fn config_bad_values_name_the_variable() {
        for (name, value) in [
            ("VAULT_ADDR", "ftp://x"),
            ("VAULT_SKIP_VERIFY", "yes"),
            ("VAULT_CLIENT_TIMEOUT", "ten"),
            ("VAULT_TRANSIT_BATCH_SIZE", "0"),
            ("VAULT_LOG_LEVEL", "loud"),
            ("VAULT_PATH", "a/../b"),
        ] {
            let mut vars = vec![("VAULT_ADDR", "http://127.0.0.1:1")];
            vars.push((name, value));
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.starts_with(name), "{err}");
        }
    }

    #[test]
    fn config_unsupported_auth_method_is_refused() {
        let err =
            config(&[("VAULT_ADDR", "http://v"), ("VAULT_AUTH_METHOD", "aws-ec2")]).unwrap_err();
        assert!(matches!(err, ConfigError::UnsupportedAuthMethod { .. }));
    }

    #[test]
    fn config_token_sources_take_bank_vaults_precedence() {
        let cfg = config(&[("VAULT_ADDR", "http://v"), ("VAULT_TOKEN", "s.abc")]).unwrap();
        match &cfg.auth {
            AuthConfig::Token(t) => assert_eq!(t.expose_secret(), "s.abc"),
            other => panic!("unexpected auth {other:?}"),
        }
        assert_eq!(format!("{:?}", cfg.auth), "Token(<redacted>)");
        let cfg = config(&[
            ("VAULT_ADDR", "http://v"),
            ("VAULT_TOKEN", "s.abc"),
            ("VAULT_TOKEN_FILE", "/t"),
        ])
        .unwrap();
        assert!(matches!(cfg.auth, AuthConfig::TokenFile(_)));
        let cfg = config(&[
            ("VAULT_ADDR", "http://v"),
            ("VAULT_TOKEN", VAULT_LOGIN),
            ("VAULT_AUTH_METHOD", "kubernetes"),
            ("VAULT_PATH", "/k8s/"),
        ])
        .unwrap();
        assert!(cfg.token_for_app);
        assert!(matches!(
            cfg.auth,
            AuthConfig::Login { method: LoginMethod::Kubernetes, ref mount, .. } if mount == "k8s"
        ));
    }

    #[test]
    fn config_strips_follow_passthrough_and_login() {
        let cfg = config(&[
            ("VAULT_ADDR", "http://v"),
            ("VAULT_ENV_PASSTHROUGH", "VAULT_ROLE, VAULT_ADDR"),
        ])
        .unwrap();
        assert!(!cfg.strips("VAULT_ROLE"));
        assert!(!cfg.strips("VAULT_ADDR"));
        assert!(cfg.strips("VAULT_TOKEN"));
        assert!(cfg.strips("VAULT_PATH"));
        assert!(!cfg.strips("VAULT_TOKEN_FILE"));
        assert!(!cfg.strips("HOME"));

        let cfg = config(&[("VAULT_ADDR", "http://v"), ("VAULT_TOKEN", VAULT_LOGIN)]).unwrap();
        assert!(!cfg.strips("VAULT_TOKEN"));
        assert!(!cfg.strips("VAULT_CACERT"));
        assert!(cfg.strips("VAULT_ROLE"));
    }

    #[test]
    fn config_from_path_parses_versions() {
        let cfg = config(&[
            ("VAULT_ADDR", "http://v"),
            ("VAULT_ENV_FROM_PATH", "secret/data/a,kv1/b#3"),
        ])
        .unwrap();
        assert_eq!(
            cfg.from_path,
            vec![
                ReadKey {
                    path: "secret/data/a".into(),
                    version: None
                },
                ReadKey {
                    path: "kv1/b".into(),
                    version: Some(3)
                },
            ]
        );
    }

    #[test]
    fn config_bad_from_path_is_refused() {
        let err = config(&[
            ("VAULT_ADDR", "http://v"),
            ("VAULT_ENV_FROM_PATH", "secret/a#x"),
        ])
        .unwrap_err();
        assert!(matches!(err, ConfigError::FromPath { .. }), "{err}");
    }

    #[test]
    fn parse_duration_go_forms_are_accepted() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("10x"), None);
        assert_eq!(parse_duration(""), None);
    }
}
