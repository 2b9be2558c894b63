//! Shared measuring helpers of the vault-env benchmarks: the static `vault-env` build,
//! spawn+wait timing (under a deadline), peak RSS through `/usr/bin/time -f %M` and medians.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use super::child::run_timed;

/// Deadline of one measured run (a vault-env start, a `bao agent` one-shot): they take
/// milliseconds, so this only ever fires on a hang.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Builds the shipped `vault-env` (static, stripped, `dist` profile) through `cargo xtask
/// dist`'s own build function and returns its path. `XTASK_BENCH_VAULT_ENV=PATH` benches an
/// already-built binary instead (e.g. while another `cargo xtask dist` holds the build lock).
pub fn static_vault_env() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("XTASK_BENCH_VAULT_ENV") {
        return Ok(PathBuf::from(path));
    }
    crate::dist::build_named("vault-env")
}

/// Runs `command` to completion with null stdin/stdout, killed after a minute; fails unless
/// it exits 0. Returns the wall time from spawn to exit.
pub fn run_once(command: &mut Command) -> Result<Duration> {
    let what = command.get_program().to_string_lossy().into_owned();
    let (status, stderr, elapsed) = run_timed(command, &what, RUN_LIMIT)?;
    ensure!(
        status.success(),
        "{what} exited with {status}: {}",
        stderr.trim()
    );
    Ok(elapsed)
}

/// Peak resident set size of `command` in KiB: `/usr/bin/time -f %M` reports the child's
/// `ru_maxrss` from `wait4`, so no unsafe code is needed here.
pub fn peak_rss_kib(command: &Command) -> Result<u64> {
    let dir = tempfile::tempdir().context("tempdir for time output")?;
    let out = dir.path().join("rss");
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M", "-o"])
        .arg(&out)
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(cwd) = command.get_current_dir() {
        timed.current_dir(cwd);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    run_once(&mut timed)?;
    let text = std::fs::read_to_string(&out).context("reading /usr/bin/time output")?;
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("unexpected /usr/bin/time output {text:?}"))
}

/// The median of `values` (not empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts_is_the_middle() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < f64::EPSILON);
    }

    #[test]
    fn peak_rss_of_true_is_small_and_nonzero() {
        let rss = peak_rss_kib(&Command::new("/bin/true")).map_err(|e| format!("{e:#}"));
        let Ok(rss) = rss else { panic!("{rss:?}") };
        assert!(rss > 0 && rss < 100 * 1024, "{rss} KiB");
    }
}
