//! Builds the BPF objects (`bpf/guard.bpf.c`, `bpf/probe.bpf.c`) with clang into `OUT_DIR`.
//!
//! `vmlinux.h` is generated from the build host's kernel BTF with bpftool; the object carries
//! CO-RE relocations, so aya adapts it to the running kernel (Debian 6.1 in the VM tests).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf = manifest.join("bpf");
    for file in ["guard.bpf.c", "probe.bpf.c", "guard.h"] {
        println!("cargo:rerun-if-changed={}", bpf.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=STRONGROOM_VMLINUX_H");

    let vmlinux = out.join("vmlinux.h");
    generate_vmlinux(&vmlinux);
    for (src, obj) in [
        ("guard.bpf.c", "guard.bpf.o"),
        ("probe.bpf.c", "probe.bpf.o"),
    ] {
        compile(&bpf.join(src), &out.join(obj), &out);
    }
}

/// Writes `vmlinux.h`: from `STRONGROOM_VMLINUX_H` if set, else bpftool on the host's BTF.
fn generate_vmlinux(dest: &Path) {
    if let Ok(given) = env::var("STRONGROOM_VMLINUX_H") {
        std::fs::copy(&given, dest).unwrap_or_else(|e| panic!("copy {given}: {e}"));
        return;
    }
    let btf = "/sys/kernel/btf/vmlinux";
    if !Path::new(btf).exists() {
        panic!(
            "{btf} is missing: the build needs a kernel with BTF (CONFIG_DEBUG_INFO_BTF) to \
             generate vmlinux.h, or STRONGROOM_VMLINUX_H pointing at a generated vmlinux.h"
        );
    }
    let output = Command::new("bpftool")
        .args(["btf", "dump", "file", btf, "format", "c"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run bpftool ({e}): install the Debian package `bpftool`")
        });
    if !output.status.success() {
        panic!(
            "bpftool btf dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::write(dest, output.stdout).unwrap_or_else(|e| panic!("write vmlinux.h: {e}"));
}

fn compile(src: &Path, obj: &Path, include: &Path) {
    let status = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-Wall",
            "-Werror",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-D__TARGET_ARCH_x86",
        ])
        .arg("-I")
        .arg(include)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run clang ({e}): the BPF program needs clang; install the Debian \
                 packages `clang` and `libbpf-dev`"
            )
        });
    if !status.success() {
        panic!("clang failed to compile {}", src.display());
    }
}
