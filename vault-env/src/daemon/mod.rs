//! Daemon mode (`VAULT_ENV_DAEMON=true`): vault-env stays in memory as the app's parent,
//! keeps the Vault token and the leases of dynamic secrets alive, forwards signals, reaps
//! zombies, and applies the operator's policy when a secret cannot be renewed any further.
//!
//! The app's environment is built exactly as in exec mode (the same [`Plan`], [`fetch`]
//! and [`EnvBlock`]); it is handed to the app as an explicit `envp` and wiped from
//! vault-env's memory as soon as the app has started. What vault-env keeps while it runs
//! is the token (a [`secrecy::SecretString`], mlocked) and the lease ids. The process is
//! not dumpable (set by `main` before any secret exists), so `/proc/<pid>/{environ,mem}`
//! and ptrace are closed to same-uid processes.
//!
//! Settings (project-owned names; Bank-Vaults has no equivalent): `VAULT_ENV_EXPIRY_POLICY`
//! (`restart|signal|exit`, default `signal`), `VAULT_ENV_GRACE_PERIOD` (SIGTERM to SIGKILL,
//! default 10s), `VAULT_ENV_RENEW_FRACTION` (default 0.67), `VAULT_ENV_REVOKE_ON_EXIT`
//! (default false). Bank-Vaults' `VAULT_REVOKE_TOKEN=true` cannot mean "revoke before
//! starting the app" here (that would revoke the leases the app uses), so in daemon mode
//! it also means revoke on exit.
//!
//! [`Plan`]: crate::resolve::Plan
//! [`fetch`]: crate::resolve::fetch
//! [`EnvBlock`]: crate::exec::EnvBlock

pub mod policy;
pub mod renew;
pub mod supervise;

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{AuthError, VaultToken};
use crate::client::{ClientError, Transport};
use crate::config::{Config, ConfigError};
use crate::exec::{EnvBlock, ExecError};
use crate::resolve::{Plan, ResolveError, Resolved};

pub use policy::ExpiryPolicy;
use renew::Renewer;
use supervise::{Signals, SuperviseError, Wake};

/// The renewal fraction when `VAULT_ENV_RENEW_FRACTION` is unset.
pub const DEFAULT_RENEW_FRACTION: f64 = 2.0 / 3.0;

/// Exit code of vault-env under the `exit` policy, and when the app cannot be restarted.
pub const EXIT_EXPIRED: u8 = 1;

/// Daemon-mode settings, parsed with the rest of the [`Config`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// `VAULT_ENV_RENEW_FRACTION`: share of a TTL after which it is renewed (0.1 to 0.9).
    pub renew_fraction: f64,
    /// `VAULT_ENV_EXPIRY_POLICY`.
    pub expiry_policy: ExpiryPolicy,
    /// `VAULT_ENV_GRACE_PERIOD`: time between SIGTERM and SIGKILL when stopping the app.
    pub grace_period: Duration,
    /// `VAULT_ENV_REVOKE_ON_EXIT`: revoke the leases and the token when the app ends.
    pub revoke_on_exit: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            renew_fraction: DEFAULT_RENEW_FRACTION,
            expiry_policy: ExpiryPolicy::default(),
            grace_period: policy::DEFAULT_GRACE_PERIOD,
            revoke_on_exit: false,
        }
    }
}

impl Settings {
    /// The variables this module reads; they are stripped from the app's environment.
    pub const VARIABLES: [&'static str; 4] = [
        "VAULT_ENV_EXPIRY_POLICY",
        "VAULT_ENV_GRACE_PERIOD",
        "VAULT_ENV_RENEW_FRACTION",
        "VAULT_ENV_REVOKE_ON_EXIT",
    ];

    /// Parses the settings; `get` returns a variable's value (`None` when unset or empty).
    pub fn parse<'a>(
        get: impl Fn(&'static str) -> Result<Option<&'a str>, ConfigError>,
    ) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        if let Some(value) = get("VAULT_ENV_EXPIRY_POLICY")? {
            settings.expiry_policy = value.parse().map_err(|_| ConfigError::Invalid {
                name: "VAULT_ENV_EXPIRY_POLICY",
                value: value.to_owned(),
                expected: "restart, signal or exit",
            })?;
        }
        if let Some(value) = get("VAULT_ENV_GRACE_PERIOD")? {
            settings.grace_period =
                crate::config::parse_duration(value).ok_or_else(|| ConfigError::Invalid {
                    name: "VAULT_ENV_GRACE_PERIOD",
                    value: value.to_owned(),
                    expected: "a duration such as 10s or 500ms",
                })?;
        }
        if let Some(value) = get("VAULT_ENV_RENEW_FRACTION")? {
            settings.renew_fraction = value
                .parse::<f64>()
                .ok()
                .filter(|f| (0.1..=0.9).contains(f))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "VAULT_ENV_RENEW_FRACTION",
                    value: value.to_owned(),
                    expected: "a number from 0.1 to 0.9",
                })?;
        }
        if let Some(value) = get("VAULT_ENV_REVOKE_ON_EXIT")? {
            settings.revoke_on_exit = match value {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "VAULT_ENV_REVOKE_ON_EXIT",
                        value: value.to_owned(),
                        expected: "true or false",
                    });
                }
            };
        }
        Ok(settings)
    }
}

/// A failure that ends daemon mode before the app could be supervised.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The async runtime could not start.
    #[error("start the async runtime")]
    StartRuntime(#[source] std::io::Error),
    /// The Vault transport could not be built.
    #[error("set up the Vault client")]
    Transport(#[source] ClientError),
    /// No token.
    #[error(transparent)]
    Auth(Box<AuthError>),
    /// A reference could not be resolved.
    #[error(transparent)]
    Resolve(Box<ResolveError>),
    /// The environment could not be built.
    #[error(transparent)]
    Env(#[from] ExecError),
    /// The app could not be started or watched.
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
}

// Boxed: the two big errors would make every `Result` of this module large.
impl From<AuthError> for DaemonError {
    fn from(error: AuthError) -> Self {
        DaemonError::Auth(Box::new(error))
    }
}

impl From<ResolveError> for DaemonError {
    fn from(error: ResolveError) -> Self {
        DaemonError::Resolve(Box::new(error))
    }
}

/// Runs `program` with `argv` as a supervised child until it ends; returns vault-env's exit
/// code (the app's code, 128 + signal when it was killed, [`EXIT_EXPIRED`] under the `exit`
/// policy). `environ` is vault-env's own environment (references, never values).
pub fn run(
    config: &Config,
    program: &Path,
    argv: &[OsString],
    environ: Vec<(OsString, OsString)>,
) -> Result<u8, DaemonError> {
    // Every value is parsed before the first request: a malformed reference costs no login.
    let plan = Plan::new(config, environ.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::StartRuntime)?;
    runtime.block_on(daemon(config, program, argv, environ, plan))
}

async fn daemon(
    config: &Config,
    program: &Path,
    argv: &[OsString],
    environ: Vec<(OsString, OsString)>,
    plan: Plan,
) -> Result<u8, DaemonError> {
    let settings = config.daemon_settings;
    let transport = Transport::new(&config.client).map_err(DaemonError::Transport)?;
    let (token, resolved) = login_and_fetch(&transport, config, plan).await?;
    if !config.delay.is_zero() {
        tracing::info!(
            delay_ms = config.delay.as_millis() as u64,
            "VAULT_ENV_DELAY: sleeping before starting the app"
        );
        tokio::time::sleep(config.delay).await;
    }
    let leases = resolved.leases;
    let env = EnvBlock::new(resolved.vars)?;
    // Handlers first: no SIGCHLD or SIGTERM may be lost between spawn and the loop.
    let signals = Signals::install()?;
    let child = supervise::spawn(program, argv, &env)?;
    tracing::info!(program = %program.display(), pid = child.as_raw(), variables = env.len(), policy = %settings.expiry_policy, "daemon mode: app started");
    // The app has its copy; vault-env's is wiped now.
    drop(env);

    let renewer = Renewer::new(
        transport,
        token,
        &leases,
        settings.renew_fraction,
        settings.grace_period,
        config.client.timeout,
    );
    let (event_tx, event_rx) = mpsc::channel(1);
    let (command_tx, command_rx) = mpsc::channel(4);
    let keeper = Keeper {
        config,
        environ,
        settings,
        renewer,
        retired: Vec::new(),
    };
    let supervisor = Supervisor {
        program,
        argv,
        grace: settings.grace_period,
        signals,
        child,
    };
    let (code, ()) = futures::join!(
        supervisor.run(event_rx, command_tx),
        keeper.run(command_rx, event_tx)
    );
    Ok(code)
}

/// Logs in (if any reference needs Vault) and fetches the plan; the token is mlocked.
async fn login_and_fetch(
    transport: &Transport,
    config: &Config,
    plan: Plan,
) -> Result<(Option<VaultToken>, Resolved), DaemonError> {
    if !plan.needs_vault() {
        tracing::info!("no vault: references; supervising the app without logging in");
        return Ok((None, Resolved::from_plan_without_vault(plan)));
    }
    let mut token = crate::auth::obtain(transport, &config.auth).await?;
    crate::hygiene::lock(token.secret.expose_secret().as_bytes());
    if !token.from_login
        && let Some((ttl, renewable)) = renew::lookup_token(transport, &token).await
    {
        // A given token's end ends its leases too: keep it alive (or watch it) as well.
        token.ttl = ttl;
        token.renewable = renewable;
    }
    let resolved = crate::resolve::fetch(transport, &token, config, plan).await?;
    if !resolved.dropped.is_empty() {
        tracing::warn!(variables = ?resolved.dropped, "variables left out (VAULT_IGNORE_MISSING_SECRETS)");
    }
    Ok((Some(token), resolved))
}

/// From the secret keeper to the supervisor.
enum Event {
    /// Stop the app (SIGTERM, grace, SIGKILL); then exit with its status, or with
    /// [`EXIT_EXPIRED`] when `exit_code` is set.
    Stop { exit_code: Option<u8> },
    /// Stop the app and start it again with this environment.
    Restart(EnvBlock),
}

/// From the supervisor to the secret keeper.
enum Command {
    /// The app that used the previous login is gone (restart policy).
    Restarted,
    /// The app is gone for good: revoke if configured, then acknowledge.
    Shutdown(oneshot::Sender<()>),
}

/// The renewal side: schedule, policy decisions, fresh secrets for a restart, revocation.
struct Keeper<'a> {
    config: &'a Config,
    environ: Vec<(OsString, OsString)>,
    settings: Settings,
    renewer: Renewer,
    /// Earlier logins (restart policy): their token and lease ids, revoked (when
    /// configured) once the app that used them is gone.
    retired: Vec<(Option<VaultToken>, Vec<String>)>,
}

impl Keeper<'_> {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, events: mpsc::Sender<Event>) {
        loop {
            let due = self.renewer.next_due();
            let command = tokio::select! {
                command = commands.recv() => command,
                () = wake_at(due) => {
                    let expiry = self.renewer.step().await;
                    // Renewals allocate and free a little each time; give it back so
                    // RSS stays flat over days.
                    crate::hygiene::trim_heap();
                    if let Some(expiry) = expiry {
                        tracing::warn!(subject = %expiry.subject, reason = expiry.reason, policy = %self.settings.expiry_policy, "secret cannot be kept alive; applying the expiry policy");
                        let event = match self.settings.expiry_policy {
                            ExpiryPolicy::Signal => Event::Stop { exit_code: None },
                            ExpiryPolicy::Exit => Event::Stop { exit_code: Some(EXIT_EXPIRED) },
                            ExpiryPolicy::Restart => self.fresh_environment().await,
                        };
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            match command {
                Some(Command::Restarted) => self.revoke_retired().await,
                Some(Command::Shutdown(done)) => {
                    if self.revoking() {
                        // Bounded: a Vault that is down must not keep the pod from ending.
                        let budget = self.config.client.timeout.saturating_mul(2);
                        let revoke = async {
                            self.revoke_retired().await;
                            self.renewer.revoke(self.config.revoke_token).await;
                        };
                        if tokio::time::timeout(budget, revoke).await.is_err() {
                            tracing::warn!(
                                "revocation did not finish in time; leaving the rest to their TTL"
                            );
                        }
                    }
                    let _ = done.send(());
                    return;
                }
                None => return,
            }
        }
    }

    /// Whether leases and tokens are revoked when their app is gone.
    fn revoking(&self) -> bool {
        self.settings.revoke_on_exit || self.config.revoke_token
    }

    /// Revokes (when configured) and forgets the logins of earlier apps; their tokens are
    /// wiped as they are dropped.
    async fn revoke_retired(&mut self) {
        let retired = std::mem::take(&mut self.retired);
        if !self.revoking() {
            return;
        }
        for (token, leases) in &retired {
            if let Some(token) = token {
                renew::revoke(
                    self.renewer.transport(),
                    token,
                    leases,
                    self.config.revoke_token,
                )
                .await;
            }
        }
    }

    /// The restart policy: log in again and read every secret afresh. Retried with backoff
    /// while the old secrets last; if that fails, the app is stopped as under `exit`.
    async fn fresh_environment(&mut self) -> Event {
        let transport = match Transport::new(&self.config.client) {
            Ok(transport) => transport,
            Err(error) => {
                tracing::error!(error = %format!("{:#}", anyhow::Error::new(error)), "restart: cannot build the Vault client");
                return Event::Stop {
                    exit_code: Some(EXIT_EXPIRED),
                };
            }
        };
        // The old secrets are final and end within the grace period plus a second or so:
        // that is the time there is to get new ones.
        let deadline = Instant::now() + self.settings.grace_period + Duration::from_secs(1);
        let mut delay = Duration::from_millis(200);
        loop {
            let outcome = async {
                let plan = Plan::new(self.config, self.environ.clone())?;
                let (token, resolved) = login_and_fetch(&transport, self.config, plan).await?;
                let env = EnvBlock::new(resolved.vars)?;
                Ok::<_, DaemonError>((token, resolved.leases, env))
            }
            .await;
            match outcome {
                Ok((token, leases, env)) => {
                    let (old_token, old_leases) = self.renewer.replace(token, &leases);
                    // Kept (and revoked, when configured) until the old app is gone.
                    self.retired.push((old_token, old_leases));
                    tracing::info!(leases = leases.len(), "restart: fresh secrets read");
                    return Event::Restart(env);
                }
                Err(error) if Instant::now() + delay < deadline => {
                    tracing::warn!(error = %format!("{:#}", anyhow::Error::new(error)), retry_ms = delay.as_millis() as u64, "restart: cannot read fresh secrets; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    tracing::error!(error = %format!("{:#}", anyhow::Error::new(error)), "restart: cannot read fresh secrets; stopping the app");
                    return Event::Stop {
                        exit_code: Some(EXIT_EXPIRED),
                    };
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when nothing is scheduled.
async fn wake_at(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What happens once the app stopped on vault-env's request.
enum After {
    /// Start it again with this environment.
    Restart(EnvBlock),
    /// Exit with the app's status, or with this code.
    Exit(Option<u8>),
}

/// The process side: signals, reaping, stopping and restarting the app.
struct Supervisor<'a> {
    program: &'a Path,
    argv: &'a [OsString],
    grace: Duration,
    signals: Signals,
    child: Pid,
}

impl Supervisor<'_> {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        commands: mpsc::Sender<Command>,
    ) -> u8 {
        // Set while the app is being stopped: when to SIGKILL, and what comes next.
        let mut stopping: Option<(Option<Instant>, After)> = None;
        let mut events_open = true;
        let code = loop {
            let kill_at = stopping.as_ref().and_then(|(at, _)| *at);
            tokio::select! {
                wake = self.signals.next() => match wake {
                    Wake::Forward(signal) => {
                        tracing::debug!(signal, "forwarding signal to the app");
                        supervise::forward(self.child, signal);
                    }
                    Wake::Child => {
                        let Some(status) = supervise::reap(self.child) else { continue };
                        let code = supervise::exit_code(status);
                        match stopping.take() {
                            Some((_, After::Restart(env))) => {
                                match supervise::spawn(self.program, self.argv, &env) {
                                    Ok(pid) => {
                                        tracing::info!(pid = pid.as_raw(), previous_status = code, "restart: app started with fresh secrets");
                                        self.child = pid;
                                        // The old app is gone: its login may be revoked. A full
                                        // queue only defers that to the shutdown.
                                        let _ = commands.try_send(Command::Restarted);
                                    }
                                    Err(error) => {
                                        tracing::error!(error = %format!("{:#}", anyhow::Error::new(error)), "restart: cannot start the app again");
                                        break EXIT_EXPIRED;
                                    }
                                }
                            }
                            Some((_, After::Exit(Some(forced)))) => {
                                tracing::info!(app_status = code, exit_code = forced, "app stopped; exiting (expiry policy exit)");
                                break forced;
                            }
                            Some((_, After::Exit(None))) | None => {
                                tracing::info!(exit_code = code, "app exited");
                                break code;
                            }
                        }
                    }
                },
                _ = wake_at(kill_at) => {
                    tracing::warn!(pid = self.child.as_raw(), grace_ms = self.grace.as_millis() as u64, "app still running after the grace period; sending SIGKILL");
                    supervise::send(self.child, Signal::SIGKILL);
                    if let Some((at, _)) = stopping.as_mut() {
                        *at = None;
                    }
                }
                event = events.recv(), if events_open && stopping.is_none() => {
                    let Some(event) = event else {
                        events_open = false;
                        continue;
                    };
                    let after = match event {
                        Event::Stop { exit_code } => After::Exit(exit_code),
                        Event::Restart(env) => After::Restart(env),
                    };
                    tracing::info!(pid = self.child.as_raw(), grace_ms = self.grace.as_millis() as u64, "stopping the app: SIGTERM");
                    supervise::send(self.child, Signal::SIGTERM);
                    stopping = Some((Some(Instant::now() + self.grace), after));
                }
            }
        };
        // A restart environment that was never used is wiped with `stopping`.
        drop(stopping);
        let (done_tx, done_rx) = oneshot::channel();
        if commands.send(Command::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        // Orphans that ended meanwhile.
        supervise::reap(self.child);
        code
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec![("VAULT_ADDR", "http://127.0.0.1:8200")];
        all.extend_from_slice(vars);
        Config::from_vars(all.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn settings_default_is_bank_vaults_signal_policy() {
        let settings = config(&[]).unwrap().daemon_settings;
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.expiry_policy, ExpiryPolicy::Signal);
        assert_eq!(settings.grace_period, Duration::from_secs(10));
        assert!((settings.renew_fraction - 2.0 / 3.0).abs() < 1e-9);
        assert!(!settings.revoke_on_exit);
    }

    #[test]
    fn settings_parse_every_variable() {
        let settings = config(&[
            ("VAULT_ENV_EXPIRY_POLICY", "restart"),
            ("VAULT_ENV_GRACE_PERIOD", "1m30s"),
            ("VAULT_ENV_RENEW_FRACTION", "0.5"),
            ("VAULT_ENV_REVOKE_ON_EXIT", "true"),
        ])
        .unwrap()
        .daemon_settings;
        assert_eq!(
            settings,
            Settings {
                renew_fraction: 0.5,
                expiry_policy: ExpiryPolicy::Restart,
                grace_period: Duration::from_secs(90),
                revoke_on_exit: true,
            }
        );
    }

    #[test]
    fn settings_bad_values_name_the_variable() {
        for (name, value) in [
            ("VAULT_ENV_EXPIRY_POLICY", "kill"),
            ("VAULT_ENV_GRACE_PERIOD", "soon"),
            ("VAULT_ENV_RENEW_FRACTION", "1.5"),
            ("VAULT_ENV_RENEW_FRACTION", "0"),
            ("VAULT_ENV_REVOKE_ON_EXIT", "yes"),
        ] {
            let error = config(&[(name, value)]).unwrap_err().to_string();
            assert!(error.starts_with(name), "{error}");
        }
    }

    #[test]
    fn settings_variables_are_stripped_from_the_app() {
        let config = config(&[]).unwrap();
        for name in Settings::VARIABLES {
            assert!(config.strips(name), "{name}");
        }
        assert!(config.strips("VAULT_ENV_DAEMON"));
    }
}
