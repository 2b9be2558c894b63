//! `exec-overhead`: `vault-env /bin/true` with no `vault:` references against a minimal static
//! C exec wrapper (`exec_wrapper.c`, `gcc -static -O2`). Each round times a loop of
//! spawn+wait of one, then the other (interleaved); the figure is the median per-exec time.
//!
//! vault-env requires `VAULT_ADDR` even when nothing references Vault (its configuration is
//! parsed before the plan), so it gets an address nothing listens on; with no references it
//! never connects.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};

use super::measure::{median, run_once, static_vault_env};
use super::{BenchContext, Figure};

const TARGET_RATIO: f64 = 1.3;

pub fn run(context: &BenchContext) -> Result<Vec<Figure>> {
    let vault_env = static_vault_env()?;
    let dir = tempfile::tempdir().context("tempdir for the C wrapper")?;
    let wrapper = build_wrapper(dir.path())?;
    let (rounds, loops) = if context.quick { (3, 30) } else { (7, 300) };
    let mut subject = Vec::new();
    let mut baseline = Vec::new();
    for _ in 0..rounds {
        subject.push(per_exec_us(&vault_env, loops)?);
        baseline.push(per_exec_us(&wrapper, loops)?);
    }
    Ok(vec![Figure::compared(
        "exec-overhead",
        "vault-env /bin/true, no references, per exec vs static C wrapper",
        (median(&subject), median(&baseline)),
        "us",
        Some(TARGET_RATIO),
    )])
}

/// Compiles `exec_wrapper.c` statically into `dir`.
fn build_wrapper(dir: &Path) -> Result<PathBuf> {
    let source = crate::workspace_root().join("xtask/src/bench/exec_wrapper.c");
    let out = dir.join("exec_wrapper");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .context("running gcc")?;
    ensure!(
        status.success(),
        "gcc -static of {} failed",
        source.display()
    );
    Ok(out)
}

/// Mean microseconds of `loops` spawn+wait of `wrapper /bin/true`.
fn per_exec_us(wrapper: &Path, loops: u32) -> Result<f64> {
    let mut total = 0.0;
    for _ in 0..loops {
        let mut command = Command::new(wrapper);
        command
            .arg("/bin/true")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("VAULT_ADDR", "http://127.0.0.1:9");
        total += run_once(&mut command)?.as_secs_f64();
    }
    Ok(total * 1e6 / f64::from(loops))
}
