//! `cargo xtask bench [--quick]`: benchmarks, each a ratio against a baseline measured in the
//! same run. Writes `target/bench/report.json` and prints a table.
//!
//! Every benchmark is an [`Entry`] in [`ENTRIES`] returning [`Figure`]s; add vault-env exec
//! overhead, secret startup, daemon memory, binary size, registry cache or guard overhead as
//! further entries. `--quick` shortens every entry and never fails on a ratio, only on a
//! benchmark that could not run or got wrong answers.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::workspace_root;

mod daemon;
mod exec;
mod measure;
mod size;
mod startup;

#[derive(clap::Args)]
pub struct Args {
    /// Short runs (under a minute with release binaries built); ratios are reported, not enforced.
    #[arg(long)]
    pub quick: bool,
    /// Run only the entry with this name.
    #[arg(long)]
    pub only: Option<String>,
}

/// One measured figure, as written to the report.
#[derive(Debug, Clone)]
pub struct Figure {
    pub bench: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    pub target: Option<f64>,
    pub pass: bool,
}

impl Figure {
    fn from_json(value: &Value) -> Result<Self> {
        let text = |key: &str| {
            value[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("figure without {key}: {value}"))
        };
        Ok(Self {
            bench: text("bench")?,
            name: text("name")?,
            value: value["value"].as_f64().context("figure without value")?,
            unit: text("unit")?,
            baseline: value["baseline"].as_f64(),
            ratio: value["ratio"].as_f64(),
            target: value["target"].as_f64(),
            pass: value["pass"].as_bool().unwrap_or(false),
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "bench": self.bench,
            "figure": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": self.target,
            "pass": self.pass,
        })
    }
}

/// What an entry gets: build outputs and the mode.
pub struct BenchContext {
    pub quick: bool,
    pub release_dir: PathBuf,
}

/// A benchmark.
pub struct Entry {
    pub name: &'static str,
    /// Release binaries (package, binary) the entry needs.
    pub binaries: &'static [(&'static str, &'static str)],
    pub run: fn(&BenchContext) -> Result<Vec<Figure>>,
}

/// The benchmarks, in run order.
pub const ENTRIES: &[Entry] = &[
    Entry {
        name: "admission",
        binaries: &[("vault-secrets-webhook", "vault-secrets-webhook")],
        run: admission,
    },
    Entry {
        name: "binary-size",
        binaries: &[],
        run: size::run,
    },
    Entry {
        name: "exec-overhead",
        binaries: &[],
        run: exec::run,
    },
    Entry {
        name: "secret-startup",
        binaries: &[],
        run: startup::run,
    },
    Entry {
        name: "daemon-memory",
        binaries: &[],
        run: daemon::run,
    },
];

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let entries: Vec<&Entry> = ENTRIES
        .iter()
        .filter(|e| args.only.as_deref().is_none_or(|only| only == e.name))
        .collect();
    if entries.is_empty() {
        bail!("no benchmark named {:?}", args.only);
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    for entry in &entries {
        for (package, bin) in entry.binaries {
            build_release(package, bin)?;
        }
    }
    let context = BenchContext {
        quick: args.quick,
        release_dir: target_dir.join("release"),
    };
    let mut figures = Vec::new();
    for entry in &entries {
        let entry_started = Instant::now();
        let result =
            (entry.run)(&context).with_context(|| format!("benchmark {} is broken", entry.name))?;
        eprintln!(
            "xtask bench: {} took {:.1} s",
            entry.name,
            entry_started.elapsed().as_secs_f64()
        );
        figures.extend(result);
    }
    let report_dir = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("creating {}", report_dir.display()))?;
    let report = json!({
        "quick": args.quick,
        "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
    });
    let path = report_dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    print_table(&figures);
    println!(
        "report: {} ({:.1} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&Figure> = figures.iter().filter(|f| !f.pass).collect();
    if !failed.is_empty() && !args.quick {
        let names: Vec<&str> = failed.iter().map(|f| f.name.as_str()).collect();
        bail!("over target: {}", names.join("; "));
    }
    Ok(())
}

fn build_release(package: &str, bin: &str) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", package, "--bin", bin])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release -p {package} failed");
    }
    Ok(())
}

fn print_table(figures: &[Figure]) {
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    println!(
        "{:<11} {:<68} {:>11} {:>11} {:<10} {:>7} {:>7} {:<4}",
        "bench", "figure", "value", "baseline", "unit", "ratio", "target", "ok"
    );
    for f in figures {
        println!(
            "{:<11} {:<68} {:>11.3} {:>11} {:<10} {:>7} {:>7} {:<4}",
            f.bench,
            f.name,
            f.value,
            fmt(f.baseline),
            f.unit,
            fmt(f.ratio),
            fmt(f.target),
            if f.pass { "yes" } else { "NO" }
        );
    }
}

/// Webhook admission latency against the no-op rustls server on the same stack
/// (`vault-secrets-webhook bench-admission` does the measuring; see `webhook/src/bench.rs`).
fn admission(context: &BenchContext) -> Result<Vec<Figure>> {
    let binary = context.release_dir.join("vault-secrets-webhook");
    let output = run_json(&binary, context.quick)?;
    let figures: Vec<Value> =
        serde_json::from_str(output.trim()).context("parsing bench-admission output")?;
    figures.iter().map(Figure::from_json).collect()
}

fn run_json(binary: &Path, quick: bool) -> Result<String> {
    let mut command = Command::new(binary);
    command.arg("bench-admission");
    if quick {
        command.arg("--quick");
    }
    let output = command
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "{} bench-admission failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).context("bench-admission output is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_from_json_reads_bench_admission_output() {
        let value = json!({
            "bench": "admission", "name": "p99 latency at 200 reviews/s", "value": 1.2,
            "unit": "ms", "baseline": 1.0, "ratio": 1.2, "target": 1.5, "pass": true,
        });
        let figure = Figure::from_json(&value).map_err(|e| e.to_string());
        let Ok(figure) = figure else {
            panic!("{figure:?}");
        };
        assert_eq!(figure.ratio, Some(1.2));
        assert!(figure.pass);
        assert_eq!(figure.to_json()["figure"], "p99 latency at 200 reviews/s");
    }

    #[test]
    fn figure_from_json_without_value_is_an_error() {
        assert!(Figure::from_json(&json!({"bench": "x", "name": "y", "unit": "ms"})).is_err());
    }
}
