//! Helpers for swarmtrace's privileged end-to-end tests: find the binary, decide whether the
//! machine can run them, and drive `swarmtrace run --json` as a child process.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use swarmtrace::kernel::netns::DOCKER_DIR;

/// Fails the calling test, saying why, when this machine cannot run privileged tests.
///
/// Every privileged test is also `#[ignore]`d: a plain `cargo test` reports it as ignored
/// (never as passed), and `sudo cargo xtask test` runs them all (`--include-ignored`), where one
/// that cannot run is a failure.
pub fn require_privileged(test: &str) {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for namespaces)")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("needs a kernel with BTF (/sys/kernel/btf/vmlinux)")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("needs iproute2 (`ip`)")
    } else {
        None
    };
    if let Some(why) = why {
        panic!("{test}: {why}; run it with `sudo cargo xtask test`");
    }
}

/// The `swarmtrace` binary of this workspace (built by `cargo xtask test`).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SWARMTRACE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/swarmtrace");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p swarmtrace` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// A running `swarmtrace run --json`, stopped with SIGINT.
pub struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Tracer {
    /// Starts `swarmtrace run --json ARGS` and waits until it says it is tracing.
    pub fn start(args: &[&str]) -> Result<Self> {
        let mut full = vec!["run", "--json"];
        full.extend_from_slice(args);
        Self::spawn(&full)
    }

    /// Starts `swarmtrace run --json ARGS` with these environment variables set.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let mut full = vec!["run", "--json"];
        full.extend_from_slice(args);
        Self::spawn_env(&full, env)
    }

    /// Starts `swarmtrace ARGS` (a command that traces) and waits until it says it is
    /// tracing.
    pub fn spawn(args: &[&str]) -> Result<Self> {
        Self::spawn_env(args, &[])
    }

    /// Starts `swarmtrace ARGS` with these environment variables set, as `spawn`.
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let mut child = Command::new(binary())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start swarmtrace")?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready) = mpsc::channel();
        let err_pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                if line.contains("Ctrl-C to stop") {
                    let _ = ready_tx.send(());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut t = Self {
            child,
            lines,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Ok(t);
            }
            if let Some(status) = t.child.try_wait()? {
                bail!("swarmtrace exited early ({status}): {}", t.stderr());
            }
            if Instant::now() > deadline {
                bail!("swarmtrace did not attach within 60 s: {}", t.stderr());
            }
        }
    }

    /// The process id of the running swarmtrace.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until an output object satisfies `pred` (or `timeout` passes), keeping the
    /// objects seen so far.
    pub fn wait_for(
        &self,
        seen: &mut Vec<Value>,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        if seen.iter().any(&pred) {
            return true;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    let hit = pred(&v);
                    seen.push(v);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Sends SIGINT, waits for exit, and returns every output object (the summary last).
    pub fn stop(self, seen: Vec<Value>) -> Result<Vec<Value>> {
        let (status, out, stderr) = self.signal(libc::SIGINT, seen)?;
        if !status.success() {
            bail!("swarmtrace exited with {status}: {stderr}");
        }
        Ok(out)
    }

    /// Waits (at most `timeout`) for the process to end by itself; returns its status and
    /// stderr.
    pub fn wait(mut self, timeout: Duration) -> Result<(std::process::ExitStatus, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                return Ok((s, self.stderr()));
            }
            if Instant::now() > deadline {
                bail!(
                    "swarmtrace did not end within {timeout:?}: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig`, waits (20 s at most) for the process to end, and returns its status, its
    /// output objects and its stderr.
    pub fn signal(
        mut self,
        sig: i32,
        mut seen: Vec<Value>,
    ) -> Result<(std::process::ExitStatus, Vec<Value>, String)> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("swarmtrace did not exit within 20 s of signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            seen.push(serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?);
        }
        // Let the stderr reader finish.
        std::thread::sleep(Duration::from_millis(100));
        Ok((status, seen, self.stderr()))
    }

    /// Waits until stderr contains `needle`; returns how long it took.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.stderr().contains(needle) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Names of swarmtrace's programs loaded in the kernel right now (by anyone).
pub fn loaded_swarmtrace_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| n.starts_with("swarmtrace_"))
        .collect()
}

/// Drops every TCP segment to `port` arriving in `ns` (an iptables rule in its INPUT chain,
/// gone with the namespace).
pub fn drop_tcp_port(ns: &swarmtrace::lab::Netns, port: u16) -> Result<()> {
    ns.exec(&[
        "iptables",
        "-I",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &port.to_string(),
        "-j",
        "DROP",
    ])?;
    Ok(())
}

/// A port unlikely to collide between tests running at once.
pub fn test_port(offset: u16) -> u16 {
    20000 + (std::process::id() % 20000) as u16 + offset
}

/// A short unique namespace name for this test process.
pub fn ns_name(tag: &str) -> String {
    format!("st{}{tag}", std::process::id() % 100000)
}

/// A Docker API on a unix socket that answers `GET /services...` with `services` and every
/// other request with `[]`; it serves until the test process ends.
pub fn docker_stub(tag: &str, services: Value) -> std::path::PathBuf {
    docker_api_stub(tag, vec![("GET /services", services.to_string())])
}

/// A Docker API on a unix socket that answers a request starting with one of `answers`'
/// prefixes with its body, and every other request with `[]`; it serves until the test
/// process ends.
pub fn docker_api_stub(tag: &str, answers: Vec<(&'static str, String)>) -> std::path::PathBuf {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("swarmtrace-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = [0u8; 4096];
            let n = c.read(&mut head).unwrap_or(0);
            let req = String::from_utf8_lossy(&head[..n]);
            let answer = answers
                .iter()
                .find(|(prefix, _)| req.starts_with(prefix))
                .map_or("[]", |(_, body)| body.as_str());
            let _ = write!(
                c,
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    path
}

/// Docker's netns directory (where swarmtrace looks for Docker's namespaces), made if missing
/// and removed after if this test made it, with the files a test put there (a real Docker's
/// files are never touched: ours have names of their own).
pub struct DockerDir {
    made: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl DockerDir {
    pub fn open() -> Self {
        let mut made = Vec::new();
        for d in ["/var/run/docker", DOCKER_DIR] {
            if !std::path::Path::new(d).exists() {
                std::fs::create_dir(d).unwrap();
                made.push(PathBuf::from(d));
            }
        }
        Self {
            made,
            files: Vec::new(),
        }
    }

    /// Files the namespace `netns` (of `ip netns`) under Docker's directory as `name` (a bind
    /// mount, as Docker does).
    pub fn file(&mut self, netns: &str, name: &str) {
        let file = std::path::Path::new(DOCKER_DIR).join(name);
        std::fs::write(&file, "").unwrap();
        self.files.push(file.clone());
        swarmtrace::lab::sh(
            "mount",
            &[
                "--bind",
                &format!("/run/netns/{netns}"),
                file.to_str().unwrap(),
            ],
        )
        .unwrap();
    }
}

impl Drop for DockerDir {
    fn drop(&mut self) {
        for f in self.files.drain(..) {
            let _ = swarmtrace::lab::sh("umount", &[f.to_str().unwrap()]);
            let _ = std::fs::remove_file(&f);
        }
        for d in self.made.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
