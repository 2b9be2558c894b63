//! Builds what goes into the guest: static C probes, static `vault-env` and `ebpf-guard`, and
//! the initramfs holding them with busybox-static and the scenario scripts.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use super::Layout;
use super::cpio::{self, Entry};

/// Where busybox-static installs its binary.
const BUSYBOX: &str = "/bin/busybox";
/// Dynamically linked host tools copied into the guest with the libraries `ldd` lists:
/// crun (the higher-fidelity container runtime) and bpftool (to inspect programs in the guest).
const HOST_BINARIES: &[&str] = &["/usr/bin/crun", "/usr/sbin/bpftool"];

/// The binaries of one guest.
pub struct GuestBinaries {
    /// `(name, path)` of every compiled probe (`probes/*.c`).
    pub probes: Vec<(String, PathBuf)>,
    /// The workspace's static vault-env, installed as `/vault/vault-env` in every simulated pod.
    pub vault_env: PathBuf,
    /// The guard agent, when it was requested and built.
    pub guard: Option<PathBuf>,
}

pub fn guest_binaries(layout: &Layout, want_guard: bool) -> Result<GuestBinaries> {
    let probes = probes(&layout.tests.join("probes"), &layout.work.join("probes"))?;
    // The real vault-env or nothing: a stand-in would let the scenarios pass without the product.
    let vault_env = static_rust("vault-env").context("building vault-env")?;
    if !execs_its_command(&vault_env) {
        bail!(
            "{} does not run its command with no vault: references (VAULT_ADDR={VAULT_ADDR}); \
             the pods in the guest start through it",
            vault_env.display()
        );
    }
    let guard = if want_guard {
        match static_rust("ebpf-guard") {
            Ok(path) => Some(path),
            Err(error) => {
                println!(
                    "[vm] WARNING: ebpf-guard did not build ({error:#}); \
                     running only scenarios that do not need it"
                );
                None
            }
        }
    } else {
        None
    };
    Ok(GuestBinaries {
        probes,
        vault_env,
        guard,
    })
}

/// Compiles every `probes/*.c` with `gcc -static -O2` (skipping those already up to date).
fn probes(src: &Path, out: &Path) -> Result<Vec<(String, PathBuf)>> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let headers_changed = newest_mtime(src, "h")?;
    let mut built = Vec::new();
    let mut sources: Vec<PathBuf> = fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    for source in sources {
        let name = source
            .file_stem()
            .and_then(|s| s.to_str())
            .context("probe file name is not UTF-8")?
            .to_string();
        let binary = out.join(&name);
        let stale = match (mtime(&binary), mtime(&source)) {
            (Some(bin), Some(src)) => bin < src || headers_changed.is_some_and(|h| bin < h),
            _ => true,
        };
        if stale {
            // Built under a private name and renamed, so concurrent runs never see half a file.
            let partial = out.join(format!(".{name}.{}", std::process::id()));
            let output = Command::new("gcc")
                .args([
                    "-static",
                    "-O2",
                    "-D_GNU_SOURCE",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-o",
                ])
                .arg(&partial)
                .arg(&source)
                .output()
                .context("running gcc")?;
            if !output.status.success() {
                bail!(
                    "gcc {}: {}",
                    source.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            fs::rename(&partial, &binary)
                .with_context(|| format!("installing {}", binary.display()))?;
        }
        built.push((name, binary));
    }
    Ok(built)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn newest_mtime(dir: &Path, extension: &str) -> Result<Option<SystemTime>> {
    Ok(fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .filter_map(|p| mtime(&p))
        .max())
}

/// The shipped static binary (`cargo xtask dist`'s build: `dist` profile, `+crt-static`,
/// stripped), so that the guest runs exactly what the images ship, and a build another step
/// already made (the chroot test, bench) is reused.
fn static_rust(binary: &str) -> Result<PathBuf> {
    println!("[vm] building static {binary} (dist profile)");
    crate::dist::build_named(binary)
}

/// The `VAULT_ADDR` simulated pods get (nothing listens there: no `vault:` references).
const VAULT_ADDR: &str = "https://vault.vault.svc:8200";

/// True if `vault-env CMD` with no `vault:` references in a pod-like environment runs CMD.
fn execs_its_command(vault_env: &Path) -> bool {
    let Ok(mut child) = Command::new(vault_env)
        .env_clear()
        // As in an injected pod: the webhook always sets VAULT_ADDR; with no `vault:`
        // references vault-env must not contact it.
        .env("VAULT_ADDR", VAULT_ADDR)
        .args(["/bin/sh", "-c", "echo vmtest-exec-ok"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child
                .wait_with_output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("vmtest-exec-ok"))
                .unwrap_or(false);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Writes the initramfs to `path`.
pub fn initramfs(layout: &Layout, guest: &GuestBinaries, path: &Path) -> Result<()> {
    let mut entries = Vec::new();
    for dir in [
        "bin",
        "dev",
        "etc",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "probes",
        "vmtest",
        "vmtest/scenarios",
        "usr",
        "usr/local",
        "usr/local/bin",
        "opt",
        "opt/vault-env",
        "var",
        "var/lib",
        "var/lib/kubelet",
        "var/lib/kubelet/pods",
    ] {
        entries.push(Entry::Dir {
            path: dir.into(),
            mode: if dir == "tmp" { 0o1777 } else { 0o755 },
        });
    }
    entries.push(Entry::CharDev {
        path: "dev/console".into(),
        mode: 0o600,
        major: 5,
        minor: 1,
    });
    entries.push(text(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    ));
    entries.push(text("etc/group", "root:x:0:\nnogroup:x:65534:\n"));
    entries.push(file("bin/busybox", Path::new(BUSYBOX), 0o755)?);
    entries.push(file("init", &layout.tests.join("init.sh"), 0o755)?);
    entries.push(file("vmtest/lib.sh", &layout.tests.join("lib.sh"), 0o644)?);
    entries.push(file(
        "vmtest/guard.sh",
        &layout.tests.join("guard.sh"),
        0o644,
    )?);
    let scenarios = layout.tests.join("scenarios");
    let mut scripts: Vec<PathBuf> = fs::read_dir(&scenarios)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.sort();
    for script in scripts {
        let name = script
            .file_name()
            .and_then(|n| n.to_str())
            .context("scenario name is not UTF-8")?;
        entries.push(file(&format!("vmtest/scenarios/{name}"), &script, 0o755)?);
    }
    for (name, path) in &guest.probes {
        entries.push(file(&format!("probes/{name}"), path, 0o755)?);
    }
    entries.push(file("opt/vault-env/vault-env", &guest.vault_env, 0o755)?);
    if let Some(guard) = &guest.guard {
        entries.push(file("usr/local/bin/ebpf-guard", guard, 0o755)?);
    }
    host_binaries(&mut entries, HOST_BINARIES)?;
    let mut out = std::io::BufWriter::new(
        fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    cpio::write(&mut out, &entries).context("writing the initramfs")?;
    std::io::Write::flush(&mut out).context("writing the initramfs")?;
    Ok(())
}

fn file(path: &str, source: &Path, mode: u32) -> Result<Entry> {
    Ok(Entry::File {
        path: path.into(),
        mode,
        data: fs::read(source).with_context(|| format!("reading {}", source.display()))?,
    })
}

fn text(path: &str, content: &str) -> Entry {
    Entry::File {
        path: path.into(),
        mode: 0o644,
        data: content.as_bytes().to_vec(),
    }
}

/// Adds each host binary and its shared libraries (from `ldd`) at their host paths, creating
/// the parent directories the archive does not have yet.
fn host_binaries(entries: &mut Vec<Entry>, binaries: &[&str]) -> Result<()> {
    let mut files: Vec<String> = Vec::new();
    for binary in binaries {
        let output = Command::new("ldd")
            .arg(binary)
            .output()
            .with_context(|| format!("running ldd {binary}"))?;
        if !output.status.success() {
            bail!(
                "ldd {binary} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        files.push((*binary).to_string());
        files.extend(ldd_paths(&String::from_utf8_lossy(&output.stdout)));
    }
    files.sort();
    files.dedup();
    let mut dirs: Vec<String> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Dir { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    for path in files {
        let relative = path.trim_start_matches('/').to_string();
        let mut parent = String::new();
        for part in relative
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            parent = if parent.is_empty() {
                (*part).to_string()
            } else {
                format!("{parent}/{part}")
            };
            if !dirs.contains(&parent) {
                dirs.push(parent.clone());
                entries.push(Entry::Dir {
                    path: parent.clone(),
                    mode: 0o755,
                });
            }
        }
        // fs::read follows symlinks (e.g. /lib64/ld-linux-x86-64.so.2): the guest gets a copy.
        entries.push(file(&relative, Path::new(&path), 0o755)?);
    }
    Ok(())
}

/// The absolute library paths in `ldd` output (`libc.so.6 => /lib/.../libc.so.6 (0x...)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`).
fn ldd_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let candidate = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            candidate.starts_with('/').then(|| candidate.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_keeps_resolved_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(text),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }
}
