//! Developer tasks: `cargo xtask build-ebpf`, `cargo xtask lint`, `cargo xtask test`.

mod bench;
mod dist;
mod ebpf_build;
mod fuzz;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "swarmtrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the kernel programs (swarmtrace-ebpf) for bpfel-unknown-none.
    BuildEbpf,
    /// cargo fmt --check and clippy -D warnings on every crate, the kernel crate included.
    Lint,
    /// Build everything and run the whole test suite; as root, privileged tests must run.
    Test {
        /// Extra arguments for `cargo test` (a test name filter, --nocapture, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot Debian kernels (5.10, 6.1, 6.12) under QEMU and run swarmtrace against Docker's
    /// real routing mesh inside them (see vm/README.md).
    VmTest(vm::Args),
    /// Release artifacts in target/dist/: static stripped binaries (x86_64 and aarch64 musl,
    /// the kernel object embedded), a .deb per architecture, a `docker load`-able image,
    /// SHA256SUMS (see README "Install").
    Dist(dist::Args),
    /// Benchmarks (as root): kernel cost per program run, connection rate, flood, user space;
    /// writes the results into BENCHMARKS.md (see there).
    Bench(bench::Args),
    /// Build the fuzz targets of fuzz/ (cargo-fuzz, installed if missing) and run each for
    /// --seconds (default 20); fails if one crashes, hangs or runs out of memory.
    Fuzz(fuzz::Args),
}

/// Runs `cmd` (no standard input) and returns its standard output; fails with its standard
/// error when it fails.
fn output(cmd: &mut Command) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {desc}"))?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` (no standard input); fails when it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let desc = format!("{cmd:?}");
    let status = cmd
        .stdin(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {desc}"))?;
    if !status.success() {
        bail!("{desc} failed ({status})");
    }
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_owned()
}

fn cargo(dir: &Path, args: &[&str]) -> Result<()> {
    println!("xtask: cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The kernel crate pins nightly in its rust-toolchain.toml; call it through rustup so the
/// outer cargo's toolchain does not leak in.
fn nightly_cargo(dir: &Path, args: &[&str]) -> Result<()> {
    println!("xtask: cargo +nightly {}", args.join(" "));
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo"])
        .args(args)
        .current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("cargo +nightly {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = root();
    match cli.task {
        Task::BuildEbpf => {
            let obj = ebpf_build::build(&root).map_err(anyhow::Error::msg)?;
            println!("xtask: kernel object at {}", obj.display());
        }
        Task::Lint => {
            cargo(&root, &["fmt", "--all", "--check"])?;
            nightly_cargo(&root.join("swarmtrace-ebpf"), &["fmt", "--check"])?;
            cargo(
                &root,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            )?;
            // The fuzz crate is outside the workspace: checked here too, so a change to a type
            // it builds fails the lint, not CI's fuzz stage half an hour later.
            cargo(
                &root,
                &[
                    "clippy",
                    "--manifest-path",
                    "fuzz/Cargo.toml",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
            )?;
            nightly_cargo(
                &root.join("swarmtrace-ebpf"),
                &[
                    "clippy",
                    "--release",
                    "--target",
                    ebpf_build::TARGET,
                    "-Z",
                    "build-std=core",
                    "--target-dir",
                    root.join("target/ebpf")
                        .to_str()
                        .context("non-UTF-8 path")?,
                    "--",
                    "-D",
                    "warnings",
                ],
            )?;
        }
        Task::Test { args } => {
            ebpf_build::build(&root).map_err(anyhow::Error::msg)?;
            // The end-to-end tests drive the binary, so build it first.
            cargo(&root, &["build", "-p", "swarmtrace"])?;
            let mut full = vec!["test", "--workspace", "--"];
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                // As root every privileged test runs (they are #[ignore]d for a plain `cargo
                // test`), and one that cannot is a failure.
                full.push("--include-ignored");
            } else {
                println!("xtask: not root: the privileged tests are reported as ignored (run with sudo to include them)");
            }
            full.extend(args.iter().map(String::as_str));
            cargo(&root, &full)?;
        }
        Task::VmTest(args) => {
            if let Err(e) = vm::main(&root, args) {
                if e.downcast_ref::<vm::Unavailable>().is_some() {
                    // Not a failed scenario: this machine cannot run the guests (exit 2).
                    eprintln!("vm-test: cannot run here: {e}");
                    std::process::exit(2);
                }
                return Err(e);
            }
        }
        Task::Dist(args) => dist::main(&root, args)?,
        Task::Bench(args) => bench::main(&root, args)?,
        Task::Fuzz(args) => fuzz::main(&root, args)?,
    }
    Ok(())
}
