//! Command line of the `ebpf-guard` binary, parsed into a validated [`RunConfig`].
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::abi::{MODE_AUDIT, MODE_ENFORCE};

/// Guard mode of a node or pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Mode {
    /// Allow, but record every attempt.
    Audit,
    /// Deny and record.
    Enforce,
}

impl Mode {
    /// Parses `enforce` / `audit` exactly; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "enforce" => Some(Self::Enforce),
            "audit" => Some(Self::Audit),
            _ => None,
        }
    }

    /// The stricter of two modes (enforce beats audit).
    pub fn stricter(self, other: Option<Self>) -> Self {
        other.map_or(self, |other| self.max(other))
    }

    /// The value the BPF program uses.
    pub fn abi(self) -> u32 {
        match self {
            Self::Audit => MODE_AUDIT,
            Self::Enforce => MODE_ENFORCE,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Enforce => "enforce",
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// `ebpf-guard`: BPF LSM guard for injected workloads.
#[derive(Debug, Parser)]
#[command(name = "ebpf-guard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, pin and run the guard (reuses pinned state left by an earlier agent).
    Run(RunArgs),
    /// Unpin every program, link and map (the guard stops enforcing).
    Detach {
        /// Pin directory on bpffs.
        #[arg(long, env = "GUARD_PIN_DIR", default_value = "/sys/fs/bpf/strongroom")]
        pin_dir: PathBuf,
    },
    /// Exit 0 iff BPF LSM is usable on this kernel (LSM list and a probe load).
    Probe,
}

/// Flags of `ebpf-guard run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Node-wide mode; a pod can only make it stricter.
    #[arg(long, env = "GUARD_MODE", value_enum, default_value = "enforce")]
    pub mode: Mode,
    /// This node's name (reported in audit events).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The kubelet's root directory.
    #[arg(long, env = "KUBELET_ROOT", default_value = "/var/lib/kubelet")]
    pub kubelet_root: PathBuf,
    /// Pin directory on bpffs.
    #[arg(long, env = "GUARD_PIN_DIR", default_value = "/sys/fs/bpf/strongroom")]
    pub pin_dir: PathBuf,
    /// Address of the health and metrics server.
    #[arg(long, env = "GUARD_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "GUARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Kubeconfig of the API server (default: the pod's service account when
    /// `KUBERNETES_SERVICE_HOST` is set; otherwise no API server: pods from disk only).
    #[arg(long, env = "GUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Also post a Kubernetes Event on the pod for each denied or audited attempt (aggregated
    /// per pod, hook and decision; needs an API server).
    #[arg(long, env = "GUARD_KUBE_EVENTS")]
    pub kube_events: bool,
    /// Least time between two updates of one Event series (repeats in between only count).
    #[arg(long, env = "GUARD_KUBE_EVENTS_WINDOW_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub kube_events_window_ms: u64,
    /// Cgroup v2 mount point (default: found in /proc/self/mountinfo).
    #[arg(long, env = "GUARD_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// How often the kubelet layout is rescanned (tokens rotate, pods come and go).
    #[arg(long, env = "GUARD_RESCAN_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub rescan_ms: u64,
}

/// Validated settings for the agent.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Node-wide mode.
    pub mode: Mode,
    /// Node name.
    pub node_name: String,
    /// Kubelet root.
    pub kubelet_root: PathBuf,
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// Health/metrics address.
    pub listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Kubeconfig override.
    pub kubeconfig: Option<PathBuf>,
    /// Post Kubernetes Events.
    pub kube_events: bool,
    /// Least time between two updates of one Event series.
    pub kube_events_window: Duration,
    /// Cgroup v2 root override.
    pub cgroup_root: Option<PathBuf>,
    /// Rescan period.
    pub rescan: Duration,
}

/// Invalid flag combinations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The node name is empty or not a DNS-1123 subdomain.
    #[error("invalid --node-name {0:?}: expected a DNS-1123 subdomain")]
    NodeName(String),
    /// The pin directory is not absolute.
    #[error("--pin-dir must be an absolute path on bpffs")]
    PinDir,
}

impl TryFrom<RunArgs> for RunConfig {
    type Error = ConfigError;

    fn try_from(args: RunArgs) -> Result<Self, ConfigError> {
        let name = &args.node_name;
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !name.starts_with(['-', '.'])
            && !name.ends_with(['-', '.']);
        if !valid_name {
            return Err(ConfigError::NodeName(args.node_name));
        }
        if !args.pin_dir.is_absolute() {
            return Err(ConfigError::PinDir);
        }
        Ok(Self {
            mode: args.mode,
            node_name: args.node_name,
            kubelet_root: args.kubelet_root,
            pin_dir: args.pin_dir,
            listen: args.listen,
            log_format: args.log_format,
            kubeconfig: args.kubeconfig,
            kube_events: args.kube_events,
            kube_events_window: Duration::from_millis(args.kube_events_window_ms),
            cgroup_root: args.cgroup_root,
            rescan: Duration::from_millis(args.rescan_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Run(run) => RunConfig::try_from(run).map_err(|e| e.to_string()),
            other => Err(format!("not run: {other:?}")),
        }
    }

    #[test]
    fn run_contract_flags_parse() {
        let config = parse(&[
            "ebpf-guard",
            "run",
            "--mode",
            "audit",
            "--node-name",
            "node-1",
            "--kubelet-root",
            "/var/lib/kubelet",
            "--pin-dir",
            "/sys/fs/bpf/strongroom",
            "--listen",
            "0.0.0.0:9090",
            "--log-format",
            "json",
            "--kube-events",
            "--kubeconfig",
            "/etc/guard/kubeconfig",
            "--kube-events-window-ms",
            "5000",
        ])
        .expect("valid flags");
        assert_eq!(
            config.kubeconfig,
            Some(PathBuf::from("/etc/guard/kubeconfig"))
        );
        assert_eq!(config.kube_events_window, Duration::from_secs(5));
        assert_eq!(config.mode, Mode::Audit);
        assert_eq!(config.node_name, "node-1");
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.kube_events);
        assert_eq!(config.rescan, Duration::from_secs(1));
    }

    #[test]
    fn run_defaults_enforce_and_text() {
        let config = parse(&["ebpf-guard", "run", "--node-name", "n"]).expect("valid");
        assert_eq!(config.mode, Mode::Enforce);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.pin_dir, PathBuf::from("/sys/fs/bpf/strongroom"));
        assert_eq!(config.kubeconfig, None);
        assert_eq!(config.kube_events_window, Duration::from_secs(30));
    }

    #[test]
    fn run_invalid_values_rejected() {
        assert!(parse(&["ebpf-guard", "run", "--node-name", "n", "--mode", "off"]).is_err());
        assert!(parse(&["ebpf-guard", "run", "--node-name", "Bad_Name"]).is_err());
        assert!(parse(&["ebpf-guard", "run", "--node-name", "n", "--pin-dir", "rel"]).is_err());
        assert!(parse(&["ebpf-guard", "run", "--node-name", "n", "--rescan-ms", "1"]).is_err());
    }

    #[test]
    fn detach_and_probe_parse() {
        let cli = Cli::try_parse_from(["ebpf-guard", "detach", "--pin-dir", "/sys/fs/bpf/x"])
            .expect("detach");
        assert!(matches!(cli.command, Command::Detach { .. }));
        let cli = Cli::try_parse_from(["ebpf-guard", "probe"]).expect("probe");
        assert!(matches!(cli.command, Command::Probe));
    }

    #[test]
    fn mode_stricter_enforce_wins() {
        assert_eq!(Mode::Audit.stricter(Some(Mode::Enforce)), Mode::Enforce);
        assert_eq!(Mode::Enforce.stricter(Some(Mode::Audit)), Mode::Enforce);
        assert_eq!(Mode::Audit.stricter(None), Mode::Audit);
    }
}
