//! `cargo xtask dist`: what a user copies onto a node, in `target/dist/`:
//!
//! - `swarmtrace-ARCH-linux-musl`: static, stripped release binaries with the kernel object
//!   embedded, for x86_64 and aarch64 (`x86_64-unknown-linux-musl`, `aarch64-unknown-linux-musl`;
//!   aarch64 is linked by rust-lld with the target's self-contained musl objects, no C
//!   cross-compiler);
//! - `swarmtrace_VERSION_DEBARCH.deb`: the binary, the man page, bash/zsh/fish completions and a
//!   postinst that makes a `swarmtrace` system group and gives the capabilities to a binary only
//!   root and that group may run;
//! - `swarmtrace-image-amd64.tar`: a `docker load`-able image assembled here, offline, from the
//!   static binary and Debian's busybox-static (`ip`, `sh`);
//! - `SHA256SUMS`.
//!
//! The kernel object is built per architecture: its bytecode is the same except the kprobe on
//! `tcp_drop`, which reads its arguments from the architecture's `pt_regs`
//! (aya's `bpf_target_arch`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{output, run};
use anyhow::{bail, Context, Result};

/// One architecture of the release.
pub struct Arch {
    /// aya's `bpf_target_arch`, and the name in file names.
    pub name: &'static str,
    pub triple: &'static str,
    /// Debian's and the OCI image's name for it.
    pub deb: &'static str,
    /// `file`'s description of the machine.
    pub elf_machine: &'static str,
    /// How to run it on an x86_64 build machine (`None`: directly).
    pub runner: Option<&'static str>,
}

pub const ARCHES: &[Arch] = &[
    Arch {
        name: "x86_64",
        triple: "x86_64-unknown-linux-musl",
        deb: "amd64",
        elf_machine: "x86-64",
        runner: None,
    },
    Arch {
        name: "aarch64",
        triple: "aarch64-unknown-linux-musl",
        deb: "arm64",
        elf_machine: "ARM aarch64",
        runner: Some("qemu-aarch64-static"),
    },
];

/// The file capabilities the .deb gives to its binary: what `swarmtrace run` needs when a
/// group member (not root) runs it, measured (the `deb` guest scenario traces as such a
/// member). bpf, perfmon: load and attach the programs; net_admin: the TC classifiers;
/// sys_admin: enter Docker's namespaces (setns); dac_read_search: tracefs is mode 0700
/// (the tracepoint's format and id); sys_ptrace: other processes' namespaces
/// (`/proc/PID/ns/net`, the host's is `/proc/1/ns/net`); syslog: real addresses in
/// `/proc/kallsyms` under `kptr_restrict=1` (drops named by code location); sys_resource:
/// before 5.11 BPF maps are charged to RLIMIT_MEMLOCK (64 KiB by default), which only it may
/// raise. Without these four `run` fails ("tracefs is not mounted", "no network namespace
/// `host`", on 5.10 "failed to create map ... Operation not permitted") or names no code
/// location. CAP_SYS_ADMIN already makes the group root-equivalent: the binary is
/// root:swarmtrace 0750, for operators only.
pub const CAPS: &str = "cap_bpf,cap_perfmon,cap_net_admin,cap_sys_admin,cap_dac_read_search,cap_sys_ptrace,cap_syslog,cap_sys_resource+ep";

/// The image's default command: the stack's (deploy/swarmtrace-stack.yml) and the Dockerfile's.
const IMAGE_CMD: &[&str] = &["run", "--json", "--metrics", "0.0.0.0:9464"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architectures to build (x86_64, aarch64); repeat or comma-separate. Default: both.
    #[arg(long = "arch", value_delimiter = ',')]
    arches: Vec<String>,
    /// Do not build the .deb packages.
    #[arg(long)]
    no_deb: bool,
    /// Do not build the image.
    #[arg(long)]
    no_image: bool,
}

pub fn dist_dir(root: &Path) -> PathBuf {
    root.join("target/dist")
}

/// The static binary of `arch` in `target/dist/`.
pub fn binary_path(root: &Path, arch: &str) -> PathBuf {
    dist_dir(root).join(format!("swarmtrace-{arch}-linux-musl"))
}

pub fn image_path(root: &Path) -> PathBuf {
    dist_dir(root).join("swarmtrace-image-amd64.tar")
}

pub fn deb_path(root: &Path, deb_arch: &str) -> PathBuf {
    dist_dir(root).join(format!("swarmtrace_{}_{deb_arch}.deb", version()))
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

impl Args {
    /// One architecture's binary only.
    pub fn only(arch: &str) -> Self {
        Self {
            arches: vec![arch.into()],
            no_deb: true,
            no_image: true,
        }
    }
}

/// What `cargo xtask vm-test` boots with: the x86_64 binary, and the .deb and the image when
/// asked.
pub struct VmArtifacts {
    pub binary: PathBuf,
    pub deb: Option<PathBuf>,
    pub image: Option<PathBuf>,
}

pub fn for_vm(root: &Path, deb: bool, image: bool) -> Result<VmArtifacts> {
    main(
        root,
        Args {
            arches: vec!["x86_64".into()],
            no_deb: !deb,
            no_image: !image,
        },
    )?;
    Ok(VmArtifacts {
        binary: binary_path(root, "x86_64"),
        deb: deb.then(|| deb_path(root, "amd64")),
        image: image.then(|| image_path(root)),
    })
}

pub fn main(root: &Path, args: Args) -> Result<()> {
    let names: Vec<String> = if args.arches.is_empty() {
        ARCHES.iter().map(|a| a.name.to_owned()).collect()
    } else {
        args.arches.clone()
    };
    let mut arches = Vec::new();
    for n in &names {
        match ARCHES.iter().find(|a| a.name == n) {
            Some(a) => arches.push(a),
            None => bail!("unknown architecture `{n}`: choose among x86_64, aarch64"),
        }
    }
    let dist = dist_dir(root);
    fs::create_dir_all(&dist)?;
    let mut products = Vec::new();
    let mut built = Vec::new();
    for arch in &arches {
        let t = Instant::now();
        let bin = build_binary(root, arch)?;
        check_static(&bin, arch)?;
        let version = run_binary(&bin, arch, &["--version"])?;
        match &version {
            Some(v) => println!("dist: {} runs: {}", bin.display(), v.trim()),
            None => println!(
                "dist: {}: not run ({} not installed: bash scripts/setup-dist.sh)",
                bin.display(),
                arch.runner.unwrap_or("?")
            ),
        }
        println!("dist: {} in {:.0?}", arch.triple, t.elapsed());
        products.push(bin.clone());
        built.push((*arch, bin));
    }
    if !args.no_deb {
        // The man page and completions are the same on every architecture: ask the first
        // binary that runs here.
        let assets = built
            .iter()
            .find_map(|(a, b)| Assets::from_binary(b, a).transpose())
            .transpose()?
            .context("no built binary runs on this machine to write the man page and completions (install qemu-user-static: bash scripts/setup-dist.sh)")?;
        for (arch, bin) in &built {
            let deb = deb_path(root, arch.deb);
            build_deb(
                &dist.join(format!("deb-{}", arch.deb)),
                bin,
                arch,
                &assets,
                &deb,
            )?;
            check_deb(&deb, arch.deb)?;
            println!("dist: {}", deb.display());
            products.push(deb);
        }
    }
    if !args.no_image {
        if let Some((_, bin)) = built.iter().find(|(a, _)| a.name == "x86_64") {
            let busybox = Path::new("/bin/busybox");
            check_busybox(busybox)?;
            let img = image_path(root);
            build_image(&dist.join("image-amd64"), bin, Some(busybox), "amd64", &img)?;
            let summary = check_image(&img)?;
            println!("dist: {} ({summary})", img.display());
            products.push(img);
        }
    }
    write_sums(&dist, &products)?;
    println!("dist: {}", dist.join("SHA256SUMS").display());
    Ok(())
}

/// Builds the kernel object for `arch`, then the static user-space binary embedding it;
/// copies it to `target/dist/swarmtrace-ARCH-linux-musl`.
fn build_binary(root: &Path, arch: &Arch) -> Result<PathBuf> {
    let obj = crate::ebpf_build::build_for(root, arch.name).map_err(anyhow::Error::msg)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "--locked", "-p", "swarmtrace"])
        .args(["--target", arch.triple])
        // No debug info, symbols stripped: the release profile keeps line tables for
        // backtraces (`debug = 1`); a dist binary is what users copy around.
        .args(["--config", "profile.release.debug=0"])
        .args(["--config", "profile.release.strip=\"symbols\""])
        .env("SWARMTRACE_EBPF_OBJ", &obj)
        .current_dir(root);
    if arch.name == "aarch64" {
        // rust-lld (shipped with rustup's toolchain) and the target's self-contained crt
        // objects and libc.a: no C cross-compiler needed.
        cmd.env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld");
    }
    println!("dist: cargo build --release --target {}", arch.triple);
    run(&mut cmd).with_context(|| {
        format!(
            "building for {} failed; if the target is missing: rustup target add {}",
            arch.triple, arch.triple
        )
    })?;
    let from = root
        .join("target")
        .join(arch.triple)
        .join("release/swarmtrace");
    let to = binary_path(root, arch.name);
    fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
    fs::set_permissions(&to, fs::Permissions::from_mode(0o755))?;
    Ok(to)
}

/// Fails unless `bin` is a static executable of `arch`: no program interpreter, no shared
/// library, no symbol table.
pub fn check_static(bin: &Path, arch: &Arch) -> Result<()> {
    let file = output(Command::new("file").arg("-b").arg(bin))?;
    let headers = output(Command::new("readelf").args(["-lhdSW"]).arg(bin))?;
    let problems = static_problems(&file, &headers, arch);
    if !problems.is_empty() {
        bail!(
            "{} is not a static stripped {} executable: {}\n(file: {})",
            bin.display(),
            arch.name,
            problems.join("; "),
            file.trim()
        );
    }
    println!("dist: {}: {}", bin.display(), file.trim());
    Ok(())
}

/// What is wrong with a binary, from `file -b` and `readelf -lhdSW`.
fn static_problems(file: &str, readelf: &str, arch: &Arch) -> Vec<String> {
    let mut p = Vec::new();
    if !file.contains(arch.elf_machine) {
        p.push(format!("not an {} ELF", arch.elf_machine));
    }
    if !(file.contains("statically linked") || file.contains("static-pie linked")) {
        p.push("`file` does not say statically linked".into());
    }
    if readelf.contains("INTERP") || file.contains("interpreter") {
        p.push("it has a program interpreter".into());
    }
    if readelf.contains("(NEEDED)") {
        p.push("it needs shared libraries".into());
    }
    if readelf.contains(".symtab") || !file.contains("stripped") || file.contains("not stripped") {
        p.push("it is not stripped".into());
    }
    p
}

/// Runs the binary with `args` (through qemu-user for a foreign architecture); `None` when
/// that emulator is not installed.
pub fn run_binary(bin: &Path, arch: &Arch, args: &[&str]) -> Result<Option<String>> {
    let mut cmd = match arch.runner {
        None => Command::new(bin),
        Some(r) => {
            let Some(emu) = which(r).or_else(|| which(r.trim_end_matches("-static"))) else {
                return Ok(None);
            };
            let mut c = Command::new(emu);
            c.arg(bin);
            c
        }
    };
    cmd.args(args);
    output(&mut cmd).map(Some)
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The man page and the shell completions, as the binary writes them.
pub struct Assets {
    pub man: String,
    pub bash: String,
    pub zsh: String,
    pub fish: String,
}

impl Assets {
    fn from_binary(bin: &Path, arch: &Arch) -> Result<Option<Self>> {
        let Some(man) = run_binary(bin, arch, &["man"])? else {
            return Ok(None);
        };
        let shell = |s: &str| -> Result<String> {
            run_binary(bin, arch, &["completions", s])?
                .context("the emulator vanished between two runs")
        };
        Ok(Some(Self {
            man,
            bash: shell("bash")?,
            zsh: shell("zsh")?,
            fish: shell("fish")?,
        }))
    }
}

/// Where the .deb puts the binary.
pub const DEB_BINARY: &str = "usr/bin/swarmtrace";

/// The postinst: a `swarmtrace` system group; the binary root:swarmtrace 0750 (a
/// dpkg-statoverride, so upgrades keep it), then the capabilities, set again at every
/// configure since unpacking a new version drops them, and never on a binary others may run.
fn postinst() -> String {
    format!(
        r#"#!/bin/sh
# swarmtrace: operators in the `swarmtrace` group run it without sudo; nobody else may run it.
set -e
BIN=/{DEB_BINARY}
if [ "$1" = configure ]; then
    if ! getent group swarmtrace >/dev/null; then
        if command -v addgroup >/dev/null; then
            addgroup --system --quiet swarmtrace
        else
            groupadd --system swarmtrace
        fi
    fi
    if ! dpkg-statoverride --list "$BIN" >/dev/null 2>&1; then
        dpkg-statoverride --update --add root swarmtrace 0750 "$BIN"
    fi
    mode=$(stat -c %a "$BIN")
    case "$mode" in
    *[1357])
        echo "swarmtrace: $BIN is mode $mode (others may run it): no capabilities given; only root can trace" >&2
        ;;
    *)
        if ! command -v setcap >/dev/null; then
            echo "swarmtrace: setcap is missing (apt-get install libcap2-bin): only root can trace" >&2
        elif ! setcap {CAPS} "$BIN"; then
            echo "swarmtrace: cannot set file capabilities on $BIN (filesystem without extended attributes?): only root can trace" >&2
        else
            echo "swarmtrace: members of the swarmtrace group may run it without sudo (usermod -aG swarmtrace NAME)" >&2
        fi
        ;;
    esac
fi
exit 0
"#
    )
}

/// The postrm: the stat override goes on purge; the group stays (files elsewhere may carry
/// its id).
fn postrm() -> String {
    format!(
        r#"#!/bin/sh
set -e
if [ "$1" = purge ] && dpkg-statoverride --list /{DEB_BINARY} >/dev/null 2>&1; then
    dpkg-statoverride --remove /{DEB_BINARY}
fi
exit 0
"#
    )
}

fn write_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Assembles the package tree in `tree` and builds `out` with dpkg-deb (present on every
/// Debian machine, no packaging tool to install; the control files are ours anyway).
pub fn build_deb(tree: &Path, bin: &Path, arch: &Arch, assets: &Assets, out: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(tree);
    let debian = tree.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    // Root-only until the postinst hands it to the group.
    write_mode(
        &tree.join(DEB_BINARY),
        &fs::read(bin).with_context(|| format!("cannot read {}", bin.display()))?,
        0o750,
    )?;
    let man = gzip(assets.man.as_bytes())?;
    write_mode(
        &tree.join("usr/share/man/man1/swarmtrace.1.gz"),
        &man,
        0o644,
    )?;
    write_mode(
        &tree.join("usr/share/bash-completion/completions/swarmtrace"),
        assets.bash.as_bytes(),
        0o644,
    )?;
    write_mode(
        &tree.join("usr/share/zsh/vendor-completions/_swarmtrace"),
        assets.zsh.as_bytes(),
        0o644,
    )?;
    write_mode(
        &tree.join("usr/share/fish/vendor_completions.d/swarmtrace.fish"),
        assets.fish.as_bytes(),
        0o644,
    )?;
    write_mode(
        &tree.join("usr/share/doc/swarmtrace/copyright"),
        format!(
            "swarmtrace {}\nLicense: {}\nThe binary is statically linked (musl libc, MIT; Rust crates under their own licenses).\n",
            version(),
            env!("CARGO_PKG_LICENSE")
        )
        .as_bytes(),
        0o644,
    )?;
    let size_kb = dir_size(tree)? / 1024 + 1;
    write_mode(
        &debian.join("control"),
        format!(
            "Package: swarmtrace\n\
             Version: {}\n\
             Architecture: {}\n\
             Maintainer: swarmtrace developers <swarmtrace@localhost>\n\
             Installed-Size: {size_kb}\n\
             Section: net\n\
             Priority: optional\n\
             Recommends: libcap2-bin, iproute2, iptables\n\
             Suggests: man-db\n\
             Description: why does the published port time out?\n \
             Traces every TCP handshake through Docker Swarm's routing mesh (and any\n \
             host publishing TCP services through NAT) with eBPF and names the cause:\n \
             PAWS, netfilter drops, missing listeners, full listen queues, rp_filter.\n \
             Members of the swarmtrace group run it without sudo (file capabilities).\n",
            version(),
            arch.deb
        )
        .as_bytes(),
        0o644,
    )?;
    write_mode(&debian.join("postinst"), postinst().as_bytes(), 0o755)?;
    write_mode(&debian.join("postrm"), postrm().as_bytes(), 0o755)?;
    for d in walk_dirs(tree)? {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
    }
    let _ = fs::remove_file(out);
    output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(tree)
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "0"),
    )
    .context("dpkg-deb --build failed (apt-get install dpkg)")?;
    Ok(())
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().expect("the writer does not panic")?;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

fn walk_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        for e in fs::read_dir(&out[i])? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    Ok(out)
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for d in walk_dirs(dir)? {
        for e in fs::read_dir(d)? {
            let e = e?;
            if e.file_type()?.is_file() {
                total += e.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// Checks a built .deb with `dpkg-deb --info` and `--contents`: its fields, every file in
/// place with its mode, the maintainer scripts.
pub fn check_deb(deb: &Path, deb_arch: &str) -> Result<()> {
    let info = output(Command::new("dpkg-deb").arg("--info").arg(deb))?;
    let contents = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let dir = deb.with_extension("control.d");
    let _ = fs::remove_dir_all(&dir);
    run(Command::new("dpkg-deb").arg("--control").arg(deb).arg(&dir))?;
    let postinst = fs::read_to_string(dir.join("postinst"));
    let _ = fs::remove_dir_all(&dir);
    let postinst = postinst.context("the package has no postinst")?;
    let problems = deb_problems(&info, &contents, &postinst, deb_arch);
    if !problems.is_empty() {
        bail!("{}: {}", deb.display(), problems.join("; "));
    }
    Ok(())
}

fn deb_problems(info: &str, contents: &str, postinst: &str, deb_arch: &str) -> Vec<String> {
    let mut p = Vec::new();
    for field in [
        "Package: swarmtrace".to_owned(),
        format!("Version: {}", version()),
        format!("Architecture: {deb_arch}"),
        "Recommends: libcap2-bin".to_owned(),
    ] {
        if !info.contains(&field) {
            p.push(format!("--info lacks `{field}`"));
        }
    }
    for script in ["postinst", "postrm", "control"] {
        if !info
            .lines()
            .any(|l| l.contains(" lines ") && l.split_whitespace().any(|w| w == script))
        {
            p.push(format!("no {script} in the control archive"));
        }
    }
    for (mode, path) in [
        ("-rwxr-x---", "./usr/bin/swarmtrace"),
        ("-rw-r--r--", "./usr/share/man/man1/swarmtrace.1.gz"),
        (
            "-rw-r--r--",
            "./usr/share/bash-completion/completions/swarmtrace",
        ),
        (
            "-rw-r--r--",
            "./usr/share/zsh/vendor-completions/_swarmtrace",
        ),
        (
            "-rw-r--r--",
            "./usr/share/fish/vendor_completions.d/swarmtrace.fish",
        ),
    ] {
        let found = contents.lines().find(|l| l.ends_with(&format!(" {path}")));
        match found {
            None => p.push(format!("--contents lacks {path}")),
            Some(l) if !l.starts_with(mode) || !l.contains("root/root") => {
                p.push(format!("{path} is not {mode} root/root: {l}"))
            }
            Some(_) => {}
        }
    }
    for needle in [
        "dpkg-statoverride --update --add root swarmtrace 0750",
        &format!("setcap {CAPS}"),
        "groupadd --system swarmtrace",
        "*[1357])",
    ] {
        if !postinst.contains(needle) {
            p.push(format!("the postinst lacks `{needle}`"));
        }
    }
    p
}

fn check_busybox(busybox: &Path) -> Result<()> {
    let file = output(Command::new("file").arg("-b").arg(busybox)).with_context(|| {
        format!(
            "the image needs {} (apt-get install busybox-static: bash scripts/setup-dist.sh)",
            busybox.display()
        )
    })?;
    if !file.contains("statically linked") || !file.contains("x86-64") {
        bail!(
            "{} is not a static x86-64 busybox ({}): apt-get install busybox-static",
            busybox.display(),
            file.trim()
        );
    }
    Ok(())
}

fn sha256(path: &Path) -> Result<String> {
    let out = output(Command::new("sha256sum").arg(path))?;
    Ok(out
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_owned())
}

/// A deterministic tar of `entries` (paths relative to `dir`).
fn tar(dir: &Path, entries: &[&str], out: &Path) -> Result<()> {
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
            "-cf",
        ])
        .arg(out)
        .arg("-C")
        .arg(dir)
        .args(entries))
}

/// Assembles a `docker load` archive (Docker's image archive format: `manifest.json`, the
/// config JSON named by its sha256, one layer tar named by its diff id) in `work`, written to
/// `out`. The layer holds `/usr/local/bin/swarmtrace` and, when given, busybox as `/bin/busybox`
/// with `ip` and `sh` linked to it (`ip -o addr/route` names namespaces' addresses in `run`,
/// `capture` and `doctor`; `sh` lets `docker exec` in). No iptables: `doctor`'s ingress-rule
/// check says it cannot read the rules in the image; run it on the host for that.
pub fn build_image(
    work: &Path,
    bin: &Path,
    busybox: Option<&Path>,
    arch: &str,
    out: &Path,
) -> Result<()> {
    let _ = fs::remove_dir_all(work);
    let rootfs = work.join("rootfs");
    write_mode(
        &rootfs.join("usr/local/bin/swarmtrace"),
        &fs::read(bin).with_context(|| format!("cannot read {}", bin.display()))?,
        0o755,
    )?;
    let mut entries = vec!["usr", "tmp"];
    fs::create_dir_all(rootfs.join("tmp"))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    if let Some(bb) = busybox {
        write_mode(&rootfs.join("bin/busybox"), &fs::read(bb)?, 0o755)?;
        for applet in ["ip", "sh"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        entries.push("bin");
    }
    for d in walk_dirs(&rootfs)? {
        if !d.ends_with("tmp") {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        }
    }
    let archive = work.join("archive");
    fs::create_dir_all(&archive)?;
    let layer_tmp = work.join("layer.tar");
    tar(&rootfs, &entries, &layer_tmp)?;
    let diff_id = sha256(&layer_tmp)?;
    fs::create_dir_all(archive.join(&diff_id))?;
    fs::rename(&layer_tmp, archive.join(&diff_id).join("layer.tar"))?;
    fs::write(archive.join(&diff_id).join("VERSION"), "1.0")?;
    let epoch = "1970-01-01T00:00:00Z";
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": epoch,
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/usr/local/bin/swarmtrace"],
            "Cmd": IMAGE_CMD,
            "ExposedPorts": {"9464/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": "swarmtrace",
                "org.opencontainers.image.version": version(),
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": epoch, "created_by": "cargo xtask dist (static binary + busybox-static)"}],
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_tmp = work.join("config.json");
    fs::write(&config_tmp, &config_bytes)?;
    let config_id = sha256(&config_tmp)?;
    fs::rename(&config_tmp, archive.join(format!("{config_id}.json")))?;
    let manifest = serde_json::json!([{
        "Config": format!("{config_id}.json"),
        "RepoTags": ["swarmtrace:latest", format!("swarmtrace:{}", version())],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]);
    fs::write(
        archive.join("manifest.json"),
        serde_json::to_vec(&manifest)?,
    )?;
    fs::write(
        archive.join("repositories"),
        serde_json::to_vec(&serde_json::json!({
            "swarmtrace": {"latest": diff_id, version(): diff_id}
        }))?,
    )?;
    let _ = fs::remove_file(out);
    tar(
        &archive,
        &[
            "manifest.json",
            "repositories",
            &format!("{config_id}.json"),
            &diff_id,
        ],
        out,
    )
}

/// Reads an image archive back: the manifest names a config whose sha256 is its name, whose
/// diff ids are the sha256 of the layers, with the entrypoint and a static swarmtrace in the
/// layer. Returns a one-line summary.
pub fn check_image(archive: &Path) -> Result<String> {
    let dir = archive.with_extension("check.d");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let r = check_image_in(archive, &dir);
    let _ = fs::remove_dir_all(&dir);
    r
}

fn check_image_in(archive: &Path, dir: &Path) -> Result<String> {
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json"))?)?;
    let m = &manifest[0];
    let config_name = m["Config"].as_str().context("no Config in manifest.json")?;
    let config_id = config_name.trim_end_matches(".json");
    if sha256(&dir.join(config_name))? != config_id {
        bail!("the config's sha256 is not its name {config_name}");
    }
    if !m["RepoTags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "swarmtrace:latest"))
    {
        bail!("the manifest does not tag swarmtrace:latest");
    }
    let config: serde_json::Value = serde_json::from_slice(&fs::read(dir.join(config_name))?)?;
    let layers = m["Layers"].as_array().context("no Layers")?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .context("no diff_ids")?;
    if layers.len() != diff_ids.len() || layers.is_empty() {
        bail!("{} layers but {} diff ids", layers.len(), diff_ids.len());
    }
    for (l, d) in layers.iter().zip(diff_ids) {
        let l = l.as_str().context("a layer is not a string")?;
        let want = d.as_str().unwrap_or("").trim_start_matches("sha256:");
        if sha256(&dir.join(l))? != want {
            bail!("layer {l} does not match its diff id {want}");
        }
    }
    if config["config"]["Entrypoint"] != serde_json::json!(["/usr/local/bin/swarmtrace"]) {
        bail!("the entrypoint is not /usr/local/bin/swarmtrace");
    }
    let listing = output(
        Command::new("tar")
            .arg("-tvf")
            .arg(dir.join(layers[0].as_str().unwrap_or_default())),
    )?;
    if !listing
        .lines()
        .any(|l| l.starts_with("-rwxr-xr-x 0/0") && l.ends_with(" usr/local/bin/swarmtrace"))
    {
        bail!("the layer has no executable usr/local/bin/swarmtrace owned by root:\n{listing}");
    }
    Ok(format!(
        "{} {}, {} layer(s), config sha256:{}",
        config["os"].as_str().unwrap_or("?"),
        config["architecture"].as_str().unwrap_or("?"),
        layers.len(),
        &config_id[..12.min(config_id.len())]
    ))
}

fn write_sums(dist: &Path, products: &[PathBuf]) -> Result<()> {
    let names: Vec<&str> = products
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
        .collect();
    // Keep the lines of products built earlier (a `--arch aarch64` run after a full one).
    let sums = dist.join("SHA256SUMS");
    let mut lines: Vec<String> = fs::read_to_string(&sums)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_whitespace().nth(1).is_some_and(|n| {
                !names.contains(&n.trim_start_matches('*')) && dist.join(n).is_file()
            })
        })
        .map(str::to_owned)
        .collect();
    let new = output(Command::new("sha256sum").args(&names).current_dir(dist))?;
    lines.extend(new.lines().map(str::to_owned));
    lines.sort_by(|a, b| {
        a.split_whitespace()
            .nth(1)
            .cmp(&b.split_whitespace().nth(1))
    });
    fs::write(&sums, lines.join("\n") + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deb_gives_the_capabilities_swarmtrace_advises() {
        let src = include_str!("../../swarmtrace/src/privileges.rs");
        assert!(
            src.contains(&format!("\"{CAPS}\"")),
            "CAPS of the .deb and file_caps! of swarmtrace/src/privileges.rs differ"
        );
    }

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(name: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("xtask-dist-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn assets() -> Assets {
        Assets {
            man: ".TH swarmtrace 1\n".into(),
            bash: "complete -F _swarmtrace swarmtrace\n".into(),
            zsh: "#compdef swarmtrace\n".into(),
            fish: "complete -c swarmtrace\n".into(),
        }
    }

    #[test]
    fn a_deb_has_its_files_modes_and_scripts() {
        let t = tmp("deb");
        let bin = t.0.join("fake-swarmtrace");
        fs::write(&bin, "#!/bin/sh\necho swarmtrace 0.0\n").unwrap();
        let deb = t.0.join("swarmtrace.deb");
        build_deb(&t.0.join("tree"), &bin, &ARCHES[1], &assets(), &deb)
            .expect("dpkg-deb builds the package (apt-get install dpkg)");
        check_deb(&deb, "arm64").unwrap();
        let info = output(Command::new("dpkg-deb").arg("--info").arg(&deb)).unwrap();
        assert!(info.contains("Architecture: arm64"), "{info}");
        let contents = output(Command::new("dpkg-deb").arg("--contents").arg(&deb)).unwrap();
        // The binary ships root-only: the group and the capabilities come with the postinst.
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with("-rwxr-x--- root/root")
                    && l.ends_with(" ./usr/bin/swarmtrace")),
            "{contents}"
        );
        // The maintainer scripts are valid sh.
        for s in [postinst(), postrm()] {
            let f = t.0.join("script");
            fs::write(&f, s).unwrap();
            run(Command::new("sh").arg("-n").arg(&f)).unwrap();
        }
        // A deb that lost a file or its caps step is refused.
        let broken = deb_problems(
            &info,
            &contents.replace("_swarmtrace", "_other"),
            "",
            "arm64",
        );
        assert!(
            broken.iter().any(|p| p.contains("_swarmtrace")),
            "{broken:?}"
        );
        assert!(broken.iter().any(|p| p.contains("setcap")), "{broken:?}");
        assert!(!deb_problems(&info, &contents, &postinst(), "amd64").is_empty());
    }

    #[test]
    fn never_capabilities_on_a_binary_others_may_run() {
        // The postinst gives the capabilities only when others have no execute bit.
        let p = postinst();
        let guard = p.find("*[1357])").expect("a mode guard");
        let setcap = p.find("setcap cap_").expect("a setcap");
        assert!(guard < setcap, "the mode is checked before setcap");
        for (mode, world) in [
            ("750", false),
            ("755", true),
            ("751", true),
            ("4750", false),
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "case {mode} in *[1357]) echo world;; *) echo group;; esac"
                ))
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert_eq!(said.trim() == "world", world, "mode {mode}");
        }
    }

    #[test]
    fn an_image_archive_is_consistent() {
        let t = tmp("image");
        let bin = t.0.join("fake-swarmtrace");
        fs::write(&bin, "#!/bin/sh\n").unwrap();
        let img = t.0.join("image.tar");
        build_image(&t.0.join("work"), &bin, None, "amd64", &img).unwrap();
        let summary = check_image(&img).unwrap();
        assert!(summary.starts_with("linux amd64, 1 layer(s)"), "{summary}");
        // Deterministic: the same inputs make the same archive.
        let first = sha256(&img).unwrap();
        build_image(&t.0.join("work"), &bin, None, "amd64", &img).unwrap();
        assert_eq!(sha256(&img).unwrap(), first);
    }

    #[test]
    fn static_binaries_are_told_from_dynamic_ones() {
        let x86 = &ARCHES[0];
        let good =
            "ELF 64-bit LSB pie executable, x86-64, version 1 (SYSV), static-pie linked, stripped";
        assert!(static_problems(good, "Program Headers:\n  LOAD", x86).is_empty());
        let dynamic = "ELF 64-bit LSB pie executable, x86-64, version 1 (SYSV), dynamically linked, interpreter /lib64/ld-linux-x86-64.so.2, not stripped";
        let p = static_problems(
            dynamic,
            "  INTERP\n 0x1 (NEEDED) Shared library: [libc.so.6]\n  [27] .symtab",
            x86,
        );
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(
            !static_problems(good, "", &ARCHES[1]).is_empty(),
            "wrong machine"
        );
    }
}
