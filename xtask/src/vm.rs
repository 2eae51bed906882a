//! `cargo xtask vm-test`: swarmtrace against Docker's real routing mesh, in QEMU guests booting
//! Debian's cloud kernels (5.10, 6.1, 6.12), since the host kernel has no IPVS.
//!
//! Host side (this file): check the tools, fetch and unpack the kernel packages, build (or
//! reuse) a Debian 12 base image with docker.io and the tools the scenarios need, build the
//! swarmtrace binary, then per kernel: an io disk with the binary, the guest scripts (`vm/guest`)
//! and a config; boot under QEMU TCG; follow the serial console; parse the
//! `SWARMTRACE-RESULT` lines; copy the guest's outputs (NDJSON, logs, fixtures) out of the io disk.
//! Guest side: `vm/guest/run.sh` (see vm/README.md).
//!
//! Everything big lives in the cache directory (default /work/vmcache, `--cache`), the per-run
//! files in a temporary directory that is removed at the end. QEMU runs in its own process group,
//! killed on every exit path (end, timeout, Ctrl-C/SIGTERM, error).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{output, run};
use anyhow::{anyhow, bail, Context, Result};

/// Every kernel the harness knows: tag, apt suite source, package-name pattern.
const KERNELS: &[(&str, Suite, &str)] = &[
    (
        "5.10",
        Suite::Bullseye,
        r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64$",
    ),
    (
        "6.1",
        Suite::System,
        r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
    ),
    (
        "6.12",
        Suite::System,
        r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$",
    ),
];

const SCENARIOS: &[&str] = &[
    "boot",
    "lab",
    "healthy",
    "drop-rule",
    "sbox-drop",
    "task-fault",
    "paws",
    "coexist",
    "deb",
    "stack",
    "host-ns",
    "mesh-bypassed",
    "no-task",
    "task-refuses",
    "conntrack-full",
    "ipvs-no-backend",
    "ipvs-misdirected",
    "nodes-healthy",
    "nodes-paws",
    "nodes-fleet",
    "nodes-capture",
    "nodes-overlay",
];

/// Scenarios on two guests forming a two-node Swarm (vm/guest/nodes.sh).
const TWO_NODE: &[&str] = &[
    "nodes-healthy",
    "nodes-paws",
    "nodes-fleet",
    "nodes-capture",
    "nodes-overlay",
];

/// Scenarios that run on one kernel only when no --scenario is given: what they prove does not
/// depend on the kernel line (packaging, namespaces seen from a container), or costs twice a
/// guest (two nodes). Named with --scenario, they run on every chosen kernel.
const ONE_KERNEL_BY_DEFAULT: &[(&str, &str)] = &[
    ("stack", "6.12"),
    ("host-ns", "6.12"),
    ("nodes-healthy", "6.12"),
    ("nodes-paws", "6.12"),
    ("nodes-fleet", "6.12"),
    ("nodes-capture", "6.12"),
    ("nodes-overlay", "6.12"),
];

/// The arm64 guest's name in `--kernel` and the results (vm/arm64/run.sh).
const ARM64: &str = "arm64";

/// Packages installed into the guest on top of `debootstrap --variant=minbase bookworm`.
const GUEST_PACKAGES: &[&str] = &[
    "docker.io",
    "iptables",
    "iproute2",
    "kmod",
    "curl",
    "busybox-static",
    "conntrack",
    "ipvsadm",
    "python3",
    "procps",
    // The `deb` scenario: `man swarmtrace`, `getcap`.
    "man-db",
    "libcap2-bin",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Suite {
    /// The apt sources the system already has (bookworm).
    System,
    /// Debian 11, through a temporary source list that leaves the system's alone.
    Bullseye,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kernels to boot (5.10, 6.1, 6.12, and arm64: Debian 12's arm64 6.1 under
    /// qemu-system-aarch64, `lab` only); repeat or comma-separate. Default: all four.
    #[arg(long = "kernel", value_delimiter = ',')]
    kernels: Vec<String>,
    /// Scenarios to run (boot, lab, healthy, drop-rule, sbox-drop, task-fault, paws, coexist,
    /// deb, stack, host-ns, mesh-bypassed, no-task, task-refuses, conntrack-full, ipvs-no-backend, ipvs-misdirected,
    /// nodes-healthy, nodes-paws, nodes-fleet, nodes-capture, nodes-overlay);
    /// default: all (some on one kernel only, see vm/README.md). `boot` checks that the guest
    /// booted from the base image's partition and mounted the io disk (nothing else); `lab` is
    /// `swarmtrace demo all` (the namespace lab, no Docker); `deb` installs the .deb of
    /// `cargo xtask dist`; `stack` loads its image and deploys deploy/swarmtrace-stack.yml;
    /// `nodes-healthy`, `nodes-paws`, `nodes-overlay`: two guests forming a two-node Swarm;
    /// `nodes-fleet` deploys the stack on both and joins `docker service logs` live;
    /// `nodes-capture` captures on both and reports the two bundles.
    #[arg(long = "scenario", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Where downloads, the base image and the results go (never inside the repository).
    #[arg(long, default_value = "/work/vmcache")]
    cache: PathBuf,
    /// Rebuild the base image (debootstrap, packages) even when a cached one fits.
    #[arg(long)]
    rebuild: bool,
    /// Copy the fixtures captured in each guest to tests/fixtures/linux-<kernel>/.
    #[arg(long)]
    write_fixtures: bool,
    /// Use this swarmtrace binary instead of the static x86_64 one of `cargo xtask dist`.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Seconds one guest may run before it is killed.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Keep the per-run directory (io disks, serial logs) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Boot each kernel this many times in a row (with `--scenario boot`: the boot check
    /// alone, a few seconds a boot). No boot is retried then: every one must pass.
    #[arg(long, default_value_t = 1)]
    boots: u32,
    /// The harness's own test: instead of the scenarios, build each deliberately broken
    /// swarmtrace of `vm/mutants/*.patch` and require that the scenarios its patch names fail
    /// (on a verdict, not on setup) on the chosen kernels.
    #[arg(long, conflicts_with_all = ["scenarios", "binary"])]
    mutants: bool,
}

/// The harness could not run on this machine (tools, kernel packages, the base image):
/// `cargo xtask vm-test` exits with status 2 instead of 1, which means a scenario failed.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

fn unavailable(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Unavailable(format!("{e:#}")))
}

/// (kernel, scenario) -> (status, detail).
type Table = BTreeMap<(String, String), (String, String)>;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_signal as *const () as libc::sighandler_t);
    }
}

/// A process (QEMU) in its own process group, killed with its group when dropped.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// A directory removed when dropped (unless kept).
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            println!("vm-test: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs `cmd` with `input` on its standard input.
fn run_with_input(cmd: &mut Command, input: &str) -> Result<()> {
    use std::io::Write as _;
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {desc}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("{desc} failed ({status})");
    }
    Ok(())
}

/// The base image's MBR disk signature; the kernel mounts its first partition as root by it.
const ROOT_DISK_ID: u32 = 0x5374_7231;
/// `root=PARTUUID=` of that partition: the signature, then the partition number.
const ROOT_PARTUUID: &str = "53747231-01";

pub fn main(root: &Path, args: Args) -> Result<()> {
    install_signal_handlers();
    let mut kernels: Vec<String> = if args.kernels.is_empty() {
        KERNELS
            .iter()
            .map(|k| k.0.to_owned())
            .chain([ARM64.to_owned()])
            .collect()
    } else {
        args.kernels.clone()
    };
    for k in &kernels {
        if !KERNELS.iter().any(|(t, ..)| t == k) && k != ARM64 {
            bail!(
                "unknown kernel `{k}`: choose among {}, {ARM64}",
                KERNELS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            );
        }
    }
    // The arm64 guest (vm/arm64/run.sh) runs only the namespace lab.
    let arm64 = kernels.iter().any(|k| k == ARM64) && !args.mutants;
    kernels.retain(|k| k != ARM64);
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios.clone()
    };
    for s in &scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!(
                "unknown scenario `{s}`: choose among {}",
                SCENARIOS.join(", ")
            );
        }
    }
    if args.cache.starts_with(root) {
        bail!(
            "the cache {} is inside the repository: choose another --cache",
            args.cache.display()
        );
    }
    let arm64 = arm64 && scenarios.iter().any(|s| s == "lab");
    if kernels.is_empty() {
        if !arm64 {
            bail!("the {ARM64} guest runs only the `lab` scenario");
        }
        let mut table = Table::new();
        table.insert(
            (ARM64.to_owned(), "lab".to_owned()),
            arm64_lab(root, &args.cache)?,
        );
        return report(&table, "");
    }
    check_tools().map_err(unavailable)?;
    fs::create_dir_all(&args.cache)
        .with_context(|| format!("cannot create {}", args.cache.display()))?;

    let t0 = Instant::now();
    // Kernels first: a missing package fails before minutes of image building.
    let mut unpacked = Vec::new();
    for k in &kernels {
        unpacked.push(fetch_kernel(&args.cache, k).map_err(unavailable)?);
    }
    let t_kernels = t0.elapsed();

    let t1 = Instant::now();
    let base = base_image(root, &args.cache, args.rebuild).map_err(unavailable)?;
    let t_image = t1.elapsed();

    let work = TempDir {
        path: make_temp_dir()?,
        keep: args.keep,
    };
    let mut guests = Guests {
        root,
        args: &args,
        work: &work.path,
        base: &base,
        extras: Vec::new(),
        mutant_bins: Vec::new(),
    };
    if args.mutants {
        // Each mutant builds its own binary.
        return mutants(&guests, &unpacked);
    }
    // What users run: the static x86_64 binary of `cargo xtask dist`, and its .deb and image
    // when the scenarios install them.
    let wants = |s: &str| scenarios.iter().any(|x| x == s);
    // host-ns runs the image in containers too; nodes-fleet deploys the stack on two nodes.
    let image = wants("stack") || wants("host-ns") || wants("nodes-fleet");
    let dist = if args.binary.is_none() || wants("deb") || image {
        let t = Instant::now();
        let d = crate::dist::for_vm(root, wants("deb"), image)?;
        println!("vm-test: dist artifacts in {:.0?}", t.elapsed());
        Some(d)
    } else {
        None
    };
    if let Some(d) = &dist {
        if let Some(deb) = &d.deb {
            guests.extras.push((deb.clone(), "swarmtrace.deb"));
        }
        if let Some(img) = &d.image {
            guests.extras.push((img.clone(), "swarmtrace-image.tar"));
            guests.extras.push((
                root.join("deploy/swarmtrace-stack.yml"),
                "swarmtrace-stack.yml",
            ));
        }
    }
    let binary = match (&args.binary, &dist) {
        (Some(b), _) => b.clone(),
        (None, Some(d)) => d.binary.clone(),
        (None, None) => unreachable!("dist is built when no --binary is given"),
    };
    if !binary.is_file() {
        bail!("no swarmtrace binary at {}", binary.display());
    }
    let mut table = Table::new();
    let mut timings = Vec::new();
    for i in 1..=args.boots.max(1) {
        if args.boots > 1 {
            println!("vm-test: boot {i} of {}", args.boots);
        }
        let (t, d) = guests.matrix(&unpacked, &binary, &scenarios, "")?;
        for ((k, s), r) in t {
            let s = if args.boots > 1 {
                format!("{s}#{i}")
            } else {
                s
            };
            table.insert((k, s), r);
        }
        timings.extend(d);
    }
    if arm64 {
        table.insert(
            (ARM64.to_owned(), "lab".to_owned()),
            arm64_lab(root, &args.cache)?,
        );
    }
    report(
        &table,
        &format!(
            "kernels fetched in {:.0?}, base image in {:.0?}; {}",
            t_kernels,
            t_image,
            timings
                .iter()
                .map(|(k, d)| format!("{k}: {:.0?}", d))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )?;
    println!(
        "vm-test: guest outputs under {}",
        args.cache.join("results").display()
    );
    Ok(())
}

fn report(table: &Table, timings: &str) -> Result<()> {
    println!("\nvm-test: results");
    let mut failed = 0;
    for ((k, s), (st, detail)) in table {
        if st != "pass" {
            failed += 1;
        }
        println!("  {k:<5} {s:<11} {st:<5} {detail}");
    }
    if !timings.is_empty() {
        println!("vm-test: {timings}");
    }
    if failed > 0 {
        bail!("{failed} of {} scenario runs failed", table.len());
    }
    println!("vm-test: {} passed, 0 failed", table.len());
    Ok(())
}

/// The arm64 guest: `vm/arm64/run.sh` boots Debian 12's arm64 cloud kernel under
/// qemu-system-aarch64 (TCG) with the static aarch64 binary of `cargo xtask dist` and runs
/// `swarmtrace demo all`; its serial log's result line is the `lab` result of kernel `arm64`.
fn arm64_lab(root: &Path, cache: &Path) -> Result<(String, String)> {
    crate::dist::main(root, crate::dist::Args::only("aarch64"))?;
    let t = Instant::now();
    let status = Command::new("bash")
        .arg(root.join("vm/arm64/run.sh"))
        .arg(cache)
        .stdin(Stdio::null())
        .status()
        .context("cannot run vm/arm64/run.sh")?;
    println!("vm-test: arm64 guest in {:.0?} ({status})", t.elapsed());
    if status.code() == Some(2) {
        return Ok((
            "fail".into(),
            "the arm64 guest cannot run here (see above; bash scripts/setup-vm.sh installs qemu-system-arm)".into(),
        ));
    }
    let log = fs::read(cache.join("arm64/serial.log")).unwrap_or_default();
    let result = String::from_utf8_lossy(&log)
        .lines()
        .rev()
        .find_map(parse_result);
    Ok(match result {
        Some((_, st, detail)) => (st, detail),
        None => (
            "fail".into(),
            format!(
                "no result from the arm64 guest ({status}; see {})",
                cache.join("arm64/serial.log").display()
            ),
        ),
    })
}

/// What every boot shares: the repository, the options, the run's directory, the base image.
struct Guests<'a> {
    root: &'a Path,
    args: &'a Args,
    work: &'a Path,
    base: &'a Path,
    /// Files copied to the io disk's `dist/` (source, name): the .deb, the image, the stack.
    extras: Vec<(PathBuf, &'static str)>,
    /// Mutants' binaries (name, path), copied to the io disk as `bin/swarmtrace-NAME`: a
    /// scenario named `SCENARIO@NAME` runs with that one (`--mutants`).
    mutant_bins: Vec<(String, PathBuf)>,
}

impl Guests<'_> {
    /// Boots each kernel once with `binary` and `scenarios`; outputs go to
    /// `CACHE/results/LABEL/linux-TAG`. When the guest gives no result for a scenario (its
    /// kernel locked up, it ran past --timeout, it died) or its setup failed (Docker's services
    /// not converging under emulation), those scenarios, and only those, get one more boot:
    /// that is the machine, not swarmtrace. The first boot's outputs are kept beside it as
    /// `linux-TAG.first-boot`. A scenario that ran and failed is never retried.
    fn matrix(
        &self,
        kernels: &[Kernel],
        binary: &Path,
        scenarios: &[String],
        label: &str,
    ) -> Result<(Table, Vec<(String, Duration)>)> {
        let mut table = Table::new();
        let mut timings = Vec::new();
        let results_dir = self.args.cache.join("results").join(label);
        for kernel in kernels {
            if STOP.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            let t = Instant::now();
            // Named scenarios and mutants' runs go on every chosen kernel.
            let here = |s: &String| {
                !self.args.scenarios.is_empty()
                    || self.args.mutants
                    || ONE_KERNEL_BY_DEFAULT
                        .iter()
                        .all(|(name, k)| *name != scenario_of(s) || *k == kernel.tag)
            };
            let (two, scenarios): (Vec<String>, Vec<String>) = scenarios
                .iter()
                .filter(|s| here(s))
                .cloned()
                .partition(|s| TWO_NODE.contains(&scenario_of(s)));
            let scenarios = &scenarios[..];
            if !two.is_empty() {
                for (s, r) in two_nodes(self, &results_dir, kernel, binary, &two)? {
                    table.insert((kernel.tag.clone(), s), r);
                }
            }
            if scenarios.is_empty() {
                timings.push((kernel.tag.clone(), t.elapsed()));
                continue;
            }
            let kept = results_dir.join(format!("linux-{}.first-boot", kernel.tag));
            let _ = fs::remove_dir_all(&kept);
            let first = boot(self, &results_dir, kernel, binary, scenarios, None)?;
            let mut results = first.results.clone();
            // Repeated boots measure the boots themselves: none is retried.
            let retry = if self.args.boots > 1 {
                None
            } else {
                retry(&first, scenarios)
            };
            if let Some((why, again)) = retry {
                println!(
                    "vm-test: kernel {}: {why}; booting it once more for {}",
                    kernel.tag,
                    again.join(", ")
                );
                let dir = results_dir.join(format!("linux-{}", kernel.tag));
                let _ = fs::rename(&dir, &kept);
                let second = boot(self, &results_dir, kernel, binary, &again, None)?;
                for s in &again {
                    let r = second.results.get(s).cloned().unwrap_or_else(|| {
                        let faults: Vec<&str> = [&first.fault, &second.fault]
                            .into_iter()
                            .flatten()
                            .map(String::as_str)
                            .collect();
                        (
                            "fail".to_owned(),
                            format!(
                                "no result from the guest, booted twice ({})",
                                if faults.is_empty() {
                                    "see its serial log".to_owned()
                                } else {
                                    faults.join("; ")
                                }
                            ),
                        )
                    });
                    results.insert(s.clone(), r);
                }
            }
            timings.push((kernel.tag.clone(), t.elapsed()));
            for s in scenarios {
                let r = results.get(s).cloned().unwrap_or_else(|| {
                    (
                        "fail".to_owned(),
                        "no result from the guest (see its serial log)".to_owned(),
                    )
                });
                table.insert((kernel.tag.clone(), s.clone()), r);
            }
        }
        Ok((table, timings))
    }
}

/// One guest's place on the two nodes' LAN.
#[derive(Debug, Clone, Copy)]
struct NodeNet {
    /// 1: the manager, with the client network; 2: the worker, where the tasks run.
    index: u8,
    /// The host's loopback port of the QEMU socket between them.
    port: u16,
}

/// Set when a guest of the pair being booted wedged: the other stops waiting for it.
static PAIR_WEDGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Boots node 1 (running `scenarios`) and node 2 of `kernel` at once on one virtual LAN, a
/// QEMU socket on the host's loopback `port` between them.
fn boot_pair(
    g: &Guests,
    results_dir: &Path,
    kernel: &Kernel,
    binary: &Path,
    scenarios: &[String],
    port: u16,
) -> Result<(Boot, Boot)> {
    PAIR_WEDGED.store(false, std::sync::atomic::Ordering::Relaxed);
    let (n1, n2) = std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            boot(
                g,
                results_dir,
                kernel,
                binary,
                scenarios,
                Some(NodeNet { index: 1, port }),
            )
        });
        // Node 2's QEMU connects to node 1's listening socket.
        std::thread::sleep(Duration::from_secs(3));
        let second = boot(
            g,
            results_dir,
            kernel,
            binary,
            &[],
            Some(NodeNet { index: 2, port }),
        );
        (
            first
                .join()
                .unwrap_or_else(|_| Err(anyhow!("node 1 panicked"))),
            second,
        )
    });
    Ok((n1?, n2?))
}

/// The two-node scenarios: two guests of `kernel` booted at once on one virtual LAN
/// (vm/guest/nodes.sh forms the Swarm, runs the traffic and swarmtrace on both); then, here,
/// `swarmtrace join` over both nodes' NDJSON (vm/guest/nodes_check.py judges it).
fn two_nodes(
    g: &Guests,
    results_dir: &Path,
    kernel: &Kernel,
    binary: &Path,
    scenarios: &[String],
) -> Result<Vec<(String, (String, String))>> {
    // A port of its own for each pair (the first pair's socket may linger).
    let port = 20_000 + (std::process::id() % 19_000) as u16;
    let (mut n1, mut n2) = boot_pair(g, results_dir, kernel, binary, scenarios, port)?;
    // A guest's kernel wedged (a panic or lockup under emulation, seen once on 6.12 in CI:
    // an int3 oops while Docker started a container on node 2): the pair is booted once more
    // for every scenario, since a scenario's join reads both nodes' outputs of one boot. Only
    // for a kernel fault, never for a scenario that failed by itself.
    if let Some(fault) = pair_again(&n1, &n2, scenarios) {
        println!(
            "vm-test: kernel {}, two nodes: {fault}; booting the pair once more for {}",
            kernel.tag,
            scenarios.join(", ")
        );
        for i in 1..=2 {
            let dir = results_dir.join(format!("linux-{}-node{i}", kernel.tag));
            let kept = results_dir.join(format!("linux-{}-node{i}.first-boot", kernel.tag));
            let _ = fs::remove_dir_all(&kept);
            let _ = fs::rename(&dir, &kept);
        }
        (n1, n2) = boot_pair(g, results_dir, kernel, binary, scenarios, port + 1000)?;
    }
    let out = |i: u8| {
        results_dir
            .join(format!("linux-{}-node{i}", kernel.tag))
            .join("out")
    };
    let mut rows = Vec::new();
    for s in scenarios {
        let mut r = n1.results.get(s).cloned().unwrap_or_else(|| {
            (
                "fail".to_owned(),
                format!(
                    "no result from node 1 ({})",
                    n1.fault
                        .clone()
                        .or(n2.fault.clone())
                        .unwrap_or_else(|| "see its serial log".into())
                ),
            )
        });
        if let Some((st, d)) = n2.results.get(s) {
            if st != "pass" {
                r = (st.clone(), format!("node 2: {d}"));
            }
        }
        // nodes-fleet: node 1 judged the live join itself (while the stack ran); shown here.
        if r.0 == "pass" && s == "nodes-fleet" {
            let live = fs::read(out(1).join("nodes-fleet.live.ndjson")).unwrap_or_default();
            println!("vm-test: {s}: docker service logs --raw -f | swarmtrace join --json - (live, on node 1):");
            for l in String::from_utf8_lossy(&live).lines().take(40) {
                println!("  j {}", l.chars().take(600).collect::<String>());
            }
        }
        // The join of both nodes' runs, by the host's swarmtrace; for nodes-capture, its
        // report of both nodes' bundles.
        if r.0 == "pass" && s != "nodes-fleet" {
            let joined_path = if s == "nodes-capture" {
                let bundles = [
                    out(1).join("nodes-capture.tar.gz"),
                    out(2).join("nodes-capture.tar.gz"),
                ];
                let text = Command::new(binary)
                    .arg("report")
                    .args(&bundles)
                    .stdin(Stdio::null())
                    .output()
                    .context("cannot run swarmtrace report")?;
                println!("vm-test: {s}: swarmtrace report node1.tar.gz node2.tar.gz:");
                for l in String::from_utf8_lossy(&text.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&text.stderr).lines())
                    .take(80)
                {
                    println!("  r {}", l.chars().take(600).collect::<String>());
                }
                let json = Command::new(binary)
                    .args(["report", "--format", "json"])
                    .args(&bundles)
                    .stdin(Stdio::null())
                    .output()
                    .context("cannot run swarmtrace report")?;
                let path = out(1).join("nodes-capture.report.json");
                fs::write(&path, &json.stdout)?;
                path
            } else {
                let (f1, f2) = (
                    out(1).join(format!("{s}.ndjson")),
                    out(2).join(format!("{s}.ndjson")),
                );
                let joined = Command::new(binary)
                    .args(["join", "--json"])
                    .arg(&f1)
                    .arg(&f2)
                    .stdin(Stdio::null())
                    .output()
                    .context("cannot run swarmtrace join")?;
                let joined_path = out(1).join(format!("{s}.join.ndjson"));
                fs::write(&joined_path, &joined.stdout)?;
                println!("vm-test: {s}: swarmtrace join of both nodes:");
                for l in String::from_utf8_lossy(&joined.stdout).lines().take(40) {
                    println!("  j {}", l.chars().take(600).collect::<String>());
                }
                joined_path
            };
            let check = Command::new("python3")
                .arg(g.root.join("vm/guest/nodes_check.py"))
                .arg(s)
                .arg(&joined_path)
                .output()
                .context("cannot run vm/guest/nodes_check.py")?;
            let line = String::from_utf8_lossy(&check.stdout)
                .lines()
                .last()
                .unwrap_or("fail nodes_check.py printed nothing")
                .to_owned();
            r = match line.split_once(' ') {
                Some(("pass", d)) => ("pass".into(), format!("{}; join: {d}", r.1)),
                Some((_, d)) => ("fail".into(), format!("join: {d}")),
                None => ("fail".into(), format!("join: {line}")),
            };
        }
        rows.push((s.clone(), r));
    }
    Ok(rows)
}

/// Whether a pair of nodes must be booted again, and why: a guest's kernel wedged and a
/// scenario did not pass on node 1 (which judges them all).
fn pair_again(n1: &Boot, n2: &Boot, scenarios: &[String]) -> Option<String> {
    let fault = n1.fault.clone().or(n2.fault.clone())?;
    scenarios
        .iter()
        .any(|s| n1.results.get(s).is_none_or(|(st, _)| st != "pass"))
        .then_some(fault)
}

/// Whether a boot must be repeated, why, and for which scenarios: those with no result (the
/// guest's kernel locked up, it ran past --timeout or died) and those whose common setup failed
/// (`setup: ...`, Docker not converging under emulation). `None` when every scenario ran.
fn retry(boot: &Boot, scenarios: &[String]) -> Option<(String, Vec<String>)> {
    let again: Vec<String> = scenarios
        .iter()
        .filter(|s| {
            boot.results
                .get(*s)
                .is_none_or(|(st, d)| st == "fail" && d.starts_with("setup:"))
        })
        .cloned()
        .collect();
    let first = again.first()?;
    let why = match (&boot.fault, boot.results.get(first)) {
        (Some(f), _) => f.clone(),
        (None, Some((_, d))) => format!("the guest failed before its scenarios ({d})"),
        (None, None) => format!("the guest gave no result for {first}"),
    };
    Some((why, again))
}

/// A deliberately broken swarmtrace: `vm/mutants/NAME.patch`, whose preamble names the
/// scenarios it must fail (`expect-fail: paws`).
struct Mutant {
    name: String,
    patch: PathBuf,
    expect_fail: Vec<String>,
}

fn load_mutants(root: &Path) -> Result<Vec<Mutant>> {
    let dir = root.join("vm/mutants");
    let mut patches: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    patches.sort();
    let mut out = Vec::new();
    for patch in patches {
        let text = fs::read_to_string(&patch)?;
        let preamble = text.split("\ndiff --git ").next().unwrap_or("");
        let expect_fail: Vec<String> = preamble
            .lines()
            .filter_map(|l| l.strip_prefix("expect-fail:"))
            .flat_map(|l| l.split_whitespace().map(str::to_owned))
            .collect();
        let name = patch
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or("mutant")
            .to_owned();
        if expect_fail.is_empty() {
            bail!(
                "{}: no `expect-fail: SCENARIO...` line before the diff",
                patch.display()
            );
        }
        if let Some(s) = expect_fail
            .iter()
            .find(|s| !SCENARIOS.contains(&s.as_str()))
        {
            bail!("{}: unknown scenario `{s}`", patch.display());
        }
        out.push(Mutant {
            name,
            patch,
            expect_fail,
        });
    }
    if out.is_empty() {
        bail!("no mutants in {}", dir.display());
    }
    Ok(out)
}

/// Builds each mutant (the working tree + its patch, the kernel object of the real build),
/// then boots each kernel once with all of them: every scenario a mutant names runs with its
/// binary (`SCENARIO@MUTANT`) and must fail on a verdict. One boot for all the mutants, not one
/// each: the guest's Docker services converge once (a mutant of a two-node scenario boots its
/// own pair). A mutant that passes a scenario means the scenarios cannot see that bug; a setup
/// failure is inconclusive.
fn mutants(g: &Guests, kernels: &[Kernel]) -> Result<()> {
    let list = load_mutants(g.root)?;
    let obj = crate::ebpf_build::build(g.root).map_err(anyhow::Error::msg)?;
    // Its own target directory: sharing target/ would overwrite target/release/swarmtrace.
    let target = g.root.join("target/vm-mutants");
    let files = output(
        Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .current_dir(g.root),
    )
    .context("mutants are built from the git working tree")?;
    let mut built = Vec::new();
    for m in &list {
        println!(
            "vm-test: mutant {}: expected to fail {}",
            m.name,
            m.expect_fail.join(", ")
        );
        let src = g.work.join(format!("mutant-{}", m.name));
        for f in files.split('\0').filter(|f| !f.is_empty()) {
            let from = g.root.join(f);
            if !from.is_file() {
                continue; // deleted in the working tree
            }
            let to = src.join(f);
            fs::create_dir_all(to.parent().expect("a file has a parent"))?;
            fs::copy(&from, &to)?;
        }
        run(Command::new("git")
            .arg("apply")
            .arg(&m.patch)
            .current_dir(&src))
        .with_context(|| {
            format!(
                "mutant {} no longer applies to the code: refresh {}",
                m.name,
                m.patch.display()
            )
        })?;
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                // Static musl, as `cargo xtask dist` builds it: the guests run what users run.
                .args(["build", "--release", "--locked", "-p", "swarmtrace"])
                .args(["--target", "x86_64-unknown-linux-musl"])
                .env("CARGO_TARGET_DIR", &target)
                .env("SWARMTRACE_EBPF_OBJ", &obj)
                .current_dir(&src),
        )
        .with_context(|| format!("mutant {} does not build", m.name))?;
        let binary = g.work.join(format!("swarmtrace-{}", m.name));
        fs::copy(
            target.join("x86_64-unknown-linux-musl/release/swarmtrace"),
            &binary,
        )?;
        built.push((m, binary));
    }
    let (two, one): (Vec<_>, Vec<_>) = built
        .iter()
        .partition(|(m, _)| m.expect_fail.iter().any(|s| TWO_NODE.contains(&s.as_str())));
    let mut table = Table::new();
    if let Some((_, first)) = one.first() {
        let batch = Guests {
            root: g.root,
            args: g.args,
            work: g.work,
            base: g.base,
            extras: g.extras.clone(),
            mutant_bins: one
                .iter()
                .map(|(m, b)| (m.name.clone(), b.clone()))
                .collect(),
        };
        let runs: Vec<String> = one
            .iter()
            .flat_map(|(m, _)| m.expect_fail.iter().map(move |s| format!("{s}@{}", m.name)))
            .collect();
        // The main binary of these boots runs no scenario.
        table.extend(batch.matrix(kernels, first, &runs, "mutants")?.0);
    }
    for (m, binary) in &two {
        let (t, _) = g.matrix(
            kernels,
            binary,
            &m.expect_fail,
            &format!("mutants/{}", m.name),
        )?;
        table.extend(
            t.into_iter()
                .map(|((k, s), r)| ((k, format!("{s}@{}", m.name)), r)),
        );
    }
    let mut rows = Vec::new();
    for ((k, run), (st, detail)) in table {
        let verdict = if st == "pass" {
            "SURVIVED"
        } else if detail.starts_with("setup:") || detail.starts_with("no result") {
            "inconclusive"
        } else {
            "caught"
        };
        let (s, m) = run.split_once('@').unwrap_or((run.as_str(), "?"));
        rows.push((m.to_owned(), k, s.to_owned(), verdict, detail));
    }
    // Every run a mutant names has a row: a scenario the guest never reported is not caught.
    let expected: usize = list.iter().map(|m| m.expect_fail.len()).sum::<usize>() * kernels.len();
    println!("\nvm-test: mutants (each must be caught by the scenarios it names)");
    for (m, k, s, v, d) in &rows {
        println!("  {m:<16} {k:<5} {s:<11} {v:<12} {d}");
    }
    let bad = rows.iter().filter(|r| r.3 != "caught").count() + expected.saturating_sub(rows.len());
    if bad > 0 {
        bail!("{bad} of {expected} mutant runs were not caught");
    }
    println!("vm-test: {} mutant runs, all caught", rows.len());
    Ok(())
}

fn check_tools() -> Result<()> {
    let mut missing = Vec::new();
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("debootstrap", "debootstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("sfdisk", "fdisk"),
        ("debugfs", "e2fsprogs"),
        ("dpkg-deb", "dpkg"),
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("depmod", "kmod"),
        ("strip", "binutils"),
    ] {
        if which(tool).is_none() {
            missing.push(format!("{tool} (package {pkg})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "vm-test needs {}.\nOn Debian 12: apt-get install qemu-system-x86 debootstrap e2fsprogs kmod binutils \
             (when a backported qemu-utils is installed, add --allow-downgrades qemu-utils=<bookworm's version>)",
            missing.join(", ")
        );
    }
    if !Path::new("/usr/share/keyrings/debian-archive-keyring.gpg").is_file() {
        bail!("vm-test needs /usr/share/keyrings/debian-archive-keyring.gpg (apt-get install debian-archive-keyring)");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("vm-test must run as root (debootstrap, chroot, depmod -b)");
    }
    Ok(())
}

/// The Debian mirror apt already uses (first `URIs:` or `deb` line naming a .../debian archive).
fn debian_mirror() -> String {
    if let Ok(m) = std::env::var("SWARMTRACE_VM_MIRROR") {
        return m;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let uri = if line.starts_with("URIs:") {
                words.get(1).copied()
            } else if line.starts_with("deb ") {
                words.iter().find(|w| w.contains("://")).copied()
            } else {
                None
            };
            if let Some(u) = uri {
                let u = u.trim_end_matches('/');
                if u.ends_with("/debian") {
                    return u.to_owned();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}

/// apt options for the temporary bullseye source list.
fn bullseye_apt(cache: &Path) -> Result<Vec<String>> {
    let dir = cache.join("apt-bullseye");
    fs::create_dir_all(dir.join("lists/partial"))?;
    fs::create_dir_all(dir.join("cache/archives/partial"))?;
    let list = dir.join("sources.list");
    fs::write(
        &list,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} bullseye main\n",
            debian_mirror()
        ),
    )?;
    Ok(vec![
        "-o".into(),
        format!("Dir::Etc::sourcelist={}", list.display()),
        "-o".into(),
        "Dir::Etc::sourceparts=-".into(),
        "-o".into(),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        "-o".into(),
        format!("Dir::Cache={}", dir.join("cache").display()),
    ])
}

struct Kernel {
    tag: String,
    /// `uname -r` of the guest.
    release: String,
    vmlinuz: PathBuf,
}

/// Finds the newest package of a kernel line, downloads and unpacks it (cached).
fn fetch_kernel(cache: &Path, tag: &str) -> Result<Kernel> {
    let &(_, suite, pattern) = KERNELS.iter().find(|k| k.0 == tag).expect("checked");
    let dir = cache.join("kernels").join(tag);
    let release_file = dir.join("release");
    if let Ok(release) = fs::read_to_string(&release_file) {
        let release = release.trim().to_owned();
        let vmlinuz = dir.join(format!("root/boot/vmlinuz-{release}"));
        let modules = dir.join(format!("root/lib/modules/{release}"));
        if vmlinuz.is_file() && modules.is_dir() {
            println!("vm-test: kernel {tag}: cached {release}");
            return Ok(Kernel {
                tag: tag.to_owned(),
                release,
                vmlinuz,
            });
        }
    }
    let apt_opts = match suite {
        Suite::System => Vec::new(),
        Suite::Bullseye => {
            let o = bullseye_apt(cache)?;
            println!("vm-test: kernel {tag}: apt-get update of a temporary bullseye source list");
            output(Command::new("apt-get").args(&o).arg("update"))
                .with_context(|| format!("kernel {tag}: cannot read Debian 11's package lists"))?;
            o
        }
    };
    let found = output(Command::new("apt-cache").args(&apt_opts).args([
        "search",
        "--names-only",
        pattern,
    ]))?;
    let mut names: Vec<String> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort_by_key(|n| version_key(n));
    let Some(pkg) = names.pop() else {
        bail!(
            "kernel {tag}: no package matches {pattern} (apt-cache search found none{}); \
             the kernel package cannot be had",
            if suite == Suite::System {
                "; run apt-get update first"
            } else {
                ""
            }
        );
    };
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let have = fs::read_dir(&debs)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
        });
    let deb = match have {
        Some(d) => d,
        None => {
            println!("vm-test: kernel {tag}: apt-get download {pkg}");
            output(
                Command::new("apt-get")
                    .args(&apt_opts)
                    .args(["download", &pkg])
                    .current_dir(&debs),
            )
            .with_context(|| format!("kernel {tag}: cannot download {pkg}"))?;
            fs::read_dir(&debs)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{pkg}_")))
                })
                .ok_or_else(|| anyhow!("apt-get download {pkg} left no .deb"))?
        }
    };
    let release = pkg.trim_start_matches("linux-image-").to_owned();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("root")))?;
    let vmlinuz = dir.join(format!("root/boot/vmlinuz-{release}"));
    let modules = dir.join(format!("root/lib/modules/{release}"));
    if !vmlinuz.is_file() || !modules.is_dir() {
        bail!(
            "kernel {tag}: {} has no boot/vmlinuz-{release} or lib/modules/{release}",
            deb.display()
        );
    }
    fs::write(&release_file, format!("{release}\n"))?;
    println!("vm-test: kernel {tag}: {release}");
    Ok(Kernel {
        tag: tag.to_owned(),
        release,
        vmlinuz,
    })
}

/// Sort key: the numbers in a package name, in order (6.1.0-9 < 6.1.0-56).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// The base image: Debian 12 minbase + GUEST_PACKAGES + every cached kernel's modules +
/// /sbin/st-init. Rebuilt when its description (packages, kernels, st-init) changes.
fn base_image(root: &Path, cache: &Path, rebuild: bool) -> Result<PathBuf> {
    let rootfs = cache.join("rootfs");
    let boot_stamp = rootfs.join(".st-debootstrap");
    let pkg_stamp = rootfs.join(".st-rootfs");
    let want_rootfs = format!("bookworm minbase + {}\n", GUEST_PACKAGES.join(" "));
    let log = cache.join("debootstrap.log");
    if rebuild || !boot_stamp.is_file() {
        let t = Instant::now();
        let _ = fs::remove_dir_all(&rootfs);
        let mirror = debian_mirror();
        println!("vm-test: debootstrap --variant=minbase bookworm from {mirror}");
        let logf = fs::File::create(&log)?;
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg(&mirror)
            .stdout(logf.try_clone()?)
            .stderr(logf))
        .with_context(|| format!("debootstrap failed, see {}", log.display()))?;
        fs::write(&boot_stamp, "bookworm minbase\n")?;
        println!("vm-test: debootstrap done in {:.0?}", t.elapsed());
    }
    if fs::read_to_string(&pkg_stamp).ok().as_deref() != Some(&want_rootfs) {
        let t = Instant::now();
        println!(
            "vm-test: installing {} in the guest",
            GUEST_PACKAGES.join(" ")
        );
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        run(Command::new("chroot")
            .arg(&rootfs)
            .args(["apt-get", "install", "-y", "--no-install-recommends"])
            .args(GUEST_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(logf.try_clone()?)
            .stderr(logf))
        .with_context(|| {
            format!(
                "installing packages in the guest failed, see {}",
                log.display()
            )
        })?;
        run(Command::new("chroot")
            .arg(&rootfs)
            .args(["apt-get", "clean"]))?;
        fs::write(&pkg_stamp, &want_rootfs)?;
        println!("vm-test: guest packages in {:.0?}", t.elapsed());
    }

    // Every unpacked kernel's modules, so one image boots them all.
    let mut releases = Vec::new();
    if let Ok(rd) = fs::read_dir(cache.join("kernels")) {
        for e in rd.filter_map(|e| e.ok()) {
            if let Ok(r) = fs::read_to_string(e.path().join("release")) {
                let r = r.trim().to_owned();
                if e.path().join("root/lib/modules").join(&r).is_dir() {
                    releases.push((r, e.path().join("root/lib/modules")));
                }
            }
        }
    }
    releases.sort();
    let init = fs::read(root.join("vm/guest/st-init")).context("vm/guest/st-init is missing")?;
    let want = format!(
        "{want_rootfs}kernels {}\nst-init {}\nlayout mbr {ROOT_DISK_ID:08x}\n",
        releases
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        fnv(&init)
    );
    let img = cache.join("base.img");
    let stamp = cache.join("base.stamp");
    if img.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(&want) {
        println!("vm-test: base image: cached {}", img.display());
        return Ok(img);
    }
    let t = Instant::now();
    let mods = rootfs.join("lib/modules");
    let _ = fs::remove_dir_all(&mods);
    fs::create_dir_all(&mods)?;
    for (release, from) in &releases {
        run(Command::new("cp")
            .arg("-a")
            .arg(from.join(release))
            .arg(&mods))?;
        run(Command::new("depmod").arg("-b").arg(&rootfs).arg(release))?;
    }
    fs::write(rootfs.join("sbin/st-init"), &init)?;
    run(Command::new("chmod")
        .arg("755")
        .arg(rootfs.join("sbin/st-init")))?;
    let tmp = cache.join("base.img.tmp");
    let _ = fs::remove_file(&tmp);
    // One partition, found by the kernel through the disk's fixed signature
    // (root=PARTUUID=...): NVMe controllers probe asynchronously, so `/dev/nvme0n1` is the io
    // disk on some boots (seen: 1 boot in 6 of 6.12 mounted the io disk as root).
    const FS_BYTES: u64 = 3 << 30;
    const START: u64 = 1 << 20;
    fs::File::create(&tmp)?.set_len(START + FS_BYTES)?;
    let mut sfdisk = Command::new("sfdisk");
    sfdisk
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&tmp);
    run_with_input(
        &mut sfdisk,
        &format!(
            "label: dos\nlabel-id: 0x{ROOT_DISK_ID:08x}\nstart={}, type=83\n",
            START / 512
        ),
    )?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "stroot", "-E"])
        .arg(format!("offset={START}"))
        .arg("-d")
        .arg(&rootfs)
        .arg(&tmp)
        .arg(format!("{}k", FS_BYTES / 1024)))?;
    fs::rename(&tmp, &img)?;
    fs::write(&stamp, &want)?;
    println!(
        "vm-test: base image {} in {:.0?}",
        img.display(),
        t.elapsed()
    );
    Ok(img)
}

fn fnv(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn make_temp_dir() -> Result<PathBuf> {
    let mut template = *b"/tmp/swarmtrace-vm.XXXXXX\0";
    // SAFETY: a writable NUL-terminated template, as mkdtemp wants.
    let p = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if p.is_null() {
        bail!("mkdtemp: {}", std::io::Error::last_os_error());
    }
    Ok(PathBuf::from(
        std::str::from_utf8(&template[..template.len() - 1])?.to_owned(),
    ))
}

/// What one boot gave: scenario -> (status, detail), and what went wrong with the guest itself
/// (its kernel locked up or panicked, it ran past --timeout), if anything.
#[derive(Debug)]
struct Boot {
    results: BTreeMap<String, (String, String)>,
    fault: Option<String>,
}

/// A console line that says the guest's kernel is wedged: a soft lockup (with
/// `softlockup_panic=1` the panic follows) or a panic.
fn kernel_fault(line: &str) -> Option<&str> {
    ["soft lockup", "Kernel panic", "hard LOCKUP"]
        .into_iter()
        .any(|m| line.contains(m))
        .then_some(line.trim())
}

/// Boots one kernel; the guest's outputs go to `results/linux-TAG`.
fn boot(
    g: &Guests,
    results_dir: &Path,
    kernel: &Kernel,
    binary: &Path,
    scenarios: &[String],
    node: Option<NodeNet>,
) -> Result<Boot> {
    let (root, args, work, base) = (g.root, g.args, g.work, g.base);
    let ktag = &kernel.tag;
    // Two guests of one kernel (two Swarm nodes) each have their own directories and prefix.
    let tag = &match node {
        Some(n) => format!("{ktag}-node{}", n.index),
        None => ktag.clone(),
    };
    let dir = work.join(format!("linux-{tag}"));
    // A second boot of this kernel (a retry, another mutant) starts from nothing.
    let _ = fs::remove_dir_all(&dir);
    let io = dir.join("io");
    fs::create_dir_all(io.join("bin"))?;
    fs::create_dir_all(io.join("out"))?;
    run(Command::new("strip")
        .arg("-o")
        .arg(io.join("bin/swarmtrace"))
        .arg(binary))?;
    for (name, bin) in &g.mutant_bins {
        run(Command::new("strip")
            .arg("-o")
            .arg(io.join(format!("bin/swarmtrace-{name}")))
            .arg(bin))?;
    }
    run(Command::new("cp")
        .arg("-r")
        .arg(root.join("vm/guest"))
        .arg(io.join("vm")))?;
    if !g.extras.is_empty() {
        fs::create_dir_all(io.join("dist"))?;
        for (from, name) in &g.extras {
            fs::copy(from, io.join("dist").join(name))
                .with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    fs::write(
        io.join("config"),
        format!(
            "KTAG={ktag}\nSCENARIOS=\"{}\"\nFIXTURES={}\nNODE={}\n",
            scenarios.join(" "),
            // The boot check alone, and the nodes, capture nothing.
            u8::from(scenarios != ["boot"] && node.is_none()),
            node.map_or(0, |n| n.index)
        ),
    )?;
    let io_img = dir.join("io.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "stio", "-d"])
        .arg(&io)
        .arg(&io_img)
        .arg("256M"))?;
    let serial = dir.join("serial.log");
    fs::File::create(&serial)?;

    println!(
        "vm-test: booting {} under QEMU (TCG), scenarios: {}",
        kernel.release,
        scenarios.join(" ")
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
    ])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-append")
    // A guest kernel that locks up (seen once on 6.1 under TCG: both vCPUs stuck in runc while
    // Docker started the tasks) panics after 20 s with every CPU's backtrace on the console
    // (loglevel 5 shows them), and QEMU exits (-no-reboot) instead of idling to --timeout.
    .arg(format!(
        "console=ttyS0 root=PARTUUID={ROOT_PARTUUID} rw init=/sbin/st-init panic=-1 quiet \
             loglevel=5 softlockup_panic=1 softlockup_all_cpu_backtrace=1"
    ))
    .arg("-drive")
    .arg(format!(
        "file={},if=none,id=d0,format=raw,snapshot=on",
        base.display()
    ))
    .args(["-device", "nvme,drive=d0,serial=stroot"])
    .arg("-drive")
    .arg(format!(
        "file={},if=none,id=d1,format=raw",
        io_img.display()
    ))
    .args(["-device", "nvme,drive=d1,serial=stio"])
    .args(match node {
        // No network device: the guest's LAN is a namespace inside it, nothing leaves it.
        None => vec!["-nic".to_owned(), "none".to_owned()],
        // The two nodes' LAN: one QEMU socket between them on the host's loopback (node 1
        // listens, node 2 connects); still nothing leaves the machine.
        Some(n) => vec![
            "-netdev".to_owned(),
            format!(
                "socket,id=lan,{}=127.0.0.1:{}",
                if n.index == 1 { "listen" } else { "connect" },
                n.port
            ),
            "-device".to_owned(),
            format!("virtio-net-pci,netdev=lan,mac=52:54:00:53:54:0{}", n.index),
        ],
    })
    .args(["-display", "none", "-monitor", "none", "-no-reboot"])
    .arg("-serial")
    .arg(format!("file:{}", serial.display()))
    // snapshot=on writes its overlay to TMPDIR: keep it in the run's directory.
    .env("TMPDIR", &dir)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(fs::File::create(dir.join("qemu.stderr"))?)
    .process_group(0);
    let started = Instant::now();
    let mut qemu = Guarded(cmd.spawn().context("cannot start qemu-system-x86_64")?);

    // Follow the serial log until QEMU exits, the time is up, or we are told to stop.
    let mut reader = BufReader::new(fs::File::open(&serial)?);
    let mut pos = 0u64;
    let mut partial = String::new();
    let mut results = BTreeMap::new();
    let mut fault: Option<String> = None;
    let mut fault_at: Option<Instant> = None;
    let mut last_step = String::from("boot");
    let mut ended = false;
    let limit = Duration::from_secs(args.timeout);
    let mut outcome: Result<()> = Ok(());
    loop {
        let exited = qemu.0.try_wait()?.is_some();
        reader.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::new();
        let n = std::io::Read::read_to_end(&mut reader, &mut buf)?;
        pos += n as u64;
        partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            let line = line.trim_end_matches(['\r', '\n']);
            println!("[{tag}] {line}");
            if let Some((s, st, d)) = parse_result(line) {
                // One result per scenario: a second one means the guest script ran it
                // twice (or fell through), and neither can be trusted.
                let merged = match results.remove(&s) {
                    Some((st0, d0)) => (
                        "fail".to_owned(),
                        format!("reported twice: {st0} ({d0}), then {st} ({d})"),
                    ),
                    None => (st, d),
                };
                results.insert(s, merged);
            }
            if line.contains("SWARMTRACE-GUEST-END") {
                ended = true;
            }
            if let Some(step) = line.strip_prefix("ST-STEP ") {
                last_step = step.to_owned();
            }
            if fault.is_none() {
                if let Some(f) = kernel_fault(line) {
                    fault = Some(format!(
                        "the guest's kernel locked up or panicked during `{last_step}`: {f}"
                    ));
                    fault_at = Some(Instant::now());
                    if node.is_some() {
                        PAIR_WEDGED.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
        // The other node of a pair wedged: this one waits for it in vain (node 1 for up to
        // nine minutes of Docker converging); stop it now.
        if node.is_some()
            && fault.is_none()
            && PAIR_WEDGED.load(std::sync::atomic::Ordering::Relaxed)
        {
            fault = Some(format!(
                "stopped during `{last_step}`: the other node's kernel wedged"
            ));
            break;
        }
        if exited {
            break;
        }
        if STOP.load(Ordering::SeqCst) {
            outcome = Err(anyhow!("interrupted: QEMU killed"));
            break;
        }
        // softlockup_panic ends the guest within seconds; a kernel that keeps going wedged
        // gets a minute to print its backtraces.
        if fault_at.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
            break;
        }
        if started.elapsed() > limit {
            fault.get_or_insert(format!(
                "the guest ran past --timeout {} s during `{last_step}`: QEMU killed",
                args.timeout
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(qemu);
    let elapsed = started.elapsed();
    if !partial.is_empty() {
        println!("[{tag}] {partial}");
    }
    println!("vm-test: kernel {tag}: guest ran {elapsed:.1?}");
    if let Ok(e) = fs::read_to_string(dir.join("qemu.stderr")) {
        if !e.trim().is_empty() {
            println!("vm-test: qemu stderr: {}", e.trim());
        }
    }

    // The guest's outputs: NDJSON, logs, fixtures.
    let keep = results_dir.join(format!("linux-{tag}"));
    let _ = fs::remove_dir_all(&keep);
    fs::create_dir_all(&keep)?;
    let got = output(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /out {}", keep.display()))
            .arg(&io_img),
    );
    fs::copy(&serial, keep.join("serial.log"))?;
    if let Err(e) = got {
        println!("vm-test: cannot copy the guest's outputs: {e:#}");
    }
    let fixtures = keep.join("out/fixtures");
    if args.write_fixtures {
        if fixtures.is_dir() {
            let dest = root.join("tests/fixtures").join(format!("linux-{tag}"));
            fs::create_dir_all(&dest)?;
            for f in [
                "kfree_skb.format",
                "vmlinux.btf.gz",
                "kallsyms.excerpt",
                "netstat",
                "snmp",
                "osrelease",
            ] {
                let from = fixtures.join(f);
                if from.is_file() {
                    fs::copy(&from, dest.join(f))?;
                } else {
                    println!("vm-test: kernel {tag}: the guest captured no {f}");
                }
            }
            println!("vm-test: fixtures written to {}", dest.display());
        } else {
            println!("vm-test: kernel {tag}: no fixtures came out of the guest");
        }
    }
    outcome?;
    if let Some(f) = &fault {
        println!("vm-test: kernel {tag}: {f}");
    } else if !ended {
        println!("vm-test: kernel {tag}: the guest stopped before its end marker");
    }
    Ok(Boot { results, fault })
}

/// The scenario of a run's name: `paws` of `paws@paws-blind` (a mutant's run of it).
fn scenario_of(run: &str) -> &str {
    run.split('@').next().unwrap_or(run)
}

/// `SWARMTRACE-RESULT kernel=K scenario=S status=ST detail=...`
fn parse_result(line: &str) -> Option<(String, String, String)> {
    let rest = &line[line.find("SWARMTRACE-RESULT ")? + "SWARMTRACE-RESULT ".len()..];
    let (head, detail) = rest.split_once(" detail=").unwrap_or((rest, ""));
    let mut scenario = None;
    let mut status = None;
    for w in head.split_whitespace() {
        if let Some(v) = w.strip_prefix("scenario=") {
            scenario = Some(v.to_owned());
        }
        if let Some(v) = w.strip_prefix("status=") {
            status = Some(v.to_owned());
        }
    }
    Some((scenario?, status?, detail.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mutant still applies to the code it breaks: a change to verdict.rs that moves
    /// its lines fails here, in `cargo test`, not an hour into CI's `--mutants` run.
    #[test]
    fn every_mutant_applies_to_the_tree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mutants = load_mutants(&root).unwrap();
        assert!(!mutants.is_empty());
        for m in mutants {
            assert!(!m.expect_fail.is_empty(), "{}: no expect-fail line", m.name);
            let out = Command::new("git")
                .args(["apply", "--check"])
                .arg(&m.patch)
                .current_dir(&root)
                .output()
                .expect("git");
            assert!(
                out.status.success(),
                "{} does not apply: {}",
                m.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn parses_result_lines() {
        let l =
            "SWARMTRACE-RESULT kernel=6.1 scenario=drop-rule status=pass detail=netfilter-drop x";
        assert_eq!(
            parse_result(l),
            Some(("drop-rule".into(), "pass".into(), "netfilter-drop x".into()))
        );
        assert_eq!(parse_result("[  1.0] random"), None);
    }

    fn res(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, (String, String)> {
        pairs
            .iter()
            .map(|(s, st, d)| (s.to_string(), (st.to_string(), d.to_string())))
            .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_wedged_guest_kernel_is_recognised() {
        // Lines of the 6.1 guest that hung in CI (2026-11-27) while Docker started the tasks.
        let lockup = "[  136.268574] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [runc:1818]";
        assert_eq!(kernel_fault(lockup), Some(lockup));
        assert!(
            kernel_fault("[  140.1] Kernel panic - not syncing: softlockup: hung tasks").is_some()
        );
        assert_eq!(
            kernel_fault("[  112.020416] rcu: INFO: rcu_preempt self-detected stall on CPU"),
            None,
            "a stall alone is waited for: softlockup_panic decides"
        );
        assert_eq!(kernel_fault("ST-STEP t=68.91s swarm initialised"), None);
    }

    #[test]
    fn a_pair_is_booted_again_only_when_a_kernel_wedged_before_all_passed() {
        let all: Vec<String> = ["nodes-healthy", "nodes-paws"].map(String::from).to_vec();
        let boot = |results: &[(&str, &str)], fault: Option<&str>| Boot {
            results: results
                .iter()
                .map(|(s, st)| (s.to_string(), (st.to_string(), String::new())))
                .collect(),
            fault: fault.map(String::from),
        };
        let panic = Some("Kernel panic - not syncing");
        let passed = boot(&[("nodes-healthy", "pass"), ("nodes-paws", "pass")], None);
        let half = boot(&[("nodes-healthy", "pass")], None);
        let failed = boot(&[("nodes-healthy", "pass"), ("nodes-paws", "fail")], None);
        // Node 2's kernel wedged and node 1 could not finish: again.
        assert_eq!(pair_again(&half, &boot(&[], panic), &all).as_deref(), panic);
        assert!(pair_again(&failed, &boot(&[], panic), &all).is_some());
        // Node 1's own kernel wedged.
        assert!(pair_again(&boot(&[], panic), &passed, &all).is_some());
        // Everything passed before the fault: nothing again. A scenario that failed by
        // itself, with no kernel fault: nothing again.
        assert!(pair_again(&passed, &boot(&[], panic), &all).is_none());
        assert!(pair_again(&failed, &passed, &all).is_none());
    }

    #[test]
    fn only_scenarios_without_a_result_or_setup_are_booted_again() {
        let all = names(&["lab", "healthy", "drop-rule", "paws"]);
        // Every scenario ran: nothing again, even a failure.
        let done = Boot {
            results: res(&[
                ("lab", "pass", "ok"),
                ("healthy", "pass", "ok"),
                ("drop-rule", "fail", "no netfilter-drop verdict"),
                ("paws", "pass", "ok"),
            ]),
            fault: None,
        };
        assert!(retry(&done, &all).is_none());
        // The kernel locked up after two scenarios: the other two again, the reason kept.
        let wedged = Boot {
            results: res(&[("lab", "pass", "ok"), ("healthy", "fail", "wrong")]),
            fault: Some("the guest's kernel locked up".into()),
        };
        let (why, again) = retry(&wedged, &all).unwrap();
        assert_eq!(again, names(&["drop-rule", "paws"]));
        assert!(why.contains("locked up"));
        // Docker's setup failed: every scenario it marked, with its reason.
        let setup = Boot {
            results: res(&[
                ("lab", "pass", "ok"),
                ("healthy", "fail", "setup: services did not converge"),
                ("drop-rule", "fail", "setup: services did not converge"),
                ("paws", "fail", "setup: services did not converge"),
            ]),
            fault: None,
        };
        let (why, again) = retry(&setup, &all).unwrap();
        assert_eq!(again, names(&["healthy", "drop-rule", "paws"]));
        assert!(why.contains("did not converge"), "{why}");
    }

    #[test]
    fn newest_kernel_package_wins() {
        let mut v = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-10-cloud-amd64",
        ];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v.last(), Some(&"linux-image-6.1.0-56-cloud-amd64"));
    }
}
