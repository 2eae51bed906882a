//! Docker names against a real dockerd (Debian's docker.io): a drop inside a container's
//! namespace is named after the container. Needs root and dockerd (scripts/setup.sh installs
//! it); the test starts its own daemon when none runs, without touching iptables or
//! ip_forward, and removes everything it made.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use swarmtrace::lab::traffic;
use swarmtrace_tests::{require_privileged, test_port, Tracer};

const DOCKER: &str = "/usr/bin/docker";

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new(DOCKER)
        .args(args)
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A dockerd this test started (stopped and cleaned on drop), or none if one was running.
struct Daemon {
    child: Option<Child>,
    root: PathBuf,
}

impl Daemon {
    fn start() -> Self {
        let root = std::env::temp_dir().join(format!("swarmtrace-dockerd-{}", std::process::id()));
        if docker(&["version", "--format", "{{.Server.Version}}"]).is_ok() {
            return Self { child: None, root };
        }
        std::fs::create_dir_all(&root).unwrap();
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new("/usr/sbin/dockerd")
            .args(["--data-root", root.join("data").to_str().unwrap()])
            .args(["--pidfile", root.join("dockerd.pid").to_str().unwrap()])
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "-H",
                "unix:///var/run/docker.sock",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        let d = Self {
            child: Some(child),
            root,
        };
        let start = Instant::now();
        while docker(&["version"]).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "dockerd did not start: {}",
                std::fs::read_to_string(d.root.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
            let _ = Command::new("ip").args(["link", "del", "docker0"]).output();
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A tiny image from Debian's busybox-static (no registry is reachable).
fn import_busybox(tag: &str) {
    let dir = std::env::temp_dir().join(format!("swarmtrace-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static");
    for tool in ["sh", "sleep", "nc"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
    let mut tar = Command::new("tar")
        .args(["-C", dir.to_str().unwrap(), "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let st = Command::new(DOCKER)
        .args(["import", "-", tag])
        .stdin(tar.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(tar.wait().unwrap().success(), "tar");
    assert!(st.success(), "docker import");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn drops_in_a_container_are_named_after_it() {
    require_privileged("drops_in_a_container_are_named_after_it");
    assert!(
        std::path::Path::new("/usr/sbin/dockerd").exists(),
        "dockerd is missing (Debian's docker.io; scripts/setup.sh installs it)"
    );
    let _daemon = Daemon::start();
    let tag = format!("swarmtrace-test/busybox:{}", std::process::id());
    import_busybox(&tag);
    let name = format!("st-web-{}", std::process::id());
    let id = docker(&["run", "-d", "--name", &name, &tag, "sleep", "120"]).expect("docker run");
    let cleanup = || {
        let _ = docker(&["rm", "-f", &name]);
        let _ = docker(&["rmi", "-f", &tag]);
    };
    let ip = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &id]).unwrap();
    let port = test_port(11);
    let result = std::panic::catch_unwind(|| {
        let t = Tracer::start(&["--port", &port.to_string()]).unwrap();
        let to = format!("{ip}:{port}").parse().unwrap();
        let (local, outcome) =
            traffic::connect("0.0.0.0:0".parse().unwrap(), to, Duration::from_secs(3));
        assert_eq!(outcome, traffic::Outcome::Refused, "{local} -> {to}");
        let mut seen = Vec::new();
        // The kernel picked the source address; the port is ours.
        let from_us = |v: &Value| {
            v["type"] == "drop"
                && v["src"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!(":{}", local.port())))
        };
        let got = t.wait_for(&mut seen, Duration::from_secs(5), from_us);
        let out = t.stop(seen).unwrap();
        assert!(got, "no drop from port {}: {out:?}", local.port());
        let d = out.iter().find(|v| from_us(v)).unwrap();
        let ns = d["netns_name"].as_str().unwrap_or("");
        assert!(
            ns.starts_with(&format!("container {name} [")),
            "not named after the container: {d}"
        );
        assert_eq!(d["reason"], "NO_SOCKET", "{d}");
        // What a capture bundle keeps of Docker (system.json).
        let facts =
            swarmtrace::docker::facts(std::path::Path::new("/var/run/docker.sock")).unwrap();
        let nets = facts["networks"].as_array().expect("networks");
        assert!(nets.iter().any(|n| n["Name"] == "bridge"), "{facts}");
        assert!(
            facts["containers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["Names"][0] == format!("/{name}")),
            "{facts}"
        );
        let summary = out.last().unwrap();
        let confirm = summary["verdicts"][0]["confirm"].as_str().unwrap();
        assert!(
            confirm.contains("nsenter --net=/var/run/docker/netns/"),
            "{confirm}"
        );
    });
    cleanup();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
