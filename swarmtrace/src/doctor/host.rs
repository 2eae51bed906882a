//! The host as the checks see it: [`HostView`], and [`LiveHost`], which reads this machine
//! through `kernel/` and `docker`. The unit tests give the checks a fake one (`fake.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::docker::DockerApi;
use crate::kernel::btf::Btf;
use crate::kernel::hostns::HostNs;
use crate::kernel::netns::{self, NetnsLabel};
use crate::kernel::routes::Route;
use crate::kernel::tracefs::{self, Tracefs};
use crate::kernel::{self, namespaces, routes, run_tool, sysctl, Sources};
use crate::net::Cidr;

/// Where doctor runs and what else it could look into.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The namespace doctor runs in: `host`, or its name under /run/netns.
    pub here: String,
    /// Whether that is the initial namespace; `None` when it cannot be told (not root).
    pub initial: Option<bool>,
    pub root: bool,
    /// Docker's namespaces whose addresses, conntrack and rules were read too.
    pub docker_namespaces: Vec<String>,
    /// Why Docker's namespaces were not read, when they were not.
    pub note: Option<String>,
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// `host` (the namespace doctor runs in) or a Docker namespace's name.
    pub netns: String,
    pub name: String,
    /// The address with its prefix length, as configured (host bits set).
    pub cidr: Cidr,
    /// A bridge (Docker's bridges are: docker0, docker_gwbridge, br-*).
    pub bridge: bool,
}

/// The output of one iptables backend's `iptables-save`.
#[derive(Debug, Clone)]
pub struct Ruleset {
    /// `nft` or `legacy`.
    pub backend: String,
    /// The rules, or why they could not be read.
    pub text: Result<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackFill {
    pub netns: String,
    pub count: u64,
    pub max: u64,
}

#[derive(Debug, Clone)]
pub struct KernelView {
    /// /proc/sys/kernel/osrelease.
    pub release: Option<String>,
    /// /sys/kernel/btf/vmlinux exists.
    pub btf: bool,
    pub tracefs: Tracefs,
    /// The text of events/skb/kfree_skb/format, when readable.
    pub kfree_skb_format: Option<String>,
    /// `enum skb_drop_reason` names from BTF (without the prefix), when the format file could
    /// not be read.
    pub btf_drop_reasons: Option<Vec<String>>,
}

/// A VXLAN device of one of Docker's overlay namespaces.
#[derive(Debug, Clone)]
pub struct OverlayLink {
    pub netns: String,
    pub link: crate::kernel::rtnl::VxlanLink,
}

/// The host as the checks see it. [`LiveHost`] reads the machine; tests inject values.
pub trait HostView {
    /// A sysctl in the namespace doctor runs in, by its sysctl(8) name
    /// (`net.ipv4.conf.eth0.rp_filter`; a dot inside an interface name is written `/`).
    fn sysctl(&self, name: &str) -> Option<String>;
    /// The entries of a sysctl directory (`net.ipv4.conf` -> `all`, `default`, `lo`, ...).
    fn sysctl_dir(&self, name: &str) -> Vec<String>;
    fn scope(&self) -> Scope;
    /// Addresses of the namespace doctor runs in (netns `host`) and of Docker's namespaces;
    /// loopback excluded.
    fn interfaces(&self) -> Vec<Iface>;
    /// Routes of the main table of the namespace doctor runs in.
    fn routes(&self) -> Vec<Route>;
    /// `iptables-save` of each backend that is installed (empty: none is).
    fn iptables_save(&self) -> Vec<Ruleset>;
    /// `nft -j list ruleset` (native nftables rules, firewalld's among them): None when nft is
    /// not installed, why when it could not be read.
    fn nft_ruleset(&self) -> Option<Result<String, String>>;
    /// `iptables-save` inside `ingress_sbox` (its mangle table holds the IPVS marks), when
    /// that namespace was read.
    fn ingress_sbox_mangle(&self) -> Option<String>;
    /// nf_conntrack_count / nf_conntrack_max per namespace (empty: conntrack not loaded).
    fn conntrack(&self) -> Vec<ConntrackFill>;
    fn docker(&self) -> DockerApi;
    /// The swarm's data-path port (the overlays' VXLAN) and how it was learnt.
    fn data_path_port(&self) -> (u16, String);
    fn kernel(&self) -> KernelView;
    /// The VXLAN devices of Docker's overlay namespaces (the first
    /// [`namespaces::MAX_OVERLAYS_ASKED`] in name order), when they can be read.
    fn overlay_links(&self) -> Vec<OverlayLink>;
    /// The MTU of interface `name` in the namespace doctor runs in.
    fn link_mtu(&self, name: &str) -> Option<u32>;
}

/// Reads this machine: the namespace doctor runs in, and Docker's namespaces when it runs in
/// the initial one as root.
pub struct LiveHost {
    scope: Scope,
    walk: Vec<(String, PathBuf)>,
}

impl LiveHost {
    pub fn new() -> Self {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let host = HostNs::locate();
        let here = host.own.map(|i| format!("net:[{i}]"));
        // In a container with its own PID namespace, PID 1's namespace is the container's:
        // whether this is the machine's initial namespace cannot be told.
        let private_proc = host.proc_is_machines() == Some(false);
        let initial = if private_proc { None } else { host.is_own() };
        let name = if initial == Some(false) || private_proc {
            host.own
                .filter(|_| !private_proc)
                .and_then(|ino| netns::NetnsNames::live().name(ino))
                .unwrap_or_else(|| "this namespace".to_owned())
        } else {
            "host".to_owned()
        };
        let mut walk = Vec::new();
        let note = if !root {
            Some("entering them needs root".to_owned())
        } else if initial == Some(false) {
            Some(
                "doctor runs in another namespace than the host's; it checks only this one"
                    .to_owned(),
            )
        } else {
            let here_ino = here.clone();
            let mut inodes = BTreeSet::new();
            for (n, path) in namespaces::known() {
                if n == "host" {
                    continue;
                }
                let docker_dir = path.starts_with("/var/run/docker/netns")
                    || path.starts_with("/run/docker/netns");
                if !docker_dir && !matches!(NetnsLabel::of(&n), NetnsLabel::Docker(_)) {
                    continue;
                }
                let ino = netns::inode_of_file(&path).map(|i| format!("net:[{i}]"));
                if ino.is_some() && (ino == here_ino || !inodes.insert(ino.clone())) {
                    continue;
                }
                walk.push((n, path));
            }
            None
        };
        Self {
            scope: Scope {
                here: name,
                initial,
                root,
                docker_namespaces: walk.iter().map(|(n, _)| n.clone()).collect(),
                note,
            },
            walk,
        }
    }
}

impl Default for LiveHost {
    fn default() -> Self {
        Self::new()
    }
}

/// A ruleset is read up to this size (a kube-proxy host's runs to a few MiB); a larger one is
/// not judged on a part of it.
const MAX_RULESET: usize = 32 * 1024 * 1024;

/// `nft -j`'s ruleset is read up to this size: parsed whole into JSON values, which take
/// about 6 times the text (a 7 MB ruleset took 39 MB more at its peak), where iptables-save's
/// text is read line by line.
const MAX_NFT_JSON: usize = 8 * 1024 * 1024;

/// `tool`'s output (a ruleset dump), whole: an error when it is larger than `max` (a rule past
/// the cut could be the one that matters), None when the tool is not installed.
fn whole_ruleset(tool: &str, args: &[&str], max: usize) -> Option<Result<String, String>> {
    Some(
        kernel::tool::run_bounded(tool, args, max, kernel::tool::TIMEOUT)?.and_then(|o| {
            if o.truncated {
                Err(format!(
                    "{tool} printed more than {} MiB: not read",
                    max >> 20
                ))
            } else {
                Ok(o.text)
            }
        }),
    )
}

/// The installed iptables-save variants, by backend.
fn iptables_save_all() -> Vec<Ruleset> {
    // A plain `iptables-save` is one backend or the other; its --version says which.
    let generic = run_tool("iptables-save", &["--version"])
        .and_then(Result::ok)
        .unwrap_or_default();
    [
        ("nft", "iptables-nft-save", "nf_tables"),
        ("legacy", "iptables-legacy-save", "legacy"),
    ]
    .into_iter()
    .filter_map(|(backend, own, marker)| {
        let text = whole_ruleset(own, &[], MAX_RULESET).or_else(|| {
            generic
                .contains(marker)
                .then(|| whole_ruleset("iptables-save", &[], MAX_RULESET))
                .flatten()
        })?;
        Some(Ruleset {
            backend: backend.to_owned(),
            text,
        })
    })
    .collect()
}

impl HostView for LiveHost {
    fn sysctl(&self, name: &str) -> Option<String> {
        sysctl::read(name)
    }

    fn sysctl_dir(&self, name: &str) -> Vec<String> {
        sysctl::entries(name)
    }

    fn scope(&self) -> Scope {
        self.scope.clone()
    }

    fn interfaces(&self) -> Vec<Iface> {
        let bridges = namespaces::bridges_here();
        let mut out: Vec<Iface> = namespaces::subnets_here()
            .into_iter()
            .map(|(name, cidr)| Iface {
                netns: "host".to_owned(),
                bridge: bridges.contains(&name),
                name,
                cidr,
            })
            .collect();
        for (ns, path) in &self.walk {
            for (name, cidr) in namespaces::subnets_in(path) {
                out.push(Iface {
                    netns: ns.clone(),
                    name,
                    cidr,
                    bridge: false,
                });
            }
        }
        out
    }

    fn routes(&self) -> Vec<Route> {
        routes::main_table()
    }

    fn iptables_save(&self) -> Vec<Ruleset> {
        iptables_save_all()
    }

    fn nft_ruleset(&self) -> Option<Result<String, String>> {
        whole_ruleset("nft", &["-j", "list", "ruleset"], MAX_NFT_JSON)
    }

    fn overlay_links(&self) -> Vec<OverlayLink> {
        // Docker's namespaces are read only where they are walked (the note says why not).
        if self.scope.note.is_some() {
            return Vec::new();
        }
        namespaces::overlay_vxlan_links()
            .into_iter()
            .map(|(netns, link)| OverlayLink { netns, link })
            .collect()
    }

    fn link_mtu(&self, name: &str) -> Option<u32> {
        kernel::rtnl::link_mtu(name).ok().flatten()
    }

    fn ingress_sbox_mangle(&self) -> Option<String> {
        let (_, path) = self.walk.iter().find(|(n, _)| n == "ingress_sbox")?;
        let sets = netns::within(path, iptables_save_all).ok()?;
        // Nothing readable: unknown, not "no marks".
        let texts: Vec<String> = sets.into_iter().filter_map(|r| r.text.ok()).collect();
        (!texts.is_empty()).then(|| texts.concat())
    }

    fn conntrack(&self) -> Vec<ConntrackFill> {
        let mut out = Vec::new();
        if let Some((count, max)) = sysctl::conntrack_fill() {
            out.push(ConntrackFill {
                netns: self.scope.here.clone(),
                count,
                max,
            });
        }
        for (ns, path) in &self.walk {
            if let Ok(Some((count, max))) = netns::within(path, sysctl::conntrack_fill) {
                out.push(ConntrackFill {
                    netns: ns.clone(),
                    count,
                    max,
                });
            }
        }
        out
    }

    fn docker(&self) -> DockerApi {
        crate::docker::overview(&crate::docker::socket_path())
    }

    fn data_path_port(&self) -> (u16, String) {
        use crate::trace::session::{vxlan_port, VxlanSource};
        match vxlan_port(None) {
            // The start line's advice names a flag doctor does not have.
            (p, VxlanSource::NotTold) => (
                p,
                "the default: Docker did not say and no overlay device here has one".to_owned(),
            ),
            (p, source) => (p, source.to_string()),
        }
    }

    fn kernel(&self) -> KernelView {
        let tracefs = Tracefs::live();
        let src = Sources::live(match &tracefs {
            Tracefs::Mounted(p) => p,
            _ => Path::new(tracefs::CANDIDATES[0]),
        });
        let kfree_skb_format = match &tracefs {
            Tracefs::Mounted(_) => std::fs::read_to_string(&src.kfree_skb_format).ok(),
            _ => None,
        };
        // BTF only when the tracepoint's own list cannot be read (it is the larger read).
        let btf_drop_reasons = if kfree_skb_format.is_none() && src.btf.exists() {
            Btf::from_file(&src.btf)
                .ok()
                .map(|b| kernel::btf_drop_reasons(&b).into_values().collect())
        } else {
            None
        };
        KernelView {
            release: kernel::release(&src.osrelease),
            btf: src.btf.exists(),
            tracefs,
            kfree_skb_format,
            btf_drop_reasons,
        }
    }
}
