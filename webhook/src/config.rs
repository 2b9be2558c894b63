//! Operator settings: clap derive, every flag also read from the environment under
//! Bank-Vaults' names, validated into [`MutationConfig`] and [`ServerSettings`] before
//! anything runs.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::image::{ImageEntrypoint, ImageResolver, StaticImageResolver};
use crate::mutate::{MutationConfig, VERSION};
use crate::policy::AddressPolicy;
use crate::server::ServerSettings;
use crate::telemetry::LogFormat;

/// `vault-secrets-webhook`: Strongroom's mutating admission webhook.
#[derive(Debug, Parser)]
#[command(name = "vault-secrets-webhook", version, about)]
pub struct Cli {
    /// Log filter (`info`, `debug`, `webhook=trace` …).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    /// Log line format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing buys nothing"
)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve admission reviews over HTTPS.
    Serve(ServeArgs),
    /// Print the mutated form of Pods and workload templates read from a file (`-` = stdin).
    Inject(InjectArgs),
    /// Benchmark baseline: the same hyper + rustls stack answering every review with
    /// `allowed: true` and no decision (`cargo xtask bench` compares against it).
    #[command(hide = true)]
    NoopServer(NoopArgs),
    /// Benchmark driver for `cargo xtask bench`: starts `serve` and `noop-server`, loads both
    /// and prints the figures as JSON.
    #[command(hide = true)]
    BenchAdmission(BenchArgs),
    /// Benchmark driver for `cargo xtask bench`: cache hits and concurrent misses of the
    /// registry lookup against a running registry; prints the figures as JSON.
    #[command(hide = true)]
    BenchRegistry(crate::bench::registry::RegistryBenchArgs),
}

/// `bench-admission` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Short rounds (about 20 s in all).
    #[arg(long)]
    pub quick: bool,
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// ENTRYPOINT/CMD lookup in image registries for containers without `command`.
    #[command(flatten)]
    pub registry: crate::registry::RegistryArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub self_cert: Box<crate::selfcert::SelfCertArgs>,
}

/// `inject` flags.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Manifest file (YAML or JSON, multi-document); `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Namespace assumed for objects without one.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

/// `noop-server` flags.
#[derive(Debug, Args)]
pub struct NoopArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Listener and TLS settings.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// HTTPS address (`:8443` means all interfaces).
    #[arg(long, env = "LISTEN_ADDRESS", default_value = ":8443")]
    pub listen_address: String,
    /// Plain-HTTP address for /livez, /readyz and /metrics.
    #[arg(long, env = "TELEMETRY_LISTEN_ADDRESS", default_value = ":8080")]
    pub telemetry_listen_address: String,
    /// PEM certificate chain.
    #[arg(
        long,
        env = "TLS_CERT_FILE",
        default_value = "/var/serving-cert/tls.crt"
    )]
    pub tls_cert_file: PathBuf,
    /// PEM private key.
    #[arg(
        long,
        env = "TLS_PRIVATE_KEY_FILE",
        default_value = "/var/serving-cert/tls.key"
    )]
    pub tls_private_key_file: PathBuf,
    /// Largest review body in bytes (the API server sends at most 3 MiB objects).
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub body_limit_bytes: usize,
    /// TLS handshake + request head deadline, milliseconds.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// How long an idle HTTP/1.1 keep-alive connection is kept, milliseconds (longer than the
    /// API server's 90 s, so that the client closes first).
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    pub idle_timeout_ms: u64,
    /// Body deadline, milliseconds.
    #[arg(long, env = "BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,
    /// How often the certificate files are checked for changes, milliseconds.
    #[arg(long, env = "TLS_RELOAD_INTERVAL_MS", default_value_t = 1_000)]
    pub tls_reload_interval_ms: u64,
    /// Time in-flight reviews get after SIGTERM, milliseconds.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 25_000)]
    pub shutdown_grace_ms: u64,
}

impl ServerArgs {
    /// Validated server settings.
    ///
    /// # Errors
    ///
    /// When an address does not parse.
    pub fn settings(&self) -> anyhow::Result<ServerSettings> {
        Ok(ServerSettings {
            listen: parse_listen(&self.listen_address).context("LISTEN_ADDRESS")?,
            telemetry_listen: parse_listen(&self.telemetry_listen_address)
                .context("TELEMETRY_LISTEN_ADDRESS")?,
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_private_key_file.clone(),
            body_limit: self.body_limit_bytes,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            tls_reload_interval: Duration::from_millis(self.tls_reload_interval_ms.max(10)),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        })
    }
}

/// Go-style listen addresses: `:8443` → `0.0.0.0:8443`, otherwise `host:port`.
pub fn parse_listen(address: &str) -> anyhow::Result<SocketAddr> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_owned()
    };
    full.to_socket_addrs()
        .with_context(|| format!("invalid listen address {address:?}"))?
        .next()
        .with_context(|| format!("listen address {address:?} resolves to nothing"))
}

/// Injection defaults and policy, Bank-Vaults' environment names.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Vault address injected when a pod names none; always allowed.
    #[arg(long, env = "VAULT_ADDR", default_value = "https://vault:8200")]
    pub vault_addr: String,
    /// Addresses objects may name: `https://host:port`, `host` or `*.suffix`, comma-separated.
    #[arg(long, env = "VAULT_ADDR_ALLOWLIST", value_delimiter = ',')]
    pub vault_addr_allowlist: Vec<String>,
    /// Default Vault role (empty: the pod's service account).
    #[arg(long, env = "VAULT_ROLE", default_value = "")]
    pub vault_role: String,
    /// Default auth mount path.
    #[arg(long, env = "VAULT_PATH", default_value = "kubernetes")]
    pub vault_path: String,
    /// Default auth method.
    #[arg(long, env = "VAULT_AUTH_METHOD", default_value = "kubernetes")]
    pub vault_auth_method: String,
    /// Default Vault namespace.
    #[arg(long, env = "VAULT_NAMESPACE", default_value = "")]
    pub vault_namespace: String,
    /// Default Secret with the Vault CA (`ca.crt`).
    #[arg(long, env = "VAULT_TLS_SECRET", default_value = "")]
    pub vault_tls_secret: String,
    /// Default Vault client timeout passed to vault-env.
    #[arg(long, env = "VAULT_CLIENT_TIMEOUT", default_value = "10s")]
    pub vault_client_timeout: String,
    /// Skip Vault TLS verification in vault-env (operator only).
    #[arg(long, env = "VAULT_SKIP_VERIFY", default_value_t = false, action = clap::ArgAction::Set)]
    pub vault_skip_verify: bool,
    /// Let objects set `vault-skip-verify`.
    #[arg(long, env = "ALLOW_OBJECT_SKIP_VERIFY", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_object_skip_verify: bool,
    /// Default for VAULT_IGNORE_MISSING_SECRETS.
    #[arg(long, env = "VAULT_IGNORE_MISSING_SECRETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub vault_ignore_missing_secrets: bool,
    /// Default VAULT_ENV_PASSTHROUGH.
    #[arg(long, env = "VAULT_ENV_PASSTHROUGH", default_value = "")]
    pub vault_env_passthrough: String,
    /// Default VAULT_JSON_LOG for vault-env.
    #[arg(long, env = "ENABLE_JSON_LOG", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_json_log: bool,
    /// Default VAULT_LOG_LEVEL for vault-env.
    #[arg(long, env = "VAULT_ENV_LOG_LEVEL", default_value = "")]
    pub vault_env_log_level: String,
    /// Image of the copy-vault-env init container.
    #[arg(long, env = "VAULT_ENV_IMAGE", default_value = concat!("ghcr.io/strongroom/vault-env:", env!("CARGO_PKG_VERSION")))]
    pub vault_env_image: String,
    /// Pull policy of that image.
    #[arg(long, env = "VAULT_ENV_PULL_POLICY", default_value = "IfNotPresent")]
    pub vault_env_pull_policy: String,
    /// Images objects may pick with `vault-env-image` (exact, or a prefix ending in `*`).
    #[arg(long, env = "VAULT_ENV_IMAGE_ALLOWLIST", value_delimiter = ',')]
    pub vault_env_image_allowlist: Vec<String>,
    /// Path of the vault-env binary in its image.
    #[arg(
        long,
        env = "VAULT_ENV_BINARY_PATH",
        default_value = "/usr/local/bin/vault-env"
    )]
    pub vault_env_binary_path: String,
    /// sizeLimit of the vault-env emptyDir.
    #[arg(long, env = "VAULT_ENV_VOLUME_SIZE_LIMIT", default_value = "64Mi")]
    pub vault_env_volume_size_limit: String,
    #[arg(long, env = "VAULT_ENV_CPU_REQUEST", default_value = "50m")]
    pub vault_env_cpu_request: String,
    #[arg(long, env = "VAULT_ENV_MEMORY_REQUEST", default_value = "64Mi")]
    pub vault_env_memory_request: String,
    #[arg(long, env = "VAULT_ENV_CPU_LIMIT", default_value = "250m")]
    pub vault_env_cpu_limit: String,
    #[arg(long, env = "VAULT_ENV_MEMORY_LIMIT", default_value = "64Mi")]
    pub vault_env_memory_limit: String,
    /// UID of the injected init container (non-zero).
    #[arg(long, env = "VAULT_ENV_RUN_AS_USER", default_value_t = 65534)]
    pub vault_env_run_as_user: i64,
    /// GID of the injected init container (non-zero).
    #[arg(long, env = "VAULT_ENV_RUN_AS_GROUP", default_value_t = 65534)]
    pub vault_env_run_as_group: i64,
    /// JSON file `{"image": {"entrypoint": [...], "cmd": [...]}}` for containers without
    /// `command` (the registry lookup, when enabled, comes on top).
    #[arg(long, env = "IMAGE_ENTRYPOINT_FILE")]
    pub image_entrypoint_file: Option<PathBuf>,
}

impl OperatorArgs {
    /// The validated mutation config.
    ///
    /// # Errors
    ///
    /// When a setting is out of range.
    pub fn mutation_config(&self) -> anyhow::Result<MutationConfig> {
        if self.vault_env_run_as_user <= 0 || self.vault_env_run_as_group <= 0 {
            bail!("VAULT_ENV_RUN_AS_USER and VAULT_ENV_RUN_AS_GROUP must be non-zero");
        }
        if !matches!(
            self.vault_env_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            bail!("VAULT_ENV_PULL_POLICY must be Always, IfNotPresent or Never");
        }
        url::Url::parse(&self.vault_addr)
            .with_context(|| format!("VAULT_ADDR {:?} is not a URL", self.vault_addr))?;
        Ok(MutationConfig {
            vault_addr: self.vault_addr.clone(),
            vault_role: self.vault_role.clone(),
            vault_path: self.vault_path.clone(),
            vault_auth_method: self.vault_auth_method.clone(),
            vault_namespace: self.vault_namespace.clone(),
            vault_tls_secret: self.vault_tls_secret.clone(),
            vault_client_timeout: self.vault_client_timeout.clone(),
            vault_skip_verify: self.vault_skip_verify,
            allow_object_skip_verify: self.allow_object_skip_verify,
            vault_ignore_missing_secrets: self.vault_ignore_missing_secrets,
            vault_env_passthrough: self.vault_env_passthrough.clone(),
            vault_json_log: self.enable_json_log,
            vault_log_level: self.vault_env_log_level.clone(),
            address_policy: AddressPolicy::new(Some(&self.vault_addr), &self.vault_addr_allowlist),
            vault_env_image: self.vault_env_image.clone(),
            vault_env_image_pull_policy: self.vault_env_pull_policy.clone(),
            vault_env_image_allowlist: self.vault_env_image_allowlist.clone(),
            vault_env_binary_path: self.vault_env_binary_path.clone(),
            volume_size_limit: self.vault_env_volume_size_limit.clone(),
            cpu_request: self.vault_env_cpu_request.clone(),
            memory_request: self.vault_env_memory_request.clone(),
            cpu_limit: self.vault_env_cpu_limit.clone(),
            memory_limit: self.vault_env_memory_limit.clone(),
            run_as_user: self.vault_env_run_as_user,
            run_as_group: self.vault_env_run_as_group,
            version: VERSION.to_owned(),
            image_failure_policy: None,
        })
    }

    /// The operator's static image → entrypoint map.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or parsed.
    pub fn static_images(&self) -> anyhow::Result<Arc<dyn ImageResolver>> {
        let Some(path) = &self.image_entrypoint_file else {
            return Ok(Arc::new(StaticImageResolver::default()));
        };
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(default)]
            entrypoint: Vec<String>,
            #[serde(default)]
            cmd: Vec<String>,
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading IMAGE_ENTRYPOINT_FILE {}", path.display()))?;
        let entries: BTreeMap<String, Entry> = serde_json::from_str(&text)
            .with_context(|| format!("parsing IMAGE_ENTRYPOINT_FILE {}", path.display()))?;
        let map = entries
            .into_iter()
            .map(|(image, e)| {
                (
                    image,
                    ImageEntrypoint {
                        entrypoint: e.entrypoint,
                        cmd: e.cmd,
                    },
                )
            })
            .collect();
        Ok(Arc::new(StaticImageResolver::new(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_listen_go_style_port_only() {
        assert_eq!(
            parse_listen(":8443").ok(),
            Some(SocketAddr::from(([0, 0, 0, 0], 8443)))
        );
        assert_eq!(
            parse_listen("127.0.0.1:9").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert!(parse_listen("nonsense").is_err());
    }

    #[test]
    fn cli_reads_bank_vaults_env_names() {
        let cli = Cli::try_parse_from([
            "vault-secrets-webhook",
            "serve",
            "--vault-addr-allowlist",
            "*.svc,https://v:8200",
        ]);
        let Ok(Cli {
            command: Command::Serve(args),
            ..
        }) = cli
        else {
            panic!("serve did not parse");
        };
        assert_eq!(
            args.operator.vault_addr_allowlist,
            ["*.svc", "https://v:8200"]
        );
        assert_eq!(args.server.listen_address, ":8443");
        assert_eq!(args.server.telemetry_listen_address, ":8080");
        let config = args.operator.mutation_config().ok();
        assert!(config.is_some_and(|c| c.vault_env_binary_path == "/usr/local/bin/vault-env"));
    }

    #[test]
    fn mutation_config_rejects_root_uid() {
        let cli = Cli::try_parse_from([
            "vault-secrets-webhook",
            "inject",
            "-f",
            "x.yaml",
            "--vault-env-run-as-user",
            "0",
        ]);
        let Ok(Cli {
            command: Command::Inject(args),
            ..
        }) = cli
        else {
            panic!("inject did not parse");
        };
        assert!(args.operator.mutation_config().is_err());
    }
}
