//! The routing mesh lab: Docker Swarm's ingress path built from network namespaces, veths,
//! bridges and iptables, with one fault switched on at a time.
//!
//! ```text
//!  {p}-c1 10.10.0.11 ─┐
//!  {p}-c2 10.10.0.12 ─┤ bridge eth0 10.10.0.1/24           bridge docker_gwbridge 172.18.0.1/16
//!  {p}-c3 10.10.0.13 ─┤   (the "LAN" interface)   {p}-host   │
//!  {p}-rp 10.20.0.5  ─┤   DNAT 10.10.0.1:8080 -> 172.18.0.2:80 (nat DOCKER-INGRESS)
//!  {p}-ov 172.18.5.5 ─┘   filter FORWARD -> DOCKER-USER (accepts) -> DOCKER-INGRESS
//!                                                             │ port vsbox
//!                                       eth1 172.18.0.2/16 {p}-ingress_sbox
//!                                       DNAT 172.18.0.2:80 -> 10.0.0.5:80 (stands for IPVS)
//!                                       SNAT -o eth0 -d 10.0.0.0/24 -> 10.0.0.2
//!                                       eth0 10.0.0.2/24
//!                                             │
//!                                       eth0 10.0.0.5/24 {p}-task1, listener 0.0.0.0:80
//! ```
//!
//! `{p}-rp` and `{p}-ov` exist only once their scenario is applied. A [`MeshLab`] is built
//! healthy, then [`MeshLab::apply`] switches on one fault and [`MeshLab::drive`] sends that
//! scenario's traffic; a lab serves one scenario (build a fresh one for the next). Everything it
//! creates lives in its namespaces, which are removed when it is dropped (also on panic), and a
//! build first removes every namespace named `{p}-*` left by an earlier, killed run.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::observe::{self, Counters};
use super::traffic::{self, Outcome, Service};
use super::{addr, craft, veth, Netns};

pub const PUBLISHED_PORT: u16 = 8080;
pub const TASK_PORT: u16 = 80;
/// The host's LAN address, where the port is published.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
pub const GWBRIDGE_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
/// ingress_sbox's address on docker_gwbridge: the host's DNAT target.
pub const SBOX_GW_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
/// ingress_sbox's address on the ingress network: the SNAT source every client becomes.
pub const SBOX_INGRESS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const TASK_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// stale-backend: the address of a task that is gone, which ingress_sbox still balances to.
pub const GONE_TASK_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
/// Ordinary clients c1..c3 are 10.10.0.11..13.
pub const CLIENTS: usize = 3;
/// The rp-filter scenario's client, routed by the host via another interface.
pub const RP_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 5);
/// The subnet-overlap scenario's client, inside docker_gwbridge's 172.18.0.0/16.
pub const OVERLAP_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 5, 5);
/// The fixed source port of the paws scenario.
pub const PAWS_PORT: u16 = 40000;
/// The source port of bad-checksum's crafted SYN.
pub const CORRUPTED_PORT: u16 = 40100;
/// How much older than c1's last TSval the paws scenario's crafted SYN is.
pub const PAWS_TSVAL_BACK: u32 = 100_000;
/// The listen backlog of the listen-queue-full scenario's listener (it never accepts): with
/// backlog 1 the kernel queues 2 connections, then drops SYNs.
pub const FULL_BACKLOG: i32 = 1;

const HOST_ETH0_MAC: &str = "02:0a:0a:00:00:01";
const GWBRIDGE_MAC: &str = "02:42:ac:12:00:01";
/// The service's limits: connections served and lifetime.
const SERVICE_MAX: usize = 100_000;
const SERVICE_LIFETIME: Duration = Duration::from_secs(3600);

/// The address of ordinary client `i` (0-based): 10.10.0.11 + i.
pub fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, 0, 11 + i as u8)
}

/// One fault (or none) of the routing mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    Healthy,
    Paws,
    DropRule,
    NoListener,
    ListenQueueFull,
    RpFilter,
    SubnetOverlap,
    BadChecksum,
    StaleBackend,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::Healthy,
        Scenario::Paws,
        Scenario::DropRule,
        Scenario::NoListener,
        Scenario::ListenQueueFull,
        Scenario::RpFilter,
        Scenario::SubnetOverlap,
        Scenario::BadChecksum,
        Scenario::StaleBackend,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "healthy",
            Scenario::Paws => "paws",
            Scenario::DropRule => "drop-rule",
            Scenario::NoListener => "no-listener",
            Scenario::ListenQueueFull => "listen-queue-full",
            Scenario::RpFilter => "rp-filter",
            Scenario::SubnetOverlap => "subnet-overlap",
            Scenario::BadChecksum => "bad-checksum",
            Scenario::StaleBackend => "stale-backend",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One sentence for humans.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Healthy => {
                "Three clients make requests to the published port and every one is answered."
            }
            Scenario::Paws => {
                "A second client reuses the first one's source port after ingress_sbox forgot the \
                 NAT entry; its SYN carries an older TCP timestamp and hits the task's TIME_WAIT, \
                 which rejects it (PAWS)."
            }
            Scenario::DropRule => {
                "A DROP rule in the host's DOCKER-USER chain discards SYNs to the service after DNAT."
            }
            Scenario::NoListener => {
                "Nothing listens in the task: its kernel answers the SYN with a RST."
            }
            Scenario::ListenQueueFull => {
                "The task's listener never accepts and its accept queue is full: new SYNs are \
                 dropped silently."
            }
            Scenario::RpFilter => {
                "Strict rp_filter on the host drops the SYN of a client it routes via another \
                 interface than the one the SYN came in on."
            }
            Scenario::SubnetOverlap => {
                "The client's address lies inside docker_gwbridge's subnet: ingress_sbox sends the \
                 SYN-ACK to the bridge, where ARP for the client fails."
            }
            Scenario::BadChecksum => {
                "An offload on the way breaks the client's SYN: its TCP checksum no longer \
                 matches and the host's kernel drops it (TCP_CSUM), the retransmission too, \
                 without an answer."
            }
            Scenario::StaleBackend => {
                "ingress_sbox still balances the port to a task that is gone (10.0.0.99): \
                 nothing answers ARP for its address and the SYNs are dropped there."
            }
        }
    }

    /// The cause the tool should name; None when healthy.
    pub fn expected_cause(self) -> Option<&'static str> {
        match self {
            Scenario::Healthy => None,
            Scenario::Paws => Some("paws-timestamps"),
            Scenario::DropRule => Some("netfilter-drop"),
            Scenario::NoListener => Some("no-listener"),
            Scenario::ListenQueueFull => Some("listen-queue-full"),
            Scenario::RpFilter => Some("rp-filter"),
            Scenario::SubnetOverlap => Some("reply-misrouted"),
            Scenario::BadChecksum => Some("bad-checksum"),
            Scenario::StaleBackend => Some("backend-unreachable"),
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One connection attempt (or crafted SYN) a scenario made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The client's own address and source port (before any NAT).
    pub client: SocketAddr,
    /// The namespace it was sent from.
    pub client_ns: String,
    pub outcome: Outcome,
    /// The service's answer (`ok\n`), when the attempt was a request and was answered.
    pub answer: Option<String>,
    /// The SYN's initial sequence number, when the lab made the SYN itself.
    pub isn: Option<u32>,
    /// The SYN's TSval, when the lab made the SYN itself.
    pub tsval: Option<u32>,
    pub elapsed: Duration,
    /// What this attempt was for and what came of it, for humans.
    pub note: String,
}

/// What [`MeshLab::drive`] sent and saw.
#[derive(Debug, Clone)]
pub struct Drive {
    pub scenario: Scenario,
    pub attempts: Vec<Attempt>,
    /// Counter changes during the drive, per namespace name (host, ingress_sbox, task).
    pub deltas: BTreeMap<String, Counters>,
    /// Facts the lab checked along the way, for humans.
    pub notes: Vec<String>,
}

impl Drive {
    /// The change of `counter` (`TcpExt.ListenDrops`) in the namespace `ns` during the drive.
    pub fn delta(&self, ns: &Netns, counter: &str) -> i64 {
        self.deltas.get(ns.name()).map_or(0, |c| c.get(counter))
    }
}

/// The routing mesh in namespaces. See the module documentation.
#[derive(Debug)]
pub struct MeshLab {
    prefix: String,
    applied: Option<Scenario>,
    service: Option<Service>,
    /// The listen-queue-full scenario's listener, never accepting.
    stuck: Option<socket2::Socket>,
    rp: Option<Netns>,
    ov: Option<Netns>,
    clients: Vec<Netns>,
    task: Netns,
    sbox: Netns,
    host: Netns,
}

/// Deletes every namespace named `{prefix}-*` (left by a killed run).
pub fn remove_stale(prefix: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let dir = std::path::Path::new("/run/netns");
    if !dir.exists() {
        return Ok(removed);
    }
    let start = format!("{prefix}-");
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&start) {
            super::ip(&["netns", "del", &name])?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// The names of the namespaces that exist now with this prefix (`ip netns list`).
pub fn existing(prefix: &str) -> Result<Vec<String>> {
    let start = format!("{prefix}-");
    Ok(super::ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&start))
        .map(str::to_owned)
        .collect())
}

fn set_all(ns: &Netns, settings: &[(&str, &str)]) -> Result<()> {
    for (k, v) in settings {
        ns.sysctl(k, v)?;
    }
    Ok(())
}

/// A namespace with IPv6 off (no router solicitations, DAD, MLD noise) and TCP timestamps on.
fn lab_ns(name: &str) -> Result<Netns> {
    let ns = Netns::create(name)?;
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        set_all(
            &ns,
            &[
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ],
        )?;
    }
    ns.sysctl("net.ipv4.tcp_timestamps", "1")?;
    Ok(ns)
}

fn iptables(ns: &Netns, rule: &str) -> Result<()> {
    let mut args = vec!["iptables"];
    args.extend(rule.split_whitespace());
    ns.exec(&args).map(drop)
}

/// A client namespace on the host's LAN bridge: its veth's host end is a port of eth0.
fn lan_client(host: &Netns, name: &str, host_if: &str, cidr: &str) -> Result<Netns> {
    let ns = lab_ns(name)?;
    veth(host, host_if, &ns, "eth0")?;
    host.exec(&["ip", "link", "set", host_if, "master", "eth0"])?;
    addr(&ns, "eth0", cidr)?;
    Ok(ns)
}

/// A client on the host's LAN bridge whose address is outside the LAN's subnet (the
/// rp-filter and subnet-overlap clients): it reaches the LAN, and through it everything
/// else, on-link on its eth0.
fn foreign_client(host: &Netns, name: &str, host_if: &str, cidr: &str) -> Result<Netns> {
    let ns = lan_client(host, name, host_if, cidr)?;
    ns.exec(&["ip", "route", "add", "10.10.0.0/24", "dev", "eth0"])?;
    ns.exec(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "10.10.0.1",
        "dev",
        "eth0",
        "onlink",
    ])?;
    Ok(ns)
}

impl MeshLab {
    /// Builds the healthy mesh, its listener running in the task. `prefix`: 1 to 20 letters,
    /// digits or `_` (namespaces are `{prefix}-host` and so on).
    pub fn build(prefix: &str) -> Result<Self> {
        ensure!(
            !prefix.is_empty()
                && prefix.len() <= 20
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad lab prefix {prefix:?}: use 1 to 20 letters, digits or _"
        );
        for gone in remove_stale(prefix)? {
            log::info!("removed stale namespace {gone}");
        }
        // Each namespace is owned as soon as it exists: an error below drops (deletes) them.
        let host = lab_ns(&format!("{prefix}-host"))?;
        let sbox = lab_ns(&format!("{prefix}-ingress_sbox"))?;
        let task = lab_ns(&format!("{prefix}-task1"))?;
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            clients.push(lab_ns(&format!("{prefix}-c{}", i + 1))?);
        }
        Self::wire(&host, &sbox, &task, &clients).context("cannot build the mesh lab")?;
        let mut lab = Self {
            prefix: prefix.to_owned(),
            applied: None,
            service: None,
            stuck: None,
            rp: None,
            ov: None,
            clients,
            task,
            sbox,
            host,
        };
        lab.service = Some(lab.start_service()?);
        Ok(lab)
    }

    fn wire(host: &Netns, sbox: &Netns, task: &Netns, clients: &[Netns]) -> Result<()> {
        // The host: eth0 (a bridge standing for the LAN NIC) and docker_gwbridge.
        // br_netfilter off for the namespace, so eth0 behaves as a NIC, but on for
        // docker_gwbridge, as Docker has it.
        for k in ["iptables", "ip6tables", "arptables"] {
            let key = format!("net.bridge.bridge-nf-call-{k}");
            if std::path::Path::new("/proc/sys")
                .join(key.replace('.', "/"))
                .exists()
            {
                host.sysctl(&key, "0")?;
            }
        }
        set_all(
            host,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ],
        )?;
        host.exec(&[
            "ip",
            "link",
            "add",
            "eth0",
            "address",
            HOST_ETH0_MAC,
            "type",
            "bridge",
        ])?;
        let gw = host.exec(&[
            "ip",
            "link",
            "add",
            "docker_gwbridge",
            "address",
            GWBRIDGE_MAC,
            "type",
            "bridge",
            "nf_call_iptables",
            "1",
        ]);
        if gw.is_err() {
            // Kernels without br_netfilter.
            host.exec(&[
                "ip",
                "link",
                "add",
                "docker_gwbridge",
                "address",
                GWBRIDGE_MAC,
                "type",
                "bridge",
            ])?;
        }
        addr(host, "eth0", &format!("{HOST_IP}/24"))?;
        addr(host, "docker_gwbridge", &format!("{GWBRIDGE_IP}/16"))?;
        host.exec(&["ip", "link", "set", "eth0", "up"])?;
        host.exec(&["ip", "link", "set", "docker_gwbridge", "up"])?;
        // The default route makes eth0 "the default-route interface"; nothing answers there.
        host.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "10.10.0.254",
            "dev",
            "eth0",
            "onlink",
        ])?;

        // ingress_sbox: eth1 on docker_gwbridge, eth0 on the ingress network.
        veth(host, "vsbox", sbox, "eth1")?;
        host.exec(&["ip", "link", "set", "vsbox", "master", "docker_gwbridge"])?;
        addr(sbox, "eth1", &format!("{SBOX_GW_IP}/16"))?;
        veth(sbox, "eth0", task, "eth0")?;
        addr(sbox, "eth0", &format!("{SBOX_INGRESS_IP}/24"))?;
        sbox.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &GWBRIDGE_IP.to_string(),
        ])?;
        set_all(
            sbox,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ],
        )?;

        // The task.
        addr(task, "eth0", &format!("{TASK_IP}/24"))?;
        task.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &SBOX_INGRESS_IP.to_string(),
        ])?;

        // Clients on the LAN bridge.
        for (i, c) in clients.iter().enumerate() {
            let host_if = format!("vc{}", i + 1);
            veth(host, &host_if, c, "eth0")?;
            host.exec(&["ip", "link", "set", &host_if, "master", "eth0"])?;
            addr(c, "eth0", &format!("{}/24", client_ip(i)))?;
            c.exec(&["ip", "route", "add", "default", "via", &HOST_IP.to_string()])?;
        }

        // The host's rules, shaped like Docker's.
        for rule in [
            "-t nat -N DOCKER-INGRESS".to_owned(),
            format!(
                "-t nat -A DOCKER-INGRESS -d {HOST_IP} -p tcp --dport {PUBLISHED_PORT} \
                 -j DNAT --to-destination {SBOX_GW_IP}:{TASK_PORT}"
            ),
            "-t nat -A DOCKER-INGRESS -j RETURN".to_owned(),
            "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS".to_owned(),
            "-t nat -A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER-INGRESS".to_owned(),
            "-N DOCKER-USER".to_owned(),
            "-A DOCKER-USER -j RETURN".to_owned(),
            "-N DOCKER-INGRESS".to_owned(),
            format!("-A DOCKER-INGRESS -p tcp --dport {TASK_PORT} -j ACCEPT"),
            format!(
                "-A DOCKER-INGRESS -p tcp --sport {TASK_PORT} -m conntrack \
                 --ctstate RELATED,ESTABLISHED -j ACCEPT"
            ),
            "-A DOCKER-INGRESS -j RETURN".to_owned(),
            "-A FORWARD -j DOCKER-USER".to_owned(),
            "-A FORWARD -j DOCKER-INGRESS".to_owned(),
        ] {
            iptables(host, &rule)?;
        }
        // ingress_sbox: the DNAT stands for IPVS's virtual service, the SNAT is Swarm's.
        iptables(
            sbox,
            &format!(
                "-t nat -A PREROUTING -d {SBOX_GW_IP} -p tcp --dport {TASK_PORT} \
                 -j DNAT --to-destination {TASK_IP}:{TASK_PORT}"
            ),
        )?;
        iptables(
            sbox,
            &format!("-t nat -A POSTROUTING -o eth0 -d 10.0.0.0/24 -j SNAT --to-source {SBOX_INGRESS_IP}"),
        )?;
        Ok(())
    }

    fn start_service(&self) -> Result<Service> {
        Service::start(
            &self.task,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, TASK_PORT)),
            SERVICE_MAX,
            SERVICE_LIFETIME,
        )
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn host(&self) -> &Netns {
        &self.host
    }

    pub fn sbox(&self) -> &Netns {
        &self.sbox
    }

    pub fn task(&self) -> &Netns {
        &self.task
    }

    /// Ordinary client `i` (0-based: c1 is 0).
    pub fn client(&self, i: usize) -> &Netns {
        &self.clients[i]
    }

    /// The rp-filter scenario's client, once applied.
    pub fn rp_client(&self) -> Option<&Netns> {
        self.rp.as_ref()
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut all = vec![&self.host, &self.sbox, &self.task];
        all.extend(self.clients.iter());
        all.extend(self.rp.iter());
        all.extend(self.ov.iter());
        all
    }

    /// The scenario switched on, if any.
    pub fn applied(&self) -> Option<Scenario> {
        self.applied
    }

    /// 10.10.0.1:8080.
    pub fn published(&self) -> SocketAddr {
        SocketAddr::from((HOST_IP, PUBLISHED_PORT))
    }

    /// `--iface` values for the tracer: `{prefix}-host:eth0`, `{prefix}-host:docker_gwbridge`.
    pub fn watch(&self) -> Vec<String> {
        vec![
            format!("{}:eth0", self.host.name()),
            format!("{}:docker_gwbridge", self.host.name()),
        ]
    }

    /// Switches the fault on, creating the scenario's special client or listener state. A lab
    /// takes one fault: applying another one than the first is an error (build a new lab);
    /// applying `Healthy`, or the same scenario again, changes nothing.
    pub fn apply(&mut self, s: Scenario) -> Result<()> {
        match self.applied {
            Some(a) if a == s => return Ok(()),
            Some(a) => bail!("this lab already has {a} applied; build a new lab for {s}"),
            None => {}
        }
        match s {
            Scenario::Healthy | Scenario::Paws | Scenario::BadChecksum => {}
            Scenario::DropRule => iptables(
                &self.host,
                &format!("-I DOCKER-USER 1 -p tcp -d {SBOX_GW_IP} --dport {TASK_PORT} -j DROP"),
            )?,
            Scenario::NoListener => {
                if let Some(svc) = self.service.take() {
                    svc.stop()?;
                }
            }
            Scenario::ListenQueueFull => {
                if let Some(svc) = self.service.take() {
                    svc.stop()?;
                }
                // Syncookies do not rescue a full accept queue (tcp_conn_request checks it after
                // the SYN queue), but switch them off so no cookie can complete a handshake.
                self.task.sysctl("net.ipv4.tcp_syncookies", "0")?;
                let stuck = self.task.run(|| -> std::io::Result<socket2::Socket> {
                    use socket2::{Domain, Socket, Type};
                    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
                    s.set_reuse_address(true)?;
                    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, TASK_PORT)).into())?;
                    s.listen(FULL_BACKLOG)?;
                    Ok(s)
                })??;
                self.stuck = Some(stuck);
            }
            Scenario::StaleBackend => {
                // The gone task's address first (as IPVS would still hold it), and a quick
                // neighbour failure there: one probe, 200 ms.
                iptables(
                    &self.sbox,
                    &format!(
                        "-t nat -I PREROUTING 1 -d {SBOX_GW_IP} -p tcp --dport {TASK_PORT} \
                         -j DNAT --to-destination {GONE_TASK_IP}:{TASK_PORT}"
                    ),
                )?;
                self.sbox.sysctl("net.ipv4.neigh.eth0.mcast_solicit", "1")?;
                self.sbox
                    .sysctl("net.ipv4.neigh.eth0.retrans_time_ms", "200")?;
            }
            Scenario::RpFilter => {
                let rp = foreign_client(
                    &self.host,
                    &format!("{}-rp", self.prefix),
                    "vrp",
                    &format!("{RP_CLIENT_IP}/24"),
                )?;
                let rp = self.rp.insert(rp);
                // With strict rp_filter the host would not answer this client's ARP either
                // (arp_process validates the sender's route too): give it the host's MAC.
                rp.exec(&[
                    "ip",
                    "neigh",
                    "replace",
                    &HOST_IP.to_string(),
                    "lladdr",
                    HOST_ETH0_MAC,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ])?;
                // The host routes 10.20.0.0/24 via another interface: one end of a veth pair
                // inside the host (not every kernel has the dummy driver).
                self.host.exec(&[
                    "ip",
                    "link",
                    "add",
                    "rpalt",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "rpalt-peer",
                ])?;
                self.host.exec(&["ip", "link", "set", "rpalt-peer", "up"])?;
                self.host.exec(&["ip", "link", "set", "rpalt", "up"])?;
                self.host
                    .exec(&["ip", "route", "add", "10.20.0.0/24", "dev", "rpalt"])?;
                set_all(
                    &self.host,
                    &[
                        ("net.ipv4.conf.all.rp_filter", "1"),
                        ("net.ipv4.conf.eth0.rp_filter", "1"),
                    ],
                )?;
            }
            Scenario::SubnetOverlap => {
                self.ov = Some(foreign_client(
                    &self.host,
                    &format!("{}-ov", self.prefix),
                    "vov",
                    &format!("{OVERLAP_CLIENT_IP}/24"),
                )?);
            }
        }
        self.applied = Some(s);
        Ok(())
    }

    fn snapshot(&self) -> Result<BTreeMap<String, Counters>> {
        let mut out = BTreeMap::new();
        for ns in [&self.host, &self.sbox, &self.task] {
            out.insert(ns.name().to_owned(), observe::counters(ns)?);
        }
        Ok(out)
    }

    /// Drives the scenario's traffic (bounded: each scenario takes under 10 s) and reports what
    /// was sent. The scenario must be the one applied (`Healthy` needs no `apply`). Fails when
    /// the lab's own checks find the fault did not take.
    pub fn drive(&mut self, s: Scenario) -> Result<Drive> {
        let applied = self.applied.unwrap_or(Scenario::Healthy);
        ensure!(
            applied == s,
            "cannot drive {s}: this lab has {applied} applied (call apply({s}) on a fresh lab)"
        );
        let before = self.snapshot()?;
        let mut drive = Drive {
            scenario: s,
            attempts: Vec::new(),
            deltas: BTreeMap::new(),
            notes: Vec::new(),
        };
        match s {
            Scenario::Healthy => {
                for round in 0..3 {
                    for i in 0..CLIENTS {
                        let a = self.request(i, 0, Duration::from_secs(3))?;
                        ensure!(
                            a.answer.as_deref() == Some("ok\n"),
                            "healthy request {round} from c{} was not answered: {a:?}",
                            i + 1
                        );
                        drive.attempts.push(a);
                    }
                }
            }
            Scenario::Paws => {
                let first = self.paws_prepare(&mut drive.notes)?;
                let tsval = first.tsval.context("c1's TSval is unknown")?;
                drive.attempts.push(first);
                drive
                    .attempts
                    .push(self.paws_syn(tsval.wrapping_sub(PAWS_TSVAL_BACK), &mut drive.notes)?);
            }
            Scenario::DropRule => {
                let a = self.connect(
                    &self.clients[0],
                    0,
                    Duration::from_millis(1500),
                    "SYN to the published port, dropped by the DOCKER-USER rule",
                )?;
                let hits: u64 = observe::rule_packets(&self.host, "filter", "DOCKER-USER")?
                    .iter()
                    .filter(|(_, r)| r.starts_with("DROP"))
                    .map(|(p, _)| p)
                    .sum();
                drive.notes.push(format!(
                    "the DROP rule in DOCKER-USER matched {hits} packet(s)"
                ));
                drive.attempts.push(a);
            }
            Scenario::NoListener => {
                let a = self.connect(
                    &self.clients[0],
                    0,
                    Duration::from_millis(1500),
                    "SYN to the published port, nothing listens in the task",
                )?;
                drive.attempts.push(a);
            }
            Scenario::ListenQueueFull => {
                for round in 0..2 {
                    for i in 0..CLIENTS {
                        let a = self.connect(
                            &self.clients[i],
                            0,
                            Duration::from_secs(1),
                            &format!(
                                "connection {} to a listener that never accepts",
                                round * CLIENTS + i + 1
                            ),
                        )?;
                        drive.attempts.push(a);
                    }
                }
                let queued = observe::tcp_sockets(&self.task)?
                    .into_iter()
                    .filter(|s| s.state == observe::TcpState::Listen && s.local.port() == TASK_PORT)
                    .map(|s| s.rx_queue)
                    .max()
                    .unwrap_or(0);
                drive.notes.push(format!(
                    "the task's listener (backlog {FULL_BACKLOG}) holds {queued} unaccepted connection(s)"
                ));
            }
            Scenario::RpFilter => {
                let rp = self.rp.as_ref().context("rp-filter not applied")?;
                let a = self.connect(
                    rp,
                    0,
                    Duration::from_millis(1500),
                    "SYN from 10.20.0.5, which the host routes via rpalt, arriving on eth0",
                )?;
                drive.attempts.push(a);
            }
            Scenario::SubnetOverlap => self.drive_overlap(&mut drive)?,
            Scenario::BadChecksum => drive.attempts.push(self.corrupted_syn(&mut drive.notes)?),
            Scenario::StaleBackend => {
                let a = self.connect(
                    &self.clients[0],
                    0,
                    Duration::from_millis(1500),
                    "SYN to the published port, balanced to a task that is gone",
                )?;
                let state = observe::neigh_state(&self.sbox, "eth0", GONE_TASK_IP)?;
                ensure!(
                    state.as_deref() == Some("FAILED"),
                    "ingress_sbox's neighbour entry for {GONE_TASK_IP} is {state:?}, not FAILED"
                );
                drive.notes.push(format!(
                    "ingress_sbox's neighbour entry for {GONE_TASK_IP} on eth0 is FAILED"
                ));
                drive.attempts.push(a);
            }
        }
        let after = self.snapshot()?;
        for (name, counters) in after {
            let d = counters.since(&before[&name]);
            drive.deltas.insert(name, d);
        }
        Ok(drive)
    }

    fn drive_overlap(&self, drive: &mut Drive) -> Result<()> {
        let ov = self.ov.as_ref().context("subnet-overlap not applied")?;
        let to = self.published();
        let from = SocketAddr::from((OVERLAP_CLIENT_IP, 0));
        let started = Instant::now();
        // The client keeps retransmitting its SYN while ingress_sbox resolves it; the wait
        // below for the neighbour entry to fail bounds the scenario.
        let handle = ov.spawn(move || traffic::connect(from, to, Duration::from_millis(2500)))?;
        let deadline = started + Duration::from_secs(8);
        let mut failed_after = None;
        while Instant::now() < deadline {
            if observe::neigh_state(&self.sbox, "eth1", OVERLAP_CLIENT_IP)?.as_deref()
                == Some("FAILED")
            {
                failed_after = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (local, outcome) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("the overlap client's thread panicked"))??;
        let elapsed = started.elapsed();
        match failed_after {
            Some(t) => drive.notes.push(format!(
                "ingress_sbox's neighbour entry for {OVERLAP_CLIENT_IP} on eth1 went FAILED {:.2} s after the first SYN",
                t.as_secs_f64()
            )),
            None => bail!(
                "ingress_sbox never failed to resolve {OVERLAP_CLIENT_IP} on eth1 (state {:?})",
                observe::neigh_state(&self.sbox, "eth1", OVERLAP_CLIENT_IP)?
            ),
        }
        drive.attempts.push(Attempt {
            client: local,
            client_ns: ov.name().to_owned(),
            outcome,
            answer: None,
            isn: None,
            tsval: None,
            elapsed,
            note: "SYN from 172.18.5.5 (inside docker_gwbridge's subnet); the SYN-ACK goes to eth1 of ingress_sbox".to_owned(),
        });
        Ok(())
    }

    /// A connection attempt from `ns` (source port `port`, 0: any) to the published port.
    fn connect(&self, ns: &Netns, port: u16, timeout: Duration, note: &str) -> Result<Attempt> {
        let ip = self.ip_of(ns)?;
        let to = self.published();
        let started = Instant::now();
        let (local, outcome) =
            ns.run(move || traffic::connect(SocketAddr::from((ip, port)), to, timeout))?;
        Ok(Attempt {
            client: local,
            client_ns: ns.name().to_owned(),
            outcome,
            answer: None,
            isn: None,
            tsval: None,
            elapsed: started.elapsed(),
            note: note.to_owned(),
        })
    }

    /// A request from ordinary client `i` (source port `port`, 0: any) to the published port.
    pub fn request(&self, i: usize, port: u16, timeout: Duration) -> Result<Attempt> {
        let ns = &self.clients[i];
        let from = SocketAddr::from((client_ip(i), port));
        let to = self.published();
        let started = Instant::now();
        let ex = ns.run(move || traffic::exchange(from, to, timeout))?;
        let note = match (&ex.answer, &ex.error) {
            (Some(a), _) => format!("request answered {a:?}"),
            (None, Some(e)) => format!("request failed after connecting: {e}"),
            (None, None) => "request not answered".to_owned(),
        };
        Ok(Attempt {
            client: ex.local,
            client_ns: ns.name().to_owned(),
            outcome: ex.outcome,
            answer: ex.answer,
            isn: None,
            tsval: ex.tsval,
            elapsed: started.elapsed(),
            note,
        })
    }

    fn ip_of(&self, ns: &Netns) -> Result<Ipv4Addr> {
        if let Some(i) = self.clients.iter().position(|c| c.name() == ns.name()) {
            return Ok(client_ip(i));
        }
        if self.rp.as_ref().is_some_and(|c| c.name() == ns.name()) {
            return Ok(RP_CLIENT_IP);
        }
        if self.ov.as_ref().is_some_and(|c| c.name() == ns.name()) {
            return Ok(OVERLAP_CLIENT_IP);
        }
        bail!("{} is not a client of this lab", ns.name())
    }

    /// The paws scenario, first half: c1 makes a request from port 40000, the server closes
    /// first (TIME_WAIT in the task on 10.0.0.5:80 <-> 10.0.0.2:40000), then ingress_sbox's
    /// conntrack entry of that flow is deleted, as if its NAT entry had expired. Checks both.
    /// Returns c1's attempt, with its last TSval.
    pub fn paws_prepare(&self, notes: &mut Vec<String>) -> Result<Attempt> {
        ensure!(
            self.applied == Some(Scenario::Paws),
            "apply(Scenario::Paws) first"
        );
        let mut first = self.request(0, PAWS_PORT, Duration::from_secs(3))?;
        ensure!(
            first.answer.as_deref() == Some("ok\n"),
            "c1's request was not answered: {first:?}"
        );
        first.note = format!(
            "request from a fixed port, answered; the server closed first; c1's TSval at close: {}",
            first.tsval.map_or("unknown".to_owned(), |t| t.to_string())
        );
        let tw_local = SocketAddr::from((TASK_IP, TASK_PORT));
        let tw_remote = SocketAddr::from((SBOX_INGRESS_IP, PAWS_PORT));
        let deadline = Instant::now() + Duration::from_secs(3);
        while !observe::has_time_wait(&self.task, tw_local, tw_remote)? {
            ensure!(
                Instant::now() < deadline,
                "no TIME_WAIT {tw_local} <-> {tw_remote} in the task after c1's request"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        notes.push(format!("TIME_WAIT {tw_local} <-> {tw_remote} in the task"));
        let c1 = client_ip(0).to_string();
        let port = PAWS_PORT.to_string();
        // `conntrack -D` fails when nothing matched: the entry must be there to delete.
        self.sbox
            .exec(&[
                "conntrack",
                "-D",
                "-p",
                "tcp",
                "--orig-src",
                &c1,
                "--sport",
                &port,
            ])
            .context("ingress_sbox has no conntrack entry for c1's flow")?;
        let left: Vec<String> = observe::conntrack(&self.sbox)?
            .into_iter()
            .filter(|l| l.contains(&format!("port={PAWS_PORT} ")))
            .collect();
        ensure!(
            left.is_empty(),
            "ingress_sbox still tracks port {PAWS_PORT}: {left:?}"
        );
        notes.push(format!(
            "ingress_sbox's conntrack entry for {c1}:{PAWS_PORT} deleted (the host's entry for c1 \
             stays: c2's flow differs there by its source address)"
        ));
        Ok(first)
    }

    /// The paws scenario, second half: c2 sends a crafted SYN from port 40000 with `tsval`
    /// (older than c1's), which ingress_sbox maps onto the task's TIME_WAIT. Waits (bounded)
    /// for the task's PAWS counter to rise (`TcpExt.PAWSTimewait` from 6.16, `PAWSEstab`
    /// before) and fails if it does not.
    /// bad-checksum: c1 sends a SYN whose TCP checksum is wrong, and its retransmission (the
    /// same ISN, 1 s later); the host's checksum error counter must rise.
    fn corrupted_syn(&self, notes: &mut Vec<String>) -> Result<Attempt> {
        let c1 = &self.clients[0];
        let errors = |c: &observe::Counters| c.get("Tcp.InCsumErrors");
        let before = errors(&observe::counters(&self.host)?);
        let isn = craft::random_u32();
        let tsval = craft::random_u32();
        let started = Instant::now();
        let mut replies = Vec::new();
        for (i, wait) in [1000u64, 800].into_iter().enumerate() {
            let syn = craft::Syn::new(
                SocketAddrV4::new(client_ip(0), CORRUPTED_PORT),
                SocketAddrV4::new(HOST_IP, PUBLISHED_PORT),
                isn,
                tsval.wrapping_add(1000 * i as u32),
            );
            replies.extend(
                c1.run(move || craft::send_corrupted_syn(&syn, Duration::from_millis(wait)))??,
            );
        }
        let after = errors(&observe::counters(&self.host)?);
        ensure!(
            after > before,
            "the host's Tcp InCsumErrors did not rise for c1's corrupted SYNs (replies: {replies:?})"
        );
        notes.push(format!(
            "the host's Tcp InCsumErrors rose by {}",
            after - before
        ));
        Ok(crafted_attempt(
            c1,
            SocketAddrV4::new(client_ip(0), CORRUPTED_PORT),
            (isn, tsval),
            started,
            &replies,
            "crafted SYN with a wrong TCP checksum, sent twice",
        ))
    }

    pub fn paws_syn(&self, tsval: u32, notes: &mut Vec<String>) -> Result<Attempt> {
        let c2 = &self.clients[1];
        let paws = |c: &observe::Counters| c.get("TcpExt.PAWSTimewait") + c.get("TcpExt.PAWSEstab");
        let before = paws(&observe::counters(&self.task)?);
        let isn = craft::random_u32();
        let syn = craft::Syn::new(
            SocketAddrV4::new(client_ip(1), PAWS_PORT),
            SocketAddrV4::new(HOST_IP, PUBLISHED_PORT),
            isn,
            tsval,
        );
        let started = Instant::now();
        let replies = c2.run(move || craft::send_syn(&syn, Duration::from_millis(1000)))??;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut after = paws(&observe::counters(&self.task)?);
        while after <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            after = paws(&observe::counters(&self.task)?);
        }
        ensure!(
            after > before,
            "the task's PAWS counters (PAWSTimewait, PAWSEstab) did not rise for c2's SYN (replies: {replies:?})"
        );
        notes.push(format!(
            "the task's TcpExt PAWS counters rose by {}",
            after - before
        ));
        Ok(crafted_attempt(
            c2,
            syn.src,
            (isn, tsval),
            started,
            &replies,
            "crafted SYN, TSval older than c1's; no SYN-ACK",
        ))
    }
}

/// A crafted SYN's attempt: sent from `client` as `src` with (ISN, TSval), since `started`;
/// its outcome from the `replies` (a SYN-ACK: connected; a RST: refused; else timed out),
/// which its note lists after `what`.
fn crafted_attempt(
    client: &Netns,
    src: SocketAddrV4,
    (isn, tsval): (u32, u32),
    started: Instant,
    replies: &[craft::Reply],
    what: &str,
) -> Attempt {
    let outcome = if replies.iter().any(|r| r.is(craft::SYN | craft::ACK)) {
        Outcome::Connected
    } else if replies.iter().any(|r| r.flags & craft::RST != 0) {
        Outcome::Refused
    } else {
        Outcome::TimedOut
    };
    let seen: Vec<String> = replies.iter().map(ToString::to_string).collect();
    Attempt {
        client: SocketAddr::V4(src),
        client_ns: client.name().to_owned(),
        outcome,
        answer: None,
        isn: Some(isn),
        tsval: Some(tsval),
        elapsed: started.elapsed(),
        note: format!(
            "{what}; replies: {}",
            if seen.is_empty() {
                "none".to_owned()
            } else {
                seen.join("; ")
            }
        ),
    }
}

impl Drop for MeshLab {
    fn drop(&mut self) {
        // Sockets and threads in the namespaces first: they would keep them alive.
        drop(self.service.take());
        drop(self.stuck.take());
        // The namespaces are removed as the fields drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
            assert!(!s.describe().is_empty());
            assert_eq!(s.expected_cause().is_none(), s == Scenario::Healthy);
        }
        assert_eq!(Scenario::from_name("nope"), None);
        let names: std::collections::HashSet<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Scenario::ALL.len());
    }

    #[test]
    fn client_addresses() {
        assert_eq!(client_ip(0), Ipv4Addr::new(10, 10, 0, 11));
        assert_eq!(client_ip(2), Ipv4Addr::new(10, 10, 0, 13));
    }
}
