//! Measures the resident memory of vault-env in daemon mode renewing ten database leases
//! for 60 s, against real OpenBao and PostgreSQL (the figure the daemon-mode issue asks for).
//!
//! ```text
//! cargo build --release -p vault-env --bin vault-env
//! cargo run --release -p vault-env --example daemon_rss [-- /path/to/vault-env [SECONDS]]
//! ```
//!
//! Without a path, the `vault-env` next to the example's directory is used (the binary of
//! the same profile); the figure that matters is the shipped one (`cargo xtask dist`).
//! Samples RSS every second (printing every fifth) and ends with a JSON summary; exits
//! non-zero when the peak is 8 MiB or more, or when RSS grew over the second half of the run.
//! Growth compares the *lowest* sample of the last 10 s with the lowest of the 10 s around
//! the half-way mark: a sample taken while renewals are in flight is up to a few pages
//! higher, and that is not growth.
//!
//! The daemon is owned by a guard that stops it (SIGTERM, SIGKILL after 10 s) on every
//! path, errors included, and its app only sleeps a minute past the run: nothing this
//! program starts can outlive it and keep a caller's output pipes open.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use strongroom_testbed::{OpenBao, Postgres};

const LEASES: usize = 10;
const LIMIT_KIB: u64 = 8 * 1024;
/// How long the daemon may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The vault-env daemon under measurement; stopped when dropped.
struct Daemon {
    child: Child,
}

impl Daemon {
    /// SIGTERM (the daemon forwards it to its app and exits with it), then SIGKILL if it is
    /// still running after [`STOP_GRACE`].
    fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("sending SIGTERM to vault-env")?;
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("vault-env ignored SIGTERM for {STOP_GRACE:?}; killing it");
        self.child.kill()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("stopping vault-env: {error:#}");
        }
    }
}

/// A `/proc/<pid>/status` figure (`VmRSS`, `RssAnon`, `RssFile`) in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field}"))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let binary = match args.next() {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .context("no target dir")?
            .join("vault-env"),
    };
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(60);
    if !binary.exists() {
        bail!("{} not found: build it first", binary.display());
    }

    let pg = Postgres::start()?;
    let bao = OpenBao::start()?;
    bao.enable_database(
        &pg,
        "app",
        Duration::from_secs(4),
        Duration::from_secs(3600),
    )?;
    let role = bao.api("GET", "database/roles/app", None)?["data"].clone();
    let dir = tempfile::tempdir()?;
    let jwt = dir.path().join("jwt");
    std::fs::write(&jwt, bao.issuer().issue("demo", "app-sa")?)?;

    let mut command = Command::new(&binary);
    command
        .arg("/bin/sleep")
        // Long enough for the run; short enough that a leaked app ends on its own.
        .arg((seconds + 60).to_string())
        .env_clear()
        .envs(bao.client_env())
        .env("VAULT_AUTH_METHOD", "kubernetes")
        .env("VAULT_PATH", "kubernetes")
        .env("VAULT_ROLE", "default")
        .env("VAULT_JWT_FILE", &jwt)
        .env("VAULT_ENV_DAEMON", "true")
        .env("VAULT_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        // The app's output is not needed; vault-env's warnings (stderr) are.
        .stdout(Stdio::null());
    for i in 0..LEASES {
        bao.api(
            "POST",
            &format!("database/roles/app{i}"),
            Some(role.clone()),
        )?;
        command.env(
            format!("DB_USER_{i}"),
            format!("vault:database/creds/app{i}#username"),
        );
    }
    let mut daemon = Daemon {
        child: command.spawn().context("start vault-env")?,
    };
    let pid = daemon.child.id();
    let started = Instant::now();
    let mut samples = Vec::new();
    let step = Duration::from_secs(1);
    let mut next = started + step;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += step;
        if let Some(status) = daemon.child.try_wait()? {
            bail!("vault-env exited early: {status}");
        }
        let rss = status_kib(pid, "VmRSS")?;
        let at = started.elapsed().as_secs();
        samples.push((at, rss));
        if !at.is_multiple_of(5) {
            continue;
        }
        println!(
            "t={at:>3}s rss={rss} KiB (anon {} KiB, file {} KiB)",
            status_kib(pid, "RssAnon")?,
            status_kib(pid, "RssFile")?
        );
    }
    let renewals = bao.audit_request_count("sys/leases/renew")?;
    // Its status is the app's (killed by the forwarded SIGTERM): nothing to check.
    daemon.stop()?;

    let peak = samples.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let half = seconds / 2;
    let window_min = |from: u64, to: u64| {
        samples
            .iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .map(|(_, r)| *r)
            .min()
            .unwrap_or(0)
    };
    let at_half = window_min(half.saturating_sub(5), half + 5);
    let at_end = window_min(seconds.saturating_sub(10), seconds);
    let summary = json!({
        "binary": binary.display().to_string(),
        "leases": LEASES,
        "seconds": seconds,
        "renewals": renewals,
        "peak_rss_kib": peak,
        "min_rss_around_half_kib": at_half,
        "min_rss_last_10s_kib": at_end,
        "samples_every_5s": samples.iter().filter(|(t, _)| t.is_multiple_of(5)).collect::<Vec<_>>(),
    });
    println!("{summary}");
    if renewals < LEASES * (seconds as usize) / 4 {
        bail!("too few renewals ({renewals}): the measurement did not exercise renewal");
    }
    if peak >= LIMIT_KIB {
        bail!("peak RSS {peak} KiB is not under {LIMIT_KIB} KiB");
    }
    if at_end > at_half {
        bail!(
            "RSS grew over the last {} s: {at_half} -> {at_end} KiB",
            seconds - half
        );
    }
    Ok(())
}
