//! `daemon-memory`: the shipped (static) `vault-env` in daemon mode renewing 10 database
//! leases against real OpenBao and PostgreSQL, measured by the daemon engineer's
//! `vault-env/examples/daemon_rss.rs` (60 s in full mode, 10 s with `--quick`). Figures: peak
//! RSS against 8 MiB, and the growth between the half-way mark and the end (must be ≤ 0).
//!
//! The example is built beforehand (an [`Entry`](super::Entry) build) and run directly under
//! a deadline of its measuring time plus start-up, so a hang is a clear error.
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::child::run_captured;
use super::measure::static_vault_env;
use super::{BenchContext, Figure};

const LIMIT_MIB: f64 = 8.0;
const LEASES: u64 = 10;
/// Starting PostgreSQL and OpenBao and stopping everything, on a loaded machine.
const SETUP_ALLOWANCE: Duration = Duration::from_secs(90);

pub fn run(context: &BenchContext) -> Result<Vec<Figure>> {
    let vault_env = static_vault_env()?;
    let seconds: u64 = if context.quick { 10 } else { 60 };
    let example = context.profile_dir.join("examples").join("daemon_rss");
    let output = run_captured(
        Command::new(&example)
            .arg(&vault_env)
            .arg(seconds.to_string()),
        &format!("daemon_rss {seconds}"),
        Duration::from_secs(seconds) + SETUP_ALLOWANCE,
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The example exits non-zero over its limits too; only a missing summary is broken.
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| {
            format!(
                "daemon_rss printed no summary ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
    let kib = |key: &str| {
        summary[key]
            .as_u64()
            .with_context(|| format!("summary without {key}: {summary}"))
    };
    let renewals = kib("renewals")?;
    ensure!(
        renewals >= LEASES * seconds / 4,
        "only {renewals} renewals in {seconds} s: renewal was not exercised"
    );
    let peak = kib("peak_rss_kib")? as f64 / 1024.0;
    let growth = kib("min_rss_last_10s_kib")? as f64 - kib("min_rss_around_half_kib")? as f64;
    Ok(vec![
        Figure::limit(
            "daemon-memory",
            &format!("vault-env daemon, 10 leases, {seconds} s: peak RSS"),
            peak,
            "MiB",
            LIMIT_MIB,
        ),
        Figure::limit(
            "daemon-memory",
            "RSS growth over the second half (min last 10 s - min around half)",
            growth,
            "KiB",
            0.0,
        ),
    ])
}
