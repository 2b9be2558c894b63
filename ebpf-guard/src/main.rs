//! The `ebpf-guard` agent: `run`, `detach` and `probe` (see `ebpf-guard --help`).
mod agent;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use ebpf_guard::config::{Cli, Command, LogFormat, RunConfig};
use ebpf_guard::loader::{self, LsmSupport};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The Kubernetes client builds its TLS config from the process default: make it ring's
    // (the only provider compiled in) explicitly rather than by crate-feature inference.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Probe => {
            let support = loader::probe_lsm(std::path::Path::new(loader::LSM_PATH));
            println!("{}", support.message());
            return if support == LsmSupport::Usable {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::Detach { pin_dir } => loader::detach(&pin_dir)
            .map(|removed| println!("unpinned {removed} objects from {}", pin_dir.display()))
            .with_context(|| format!("detach {}", pin_dir.display())),
        Command::Run(args) => RunConfig::try_from(args)
            .context("invalid arguments")
            .and_then(|config| {
                init_logging(config.log_format);
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("start the tokio runtime")?
                    .block_on(agent::run(config))
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ebpf-guard: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; stdout carries only audit events (one JSON line each).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
