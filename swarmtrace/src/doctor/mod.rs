//! `swarmtrace doctor`: static checks of this host, without eBPF. Sysctls that make published
//! ports drop handshakes, Docker subnets that overlap the host's routes or the clients'
//! networks, Docker's routing-mesh rules, the conntrack table, and what `swarmtrace run` can
//! see on this kernel. Every check reads the host through [`HostView`], so the unit tests run
//! the same checks on injected values.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::cli::DoctorArgs;
use crate::docker::{api_message, docker_get};
pub use crate::kernel::routes::{parse_proc_route, Route};
use crate::kernel::tracefs::TracepointFormat;
use crate::net::{parse_cidr, Cidr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Serious,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Serious => "serious",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Severity::Ok => "[ok]",
            Severity::Info => "[info]",
            Severity::Warning => "[WARNING]",
            Severity::Serious => "[SERIOUS]",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    /// Stable identifier (`rp-filter`, `client-overlap`, ...); several findings may share one.
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    /// What it means here, for published ports behind NAT.
    pub detail: String,
    pub fix: Option<String>,
}

impl Finding {
    fn new(id: &'static str, severity: Severity, title: impl Into<String>) -> Self {
        Self {
            id,
            severity,
            title: title.into(),
            detail: String::new(),
            fix: None,
        }
    }

    fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }

    fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }

    /// The heading the text output files this finding under.
    pub fn group(&self) -> &'static str {
        group_of(self.id).1
    }
}

/// Every finding id, with its group (in output order).
const GROUPS: &[(&str, &[&str])] = &[
    ("scope", &["scope"]),
    (
        "sysctls",
        &[
            "tcp-tw-recycle",
            "tcp-timestamps",
            "tcp-tw-reuse",
            "tcp-syncookies",
            "somaxconn",
            "tcp-max-syn-backlog",
            "ip-forward",
            "bridge-nf-call-iptables",
            "rp-filter",
        ],
    ),
    (
        "subnets",
        &[
            "docker-subnets",
            "client-overlap",
            "route-overlap",
            "docker-overlap",
        ],
    ),
    (
        "Docker and the routing mesh",
        &[
            "docker",
            "docker-api",
            "iptables",
            "ingress-dnat",
            "ingress-jump",
            "ingress-forward",
            "ingress-sbox-mark",
            "iptables-backends",
        ],
    ),
    ("conntrack", &["conntrack"]),
    (
        "what `swarmtrace run` can see on this kernel",
        &[
            "kernel",
            "privileges",
            "btf",
            "tracefs",
            "ring-buffer",
            "drop-reasons",
            "tw-paws-reason",
            "tcx",
        ],
    ),
];

fn group_of(id: &str) -> (usize, &'static str) {
    GROUPS
        .iter()
        .enumerate()
        .find(|(_, (_, ids))| ids.contains(&id))
        .map_or((GROUPS.len(), "other"), |(i, (g, _))| (i, *g))
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    pub fn serious(&self) -> usize {
        self.count(Severity::Serious)
    }

    /// The findings with this id.
    pub fn by_id<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.id == id)
    }

    /// The worst severity among the findings with this id.
    pub fn worst(&self, id: &str) -> Option<Severity> {
        self.by_id(id).map(|f| f.severity).max()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "type": "doctor",
            "findings": self.findings.iter().map(|f| json!({
                "id": f.id,
                "severity": f.severity.as_str(),
                "title": f.title,
                "detail": f.detail,
                "fix": f.fix,
            })).collect::<Vec<_>>(),
            "serious": self.serious(),
        })
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut order: Vec<&Finding> = self.findings.iter().collect();
        // Stable: keeps each group's findings in check order.
        order.sort_by_key(|f| group_of(f.id).0);
        let mut group = "";
        for f in order {
            if f.group() != group {
                group = f.group();
                if !out.is_empty() {
                    out.push('\n');
                }
                let _ = writeln!(out, "{group}");
            }
            // The title's first line carries the tag in the indentation.
            let title = wrap(&f.title, 12, 100);
            let _ = write!(
                out,
                "  {:<10}{}",
                f.severity.tag(),
                &title[12.min(title.len())..]
            );
            if title.is_empty() {
                out.push('\n');
            }
            if !f.detail.is_empty() {
                out.push_str(&wrap(&f.detail, 12, 100));
            }
            if let Some(fix) = &f.fix {
                out.push_str(&wrap(&format!("fix: {fix}"), 12, 100));
            }
        }
        let _ = writeln!(
            out,
            "\n{} serious, {} warning(s), {} info, {} ok{}",
            self.serious(),
            self.count(Severity::Warning),
            self.count(Severity::Info),
            self.count(Severity::Ok),
            if self.serious() > 0 {
                ": fix the serious findings first (exit status 1)"
            } else {
                ""
            }
        );
        out
    }
}

/// Word-wraps `text` to `width` columns, every line indented by `indent`. Findings name
/// interfaces, namespaces and Docker's networks: each word is escaped for the terminal.
fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let pad = " ".repeat(indent);
    let mut line = String::new();
    for word in text.split_whitespace() {
        let word = crate::escape::terminal(word);
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            out.push_str(&pad);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        out.push_str(&pad);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What the checks read.

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerNetwork {
    pub name: String,
    pub driver: String,
    /// `local` (bridges) or `swarm` (overlays, ingress).
    pub scope: String,
    pub ingress: bool,
    pub subnets: Vec<Cidr>,
    /// The bridge device of a `bridge` network (Options com.docker.network.bridge.name).
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub service: String,
    pub port: u16,
    pub target: u16,
    pub protocol: String,
    /// `ingress` (the routing mesh) or `host`.
    pub mode: String,
}

#[derive(Debug, Clone)]
pub struct DockerInfo {
    pub networks: Vec<DockerNetwork>,
    /// Swarm.LocalNodeState: `active`, `inactive`, `pending`, ...
    pub swarm: Option<String>,
    /// Ports published by swarm services (only managers can list services).
    pub published: Result<Vec<PublishedPort>, String>,
}

#[derive(Debug, Clone)]
pub enum DockerApi {
    /// No socket.
    Absent,
    /// A socket that could not be used (permissions, daemon down, bad answer).
    Failed(String),
    Available(DockerInfo),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracefs {
    Mounted(PathBuf),
    /// The kernel has tracefs but it is not mounted (`swarmtrace run` mounts it).
    NotMounted,
    Unsupported,
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
    /// `iptables-save` inside `ingress_sbox` (its mangle table holds the IPVS marks), when
    /// that namespace was read.
    fn ingress_sbox_mangle(&self) -> Option<String>;
    /// nf_conntrack_count / nf_conntrack_max per namespace (empty: conntrack not loaded).
    fn conntrack(&self) -> Vec<ConntrackFill>;
    fn docker(&self) -> DockerApi;
    fn kernel(&self) -> KernelView;
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// Runs every check against `host`.
pub fn check(host: &dyn HostView, args: &DoctorArgs) -> Report {
    let scope = host.scope();
    let ifaces: Vec<Iface> = host
        .interfaces()
        .into_iter()
        .filter(|i| usable(&i.cidr))
        .collect();
    let routes = host.routes();
    let rulesets = host.iptables_save();
    let docker = host.docker();
    let info = match &docker {
        DockerApi::Available(i) => Some(i),
        _ => None,
    };
    let docker_rules = rulesets
        .iter()
        .any(|r| r.text.as_ref().is_ok_and(|t| t.contains(":DOCKER")));
    let facts = DockerFacts::new(&scope, &ifaces, &docker, info, docker_rules, &rulesets);

    let mut f = Vec::new();
    f.push(scope_finding(&scope));
    sysctls(host, &facts, &mut f);
    subnets(&ifaces, &routes, info, &args.client_cidr, &mut f);
    docker_checks(host, &facts, &ifaces, &rulesets, &docker, info, &mut f);
    conntrack(&host.conntrack(), &mut f);
    kernel(&host.kernel(), scope.root, &mut f);
    Report { findings: f }
}

/// What says Docker (and Swarm) is here.
struct DockerFacts {
    present: bool,
    swarm: bool,
    evidence: Vec<String>,
}

impl DockerFacts {
    fn new(
        scope: &Scope,
        ifaces: &[Iface],
        docker: &DockerApi,
        info: Option<&DockerInfo>,
        docker_rules: bool,
        rulesets: &[Ruleset],
    ) -> Self {
        let mut evidence = Vec::new();
        match docker {
            DockerApi::Available(_) => evidence.push("the Docker API answers".to_owned()),
            DockerApi::Failed(_) => evidence.push("a Docker API socket".to_owned()),
            DockerApi::Absent => {}
        }
        let bridges: BTreeSet<&str> = ifaces
            .iter()
            .filter(|i| i.netns == "host" && docker_bridge_name(&i.name))
            .map(|i| i.name.as_str())
            .collect();
        if !bridges.is_empty() {
            evidence.push(format!(
                "bridge(s) {}",
                bridges.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        if !scope.docker_namespaces.is_empty() {
            evidence.push(format!(
                "{} Docker namespace(s)",
                scope.docker_namespaces.len()
            ));
        }
        if docker_rules {
            evidence.push("DOCKER chains in iptables".to_owned());
        }
        let mut swarm = bridges.contains("docker_gwbridge")
            || scope.docker_namespaces.iter().any(|n| n == "ingress_sbox")
            || rulesets
                .iter()
                .any(|r| r.text.as_ref().is_ok_and(|t| t.contains(":DOCKER-INGRESS")));
        if let Some(i) = info {
            swarm |= i.swarm.as_deref() == Some("active") || i.networks.iter().any(|n| n.ingress);
        }
        Self {
            present: !evidence.is_empty(),
            swarm,
            evidence,
        }
    }
}

fn docker_bridge_name(name: &str) -> bool {
    name == "docker0" || name == "docker_gwbridge" || name.starts_with("br-")
}

fn scope_finding(s: &Scope) -> Finding {
    let who = if s.root {
        "as root"
    } else {
        "not as root: iptables, Docker's namespaces, tracefs and maybe the Docker API were not readable"
    };
    let initial = match s.initial {
        Some(true) => " (the initial namespace)",
        Some(false) => " (not the initial namespace)",
        None => "",
    };
    let mut d = format!(
        "Checked the network namespace `{}`{initial}, {who}.",
        s.here
    );
    if s.docker_namespaces.is_empty() {
        if let Some(n) = &s.note {
            d.push_str(&format!(" Docker's namespaces were not read: {n}."));
        } else {
            d.push_str(" No Docker namespace found.");
        }
    } else {
        d.push_str(&format!(
            " Also read Docker's namespaces: {}.",
            list(&s.docker_namespaces, 8)
        ));
    }
    let sev = if s.root { Severity::Ok } else { Severity::Info };
    let mut f = Finding::new("scope", sev, format!("namespace {}", s.here)).detail(d);
    if !s.root {
        f = f.fix("Run `sudo swarmtrace doctor` for the full check.");
    }
    f
}

fn list(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..max].join(", "), items.len() - max)
    }
}

fn num(host: &dyn HostView, name: &str) -> Option<i64> {
    host.sysctl(name)?.trim().parse().ok()
}

fn sysctls(host: &dyn HostView, docker: &DockerFacts, f: &mut Vec<Finding>) {
    // tcp_tw_recycle: the classic.
    f.push(match host.sysctl("net.ipv4.tcp_tw_recycle").map(|v| v.trim().to_owned()) {
        None => Finding::new(
            "tcp-tw-recycle",
            Severity::Ok,
            "net.ipv4.tcp_tw_recycle does not exist (removed in Linux 4.12)",
        )
        .detail("The classic cause of SYNs from clients behind NAT vanishing (per-address timestamp checks, TcpExt PAWSPassive) cannot happen on this kernel."),
        Some(v) if v == "0" => Finding::new(
            "tcp-tw-recycle",
            Severity::Ok,
            "net.ipv4.tcp_tw_recycle = 0",
        )
        .detail("Off, as it must be behind NAT."),
        Some(v) => Finding::new(
            "tcp-tw-recycle",
            Severity::Serious,
            format!("net.ipv4.tcp_tw_recycle = {v}: SYNs from clients behind NAT are dropped"),
        )
        .detail("With tcp_tw_recycle the kernel remembers the last TCP timestamp (TSval) of each peer address and silently drops a SYN that carries an older one (TcpExt PAWSPassive rises; no drop reason, no RST). Clients behind one NAT share an address but each has its own timestamp clock, so some of their SYNs get no SYN-ACK, at random. The routing mesh's SNAT makes every client one address for the task, so inside a task namespace it hits everyone.")
        .fix("sysctl -w net.ipv4.tcp_tw_recycle=0, and remove it from /etc/sysctl.conf and /etc/sysctl.d/*; set it in the task namespaces too if they inherited it. (Linux 4.12 removed the option because it breaks NAT.)"),
    });

    // tcp_timestamps: what PAWS compares.
    let ts = host
        .sysctl("net.ipv4.tcp_timestamps")
        .map(|v| v.trim().to_owned());
    f.push(match ts.as_deref() {
        Some("0") => Finding::new("tcp-timestamps", Severity::Info, "net.ipv4.tcp_timestamps = 0")
            .detail("Timestamps are off for connections accepted in this namespace: PAWS cannot drop SYNs here (a task namespace has its own value), but the kernel also loses protection against wrapped sequence numbers and its RTT samples."),
        Some(v) => Finding::new(
            "tcp-timestamps",
            Severity::Info,
            format!("net.ipv4.tcp_timestamps = {v} (on{})", if v == "2" { ", without random offsets" } else { "" }),
        )
        .detail("TCP timestamps are what PAWS compares. A SYN that reuses the address and port of a connection still in TIME_WAIT, with a TSval older than that connection's, is dropped without an answer (TCP_RFC7323_TW_PAWS on Linux 6.16+, TcpExt PAWSTimewait). Behind the routing mesh's SNAT many clients share few source addresses and ports, so such reuse happens; `swarmtrace run` shows it when it does. Leave timestamps on unless that is the diagnosis."),
        None => Finding::new("tcp-timestamps", Severity::Info, "net.ipv4.tcp_timestamps is not readable"),
    });

    // tcp_tw_reuse: outgoing connections only.
    if let Some(v) = host.sysctl("net.ipv4.tcp_tw_reuse") {
        let v = v.trim();
        let meaning = match v {
            "0" => "off",
            "1" => "on for all outgoing connections",
            "2" => "on for loopback only, the default",
            _ => "unknown value",
        };
        f.push(
            Finding::new("tcp-tw-reuse", Severity::Info, format!("net.ipv4.tcp_tw_reuse = {v} ({meaning})"))
                .detail("tcp_tw_reuse lets outgoing connections reuse ports held by TIME_WAIT sockets; it does nothing for connections to published ports (incoming), and it is not a fix for PAWS drops of incoming SYNs."),
        );
    }

    // tcp_syncookies.
    let cookies = num(host, "net.ipv4.tcp_syncookies");
    f.push(match cookies {
        Some(0) | None => Finding::new(
            "tcp-syncookies",
            Severity::Warning,
            if cookies.is_none() {
                "net.ipv4.tcp_syncookies does not exist: no SYN cookies (CONFIG_SYN_COOKIES off)".to_owned()
            } else {
                "net.ipv4.tcp_syncookies = 0: a full SYN queue drops SYNs silently".to_owned()
            },
        )
        .detail("Without SYN cookies, when a listener's SYN queue is full (a burst of clients, a SYN flood, a slow application) new SYNs are dropped without an answer and without a drop reason; only TcpExt ListenDrops and TCPReqQFullDrop rise. Clients of the published port see handshakes time out.")
        .fix("sysctl -w net.ipv4.tcp_syncookies=1 (the default) and persist it in /etc/sysctl.d/; a task namespace has its own value (docker service update --sysctl-add net.ipv4.tcp_syncookies=1 SERVICE)."),
        Some(2) => Finding::new("tcp-syncookies", Severity::Info, "net.ipv4.tcp_syncookies = 2 (cookies for every SYN)")
            .detail("Every SYN is answered with a cookie, even when the queue is not full: no SYN is dropped for lack of queue space."),
        Some(v) => Finding::new("tcp-syncookies", Severity::Ok, format!("net.ipv4.tcp_syncookies = {v}"))
            .detail("SYN cookies answer SYNs when a listener's SYN queue is full, instead of dropping them."),
    });

    // Backlogs.
    match num(host, "net.core.somaxconn") {
        Some(v) if v < 1024 => f.push(
            Finding::new("somaxconn", Severity::Warning, format!("net.core.somaxconn = {v} (< 1024)"))
                .detail(format!("Every listen() backlog in this namespace is capped at {v}: when the application accepts more slowly than connections arrive, the accept queue overflows and the kernel drops handshakes silently (TcpExt ListenOverflows, ListenDrops). Each task namespace has its own value (the default was 128 before Linux 5.4)."))
                .fix("sysctl -w net.core.somaxconn=4096 (here), and for a service: docker service update --sysctl-add net.core.somaxconn=4096 SERVICE; the application's own listen backlog must be raised too."),
        ),
        Some(v) => f.push(Finding::new("somaxconn", Severity::Ok, format!("net.core.somaxconn = {v}"))),
        None => f.push(Finding::new("somaxconn", Severity::Info, "net.core.somaxconn is not readable")),
    }
    match num(host, "net.ipv4.tcp_max_syn_backlog") {
        Some(v) if v < 1024 => {
            let sev = if matches!(cookies, Some(0) | None) {
                Severity::Warning
            } else {
                Severity::Info
            };
            f.push(
                Finding::new(
                    "tcp-max-syn-backlog",
                    sev,
                    format!("net.ipv4.tcp_max_syn_backlog = {v} (< 1024)"),
                )
                .detail(if sev == Severity::Warning {
                    format!("With SYN cookies off, the kernel drops SYNs from clients it has not talked to before once a listener's SYN queue is over 3/4 of {v}: a burst of new clients gets no SYN-ACK.")
                } else {
                    format!("Small, but SYN cookies are on: when a listener's SYN queue passes 3/4 of {v} the kernel answers with cookies instead of dropping.")
                })
                .fix("sysctl -w net.ipv4.tcp_max_syn_backlog=4096"),
            )
        }
        Some(v) => f.push(Finding::new(
            "tcp-max-syn-backlog",
            Severity::Ok,
            format!("net.ipv4.tcp_max_syn_backlog = {v}"),
        )),
        None => f.push(Finding::new(
            "tcp-max-syn-backlog",
            Severity::Info,
            "net.ipv4.tcp_max_syn_backlog is not readable",
        )),
    }

    // ip_forward.
    let fwd = num(host, "net.ipv4.ip_forward");
    f.push(match (fwd, docker.present) {
        (Some(0), true) => Finding::new(
            "ip-forward",
            Severity::Serious,
            "net.ipv4.ip_forward = 0 while Docker networks exist: published ports cannot work",
        )
        .detail("The routing mesh forwards each SYN from the interface it arrives on to docker_gwbridge (and a `-p` port to docker0 or a br-* bridge). With forwarding off the kernel drops it (no SYN-ACK). Docker turns forwarding on when it starts, so something reset it: a sysctl.d file applied later, a network manager, a firewall script.")
        .fix("sysctl -w net.ipv4.ip_forward=1, and find what sets it to 0: grep -r ip_forward /etc/sysctl.conf /etc/sysctl.d /usr/lib/sysctl.d"),
        (Some(0), false) => Finding::new("ip-forward", Severity::Ok, "net.ipv4.ip_forward = 0 (no Docker here; Docker turns it on)"),
        (Some(v), _) => Finding::new("ip-forward", Severity::Ok, format!("net.ipv4.ip_forward = {v}")),
        (None, _) => Finding::new("ip-forward", Severity::Info, "net.ipv4.ip_forward is not readable"),
    });

    // bridge-nf-call-iptables.
    let brnf = num(host, "net.bridge.bridge-nf-call-iptables");
    let brnf_detail = "Without it, packets switched between two ports of one bridge (container to container on docker0, a br-* network or docker_gwbridge, or a container reaching a published port of its own host through hairpin NAT) bypass iptables: the DNAT and MASQUERADE of published ports do not apply to them, and replies come back un-NATed, so the client drops or resets them.";
    let brnf_fix = "modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1; persist with /etc/modules-load.d/br_netfilter.conf and /etc/sysctl.d/ (Docker loads the module when it starts; something unloaded it or reset the sysctl).";
    f.push(match (brnf, docker.present) {
        (Some(1), _) => Finding::new("bridge-nf-call-iptables", Severity::Ok, "net.bridge.bridge-nf-call-iptables = 1"),
        (None, true) => Finding::new(
            "bridge-nf-call-iptables",
            Severity::Warning,
            "net.bridge.bridge-nf-call-iptables does not exist (br_netfilter not loaded) while Docker bridges exist",
        )
        .detail(brnf_detail)
        .fix(brnf_fix),
        (Some(v), true) => Finding::new(
            "bridge-nf-call-iptables",
            Severity::Warning,
            format!("net.bridge.bridge-nf-call-iptables = {v} while Docker bridges exist"),
        )
        .detail(brnf_detail)
        .fix(brnf_fix),
        (v, false) => Finding::new(
            "bridge-nf-call-iptables",
            Severity::Ok,
            match v {
                Some(v) => format!("net.bridge.bridge-nf-call-iptables = {v} (no Docker bridges here)"),
                None => "br_netfilter is not loaded (no Docker bridges here)".to_owned(),
            },
        ),
    });

    rp_filter(host, f);
}

/// `rp_filter` in force for each interface: max(conf.all, conf.IFACE).
fn rp_filter(host: &dyn HostView, f: &mut Vec<Finding>) {
    let all = num(host, "net.ipv4.conf.all.rp_filter");
    let default = num(host, "net.ipv4.conf.default.rp_filter");
    let mut strict = Vec::new();
    let mut loose = Vec::new();
    for iface in host.sysctl_dir("net.ipv4.conf") {
        if matches!(iface.as_str(), "all" | "default" | "lo") {
            continue;
        }
        let key = format!("net.ipv4.conf.{}.rp_filter", iface.replace('.', "/"));
        let Some(v) = num(host, &key) else { continue };
        match v.max(all.unwrap_or(0)) {
            1 => strict.push(iface),
            2 => loose.push(iface),
            _ => {}
        }
    }
    let explain = "Strict reverse-path filtering (rp_filter=1) drops a packet when the route back to its source leaves by another interface than the one it came in on (drop reason IP_RPFILTER, TcpExt IPReversePathFilter rises). Hosts with two uplinks, policy routing, clients reached through a VPN or a second NIC have such asymmetric routes; SYNs from those clients then get no SYN-ACK. The value in force on an interface is max(conf.all.rp_filter, conf.IFACE.rp_filter).";
    let fix = "Make the route back to the clients leave by the interface they come in on, or use loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.IFACE.rp_filter=2 (for the interfaces clients come in on), persisted in /etc/sysctl.d/.";
    let values = format!(
        "all = {}, default = {}",
        all.map_or("?".to_owned(), |v| v.to_string()),
        default.map_or("?".to_owned(), |v| v.to_string())
    );
    if !strict.is_empty() {
        f.push(
            Finding::new(
                "rp-filter",
                Severity::Warning,
                format!(
                    "strict rp_filter in force on {} ({values})",
                    list(&strict, 6)
                ),
            )
            .detail(explain)
            .fix(fix),
        );
    } else if default == Some(1) {
        f.push(
            Finding::new(
                "rp-filter",
                Severity::Info,
                format!("rp_filter: no interface is strict now, but new ones will be ({values})"),
            )
            .detail(format!("net.ipv4.conf.default.rp_filter = 1: interfaces created from now on (a re-created docker_gwbridge or bridge network) start strict. {explain}"))
            .fix(fix),
        );
    } else {
        let mode = if loose.is_empty() {
            "off"
        } else {
            "off or loose"
        };
        f.push(Finding::new(
            "rp-filter",
            Severity::Ok,
            format!("rp_filter {mode} on every interface ({values})"),
        ));
    }
}

/// Addresses that can overlap something meaningful: not loopback, link-local or multicast.
fn usable(c: &Cidr) -> bool {
    match c.addr {
        IpAddr::V4(a) => !(a.is_loopback() || a.is_link_local() || a.is_multicast()),
        IpAddr::V6(a) => {
            !(a.is_loopback() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// A subnet Docker (or another bridge) uses, and where.
#[derive(Debug, Clone)]
struct DockerNet {
    cidr: Cidr,
    /// `host:docker_gwbridge`, `ingress_sbox:eth1`, `network ingress`.
    place: String,
    /// A host bridge's device, whose own routes are not "host routes".
    dev: Option<String>,
    /// From an interface (not the API).
    from_iface: bool,
    /// Docker's own (not another bridge of the host, such as virbr0 or a VM bridge).
    docker: bool,
}

/// Docker's subnets: Docker's bridges in the host namespace (docker0, docker_gwbridge, br-*,
/// and those the API names), every subnet of Docker's namespaces and of the API's networks;
/// plus the host's other bridges, except an uplink bridge (one carrying a default route,
/// such as a VM host's br0), whose subnet is the LAN itself.
fn docker_nets(ifaces: &[Iface], routes: &[Route], info: Option<&DockerInfo>) -> Vec<DockerNet> {
    let api_bridges: BTreeSet<&str> = info
        .into_iter()
        .flat_map(|i| i.networks.iter().filter_map(|n| n.bridge.as_deref()))
        .collect();
    let uplink = |dev: &str| {
        routes
            .iter()
            .any(|r| r.dest.prefix == 0 && r.dev.as_deref() == Some(dev))
    };
    let mut nets: Vec<DockerNet> = Vec::new();
    for i in ifaces {
        let host = i.netns == "host";
        let docker = !host || docker_bridge_name(&i.name) || api_bridges.contains(i.name.as_str());
        let other_bridge = i.bridge && !uplink(&i.name);
        if host && !docker && !other_bridge {
            continue;
        }
        // Single addresses (service VIPs in lb_ and ingress_sbox) lie in their network's subnet.
        if i.cidr.is_host() {
            continue;
        }
        let cidr = i.cidr.network();
        let place = format!("{}:{}", i.netns, i.name);
        if nets.iter().any(|n| n.cidr == cidr && n.place == place) {
            continue;
        }
        nets.push(DockerNet {
            cidr,
            place,
            dev: host.then(|| i.name.clone()),
            from_iface: true,
            docker,
        });
    }
    if let Some(info) = info {
        for n in &info.networks {
            for s in n.subnets.iter().filter(|s| usable(s)) {
                nets.push(DockerNet {
                    cidr: s.network(),
                    place: format!("network {} ({})", n.name, n.driver),
                    dev: None,
                    from_iface: false,
                    docker: true,
                });
            }
        }
    }
    nets
}

/// The nets by subnet, in first-seen order: (subnet, its places, whether one is Docker's).
fn by_subnet<'a>(nets: impl IntoIterator<Item = &'a DockerNet>) -> Vec<(Cidr, Vec<String>, bool)> {
    let mut out: Vec<(Cidr, Vec<String>, bool)> = Vec::new();
    for n in nets {
        let place = if n.docker {
            n.place.clone()
        } else {
            format!("{}, not Docker's", n.place)
        };
        match out.iter_mut().find(|(c, _, _)| *c == n.cidr) {
            Some((_, places, docker)) => {
                if !places.contains(&place) {
                    places.push(place);
                }
                *docker |= n.docker;
            }
            None => out.push((n.cidr, vec![place], n.docker)),
        }
    }
    out
}

fn subnets(
    ifaces: &[Iface],
    routes: &[Route],
    info: Option<&DockerInfo>,
    clients: &[Cidr],
    f: &mut Vec<Finding>,
) {
    let nets = docker_nets(ifaces, routes, info);
    if nets.is_empty() {
        f.push(Finding::new(
            "docker-subnets",
            Severity::Ok,
            "no Docker or bridge subnet here",
        ));
    } else {
        let by = by_subnet(&nets);
        let text: Vec<String> = by
            .iter()
            .map(|(c, places, _)| format!("{c} ({})", list(places, 3)))
            .collect();
        f.push(
            Finding::new(
                "docker-subnets",
                Severity::Info,
                format!("{} Docker or bridge subnet(s)", by.len()),
            )
            .detail(text.join("; ")),
        );
    }
    let bridge_devs: BTreeSet<&str> = nets.iter().filter_map(|n| n.dev.as_deref()).collect();

    // Client networks: an overlap is the `reply-misrouted` cause.
    for c in clients {
        let c = c.network();
        let hit = by_subnet(nets.iter().filter(|n| c.overlaps(&n.cidr)));
        let via = best_route(routes, c.addr)
            .map(|r| {
                format!(
                    " Replies to it follow the route {}{}{}.",
                    if r.dest.prefix == 0 {
                        "default".to_owned()
                    } else {
                        r.dest.to_string()
                    },
                    r.via.map(|v| format!(" via {v}")).unwrap_or_default(),
                    r.dev
                        .as_ref()
                        .map(|d| format!(" dev {d}"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        if hit.is_empty() {
            f.push(
                Finding::new(
                    "client-overlap",
                    Severity::Ok,
                    format!("client network {c} overlaps no Docker subnet"),
                )
                .detail(via.trim().to_owned()),
            );
            continue;
        }
        for (subnet, places, docker) in hit {
            let places = list(&places, 4);
            if !docker {
                f.push(
                    Finding::new(
                        "client-overlap",
                        Severity::Warning,
                        format!("client network {c} overlaps {subnet} ({places})"),
                    )
                    .detail(format!("Clients in {c} have addresses inside the subnet of a bridge of this host that is not Docker's: the host routes replies to them onto that bridge, not back towards the clients.{via}"))
                    .fix("Renumber that bridge's network (or the clients), or confirm that the clients really live behind that bridge."),
                );
                continue;
            }
            f.push(
                Finding::new(
                    "client-overlap",
                    Severity::Serious,
                    format!("client network {c} overlaps {subnet} ({places})"),
                )
                .detail(format!(
                    "Clients in {c} have addresses inside a subnet Docker uses on this host. Their SYNs arrive and are answered, but the SYN-ACK is routed to that Docker network instead of back to the client: ARP for the client fails there (drop reason NEIGH_FAILED in ingress_sbox or the task) or the reply is lost without a drop. This is the `reply-misrouted` cause of `swarmtrace run`.{via}"
                ))
                .fix("Move Docker's networks out of the clients' ranges: default-address-pools and bip in /etc/docker/daemon.json; docker_gwbridge re-created with another --subnet (before `docker swarm init`/`join`, or after leaving); the ingress network re-created with `docker network create --driver overlay --ingress --subnet ...`; overlays with `--subnet`. Or renumber the clients."),
            );
        }
    }

    // Docker subnets against the host's routes (not the bridges' own routes, not the default).
    let mut seen = BTreeSet::new();
    for r in routes {
        if r.dest.prefix == 0
            || !usable(&r.dest)
            || matches!(r.kind.as_str(), "local" | "broadcast" | "multicast")
        {
            continue;
        }
        if r.dev.as_deref().is_some_and(|d| bridge_devs.contains(d)) {
            continue;
        }
        let rd = r.dest.network();
        for (subnet, places, _) in by_subnet(nets.iter().filter(|n| rd.overlaps(&n.cidr))) {
            if !seen.insert((rd.to_string(), subnet.to_string())) {
                continue;
            }
            let how = if rd.prefix > subnet.prefix {
                format!("{subnet} covers the host's route to {rd}")
            } else if rd.prefix < subnet.prefix {
                format!("the host's route to {rd} covers {subnet}")
            } else {
                format!("the host also routes {rd}")
            };
            let r_text = format!(
                "{rd}{}{}",
                r.via.map(|v| format!(" via {v}")).unwrap_or_default(),
                r.dev
                    .as_ref()
                    .map(|d| format!(" dev {d}"))
                    .unwrap_or_default()
            );
            f.push(
                Finding::new(
                    "route-overlap",
                    Severity::Warning,
                    format!(
                        "{subnet} ({}) overlaps the host route {r_text}",
                        list(&places, 4)
                    ),
                )
                .detail(format!(
                    "{how}. Hosts in the shared range are reachable one way only: the more specific route wins, so either they cannot reach published ports (replies go to the Docker network) or the containers cannot reach them. A client there gets no SYN-ACK."
                ))
                .fix("Give Docker address pools that no route of the host uses (default-address-pools in /etc/docker/daemon.json, --subnet for docker_gwbridge, ingress and overlays)."),
            );
        }
    }

    // Docker subnets against each other.
    let mut pairs = BTreeSet::new();
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            if !a.cidr.overlaps(&b.cidr) || a.cidr.is_host() || b.cidr.is_host() {
                continue;
            }
            // The same subnet seen from two namespaces is one network (docker_gwbridge in
            // the host and eth1 in ingress_sbox), except on two bridges of the host, or as
            // two networks of the API.
            let conflict = if a.cidr != b.cidr {
                a.from_iface == b.from_iface
            } else if a.from_iface && b.from_iface {
                a.dev.is_some() && b.dev.is_some()
            } else {
                !a.from_iface && !b.from_iface && a.place != b.place
            };
            if !conflict {
                continue;
            }
            let key = if a.place <= b.place {
                (a.place.clone(), b.place.clone())
            } else {
                (b.place.clone(), a.place.clone())
            };
            if !pairs.insert(key) {
                continue;
            }
            f.push(
                Finding::new(
                    "docker-overlap",
                    Severity::Warning,
                    format!("{} {} overlaps {} {}", a.place, a.cidr, b.place, b.cidr),
                )
                .detail("Two Docker networks share addresses: a container attached to both, or the host routing to both, sends part of the traffic to the wrong one, and replies to clients in the shared range can leave by the wrong bridge.")
                .fix("Re-create one of the networks with a --subnet of its own (default-address-pools in /etc/docker/daemon.json keeps new ones apart)."),
            );
        }
    }
}

/// The longest-prefix route for `ip`.
fn best_route(routes: &[Route], ip: IpAddr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| {
            !matches!(r.kind.as_str(), "local" | "broadcast" | "multicast") && r.dest.contains(ip)
        })
        .max_by_key(|r| r.dest.prefix)
}

// ---------------------------------------------------------------------------------------------
// iptables-save.

/// One table of an `iptables-save` dump.
#[derive(Debug, Default, Clone)]
struct Table {
    policies: BTreeMap<String, String>,
    chains: BTreeSet<String>,
    /// (chain, the rule after `-A CHAIN`).
    rules: Vec<(String, String)>,
}

fn parse_iptables_save(text: &str) -> BTreeMap<String, Table> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        // `iptables-save -c` prefixes rules with [packets:bytes].
        let line = match line.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(line, |(_, r)| r.trim()),
            None => line,
        };
        if let Some(t) = line.strip_prefix('*') {
            cur = Some(t.trim().to_owned());
            tables.entry(t.trim().to_owned()).or_default();
        } else if line == "COMMIT" {
            cur = None;
        } else if let Some(c) = line.strip_prefix(':') {
            let Some(t) = cur.as_ref().and_then(|t| tables.get_mut(t)) else {
                continue;
            };
            let mut parts = c.split_whitespace();
            if let Some(name) = parts.next() {
                t.chains.insert(name.to_owned());
                if let Some(p) = parts.next().filter(|p| *p != "-") {
                    t.policies.insert(name.to_owned(), p.to_owned());
                }
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let Some(t) = cur.as_ref().and_then(|t| tables.get_mut(t)) else {
                continue;
            };
            if let Some((chain, rest)) = rule.split_once(' ') {
                t.chains.insert(chain.to_owned());
                t.rules.push((chain.to_owned(), rest.trim().to_owned()));
            }
        }
    }
    tables
}

/// The value after `flag` in a rule.
fn arg<'a>(rule: &'a str, flag: &str) -> Option<&'a str> {
    let mut it = rule.split_whitespace();
    while let Some(w) = it.next() {
        if w == flag {
            return it.next();
        }
    }
    None
}

fn jumps_to(rule: &str) -> Option<&str> {
    arg(rule, "-j").or_else(|| arg(rule, "-g"))
}

fn protocol(rule: &str) -> String {
    arg(rule, "-p").unwrap_or("tcp").to_owned()
}

/// A DNAT rule of the nat table's DOCKER-INGRESS chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IngressDnat {
    protocol: String,
    dport: u16,
    to: Option<IpAddr>,
    to_port: u16,
}

fn ingress_dnats(nat: &Table) -> Vec<IngressDnat> {
    nat.rules
        .iter()
        .filter(|(c, r)| c == "DOCKER-INGRESS" && jumps_to(r) == Some("DNAT"))
        .filter_map(|(_, r)| {
            let dport: u16 = arg(r, "--dport")?.parse().ok()?;
            let dest = arg(r, "--to-destination").unwrap_or("");
            let (ip, port) = match dest.rsplit_once(':') {
                Some((ip, port)) if !ip.contains(':') || ip.ends_with(']') => (
                    ip.trim_matches(['[', ']']).parse().ok(),
                    port.parse().unwrap_or(dport),
                ),
                _ => (dest.parse().ok(), dport),
            };
            Some(IngressDnat {
                protocol: protocol(r),
                dport,
                to: ip,
                to_port: port,
            })
        })
        .collect()
}

/// Whether `chain` of `table` is reached from `from` through jumps.
fn reaches(t: &Table, from: &str, chain: &str) -> bool {
    let mut todo = vec![from.to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(c) = todo.pop() {
        if c == chain {
            return true;
        }
        if !seen.insert(c.clone()) {
            continue;
        }
        for (rc, r) in &t.rules {
            if *rc == c {
                if let Some(j) = jumps_to(r) {
                    if t.chains.contains(j) {
                        todo.push(j.to_owned());
                    }
                }
            }
        }
    }
    false
}

struct Backend {
    name: String,
    tables: BTreeMap<String, Table>,
}

impl Backend {
    fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    fn dnats(&self) -> Vec<IngressDnat> {
        self.table("nat").map(ingress_dnats).unwrap_or_default()
    }

    fn prerouting_jump(&self) -> bool {
        self.table("nat")
            .is_some_and(|t| reaches(t, "PREROUTING", "DOCKER-INGRESS"))
    }

    /// The filter table lets a forwarded packet to `port` through: FORWARD reaches
    /// DOCKER-INGRESS, which accepts the port, or FORWARD's policy is ACCEPT.
    fn forward_accepts(&self, proto: &str, port: u16) -> bool {
        let Some(t) = self.table("filter") else {
            return true;
        };
        let accepted = t.rules.iter().any(|(c, r)| {
            c == "DOCKER-INGRESS"
                && jumps_to(r) == Some("ACCEPT")
                && protocol(r) == proto
                && arg(r, "--dport").and_then(|p| p.parse::<u16>().ok()) == Some(port)
        });
        (accepted && reaches(t, "FORWARD", "DOCKER-INGRESS"))
            || t.policies.get("FORWARD").is_none_or(|p| p == "ACCEPT")
    }
}

#[allow(clippy::too_many_arguments)]
fn docker_checks(
    host: &dyn HostView,
    facts: &DockerFacts,
    ifaces: &[Iface],
    rulesets: &[Ruleset],
    docker: &DockerApi,
    info: Option<&DockerInfo>,
    f: &mut Vec<Finding>,
) {
    if !facts.present {
        f.push(
            Finding::new("docker", Severity::Info, "no Docker here")
                .detail("No Docker API socket, no docker0/docker_gwbridge/br-* bridge, no Docker namespace and no DOCKER chain in iptables: the Docker checks are skipped. The sysctl, subnet and conntrack checks still apply to NAT set up otherwise (Kubernetes NodePorts, your own DNAT)."),
        );
        return;
    } else {
        f.push(Finding::new(
            "docker",
            Severity::Info,
            format!(
                "Docker{}: {}",
                if facts.swarm {
                    " with a Swarm routing mesh"
                } else {
                    ""
                },
                facts.evidence.join(", ")
            ),
        ));
    }
    match docker {
        DockerApi::Absent => f.push(
            Finding::new("docker-api", Severity::Info, "no Docker API socket (/var/run/docker.sock): networks and published ports come from interfaces and iptables only")
        ),
        DockerApi::Failed(e) => f.push(
            Finding::new("docker-api", Severity::Info, "the Docker API could not be read")
                .detail(format!("{e}. Networks and published ports come from interfaces and iptables only."))
                .fix("Run as root or as a member of the docker group; check that dockerd runs (systemctl status docker)."),
        ),
        DockerApi::Available(i) => {
            let published = match &i.published {
                Ok(p) => format!("{} published port(s)", p.len()),
                Err(e) => format!("published ports unknown ({e})"),
            };
            f.push(Finding::new(
                "docker-api",
                Severity::Ok,
                format!(
                    "Docker API: {} s.network(), swarm {}, {published}",
                    i.networks.len(),
                    i.swarm.as_deref().unwrap_or("unknown")
                ),
            ));
        }
    }
    if !facts.swarm {
        f.push(Finding::new(
            "ingress-dnat",
            Severity::Ok,
            "no Swarm routing mesh here: no ingress rules to check",
        ));
        return;
    }

    // The routing mesh's rules, in every backend that has rules.
    let mut unreadable = Vec::new();
    let backends: Vec<Backend> = rulesets
        .iter()
        .filter_map(|r| match &r.text {
            Ok(t) => Some(Backend {
                name: r.backend.clone(),
                tables: parse_iptables_save(t),
            }),
            Err(e) => {
                unreadable.push(format!("{}: {e}", r.backend));
                None
            }
        })
        .collect();
    if backends.is_empty() {
        f.push(
            Finding::new(
                "iptables",
                Severity::Info,
                "iptables rules could not be read: the routing-mesh rules were not checked",
            )
            .detail(if rulesets.is_empty() {
                "Neither iptables-save nor iptables-legacy-save is installed.".to_owned()
            } else {
                unreadable.join("; ")
            })
            .fix("Run as root, with iptables installed."),
        );
        return;
    }
    let with_ingress: Vec<&Backend> = backends
        .iter()
        .filter(|b| {
            b.table("nat")
                .is_some_and(|t| t.chains.contains("DOCKER-INGRESS"))
        })
        .collect();
    if with_ingress.len() > 1 {
        f.push(
            Finding::new("iptables-backends", Severity::Info, format!(
                "DOCKER-INGRESS exists in more than one iptables backend ({})",
                with_ingress.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
            .detail("The kernel runs the rules of both iptables-nft and iptables-legacy; a tool shows only its own, and a stale copy in the other backend can DNAT or DROP too.")
            .fix("Keep one backend: update-alternatives --config iptables, restart Docker, and flush the other backend's tables."),
        );
    }

    // Which ports must be published, and how we know.
    let api_ports: Option<Vec<PublishedPort>> = info
        .and_then(|i| i.published.as_ref().ok())
        .map(|p| p.iter().filter(|p| p.mode == "ingress").cloned().collect());
    let all_dnats: Vec<(String, IngressDnat)> = backends
        .iter()
        .flat_map(|b| b.dnats().into_iter().map(|d| (b.name.clone(), d)))
        .collect();
    let wanted: Vec<(String, u16, String)> = match &api_ports {
        Some(p) => p
            .iter()
            .map(|p| {
                (
                    p.protocol.clone(),
                    p.port,
                    format!(" (service {})", p.service),
                )
            })
            .collect(),
        None => {
            let mut v: Vec<(String, u16, String)> = all_dnats
                .iter()
                .map(|(_, d)| (d.protocol.clone(), d.dport, String::new()))
                .collect();
            v.sort();
            v.dedup();
            v
        }
    };
    if wanted.is_empty() {
        let sev = if with_ingress.is_empty() {
            Severity::Info
        } else {
            Severity::Ok
        };
        f.push(
            Finding::new(
                "ingress-dnat",
                sev,
                if api_ports.is_some() {
                    "no swarm service publishes a port through the routing mesh".to_owned()
                } else {
                    "no DNAT rule in DOCKER-INGRESS: no port is published through the routing mesh here, or its rules were removed".to_owned()
                },
            )
            .detail(if api_ports.is_some() {
                "Nothing to check."
            } else {
                "The Docker API did not list the services (not reachable, or not a manager node), so the expected ports are unknown. If services publish ports and clients time out on this node, its rules were flushed."
            }),
        );
        return;
    }

    // Where DNAT may send: ingress_sbox's addresses, else docker_gwbridge's subnet.
    let sbox: Vec<IpAddr> = ifaces
        .iter()
        .filter(|i| i.netns == "ingress_sbox")
        .map(|i| i.cidr.addr)
        .collect();
    let gw: Vec<Cidr> = ifaces
        .iter()
        .filter(|i| i.netns == "host" && i.name == "docker_gwbridge")
        .map(|i| i.cidr.network())
        .chain(info.into_iter().flat_map(|i| {
            i.networks
                .iter()
                .filter(|n| n.name == "docker_gwbridge")
                .flat_map(|n| n.subnets.iter().map(Cidr::network))
        }))
        .collect();
    let mangle = host.ingress_sbox_mangle();
    let flush_fix = "Docker's rules were removed: by `iptables -F`/`iptables-restore` of a file without them, or a firewall (firewalld, ufw, a script) reloading after Docker. Restart Docker (systemctl restart docker) or re-publish with `docker service update --force SERVICE`, and make the firewall keep Docker's chains (your own rules go in DOCKER-USER).";
    for (proto, port, service) in &wanted {
        let rules: Vec<&(String, IngressDnat)> = all_dnats
            .iter()
            .filter(|(_, d)| d.dport == *port && d.protocol == *proto)
            .collect();
        if rules.is_empty() {
            f.push(
                Finding::new(
                    "ingress-dnat",
                    Severity::Serious,
                    format!("published port {port}/{proto}{service} has no DNAT rule in DOCKER-INGRESS"),
                )
                .detail(format!(
                    "The routing mesh needs `-A DOCKER-INGRESS -p {proto} --dport {port} -j DNAT --to-destination 172.18.0.2:{port}` in the nat table (172.18.0.2: ingress_sbox on docker_gwbridge). Without it the SYN stays on the host: a RST (NO_SOCKET) if nothing listens there."
                ))
                .fix(flush_fix),
            );
            continue;
        }
        for (backend, d) in rules {
            let b = backends.iter().find(|b| b.name == *backend);
            let target = d.to.map_or_else(|| "?".to_owned(), |ip| ip.to_string());
            let good_target = match d.to {
                None => false,
                Some(ip) if !sbox.is_empty() => sbox.contains(&ip),
                Some(ip) if !gw.is_empty() => gw.iter().any(|g| g.contains(ip)),
                Some(_) => true,
            };
            if !good_target {
                f.push(
                    Finding::new(
                        "ingress-dnat",
                        Severity::Serious,
                        format!("port {port}/{proto}{service} is DNATed to {target}:{}, which is not ingress_sbox's address ({backend})", d.to_port),
                    )
                    .detail(format!(
                        "ingress_sbox's addresses: {}; docker_gwbridge: {}. A stale rule (docker_gwbridge re-created with another subnet, or a rule restored from an old dump) sends the SYNs nowhere.",
                        if sbox.is_empty() { "not read".to_owned() } else { sbox.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ") },
                        if gw.is_empty() { "not found".to_owned() } else { gw.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ") },
                    ))
                    .fix(flush_fix),
                );
            } else {
                f.push(Finding::new(
                    "ingress-dnat",
                    Severity::Ok,
                    format!(
                        "port {port}/{proto}{service}: DNAT to {target}:{} ({backend})",
                        d.to_port
                    ),
                ));
            }
            let Some(b) = b else { continue };
            if !b.prerouting_jump() {
                f.push(
                    Finding::new(
                        "ingress-jump",
                        Severity::Serious,
                        format!("nat PREROUTING does not jump to DOCKER-INGRESS ({backend}): port {port}/{proto} is never DNATed"),
                    )
                    .detail("The DNAT rules exist, but without `-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS` no packet from outside reaches them.")
                    .fix(flush_fix),
                );
            }
            if !b.forward_accepts(&d.protocol, d.to_port) {
                f.push(
                    Finding::new(
                        "ingress-forward",
                        Severity::Warning,
                        format!("the filter table may drop forwarded SYNs to port {}/{proto} ({backend})", d.to_port),
                    )
                    .detail("FORWARD's policy is DROP and it does not reach a DOCKER-INGRESS chain accepting the port: after DNAT the SYN is forwarded to docker_gwbridge and dropped (NETFILTER_DROP), unless another rule accepts it.")
                    .fix(flush_fix),
                );
            }
            if let Some(m) = &mangle {
                let tables = parse_iptables_save(m);
                let marked = tables.get("mangle").is_some_and(|t| {
                    t.rules.iter().any(|(c, r)| {
                        c == "PREROUTING"
                            && jumps_to(r) == Some("MARK")
                            && arg(r, "--dport").and_then(|p| p.parse::<u16>().ok())
                                == Some(d.to_port)
                    })
                });
                if !marked {
                    f.push(
                        Finding::new(
                            "ingress-sbox-mark",
                            Severity::Serious,
                            format!("ingress_sbox does not mark port {}/{proto} for IPVS", d.to_port),
                        )
                        .detail("Inside ingress_sbox, `-t mangle -A PREROUTING -p tcp --dport PORT -j MARK --set-mark N` hands the SYN to the IPVS service that balances it to the tasks. Without it the SYN is not balanced: ingress_sbox itself answers with a RST or drops it. A kernel without iptable_mangle (IP_NF_MANGLE) shows this.")
                        .fix("Re-publish the service (docker service update --force SERVICE) or restart Docker; on custom kernels enable CONFIG_IP_NF_MANGLE."),
                    );
                }
            }
        }
    }
}

fn conntrack(fills: &[ConntrackFill], f: &mut Vec<Finding>) {
    if fills.is_empty() {
        f.push(
            Finding::new("conntrack", Severity::Info, "nf_conntrack is not loaded")
                .detail("No connection tracking, so no NAT here; published ports need it (Docker loads it)."),
        );
        return;
    }
    let explain = "When the table is full, the first packet of every new connection is dropped (NETFILTER_DROP, and the kernel logs \"nf_conntrack: table full, dropping packet\"): SYNs to published ports vanish while established connections carry on. The count is per namespace, the limit is the host's.";
    let fix = "sysctl -w net.netfilter.nf_conntrack_max=<larger> (and nf_conntrack_buckets); find who fills it with `conntrack -S` and `conntrack -L`; shorter nf_conntrack_tcp_timeout_time_wait and _established help.";
    let mut any = false;
    for c in fills.iter().filter(|c| c.max > 0) {
        let ratio = c.count as f64 / c.max as f64;
        let sev = if ratio > 0.9 {
            Severity::Serious
        } else if ratio > 0.7 {
            Severity::Warning
        } else {
            continue;
        };
        any = true;
        f.push(
            Finding::new(
                "conntrack",
                sev,
                format!(
                    "conntrack table {:.0}% full in {} ({} of {})",
                    ratio * 100.0,
                    c.netns,
                    c.count,
                    c.max
                ),
            )
            .detail(explain)
            .fix(fix),
        );
    }
    if !any {
        let worst = fills.iter().filter(|c| c.max > 0).max_by(|a, b| {
            (a.count as f64 / a.max as f64).total_cmp(&(b.count as f64 / b.max as f64))
        });
        let title = match worst {
            Some(c) => format!(
                "conntrack table at most {:.0}% full ({}: {} of {})",
                c.count as f64 / c.max as f64 * 100.0,
                c.netns,
                c.count,
                c.max
            ),
            None => "conntrack limit not readable".to_owned(),
        };
        f.push(Finding::new("conntrack", Severity::Ok, title));
    }
}

/// `6.18.44-foo` -> (6, 18).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel(k: &KernelView, root: bool, f: &mut Vec<Finding>) {
    let version = k.release.as_deref().and_then(kernel_version);
    let at_least = |v: (u32, u32)| version.map(|have| have >= v);
    f.push(Finding::new(
        "kernel",
        Severity::Info,
        format!(
            "Linux {}",
            k.release.as_deref().unwrap_or("(release unknown)")
        ),
    ));
    if !root {
        f.push(
            Finding::new("privileges", Severity::Info, "`swarmtrace run` needs root")
                .detail("Or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (and CAP_SYS_ADMIN to enter Docker's namespaces)."),
        );
    }
    f.push(if k.btf {
        Finding::new("btf", Severity::Ok, "BTF present (/sys/kernel/btf/vmlinux)")
    } else {
        Finding::new("btf", Severity::Warning, "no BTF (/sys/kernel/btf/vmlinux): `swarmtrace run` cannot start")
            .detail("swarmtrace reads structure offsets for its kernel programs from the kernel's BTF.")
            .fix("Use a kernel built with CONFIG_DEBUG_INFO_BTF=y (distribution kernels since about 5.8 are).")
    });
    f.push(match &k.tracefs {
        Tracefs::Mounted(p) => Finding::new("tracefs", Severity::Ok, format!("tracefs mounted at {}", p.display())),
        Tracefs::NotMounted => Finding::new("tracefs", Severity::Info, "tracefs is not mounted (`swarmtrace run` mounts it at /sys/kernel/tracing)"),
        Tracefs::Unsupported => Finding::new("tracefs", Severity::Warning, "no tracefs in this kernel: `swarmtrace run` cannot attach to skb:kfree_skb")
            .detail("Without the tracepoint no drop is seen; only unanswered handshakes and counters remain.")
            .fix("Use a kernel with CONFIG_FTRACE/tracefs."),
    });
    f.push(match at_least((5, 8)) {
        Some(true) => Finding::new(
            "ring-buffer",
            Severity::Ok,
            "BPF ring buffer available (5.8+)",
        ),
        Some(false) => Finding::new(
            "ring-buffer",
            Severity::Warning,
            "kernel older than 5.8: no BPF ring buffer, `swarmtrace run` cannot start",
        )
        .fix("Upgrade to Linux 5.8 or later."),
        None => Finding::new(
            "ring-buffer",
            Severity::Info,
            "kernel release unknown: BPF ring buffer (5.8+) not checked",
        ),
    });

    // Drop reasons: the live tracepoint format, else BTF, else the version.
    let format = k
        .kfree_skb_format
        .as_deref()
        .and_then(|t| TracepointFormat::parse(t).ok());
    let (has_reason, names, source): (Option<bool>, Option<Vec<String>>, &str) = match &format {
        Some(fmt) => (
            Some(fmt.field("reason").is_some()),
            Some(fmt.symbols("reason").into_values().collect()),
            "the kfree_skb tracepoint",
        ),
        None => match &k.btf_drop_reasons {
            Some(n) if !n.is_empty() => (Some(true), Some(n.clone()), "BTF"),
            _ => (at_least((5, 17)), None, "the kernel version"),
        },
    };
    let count = names.as_ref().map(|n| n.len()).unwrap_or(0);
    f.push(match has_reason {
        Some(true) => Finding::new(
            "drop-reasons",
            Severity::Ok,
            if count > 0 {
                format!("kfree_skb carries drop reasons ({count} names, from {source})")
            } else {
                format!("kfree_skb carries drop reasons (from {source})")
            },
        ),
        Some(false) => Finding::new("drop-reasons", Severity::Warning, "kfree_skb carries no drop reason (before Linux 5.17)")
            .detail("`swarmtrace run` still sees every drop, but names it by code location only (e.g. tcp_v4_rcv, nft_do_chain), and its verdicts lean on the counters.")
            .fix("Linux 5.17 or later for drop reasons; 6.16+ for TCP_RFC7323_TW_PAWS."),
        None => Finding::new("drop-reasons", Severity::Info, "drop reasons not checked (kernel release unknown, tracepoint format unreadable)"),
    });
    let paws = match &names {
        Some(n) if !n.is_empty() => Some(n.iter().any(|n| n == "TCP_RFC7323_TW_PAWS")),
        _ => at_least((6, 16)),
    };
    f.push(match paws {
        Some(true) => Finding::new("tw-paws-reason", Severity::Ok, "the TCP_RFC7323_TW_PAWS drop reason exists (6.16+)"),
        Some(false) => Finding::new("tw-paws-reason", Severity::Info, "no TCP_RFC7323_TW_PAWS drop reason (it came in Linux 6.16)")
            .detail("A SYN dropped by PAWS against a TIME_WAIT socket shows as NOT_SPECIFIED in the TIME_WAIT path; `swarmtrace run` then bases the paws-timestamps verdict on that drop path and the PAWSTimewait/PAWSEstab counters."),
        None => Finding::new("tw-paws-reason", Severity::Info, "TCP_RFC7323_TW_PAWS not checked (kernel release unknown)"),
    });
    f.push(match at_least((6, 6)) {
        Some(true) => Finding::new("tcx", Severity::Ok, "TCX available (6.6+): classifiers attach without a qdisc"),
        Some(false) => Finding::new("tcx", Severity::Info, "no TCX (before 6.6): classifiers hang off a clsact qdisc")
            .detail("`swarmtrace run` adds a clsact qdisc on the watched interfaces (and leaves other qdiscs alone); it works the same."),
        None => Finding::new("tcx", Severity::Info, "TCX (6.6+) not checked (kernel release unknown)"),
    });
}

// ---------------------------------------------------------------------------------------------
// The live host.

/// Reads this machine: the namespace doctor runs in, and Docker's namespaces when it runs in
/// the initial one as root.
pub struct LiveHost {
    scope: Scope,
    walk: Vec<(String, PathBuf)>,
}

/// Names Docker gives its namespaces: `ingress_sbox`, `lb_*`, overlays (`1-ab12cd34ef`),
/// sandboxes (12 hex digits).
pub fn docker_netns_name(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    name == "ingress_sbox"
        || name.starts_with("lb_")
        || (name.len() == 12 && hex(name))
        || name.split_once('-').is_some_and(|(n, id)| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && id.len() == 10
                && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

fn link_inode(path: &str) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

impl LiveHost {
    pub fn new() -> Self {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let here =
            link_inode("/proc/thread-self/ns/net").or_else(|| link_inode("/proc/self/ns/net"));
        let init = link_inode("/proc/1/ns/net").or_else(|| link_inode("/proc/2/ns/net"));
        let initial = match (&here, &init) {
            (Some(h), Some(i)) => Some(h == i),
            _ => None,
        };
        let name = if initial == Some(false) {
            here.as_deref()
                .and_then(|l| {
                    l.strip_prefix("net:[")?
                        .strip_suffix(']')?
                        .parse::<u32>()
                        .ok()
                })
                .and_then(|ino| crate::kernel::netns::NetnsNames::live().name(ino))
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
            for (n, path) in crate::kernel::namespaces::known() {
                if n == "host" {
                    continue;
                }
                let docker_dir = path.starts_with("/var/run/docker/netns")
                    || path.starts_with("/run/docker/netns");
                if !docker_dir && !docker_netns_name(&n) {
                    continue;
                }
                let ino = crate::kernel::netns::inode_of_file(&path).map(|i| format!("net:[{i}]"));
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

fn sysctl_path(name: &str) -> PathBuf {
    let mut p = PathBuf::from("/proc/sys");
    for part in name.split('.') {
        p.push(part.replace('/', "."));
    }
    p
}

fn run(program: &str, args: &[&str]) -> Option<Result<String, String>> {
    match Command::new(program).args(args).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e.to_string())),
        Ok(o) if o.status.success() => Some(Ok(String::from_utf8_lossy(&o.stdout).into_owned())),
        Ok(o) => Some(Err(String::from_utf8_lossy(&o.stderr).trim().to_owned())),
    }
}

/// Names of bridges in the current namespace (`ip -o link show type bridge`).
pub fn parse_ip_link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next()?.trim().to_owned())
        })
        .collect()
}

/// Parses `ip -o route show` (one family); `v6` says what `default` means.
pub fn parse_ip_route(text: &str, v6: bool) -> Vec<Route> {
    const KINDS: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "unreachable",
        "blackhole",
        "prohibit",
        "throw",
        "anycast",
        "nat",
    ];
    text.lines()
        .filter_map(|l| {
            let mut w: Vec<&str> = l.split_whitespace().collect();
            let kind = match w.first() {
                Some(k) if KINDS.contains(k) => {
                    let k = (*k).to_owned();
                    w.remove(0);
                    k
                }
                _ => "unicast".to_owned(),
            };
            let dest = match *w.first()? {
                "default" => Cidr {
                    addr: if v6 {
                        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                    } else {
                        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                    },
                    prefix: 0,
                },
                d => parse_cidr(d).ok()?,
            };
            Some(Route {
                kind,
                dest,
                via: arg(l, "via").and_then(|v| v.parse().ok()),
                dev: arg(l, "dev").map(str::to_owned),
            })
        })
        .collect()
}

fn read_conntrack() -> Option<(u64, u64)> {
    let read = |n: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{n}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// The installed iptables-save variants, by backend.
fn iptables_save_all(args: &[&str]) -> Vec<Ruleset> {
    let mut out = Vec::new();
    let generic = run("iptables-save", &["--version"])
        .and_then(Result::ok)
        .unwrap_or_default();
    let nft = run("iptables-nft-save", args).or_else(|| {
        generic
            .contains("nf_tables")
            .then(|| run("iptables-save", args))
            .flatten()
    });
    if let Some(text) = nft {
        out.push(Ruleset {
            backend: "nft".to_owned(),
            text,
        });
    }
    let legacy = run("iptables-legacy-save", args).or_else(|| {
        generic
            .contains("legacy")
            .then(|| run("iptables-save", args))
            .flatten()
    });
    if let Some(text) = legacy {
        out.push(Ruleset {
            backend: "legacy".to_owned(),
            text,
        });
    }
    out
}

impl HostView for LiveHost {
    fn sysctl(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(sysctl_path(name))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn sysctl_dir(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(sysctl_path(name))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn scope(&self) -> Scope {
        self.scope.clone()
    }

    fn interfaces(&self) -> Vec<Iface> {
        let mut out = Vec::new();
        let bridges = run("ip", &["-o", "link", "show", "type", "bridge"])
            .and_then(Result::ok)
            .map(|t| parse_ip_link_names(&t))
            .unwrap_or_default();
        if let Some(Ok(text)) = run("ip", &["-o", "addr", "show"]) {
            for (name, cidr) in crate::kernel::namespaces::parse_ip_addr(&text) {
                if name == "lo" || cidr.addr.is_loopback() {
                    continue;
                }
                out.push(Iface {
                    netns: "host".to_owned(),
                    bridge: bridges.contains(&name),
                    name,
                    cidr,
                });
            }
        }
        for (ns, path) in &self.walk {
            for (name, cidr) in crate::kernel::namespaces::subnets_in(path) {
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
        let v4 = run("ip", &["-o", "-4", "route", "show"]).and_then(Result::ok);
        let v6 = run("ip", &["-o", "-6", "route", "show"]).and_then(Result::ok);
        match v4 {
            Some(t) => {
                let mut r = parse_ip_route(&t, false);
                r.extend(parse_ip_route(&v6.unwrap_or_default(), true));
                r
            }
            None => {
                parse_proc_route(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
            }
        }
    }

    fn iptables_save(&self) -> Vec<Ruleset> {
        iptables_save_all(&[])
    }

    fn ingress_sbox_mangle(&self) -> Option<String> {
        let (_, path) = self.walk.iter().find(|(n, _)| n == "ingress_sbox")?;
        let sets = crate::kernel::netns::within(path, || iptables_save_all(&[])).ok()?;
        // Nothing readable: unknown, not "no marks".
        let texts: Vec<String> = sets.into_iter().filter_map(|r| r.text.ok()).collect();
        (!texts.is_empty()).then(|| texts.concat())
    }

    fn conntrack(&self) -> Vec<ConntrackFill> {
        let mut out = Vec::new();
        if let Some((count, max)) = read_conntrack() {
            out.push(ConntrackFill {
                netns: self.scope.here.clone(),
                count,
                max,
            });
        }
        for (ns, path) in &self.walk {
            if let Ok(Some((count, max))) = crate::kernel::netns::within(path, read_conntrack) {
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
        let sock = crate::docker::socket_path();
        if !sock.exists() {
            return DockerApi::Absent;
        }
        let networks = match docker_get(&sock, "/networks") {
            Ok((200, body)) => match serde_json::from_str::<Value>(&body) {
                Ok(v) => parse_networks(&v),
                Err(e) => return DockerApi::Failed(format!("GET /networks: not JSON: {e}")),
            },
            Ok((status, body)) => {
                return DockerApi::Failed(format!(
                    "GET /networks: HTTP {status}: {}",
                    api_message(&body)
                ))
            }
            Err(e) => return DockerApi::Failed(format!("{}: {e}", sock.display())),
        };
        let swarm = docker_get(&sock, "/info")
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v["Swarm"]["LocalNodeState"].as_str().map(str::to_owned));
        let published = if swarm.as_deref() == Some("active") {
            match docker_get(&sock, "/services") {
                Ok((200, body)) => serde_json::from_str::<Value>(&body)
                    .map(|v| parse_services(&v))
                    .map_err(|e| format!("GET /services: not JSON: {e}")),
                Ok((status, body)) => Err(format!(
                    "GET /services: HTTP {status}: {}",
                    api_message(&body)
                )),
                Err(e) => Err(e),
            }
        } else {
            Ok(Vec::new())
        };
        DockerApi::Available(DockerInfo {
            networks,
            swarm,
            published,
        })
    }

    fn kernel(&self) -> KernelView {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned());
        let btf_path = Path::new("/sys/kernel/btf/vmlinux");
        // /proc/self/mounts, not the directory: without root, tracefs is mounted but not
        // readable.
        let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("events").is_dir())
            .or_else(|| {
                tracefs_mount(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default())
            });
        let tracefs = match tracefs {
            Some(p) => Tracefs::Mounted(p),
            None if std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
                t.lines()
                    .any(|l| l.split_whitespace().last() == Some("tracefs"))
            }) =>
            {
                Tracefs::NotMounted
            }
            None => Tracefs::Unsupported,
        };
        let kfree_skb_format = match &tracefs {
            Tracefs::Mounted(p) => {
                std::fs::read_to_string(p.join("events/skb/kfree_skb/format")).ok()
            }
            _ => None,
        };
        let btf_drop_reasons = if kfree_skb_format.is_none() && btf_path.exists() {
            crate::kernel::btf::Btf::from_file(btf_path)
                .ok()
                .and_then(|b| b.enum_variants("skb_drop_reason").ok())
                .map(|v| {
                    v.into_iter()
                        .filter_map(|(n, _)| n.strip_prefix("SKB_DROP_REASON_").map(str::to_owned))
                        .filter(|n| n != "MAX")
                        .collect()
                })
        } else {
            None
        };
        KernelView {
            release,
            btf: btf_path.exists(),
            tracefs,
            kfree_skb_format,
            btf_drop_reasons,
        }
    }
}

/// The first tracefs mount point in a mounts table (/proc/self/mounts).
pub fn tracefs_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(point.replace("\\040", " ")))
    })
}

/// `GET /networks` -> networks with their IPAM subnets.
pub fn parse_networks(v: &Value) -> Vec<DockerNetwork> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|n| DockerNetwork {
                    name: n["Name"].as_str().unwrap_or("?").to_owned(),
                    driver: n["Driver"].as_str().unwrap_or("?").to_owned(),
                    scope: n["Scope"].as_str().unwrap_or("?").to_owned(),
                    ingress: n["Ingress"].as_bool().unwrap_or(false),
                    bridge: n["Options"]["com.docker.network.bridge.name"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| {
                            // Docker names a bridge network's device br-<first 12 of the id>.
                            (n["Driver"] == "bridge").then(|| {
                                let id = n["Id"].as_str().unwrap_or("");
                                format!("br-{}", id.get(..12).unwrap_or(id))
                            })
                        }),
                    subnets: n["IPAM"]["Config"]
                        .as_array()
                        .map(|c| {
                            c.iter()
                                .filter_map(|c| parse_cidr(c["Subnet"].as_str()?).ok())
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /services` -> the ports swarm services publish.
pub fn parse_services(v: &Value) -> Vec<PublishedPort> {
    let mut out = Vec::new();
    for s in v.as_array().into_iter().flatten() {
        let name = s["Spec"]["Name"].as_str().unwrap_or("?");
        // Endpoint.Ports is what is in force; Spec.EndpointSpec.Ports what was asked for.
        let ports = s["Endpoint"]["Ports"]
            .as_array()
            .or_else(|| s["Spec"]["EndpointSpec"]["Ports"].as_array());
        for p in ports.into_iter().flatten() {
            let Some(port) = p["PublishedPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            out.push(PublishedPort {
                service: name.to_owned(),
                port,
                target: p["TargetPort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0),
                protocol: p["Protocol"].as_str().unwrap_or("tcp").to_owned(),
                mode: p["PublishMode"].as_str().unwrap_or("ingress").to_owned(),
            });
        }
    }
    out
}

/// The command: prints text or JSON; returns Ok(true) when no finding is Serious.
pub fn doctor(args: DoctorArgs) -> anyhow::Result<bool> {
    let host = LiveHost::new();
    let report = check(&host, &args);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    out.flush()?;
    Ok(report.serious() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn cidr(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }

    fn iface(netns: &str, name: &str, c: &str, bridge: bool) -> Iface {
        Iface {
            netns: netns.to_owned(),
            name: name.to_owned(),
            cidr: cidr(c),
            bridge,
        }
    }

    fn route(dest: &str, via: Option<&str>, dev: &str) -> Route {
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
    struct Fake {
        sysctls: BTreeMap<String, String>,
        scope: Scope,
        ifaces: Vec<Iface>,
        routes: Vec<Route>,
        rules: Vec<Ruleset>,
        mangle: Option<String>,
        conntrack: Vec<ConntrackFill>,
        docker: DockerApi,
        kernel: KernelView,
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
        fn ingress_sbox_mangle(&self) -> Option<String> {
            self.mangle.clone()
        }
        fn conntrack(&self) -> Vec<ConntrackFill> {
            self.conntrack.clone()
        }
        fn docker(&self) -> DockerApi {
            self.docker.clone()
        }
        fn kernel(&self) -> KernelView {
            self.kernel.clone()
        }
    }

    impl Fake {
        /// A healthy machine without Docker, Linux 6.18.
        fn plain() -> Self {
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
                mangle: None,
                conntrack: vec![ConntrackFill {
                    netns: "host".to_owned(),
                    count: 10,
                    max: 262144,
                }],
                docker: DockerApi::Absent,
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
        fn swarm() -> Self {
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
                published: Ok(published),
            });
            h
        }

        fn set(&mut self, k: &str, v: &str) {
            self.sysctls.insert(k.to_owned(), v.to_owned());
        }

        fn unset(&mut self, k: &str) {
            self.sysctls.remove(k);
        }

        fn run(&self, clients: &[&str]) -> Report {
            check(
                self,
                &DoctorArgs {
                    client_cidr: clients.iter().map(|c| cidr(c)).collect(),
                    json: false,
                },
            )
        }

        fn replace_rules(&mut self, from: &str, to: &str) {
            let t = self.rules[0].text.as_ref().unwrap().replace(from, to);
            assert_ne!(
                &t,
                self.rules[0].text.as_ref().unwrap(),
                "{from:?} not in the rules"
            );
            self.rules[0].text = Ok(t);
        }
    }

    fn worst(r: &Report, id: &str) -> Severity {
        r.worst(id)
            .unwrap_or_else(|| panic!("no finding {id}:\n{}", r.to_text()))
    }

    fn problems(r: &Report) -> Vec<String> {
        r.findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .map(|f| format!("{} {:?}: {}", f.id, f.severity, f.title))
            .collect()
    }

    #[test]
    fn a_healthy_machine_without_docker_is_clean() {
        let r = Fake::plain().run(&["10.20.0.0/16"]);
        assert!(problems(&r).is_empty(), "{:?}", problems(&r));
        assert_eq!(worst(&r, "docker"), Severity::Info);
        assert!(r.by_id("docker").any(|f| f.title == "no Docker here"));
        assert_eq!(r.by_id("docker-api").count(), 0);
        assert_eq!(worst(&r, "ip-forward"), Severity::Ok);
        assert_eq!(worst(&r, "client-overlap"), Severity::Ok);
        assert_eq!(r.serious(), 0);
    }

    #[test]
    fn a_healthy_swarm_node_is_clean() {
        let h = Fake::swarm();
        let r = h.run(&["192.168.7.0/24", "203.0.113.0/24"]);
        assert!(
            problems(&r).is_empty(),
            "{:?}\n{}",
            problems(&r),
            r.to_text()
        );
        let dnat: Vec<&str> = r.by_id("ingress-dnat").map(|f| f.title.as_str()).collect();
        assert_eq!(dnat.len(), 2, "{dnat:?}");
        assert!(
            dnat.iter()
                .any(|t| t.contains("8080/tcp (service web_app): DNAT to 172.18.0.2:8080 (nft)")),
            "{dnat:?}"
        );
        assert!(
            dnat.iter().any(|t| t.contains("443/tcp (service proxy)")),
            "{dnat:?}"
        );
        assert!(r
            .by_id("docker")
            .any(|f| f.title.contains("Swarm routing mesh")));
        assert_eq!(worst(&r, "docker-api"), Severity::Ok);
        // docker_gwbridge seen from the host and ingress_sbox is one network; VIPs are not subnets.
        assert_eq!(r.by_id("docker-overlap").count(), 0);
        assert_eq!(r.by_id("route-overlap").count(), 0);
        let subnets = &r.by_id("docker-subnets").next().unwrap().detail;
        assert!(subnets.contains("172.18.0.0/16 (host:docker_gwbridge, ingress_sbox:eth1, network docker_gwbridge (bridge))"), "{subnets}");
        assert!(!subnets.contains("fe80"), "{subnets}");
        // Host-mode ports are not the mesh's.
        assert!(!r.to_text().contains("9100"));
    }

    #[test]
    fn tcp_tw_recycle() {
        let mut h = Fake::plain();
        let r = h.run(&[]);
        assert_eq!(worst(&r, "tcp-tw-recycle"), Severity::Ok);
        assert!(r
            .by_id("tcp-tw-recycle")
            .next()
            .unwrap()
            .title
            .contains("removed in Linux 4.12"));
        h.set("net.ipv4.tcp_tw_recycle", "0");
        assert_eq!(worst(&h.run(&[]), "tcp-tw-recycle"), Severity::Ok);
        h.set("net.ipv4.tcp_tw_recycle", "1");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "tcp-tw-recycle"), Severity::Serious);
        let f = r.by_id("tcp-tw-recycle").next().unwrap();
        assert!(f.detail.contains("PAWSPassive") && f.fix.is_some());
    }

    #[test]
    fn tcp_timestamps_and_tw_reuse_are_information() {
        let mut h = Fake::plain();
        for v in ["0", "1", "2"] {
            h.set("net.ipv4.tcp_timestamps", v);
            let r = h.run(&[]);
            assert_eq!(worst(&r, "tcp-timestamps"), Severity::Info);
            assert!(r
                .by_id("tcp-timestamps")
                .next()
                .unwrap()
                .title
                .contains(&format!("= {v}")));
        }
        h.set("net.ipv4.tcp_timestamps", "1");
        assert!(h
            .run(&[])
            .by_id("tcp-timestamps")
            .next()
            .unwrap()
            .detail
            .contains("PAWS"));
        assert_eq!(worst(&h.run(&[]), "tcp-tw-reuse"), Severity::Info);
    }

    #[test]
    fn syncookies() {
        let mut h = Fake::plain();
        assert_eq!(worst(&h.run(&[]), "tcp-syncookies"), Severity::Ok);
        h.set("net.ipv4.tcp_syncookies", "2");
        assert_eq!(worst(&h.run(&[]), "tcp-syncookies"), Severity::Info);
        h.set("net.ipv4.tcp_syncookies", "0");
        assert_eq!(worst(&h.run(&[]), "tcp-syncookies"), Severity::Warning);
        h.unset("net.ipv4.tcp_syncookies");
        assert_eq!(worst(&h.run(&[]), "tcp-syncookies"), Severity::Warning);
    }

    #[test]
    fn backlogs() {
        let mut h = Fake::plain();
        h.set("net.core.somaxconn", "1023");
        assert_eq!(worst(&h.run(&[]), "somaxconn"), Severity::Warning);
        h.set("net.core.somaxconn", "1024");
        assert_eq!(worst(&h.run(&[]), "somaxconn"), Severity::Ok);
        // A small SYN backlog matters when SYN cookies are off.
        h.set("net.ipv4.tcp_max_syn_backlog", "512");
        assert_eq!(worst(&h.run(&[]), "tcp-max-syn-backlog"), Severity::Info);
        h.set("net.ipv4.tcp_syncookies", "0");
        assert_eq!(worst(&h.run(&[]), "tcp-max-syn-backlog"), Severity::Warning);
        h.set("net.ipv4.tcp_max_syn_backlog", "1024");
        assert_eq!(worst(&h.run(&[]), "tcp-max-syn-backlog"), Severity::Ok);
    }

    #[test]
    fn ip_forward_matters_with_docker_only() {
        let mut h = Fake::swarm();
        h.set("net.ipv4.ip_forward", "0");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ip-forward"), Severity::Serious);
        assert_eq!(r.serious(), 1, "{:?}", problems(&r));
        let mut h = Fake::plain();
        h.set("net.ipv4.ip_forward", "0");
        assert_eq!(worst(&h.run(&[]), "ip-forward"), Severity::Ok);
        // A bare docker_gwbridge is enough to call it Docker.
        h.ifaces
            .push(iface("host", "docker_gwbridge", "172.18.0.1/16", true));
        assert_eq!(worst(&h.run(&[]), "ip-forward"), Severity::Serious);
    }

    #[test]
    fn bridge_nf_call_iptables() {
        let mut h = Fake::swarm();
        assert_eq!(worst(&h.run(&[]), "bridge-nf-call-iptables"), Severity::Ok);
        h.set("net.bridge.bridge-nf-call-iptables", "0");
        assert_eq!(
            worst(&h.run(&[]), "bridge-nf-call-iptables"),
            Severity::Warning
        );
        h.unset("net.bridge.bridge-nf-call-iptables");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "bridge-nf-call-iptables"), Severity::Warning);
        assert!(r
            .by_id("bridge-nf-call-iptables")
            .next()
            .unwrap()
            .title
            .contains("br_netfilter not loaded"));
        assert_eq!(
            worst(&Fake::plain().run(&[]), "bridge-nf-call-iptables"),
            Severity::Ok
        );
    }

    #[test]
    fn rp_filter_in_force_is_max_of_all_and_interface() {
        let rp = |all: &str, eth0: &str| {
            let mut h = Fake::plain();
            h.set("net.ipv4.conf.all.rp_filter", all);
            h.set("net.ipv4.conf.eth0.rp_filter", eth0);
            h.run(&[])
        };
        assert_eq!(worst(&rp("0", "0"), "rp-filter"), Severity::Ok);
        assert_eq!(worst(&rp("1", "0"), "rp-filter"), Severity::Warning);
        assert_eq!(worst(&rp("0", "1"), "rp-filter"), Severity::Warning);
        assert_eq!(worst(&rp("1", "2"), "rp-filter"), Severity::Ok);
        assert_eq!(worst(&rp("2", "1"), "rp-filter"), Severity::Ok);
        assert_eq!(worst(&rp("2", "0"), "rp-filter"), Severity::Ok);
        let r = rp("1", "0");
        let f = r.by_id("rp-filter").next().unwrap();
        assert!(
            f.title.contains("eth0") && !f.title.contains("lo,"),
            "{}",
            f.title
        );
        assert!(f
            .detail
            .contains("max(conf.all.rp_filter, conf.IFACE.rp_filter)"));
        // Loopback does not count; strict default only warns about the future.
        let mut h = Fake::plain();
        h.set("net.ipv4.conf.lo.rp_filter", "1");
        assert_eq!(worst(&h.run(&[]), "rp-filter"), Severity::Ok);
        h.set("net.ipv4.conf.default.rp_filter", "1");
        assert_eq!(worst(&h.run(&[]), "rp-filter"), Severity::Info);
        // A VLAN interface: its sysctl name writes the dot as a slash.
        let mut h = Fake::plain();
        h.set("net.ipv4.conf.eth0/100.rp_filter", "1");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "rp-filter"), Severity::Warning);
        assert!(r
            .by_id("rp-filter")
            .next()
            .unwrap()
            .title
            .contains("eth0.100"));
    }

    #[test]
    fn client_cidrs_overlapping_docker_are_serious() {
        let h = Fake::swarm();
        let r = h.run(&["172.18.5.0/24"]);
        let hits: Vec<&Finding> = r.by_id("client-overlap").collect();
        assert!(hits.iter().all(|f| f.severity == Severity::Serious));
        let titles: Vec<&str> = hits.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(titles, ["client network 172.18.5.0/24 overlaps 172.18.0.0/16 (host:docker_gwbridge, ingress_sbox:eth1, network docker_gwbridge (bridge))"]);
        assert!(hits[0].detail.contains("reply-misrouted"));
        assert!(
            hits[0]
                .detail
                .contains("route 172.18.0.0/16 dev docker_gwbridge"),
            "{}",
            hits[0].detail
        );
        // A client network covering Docker's, the ingress subnet (from namespaces and API),
        // host bits in the argument, and other families.
        assert_eq!(
            worst(&h.run(&["172.16.0.0/12"]), "client-overlap"),
            Severity::Serious
        );
        assert_eq!(
            worst(&h.run(&["10.0.0.77/24"]), "client-overlap"),
            Severity::Serious
        );
        assert_eq!(
            worst(&h.run(&["10.0.1.128/25"]), "client-overlap"),
            Severity::Serious
        );
        assert_eq!(
            worst(&h.run(&["10.0.2.0/24"]), "client-overlap"),
            Severity::Ok
        );
        assert_eq!(
            worst(&h.run(&["fd00::/64"]), "client-overlap"),
            Severity::Ok
        );
        let ok = h.run(&["192.168.1.0/24"]);
        let f = ok.by_id("client-overlap").next().unwrap();
        assert_eq!(f.severity, Severity::Ok);
        assert!(f.detail.contains("192.168.1.0/24 dev eth0"), "{}", f.detail);
        assert_eq!(ok.serious(), 0);
        // Without the API (and namespaces), the bridges still give it away.
        let mut h = Fake::plain();
        h.ifaces
            .push(iface("host", "docker_gwbridge", "172.18.0.1/16", true));
        h.set("net.ipv4.ip_forward", "1");
        let r = h.run(&["172.18.5.0/24", "10.9.0.0/16"]);
        assert_eq!(r.serious(), 1, "{:?}", problems(&r));
        assert_eq!(r.by_id("client-overlap").count(), 2);
    }

    #[test]
    fn other_bridges_of_the_host() {
        // A VM host: the LAN NIC is enslaved to br0, which carries the default route; clients
        // on that LAN are not misrouted.
        let mut h = Fake::plain();
        h.ifaces = vec![
            iface("host", "br0", "192.168.1.10/24", true),
            iface("host", "virbr0", "192.168.122.1/24", true),
        ];
        h.routes = vec![
            route("default", Some("192.168.1.1"), "br0"),
            route("192.168.1.0/24", None, "br0"),
            route("192.168.122.0/24", None, "virbr0"),
        ];
        let r = h.run(&["192.168.1.0/24"]);
        assert_eq!(worst(&r, "client-overlap"), Severity::Ok, "{}", r.to_text());
        // Another bridge: a warning, not the Docker cause.
        let r = h.run(&["192.168.122.0/24"]);
        assert_eq!(worst(&r, "client-overlap"), Severity::Warning);
        assert!(r
            .by_id("client-overlap")
            .next()
            .unwrap()
            .title
            .contains("(host:virbr0, not Docker's)"));
        assert!(r.by_id("docker").any(|f| f.title == "no Docker here"));
        // A bridge the Docker API names is Docker's, whatever it is called.
        let mut h = Fake::swarm();
        h.ifaces
            .push(iface("host", "mybridge", "172.30.0.1/16", true));
        if let DockerApi::Available(i) = &mut h.docker {
            i.networks.push(DockerNetwork {
                name: "custom".into(),
                driver: "bridge".into(),
                scope: "local".into(),
                ingress: false,
                subnets: vec![cidr("172.30.0.0/16")],
                bridge: Some("mybridge".into()),
            });
        }
        let r = h.run(&["172.30.9.0/24"]);
        assert_eq!(worst(&r, "client-overlap"), Severity::Serious);
        assert!(r
            .by_id("client-overlap")
            .next()
            .unwrap()
            .title
            .contains("(host:mybridge, network custom (bridge))"));
    }

    #[test]
    fn docker_subnets_against_host_routes() {
        let mut h = Fake::swarm();
        // A VPN route covering the ingress network, and a LAN route inside docker0's.
        h.routes
            .push(route("10.0.0.0/8", Some("192.168.1.254"), "eth0"));
        h.routes
            .push(route("172.17.3.0/24", Some("192.168.1.253"), "eth0"));
        let r = h.run(&[]);
        let titles: Vec<String> = r
            .by_id("route-overlap")
            .map(|f| format!("{:?} {}", f.severity, f.title))
            .collect();
        assert!(r
            .by_id("route-overlap")
            .all(|f| f.severity == Severity::Warning));
        assert_eq!(titles.len(), 3, "{titles:?}");
        assert!(titles.iter().any(|t| t.ends_with("10.0.0.0/24 (ingress_sbox:eth0, 1-qz3f5l0x2m:br0, lb_qz3f5l0x2:eth0, network ingress (overlay)) overlaps the host route 10.0.0.0/8 via 192.168.1.254 dev eth0")), "{titles:?}");
        assert!(titles.iter().any(|t| t.ends_with("10.0.1.0/24 (network web_default (overlay)) overlaps the host route 10.0.0.0/8 via 192.168.1.254 dev eth0")), "{titles:?}");
        assert!(titles.iter().any(|t| t.ends_with("172.17.0.0/16 (host:docker0, network bridge (bridge)) overlaps the host route 172.17.3.0/24 via 192.168.1.253 dev eth0")), "{titles:?}");
        assert!(r.by_id("route-overlap").any(|f| f
            .detail
            .starts_with("the host's route to 10.0.0.0/8 covers 10.0.0.0/24")));
        assert!(r.by_id("route-overlap").any(|f| f
            .detail
            .starts_with("172.17.0.0/16 covers the host's route to 172.17.3.0/24")));
        assert_eq!(r.serious(), 0);
        // The bridges' own routes, the default route and link-local routes are not conflicts.
        assert_eq!(Fake::swarm().run(&[]).by_id("route-overlap").count(), 0);
    }

    #[test]
    fn docker_subnets_against_each_other() {
        let mut h = Fake::swarm();
        h.ifaces
            .push(iface("host", "br-5f1c0a7b2d3e", "172.17.0.1/16", true));
        let r = h.run(&[]);
        assert_eq!(worst(&r, "docker-overlap"), Severity::Warning);
        assert!(r
            .by_id("docker-overlap")
            .any(|f| f.title.contains("host:br-5f1c0a7b2d3e 172.17.0.0/16")
                && f.title.contains("host:docker0 172.17.0.0/16")));
        // Two API networks sharing a range, and an overlay inside another namespace's subnet.
        let mut h = Fake::swarm();
        if let DockerApi::Available(i) = &mut h.docker {
            i.networks.push(DockerNetwork {
                name: "legacy".into(),
                driver: "bridge".into(),
                scope: "local".into(),
                ingress: false,
                subnets: vec![cidr("10.0.0.0/16")],
                bridge: Some("br-legacy".into()),
            });
        }
        h.ifaces
            .push(iface("task1234abcd", "eth2", "10.0.0.9/16", false));
        let r = h.run(&[]);
        let titles: Vec<&str> = r
            .by_id("docker-overlap")
            .map(|f| f.title.as_str())
            .collect();
        assert!(
            titles
                .iter()
                .any(|t| t.contains("network legacy (bridge) 10.0.0.0/16")
                    && t.contains("network ingress (overlay) 10.0.0.0/24")),
            "{titles:?}"
        );
        assert!(
            titles
                .iter()
                .any(|t| t.contains("task1234abcd:eth2 10.0.0.0/16")),
            "{titles:?}"
        );
    }

    #[test]
    fn missing_dnat_is_serious() {
        let mut h = Fake::swarm();
        h.replace_rules("-A DOCKER-INGRESS -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:8080\n", "");
        let r = h.run(&[]);
        assert_eq!(r.serious(), 1, "{:?}", problems(&r));
        let f = r
            .by_id("ingress-dnat")
            .find(|f| f.severity == Severity::Serious)
            .unwrap();
        assert_eq!(
            f.title,
            "published port 8080/tcp (service web_app) has no DNAT rule in DOCKER-INGRESS"
        );
        assert!(f
            .fix
            .as_deref()
            .unwrap()
            .contains("docker service update --force"));
        // Flushed entirely: both ports.
        let mut h = Fake::swarm();
        h.rules[0].text = Ok(String::new());
        let r = h.run(&[]);
        assert_eq!(
            r.by_id("ingress-dnat")
                .filter(|f| f.severity == Severity::Serious)
                .count(),
            2
        );
    }

    #[test]
    fn missing_prerouting_jump_is_serious() {
        let mut h = Fake::swarm();
        h.replace_rules(
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n",
            "",
        );
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ingress-jump"), Severity::Serious);
        assert_eq!(r.by_id("ingress-jump").count(), 2);
        // Reached through another chain is fine.
        let mut h = Fake::swarm();
        h.replace_rules(
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n",
            ":MINE - [0:0]\n-A PREROUTING -j MINE\n-A MINE -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n",
        );
        assert_eq!(h.run(&[]).by_id("ingress-jump").count(), 0);
    }

    #[test]
    fn dnat_to_somewhere_else_is_serious() {
        let mut h = Fake::swarm();
        h.replace_rules(
            "--to-destination 172.18.0.2:443",
            "--to-destination 172.19.0.2:443",
        );
        let r = h.run(&[]);
        let f = r
            .by_id("ingress-dnat")
            .find(|f| f.severity == Severity::Serious)
            .unwrap();
        assert!(
            f.title
                .contains("172.19.0.2:443, which is not ingress_sbox's address"),
            "{}",
            f.title
        );
        // Without ingress_sbox's addresses, docker_gwbridge's subnet decides.
        h.ifaces.retain(|i| i.netns != "ingress_sbox");
        assert_eq!(worst(&h.run(&[]), "ingress-dnat"), Severity::Serious);
        h.replace_rules("172.19.0.2:443", "172.18.0.3:443");
        assert_eq!(worst(&h.run(&[]), "ingress-dnat"), Severity::Ok);
    }

    #[test]
    fn forward_chain_must_let_the_syn_through() {
        let mut h = Fake::swarm();
        h.replace_rules("-A FORWARD -j DOCKER-INGRESS\n", "");
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ingress-forward"), Severity::Warning);
        // With an ACCEPT policy nothing is dropped.
        h.replace_rules(":FORWARD DROP", ":FORWARD ACCEPT");
        assert_eq!(h.run(&[]).by_id("ingress-forward").count(), 0);
    }

    #[test]
    fn ingress_sbox_must_mark_the_port() {
        let mut h = Fake::swarm();
        let m = h
            .mangle
            .take()
            .unwrap()
            .replace("--dport 443 -j MARK", "--dport 444 -j MARK");
        h.mangle = Some(m);
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ingress-sbox-mark"), Severity::Serious);
        assert_eq!(
            r.by_id("ingress-sbox-mark").next().unwrap().title,
            "ingress_sbox does not mark port 443/tcp for IPVS"
        );
        // Not read: not checked.
        h.mangle = None;
        assert_eq!(h.run(&[]).by_id("ingress-sbox-mark").count(), 0);
    }

    #[test]
    fn without_the_api_the_rules_say_which_ports() {
        let mut h = Fake::swarm();
        h.docker = DockerApi::Absent;
        let r = h.run(&[]);
        assert!(problems(&r).is_empty(), "{:?}", problems(&r));
        assert_eq!(
            r.by_id("ingress-dnat")
                .filter(|f| f.severity == Severity::Ok)
                .count(),
            2
        );
        assert_eq!(worst(&r, "docker-api"), Severity::Info);
        // No DNAT rule and no API: nothing is known to be missing.
        h.rules[0].text = Ok(String::new());
        let r = h.run(&[]);
        assert_eq!(worst(&r, "ingress-dnat"), Severity::Info);
        assert_eq!(r.serious(), 0);
        // Not a manager: /services fails, the rules decide.
        let mut h = Fake::swarm();
        if let DockerApi::Available(i) = &mut h.docker {
            i.published = Err("HTTP 503: This node is not a swarm manager.".into());
        }
        let r = h.run(&[]);
        assert_eq!(
            r.by_id("ingress-dnat")
                .filter(|f| f.severity == Severity::Ok)
                .count(),
            2
        );
        assert!(r
            .by_id("docker-api")
            .next()
            .unwrap()
            .title
            .contains("not a swarm manager"));
    }

    #[test]
    fn iptables_backends_and_unreadable_rules() {
        let mut h = Fake::swarm();
        let nft = h.rules[0].clone();
        h.rules.push(Ruleset {
            backend: "legacy".into(),
            text: nft.text.clone(),
        });
        let r = h.run(&[]);
        assert_eq!(worst(&r, "iptables-backends"), Severity::Info);
        assert_eq!(r.serious(), 0);
        // The legacy backend alone holds Docker's rules (nft is empty): still found.
        h.rules[0].text = Ok(String::new());
        let r = h.run(&[]);
        assert!(r
            .by_id("ingress-dnat")
            .all(|f| f.severity == Severity::Ok && f.title.ends_with("(legacy)")));
        // Unreadable: say so, do not guess.
        h.rules = vec![Ruleset {
            backend: "nft".into(),
            text: Err("Permission denied (you must be root)".into()),
        }];
        let r = h.run(&[]);
        assert_eq!(worst(&r, "iptables"), Severity::Info);
        assert!(r
            .by_id("iptables")
            .next()
            .unwrap()
            .detail
            .contains("you must be root"));
        assert_eq!(r.by_id("ingress-dnat").count(), 0);
    }

    #[test]
    fn docker_without_swarm_has_no_mesh_to_check() {
        let mut h = Fake::plain();
        h.ifaces
            .push(iface("host", "docker0", "172.17.0.1/16", true));
        h.set("net.ipv4.ip_forward", "1");
        h.set("net.bridge.bridge-nf-call-iptables", "1");
        let r = h.run(&[]);
        assert!(problems(&r).is_empty(), "{:?}", problems(&r));
        assert!(r
            .by_id("ingress-dnat")
            .next()
            .unwrap()
            .title
            .contains("no Swarm routing mesh"));
        assert_eq!(worst(&r, "docker-api"), Severity::Info);
        h.docker = DockerApi::Failed("permission denied".into());
        let r = h.run(&[]);
        assert!(r
            .by_id("docker-api")
            .next()
            .unwrap()
            .fix
            .as_deref()
            .unwrap()
            .contains("docker group"));
    }

    #[test]
    fn conntrack_fill() {
        let fill = |count: u64, max: u64| {
            let mut h = Fake::plain();
            h.conntrack = vec![
                ConntrackFill {
                    netns: "host".into(),
                    count: 5,
                    max,
                },
                ConntrackFill {
                    netns: "ingress_sbox".into(),
                    count,
                    max,
                },
            ];
            h.run(&[])
        };
        assert_eq!(worst(&fill(95, 100), "conntrack"), Severity::Serious);
        assert_eq!(worst(&fill(91, 100), "conntrack"), Severity::Serious);
        assert_eq!(worst(&fill(90, 100), "conntrack"), Severity::Warning);
        assert_eq!(worst(&fill(71, 100), "conntrack"), Severity::Warning);
        assert_eq!(worst(&fill(70, 100), "conntrack"), Severity::Ok);
        let r = fill(95, 100);
        let f = r.by_id("conntrack").next().unwrap();
        assert_eq!(
            f.title,
            "conntrack table 95% full in ingress_sbox (95 of 100)"
        );
        assert!(f.detail.contains("NETFILTER_DROP") && f.detail.contains("table full"));
        assert_eq!(
            fill(50, 100).by_id("conntrack").next().unwrap().title,
            "conntrack table at most 50% full (ingress_sbox: 50 of 100)"
        );
        let mut h = Fake::plain();
        h.conntrack.clear();
        assert_eq!(worst(&h.run(&[]), "conntrack"), Severity::Info);
    }

    #[test]
    fn kernel_capabilities() {
        let r = Fake::plain().run(&[]);
        for id in [
            "btf",
            "tracefs",
            "ring-buffer",
            "drop-reasons",
            "tw-paws-reason",
            "tcx",
        ] {
            assert_eq!(worst(&r, id), Severity::Ok, "{id}");
        }
        assert!(r
            .by_id("drop-reasons")
            .next()
            .unwrap()
            .title
            .contains("127 names"));

        // 5.15: no reasons in the tracepoint, ring buffer yes, TCX no.
        let mut h = Fake::plain();
        h.kernel.release = Some("5.15.0-91-generic".into());
        h.kernel.kfree_skb_format = Some(
            "name: kfree_skb\nformat:\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\nprint fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location\n".into(),
        );
        let r = h.run(&[]);
        assert_eq!(worst(&r, "drop-reasons"), Severity::Warning);
        assert_eq!(worst(&r, "tw-paws-reason"), Severity::Info);
        assert_eq!(worst(&r, "tcx"), Severity::Info);
        assert_eq!(worst(&r, "ring-buffer"), Severity::Ok);
        assert_eq!(r.serious(), 0);

        // 6.8, tracefs not mounted, names from BTF without the PAWS reason.
        let mut h = Fake::plain();
        h.kernel.release = Some("6.8.0".into());
        h.kernel.tracefs = Tracefs::NotMounted;
        h.kernel.kfree_skb_format = None;
        h.kernel.btf_drop_reasons = Some(vec!["NOT_SPECIFIED".into(), "NO_SOCKET".into()]);
        let r = h.run(&[]);
        assert_eq!(worst(&r, "tracefs"), Severity::Info);
        assert!(r
            .by_id("drop-reasons")
            .next()
            .unwrap()
            .title
            .contains("from BTF"));
        assert_eq!(worst(&r, "tw-paws-reason"), Severity::Info);
        assert_eq!(worst(&r, "tcx"), Severity::Ok);

        // Nothing readable: the version decides.
        h.kernel.btf_drop_reasons = None;
        h.kernel.release = Some("6.15.1".into());
        let r = h.run(&[]);
        assert!(r
            .by_id("drop-reasons")
            .next()
            .unwrap()
            .title
            .contains("from the kernel version"));
        assert_eq!(worst(&r, "tw-paws-reason"), Severity::Info);
        h.kernel.release = Some("6.16.0".into());
        assert_eq!(worst(&h.run(&[]), "tw-paws-reason"), Severity::Ok);

        // An old, bare kernel.
        let mut h = Fake::plain();
        h.kernel = KernelView {
            release: Some("4.19.0".into()),
            btf: false,
            tracefs: Tracefs::Unsupported,
            kfree_skb_format: None,
            btf_drop_reasons: None,
        };
        let r = h.run(&[]);
        for id in ["btf", "tracefs", "ring-buffer", "drop-reasons"] {
            assert_eq!(worst(&r, id), Severity::Warning, "{id}");
        }
        assert_eq!(r.serious(), 0, "what run can see never fails doctor");
    }

    #[test]
    fn not_root_is_said() {
        let mut h = Fake::plain();
        h.scope.root = false;
        h.scope.initial = None;
        h.scope.note = Some("entering them needs root".into());
        let r = h.run(&[]);
        assert_eq!(worst(&r, "scope"), Severity::Info);
        assert!(r
            .by_id("scope")
            .next()
            .unwrap()
            .detail
            .contains("entering them needs root"));
        assert_eq!(worst(&r, "privileges"), Severity::Info);
    }

    #[test]
    fn every_id_has_a_group() {
        let mut h = Fake::swarm();
        h.set("net.ipv4.tcp_tw_recycle", "1");
        h.set("net.ipv4.ip_forward", "0");
        h.routes
            .push(route("10.0.0.0/8", Some("192.168.1.254"), "eth0"));
        h.ifaces.push(iface("host", "br-1", "172.17.0.1/16", true));
        h.replace_rules(
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n",
            "",
        );
        h.replace_rules("-A FORWARD -j DOCKER-INGRESS\n", "");
        h.mangle = Some(String::new());
        h.rules.push(Ruleset {
            backend: "legacy".into(),
            text: h.rules[0].text.clone(),
        });
        h.scope.root = false;
        let mut all = h.run(&["172.18.0.0/24"]).findings;
        let mut p = Fake::plain();
        p.conntrack.clear();
        all.extend(p.run(&[]).findings);
        p.rules = vec![];
        p.ifaces
            .push(iface("host", "docker_gwbridge", "172.18.0.1/16", true));
        all.extend(p.run(&[]).findings);
        let ids: BTreeSet<&str> = all.iter().map(|f| f.id).collect();
        for id in &ids {
            assert_ne!(group_of(id).1, "other", "{id} has no group");
        }
        let known: BTreeSet<&str> = GROUPS
            .iter()
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        let unseen: Vec<&&str> = known.difference(&ids).collect();
        assert!(unseen.is_empty(), "ids never produced here: {unseen:?}");
    }

    #[test]
    fn json_and_text_output() {
        let mut h = Fake::swarm();
        h.set("net.ipv4.tcp_tw_recycle", "1");
        let r = h.run(&["172.18.5.0/24"]);
        let v = r.to_json();
        assert_eq!(v["type"], "doctor");
        assert_eq!(v["serious"], r.serious());
        assert_eq!(r.serious(), 2, "{:?}", problems(&r));
        let findings = v["findings"].as_array().unwrap();
        assert_eq!(findings.len(), r.findings.len());
        let f = findings
            .iter()
            .find(|f| f["id"] == "tcp-tw-recycle")
            .unwrap();
        assert_eq!(f["severity"], "serious");
        assert!(f["fix"].is_string());
        let keys: Vec<&String> = f.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "severity", "title", "detail", "fix"]);
        let ok = findings.iter().find(|f| f["id"] == "somaxconn").unwrap();
        assert!(ok["fix"].is_null());

        let text = r.to_text();
        let groups: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(' '))
            .collect();
        assert_eq!(
            &groups[..6],
            [
                "scope",
                "sysctls",
                "subnets",
                "Docker and the routing mesh",
                "conntrack",
                "what `swarmtrace run` can see on this kernel"
            ]
        );
        assert!(
            text.contains("  [SERIOUS] net.ipv4.tcp_tw_recycle = 1"),
            "{text}"
        );
        assert!(
            text.contains("\n            fix: sysctl -w net.ipv4.tcp_tw_recycle=0"),
            "{text}"
        );
        assert!(
            text.lines().all(|l| l.len() <= 100 || !l.contains(' ')),
            "{text}"
        );
        assert!(text.trim_end().ends_with("(exit status 1)"), "{text}");
    }

    #[test]
    fn wraps_words() {
        assert_eq!(wrap("aaa bbb ccc", 2, 9), "  aaa bbb\n  ccc\n");
        assert_eq!(wrap("", 2, 9), "");
        assert_eq!(
            wrap("averyveryverylongword x", 2, 9),
            "  averyveryverylongword\n  x\n"
        );
    }

    #[test]
    fn parses_ip_route() {
        let t = "default via 192.168.1.1 dev eth0 proto dhcp src 192.168.1.10 metric 100 \n\
                 10.0.0.0/8 via 192.168.1.254 dev eth0 \n\
                 172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown \n\
                 unreachable 10.99.0.0/16 \n\
                 blackhole 10.98.0.0/16 proto static \n";
        let r = parse_ip_route(t, false);
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].dest, cidr("0.0.0.0/0"));
        assert_eq!(r[0].via, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(r[0].dev.as_deref(), Some("eth0"));
        assert_eq!(r[2].dev.as_deref(), Some("docker0"));
        assert_eq!(r[2].via, None);
        assert_eq!(
            (r[3].kind.as_str(), r[3].dest),
            ("unreachable", cidr("10.99.0.0/16"))
        );
        assert_eq!(r[3].dev, None);
        assert_eq!(r[4].kind, "blackhole");
        let r6 = parse_ip_route("default via fe80::1 dev eth0 proto ra metric 1024 pref medium\nfd00:1::/64 dev eth0 proto kernel metric 256 pref medium\n", true);
        assert_eq!(r6[0].dest, cidr("::/0"));
        assert_eq!(r6[1].dest, cidr("fd00:1::/64"));
    }

    #[test]
    fn parses_bridge_names() {
        let t = "3: docker0: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN mode DEFAULT group default \\    link/ether 02:42:5d:0a:1b:2c brd ff:ff:ff:ff:ff:ff\n\
                 7: docker_gwbridge: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \\    link/ether 02:42:aa:bb:cc:dd brd ff:ff:ff:ff:ff:ff\n";
        assert_eq!(parse_ip_link_names(t), ["docker0", "docker_gwbridge"]);
    }

    #[test]
    fn parses_iptables_save() {
        let t = parse_iptables_save(&fixture("doctor/swarm-node.iptables-save"));
        assert_eq!(t.keys().collect::<Vec<_>>(), ["filter", "mangle", "nat"]);
        assert_eq!(t["filter"].policies["FORWARD"], "DROP");
        assert!(!t["filter"].policies.contains_key("DOCKER"));
        let d = ingress_dnats(&t["nat"]);
        assert_eq!(
            d,
            [
                IngressDnat {
                    protocol: "tcp".into(),
                    dport: 443,
                    to: Some("172.18.0.2".parse().unwrap()),
                    to_port: 443
                },
                IngressDnat {
                    protocol: "tcp".into(),
                    dport: 8080,
                    to: Some("172.18.0.2".parse().unwrap()),
                    to_port: 8080
                },
            ]
        );
        assert!(reaches(&t["nat"], "PREROUTING", "DOCKER-INGRESS"));
        assert!(reaches(&t["filter"], "FORWARD", "DOCKER-INGRESS"));
        assert!(!reaches(&t["filter"], "INPUT", "DOCKER-INGRESS"));
        // `iptables-save -c` counters, a DNAT without a port, the lab's shape.
        let t = parse_iptables_save(
            "*nat\n:PREROUTING ACCEPT [5:300]\n[83361:5932124] -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS\n[0:0] -A DOCKER-INGRESS -p udp -m udp --dport 53 -j DNAT --to-destination 172.18.0.2\n-A DOCKER-INGRESS -d 10.10.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:18080\nCOMMIT\n",
        );
        let d = ingress_dnats(&t["nat"]);
        assert_eq!(
            (d[0].protocol.as_str(), d[0].dport, d[0].to_port),
            ("udp", 53, 53)
        );
        assert_eq!((d[1].dport, d[1].to_port), (8080, 18080));
        assert!(reaches(&t["nat"], "PREROUTING", "DOCKER-INGRESS"));
    }

    #[test]
    fn parses_docker_api_answers() {
        let n = parse_networks(&serde_json::from_str(&fixture("doctor/networks.json")).unwrap());
        assert_eq!(n.len(), 6);
        let ingress = n.iter().find(|n| n.ingress).unwrap();
        assert_eq!(
            (ingress.name.as_str(), ingress.scope.as_str()),
            ("ingress", "swarm")
        );
        assert_eq!(ingress.subnets, [cidr("10.0.0.0/24")]);
        assert!(n
            .iter()
            .find(|n| n.name == "host")
            .unwrap()
            .subnets
            .is_empty());
        let p = parse_services(&serde_json::from_str(&fixture("doctor/services.json")).unwrap());
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            PublishedPort {
                service: "web_app".into(),
                port: 8080,
                target: 80,
                protocol: "tcp".into(),
                mode: "ingress".into()
            }
        );
        assert_eq!((p[1].port, p[1].target), (443, 8443));
        assert_eq!(p[2].mode, "host");
    }

    #[test]
    fn parses_http_answers() {
        let (s, b) = crate::docker::parse_http(
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[{\"Name\":\"x\"}]\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (200, "[{\"Name\":\"x\"}]\n"));
        let (s, b) = crate::docker::parse_http(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mes\r\n17\r\nsage\":\"not a manager\"}\n\r\n0\r\n\r\n").unwrap();
        assert_eq!(s, 503);
        assert_eq!(api_message(&b), "not a manager");
        assert!(crate::docker::parse_http(b"garbage").is_err());
    }

    #[test]
    fn finds_tracefs_mounts() {
        let m = "sysfs /sys sysfs rw,nosuid 0 0\ntracefs /sys/kernel/tracing tracefs rw,nosuid,nodev,noexec,relatime 0 0\n";
        assert_eq!(tracefs_mount(m), Some(PathBuf::from("/sys/kernel/tracing")));
        assert_eq!(tracefs_mount("sysfs /sys sysfs rw 0 0\n"), None);
    }

    #[test]
    fn names_docker_namespaces() {
        for n in [
            "ingress_sbox",
            "lb_qz3f5l0x2",
            "1-qz3f5l0x2m",
            "12-abcdefghij",
            "3f2a1b0c9d8e",
        ] {
            assert!(docker_netns_name(n), "{n}");
        }
        for n in ["st123host", "st1234-host", "blue", "1-short", "3f2a1b0c9d8"] {
            assert!(!docker_netns_name(n), "{n}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(cidr("172.18.0.1/16").network(), cidr("172.18.0.0/16"));
        assert_eq!(cidr("fd00::1:2/64").network(), cidr("fd00::/64"));
        assert_eq!(cidr("10.1.2.3/0").network(), cidr("0.0.0.0/0"));
        assert!(cidr("172.18.5.0/24").overlaps(&cidr("172.18.0.0/16")));
        assert!(cidr("172.16.0.0/12").overlaps(&cidr("172.18.0.0/16")));
        assert!(!cidr("172.19.0.0/16").overlaps(&cidr("172.18.0.0/16")));
        assert!(!cidr("::/0").overlaps(&cidr("172.18.0.0/16")));
        assert!(
            !usable(&cidr("fe80::1/64"))
                && !usable(&cidr("169.254.1.1/16"))
                && usable(&cidr("10.0.0.1/8"))
        );
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("weird"), None);
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0/100.rp_filter"),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
    }

    #[test]
    fn names_in_findings_are_escaped_in_text_and_exact_in_json() {
        let name = "br-\x1b]0;pwn\x07\u{9b}31m\nX";
        let r = Report {
            findings: vec![Finding::new(
                "rp-filter",
                Severity::Warning,
                format!("strict rp_filter in force on {name}"),
            )
            .detail(format!("{name} is strict"))],
        };
        let text = r.to_text();
        assert!(!text.contains('\x1b') && !text.contains('\u{9b}'), "{text}");
        assert!(
            // wrap() reads the newline as a space: no line of its own either.
            text.contains("strict rp_filter in force on br-\\x1b]0;pwn\\x07\\u{9b}31m X"),
            "{text}"
        );
        assert_eq!(
            r.to_json()["findings"][0]["title"],
            format!("strict rp_filter in force on {name}")
        );
    }
}
