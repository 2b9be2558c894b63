//! The guest kernel: Debian's `linux-image-cloud-amd64`, downloaded once with `apt-get download`
//! and unpacked into `target/vm/kernel/<package>/`.
//!
//! The cloud flavour has the serial console (8250) and everything the guest uses built in, so no
//! modules are needed; only `vmlinuz` and its `config-*` are kept.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The meta package whose current dependency names the kernel to boot.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// A kernel ready to boot.
pub struct Kernel {
    /// Versioned package name, e.g. `linux-image-6.1.0-57-cloud-amd64`.
    pub package: String,
    pub vmlinuz: PathBuf,
}

/// Returns the cached kernel, downloading and unpacking it first if needed, and checks that it
/// was built with `CONFIG_BPF_LSM=y`.
pub fn ensure(vm_dir: &Path) -> Result<Kernel> {
    let cache = vm_dir.join("kernel");
    let package = match resolve_package() {
        Ok(package) => package,
        Err(error) => cached_package(&cache).with_context(|| {
            format!("cannot resolve {META_PACKAGE} ({error:#}) and no kernel is cached")
        })?,
    };
    let dir = cache.join(&package);
    if find_in_boot(&dir, "vmlinuz-").is_none() {
        download(&cache, &package)?;
    }
    let vmlinuz = find_in_boot(&dir, "vmlinuz-")
        .with_context(|| format!("{package}: no boot/vmlinuz-* in the package"))?;
    let config = find_in_boot(&dir, "config-")
        .with_context(|| format!("{package}: no boot/config-* in the package"))?;
    let text =
        fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    if !text.lines().any(|l| l.trim() == "CONFIG_BPF_LSM=y") {
        bail!("{package} was not built with CONFIG_BPF_LSM=y");
    }
    Ok(Kernel { package, vmlinuz })
}

/// `linux-image-cloud-amd64` → its versioned `linux-image-*-cloud-amd64` dependency.
fn resolve_package() -> Result<String> {
    let output = Command::new("apt-cache")
        .args(["depends", META_PACKAGE])
        .output()
        .context("running apt-cache depends")?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_depends(&text).with_context(|| format!("apt-cache depends {META_PACKAGE}: {text}"))
}

fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(String::from)
}

/// The newest kernel already unpacked in the cache (used when apt knows no candidate).
fn cached_package(cache: &Path) -> Result<String> {
    let mut names: Vec<String> = fs::read_dir(cache)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("linux-image-") && find_in_boot(&cache.join(n), "vmlinuz-").is_some()
        })
        .collect();
    names.sort();
    names.pop().context("kernel cache is empty")
}

fn find_in_boot(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
}

/// Downloads the `.deb` (refreshing the apt lists once if the download fails on a stale list)
/// and keeps `boot/` only.
fn download(cache: &Path, package: &str) -> Result<()> {
    let work = cache.join(format!("{package}.download.{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    println!("[vm] downloading {package}");
    let get = || {
        Command::new("apt-get")
            .args(["download", "-qq", package])
            .current_dir(&work)
            .output()
    };
    let mut output = get().context("running apt-get download")?;
    if !output.status.success() {
        println!("[vm] apt-get download failed; running apt-get update once");
        let update = Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .context("running apt-get update")?;
        if !update.success() {
            bail!("apt-get update failed ({update})");
        }
        output = get().context("running apt-get download")?;
    }
    if !output.status.success() {
        bail!(
            "apt-get download {package} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let deb = fs::read_dir(&work)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    let unpacked = work.join("root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .context("running dpkg-deb -x")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed ({status})", deb.display());
    }
    let dir = cache.join(package);
    fs::create_dir_all(&dir)?;
    let renamed = fs::rename(unpacked.join("boot"), dir.join("boot"));
    fs::remove_dir_all(&work).ok();
    // A concurrent run may have installed the same kernel first: then keep that one.
    if renamed.is_err() && find_in_boot(&dir, "vmlinuz-").is_none() {
        renamed.context("keeping boot/")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_depends_meta_package_yields_versioned_image() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
    }

    #[test]
    fn parse_depends_without_image_yields_none() {
        assert_eq!(parse_depends("foo\n  Depends: libc6\n"), None);
    }
}
