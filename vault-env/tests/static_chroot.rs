//! The static `vault-env` alone in an empty root, as in a scratch container: `copy-self`, then
//! a full login + resolve + exec of a static program against OpenBao over TLS with
//! `VAULT_CACERT`, under `chroot` (the tests run as root, as CI does).
//!
//! The static binary comes from `VAULT_ENV_STATIC_BIN` when set (e.g. `target/dist/vault-env`
//! after `cargo xtask dist`); otherwise this test runs the same static build `cargo xtask
//! dist` does, into the same target directory (`target/dist-build`), so it is built once and
//! every later run only pays cargo's freshness check.
//!
//! The root holds nothing but the binary, busybox-static as the app, the CA certificate, the
//! service-account token, `/etc/hosts` and `/etc/resolv.conf` (so `localhost` must resolve
//! through hickory without glibc NSS) and a mounted `/proc`.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use support::Bed;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The static vault-env: from `VAULT_ENV_STATIC_BIN`, or built like `cargo xtask dist` does.
fn static_vault_env() -> PathBuf {
    if let Some(path) = std::env::var_os("VAULT_ENV_STATIC_BIN") {
        return PathBuf::from(path);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target_dir = workspace.join("target").join("dist-build");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let mut command = Command::new(cargo);
    // As xtask's nested cargo (`xtask/src/test.rs` `cargo`): without the variables cargo set
    // for this test binary, or ring's build script (`rerun-if-env-changed=CARGO_PKG_NAME`,
    // ...) sees a change and the next `cargo xtask dist` or bench redoes the whole build.
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("CARGO_PKG_")
            || name_str.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&name_str.as_ref())
        {
            command.env_remove(&name);
        }
    }
    let status = command
        .current_dir(workspace)
        .args(["build", "--profile", "dist", "--target", TARGET])
        .args([
            "--package",
            "vault-env",
            "--bin",
            "vault-env",
            "--target-dir",
        ])
        .arg(&target_dir)
        // The same flags as xtask's dist::RUSTFLAGS (getrandom must not depend on dlsym).
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"",
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .unwrap();
    assert!(status.success(), "static build failed: {status}");
    target_dir.join(TARGET).join("dist").join("vault-env")
}

/// Whether an ELF file names a dynamic loader.
fn has_interpreter(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    let read = |at: usize, len: usize| {
        bytes[at..at + len]
            .iter()
            .rev()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    let (phoff, phentsize, phnum) = (read(0x20, 8), read(0x36, 2), read(0x38, 2));
    (0..phnum).any(|i| read(phoff + i * phentsize, 4) == 3)
}

/// `/proc` mounted inside the root; unmounted on drop.
struct ProcMount(PathBuf);

impl ProcMount {
    fn new(root: &Path) -> ProcMount {
        let target = root.join("proc");
        std::fs::create_dir(&target).unwrap();
        let status = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success(), "mount proc: {status}");
        ProcMount(target)
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn copy_into(root: &Path, from: &Path, name: &str, mode: u32) {
    let to = root.join(name);
    std::fs::copy(from, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn static_binary_in_chroot_copies_itself_and_resolves_over_tls() {
    let vault_env = static_vault_env();
    assert!(!has_interpreter(&vault_env), "vault-env is not static");
    let size = std::fs::metadata(&vault_env).unwrap().len();
    assert!(size <= 6 * 1024 * 1024, "static vault-env is {size} bytes");
    let busybox = Path::new("/bin/busybox");
    assert!(!has_interpreter(busybox), "busybox is not static");

    let bed = Bed::start_tls();
    bed.bao
        .write_kv2("chroot", json!({ "v": "resolved-in-chroot" }))
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    copy_into(root, &vault_env, "vault-env", 0o755);
    copy_into(root, busybox, "busybox", 0o755);
    copy_into(root, bed.bao.ca_cert().unwrap(), "ca.pem", 0o444);
    copy_into(root, &bed.jwt_file, "token", 0o400);
    std::fs::create_dir(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    std::fs::create_dir(root.join("vault")).unwrap();
    let _proc = ProcMount::new(root);

    // 1. The init container's job: copy-self into the shared volume.
    let output = Command::new("/usr/sbin/chroot")
        .arg(root)
        .args(["/vault-env", "copy-self", "/vault"])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "copy-self: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let copied = root.join("vault/vault-env");
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(&vault_env).unwrap()
    );
    let mode = std::fs::metadata(&copied).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o555);

    // 2. The app container: login, resolve, exec a static program, all over TLS by name.
    let port = bed.bao.addr().rsplit(':').next().unwrap().to_owned();
    let output = Command::new("/usr/sbin/chroot")
        .arg(root)
        .args(["/vault/vault-env", "/busybox", "env"])
        .env_clear()
        .env("VAULT_ADDR", format!("https://localhost:{port}"))
        .env("VAULT_CACERT", "/ca.pem")
        .env("VAULT_AUTH_METHOD", "kubernetes")
        .env("VAULT_PATH", "kubernetes")
        .env("VAULT_ROLE", "default")
        .env("VAULT_JWT_FILE", "/token")
        .env("SECRET", "vault:secret/data/chroot#v")
        .env("PLAIN", "kept")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "resolve + exec in chroot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "PLAIN=kept",
            "SECRET=resolved-in-chroot",
            "VAULT_JWT_FILE=/token"
        ],
        "app env: {stdout}"
    );
    assert_eq!(
        bed.bao
            .audit_request_count("auth/kubernetes/login")
            .unwrap(),
        1
    );
}
