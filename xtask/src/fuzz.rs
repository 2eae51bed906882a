//! `cargo xtask fuzz`: builds the fuzz targets of `fuzz/` with cargo-fuzz (installed when
//! missing) and runs each one for a bounded time, a few at once, then prints per target the
//! executions, the coverage and the result. Fails when a target crashed, hung, ran out of
//! memory or did not end on time; the input that did it is under `fuzz/artifacts/TARGET/`.
//!
//! Each target starts from its seeds (`fuzz/corpus/TARGET/`, committed), the inputs of
//! earlier crashes (`fuzz/regressions/TARGET/`, committed; they must pass) and what earlier
//! local runs found (`fuzz/target/corpus/TARGET/`, not committed, where new inputs go).

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The cargo-fuzz release `cargo install` fetches when none is installed (checked with the
/// nightly of scripts/setup.sh).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Where cargo-fuzz puts the target binaries (its default `--target`, release profile).
const BIN_DIR: &str = "fuzz/target/x86_64-unknown-linux-gnu/release";
/// Extra time a target gets beyond `--seconds` (loading and running its corpus first, and
/// writing a crash) before it is killed.
const GRACE: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of fuzzing per target; 0 only runs the seeds and regressions once.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Targets fuzzed at the same time [default: the number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// cargo-fuzz's sanitizer: none, or address (finds memory errors in unsafe code, but
    /// runs about 5 times fewer inputs in the same time). Debug assertions and overflow
    /// checks are on either way.
    #[arg(long, default_value = "none", value_parser = ["none", "address"])]
    sanitizer: String,
    /// Targets to run (default: every file of fuzz/fuzz_targets/).
    targets: Vec<String>,
}

/// What one run printed and how it ended.
struct Outcome {
    name: String,
    status: Option<ExitStatus>,
    killed: bool,
    elapsed: Duration,
    log: PathBuf,
    text: String,
}

impl Outcome {
    /// The last value libFuzzer printed for `key` (`key: 123` or `stat::key: 123`).
    fn stat(&self, key: &str) -> Option<u64> {
        self.text.lines().rev().find_map(|line| {
            let at = line.find(key)?;
            line[at + key.len()..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
    }

    fn ok(&self) -> bool {
        !self.killed && self.status.is_some_and(|s| s.success())
    }

    fn result(&self) -> String {
        if self.killed {
            return format!("HUNG (killed after {}s)", self.elapsed.as_secs());
        }
        if self.ok() {
            return "ok".to_owned();
        }
        let what = if self.text.contains("ERROR: libFuzzer: timeout") {
            "TIMEOUT"
        } else if self.text.contains("out-of-memory") {
            "OUT OF MEMORY"
        } else if self.text.contains("ERROR: AddressSanitizer") {
            "MEMORY ERROR"
        } else if self.text.contains("panicked at") || self.text.contains("deadly signal") {
            "CRASH"
        } else {
            "FAILED"
        };
        match self.status.and_then(|s| s.code()) {
            Some(code) => format!("{what} (exit {code})"),
            None => what.to_owned(),
        }
    }

    /// The input libFuzzer wrote when it stopped on one, if any.
    fn artifact(&self) -> Option<&str> {
        self.text
            .lines()
            .rev()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
    }

    /// The panic message or sanitizer report line, for the summary.
    fn why(&self) -> Option<&str> {
        self.text
            .lines()
            .find(|l| {
                l.contains("panicked at")
                    || l.contains("ERROR: AddressSanitizer")
                    || l.contains("ERROR: libFuzzer")
            })
            .map(str::trim)
    }
}

fn targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".rs"))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// cargo-fuzz, installed with `cargo install` when it is missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success().then_some(o.stdout))
        .ok()
        .flatten();
    if let Some(v) = installed {
        println!("xtask: {}", String::from_utf8_lossy(&v).trim());
        return Ok(());
    }
    println!("xtask: cargo-fuzz missing: cargo install cargo-fuzz --locked --version {CARGO_FUZZ_VERSION}");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked", "--version"])
        .arg(CARGO_FUZZ_VERSION)
        .env_remove("RUSTUP_TOOLCHAIN")
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

/// Starts one target: its own log, its own TMPDIR, killed if xtask dies.
fn spawn(root: &Path, name: &str, seconds: u64, log: &Path, tmp: &Path) -> Result<Child> {
    let work = root.join("fuzz/target/corpus").join(name);
    let artifacts = root.join("fuzz/artifacts").join(name);
    for d in [&work, &artifacts, &tmp.to_path_buf()] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut cmd = Command::new(root.join(BIN_DIR).join(name));
    // New inputs go to the first directory; the committed ones are only read.
    cmd.arg(&work);
    for d in [
        root.join("fuzz/corpus").join(name),
        root.join("fuzz/regressions").join(name),
    ] {
        if d.is_dir() {
            cmd.arg(d);
        }
    }
    if seconds == 0 {
        cmd.arg("-runs=0");
    } else {
        cmd.arg(format!("-max_total_time={seconds}"));
    }
    cmd.args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .env("TMPDIR", tmp)
        .current_dir(root)
        .stdin(Stdio::null());
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    cmd.stdout(out.try_clone()?).stderr(out);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // Die with xtask (Ctrl-C, kill): never leave a fuzzer running.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {BIN_DIR}/{name} (was it built?)"))
}

pub fn main(root: &Path, args: Args) -> Result<()> {
    let started = Instant::now();
    let all = targets(root)?;
    let chosen = if args.targets.is_empty() {
        all.clone()
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target `{t}`; there are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    ensure_cargo_fuzz()?;
    let mut build = vec!["fuzz", "build", "--sanitizer", &args.sanitizer];
    if chosen.len() == 1 {
        build.push(&chosen[0]);
    }
    super::nightly_cargo(root, &build)?;
    let built = started.elapsed();

    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let logs = root.join("fuzz/target/logs");
    std::fs::create_dir_all(&logs)?;
    println!(
        "xtask: fuzzing {} target(s), {} s each, {jobs} at a time (logs in {})",
        chosen.len(),
        args.seconds,
        logs.display()
    );
    // TMPDIR of the targets (bundle_load writes files per input): memory when there is a
    // tmpfs, several times faster than a disk.
    let scratch = if Path::new("/dev/shm").is_dir() {
        PathBuf::from(format!("/dev/shm/swarmtrace-fuzz-{}", std::process::id()))
    } else {
        root.join("fuzz/target/tmp")
    };
    let deadline = Duration::from_secs(args.seconds) + GRACE;
    let mut queue: VecDeque<String> = chosen.iter().cloned().collect();
    let mut running: Vec<(String, Child, Instant, PathBuf)> = Vec::new();
    let mut done: Vec<Outcome> = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < jobs {
            let Some(name) = queue.pop_front() else {
                break;
            };
            let tmp = scratch.join(&name);
            let log = logs.join(format!("{name}.log"));
            let child = spawn(root, &name, args.seconds, &log, &tmp)?;
            running.push((name, child, Instant::now(), tmp));
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            let (_, child, since, _) = &mut running[i];
            let mut killed = false;
            let status = match child.try_wait()? {
                Some(s) => Some(s),
                None if since.elapsed() > deadline => {
                    let _ = child.kill();
                    killed = true;
                    Some(child.wait()?)
                }
                None => {
                    i += 1;
                    continue;
                }
            };
            let (name, _, since, tmp) = running.swap_remove(i);
            let _ = std::fs::remove_dir_all(&tmp);
            let log = logs.join(format!("{name}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let o = Outcome {
                name,
                status: if killed { None } else { status },
                killed,
                elapsed: since.elapsed(),
                log,
                text,
            };
            println!("xtask: fuzz {}: {}", o.name, o.result());
            done.push(o);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    done.sort_by_key(|o| chosen.iter().position(|c| *c == o.name));

    println!(
        "\n{:<16} {:>10} {:>9} {:>6} {:>7} {:>8} {:>6}  result",
        "target", "execs", "execs/s", "cov", "ft", "corpus", "rss MB"
    );
    let num = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for o in &done {
        println!(
            "{:<16} {:>10} {:>9} {:>6} {:>7} {:>8} {:>6}  {}",
            o.name,
            num(o.stat("stat::number_of_executed_units:")),
            num(o.stat("stat::average_exec_per_sec:")),
            num(o.stat("cov:")),
            num(o.stat("ft:")),
            num(o.stat("corp:")),
            num(o.stat("stat::peak_rss_mb:")),
            o.result()
        );
    }
    let failed: Vec<&Outcome> = done.iter().filter(|o| !o.ok()).collect();
    println!(
        "xtask: fuzz took {:.0} s ({:.0} s building, {:.0} s fuzzing)",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
    );
    if failed.is_empty() {
        return Ok(());
    }
    for o in &failed {
        println!("\n{}: {} (log: {})", o.name, o.result(), o.log.display());
        if let Some(why) = o.why() {
            println!("  {why}");
        }
        if let Some(input) = o.artifact() {
            println!("  input: {input}");
            println!("  reproduce: {BIN_DIR}/{} {input}", o.name);
        }
    }
    bail!(
        "{} of {} fuzz target(s) failed: {}",
        failed.len(),
        done.len(),
        failed
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
