//! One meaning of `host`: swarmtrace run inside another network namespace (`ip netns exec`)
//! with its default interfaces watches the host's (PID 1's) interfaces and names the
//! namespaces as a run from the host does. The test namespace has a bridge named
//! docker_gwbridge and a default route of its own, which such a run must not take for the
//! host's. No interface of the host is created or removed. Run as root.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use swarmtrace_tests::{binary, require_privileged, test_port};

/// The namespace swarmtrace runs in, and one where a drop is made to be named.
const RUN_NS: &str = "sthostA";
const NAMED_NS: &str = "sthostB";

/// Removes the test namespaces (and with them their interfaces), also when the test fails.
struct Namespaces;

impl Namespaces {
    fn make() -> Self {
        let s = Self;
        s.remove();
        for args in [
            vec!["netns", "add", RUN_NS],
            vec!["netns", "add", NAMED_NS],
            vec!["-n", RUN_NS, "link", "set", "lo", "up"],
            vec!["-n", NAMED_NS, "link", "set", "lo", "up"],
            // Made inside the test namespace: the host's interfaces are never touched.
            vec![
                "-n",
                RUN_NS,
                "link",
                "add",
                "docker_gwbridge",
                "type",
                "bridge",
            ],
            vec![
                "-n", RUN_NS, "link", "add", "sthostAd", "type", "veth", "peer", "name", "sthostAp",
            ],
            vec!["-n", RUN_NS, "link", "set", "sthostAp", "up"],
            vec![
                "-n",
                RUN_NS,
                "addr",
                "add",
                "10.231.0.1/24",
                "dev",
                "sthostAd",
            ],
            vec!["-n", RUN_NS, "link", "set", "sthostAd", "up"],
            vec!["-n", RUN_NS, "link", "set", "docker_gwbridge", "up"],
            vec!["-n", RUN_NS, "route", "add", "default", "via", "10.231.0.2"],
        ] {
            let ok = Command::new("ip").args(&args).status().unwrap().success();
            assert!(ok, "ip {}", args.join(" "));
        }
        s
    }

    fn remove(&self) {
        for ns in [RUN_NS, NAMED_NS] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove();
    }
}

/// What a run with the default interfaces must watch: the host's docker_gwbridge when it
/// has one, then its default route's interface.
fn hosts_defaults() -> Vec<String> {
    let ip = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let mut out = Vec::new();
    if ip(&["link", "show", "dev", "docker_gwbridge"]).0 {
        out.push("docker_gwbridge".to_owned());
    }
    let (_, routes) = ip(&["-4", "route", "show", "default"]);
    if let Some(dev) = routes
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "dev").nth(1))
    {
        if !out.iter().any(|o| o == dev) {
            out.push(dev.to_owned());
        }
    }
    out
}

/// A SYN to a closed port on loopback in `netns` (None: the host): the kernel answers with
/// a RST and drops the SYN (`NO_SOCKET`).
fn syn_to_closed_port(netns: Option<&str>, port: u16) {
    let connect = move || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    };
    match netns {
        None => connect(),
        Some(ns) => {
            swarmtrace::kernel::netns::within(&std::path::Path::new("/run/netns").join(ns), connect)
                .unwrap()
        }
    }
}

struct Run {
    stderr: String,
    lines: Vec<Value>,
}

impl Run {
    /// The summary's `watched`.
    fn watched(&self) -> Vec<String> {
        let s = self
            .lines
            .iter()
            .find(|v| v["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary; stderr:\n{}", self.stderr));
        s["watched"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect()
    }

    /// (netns inode, netns_name) of the drops to `port`, sorted.
    fn drops_to(&self, port: u16) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self
            .lines
            .iter()
            .filter(|v| v["type"] == "drop")
            .filter(|v| {
                v["dst"]
                    .as_str()
                    .is_some_and(|d| d.ends_with(&format!(":{port}")))
            })
            .map(|v| {
                (
                    v["netns"].as_u64().unwrap(),
                    v["netns_name"].as_str().unwrap_or("(none)").to_owned(),
                )
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `[ip netns exec NS] swarmtrace run --json --port PORT` with the default interfaces; once it
/// traces, a SYN to the closed port in the host and in [`NAMED_NS`]; then SIGINT.
fn traced(netns: Option<&str>, port: u16) -> Run {
    let dir = std::env::temp_dir().join(format!("swarmtrace-hostns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (out, err) = (dir.join("out"), dir.join("err"));
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(binary());
            c
        }
        None => Command::new(binary()),
    };
    let mut child: Child = cmd
        .args(["run", "--json", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let read = |p: &std::path::Path| {
        let mut s = String::new();
        let _ = std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read(&err).contains("Ctrl-C to stop") {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = read(&err);
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "swarmtrace run in {} exited before tracing ({status}):\n{stderr}",
                netns.unwrap_or("the host"),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("swarmtrace did not trace within 60 s:\n{}", read(&err));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..2 {
        syn_to_closed_port(None, port);
        syn_to_closed_port(Some(NAMED_NS), port);
    }
    std::thread::sleep(Duration::from_millis(1500));
    // `ip netns exec` execs swarmtrace: the child is swarmtrace itself.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("swarmtrace did not stop within 20 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = read(&err);
    let lines = read(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "swarmtrace exited with {status}:\n{stderr}"
    );
    Run { stderr, lines }
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn inside_ip_netns_exec_host_is_pid_1s_namespace() {
    require_privileged("inside_ip_netns_exec_host_is_pid_1s_namespace");
    let _ns = Namespaces::make();
    let port = test_port(731);
    let expected = hosts_defaults();

    let from_host = traced(None, port);
    let inside = traced(Some(RUN_NS), port);

    // Defaults and attachment: the host's interfaces, not the test namespace's bridge and
    // default route.
    assert_eq!(from_host.watched(), expected, "{}", from_host.stderr);
    assert_eq!(inside.watched(), expected, "{}", inside.stderr);
    // Said once at start, and only where it is so.
    assert!(
        inside.stderr.contains("not the host's") && inside.stderr.contains("PID 1's"),
        "{}",
        inside.stderr
    );
    assert!(
        !from_host.stderr.contains("not the host's"),
        "{}",
        from_host.stderr
    );
    // Names: the same namespaces, named the same, from either place.
    let named = from_host.drops_to(port);
    let names: Vec<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        names.contains(&"host") && names.contains(&NAMED_NS),
        "{named:?}\n{}",
        from_host.stderr
    );
    assert_eq!(inside.drops_to(port), named, "{}", inside.stderr);
}

/// `capture` inside another namespace records the host's sysctls, not its own: the test
/// namespace's `tcp_timestamps` and `tcp_syncookies` are set to what the host's are not.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn capture_inside_ip_netns_exec_records_the_hosts_sysctls() {
    require_privileged("capture_inside_ip_netns_exec_records_the_hosts_sysctls");
    const NS: &str = "sthostC";
    struct Gone;
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", NS]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", NS])
        .stderr(Stdio::null())
        .status();
    assert!(Command::new("ip")
        .args(["netns", "add", NS])
        .status()
        .unwrap()
        .success());
    let _gone = Gone;
    let keys = ["net.ipv4.tcp_timestamps", "net.ipv4.tcp_syncookies"];
    let read = |key: &str| {
        std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
            .unwrap()
            .trim()
            .to_owned()
    };
    let host: Vec<String> = keys.iter().map(|k| read(k)).collect();
    for (k, v) in keys.iter().zip(&host) {
        let other = if v == "0" { "1" } else { "0" };
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                NS,
                "sysctl",
                "-qw",
                &format!("{k}={other}"),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot set {k} in {NS}");
    }
    let dir = std::env::temp_dir().join(format!("swarmtrace-hostns-cap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new("ip")
        .args(["netns", "exec", NS])
        .arg(binary())
        .args(["capture", "--duration", "2s", "--iface", "lo", "-o"])
        .arg(&dir)
        .output()
        .unwrap();
    let system = std::fs::read_to_string(dir.join("system.json"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "capture failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let system: Value = serde_json::from_str(&system.unwrap()).unwrap();
    for (k, v) in keys.iter().zip(&host) {
        assert_eq!(
            system["sysctls"][k].as_str(),
            Some(v.as_str()),
            "{k}: the bundle has {}, the host {v}",
            system["sysctls"][k]
        );
    }
}
