//! Project tasks: `cargo xtask test | demo | bench | vm-test | dist`.
//!
//! Each subcommand lives in its own module; `deps` installs what a fresh machine lacks.
mod bench;
mod demo;
mod deps;
mod dist;
mod images;
mod manifests;
mod test;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Strongroom project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything CI runs: fmt, clippy -D warnings, unit and integration tests, VM tests.
    Test(test::Args),
    /// Boot the QEMU guest and run the ebpf-guard scenarios (`--scenario NAME` to pick).
    VmTest(vm::Args),
    /// The whole job end to end on this machine: Vault, webhook, a mutated pod run locally.
    Demo(demo::Args),
    /// Install the system packages and Python tools the tests and demo need.
    Deps,
    /// Static, stripped release binaries in target/dist/ (fails over the size budget) and OCI image layouts in target/dist/images/.
    Dist,
    /// Re-render manifests/rendered/ from the Helm chart (after linting it).
    Manifests,
    /// Benchmarks against same-run baselines; writes target/bench/report.json.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Deps => deps::ensure_all(),
        Command::Dist => dist::run(),
        Command::Manifests => manifests::run(),
        Command::Bench(args) => bench::run(&args),
        Command::VmTest(args) => vm::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
