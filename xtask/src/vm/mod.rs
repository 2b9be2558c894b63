//! `cargo xtask vm-test`: proves the ebpf-guard in a real kernel.
//!
//! Builds the static guest binaries (C probes with `gcc -static`; `vault-env` and the guard
//! agent as `cargo xtask dist` ships them), packs them with busybox-static and the scenario scripts of
//! `ebpf-guard/tests/vm/` into an initramfs, boots Debian's cloud kernel in QEMU (TCG) with the
//! BPF LSM enabled, and reads the results back from the serial console. The selected scenarios
//! run in one boot per guest clock: real time for the enforcement tests, and a second boot with
//! QEMU's instruction counter as the clock for the scenarios that measure time (header
//! `# vmtest: clock=icount`), whose figures would otherwise follow the host's load. The guest
//! side is documented in `ebpf-guard/tests/vm/README.md`.
mod build;
mod cpio;
mod kernel;
mod qemu;
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::workspace_root;
use report::Report;

/// Options of `cargo xtask vm-test`.
#[derive(clap::Args)]
pub struct Args {
    /// Run only these scenarios (file names without `.sh`; a trailing `*` matches a prefix).
    /// Default: every script in `ebpf-guard/tests/vm/scenarios/`.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Kill a guest after this many seconds (each boot).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Echo the serial console while the guest runs.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Time limit of each boot. The real-clock boot takes about 1.5 minutes under TCG on a loaded
/// 2-core host, the icount boot under one; single scenarios have their own limits
/// (`# vmtest: timeout=`, in guest time).
const DEFAULT_TIMEOUT_SECS: u64 = 600;
/// Console logs kept in `target/vm/`.
const KEEP_LOGS: usize = 20;

impl Default for Args {
    /// What `cargo xtask test` runs: every scenario, quietly.
    fn default() -> Self {
        Args {
            scenarios: Vec::new(),
            timeout: DEFAULT_TIMEOUT_SECS,
            verbose: false,
        }
    }
}

/// A scenario script and what it needs in the guest.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// From the `# vmtest: needs=guard` header line.
    pub needs_guard: bool,
    /// From the `# vmtest: clock=icount` header line (default real time).
    pub clock: Clock,
}

/// How time passes in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Host time: TCG with two vCPUs in parallel threads (the default).
    Real,
    /// QEMU `-icount shift=0,sleep=off` on one vCPU: guest time advances by exactly 1 ns per
    /// executed instruction and skips idle time, so a timing in the guest counts the
    /// instructions it took, whatever else the host is doing.
    Icount,
}

impl Clock {
    fn name(self) -> &'static str {
        match self {
            Clock::Real => "real",
            Clock::Icount => "icount",
        }
    }
}

/// Paths the harness works with.
pub struct Layout {
    /// `ebpf-guard/tests/vm`: the guest-side sources.
    pub tests: PathBuf,
    /// `target/vm`: kernel cache, built probes, initramfs, console logs.
    pub work: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    let root = workspace_root();
    let layout = Layout {
        tests: root.join("ebpf-guard/tests/vm"),
        work: root.join("target/vm"),
    };
    fs::create_dir_all(&layout.work)
        .with_context(|| format!("creating {}", layout.work.display()))?;

    let all = discover(&layout.tests.join("scenarios"))?;
    let selected = select(&all, &args.scenarios)?;
    println!(
        "[vm] scenarios: {}",
        selected
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );

    let kernel = kernel::ensure(&layout.work)?;
    let guest = build::guest_binaries(&layout, selected.iter().any(|s| s.needs_guard))?;
    let mut runnable = Vec::new();
    let mut skipped = Vec::new();
    for scenario in selected {
        if scenario.needs_guard && guest.guard.is_none() {
            skipped.push(scenario.name);
        } else {
            runnable.push(scenario);
        }
    }
    let mut boots: Vec<(Clock, Vec<String>)> = Vec::new();
    for clock in [Clock::Real, Clock::Icount] {
        let names: Vec<String> = runnable
            .iter()
            .filter(|s| s.clock == clock)
            .map(|s| s.name.clone())
            .collect();
        if !names.is_empty() {
            boots.push((clock, names));
        }
    }
    if boots.is_empty() {
        // Nothing runnable: still boot once, so the LSM list is checked and reported.
        boots.push((Clock::Real, Vec::new()));
    }

    let mut failures = Vec::new();
    for (clock, names) in &boots {
        let (mut report, log_path) =
            boot_and_report(&layout, &kernel, &guest, *clock, names, args)?;
        if *clock == boots[0].0 {
            for name in &skipped {
                report.errors.push(format!(
                    "scenario {name} needs the guard agent, which did not build (see above)"
                ));
            }
        }
        println!("[vm] results ({}):", log_path.display());
        println!("{}", report.summary());
        if !report.ok() {
            failures.push(format!(
                "{} failed checks, {} harness errors (console log: {})",
                report.failed(),
                report.errors.len(),
                log_path.display()
            ));
        }
    }
    if !failures.is_empty() {
        bail!("vm-test failed: {}", failures.join("; "));
    }
    Ok(())
}

/// One boot running `names` with `clock`: returns its report and its console log's path.
fn boot_and_report(
    layout: &Layout,
    kernel: &kernel::Kernel,
    guest: &build::GuestBinaries,
    clock: Clock,
    names: &[String],
    args: &Args,
) -> Result<(Report, PathBuf)> {
    // Per-run names: two runs at once (a developer and CI) must not share files.
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_name = format!("run-{stamp}-{}-{}", std::process::id(), clock.name());
    let initramfs = layout.work.join(format!("{run_name}.cpio"));
    build::initramfs(layout, guest, &initramfs)?;
    let log_path = layout.work.join(format!("{run_name}.log"));
    let cmdline = format!(
        "console=ttyS0 lsm=lockdown,capability,landlock,yama,apparmor,bpf panic=-1 quiet \
         VMTEST_SCENARIOS={} VMTEST_GUARD={} VMTEST_CLOCK={}",
        names.join(","),
        u8::from(guest.guard.is_some()),
        clock.name(),
    );
    println!(
        "[vm] booting {} with the {} clock (log: {})",
        kernel.package,
        clock.name(),
        log_path.display()
    );
    let outcome = qemu::boot(
        &kernel.vmlinuz,
        &initramfs,
        &cmdline,
        clock,
        &log_path,
        Duration::from_secs(args.timeout),
        args.verbose,
    );
    let _ = fs::remove_file(&initramfs);
    let outcome = outcome?;
    let latest = layout.work.join("latest.log");
    let _ = fs::remove_file(&latest);
    let _ = fs::copy(&log_path, &latest);
    prune_logs(&layout.work);

    let mut report = Report::parse(&outcome.console, names);
    if outcome.timed_out {
        report.errors.push(format!(
            "timeout: the guest ran longer than {}s",
            args.timeout
        ));
    }
    println!(
        "[vm] {} clock: boot to init {:.1}s (guest uptime {}), whole guest run {:.1}s",
        clock.name(),
        outcome.booted_after.map_or(f64::NAN, |d| d.as_secs_f64()),
        report
            .booted_uptime
            .map_or_else(|| "?".to_string(), |u| format!("{u:.1}s")),
        outcome.elapsed.as_secs_f64()
    );
    Ok((report, log_path))
}

/// Deletes all but the newest `KEEP_LOGS` run logs (names sort by start time).
fn prune_logs(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("run-") && n.ends_with(".log"))
        })
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(KEEP_LOGS);
    for old in &logs[..excess] {
        let _ = fs::remove_file(old);
    }
}

/// Every `scenarios/*.sh`, sorted by name, with its `# vmtest: needs=` header.
fn discover(dir: &Path) -> Result<Vec<Scenario>> {
    let mut scenarios = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".sh"))
        else {
            continue;
        };
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let clock = match header(&text, "clock") {
            None | Some("real") => Clock::Real,
            Some("icount") => Clock::Icount,
            Some(other) => bail!("{}: unknown `# vmtest: clock={other}`", path.display()),
        };
        scenarios.push(Scenario {
            name: name.to_string(),
            needs_guard: needs(&text).iter().any(|n| n == "guard"),
            clock,
        });
    }
    scenarios.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scenarios)
}

/// The value of the first `# vmtest: KEY=` header line.
fn header<'a>(script: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("# vmtest: {key}=");
    script
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(str::trim)
}

/// The comma-separated list of the first `# vmtest: needs=` line.
fn needs(script: &str) -> Vec<String> {
    header(script, "needs")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn select(all: &[Scenario], patterns: &[String]) -> Result<Vec<Scenario>> {
    if patterns.is_empty() {
        return Ok(all.to_vec());
    }
    let mut selected: Vec<Scenario> = Vec::new();
    for pattern in patterns {
        let matching: Vec<&Scenario> = all
            .iter()
            .filter(|s| match pattern.strip_suffix('*') {
                Some(prefix) => s.name.starts_with(prefix),
                None => &s.name == pattern,
            })
            .collect();
        if matching.is_empty() {
            bail!("no scenario matches `{pattern}`");
        }
        for scenario in matching {
            if !selected.iter().any(|s| s.name == scenario.name) {
                selected.push(scenario.clone());
            }
        }
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str) -> Scenario {
        Scenario {
            name: name.into(),
            needs_guard: false,
            clock: Clock::Real,
        }
    }

    #[test]
    fn header_reads_the_first_matching_line() {
        let script = "# vmtest: needs=guard\n# vmtest: clock=icount\n# vmtest: clock=real\n";
        assert_eq!(header(script, "clock"), Some("icount"));
        assert_eq!(header(script, "timeout"), None);
    }

    #[test]
    fn needs_header_lists_guard() {
        assert_eq!(
            needs("# x\n# vmtest: needs=guard, other\n"),
            ["guard", "other"]
        );
        assert!(needs("# vmtest: needs=\n").is_empty());
        assert!(needs("echo\n").is_empty());
    }

    #[test]
    fn select_prefix_pattern_matches_in_order_without_duplicates() {
        let all = [
            scenario("guard_a"),
            scenario("harness_b"),
            scenario("harness_c"),
        ];
        let names: Vec<String> = select(&all, &["harness_*".into(), "harness_b".into()])
            .expect("patterns match")
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["harness_b", "harness_c"]);
    }

    #[test]
    fn select_unknown_name_is_an_error() {
        assert!(select(&[scenario("a")], &["b".into()]).is_err());
    }
}
