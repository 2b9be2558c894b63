//! `cargo xtask manifests`: re-renders `manifests/rendered/` from the Helm chart.
//!
//! The rendering is Helm's own (Helm v4's Go SDK through `helm-python-sdk`, driven by
//! `manifests/render.py`), so no `helm` binary is needed. The tests in `xtask/tests/manifests.rs`
//! fail when the committed files drift from a fresh render.
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{deps, workspace_root};

/// Lints the chart with every documented values file, then rewrites `manifests/rendered/`.
pub fn run() -> Result<()> {
    deps::ensure_pip(&[("helm-python-sdk", "helm_python")])?;
    let script = workspace_root().join("manifests").join("render.py");
    for action in ["lint", "write"] {
        let status = Command::new("python3")
            .arg(&script)
            .arg(action)
            .current_dir(workspace_root())
            .status()
            .with_context(|| format!("could not run python3 {} {action}", script.display()))?;
        if !status.success() {
            bail!("`python3 manifests/render.py {action}` failed ({status})");
        }
    }
    println!("manifests/rendered/ is up to date");
    Ok(())
}
