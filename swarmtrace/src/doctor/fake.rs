//! A host as the tests want it: a healthy machine without Docker, or a healthy Swarm manager,
//! then changed one fact at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::*;
use crate::docker::{parse_networks, parse_services, DockerInfo};
use crate::kernel::routes::Route;
use crate::kernel::tracefs::Tracefs;
use crate::net::{parse_cidr, Cidr};

pub(crate) fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub(crate) fn cidr(s: &str) -> Cidr {
    parse_cidr(s).unwrap()
}

pub(crate) fn iface(netns: &str, name: &str, c: &str, bridge: bool) -> Iface {
    Iface {
        netns: netns.to_owned(),
        name: name.to_owned(),
        cidr: cidr(c),
        bridge,
    }
}

pub(crate) fn route(dest: &str, via: Option<&str>, dev: &str) -> Route {
    Route {
        kind: "unicast".to_owned(),
        dest: if dest == "default" {
            cidr("0.0.0.0/0")
        } else {
            cidr(dest)
        },
        via: via.map(|v| v.parse().unwrap()),
        dev: Some(dev.to_owned()),
    }
}

/// The host, as tests want it.
#[derive(Clone)]
pub(crate) struct Fake {
    pub(crate) sysctls: BTreeMap<String, String>,
    pub(crate) scope: Scope,
    pub(crate) ifaces: Vec<Iface>,
    pub(crate) routes: Vec<Route>,
    pub(crate) rules: Vec<Ruleset>,
    /// `nft -j list ruleset`: None, no nft installed.
    pub(crate) nft: Option<Result<String, String>>,
    pub(crate) overlay_links: Vec<OverlayLink>,
    /// Interface -> MTU.
    pub(crate) mtus: BTreeMap<String, u32>,
    pub(crate) mangle: Option<String>,
    pub(crate) conntrack: Vec<ConntrackFill>,
    pub(crate) docker: DockerApi,
    pub(crate) data_path_port: (u16, String),
    pub(crate) kernel: KernelView,
}

impl HostView for Fake {
    fn sysctl(&self, name: &str) -> Option<String> {
        self.sysctls.get(name).cloned()
    }
    fn sysctl_dir(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.");
        let set: BTreeSet<String> = self
            .sysctls
            .keys()
            .filter_map(|k| {
                Some(
                    k.strip_prefix(&prefix)?
                        .split('.')
                        .next()?
                        .replace('/', "."),
                )
            })
            .collect();
        set.into_iter().collect()
    }
    fn scope(&self) -> Scope {
        self.scope.clone()
    }
    fn interfaces(&self) -> Vec<Iface> {
        self.ifaces.clone()
    }
    fn routes(&self) -> Vec<Route> {
        self.routes.clone()
    }
    fn iptables_save(&self) -> Vec<Ruleset> {
        self.rules.clone()
    }
    fn nft_ruleset(&self) -> Option<Result<String, String>> {
        self.nft.clone()
    }
    fn overlay_links(&self) -> Vec<OverlayLink> {
        self.overlay_links.clone()
    }
    fn link_mtu(&self, name: &str) -> Option<u32> {
        self.mtus.get(name).copied()
    }
    fn ingress_sbox_mangle(&self) -> Option<String> {
        self.mangle.clone()
    }
    fn conntrack(&self) -> Vec<ConntrackFill> {
        self.conntrack.clone()
    }
    fn docker(&self) -> DockerApi {
        self.docker.clone()
    }
    fn data_path_port(&self) -> (u16, String) {
        self.data_path_port.clone()
    }
    fn kernel(&self) -> KernelView {
        self.kernel.clone()
    }
}

impl Fake {
    /// A healthy machine without Docker, Linux 6.18.
    pub(crate) fn plain() -> Self {
        let sysctls = [
            ("net.ipv4.tcp_timestamps", "1"),
            ("net.ipv4.tcp_tw_reuse", "2"),
            ("net.ipv4.tcp_syncookies", "1"),
            ("net.core.somaxconn", "4096"),
            ("net.ipv4.tcp_max_syn_backlog", "2048"),
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv4.conf.lo.rp_filter", "0"),
            ("net.ipv4.conf.eth0.rp_filter", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            sysctls,
            scope: Scope {
                here: "host".to_owned(),
                initial: Some(true),
                root: true,
                docker_namespaces: vec![],
                note: None,
            },
            ifaces: vec![iface("host", "eth0", "192.168.1.10/24", false)],
            routes: vec![
                route("default", Some("192.168.1.1"), "eth0"),
                route("192.168.1.0/24", None, "eth0"),
            ],
            rules: vec![Ruleset {
                backend: "nft".to_owned(),
                text: Ok(String::new()),
            }],
            nft: None,
            overlay_links: Vec::new(),
            mtus: [("eth0".to_owned(), 1500)].into(),
            mangle: None,
            conntrack: vec![ConntrackFill {
                netns: "host".to_owned(),
                count: 10,
                max: 262144,
            }],
            docker: DockerApi::Absent,
            data_path_port: (4789, "the default".to_owned()),
            kernel: KernelView {
                release: Some("6.18.44-amd64".to_owned()),
                btf: true,
                tracefs: Tracefs::Mounted("/sys/kernel/tracing".into()),
                kfree_skb_format: Some(fixture("linux-6.18/kfree_skb.format")),
                btf_drop_reasons: None,
            },
        }
    }

    /// A healthy Swarm manager publishing 8080 (web_app) and 443 (proxy) through the mesh.
    pub(crate) fn swarm() -> Self {
        let mut h = Self::plain();
        h.set("net.ipv4.ip_forward", "1");
        h.set("net.bridge.bridge-nf-call-iptables", "1");
        h.set("net.ipv4.conf.docker0.rp_filter", "0");
        h.set("net.ipv4.conf.docker_gwbridge.rp_filter", "0");
        h.scope.docker_namespaces = vec![
            "ingress_sbox".into(),
            "1-qz3f5l0x2m".into(),
            "lb_qz3f5l0x2".into(),
        ];
        h.ifaces.extend([
            iface("host", "docker0", "172.17.0.1/16", true),
            iface("host", "docker_gwbridge", "172.18.0.1/16", true),
            iface("host", "veth1a2b3c", "fe80::1/64", false),
            iface("ingress_sbox", "eth0", "10.0.0.2/24", false),
            iface("ingress_sbox", "eth0", "10.0.0.5/32", false),
            iface("ingress_sbox", "eth1", "172.18.0.2/16", false),
            iface("1-qz3f5l0x2m", "br0", "10.0.0.1/24", false),
            iface("lb_qz3f5l0x2", "eth0", "10.0.0.3/24", false),
        ]);
        h.routes.extend([
            route("172.17.0.0/16", None, "docker0"),
            route("172.18.0.0/16", None, "docker_gwbridge"),
            route("fe80::/64", None, "eth0"),
        ]);
        h.rules = vec![Ruleset {
            backend: "nft".to_owned(),
            text: Ok(fixture("doctor/swarm-node.iptables-save")),
        }];
        h.mangle = Some(fixture("doctor/ingress_sbox.mangle"));
        h.overlay_links = vec![OverlayLink {
            netns: "1-qz3f5l0x2m".into(),
            link: crate::kernel::rtnl::VxlanLink {
                name: "vx-001001-qz3f5".into(),
                port: 4789,
                mtu: Some(1450),
            },
        }];
        h.conntrack.push(ConntrackFill {
            netns: "ingress_sbox".into(),
            count: 1000,
            max: 262144,
        });
        let networks =
            parse_networks(&serde_json::from_str(&fixture("doctor/networks.json")).unwrap());
        let published =
            parse_services(&serde_json::from_str(&fixture("doctor/services.json")).unwrap());
        h.docker = DockerApi::Available(DockerInfo {
            networks,
            swarm: Some("active".into()),
            node_addr: None,
            published: Ok(published),
        });
        h
    }

    pub(crate) fn set(&mut self, k: &str, v: &str) {
        self.sysctls.insert(k.to_owned(), v.to_owned());
    }

    pub(crate) fn unset(&mut self, k: &str) {
        self.sysctls.remove(k);
    }

    pub(crate) fn run(&self, clients: &[&str]) -> Report {
        check(
            self,
            &DoctorArgs {
                client_cidr: clients.iter().map(|c| cidr(c)).collect(),
                json: false,
            },
        )
    }

    pub(crate) fn replace_rules(&mut self, from: &str, to: &str) {
        let t = self.rules[0].text.as_ref().unwrap().replace(from, to);
        assert_ne!(
            &t,
            self.rules[0].text.as_ref().unwrap(),
            "{from:?} not in the rules"
        );
        self.rules[0].text = Ok(t);
    }
}

pub(crate) fn worst(r: &Report, id: &str) -> Severity {
    r.worst(id)
        .unwrap_or_else(|| panic!("no finding {id}:\n{}", r.to_text()))
}

pub(crate) fn problems(r: &Report) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
        .map(|f| format!("{} {:?}: {}", f.id, f.severity, f.title))
        .collect()
}
