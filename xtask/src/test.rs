//! `cargo xtask test`: everything CI runs, in order, stopping at the first failure.
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{deps, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Skip fmt and clippy (for a quick local loop).
    #[arg(long)]
    pub no_lint: bool,
}

pub fn run(args: &Args) -> Result<()> {
    deps::ensure_all()?;
    if !args.no_lint {
        step("fmt", cargo(&["fmt", "--all", "--", "--check"]))?;
        step(
            "clippy",
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    step(
        "tests",
        cargo(&["test", "--workspace", "--all-targets", "--no-fail-fast"]),
    )?;
    crate::vm::run(&crate::vm::Args::default())?;
    Ok(())
}

/// A `cargo` command run from the workspace root.
pub fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args).current_dir(workspace_root());
    command
}

/// Runs one named step with inherited output and reports its duration.
pub fn step(name: &str, mut command: Command) -> Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("{name}: could not start"))?;
    println!(
        "<== {name}: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("step `{name}` failed ({status})");
    }
    Ok(())
}
