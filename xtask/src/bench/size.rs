//! `binary-size`: the shipped `vault-env` (static, stripped, built by `cargo xtask dist`'s
//! build function) against its 6 MiB budget.
use anyhow::{Context as _, Result};

use super::measure::static_vault_env;
use super::{BenchContext, Figure};

/// The size budget of the static, stripped `vault-env`, in MiB.
const BUDGET_MIB: f64 = 6.0;

pub fn run(_context: &BenchContext) -> Result<Vec<Figure>> {
    let binary = static_vault_env()?;
    let bytes = std::fs::metadata(&binary)
        .with_context(|| format!("stat {}", binary.display()))?
        .len();
    Ok(vec![Figure::limit(
        "binary-size",
        "vault-env static stripped size",
        bytes as f64 / (1024.0 * 1024.0),
        "MiB",
        BUDGET_MIB,
    )])
}
