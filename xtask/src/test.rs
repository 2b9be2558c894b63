//! `cargo xtask test`: everything CI runs, in order; every step runs, and the run fails if any did.
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
    let mut failed = Vec::new();
    let mut record = |name: &'static str, result: Result<()>| {
        if let Err(error) = result {
            eprintln!("xtask test: {name}: {error:#}");
            failed.push(name);
        }
    };
    if !args.no_lint {
        record(
            "fmt",
            step("fmt", cargo(&["fmt", "--all", "--", "--check"])),
        );
        record(
            "clippy",
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
            ),
        );
    }
    record(
        "tests",
        step(
            "tests",
            cargo(&["test", "--workspace", "--all-targets", "--no-fail-fast"]),
        ),
    );
    record("vm-test", crate::vm::run(&crate::vm::Args::default()));
    record("demo", demo_test());
    record(
        "bench",
        step("bench", cargo(&["xtask", "bench", "--quick"])),
    );
    if !failed.is_empty() {
        bail!("failed steps: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs `cargo xtask demo` non-interactively (debug builds) and checks that its output shows
/// every milestone in order.
fn demo_test() -> Result<()> {
    use std::io::{BufRead as _, BufReader};
    println!("==> demo");
    let started = Instant::now();
    // Through cargo, not `current_exe()`: the tests step rebuilt the xtask binary, so the
    // running executable's path now names a deleted file.
    let mut child = cargo(&["xtask", "demo", "--debug"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("demo: could not start")?;
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child.wait()?;
    let checked = if status.success() {
        crate::demo::check_milestones(&output, true)
    } else {
        Err(anyhow::anyhow!("the demo failed ({status})"))
    };
    println!(
        "<== demo: {} in {:.1}s",
        if checked.is_ok() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    checked
}

/// A `cargo` command run from the workspace root, without the variables `cargo run` set for
/// xtask itself.
///
/// Why: build scripts such as ring's print `rerun-if-env-changed=CARGO_PKG_NAME` (and
/// `CARGO_MANIFEST_DIR`, ...), and cargo compares those against its *own* environment. A
/// nested cargo that inherits xtask's `CARGO_PKG_NAME=xtask` therefore sees ring as changed
/// and rebuilds it and everything above it (TLS, HTTP, Vault client) whenever the previous
/// build of that profile came from a shell or a test: a minute per static build.
pub fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args).current_dir(workspace_root());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_per_package_cargo_var) {
            command.env_remove(name);
        }
    }
    command
}

/// The variables cargo sets for one package's binary or build script (not its own settings
/// such as `CARGO`, `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn is_per_package_cargo_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(
            name,
            "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
        )
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
