//! The privileged benchmarks of swarmtrace, in the routing-mesh lab (network namespaces this
//! program creates and removes). Needs root. `cargo xtask bench` builds what it needs (the
//! release binary, the floor programs of `bench/floor-ebpf`), runs this with the right
//! arguments and records the results in BENCHMARKS.md; run it by hand with
//! `cargo bench -p swarmtrace --bench lab -- --swarmtrace target/release/swarmtrace --floor
//! target/bench-floor/bpfel-unknown-none/release/floor --out target/bench/lab.json [--quick]
//! [--only cost|conn|flood] [--soak-minutes N]`.
//!
//! - cost: per-program run time from the kernel's own accounting (`kernel.bpf_stats_enabled`,
//!   run_time_ns / run_cnt in /proc/PID/fdinfo), swarmtrace's programs beside an empty
//!   classifier and an empty tracepoint program (the floor) and a bpftrace one-liner (the peer),
//!   all attached at once and fed the same packets.
//! - conn: completed request/response connections per second through the lab, with and without
//!   swarmtrace attached, alternating; attach and detach times.
//! - flood: crafted SYNs (AF_PACKET, sendmmsg) into a DROP rule at stepped rates, then as fast
//!   as this machine sends; exact totals against the generator's count, lost events; resident
//!   memory and BPF map memory of the swarmtrace process.
//!   Then (`spread`) a flood from a million sources and one SYN replayed a million times:
//!   memory flat, totals and verdict counts exact, output and summary bounded.
//! - soak (only with --soak-minutes): mixed traffic and drops, resident memory over time.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use aya::programs::{RawTracePoint, SchedClassifier, TcAttachType, TracePoint};
use serde_json::{json, Value};
use swarmtrace::lab::craft::Syn;
use swarmtrace::lab::mesh::{client_ip, HOST_IP, PUBLISHED_PORT};
use swarmtrace::lab::traffic::{self, Service};
use swarmtrace::lab::{MeshLab, Netns, Scenario};

#[path = "lab/spread.rs"]
mod spread;

/// The spoofed source of the flood's SYNs: no other lab uses it, so `--client` isolates them.
const FLOOD_SRC: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 200);
/// The host's LAN bridge MAC (fixed by the lab).
const HOST_ETH0_MAC: [u8; 6] = [0x02, 0x0a, 0x0a, 0x00, 0x00, 0x01];
/// A closed UDP port on the host: datagrams to it are dropped (NO_SOCKET), not handshakes.
const UDP_SINK_PORT: u16 = 9;
/// The host's listener for ordinary (non-handshake) TCP traffic.
const STREAM_PORT: u16 = 9000;
const BPFTRACE_ONE_LINER: &str = "tracepoint:skb:kfree_skb { @[args->reason] = count(); }";

#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    soak_minutes: Option<f64>,
    only: Option<String>,
    out: PathBuf,
    bin: PathBuf,
    floor: PathBuf,
    prefix: String,
}

fn parse_args() -> Result<Option<Args>> {
    let mut a = Args {
        quick: false,
        soak_minutes: None,
        only: None,
        out: PathBuf::from("target/bench/lab.json"),
        bin: PathBuf::from("target/release/swarmtrace"),
        floor: PathBuf::from("target/bench-floor/bpfel-unknown-none/release/floor"),
        prefix: "stbench".to_owned(),
    };
    let mut bench = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => bench = true,
            "--quick" => a.quick = true,
            "--soak-minutes" => a.soak_minutes = Some(value()?.parse()?),
            "--only" => a.only = Some(value()?),
            "--out" => a.out = value()?.into(),
            "--swarmtrace" => a.bin = value()?.into(),
            "--floor" => a.floor = value()?.into(),
            "--prefix" => a.prefix = value()?,
            other => bail!("unknown argument {other}"),
        }
    }
    // `cargo test --all-targets` runs bench targets without --bench: nothing to do then.
    Ok(bench.then_some(a))
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the lab benchmarks need root"
    );
    for p in [&args.bin, &args.floor] {
        ensure!(
            p.is_file(),
            "{} is missing (cargo xtask bench builds it)",
            p.display()
        );
    }
    let mut report = Report::default();
    let want = |s: &str| args.only.as_deref().is_none_or(|o| o == s);
    if let Some(minutes) = args.soak_minutes {
        let lab = Lab::build(&args.prefix)?;
        soak(&args, &lab, minutes, &mut report)?;
    } else {
        let lab = Lab::build(&args.prefix)?;
        if want("cost") {
            eprintln!("bench: per-program cost (bpf_stats)");
            cost(&args, &lab, &mut report)?;
        }
        if want("conn") {
            eprintln!("bench: connection rate with and without swarmtrace");
            conn_rate(&args, &lab, &mut report)?;
        }
        if want("flood") {
            eprintln!("bench: SYN flood into a DROP rule");
            flood(&args, &lab, &mut report)?;
        }
        if want("capacity") {
            eprintln!("bench: the host's SYN-drop capacity with and without swarmtrace");
            capacity(&args, &lab, &mut report)?;
        }
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report.to_json())?)?;
    eprintln!("bench: results in {}", args.out.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Report {
    rows: Vec<Value>,
    raw: BTreeMap<String, Value>,
}

impl Report {
    /// One result: what, the measured value, the target (if any) and whether it was met
    /// (`None`: no target), the `cargo xtask bench` arguments that reproduce it, a note.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        section: &str,
        what: &str,
        value: String,
        target: &str,
        met: Option<bool>,
        only: &str,
        note: String,
    ) {
        eprintln!(
            "  {what}: {value}{}",
            match met {
                Some(true) => format!("  (target {target}: met)"),
                Some(false) => format!("  (target {target}: NOT met)"),
                None => String::new(),
            }
        );
        self.rows.push(json!({
            "section": section,
            "what": what,
            "value": value,
            "target": target,
            "met": met,
            "only": only,
            "note": note,
        }));
    }

    fn to_json(&self) -> Value {
        json!({ "rows": self.rows, "raw": self.raw })
    }
}

// ---------------------------------------------------------------------------------------------
// The lab

/// The mesh lab, healthy, with an unlimited service in the task (the lab's own serves at most
/// 100 000 connections), a raw-table DROP for the flood's source (before conntrack, so the
/// flood never fills the host-wide conntrack table).
struct Lab {
    // Field order is drop order: the service goes before its namespace.
    service: Option<Service>,
    mesh: MeshLab,
}

impl Lab {
    fn build(prefix: &str) -> Result<Self> {
        let mut mesh = MeshLab::build(prefix)?;
        // Stops the lab's service; ours replaces it.
        mesh.apply(Scenario::NoListener)?;
        // Disjoint ephemeral port ranges per client: behind ingress_sbox's SNAT the clients
        // share one address, and a port reused by another client, whose TCP timestamp clock
        // is behind the task's TIME_WAIT of that port, is rejected (PAWS): the lab's paws
        // scenario, reproduced by load, not what the connection rate is meant to measure.
        // SNAT keeps the source port when it is free, so each TIME_WAIT belongs to one client.
        for i in 0..swarmtrace::lab::mesh::CLIENTS {
            let lo = 20_000 + i * 10_000;
            mesh.client(i).sysctl(
                "net.ipv4.ip_local_port_range",
                &format!("{lo} {}", lo + 9_999),
            )?;
        }
        let service = Service::start(
            mesh.task(),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 80)),
            usize::MAX,
            Duration::from_secs(6 * 3600),
        )?;
        for src in [FLOOD_SRC.to_string(), spread::SPREAD_CIDR.to_owned()] {
            mesh.host().exec(&[
                "iptables",
                "-t",
                "raw",
                "-I",
                "PREROUTING",
                "-s",
                &src,
                "-p",
                "tcp",
                "-j",
                "DROP",
            ])?;
        }
        Ok(Self {
            service: Some(service),
            mesh,
        })
    }

    fn watch_args(&self) -> Vec<String> {
        self.mesh
            .watch()
            .into_iter()
            .flat_map(|w| ["--iface".to_owned(), w])
            .collect()
    }

    fn host_file(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.mesh.host().name())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            let _ = s.stop();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The swarmtrace process

struct Tool {
    child: Child,
    attach: Duration,
    summary: mpsc::Receiver<Value>,
    stdout_lines: Arc<AtomicU64>,
    /// The summary line's length in bytes.
    summary_bytes: Arc<AtomicU64>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Tool {
    /// Starts `swarmtrace run --json ARGS` and waits for its "Ctrl-C to stop" line.
    fn start(bin: &Path, args: &[String]) -> Result<Self> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .arg("run")
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().context("no stderr")?;
        let lines = stderr.clone();
        let r1 = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                if line.contains("Ctrl-C to stop") {
                    let _ = ready_tx.send(Instant::now());
                }
                let mut l = lines.lock().unwrap();
                if l.len() < 200 {
                    l.push(line);
                }
            }
        });
        let (sum_tx, sum_rx) = mpsc::channel();
        let out = child.stdout.take().context("no stdout")?;
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let summary_bytes = Arc::new(AtomicU64::new(0));
        let b = summary_bytes.clone();
        let r2 = std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 20, out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                c.fetch_add(1, Ordering::Relaxed);
                if buf.starts_with(br#"{"type":"summary""#) {
                    b.store(buf.len() as u64 - 1, Ordering::Relaxed);
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                        let _ = sum_tx.send(v);
                    }
                }
            }
        });
        let mut tool = Self {
            child,
            attach: Duration::ZERO,
            summary: sum_rx,
            stdout_lines: count,
            summary_bytes,
            stderr,
            readers: vec![r1, r2],
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(at) = ready_rx.recv_timeout(Duration::from_millis(20)) {
                tool.attach = at - started;
                return Ok(tool);
            }
            if let Some(status) = tool.child.try_wait()? {
                bail!(
                    "swarmtrace exited ({status}) before attaching: {}",
                    tool.stderr.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = tool.child.kill();
                bail!("swarmtrace did not attach within 60 s");
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then waits: the run's summary and the time from the signal to the exit.
    fn stop(mut self) -> Result<(Value, Duration)> {
        let sent = Instant::now();
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = sent + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("swarmtrace did not exit within 120 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let detach = sent.elapsed();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        ensure!(
            status.success(),
            "swarmtrace failed ({status}): {}",
            self.stderr.lock().unwrap().join("\n")
        );
        let summary = self
            .summary
            .try_recv()
            .map_err(|_| anyhow!("swarmtrace printed no summary"))?;
        Ok((summary, detach))
    }
}

// ---------------------------------------------------------------------------------------------
// /proc: program statistics, map memory, resident memory

/// (fd target kind, fdinfo fields) of every BPF program or map fd of a process.
fn bpf_fds(pid: u32, kind: &str) -> Vec<HashMap<String, String>> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if target.to_string_lossy() != format!("anon_inode:bpf-{kind}") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        )) else {
            continue;
        };
        out.push(
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        );
    }
    out
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    ns: u64,
    cnt: u64,
}

impl Run {
    fn since(self, before: Run) -> Run {
        Run {
            ns: self.ns - before.ns,
            cnt: self.cnt - before.cnt,
        }
    }

    fn add(self, o: Run) -> Run {
        Run {
            ns: self.ns + o.ns,
            cnt: self.cnt + o.cnt,
        }
    }

    fn per_run(self) -> f64 {
        if self.cnt == 0 {
            f64::NAN
        } else {
            self.ns as f64 / self.cnt as f64
        }
    }
}

/// Program names by id, from the kernel (BPF_PROG_GET_NEXT_ID / BPF_OBJ_GET_INFO_BY_FD).
fn prog_names() -> HashMap<u32, String> {
    aya::programs::loaded_programs()
        .flatten()
        .map(|p| (p.id(), p.name_as_str().unwrap_or("").to_owned()))
        .collect()
}

/// The programs a process holds: name -> (id, run stats).
fn prog_stats(pid: u32) -> BTreeMap<String, (u32, Run)> {
    let names = prog_names();
    let mut out = BTreeMap::new();
    for f in bpf_fds(pid, "prog") {
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let id = num("prog_id") as u32;
        // Keyed by type and name: `sched_cls/NAME` (3), `tracepoint/NAME` (5),
        // `raw_tracepoint/NAME` (17), so that the programs are found whatever they are called.
        let kind = match num("prog_type") {
            3 => "sched_cls",
            5 => "tracepoint",
            17 => "raw_tracepoint",
            _ => "other",
        };
        let name = format!(
            "{kind}/{}",
            names.get(&id).cloned().unwrap_or_else(|| format!("id{id}"))
        );
        out.insert(
            name,
            (
                id,
                Run {
                    ns: num("run_time_ns"),
                    cnt: num("run_cnt"),
                },
            ),
        );
    }
    out
}

/// Bytes charged for the process's BPF maps (`memlock:` of each map fd, deduplicated by id).
fn map_memory(pid: u32) -> (u64, Vec<Value>) {
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    let mut maps = Vec::new();
    for f in bpf_fds(pid, "map") {
        let id = f.get("map_id").cloned().unwrap_or_default();
        if !seen.insert(id.clone()) {
            continue;
        }
        let memlock: u64 = f.get("memlock").and_then(|v| v.parse().ok()).unwrap_or(0);
        total += memlock;
        maps.push(json!({
            "map_id": id,
            "map_type": f.get("map_type"),
            "max_entries": f.get("max_entries"),
            "value_size": f.get("value_size"),
            "memlock": memlock,
        }));
    }
    (total, maps)
}

/// CPU time (user + system) of a process, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name's closing parenthesis; utime and stime are the 14th
    // and 15th of the line.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// (VmRSS, VmHWM) in KiB.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// (max VmRSS, max VmHWM, (seconds, VmRSS) samples), KiB.
type RssSamples = (u64, u64, Vec<(f64, u64)>);

/// Samples a process's VmRSS every `every` until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<RssSamples>,
}

impl RssSampler {
    fn start(pid: u32, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let (mut max, mut hwm, mut series) = (0, 0, Vec::new());
            while !s.load(Ordering::Relaxed) {
                if let Some((r, h)) = rss(pid) {
                    max = max.max(r);
                    hwm = hwm.max(h);
                    series.push((t0.elapsed().as_secs_f64(), r));
                }
                std::thread::sleep(every);
            }
            (max, hwm, series)
        });
        Self { stop, handle }
    }

    fn finish(self) -> RssSamples {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// Frames for the packet generator: crafted SYNs from FLOOD_SRC to the published port (each
/// with its own ISN, TSval and source port), or UDP datagrams to a closed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frames {
    Syn,
    Udp,
    /// SYN n from a source of its own in `spread::SPREAD_CIDR`.
    SynSpread,
    /// One SYN, the same every time (port, ISN, TSval, IP id).
    SynReplay,
}

fn frame(kind: Frames, src_mac: [u8; 6], n: u64, isn_base: u32, buf: &mut Vec<u8>) {
    let n = if kind == Frames::SynReplay { 0 } else { n };
    buf.clear();
    buf.extend_from_slice(&HOST_ETH0_MAC);
    buf.extend_from_slice(&src_mac);
    buf.extend_from_slice(&0x0800u16.to_be_bytes());
    let port = 1024 + (n % 64_000) as u16;
    let src = match kind {
        Frames::Syn | Frames::SynReplay => FLOOD_SRC,
        Frames::SynSpread => spread::source(n),
        // The UDP source is the sending client's own address (10.10.0.12, c2).
        Frames::Udp => client_ip(1),
    };
    let payload: Vec<u8> = match kind {
        Frames::Syn | Frames::SynSpread | Frames::SynReplay => {
            let syn = Syn::new(
                SocketAddrV4::new(src, port),
                SocketAddrV4::new(HOST_IP, PUBLISHED_PORT),
                isn_base.wrapping_add(n as u32),
                1_000_000u32.wrapping_add((n >> 8) as u32),
            );
            syn.segment().to_vec()
        }
        Frames::Udp => {
            let mut u = vec![0u8; 8 + 18];
            u[0..2].copy_from_slice(&port.to_be_bytes());
            u[2..4].copy_from_slice(&UDP_SINK_PORT.to_be_bytes());
            u[4..6].copy_from_slice(&26u16.to_be_bytes());
            // Checksum 0: none (allowed for UDP over IPv4).
            u
        }
    };
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(n as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = if kind == Frames::Udp { 17 } else { 6 };
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&HOST_IP.octets());
    let sum = swarmtrace::net::internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    buf.extend_from_slice(&ip);
    buf.extend_from_slice(&payload);
}

fn mac_of(ifname: &str) -> Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    let v: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| anyhow!("bad MAC {text}"))
}

#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    packets: u64,
    secs: f64,
}

impl Sent {
    fn rate(&self) -> f64 {
        self.packets as f64 / self.secs.max(1e-9)
    }
}

/// Sends frames from `ns`'s eth0 with an AF_PACKET socket (qdisc bypassed), in sendmmsg
/// batches, at `rate` per second (None: as fast as possible) for `dur`. Counts what the kernel
/// accepted.
fn generator(
    ns: &Netns,
    kind: Frames,
    rate: Option<u64>,
    dur: Duration,
) -> Result<JoinHandle<Result<Result<Sent>>>> {
    generate(ns, kind, rate, dur, u64::MAX)
}

/// [`generator`], stopping after `count` frames.
fn generate(
    ns: &Netns,
    kind: Frames,
    rate: Option<u64>,
    dur: Duration,
    count: u64,
) -> Result<JoinHandle<Result<Result<Sent>>>> {
    ns.spawn(move || -> Result<Sent> {
        const BATCH: usize = 64;
        let mac = mac_of("eth0")?;
        let ifindex = {
            let c = std::ffi::CString::new("eth0")?;
            // SAFETY: a valid NUL-terminated string.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        };
        ensure!(ifindex != 0, "no eth0 in the client namespace");
        // SAFETY: plain socket calls on a fd we own and close below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let close = scopeguard(fd);
        let one: libc::c_int = 1;
        // SAFETY: valid option pointer and length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        // SAFETY: zeroed sockaddr_ll is valid; filled below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        // Protocol 0: the socket only sends. Bound to a protocol it would also receive a copy
        // of every packet of that namespace, never read, and its full queue would drop them
        // (PACKET_SOCK_ERROR), drops swarmtrace rightly reports.
        sll.sll_protocol = 0;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        ensure!(
            rc == 0,
            "bind AF_PACKET: {}",
            std::io::Error::last_os_error()
        );
        let isn_base = swarmtrace::lab::craft::random_u32();
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(128)).collect();
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
        // SAFETY: zeroed mmsghdr is valid (null name, no control).
        let mut msgs: Vec<libc::mmsghdr> =
            (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let start = Instant::now();
        let mut sent: u64 = 0;
        let mut next: u64 = 0;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= dur || sent >= count {
                break;
            }
            let mut want = (BATCH as u64).min(count - sent);
            if let Some(r) = rate {
                let due = (r as f64 * elapsed.as_secs_f64()) as u64;
                if sent >= due {
                    let ahead = (sent + 1 - due) as f64 / r as f64;
                    if ahead > 0.0002 {
                        std::thread::sleep(Duration::from_secs_f64(ahead.min(0.005)));
                    } else {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                want = want.min(due - sent).max(1);
            }
            let want = want as usize;
            // Frames not accepted last time are rebuilt with the same numbers: every SYN the
            // kernel accepted is unique.
            iovs.clear();
            for (i, b) in bufs.iter_mut().take(want).enumerate() {
                frame(kind, mac, next + i as u64, isn_base, b);
                iovs.push(libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                });
            }
            for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m.msg_len = 0;
            }
            // SAFETY: `want` initialised headers pointing at live buffers.
            let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), want as u32, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => {
                        std::thread::yield_now();
                        continue;
                    }
                    _ => bail!("sendmmsg: {e}"),
                }
            }
            sent += n as u64;
            next += n as u64;
        }
        drop(close);
        Ok(Sent {
            packets: sent,
            secs: start.elapsed().as_secs_f64(),
        })
    })
}

/// Closes a fd when dropped.
struct FdGuard(i32);
impl Drop for FdGuard {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}
fn scopeguard(fd: i32) -> FdGuard {
    FdGuard(fd)
}

fn join<T>(h: JoinHandle<Result<Result<T>>>) -> Result<T> {
    match h.join() {
        Ok(r) => r?,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Ordinary TCP traffic over the watched eth0: one connection from c2 to a listener in the host,
/// streaming for `dur`. Returns the bytes carried.
fn stream(lab: &Lab, dur: Duration) -> Result<u64> {
    let listener = lab
        .mesh
        .host()
        .run(|| TcpListener::bind(SocketAddr::from((HOST_IP, STREAM_PORT))))??;
    let sink = lab.mesh.host().spawn(move || -> Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(total)
    })?;
    let src = lab.mesh.client(1).spawn(move || -> Result<()> {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from((HOST_IP, STREAM_PORT)),
            Duration::from_secs(5),
        )?;
        let buf = vec![0x5au8; 1 << 16];
        let end = Instant::now() + dur;
        while Instant::now() < end {
            s.write_all(&buf)?;
        }
        Ok(())
    })?;
    join(src)?;
    join(sink)
}

/// Completed request/response connections from the lab's clients to the published port for
/// `dur` (each client a thread in its namespace).
fn connections(lab: &Lab, clients: usize, dur: Duration) -> Result<(u64, u64)> {
    let to = lab.mesh.published();
    let mut handles = Vec::new();
    for i in 0..clients {
        let from = SocketAddr::from((client_ip(i), 0));
        handles.push(lab.mesh.client(i).spawn(move || -> Result<(u64, u64)> {
            let end = Instant::now() + dur;
            let (mut ok, mut failed) = (0, 0);
            while Instant::now() < end {
                let ex = traffic::exchange(from, to, Duration::from_secs(2));
                if ex.answer.as_deref() == Some("ok\n") {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            Ok((ok, failed))
        })?);
    }
    let mut total = (0, 0);
    for h in handles {
        let (o, f) = join(h)?;
        total.0 += o;
        total.1 += f;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Per-program cost

/// Turns `kernel.bpf_stats_enabled` on, and back to what it was when dropped.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> Result<Self> {
        const P: &str = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(P)?.trim().to_owned();
        std::fs::write(P, "1").context("cannot enable kernel.bpf_stats_enabled")?;
        Ok(Self(old))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

struct Bpftrace {
    child: Child,
}

impl Bpftrace {
    fn start() -> Result<Self> {
        let mut child = Command::new("bpftrace")
            .args(["-e", BPFTRACE_ONE_LINER])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run bpftrace (apt-get install bpftrace)")?;
        let out = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if line.starts_with("Attaching") {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                // "Attaching" is printed just before the attach itself.
                std::thread::sleep(Duration::from_millis(500));
                return Ok(Self { child });
            }
            if let Some(s) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("bpftrace exited ({s}): {err}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("bpftrace did not attach within 30 s");
            }
        }
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The floor: an empty classifier on the host's eth0 (both directions), an empty
/// skb:kfree_skb program and an empty raw tracepoint on kfree_skb, loaded with aya like
/// swarmtrace's own.
fn load_floor(path: &Path, host_ns: &Path) -> Result<aya::Ebpf> {
    let mut ebpf = aya::Ebpf::load_file(path).context("cannot load the floor object")?;
    let tp: &mut TracePoint = ebpf
        .program_mut("floor_tp")
        .context("no floor_tp")?
        .try_into()?;
    tp.load()?;
    tp.attach("skb", "kfree_skb")?;
    let raw: &mut RawTracePoint = ebpf
        .program_mut("floor_raw_tp")
        .context("no floor_raw_tp")?
        .try_into()?;
    raw.load()?;
    raw.attach("kfree_skb")?;
    let tc: &mut SchedClassifier = ebpf
        .program_mut("floor_tc")
        .context("no floor_tc")?
        .try_into()?;
    tc.load()?;
    let e = &mut ebpf;
    swarmtrace::kernel::netns::within(host_ns, move || -> Result<()> {
        let tc: &mut SchedClassifier = e
            .program_mut("floor_tc")
            .context("no floor_tc")?
            .try_into()?;
        tc.attach("eth0", TcAttachType::Ingress)?;
        tc.attach("eth0", TcAttachType::Egress)?;
        Ok(())
    })??;
    Ok(ebpf)
}

#[derive(Default, Clone)]
struct Snap {
    tool: BTreeMap<String, (u32, Run)>,
    floor: BTreeMap<String, (u32, Run)>,
    peer: BTreeMap<String, (u32, Run)>,
}

impl Snap {
    fn take(tool: u32, peer: u32) -> Self {
        Self {
            tool: prog_stats(tool),
            floor: prog_stats(std::process::id()),
            peer: prog_stats(peer),
        }
    }

    /// The sum over the programs of one type (`sched_cls/`, `tracepoint/`).
    fn get(m: &BTreeMap<String, (u32, Run)>, kind: &str) -> Run {
        m.iter()
            .filter(|(k, _)| k.starts_with(kind))
            .fold(Run::default(), |acc, (_, x)| acc.add(x.1))
    }

    /// The peer holds one program (bpftrace's probe); its name depends on the version.
    fn peer_run(&self) -> Run {
        self.peer
            .values()
            .map(|x| x.1)
            .max_by_key(|r| r.cnt)
            .unwrap_or_default()
    }
}

fn cost(args: &Args, lab: &Lab, report: &mut Report) -> Result<()> {
    let secs = if args.quick { 3 } else { 10 };
    let dur = Duration::from_secs(secs);
    let stats = BpfStats::enable()?;
    let tool = Tool::start(&args.bin, &lab.watch_args())?;
    let floor = load_floor(&args.floor, &lab.host_file())?;
    let peer = Bpftrace::start()?;
    let (tp, pp) = (tool.pid(), peer.child.id());
    let s0 = Snap::take(tp, pp);
    ensure!(
        s0.tool
            .keys()
            .filter(|k| k.starts_with("sched_cls/"))
            .count()
            == 2
            && s0
                .tool
                .keys()
                .filter(|k| k.starts_with("tracepoint/") || k.starts_with("raw_tracepoint/"))
                .count()
                == 1,
        "swarmtrace's programs not found: {:?}",
        s0.tool.keys().collect::<Vec<_>>()
    );
    ensure!(!s0.peer.is_empty(), "bpftrace's program not found");

    eprintln!("  ordinary TCP traffic over the watched interface, {secs} s");
    let bytes = stream(lab, dur)?;
    let s1 = Snap::take(tp, pp);
    let udp_rate = 50_000;
    eprintln!("  UDP datagrams to a closed port ({udp_rate}/s: non-handshake drops), {secs} s");
    let udp = join(generator(
        lab.mesh.client(1),
        Frames::Udp,
        Some(udp_rate),
        dur,
    )?)?;
    std::thread::sleep(Duration::from_millis(200));
    let s2 = Snap::take(tp, pp);
    let syn_rate = 20_000;
    eprintln!("  crafted SYNs into a DROP rule ({syn_rate}/s: handshake drops), {secs} s");
    let syns = join(generator(
        lab.mesh.client(0),
        Frames::Syn,
        Some(syn_rate),
        dur,
    )?)?;
    std::thread::sleep(Duration::from_millis(500));
    let s3 = Snap::take(tp, pp);
    drop(peer);
    drop(floor);
    let (summary, _) = tool.stop()?;
    drop(stats);

    let d = |a: &Snap, b: &Snap, f: fn(&Snap) -> Run| f(b).since(f(a));
    // swarmtrace's two classifiers (ingress, egress) are summed: per run is what counts.
    let tc = |s: &Snap| Snap::get(&s.tool, "sched_cls/");
    let tc_in = tc;
    // One of the two is loaded: the raw tracepoint where it attaches, else the classic one.
    let raw = s0.tool.keys().any(|k| k.starts_with("raw_tracepoint/"));
    let kfree =
        |s: &Snap| Snap::get(&s.tool, "tracepoint/").add(Snap::get(&s.tool, "raw_tracepoint/"));
    let ftc = |s: &Snap| Snap::get(&s.floor, "sched_cls/");
    let ftp = |s: &Snap| Snap::get(&s.floor, "tracepoint/");
    let frtp = |s: &Snap| Snap::get(&s.floor, "raw_tracepoint/");
    // The floor of the hook swarmtrace's program is on.
    let fk = if raw { frtp } else { ftp };
    let hook = if raw { "raw tracepoint" } else { "tracepoint" };
    let peer_run = |s: &Snap| s.peer_run();

    let tc_ord = d(&s0, &s1, tc);
    let ftc_ord = d(&s0, &s1, ftc);
    let k_udp = d(&s1, &s2, kfree);
    let ftp_udp = d(&s1, &s2, ftp);
    let frtp_udp = d(&s1, &s2, frtp);
    let fk_udp = d(&s1, &s2, fk);
    let frtp_syn = d(&s2, &s3, frtp);
    let peer_udp = d(&s1, &s2, peer_run);
    let tc_syn = d(&s2, &s3, tc_in);
    let ftc_syn = d(&s2, &s3, ftc);
    let k_syn = d(&s2, &s3, kfree);
    let ftp_syn = d(&s2, &s3, ftp);
    let peer_syn = d(&s2, &s3, peer_run);
    let lost = summary["lost_events"].as_u64().unwrap_or(0);
    let joined_note = format!(
        "{} SYNs sent at {:.0}/s; swarmtrace counted {} drops, {} lost events",
        syns.packets,
        syns.rate(),
        summary["drops"],
        lost
    );
    let ns = |r: Run| format!("{:.1} ns ({} runs)", r.per_run(), r.cnt);
    let only = "--only cost";

    report.row(
        "kernel",
        "empty classifier (floor), ordinary packets",
        ns(ftc_ord),
        "",
        None,
        only,
        format!(
            "{:.1} MiB of TCP stream, {secs} s",
            bytes as f64 / 1048576.0
        ),
    );
    let r = tc_ord.per_run() / ftc_ord.per_run();
    report.row(
        "kernel",
        "TC classifiers, ordinary packet (ingress + egress)",
        format!("{} = {r:.2}x the empty classifier", ns(tc_ord)),
        "<= 1.25x",
        Some(r <= 1.25),
        only,
        "same packets, same hook (TCX on eth0 of the lab's host, both directions)".to_owned(),
    );
    let r = tc_syn.per_run() / ftc_syn.per_run();
    report.row(
        "kernel",
        "TC classifiers, new SYN",
        format!(
            "{} = {r:.2}x the empty classifier ({})",
            ns(tc_syn),
            ns(ftc_syn)
        ),
        "<= 4x",
        Some(r <= 4.0),
        only,
        format!("handshake table slot written, ring-buffer event; {joined_note}"),
    );
    report.row(
        "kernel",
        "empty tracepoint (floor), skb:kfree_skb",
        format!(
            "{} on non-handshake drops, {} on handshake drops",
            ns(ftp_udp),
            ns(ftp_syn)
        ),
        "",
        None,
        only,
        "the program only: the record it is handed is filled before it runs, outside run_time_ns"
            .to_owned(),
    );
    report.row(
        "kernel",
        "empty raw tracepoint (floor), kfree_skb",
        format!(
            "{} on non-handshake drops, {} on handshake drops",
            ns(frtp_udp),
            ns(frtp_syn)
        ),
        "",
        None,
        only,
        "the tracepoint's arguments as they are, no record".to_owned(),
    );
    let r = k_udp.per_run() / fk_udp.per_run();
    report.row(
        "kernel",
        "kfree_skb, non-handshake drop",
        format!(
            "{} = {r:.2}x the empty {hook} ({:.2}x the empty tracepoint)",
            ns(k_udp),
            k_udp.per_run() / ftp_udp.per_run()
        ),
        "<= 1.25x",
        Some(r <= 1.25),
        only,
        format!(
            "swarmtrace's program on the {hook}; {} UDP datagrams to a closed port (NO_SOCKET) at {:.0}/s",
            udp.packets,
            udp.rate()
        ),
    );
    report.row(
        "kernel",
        "bpftrace one-liner (peer), skb:kfree_skb count by reason",
        format!(
            "{} on non-handshake drops, {} on handshake drops",
            ns(peer_udp),
            ns(peer_syn)
        ),
        "",
        None,
        only,
        format!("bpftrace -e '{BPFTRACE_ONE_LINER}'"),
    );
    let r = k_syn.per_run() / peer_syn.per_run();
    report.row(
        "kernel",
        "kfree_skb, handshake drop (decoded, joined, event)",
        format!(
            "{} = {r:.2}x the bpftrace count, {:.2}x the empty {hook}",
            ns(k_syn),
            k_syn.per_run() / d(&s2, &s3, fk).per_run()
        ),
        "<= 1.0x bpftrace",
        Some(r <= 1.0 && lost == 0),
        only,
        joined_note,
    );
    report.raw.insert(
        "cost".to_owned(),
        json!({
            "seconds_per_phase": secs,
            "ordinary": {"tc": [tc_ord.ns, tc_ord.cnt], "floor_tc": [ftc_ord.ns, ftc_ord.cnt]},
            "kfree_skb_hook": hook,
            "udp_drops": {"kfree_skb": [k_udp.ns, k_udp.cnt], "floor_tp": [ftp_udp.ns, ftp_udp.cnt], "floor_raw_tp": [frtp_udp.ns, frtp_udp.cnt], "bpftrace": [peer_udp.ns, peer_udp.cnt], "sent": udp.packets},
            "syn_drops": {"tc_ingress": [tc_syn.ns, tc_syn.cnt], "floor_tc": [ftc_syn.ns, ftc_syn.cnt], "kfree_skb": [k_syn.ns, k_syn.cnt], "floor_tp": [ftp_syn.ns, ftp_syn.cnt], "floor_raw_tp": [frtp_syn.ns, frtp_syn.cnt], "bpftrace": [peer_syn.ns, peer_syn.cnt], "sent": syns.packets},
            "summary": {"drops": summary["drops"], "lost_events": summary["lost_events"], "drops_by_reason": summary["drops_by_reason"]},
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Connection rate

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn conn_rate(args: &Args, lab: &Lab, report: &mut Report) -> Result<()> {
    let (rounds, secs) = if args.quick { (2, 4) } else { (5, 10) };
    let dur = Duration::from_secs(secs);
    let clients = 3;
    // Warm-up: the first connections set up neighbours and conntrack.
    connections(lab, clients, Duration::from_secs(1))?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    let mut failed = 0;
    let mut handshakes_seen = 0u64;
    for round in 0..rounds {
        let (ok, f) = connections(lab, clients, dur)?;
        failed += f;
        off.push(ok as f64 / secs as f64);
        let tool = Tool::start(&args.bin, &lab.watch_args())?;
        attach.push(tool.attach.as_secs_f64() * 1000.0);
        let (ok, f) = connections(lab, clients, dur)?;
        failed += f;
        on.push(ok as f64 / secs as f64);
        let (summary, d) = tool.stop()?;
        detach.push(d.as_secs_f64() * 1000.0);
        handshakes_seen += summary["handshakes"]["total"].as_u64().unwrap_or(0);
        eprintln!(
            "  round {}: without {:.0}/s, with {:.0}/s",
            round + 1,
            off[round],
            on[round]
        );
    }
    let ratio = on.iter().sum::<f64>() / off.iter().sum::<f64>();
    // Where a "with" round's time goes, in one more round outside the ratio (the kernel's
    // accounting costs each program run two clock reads): the programs' run time and the
    // process's CPU time, per connection.
    let (prog_ns, user_ns, conns_on) = {
        let _stats = BpfStats::enable()?;
        let tool = Tool::start(&args.bin, &lab.watch_args())?;
        let (progs0, cpu0) = (prog_stats(tool.pid()), cpu_secs(tool.pid()));
        let (ok, f) = connections(lab, clients, dur)?;
        let (progs1, cpu1) = (prog_stats(tool.pid()), cpu_secs(tool.pid()));
        tool.stop()?;
        failed += f;
        let runs: Vec<(&String, Run)> = progs1
            .iter()
            .filter_map(|(name, (_, r))| Some((name, r.since(progs0.get(name)?.1))))
            .collect();
        for (name, r) in &runs {
            eprintln!(
                "  {name}: {:.1} runs per connection, {:.1} ns per run",
                r.cnt as f64 / ok.max(1) as f64,
                r.per_run()
            );
        }
        let prog_ns: u64 = runs.iter().map(|(_, r)| r.ns).sum();
        let user_ns = ((cpu1 - cpu0).max(0.0) * 1e9) as u64;
        (prog_ns, user_ns, ok)
    };
    let per_conn = |ns: u64| ns as f64 / conns_on.max(1) as f64 / 1000.0;
    // How much longer one connection took with swarmtrace: each client makes one connection
    // after the other, so a connection lasts clients / rate.
    let (mean_on, mean_off) = (
        on.iter().sum::<f64>() / on.len() as f64,
        off.iter().sum::<f64>() / off.len() as f64,
    );
    let longer_us = clients as f64 * (1.0 / mean_on - 1.0 / mean_off) * 1e6;
    eprintln!(
        "  per connection: programs {:.2} us, swarmtrace's process {:.2} us; each connection {:.2} us longer",
        per_conn(prog_ns),
        per_conn(user_ns),
        longer_us
    );
    report.row(
        "throughput",
        "connection rate with swarmtrace attached / without",
        format!(
            "{:.1} % ({:.0}/s with, {:.0}/s without; {rounds} alternating rounds of {secs} s)",
            ratio * 100.0,
            mean_on,
            mean_off
        ),
        ">= 99 %",
        Some(ratio >= 0.99),
        "--only conn",
        format!(
            "{clients} clients, request/response over a new connection each through DNAT, ingress_sbox and SNAT; {failed} failed; swarmtrace reported {handshakes_seen} handshakes; per connection with it: its programs {:.2} us (kernel's run time), its process {:.2} us of CPU (one more round, kernel.bpf_stats_enabled on), each connection {longer_us:.2} us longer ({clients} x (1/rate with - 1/rate without))",
            per_conn(prog_ns),
            per_conn(user_ns)
        ),
    );
    let fmt = |v: &mut Vec<f64>| {
        let max = v.iter().cloned().fold(f64::NAN, f64::max);
        format!(
            "median {:.0} ms, max {max:.0} ms ({} runs)",
            median(v),
            v.len()
        )
    };
    report.row(
        "user space",
        "attach time (start to \"Ctrl-C to stop\")",
        fmt(&mut attach),
        "",
        None,
        "--only conn",
        "reads the kernel's facts (BTF, tracefs, kallsyms), loads, attaches kfree_skb and 2 interfaces".to_owned(),
    );
    report.row(
        "user space",
        "detach time (SIGINT to exit)",
        fmt(&mut detach),
        "",
        None,
        "--only conn",
        "drains, reads counters of every namespace, prints the summary, detaches".to_owned(),
    );
    report.raw.insert(
        "conn".to_owned(),
        json!({"without": off, "with": on, "attach_ms": attach, "detach_ms": detach, "failed": failed}),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Flood

struct Step {
    target: Option<u64>,
    sent: Sent,
    drops: u64,
    lost: u64,
    events: u64,
    by_reason: Value,
    rss_max_kib: u64,
    hwm_kib: u64,
}

fn flood_step(
    args: &Args,
    lab: &Lab,
    rate: Option<u64>,
    secs: u64,
    maps: &mut Option<(u64, Vec<Value>)>,
) -> Result<Step> {
    let mut targs = vec![
        "--iface".to_owned(),
        format!("{}:eth0", lab.mesh.host().name()),
        "--client".to_owned(),
        format!("{FLOOD_SRC}/32"),
    ];
    targs.push("--syn-timeout".to_owned());
    targs.push("1s".to_owned());
    let tool = Tool::start(&args.bin, &targs)?;
    if maps.is_none() {
        *maps = Some(map_memory(tool.pid()));
    }
    let sampler = RssSampler::start(tool.pid(), Duration::from_millis(100));
    let sent = join(generator(
        lab.mesh.client(0),
        Frames::Syn,
        rate,
        Duration::from_secs(secs),
    )?)?;
    // Let user space catch up with what is in the ring.
    std::thread::sleep(Duration::from_millis(1500));
    let hwm = rss(tool.pid()).map(|x| x.1).unwrap_or(0);
    let (rss_max, _, _) = sampler.finish();
    let (summary, _) = tool.stop()?;
    let step = Step {
        target: rate,
        sent,
        drops: summary["drops"].as_u64().unwrap_or(0),
        lost: summary["lost_events"].as_u64().unwrap_or(0),
        events: summary["events"].as_u64().unwrap_or(0),
        by_reason: summary["drops_by_reason"].clone(),
        rss_max_kib: rss_max,
        hwm_kib: hwm,
    };
    eprintln!(
        "  {}: sent {} at {:.0}/s; drops {} ({}), lost events {}, drop events {}, RSS max {:.1} MiB",
        rate.map(|r| format!("{r}/s")).unwrap_or_else(|| "max".to_owned()),
        step.sent.packets,
        step.sent.rate(),
        step.drops,
        if step.drops == step.sent.packets { "exact" } else { "NOT exact" },
        step.lost,
        step.events,
        step.rss_max_kib as f64 / 1024.0
    );
    Ok(step)
}

/// The host's SYN-drop capacity: the generator's highest rate into the DROP rule (it sends
/// from a client namespace, and the host's receive path runs in its context, so what the
/// host's per-packet work costs lowers it), without and with swarmtrace attached, in
/// alternating rounds; the ratio of the sums.
fn capacity(args: &Args, lab: &Lab, report: &mut Report) -> Result<()> {
    let (rounds, secs) = if args.quick { (2, 3) } else { (4, 5) };
    let dur = Duration::from_secs(secs);
    let send = || join(generator(lab.mesh.client(0), Frames::Syn, None, dur)?);
    // Warms the neighbour entries and the generator's pages.
    send()?;
    let targs = vec![
        "--iface".to_owned(),
        format!("{}:eth0", lab.mesh.host().name()),
        "--client".to_owned(),
        format!("{FLOOD_SRC}/32"),
    ];
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut exact = true;
    let mut sampled = Vec::new();
    for i in 0..rounds {
        let base = send()?;
        eprintln!("  round {}: without {:.0}/s", i + 1, base.rate());
        without.push(base);
        let tool = Tool::start(&args.bin, &targs)?;
        let sent = send()?;
        std::thread::sleep(Duration::from_millis(500));
        let (summary, _) = tool.stop()?;
        let drops = summary["drops"].as_u64().unwrap_or(0);
        exact &= drops == sent.packets;
        if !summary["sampled"].is_null() {
            sampled.push(summary["sampled"]["one_in"].as_u64().unwrap_or(0));
        }
        eprintln!(
            "  round {}: with {:.0}/s (drops {drops} of {} sent, sampled: {})",
            i + 1,
            sent.rate(),
            sent.packets,
            summary["sampled"]
        );
        with.push(sent);
    }
    let rate = |v: &[Sent]| {
        v.iter().map(|s| s.packets).sum::<u64>() as f64
            / v.iter().map(|s| s.secs).sum::<f64>().max(1e-9)
    };
    let (w, wo) = (rate(&with), rate(&without));
    let r = w / wo;
    report.row(
        "throughput",
        "host's SYN-drop capacity with swarmtrace attached / without",
        format!(
            "{:.1} % ({w:.0}/s with, {wo:.0}/s without; {rounds} alternating rounds of {secs} s)",
            r * 100.0
        ),
        ">= 90 %",
        Some(r >= 0.9),
        "--only capacity",
        format!(
            "crafted SYNs as fast as the generator sends (AF_PACKET, sendmmsg) into a raw-table DROP in the lab's host; drops counted exactly in every round: {}; the kernel sampled detail events in {} of {rounds} rounds (overload, 1 in {})",
            if exact { "yes" } else { "NO" },
            sampled.len(),
            sampled.first().copied().unwrap_or(swarmtrace_common::OVERLOAD_ONE_IN as u64)
        ),
    );
    report.raw.insert(
        "capacity".to_owned(),
        json!({
            "seconds_per_round": secs,
            "without": without.iter().map(|s| [s.packets as f64, s.secs]).collect::<Vec<_>>(),
            "with": with.iter().map(|s| [s.packets as f64, s.secs]).collect::<Vec<_>>(),
            "exact": exact,
        }),
    );
    Ok(())
}

fn flood(args: &Args, lab: &Lab, report: &mut Report) -> Result<()> {
    let secs = if args.quick { 3 } else { 5 };
    let rates: Vec<u64> = if args.quick {
        vec![10_000, 25_000, 50_000, 100_000, 200_000]
    } else {
        vec![
            10_000, 20_000, 30_000, 40_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000,
        ]
    };
    // What the generator reaches here with nothing attached: the machine's own limit.
    let base = join(generator(
        lab.mesh.client(0),
        Frames::Syn,
        None,
        Duration::from_secs(secs),
    )?)?;
    eprintln!("  without swarmtrace: {:.0}/s", base.rate());
    let mut maps = None;
    let mut steps = Vec::new();
    for r in rates {
        let s = flood_step(args, lab, Some(r), secs, &mut maps)?;
        // The generator cannot reach this rate here: the unbounded step below covers it.
        let saturated = s.sent.rate() < r as f64 * 0.95;
        steps.push(s);
        if saturated {
            break;
        }
    }
    steps.push(flood_step(args, lab, None, secs, &mut maps)?);

    let exact = steps.iter().all(|s| s.drops == s.sent.packets);
    let best = steps
        .iter()
        .filter(|s| s.lost == 0 && s.drops == s.sent.packets)
        .map(|s| s.sent.rate())
        .fold(0.0, f64::max);
    let above: Vec<&Step> = steps.iter().filter(|s| s.lost > 0).collect();
    let max = steps.last().expect("one step at least");
    let only = "--only flood";
    report.row(
        "flood",
        "highest SYN drop rate with zero lost events",
        format!("{:.0}/s", best),
        ">= 200k/s",
        Some(best >= 200_000.0),
        only,
        format!(
            "{secs} s per step; crafted SYNs (AF_PACKET, sendmmsg) from a client namespace into a raw-table DROP in the lab's host; generator's maximum here: {:.0}/s with swarmtrace attached, {:.0}/s without",
            max.sent.rate(),
            base.rate()
        ),
    );
    report.row(
        "flood",
        "totals exact (drops == SYNs sent) at every rate",
        if exact {
            "yes".to_owned()
        } else {
            steps
                .iter()
                .filter(|s| s.drops != s.sent.packets)
                .map(|s| format!("sent {} counted {}", s.sent.packets, s.drops))
                .collect::<Vec<_>>()
                .join("; ")
        },
        "exact",
        Some(exact),
        only,
        String::new(),
    );
    report.row(
        "flood",
        "above it: lost events counted and reported",
        if above.is_empty() {
            "no step lost events (the generator's maximum did not overwhelm user space)".to_owned()
        } else {
            above
                .iter()
                .map(|s| {
                    format!(
                        "{:.0}/s: {} sent, {} drops counted, {} lost events reported, {} drop events delivered",
                        s.sent.rate(),
                        s.sent.packets,
                        s.drops,
                        s.lost,
                        s.events
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
        "",
        None,
        only,
        String::new(),
    );
    let rss_max = steps
        .iter()
        .map(|s| s.rss_max_kib.max(s.hwm_kib))
        .max()
        .unwrap_or(0);
    report.row(
        "user space",
        "resident memory under the flood (max VmHWM of swarmtrace)",
        format!("{:.1} MiB", rss_max as f64 / 1024.0),
        "<= 40 MiB",
        Some(rss_max <= 40 * 1024),
        only,
        format!(
            "per step: {}",
            steps
                .iter()
                .map(|s| format!(
                    "{:.0}/s {:.1} MiB",
                    s.sent.rate(),
                    s.hwm_kib.max(s.rss_max_kib) as f64 / 1024.0
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    if let Some((total, list)) = &maps {
        report.row(
            "kernel",
            "BPF map memory (memlock of swarmtrace's maps)",
            format!(
                "{:.2} MiB in {} maps",
                *total as f64 / 1048576.0,
                list.len()
            ),
            "",
            None,
            only,
            list.iter()
                .map(|m| {
                    format!(
                        "type {} x{}: {:.0} KiB",
                        m["map_type"].as_str().unwrap_or("?"),
                        m["max_entries"].as_str().unwrap_or("?"),
                        m["memlock"].as_u64().unwrap_or(0) as f64 / 1024.0
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    report.raw.insert(
        "flood".to_owned(),
        Value::Array(
            steps
                .iter()
                .map(|s| {
                    json!({
                        "target_per_s": s.target,
                        "sent": s.sent.packets,
                        "seconds": s.sent.secs,
                        "rate": s.sent.rate(),
                        "drops": s.drops,
                        "lost_events": s.lost,
                        "drop_events": s.events,
                        "drops_by_reason": s.by_reason,
                        "rss_max_kib": s.rss_max_kib,
                        "hwm_kib": s.hwm_kib,
                    })
                })
                .collect(),
        ),
    );
    report.raw.insert(
        "flood_baseline".to_owned(),
        json!({"sent": base.packets, "rate": base.rate()}),
    );
    report.raw.insert(
        "maps".to_owned(),
        maps.map(|(t, l)| json!({"total": t, "maps": l}))
            .unwrap_or(Value::Null),
    );
    spread::spread(args, lab, report)?;
    spread::replay(args, lab, report)
}

// ---------------------------------------------------------------------------------------------
// Soak

fn soak(args: &Args, lab: &Lab, minutes: f64, report: &mut Report) -> Result<()> {
    let dur = Duration::from_secs_f64(minutes * 60.0);
    eprintln!("bench: soak, {minutes} min of connections, SYN drops and UDP drops");
    let tool = Tool::start(&args.bin, &lab.watch_args())?;
    let sampler = RssSampler::start(tool.pid(), Duration::from_secs(5));
    let syn = generator(lab.mesh.client(0), Frames::Syn, Some(2_000), dur)?;
    let udp = generator(lab.mesh.client(1), Frames::Udp, Some(2_000), dur)?;
    let conns = connections(lab, 1, dur);
    let syn = join(syn)?;
    let udp = join(udp)?;
    let (ok, failed) = conns?;
    std::thread::sleep(Duration::from_secs(2));
    let (max, hwm, series) = sampler.finish();
    let lines = tool.stdout_lines.load(Ordering::Relaxed);
    let (summary, _) = tool.stop()?;
    // Flat: the last fifth of the run against the second fifth (the tracker fills its
    // capacity of handshakes first).
    let total = series.last().map(|x| x.0).unwrap_or(0.0);
    let window = |a: f64, b: f64| -> f64 {
        let v: Vec<u64> = series
            .iter()
            .filter(|x| x.0 >= total * a && x.0 <= total * b)
            .map(|x| x.1)
            .collect();
        v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
    };
    let (early, late) = (window(0.2, 0.4), window(0.8, 1.0));
    let growth = (late - early) / 1024.0;
    let per_minute: Vec<String> = series
        .iter()
        .filter(|x| (x.0 / 60.0).fract() < 5.0 / 60.0 || x.0 == total)
        .map(|x| format!("{:.0} s {:.1} MiB", x.0, x.1 as f64 / 1024.0))
        .collect();
    report.row(
        "soak",
        &format!("resident memory over {minutes} min of mixed traffic"),
        format!(
            "{:.1} MiB in the second fifth, {:.1} MiB in the last fifth ({growth:+.2} MiB); max {:.1} MiB, VmHWM {:.1} MiB",
            early / 1024.0,
            late / 1024.0,
            max as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
        "flat",
        Some(growth.abs() < 1.0),
        &format!("--soak --minutes {minutes}"),
        format!(
            "{ok} connections ({failed} failed), {} crafted SYN drops, {} UDP drops; swarmtrace: {} drops, {} lost events, {} handshakes ({} forgotten beyond its cap of {} (MAX_HANDSHAKES)), {lines} output lines; samples: {}",
            syn.packets,
            udp.packets,
            summary["drops"],
            summary["lost_events"],
            summary["handshakes"]["total"],
            summary["handshakes"]["forgotten"],
            swarmtrace::trace::tracker::MAX_HANDSHAKES,
            per_minute.join(", ")
        ),
    );
    report.raw.insert(
        "soak".to_owned(),
        json!({"series": series, "summary_drops": summary["drops"], "drops_by_reason": summary["drops_by_reason"], "top_locations": summary["top_locations"], "top_sources": summary["top_sources"], "lost": summary["lost_events"], "syn_sent": syn.packets, "udp_sent": udp.packets, "connections": ok, "failed": failed}),
    );
    Ok(())
}
