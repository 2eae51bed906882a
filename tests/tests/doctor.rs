//! Privileged end-to-end tests of `swarmtrace doctor`: problems planted in a network namespace
//! this test creates (and removes), found by the real binary run inside it with
//! `ip netns exec NS swarmtrace doctor --json`. Run as root (`sudo cargo xtask test`); skipped
//! otherwise. Each test uses its own namespaces, so they run in parallel.

use std::process::Command;

use serde_json::Value;
use swarmtrace::lab::mesh::{MeshLab, SBOX_GW_IP, TASK_PORT};
use swarmtrace::lab::{addr, Netns};
use swarmtrace_tests::{binary, ns_name, require_privileged, DockerDir};

/// The client network of the overlap: inside docker_gwbridge's 172.18.0.0/16.
const CLIENT: &str = "172.18.5.0/24";

struct Doctor {
    code: i32,
    out: Value,
}

impl Doctor {
    /// Runs `swarmtrace doctor --json ARGS` inside namespace `ns`.
    fn run(ns: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(binary());
        Self::of(cmd, args)
    }

    /// Runs `swarmtrace doctor --json ARGS` in the host's namespace (where doctor also reads
    /// Docker's namespaces).
    fn run_here(args: &[&str]) -> Self {
        Self::of(Command::new(binary()), args)
    }

    fn of(mut cmd: Command, args: &[&str]) -> Self {
        let out = cmd
            .args(["doctor", "--json"])
            .args(args)
            .output()
            .expect("cannot run swarmtrace doctor");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        let out: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("doctor's output is not one JSON object ({e}), exit {code}:\n{stdout}\nstderr:\n{stderr}")
        });
        assert_eq!(out["type"], "doctor", "{out:#}");
        Self { code, out }
    }

    fn findings(&self) -> &Vec<Value> {
        self.out["findings"].as_array().expect("findings")
    }

    /// The findings with `id`; at least one must exist.
    fn by_id(&self, id: &str) -> Vec<&Value> {
        let v: Vec<&Value> = self.findings().iter().filter(|f| f["id"] == id).collect();
        assert!(!v.is_empty(), "no finding {id} in {:#}", self.out);
        v
    }

    /// The worst severity of the findings with `id`.
    fn worst(&self, id: &str) -> &'static str {
        let rank = |s: &str| match s {
            "ok" => 0,
            "info" => 1,
            "warning" => 2,
            "serious" => 3,
            other => panic!("unknown severity {other}"),
        };
        let w = self
            .by_id(id)
            .iter()
            .map(|f| rank(f["severity"].as_str().expect("severity")))
            .max()
            .unwrap();
        ["ok", "info", "warning", "serious"][w]
    }

    fn serious(&self) -> u64 {
        let n = self.out["serious"].as_u64().expect("serious");
        let counted = self
            .findings()
            .iter()
            .filter(|f| f["severity"] == "serious")
            .count() as u64;
        assert_eq!(n, counted, "serious count disagrees with the findings");
        n
    }
}

/// A warning among `findings` whose title holds `title` and whose detail holds `detail`.
fn quotes(findings: &[&Value], title: &str, detail: &str) -> bool {
    let has = |f: &Value, k: &str, want: &str| f[k].as_str().is_some_and(|t| t.contains(want));
    findings
        .iter()
        .any(|f| f["severity"] == "warning" && has(f, "title", title) && has(f, "detail", detail))
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn doctor_finds_an_overlap_and_sysctl_problems_planted_in_a_namespace() {
    require_privileged("doctor_finds_an_overlap_and_sysctl_problems_planted_in_a_namespace");
    let ns = Netns::create(&ns_name("dbad")).expect("namespace");
    ns.exec(&["ip", "link", "add", "docker_gwbridge", "type", "bridge"])
        .unwrap();
    addr(&ns, "docker_gwbridge", "172.18.0.1/16").unwrap();
    ns.exec(&["ip", "link", "set", "docker_gwbridge", "up"])
        .unwrap();
    ns.sysctl("net.ipv4.conf.all.rp_filter", "1").unwrap();
    ns.sysctl("net.ipv4.tcp_syncookies", "0").unwrap();

    let d = Doctor::run(ns.name(), &["--client-cidr", CLIENT]);
    assert_eq!(d.code, 1, "serious findings must exit 1: {:#}", d.out);
    assert!(d.serious() >= 1);

    let overlap = d.by_id("client-overlap");
    assert_eq!(d.worst("client-overlap"), "serious", "{overlap:#?}");
    let title = overlap[0]["title"].as_str().unwrap();
    assert!(
        title.contains(CLIENT)
            && title.contains("172.18.0.0/16")
            && title.contains("docker_gwbridge"),
        "{title}"
    );
    assert!(overlap[0]["fix"].is_string());

    assert_eq!(
        d.worst("rp-filter"),
        "warning",
        "{:#?}",
        d.by_id("rp-filter")
    );
    let rp = d.by_id("rp-filter")[0]["title"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(rp.contains("docker_gwbridge"), "{rp}");
    assert_eq!(d.worst("tcp-syncookies"), "warning");
    // A Docker bridge in a namespace whose forwarding is off (the default in a new one).
    assert_eq!(d.worst("ip-forward"), "serious");
    assert_eq!(d.worst("docker-subnets"), "info");
    assert!(d.by_id("scope")[0]["title"]
        .as_str()
        .unwrap()
        .contains(ns.name()));
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn doctor_is_clean_in_a_clean_namespace() {
    require_privileged("doctor_is_clean_in_a_clean_namespace");
    let ns = Netns::create(&ns_name("dok")).expect("namespace");
    let d = Doctor::run(ns.name(), &["--client-cidr", CLIENT]);
    assert_eq!(d.code, 0, "{:#}", d.out);
    assert_eq!(d.serious(), 0);
    for id in [
        "client-overlap",
        "rp-filter",
        "tcp-syncookies",
        "ip-forward",
        "tcp-tw-recycle",
    ] {
        assert_eq!(d.worst(id), "ok", "{id}: {:#?}", d.by_id(id));
    }
    assert_eq!(d.by_id("docker")[0]["title"], "no Docker here");
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn doctor_checks_the_routing_mesh_rules_of_the_lab() {
    require_privileged("doctor_checks_the_routing_mesh_rules_of_the_lab");
    let lab = MeshLab::build(&ns_name("dmesh")).expect("cannot build the mesh lab");
    let host = lab.host().name().to_owned();

    // Healthy: the lab's DOCKER-INGRESS DNAT (10.10.0.1:8080 -> 172.18.0.2:80) is found from
    // the rules themselves (no Docker API), and nothing is serious.
    let d = Doctor::run(&host, &[]);
    assert_eq!(d.code, 0, "{:#}", d.out);
    let dnat = d.by_id("ingress-dnat");
    let want = format!("DNAT to {SBOX_GW_IP}:{TASK_PORT}");
    assert!(
        dnat.iter().any(|f| f["severity"] == "ok"
            && f["title"].as_str().unwrap().contains("8080/tcp")
            && f["title"].as_str().unwrap().contains(&want)),
        "{dnat:#?}"
    );
    assert!(d.findings().iter().all(|f| f["id"] != "ingress-jump"));
    assert!(d.by_id("docker")[0]["title"]
        .as_str()
        .unwrap()
        .contains("Swarm routing mesh"));

    assert_eq!(
        d.worst("swarm-ports"),
        "ok",
        "{:#?}",
        d.by_id("swarm-ports")
    );

    // A host firewall that drops the overlay's VXLAN (the default port here: no Docker says
    // another): named, with the rule, as a warning.
    lab.host()
        .exec(&[
            "iptables", "-I", "INPUT", "-p", "udp", "--dport", "4789", "-j", "DROP",
        ])
        .unwrap();
    let d = Doctor::run(&host, &[]);
    let ports = d.by_id("swarm-ports");
    assert_eq!(d.worst("swarm-ports"), "warning", "{ports:#?}");
    assert!(
        quotes(
            &ports,
            "a rule of INPUT drops UDP 4789",
            "--dport 4789 -j DROP"
        ),
        "{ports:#?}"
    );
    // iptables-nft's rule is read once (from iptables-save), not again as a native table.
    assert!(
        ports
            .iter()
            .all(|f| !f["detail"].as_str().unwrap().contains("nft ip filter")),
        "{ports:#?}"
    );
    lab.host()
        .exec(&[
            "iptables", "-D", "INPUT", "-p", "udp", "--dport", "4789", "-j", "DROP",
        ])
        .unwrap();

    // The same drop in a native nftables table (firewalld's backend, nftables.conf), which
    // iptables-save does not show.
    let nft = |script: &str| {
        lab.host().exec(&["nft", script]).unwrap();
    };
    nft("add table inet stfw");
    nft("add chain inet stfw input { type filter hook input priority 10; policy accept; }");
    nft("add rule inet stfw input udp dport 4789 drop");
    let d = Doctor::run(&host, &[]);
    let ports = d.by_id("swarm-ports");
    assert!(
        quotes(
            &ports,
            "a rule of INPUT drops UDP 4789",
            "nft inet stfw input handle 2: udp dport 4789 drop"
        ),
        "{ports:#?}"
    );
    // As firewalld ends its input chain: a reject for what no rule accepted. 4789 accepted by
    // name is fine; the gossip port, named nowhere, is refused.
    nft("flush chain inet stfw input");
    nft("add rule inet stfw input udp dport 4789 accept");
    nft("add rule inet stfw input reject with icmpx admin-prohibited");
    let d = Doctor::run(&host, &[]);
    let ports = d.by_id("swarm-ports");
    let titles: Vec<&str> = ports
        .iter()
        .filter(|f| f["severity"] == "warning")
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "INPUT drops what it does not accept and no rule names UDP 7946 (the nodes' gossip)",
            "INPUT drops what it does not accept and no rule names TCP 7946 (the nodes' gossip)"
        ],
        "{ports:#?}"
    );
    nft("delete table inet stfw");

    // Flush the PREROUTING jump, as a firewall reload does: the DNAT is never reached.
    lab.host()
        .exec(&[
            "iptables",
            "-t",
            "nat",
            "-D",
            "PREROUTING",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "DOCKER-INGRESS",
        ])
        .unwrap();
    let d = Doctor::run(&host, &[]);
    assert_eq!(d.code, 1, "{:#}", d.out);
    assert_eq!(d.worst("ingress-jump"), "serious");
    drop(lab);
}

/// An overlay's VXLAN device one byte too large for the underlay (the host's IPv4 default
/// route's interface, as doctor picks it): named, with the MTU that fits.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn doctor_compares_the_overlays_mtu_with_the_underlays() {
    require_privileged("doctor_compares_the_overlays_mtu_with_the_underlays");
    let route = swarmtrace::lab::sh("ip", &["-4", "route", "show", "default"]).unwrap();
    let dev = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .map(str::to_owned);
    let mtu: Option<u32> = dev.as_ref().and_then(|d| {
        std::fs::read_to_string(format!("/sys/class/net/{d}/mtu"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let ns = Netns::create(&ns_name("dmtu")).expect("namespace");
    let vx_mtu = mtu.map_or(1450, |m| m - 49);
    ns.exec(&[
        "ip",
        "link",
        "add",
        "vx-stmtu",
        "mtu",
        &vx_mtu.to_string(),
        "type",
        "vxlan",
        "id",
        "4097",
        "dstport",
        "4789",
    ])
    .unwrap();
    let mut dir = DockerDir::open();
    let file = format!("7-{:010}", std::process::id());
    dir.file(ns.name(), &file);
    let d = Doctor::run_here(&[]);
    let found = d.by_id("overlay-mtu");
    match (dev, mtu) {
        (Some(dev), Some(mtu)) => {
            assert_eq!(d.worst("overlay-mtu"), "warning", "{found:#?}");
            let f = found.iter().find(|f| f["severity"] == "warning").unwrap();
            assert_eq!(
                f["title"],
                format!(
                    "the overlays' frames do not fit {dev}: VXLAN devices of MTU {vx_mtu} need {} bytes, {dev} has {mtu}",
                    mtu + 1
                ),
                "{found:#?}"
            );
            assert!(f["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("vx-stmtu in {file} (MTU {vx_mtu})")));
            assert!(f["fix"]
                .as_str()
                .unwrap()
                .contains(&format!("com.docker.network.driver.mtu={}", mtu - 50)));
        }
        // No IPv4 default route here: said, nothing compared.
        _ => assert_eq!(d.worst("overlay-mtu"), "info", "{found:#?}"),
    }
}
