//! `cargo xtask dist`: static, stripped release binaries in `target/dist/`.
//!
//! Each binary of [`BINARIES`] is built with the `dist` profile (opt-level s, LTO, one codegen
//! unit, panic=abort, stripped) for [`TARGET`] with [`RUSTFLAGS`] (`+crt-static`), in its own
//! target directory ([`build_dir`]) so that the static flags never invalidate the normal
//! build cache. The copy in `target/dist/` is checked to be static (no ELF interpreter) and
//! below its size budget. [`crate::images`] then builds an OCI image layout per binary in
//! `target/dist/images/<name>/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::workspace_root;

/// The Rust target the static binaries are built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The flags of the static build. `getrandom_backend="linux_getrandom"` makes getrandom call
/// the system call directly: its default asks `dlsym` for glibc's `getrandom`, which a static
/// binary cannot answer, and then falls back to opening `/dev/urandom`, absent in a bare
/// root (the chroot test caught exactly that).
pub const RUSTFLAGS: &str =
    "-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"";

/// One binary that `dist` produces.
pub struct Binary {
    /// The cargo package.
    pub package: &'static str,
    /// The `[[bin]]` name.
    pub bin: &'static str,
    /// The largest stripped size accepted, in bytes.
    pub max_size: u64,
}

/// Everything `cargo xtask dist` builds.
pub const BINARIES: &[Binary] = &[
    Binary {
        package: "vault-env",
        bin: "vault-env",
        max_size: 6 * 1024 * 1024,
    },
    Binary {
        package: "vault-secrets-webhook",
        bin: "vault-secrets-webhook",
        max_size: 16 * 1024 * 1024,
    },
    Binary {
        package: "ebpf-guard",
        bin: "ebpf-guard",
        max_size: 12 * 1024 * 1024,
    },
];

/// Where the static builds keep their cargo target directory.
pub fn build_dir() -> PathBuf {
    workspace_root().join("target").join("dist-build")
}

/// Where the finished binaries go.
pub fn out_dir() -> PathBuf {
    workspace_root().join("target").join("dist")
}

/// Builds every binary of [`BINARIES`], copies it to [`out_dir`] and prints its size.
pub fn run() -> Result<()> {
    let out = out_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    for binary in BINARIES {
        let built = build(binary)?;
        let target = out.join(binary.bin);
        std::fs::copy(&built, &target)
            .with_context(|| format!("copy {} to {}", built.display(), target.display()))?;
        ensure!(
            !has_interpreter(&target)?,
            "{} is dynamically linked (it has an ELF interpreter)",
            target.display()
        );
        let size = std::fs::metadata(&target)
            .with_context(|| format!("stat {}", target.display()))?
            .len();
        println!(
            "{}: {} bytes ({:.2} MiB), static, stripped",
            target.display(),
            size,
            size as f64 / (1024.0 * 1024.0)
        );
        if size > binary.max_size {
            bail!(
                "{} is {} bytes, over its budget of {} bytes",
                binary.bin,
                size,
                binary.max_size
            );
        }
    }
    // OCI image layouts from the static binaries (images.rs).
    let images = crate::images::build_all(&out, &out.join("images"), env!("CARGO_PKG_VERSION"))?;
    crate::images::report(&images);
    Ok(())
}

/// Runs the static cargo build of one binary and returns the built file (also used by
/// `cargo xtask bench`).
pub fn build(binary: &Binary) -> Result<PathBuf> {
    let dir = build_dir();
    let status = crate::test::cargo(&[
        "build",
        "--profile",
        "dist",
        "--target",
        TARGET,
        "--package",
    ])
    .arg(binary.package)
    .arg("--bin")
    .arg(binary.bin)
    .arg("--target-dir")
    .arg(&dir)
    // Only this flag: the static build must not pick up flags meant for the host build.
    .env("RUSTFLAGS", RUSTFLAGS)
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("CARGO_BUILD_RUSTFLAGS")
    .status()
    .context("run cargo build")?;
    ensure!(
        status.success(),
        "static build of {} failed ({status})",
        binary.bin
    );
    Ok(dir.join(TARGET).join("dist").join(binary.bin))
}

/// [`build`] of the [`BINARIES`] entry named `bin`.
pub fn build_named(bin: &str) -> Result<PathBuf> {
    let binary = BINARIES
        .iter()
        .find(|b| b.bin == bin)
        .with_context(|| format!("{bin} is not in dist::BINARIES"))?;
    build(binary)
}

/// Whether the ELF file at `path` asks for a dynamic loader (a `PT_INTERP` program header).
fn has_interpreter(path: &Path) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let field = |at: usize, len: usize| -> Result<u64> {
        let slice = bytes
            .get(at..at + len)
            .with_context(|| format!("{} is not a complete ELF file", path.display()))?;
        Ok(slice
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    ensure!(
        bytes.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let phoff = usize::try_from(field(0x20, 8)?)?;
    let phentsize = usize::try_from(field(0x36, 2)?)?;
    let phnum = usize::try_from(field(0x38, 2)?)?;
    for index in 0..phnum {
        if field(phoff + index * phentsize, 4)? == u64::from(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}
