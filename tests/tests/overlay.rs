//! overlay-unreachable seen whole on one host: a VXLAN overlay (UDP 4789) between two test
//! namespaces standing for two nodes, the second dropping UDP 4789 in its INPUT chain. The
//! SYN comes in on node A (watched), is DNATed into the overlay towards node B, and the VXLAN
//! datagram carrying it is dropped on B. swarmtrace must see the SYN leave inside VXLAN
//! towards B's address (the TC program looks inside the datagram) and the drop of the
//! datagram on B as a drop of that SYN (the drop program looks inside it too), and name the
//! overlay, confirmed, for the real client. Namespaces `st<pid>o[abc]`, removed at the end.
//! Run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use swarmtrace_tests::{binary, docker_api_stub, ns_name, require_privileged, DockerDir};

struct Nodes([String; 3]);

/// How node B fails the overlay.
#[derive(Clone, Copy)]
enum Fault {
    /// Its firewall drops UDP 4789.
    Blocked,
    /// It has no VXLAN endpoint (no socket on UDP 4789: the kernel frees the datagram as
    /// NO_SOCKET and answers port unreachable).
    NoEndpoint,
}

/// The two tests share the client's addresses: one at a time.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Nodes {
    /// The overlay on UDP `port` (4789, or a swarm's other data-path port).
    fn make(fault: Fault, port: u16) -> Self {
        let n = Self([ns_name("oa"), ns_name("ob"), ns_name("oc")]);
        n.remove();
        let [a, b, c] = &n.0;
        let script = format!(
            r#"set -e
for n in {a} {b} {c}; do ip netns add $n; ip -n $n link set lo up; done
ip link add c0 netns {c} type veth peer name c1 netns {a}
ip link add u0 netns {a} type veth peer name u1 netns {b}
ip -n {c} addr add 10.239.0.2/24 dev c0; ip -n {c} link set c0 up
ip -n {c} route add default via 10.239.0.1
ip -n {a} addr add 10.239.0.1/24 dev c1; ip -n {a} link set c1 up
ip -n {a} addr add 192.168.239.1/24 dev u0; ip -n {a} link set u0 up
ip -n {b} addr add 192.168.239.2/24 dev u1; ip -n {b} link set u1 up
ip -n {a} link add vx0 type vxlan id 42 local 192.168.239.1 remote 192.168.239.2 dstport {port} dev u0
ip -n {b} link add vx0 type vxlan id 42 local 192.168.239.2 remote 192.168.239.1 dstport {port} dev u1
ip -n {a} addr add 10.238.0.1/24 dev vx0; ip -n {a} link set vx0 up
ip -n {b} addr add 10.238.0.2/24 dev vx0; ip -n {b} link set vx0 up
{fault}
ip netns exec {a} sysctl -qw net.ipv4.ip_forward=1
ip netns exec {a} iptables -t nat -A PREROUTING -p tcp --dport 8081 -j DNAT --to-destination 10.238.0.2:80
ip netns exec {a} iptables -t nat -A POSTROUTING -o vx0 -j MASQUERADE
# As Docker programs its overlays: the peer's MAC known, no ARP over the (blocked) overlay.
mac=$(ip netns exec {b} cat /sys/class/net/vx0/address)
ip -n {a} neigh add 10.238.0.2 lladdr $mac dev vx0 nud permanent
"#,
            fault = match fault {
                Fault::Blocked =>
                    format!("ip netns exec {b} iptables -I INPUT -p udp --dport {port} -j DROP"),
                // Its MAC read below first; then the endpoint goes.
                Fault::NoEndpoint => String::new(),
            }
        );
        let script = match fault {
            Fault::Blocked => script,
            Fault::NoEndpoint => format!("{script}ip -n {b} link del vx0\n"),
        };
        let ok = Command::new("bash")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success();
        assert!(ok, "setting up the overlay namespaces failed");
        n
    }

    fn remove(&self) {
        for ns in &self.0 {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Traces node A (its client side and its underlay) for 6 s while the client tries once
/// (its SYN and a retransmission); with a bundle path, a capture runs beside the live run.
/// `args` go to both. The live run's NDJSON lines, and its stdout and stderr as text.
fn traced(nodes: &Nodes, bundle: Option<&Path>, args: &[&str]) -> (Vec<Value>, String) {
    traced_env(nodes, bundle, args, &[])
}

/// [`traced`] with `env` set for both runs.
fn traced_env(
    nodes: &Nodes,
    bundle: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Vec<Value>, String) {
    let [a, _, c] = &nodes.0;
    let mut shared = ["--iface", &format!("{a}:c1"), "--iface", &format!("{a}:u0")]
        .map(str::to_owned)
        .to_vec();
    shared.extend(args.iter().map(|a| a.to_string()));
    let capture = bundle.map(|bundle| {
        Command::new(binary())
            .args(["capture", "--duration", "6s", "--port", "8081", "-o"])
            .arg(bundle)
            .args(&shared)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    });
    let run = Command::new(binary())
        .args(["run", "--json", "--duration", "6s", "--port", "8081"])
        .args(&shared)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Attached within a few seconds; the client's SYN and one retransmission follow.
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("ip")
        .args(["netns", "exec", c, "bash", "-c"])
        .arg("timeout 2 bash -c 'exec 3<>/dev/tcp/10.239.0.1/8081' 2>/dev/null")
        .status();
    let out = run.wait_with_output().unwrap();
    if let Some(capture) = capture {
        let captured = capture.wait_with_output().unwrap();
        assert!(
            captured.status.success(),
            "{}",
            String::from_utf8_lossy(&captured.stderr)
        );
    }
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (lines, text)
}

fn kind<'a>(lines: &'a [Value], t: &'a str) -> impl Iterator<Item = &'a Value> {
    lines.iter().filter(move |v| v["type"] == t)
}

/// The drop of the client's SYN inside a VXLAN datagram from node A, on node B.
fn drop_on<'a>(lines: &'a [Value], b: &str, text: &str) -> &'a Value {
    let d = kind(lines, "drop")
        .find(|v| v["netns_name"] == b)
        .unwrap_or_else(|| panic!("no drop on node B: {text}"));
    assert_eq!(d["vxlan_from"], "192.168.239.1", "{d}");
    assert_eq!(d["packet"], "SYN", "{d}");
    assert_eq!(
        d["client"].as_str().map(|c| c.starts_with("10.239.0.2:")),
        Some(true),
        "{d}"
    );
    d
}

/// The overlay-unreachable verdict, confirmed, for the real client, from node A.
fn overlay_verdict<'a>(summary: &'a Value, text: &str) -> &'a Value {
    let v = summary["verdicts"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["cause"] == "overlay-unreachable"))
        .unwrap_or_else(|| panic!("no overlay-unreachable verdict: {text}"));
    assert_eq!(v["confidence"], "confirmed", "{v}");
    assert_eq!(v["clients"][0], "10.239.0.2", "{v}");
    assert!(
        v["explanation"].as_str().unwrap().contains("192.168.239.1"),
        "{v}"
    );
    v
}

/// A fresh directory for a test's bundle, and the bundle's path in it.
fn bundle_dir(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("swarmtrace-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("overlay.tar.gz");
    (dir, bundle)
}

/// The client's handshake, seen going into the overlay towards node B.
fn client_handshake<'a>(lines: &'a [Value], text: &str) -> &'a Value {
    let h = kind(lines, "handshake")
        .find(|v| {
            v["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("10.239.0.2:"))
        })
        .unwrap_or_else(|| panic!("no handshake of the client: {text}"));
    assert_eq!(h["overlay"]["to"], "192.168.239.2", "{h}");
    h
}

/// `swarmtrace report --format json` of the bundle in `dir` (removed after), and its text.
fn report(dir: &Path, bundle: &Path) -> (Value, String) {
    let report = Command::new(binary())
        .args(["report", "--format", "json"])
        .arg(bundle)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let text = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(
        report.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    (serde_json::from_str(&text).unwrap(), text)
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn a_vxlan_datagram_dropped_on_the_other_node_names_the_overlay() {
    require_privileged("overlay");
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::make(Fault::Blocked, 4789);
    let b = &nodes.0[1];
    // A capture of the same handshake beside the live run: its offline report must name what
    // the live run named.
    let (dir, bundle) = bundle_dir("overlay");
    let (lines, text) = traced(&nodes, Some(&bundle), &[]);
    let h = client_handshake(&lines, &text);
    assert_eq!(h["overlay"]["from"], "192.168.239.1", "{h}");
    drop_on(&lines, b, &text);
    let summary = kind(&lines, "summary").next().expect("a summary");
    let v = overlay_verdict(summary, &text);
    assert!(
        v["explanation"]
            .as_str()
            .unwrap()
            .contains("blocked here by a firewall rule"),
        "{v}"
    );
    assert!(
        v["confirm"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ip netns exec {b} iptables-save")),
        "{v}"
    );
    // The report of the capture: the same verdict, confirmed, for the same client, from the
    // same sending node.
    let (offline, text) = report(&dir, &bundle);
    overlay_verdict(&offline, &text);
}

/// Node B has no VXLAN endpoint (the ingress overlay not set up there): the datagram is freed
/// as NO_SOCKET, not by a firewall. The overlay lost the SYN; nothing to open.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn a_vxlan_datagram_with_no_endpoint_on_the_other_node_is_lost_not_blocked() {
    require_privileged("overlay");
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::make(Fault::NoEndpoint, 4789);
    let b = &nodes.0[1];
    let (lines, text) = traced(&nodes, None, &[]);
    let d = drop_on(&lines, b, &text);
    assert_eq!(d["reason"], "NO_SOCKET", "{d}");
    let summary = kind(&lines, "summary").next().expect("a summary");
    let v = overlay_verdict(summary, &text);
    let explanation = v["explanation"].as_str().unwrap();
    assert!(!explanation.contains("blocked"), "{v}");
    assert!(
        explanation.contains("NO_SOCKET, not by a firewall rule"),
        "{v}"
    );
    assert!(
        v["confirm"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ip netns exec {b} ss -ulpn 'sport = :4789'")),
        "{v}"
    );
}

/// A swarm made with `docker swarm init --data-path-port 7789` (as where VMware NSX holds
/// 4789): its overlay is VXLAN on UDP 7789. Told the port, swarmtrace looks inside those
/// datagrams as inside 4789's, in both programs, and its texts name that port, live and in
/// the capture's report.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn an_overlay_on_another_data_path_port_is_seen_when_told_the_port() {
    require_privileged("overlay");
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::make(Fault::Blocked, 7789);
    let b = &nodes.0[1];
    let (dir, bundle) = bundle_dir("overlay-port");
    let (lines, text) = traced(&nodes, Some(&bundle), &["--vxlan-port", "7789"]);
    assert!(text.contains("VXLAN on UDP 7789, --vxlan-port"), "{text}");
    client_handshake(&lines, &text);
    drop_on(&lines, b, &text);
    let summary = kind(&lines, "summary").next().expect("a summary");
    let v = overlay_verdict(summary, &text);
    for field in ["explanation", "confirm", "fix"] {
        let t = v[field].as_str().unwrap();
        assert!(!t.contains("4789"), "{field}: {t}");
    }
    assert!(
        v["explanation"].as_str().unwrap().contains("UDP 7789"),
        "{v}"
    );
    assert!(v["confirm"].as_str().unwrap().contains("-e 7789"), "{v}");
    let (offline, text) = report(&dir, &bundle);
    let v = overlay_verdict(&offline, &text);
    assert!(
        v["explanation"].as_str().unwrap().contains("UDP 7789"),
        "{v}"
    );
}

/// On a worker Docker does not tell the swarm's data-path port (only managers see the
/// cluster's settings): the node's overlay namespace, under Docker's directory, holds the
/// overlay's VXLAN device, whose port is the swarm's. Node A's namespace filed there as an
/// overlay's (`<epoch>-<id>`), a Docker that answers as a worker's, no `--vxlan-port`: the
/// 7789 overlay is seen as when told the port.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn on_a_worker_the_overlays_vxlan_device_gives_the_data_path_port() {
    require_privileged("overlay");
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = Nodes::make(Fault::Blocked, 7789);
    let [a, b, _] = &nodes.0;
    let mut dir = DockerDir::open();
    dir.file(a, &format!("9-{:010}", std::process::id()));
    let worker = r#"{"Swarm":{"LocalNodeState":"active","ControlAvailable":false,"Cluster":null}}"#;
    let sock = docker_api_stub("overlay-worker", vec![("GET /info", worker.to_owned())]);
    let host = format!("unix://{}", sock.display());
    let (lines, text) = traced_env(&nodes, None, &[], &[("DOCKER_HOST", &host)]);
    assert!(
        text.contains("VXLAN on UDP 7789, the port of this node's overlay VXLAN device"),
        "{text}"
    );
    client_handshake(&lines, &text);
    drop_on(&lines, b, &text);
    let summary = kind(&lines, "summary").next().expect("a summary");
    let v = overlay_verdict(summary, &text);
    assert!(
        v["explanation"].as_str().unwrap().contains("UDP 7789"),
        "{v}"
    );
}
