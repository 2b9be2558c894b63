//! `cargo xtask bench [--quick] [--only NAME]`: benchmarks, each a ratio against a baseline
//! measured in the same run or an absolute budget. Writes `target/bench/report.json` and
//! prints a table.
//!
//! Every benchmark is an [`Entry`] in [`ENTRIES`] returning [`Figure`]s. Every child process
//! an entry starts runs under a hard deadline ([`child`]), so a hang is reported as a broken
//! benchmark instead of stalling the run. `--quick` is the smoke run of `cargo xtask test`:
//! short rounds, the debug builds that step already made, entries too slow for it skipped
//! with a printed reason; it fails only on a benchmark that could not run or got wrong
//! answers, never on a figure over its target. The full run fails on a missed target too.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::test::cargo;
use crate::workspace_root;

mod child;
mod daemon;
mod exec;
#[path = "../../webhook/src/bench/figure.rs"]
#[allow(
    dead_code,
    reason = "one file shared with the webhook, which uses all of it; xtask uses most"
)]
mod figure;
mod guard;
mod measure;
mod registry;
mod size;
mod startup;

pub use figure::Figure;

#[derive(clap::Args)]
pub struct Args {
    /// Smoke run: short rounds on the debug builds `cargo xtask test` made; figures are
    /// reported, targets are not enforced.
    #[arg(long)]
    pub quick: bool,
    /// Run only the entry with this name.
    #[arg(long)]
    pub only: Option<String>,
}

/// What an entry gets: the mode and where its driver binaries are.
pub struct BenchContext {
    pub quick: bool,
    /// `<target>/debug` with `--quick`, `<target>/release` otherwise.
    pub profile_dir: PathBuf,
}

/// A cargo target an entry runs (built before any entry starts).
#[derive(PartialEq)]
pub enum Build {
    /// `--bin NAME` of a package.
    Bin(&'static str, &'static str),
    /// `--example NAME` of a package.
    Example(&'static str, &'static str),
}

/// A benchmark.
pub struct Entry {
    pub name: &'static str,
    pub builds: &'static [Build],
    /// Why `--quick` skips this entry, if it does.
    pub quick_skip: Option<&'static str>,
    pub run: fn(&BenchContext) -> Result<Vec<Figure>>,
}

const WEBHOOK: Build = Build::Bin("vault-secrets-webhook", "vault-secrets-webhook");

/// The benchmarks, in run order.
pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "admission",
        builds: &[WEBHOOK],
        quick_skip: None,
        run: admission,
    },
    Entry {
        name: "binary-size",
        builds: &[],
        quick_skip: None,
        run: size::run,
    },
    Entry {
        name: "exec-overhead",
        builds: &[],
        quick_skip: None,
        run: exec::run,
    },
    Entry {
        name: "secret-startup",
        builds: &[],
        quick_skip: None,
        run: startup::run,
    },
    Entry {
        name: "daemon-memory",
        builds: &[Build::Example("vault-env", "daemon_rss")],
        quick_skip: None,
        run: daemon::run,
    },
    Entry {
        name: "registry-cache",
        builds: &[WEBHOOK],
        quick_skip: None,
        run: registry::run,
    },
    Entry {
        name: "guard-overhead",
        builds: &[],
        quick_skip: Some(guard::QUICK_SKIP),
        run: guard::run,
    },
];

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let entries: Vec<&Entry> = ENTRIES
        .iter()
        .filter(|e| args.only.as_deref().is_none_or(|only| only == e.name))
        .collect();
    if entries.is_empty() {
        let names: Vec<&str> = ENTRIES.iter().map(|e| e.name).collect();
        bail!(
            "no benchmark named {:?} (there are: {})",
            args.only,
            names.join(", ")
        );
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let context = BenchContext {
        quick: args.quick,
        profile_dir: target_dir.join(if args.quick { "debug" } else { "release" }),
    };
    let runnable: Vec<&Entry> = entries
        .into_iter()
        .filter(|entry| match entry.quick_skip {
            Some(reason) if args.quick && args.only.is_none() => {
                println!("xtask bench: {} skipped in --quick: {reason}", entry.name);
                false
            }
            _ => true,
        })
        .collect();
    let mut builds: Vec<&Build> = Vec::new();
    for build in runnable.iter().flat_map(|e| e.builds) {
        if !builds.contains(&build) {
            builds.push(build);
        }
    }
    cargo_build(&builds, args.quick)?;
    let built = started.elapsed();
    let mut figures = Vec::new();
    // A broken entry does not discard the others' figures: all run, then the run fails.
    let mut broken = Vec::new();
    for entry in &runnable {
        let entry_started = Instant::now();
        match (entry.run)(&context) {
            Ok(result) => figures.extend(result),
            Err(error) => {
                eprintln!("xtask bench: benchmark {} is broken: {error:#}", entry.name);
                broken.push(entry.name);
            }
        }
        eprintln!(
            "xtask bench: {} took {:.1} s",
            entry.name,
            entry_started.elapsed().as_secs_f64()
        );
    }
    let report_dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("creating {}", report_dir.display()))?;
    let report = json!({
        "quick": args.quick,
        "broken": broken,
        "profile": if args.quick { "debug" } else { "release" },
        "figures": figures,
    });
    let path = report_dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    print_table(&figures);
    println!(
        "report: {} (builds {:.1} s, benchmarks {:.1} s)",
        path.display(),
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
    );
    if !broken.is_empty() {
        bail!("broken benchmarks: {}", broken.join(", "));
    }
    let failed: Vec<&Figure> = figures.iter().filter(|f| !f.pass).collect();
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|f| format!("{}: {}", f.bench, f.name))
            .collect();
        if args.quick {
            println!(
                "over target (not enforced with --quick): {}",
                names.join("; ")
            );
        } else {
            bail!("over target: {}", names.join("; "));
        }
    }
    Ok(())
}

/// Builds what the entries run (no deadline: a slow build on a loaded machine is not a
/// broken benchmark).
///
/// `--quick` builds exactly what the tests step of `cargo xtask test` builds
/// (`cargo test --workspace --all-targets`, which includes every binary and example): any
/// other selection unifies dependency features differently and would rebuild much of the
/// workspace right after that step. The full run builds release binaries of `builds`.
fn cargo_build(builds: &[&Build], quick: bool) -> Result<()> {
    let mut commands = Vec::new();
    if quick {
        commands.push(cargo(&["test", "--workspace", "--all-targets", "--no-run"]));
        // `cargo test` builds examples only as test harnesses; daemon-memory runs the real
        // `daemon_rss`. The whole workspace keeps the tests step's feature unification.
        commands.push(cargo(&["build", "--workspace", "--examples"]));
    }
    for build in builds.iter().filter(|_| !quick) {
        let (package, kind, name) = match build {
            Build::Bin(package, bin) => (package, "--bin", bin),
            Build::Example(package, example) => (package, "--example", example),
        };
        commands.push(cargo(&["build", "--release", "-p", package, kind, name]));
    }
    for mut command in commands {
        let status = command.status().context("running cargo")?;
        if !status.success() {
            bail!("building the benchmarks' binaries failed: {command:?}");
        }
    }
    Ok(())
}

fn print_table(figures: &[Figure]) {
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    println!(
        "{:<15} {:<68} {:>11} {:>11} {:<10} {:>7} {:>8} {:<4}",
        "bench", "figure", "value", "baseline", "unit", "ratio", "target", "ok"
    );
    for f in figures {
        let target = f.target.map_or_else(
            || "-".to_owned(),
            |t| format!("{}{t:.3}", if f.at_least { ">=" } else { "<=" }),
        );
        println!(
            "{:<15} {:<68} {:>11.3} {:>11} {:<10} {:>7} {:>8} {:<4}",
            f.bench,
            f.name,
            f.value,
            fmt(f.baseline),
            f.unit,
            fmt(f.ratio),
            target,
            if f.pass { "yes" } else { "NO" }
        );
    }
}

/// Runs a `vault-secrets-webhook` bench subcommand under `limit` and reads the figures it
/// prints as JSON on stdout.
pub fn webhook_figures(
    context: &BenchContext,
    args: &[std::ffi::OsString],
    limit: Duration,
) -> Result<Vec<Figure>> {
    let binary = context.profile_dir.join("vault-secrets-webhook");
    let what = format!(
        "vault-secrets-webhook {}",
        args.first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let mut command = Command::new(&binary);
    command.args(["--log-level", "warn"]).args(args);
    if context.quick {
        command.arg("--quick");
    }
    let output = child::run_captured(&mut command, &what, limit)?;
    child::ensure_success(&output, &what)?;
    parse_figures(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("reading the figures {what} printed"))
}

/// The last line of `stdout` that is a JSON array of figures.
fn parse_figures(stdout: &str) -> Result<Vec<Figure>> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('['))
        .context("no JSON array of figures on stdout")?;
    serde_json::from_str(line.trim()).context("not a JSON array of figures")
}

/// Webhook admission latency, throughput and mutation cost against the no-op rustls server
/// on the same stack (`vault-secrets-webhook bench-admission`; see `webhook/src/bench.rs`).
fn admission(context: &BenchContext) -> Result<Vec<Figure>> {
    let limit = Duration::from_secs(if context.quick { 180 } else { 600 });
    webhook_figures(context, &["bench-admission".into()], limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_figures_reads_the_webhook_types_output_after_log_lines() {
        // What the webhook binary prints: its own copy of `Figure`, serialised.
        let printed = vec![
            webhook::bench::Figure::compared("admission", "p99", (1.2, 1.0), "ms", Some(1.5)),
            webhook::bench::Figure::limit("registry-cache", "hit", 60.0, "us", 50.0),
        ];
        let stdout = format!(
            "WARN something\n{}\n",
            serde_json::to_string(&printed).unwrap_or_default()
        );
        let parsed = parse_figures(&stdout).map_err(|e| format!("{e:#}"));
        let Ok(parsed) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].ratio, Some(1.2));
        assert!(parsed[0].pass);
        assert!(!parsed[1].pass);
        assert_eq!(
            serde_json::to_value(&parsed).ok(),
            serde_json::to_value(&printed).ok()
        );
    }

    #[test]
    fn parse_figures_without_an_array_is_an_error() {
        assert!(parse_figures("error: registry unreachable\n").is_err());
        assert!(parse_figures("[{\"bench\": \"x\"}]\n").is_err());
    }

    #[test]
    fn entries_have_unique_names_and_quick_skips_only_the_guard() {
        let mut names: Vec<&str> = ENTRIES.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ENTRIES.len());
        let skipped: Vec<&str> = ENTRIES
            .iter()
            .filter(|e| e.quick_skip.is_some())
            .map(|e| e.name)
            .collect();
        assert_eq!(skipped, ["guard-overhead"]);
    }
}
