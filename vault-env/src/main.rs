//! The `vault-env` binary: `vault-env CMD [ARGS...]` resolves the `vault:` references in its
//! environment and execs `CMD`; `vault-env copy-self DIR` installs itself into `DIR`;
//! `vault-env --version` prints its version. With `VAULT_ENV_DAEMON=true` it starts `CMD` as
//! a child instead and stays to renew secrets (`vault_env::daemon`), exiting with its status.
//!
//! Order of work: make the process non-dumpable, parse the whole configuration, find the
//! command (before any secret is read, so a typo costs no Vault request), log in once,
//! resolve, optionally revoke the token, then exec. Logs go to stderr; the one error line
//! is printed with its chain as `vault-env: error: …` and the exit code is 1.

use std::convert::Infallible;
use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use vault_env::config::{Config, LogConfig};
use vault_env::exec::{EnvBlock, ExecError};
use vault_env::{auth, client, copy_self, daemon, exec, hygiene, resolve};

fn main() -> ExitCode {
    // Before any secret exists: no core dumps, no same-uid ptrace or /proc/self/mem reads.
    let undumpable = hygiene::set_dumpable(false);
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("--version") => {
            println!("vault-env {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("copy-self") => {
            return finish(copy_self_command(&args[1..]).map(|target| {
                eprintln!("vault-env: copied to {}", target.display());
            }));
        }
        _ => {}
    }
    init_logging(Config::log_from_vars(std::env::vars_os()));
    if let Err(error) = undumpable {
        tracing::warn!(%error, "cannot set PR_SET_DUMPABLE=0");
    }
    finish(run(args).map(|never| match never {}))
}

/// Prints the error chain once and maps the outcome to an exit code.
fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vault-env: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn copy_self_command(args: &[OsString]) -> Result<std::path::PathBuf> {
    let [dir] = args else {
        bail!("usage: vault-env copy-self DIR");
    };
    let dir = std::path::Path::new(dir);
    // The mode file first: the guard agent must never see the binary without it.
    if let Some(mode) = std::env::var_os(copy_self::GUARD_MODE_ENV) {
        let mode = mode.to_string_lossy();
        let written = copy_self::write_guard_mode(dir, &mode)?;
        eprintln!(
            "vault-env: guard mode {mode} written to {}",
            written.display()
        );
    }
    Ok(copy_self::copy_self(dir)?)
}

/// Resolve and exec; returns only with an error.
fn run(args: Vec<OsString>) -> Result<Infallible> {
    let Some(command) = args.first() else {
        return Err(ExecError::NoCommand.into());
    };
    let config = Config::from_env().context("invalid configuration")?;
    let program = exec::find_program(command, std::env::var_os("PATH").as_deref())?;
    if config.daemon {
        // Daemon mode: vault-env stays as the app's parent; its exit code is the app's.
        let code = daemon::run(&config, &program, &args, std::env::vars_os().collect())?;
        // Every secret of the daemon was dropped inside `daemon::run`.
        std::process::exit(i32::from(code));
    }

    let environ: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    // Every value is parsed before the first request: a malformed reference costs no login.
    let plan = resolve::Plan::new(&config, environ)?;
    let resolved = if plan.needs_vault() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?;
        let resolved = runtime.block_on(resolve_with_vault(&config, plan))?;
        // The runtime's sockets end here; the token was dropped inside.
        drop(runtime);
        resolved
    } else {
        tracing::info!("no vault: references; starting the app without logging in");
        resolve::Resolved::from_plan_without_vault(plan)
    };
    if !resolved.dropped.is_empty() {
        tracing::warn!(variables = ?resolved.dropped, "variables left out (VAULT_IGNORE_MISSING_SECRETS)");
    }
    if !config.delay.is_zero() {
        tracing::info!(
            delay_ms = config.delay.as_millis() as u64,
            "VAULT_ENV_DELAY: sleeping before exec"
        );
        std::thread::sleep(config.delay);
    }
    let env = EnvBlock::new(resolved.vars)?;
    tracing::info!(program = %program.display(), variables = env.len(), "spawning process");
    Err(exec::exec(&program, &args, env).into())
}

/// One login, every read at once, then the optional revocation of the token.
async fn resolve_with_vault(config: &Config, plan: resolve::Plan) -> Result<resolve::Resolved> {
    let transport = client::Transport::new(&config.client).context("set up the Vault client")?;
    let token = auth::obtain(&transport, &config.auth).await?;
    let resolved = resolve::fetch(&transport, &token, config, plan).await?;
    if config.revoke_token {
        // Bank-Vaults goes on when a policy forbids revoke-self; so do we.
        match auth::revoke(&transport, &token.secret).await {
            Ok(()) => tracing::info!("revoked the Vault token"),
            Err(error) => tracing::warn!(
                error = %format!("{:#}", anyhow::Error::new(error)),
                "failed to revoke the Vault token"
            ),
        }
    }
    Ok(resolved)
}

/// `VAULT_LOG_LEVEL` / `VAULT_JSON_LOG` logging to stderr.
fn init_logging(log: LogConfig) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Our own events at the chosen level; dependencies (hyper, rustls, hickory) only
        // warnings, so that debug logging cannot surface request internals.
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "warn,vault_env={}",
            log.level
        )))
        .with_ansi(false)
        .with_target(false);
    if log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
