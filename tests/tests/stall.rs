//! Nothing outside stalls the tracer: a Docker API that never accepts, accepts and never
//! answers, or dribbles a byte a second, while new namespaces are filed under Docker's netns
//! directory and SYNs are dropped in them; and 64 slow `/metrics` clients during a drop
//! flood. Drops keep being counted at the rate of the same flood without the stub, none is
//! lost, and SIGINT ends the run within 2 s with its summary. Privileged (`sudo cargo xtask
//! test`); skipped otherwise.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use swarmtrace::lab::craft::Syn;
use swarmtrace::lab::Netns;
use swarmtrace_tests::{ns_name, require_privileged, test_port, DockerDir, Tracer};

/// New namespaces per run, each flooded for [`FLOOD_EACH`] at [`FLOOD_RATE`].
const NAMESPACES: usize = 5;
const FLOOD_EACH: Duration = Duration::from_secs(1);
const FLOOD_RATE: u32 = 1_500;

/// How a Docker API stub misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Its backlog is full: a blocking connect waits forever.
    NeverAccepts,
    /// Accepts, reads nothing, answers nothing.
    Silent,
    /// Answers a byte a second, forever.
    Dribbles,
}

/// A Docker Engine API stub on a unix socket, removed on drop.
struct DockerStub {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    _held: Vec<UnixStream>,
}

impl DockerStub {
    fn start(mode: Mode) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "swarmtrace-stall-docker-{}-{mode:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let l = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        l.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
        l.listen(0).unwrap();
        let l: UnixListener = l.into();
        let stop = Arc::new(AtomicBool::new(false));
        let mut held = Vec::new();
        if mode == Mode::NeverAccepts {
            // A backlog of 0 holds one connection: this one fills it.
            held.push(UnixStream::connect(&path).unwrap());
            // The listener stays open (and never accepts) until the stub is dropped.
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(l);
            });
        } else {
            l.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conns: Vec<UnixStream> = Vec::new();
                let mut last_byte = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    while let Ok((c, _)) = l.accept() {
                        c.set_nonblocking(true).unwrap();
                        if mode == Mode::Dribbles {
                            let _ = (&c).write_all(b"H");
                        }
                        conns.push(c);
                    }
                    if mode == Mode::Dribbles && last_byte.elapsed() >= Duration::from_secs(1) {
                        last_byte = Instant::now();
                        for c in &conns {
                            let _ = (&*c).write(b"T");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        Self {
            dir,
            stop,
            _held: held,
        }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }
}

impl Drop for DockerStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `rate` SYNs a second for `each`, to `port` on the namespace's own loopback (no
/// socket there: every one is dropped, NO_SOCKET), from a raw socket inside `ns`.
fn flood(ns: &Netns, port: u16, rate: u32, each: Duration) -> u64 {
    ns.run(move || {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        let lo = Ipv4Addr::LOCALHOST;
        let to: socket2::SockAddr = SocketAddr::new(IpAddr::V4(lo), 0).into();
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < each {
            let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            while sent < due {
                let sport = 10_000 + (sent % 50_000) as u16;
                let syn = Syn::new(
                    SocketAddrV4::new(lo, sport),
                    SocketAddrV4::new(lo, port),
                    sent as u32,
                    1,
                );
                if sock.send_to(&syn.segment(), &to).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        sent
    })
    .unwrap()
}

/// True once process `pid` has ended (a zombie until its parent reaps it).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Sends SIGINT and returns how long the run took to end, its output objects and stderr.
fn interrupt(t: Tracer, seen: Vec<Value>) -> (Duration, Vec<Value>, String) {
    let pid = t.id();
    let sent = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    while !ended(pid) && sent.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = sent.elapsed();
    assert!(
        ended(pid),
        "SIGINT did not end the run within {took:?}, no summary: {}",
        t.stderr()
    );
    // Signal 0: nothing sent, the exit reaped and the rest of the output read.
    let (status, out, stderr) = t.signal(0, seen).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    (took, out, stderr)
}

/// A drop of one of the flood's SYNs (the kernel's RSTs in answer are dropped too, at a rate
/// of their own).
fn is_flood_drop(v: &Value) -> bool {
    v["type"] == "drop" && v["packet"] == "SYN"
}

/// What one run counted.
#[derive(Debug)]
struct Counted {
    /// Drop objects written while the flood ran (and within 1 s of its end).
    live: usize,
    sent: u64,
    sigint: Duration,
    summary: Value,
    stderr: String,
}

/// A run with `DOCKER_HOST` at `docker_host`: new namespaces filed under Docker's directory
/// one after another, each flooded with dropped SYNs.
fn run(tag: &str, docker_host: &str, port: u16) -> Counted {
    let mut dir = DockerDir::open();
    let t = Tracer::start_env(
        &["--port", &port.to_string(), "--max-lines-per-second", "0"],
        &[("DOCKER_HOST", docker_host)],
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut sent = 0;
    let mut namespaces = Vec::new();
    for i in 0..NAMESPACES {
        let ns = Netns::create(&ns_name(&format!("{tag}{i}"))).unwrap();
        dir.file(ns.name(), ns.name());
        sent += flood(&ns, port, FLOOD_RATE, FLOOD_EACH);
        namespaces.push(ns);
    }
    t.wait_for(&mut seen, Duration::from_secs(1), |_| false);
    let live = seen.iter().filter(|v| is_flood_drop(v)).count();
    let (sigint, out, stderr) = interrupt(t, seen);
    drop(dir);
    drop(namespaces);
    let summary = out
        .last()
        .filter(|v| v["type"] == "summary")
        .cloned()
        .unwrap_or_else(|| panic!("no summary; stderr: {stderr}"));
    Counted {
        live,
        sent,
        sigint,
        summary,
        stderr,
    }
}

fn hung_docker(mode: Mode, tag: &str, offset: u16) {
    let port = test_port(offset);
    let absent = format!(
        "unix:///nonexistent/swarmtrace-stall-{}.sock",
        std::process::id()
    );
    let base = run(&format!("{tag}b"), &absent, port);
    assert!(base.live > 0, "the flood was not seen: {base:?}");
    let stub = DockerStub::start(mode);
    let hung = run(&format!("{tag}h"), &stub.docker_host(), port);
    drop(stub);
    eprintln!(
        "{mode:?}: without the stub {} SYN drops seen live of {} sent, SIGINT {:?}; with it {} of {}, SIGINT {:?} (summary: {} events, {} lost)",
        base.live, base.sent, base.sigint, hung.live, hung.sent, hung.sigint,
        hung.summary["events"], hung.summary["lost_events"]
    );
    assert_eq!(hung.summary["lost_events"], 0, "{hung:?}");
    assert!(
        hung.live as f64 >= 0.8 * base.live as f64 * hung.sent as f64 / base.sent as f64,
        "{mode:?}: {} drops counted live with the stub, {} without: {hung:?}",
        hung.live,
        base.live
    );
    assert!(
        hung.sigint < Duration::from_secs(2),
        "{mode:?}: SIGINT took {:?}: {}",
        hung.sigint,
        hung.stderr
    );
    assert!(hung.summary["events"].as_u64().unwrap() >= hung.live as u64);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn docker_that_never_accepts_stalls_nothing() {
    require_privileged("docker_that_never_accepts_stalls_nothing");
    hung_docker(Mode::NeverAccepts, "dka", 41);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn docker_that_never_answers_stalls_nothing() {
    require_privileged("docker_that_never_answers_stalls_nothing");
    hung_docker(Mode::Silent, "dks", 42);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn docker_that_dribbles_stalls_nothing() {
    require_privileged("docker_that_dribbles_stalls_nothing");
    hung_docker(Mode::Dribbles, "dkd", 43);
}

/// A slow `/metrics` client from `127.0.0.x`: connects and sends nothing, or dribbles its
/// request a byte a second, or asks and never reads; reconnects when closed, until `stop`.
fn slow_client(metrics: SocketAddr, x: u8, kind: usize, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let _ = s.set_recv_buffer_size(1024);
        s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 9, x)), 0).into())
            .unwrap();
        if s.connect(&metrics.into()).is_err() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut i = 0;
        let opened = Instant::now();
        while !stop.load(Ordering::Relaxed) && opened.elapsed() < Duration::from_secs(60) {
            let alive = match kind {
                // Dribbles.
                1 => {
                    let r = s.write_all(&request[i % request.len()..][..1]);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(900));
                    r.is_ok()
                }
                // Asks, then reads nothing.
                2 if i == 0 => {
                    i = 1;
                    s.write_all(request).is_ok()
                }
                _ => {
                    std::thread::sleep(Duration::from_millis(100));
                    true
                }
            };
            // Closed by the server? (Reads one byte at most: a slow reader stays slow.)
            let mut b = [0u8; 1];
            let closed = match kind {
                2 => false,
                _ => matches!(s.read(&mut b), Ok(0)),
            };
            if !alive || closed {
                break;
            }
        }
    }
}

fn scrape(metrics: SocketAddr) -> std::io::Result<(Duration, String)> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok((started.elapsed(), out))
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn slow_metrics_clients_stall_nothing() {
    require_privileged("slow_metrics_clients_stall_nothing");
    let port = test_port(44);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    // Every drop line printed: what is measured is whether events still flow, not the
    // output's per-second cap.
    let t = Tracer::start(&[
        "--port",
        &port.to_string(),
        "--metrics",
        &metrics.to_string(),
        "--max-lines-per-second",
        "0",
    ])
    .unwrap();
    let ns = Netns::create(&ns_name("mslow")).unwrap();
    // 64 slow clients from 8 addresses, half of them silent, half dribbling.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || slow_client(metrics, 1 + (i % 8) as u8, i % 2, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The flood, with real scrapes in between.
    let mut worst = Duration::ZERO;
    let mut answers = 0;
    let mut sent = 0;
    for _ in 0..4 {
        sent += flood(&ns, port, FLOOD_RATE, Duration::from_secs(1));
        let (took, r) = scrape(metrics).unwrap_or_else(|e| panic!("scrape: {e}"));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        answers += 1;
        worst = worst.max(took);
    }
    let mut seen = Vec::new();
    t.wait_for(&mut seen, Duration::from_secs(1), |_| false);
    let live = seen.iter().filter(|v| is_flood_drop(v)).count();
    stop.store(true, Ordering::Relaxed);
    let (sigint, out, stderr) = interrupt(t, seen);
    for c in clients {
        let _ = c.join();
    }
    drop(ns);
    let summary = out.last().unwrap();
    eprintln!(
        "{answers} scrapes answered, the slowest in {worst:?}; {live} drops seen live of {sent} SYNs; SIGINT {sigint:?}"
    );
    assert_eq!(summary["type"], "summary", "{stderr}");
    assert_eq!(summary["lost_events"], 0, "{summary}");
    assert!(worst < Duration::from_secs(2), "a scrape took {worst:?}");
    assert!(live as u64 >= sent * 8 / 10, "{live} of {sent}: {summary}");
    assert!(sigint < Duration::from_secs(2), "SIGINT took {sigint:?}");
}
