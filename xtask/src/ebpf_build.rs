//! The one code path that builds swarmtrace's kernel object. `cargo xtask build-ebpf` calls it,
//! and so does `swarmtrace/build.rs` (through `#[path]`), which embeds the object it produces.
//! std only: build scripts cannot share the xtask's dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "bpfel-unknown-none";

/// Where the object lands, relative to the workspace root.
pub fn object_path(root: &Path) -> PathBuf {
    target_dir(root).join(TARGET).join("release/swarmtrace")
}

/// The kernel crate's target directory for the build machine's architecture.
fn target_dir(root: &Path) -> PathBuf {
    root.join(format!("target/ebpf{}", stage_suffix()))
}

/// A measurement build (`SWARMTRACE_STAGE=N`, swarmtrace-ebpf/src/stage.rs) gets a target
/// directory of its own, `-stageN`: cargo does not rebuild the kernel crate when only that
/// variable changes (BENCHMARKS.md's ninth round got the previous stage's object back), and
/// no stage's object may be taken for another's or for the shipped one.
fn stage_suffix() -> String {
    match std::env::var("SWARMTRACE_STAGE") {
        // Only its letters and digits in a path (stage.rs refuses anything but digits).
        Ok(n) if !n.is_empty() => format!(
            "-stage{}",
            n.chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        ),
        _ => String::new(),
    }
}

/// Builds `swarmtrace-ebpf` with nightly and bpf-linker; returns the object's path.
pub fn build(root: &Path) -> Result<PathBuf, String> {
    let obj = build_in(root, &target_dir(root), None)?;
    debug_assert_eq!(obj, object_path(root));
    Ok(obj)
}

/// Builds the kernel object for `arch` (aya's `bpf_target_arch`: `x86_64`, `aarch64`) into
/// `target/ebpf-ARCH`: the architecture whose `pt_regs` the `tcp_drop` kprobe reads its
/// arguments from, the only architecture-dependent part of the object. `build` uses the
/// build machine's.
#[allow(dead_code)] // build.rs includes this file and uses only `build`.
pub fn build_for(root: &Path, arch: &str) -> Result<PathBuf, String> {
    let dir = root.join(format!("target/ebpf-{arch}{}", stage_suffix()));
    build_in(root, &dir, Some(arch))?;
    Ok(dir.join(TARGET).join("release/swarmtrace"))
}

fn build_in(root: &Path, target_dir: &Path, arch: Option<&str>) -> Result<PathBuf, String> {
    let crate_dir = root.join("swarmtrace-ebpf");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["--target", TARGET, "-Z", "build-std=core", "--target-dir"])
        .arg(target_dir)
        .current_dir(&crate_dir);
    if let Some(arch) = arch {
        // Read by aya-ebpf's build script (aya-build's `emit_bpf_target_arch_cfg`).
        cmd.env("AYA_BPF_TARGET_ARCH", arch);
    }
    // When called from a build script, cargo's environment describes the outer host build;
    // none of it applies to the kernel crate.
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        let keep = matches!(k, "CARGO_HOME" | "RUSTUP_HOME")
            || k.starts_with("CARGO_NET_")
            || k.starts_with("CARGO_HTTP_")
            || k.starts_with("CARGO_REGISTRIES_");
        let outer = k.starts_with("CARGO")
            || k.starts_with("RUST")
            || matches!(
                k,
                "TARGET" | "HOST" | "OUT_DIR" | "PROFILE" | "OPT_LEVEL" | "DEBUG" | "NUM_JOBS"
            );
        if outer && !keep {
            cmd.env_remove(k);
        }
    }
    let status = cmd.status().map_err(|e| {
        format!("cannot run rustup ({e}): install Rust with rustup, then run `sudo bash scripts/setup.sh`")
    })?;
    if !status.success() {
        return Err(format!(
            "building the kernel programs failed ({status}); if nightly's rust-src or bpf-linker is missing, run `sudo bash scripts/setup.sh`"
        ));
    }
    let obj = target_dir.join(TARGET).join("release/swarmtrace");
    if !obj.is_file() {
        return Err(format!(
            "the kernel build succeeded but {} is missing",
            obj.display()
        ));
    }
    Ok(obj)
}
