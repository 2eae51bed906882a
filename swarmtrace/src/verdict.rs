//! Verdicts: from what happened to each handshake (answers, drops with the kernel's reasons,
//! silence) and from the counters of each namespace, name the cause, the clients it hit, the
//! evidence, how to confirm it and the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::escape;
use crate::kernel::netns::{self, NetnsLabel};
use crate::net::Cidr;
use crate::trace::event::PacketKind;
use crate::trace::tracker::{Answer, DropNote, Handshake, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    NoRunningTask,
    MeshBypassed,
    PawsTimestamps,
    NetfilterDrop,
    ConntrackFull,
    IpvsNoBackend,
    IpvsMisdirected,
    NoListener,
    ListenQueueFull,
    RpFilter,
    ReplyMisrouted,
    NoRoute,
    OverlayUnreachable,
    BadChecksum,
    BackendUnreachable,
    Unknown,
}

impl Cause {
    pub const ALL: [Cause; 16] = [
        Cause::NoRunningTask,
        Cause::MeshBypassed,
        Cause::PawsTimestamps,
        Cause::NetfilterDrop,
        Cause::ConntrackFull,
        Cause::IpvsNoBackend,
        Cause::IpvsMisdirected,
        Cause::NoListener,
        Cause::ListenQueueFull,
        Cause::RpFilter,
        Cause::ReplyMisrouted,
        Cause::NoRoute,
        Cause::OverlayUnreachable,
        Cause::BadChecksum,
        Cause::BackendUnreachable,
        Cause::Unknown,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Cause::NoRunningTask => "no-running-task",
            Cause::MeshBypassed => "mesh-bypassed",
            Cause::PawsTimestamps => "paws-timestamps",
            Cause::NetfilterDrop => "netfilter-drop",
            Cause::ConntrackFull => "conntrack-full",
            Cause::IpvsNoBackend => "ipvs-no-backend",
            Cause::IpvsMisdirected => "ipvs-misdirected",
            Cause::NoListener => "no-listener",
            Cause::ListenQueueFull => "listen-queue-full",
            Cause::RpFilter => "rp-filter",
            Cause::ReplyMisrouted => "reply-misrouted",
            Cause::NoRoute => "no-route",
            Cause::OverlayUnreachable => "overlay-unreachable",
            Cause::BadChecksum => "bad-checksum",
            Cause::BackendUnreachable => "backend-unreachable",
            Cause::Unknown => "unknown",
        }
    }
}

/// A subnet on an interface of a namespace on this host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalSubnet {
    pub netns: String,
    pub ifname: String,
    pub net: Cidr,
}

/// What Docker says of a port a swarm service publishes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedService {
    pub service: String,
    pub port: u16,
    /// `ingress` (the routing mesh) or `host`.
    pub mode: String,
    pub running: Option<u64>,
    pub desired: Option<u64>,
}

/// What the verdicts know besides the handshakes.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Context {
    /// Per namespace name, the watched counters that rose during the run.
    pub counter_rises: BTreeMap<String, BTreeMap<String, u64>>,
    pub subnets: Vec<LocalSubnet>,
    pub kernel_release: String,
    /// The kernel names TIME_WAIT PAWS drops (`TCP_RFC7323_TW_PAWS`, 6.16+).
    pub has_tw_paws_reason: bool,
    /// (namespace, interface) where SYNs were first seen: a client inside the subnet of the
    /// interface it came in on is at home there; inside any other local subnet, it overlaps.
    pub ingress_ifaces: BTreeSet<(String, String)>,
    /// Per reason, drops the kernel counted (exactly) that no event showed: lost when the ring
    /// buffer was full, or sampled. Counted into the verdict their reason names, one
    /// handshake per drop (an estimate: a retransmitted SYN is a second drop of one
    /// handshake).
    #[serde(default)]
    pub unseen_drops: BTreeMap<String, u64>,
    /// Docker's view of the TCP ports swarm services publish (empty without Docker, or on a
    /// worker, which cannot list services).
    #[serde(default)]
    pub published: Vec<PublishedService>,
    /// Answered handshakes (client, ISN) whose SYN-ACK was first seen leaving by the
    /// interface their SYN came in on, in the host namespace, while docker_gwbridge was
    /// watched: the host itself answered, not the mesh (whose answers come in from
    /// ingress_sbox over docker_gwbridge first).
    #[serde(default)]
    pub host_answered: BTreeSet<(std::net::SocketAddr, u32)>,
    /// Per namespace name, its conntrack table's entries and limit (`nf_conntrack_count`,
    /// `nf_conntrack_max`) at the end of the run, where conntrack is loaded.
    #[serde(default)]
    pub conntrack_fill: BTreeMap<String, (u64, u64)>,
    /// Where SYNs were seen leaving inside VXLAN datagrams (the routing mesh's ingress
    /// overlay) towards other nodes: by which interface, from and to which address.
    #[serde(default)]
    pub overlay_paths: Vec<OverlayPath>,
    /// Per namespace name (the host's, and those with IPVS services), what its IPVS services
    /// and its firewall rules showed during the run.
    #[serde(default)]
    pub netfilter: BTreeMap<String, NetfilterView>,
    /// The UDP port of the overlays' VXLAN the run looked inside; 0: the default
    /// ([`Context::vxlan_port`]).
    #[serde(default)]
    pub vxlan_port: u16,
}

impl Context {
    /// The UDP port of the overlays' VXLAN (the swarm's data-path port).
    pub fn vxlan_port(&self) -> u16 {
        match self.vxlan_port {
            0 => swarmtrace_common::VXLAN_PORT,
            p => p,
        }
    }
}

/// What IPVS and the firewall rules of one namespace showed during a run: what tells an IPVS
/// drop from a rule's, which the kernel reports alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetfilterView {
    /// IPVS services by firewall mark -> their destinations (address, weight) at the end.
    #[serde(default)]
    pub ipvs: BTreeMap<u32, Vec<(String, u32)>>,
    /// The marks whose service had no destination of weight above 0 (none IPVS can schedule
    /// a new connection to) at the start or at the end of the run.
    #[serde(default)]
    pub ipvs_no_backend: BTreeSet<u32>,
    /// TCP port -> the mark the mangle table's PREROUTING sets on it.
    #[serde(default)]
    pub port_marks: BTreeMap<u16, u32>,
    /// The DROP and REJECT rules (`-t TABLE -A CHAIN ...`) whose packet counter rose during
    /// the run, with the rise; None when the rules could not be read.
    #[serde(default)]
    pub rules_rose: Option<Vec<(String, u64)>>,
    /// The addresses of destinations of weight 0 (backends Docker is draining) by service
    /// mark, at the start and at the end of the run.
    #[serde(default)]
    pub draining_at_start: BTreeMap<u32, BTreeSet<IpAddr>>,
    #[serde(default)]
    pub draining_at_end: BTreeMap<u32, BTreeSet<IpAddr>>,
    /// `net.ipv4.vs.conn_reuse_mode` in this namespace (Docker sets 0: a SYN from a client
    /// port with a connection entry follows that entry, not the scheduler) and
    /// `expire_nodest_conn` (Docker sets 1: recent kernels then schedule anew a SYN whose
    /// entry points at a backend of weight 0).
    #[serde(default)]
    pub conn_reuse_mode: Option<u8>,
    #[serde(default)]
    pub expire_nodest_conn: Option<u8>,
}

impl NetfilterView {
    /// At most this many namespaces, services, destinations and rules are kept (a bundle's
    /// are cut to it when read).
    pub const KEPT: usize = 32;

    /// Cuts what a bundle or a reading holds to [`Self::KEPT`] of each.
    pub fn bounded(mut self) -> Self {
        while self.ipvs.len() > Self::KEPT {
            self.ipvs.pop_last();
        }
        for d in self.ipvs.values_mut() {
            d.truncate(Self::KEPT);
        }
        while self.ipvs_no_backend.len() > Self::KEPT {
            self.ipvs_no_backend.pop_last();
        }
        while self.port_marks.len() > Self::KEPT * 8 {
            self.port_marks.pop_last();
        }
        if let Some(r) = &mut self.rules_rose {
            r.truncate(Self::KEPT);
        }
        for m in [&mut self.draining_at_start, &mut self.draining_at_end] {
            while m.len() > Self::KEPT {
                m.pop_last();
            }
            for a in m.values_mut() {
                while a.len() > Self::KEPT {
                    a.pop_last();
                }
            }
        }
        self
    }
}

/// Where IPVS sent a SYN that was then dropped: a backend of weight 0 ([`Context::ipvs_misdirected`]).
#[derive(Debug, Clone, Copy)]
pub struct IpvsMisdirection<'a> {
    /// The namespace of the IPVS that sent it (Docker's `ingress_sbox` or an `lb_*`).
    pub netns: &'a str,
    pub port: u16,
    pub mark: u32,
    pub backend: IpAddr,
    /// The backend was of weight 0 at the start of the run already, before the SYN.
    pub at_start: bool,
    pub view: &'a NetfilterView,
}

/// SYNs seen leaving this node inside VXLAN datagrams by `ifname` in `netns`, from `local`
/// to `remote` (the node the routing mesh sent them to).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct OverlayPath {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub netns: String,
    pub ifname: String,
}

impl Context {
    /// The service that publishes `port` through the routing mesh, as Docker says.
    pub fn mesh_publisher(&self, port: u16) -> Option<&PublishedService> {
        self.published
            .iter()
            .find(|p| p.port == port && p.mode == "ingress")
    }

    /// How much `counter` rose in namespace `ns` during the run.
    fn rise_in(&self, ns: &str, counter: &str) -> u64 {
        self.counter_rises
            .get(ns)
            .and_then(|c| c.get(counter))
            .copied()
            .unwrap_or(0)
    }

    /// The conntrack table of namespace `ns` was full during the run: conntrack dropped
    /// packets there (`drop`: no entry could be made) and the table was at its limit (it
    /// evicted entries to make room, `early_drop`, or it was at 90% or more at the end).
    pub fn conntrack_full(&self, ns: &str) -> bool {
        let near_limit = self.conntrack_fill.get(ns).is_some_and(|(count, max)| {
            *max > 0 && count.saturating_mul(10) >= max.saturating_mul(9)
        });
        self.rise_in(ns, CONNTRACK_DROP) > 0
            && (self.rise_in(ns, CONNTRACK_EARLY_DROP) > 0 || near_limit)
    }

    /// The mark of one of `ports` in namespace `ns` whose IPVS service there had no
    /// destination it could schedule a new connection to during the run, with that
    /// namespace's view.
    pub fn ipvs_no_backend(
        &self,
        ns: &str,
        ports: impl IntoIterator<Item = u16>,
    ) -> Option<(u16, u32, &NetfilterView)> {
        let view = self.netfilter.get(ns)?;
        ports.into_iter().find_map(|port| {
            let mark = *view.port_marks.get(&port)?;
            view.ipvs_no_backend
                .contains(&mark)
                .then_some((port, mark, view))
        })
    }

    /// A SYN dropped where IPVS had sent it to a backend of weight 0 (one Docker is draining)
    /// of the service that balances one of `ports`: the namespace of that IPVS, the port, the
    /// mark, the backend, whether it was of weight 0 already at the start of the run (then
    /// before the SYN), and that namespace's view. The drop's own destination address is
    /// where IPVS sent the SYN (it rewrites the destination to the backend's).
    pub fn ipvs_misdirected(
        &self,
        d: &DropNote,
        ports: impl IntoIterator<Item = u16> + Clone,
    ) -> Option<IpvsMisdirection<'_>> {
        if d.kind != PacketKind::Syn {
            return None;
        }
        let backend = d.packet.dst.ip();
        self.netfilter.iter().find_map(|(ns, view)| {
            ports.clone().into_iter().find_map(|port| {
                let mark = *view.port_marks.get(&port)?;
                let at = |m: &BTreeMap<u32, BTreeSet<IpAddr>>| {
                    m.get(&mark).is_some_and(|a| a.contains(&backend))
                };
                let at_start = at(&view.draining_at_start);
                (at_start || at(&view.draining_at_end)).then(|| IpvsMisdirection {
                    netns: ns,
                    port,
                    mark,
                    backend,
                    at_start,
                    view,
                })
            })
        })
    }

    fn rose(&self, counter: &str) -> Vec<(String, u64)> {
        self.counter_rises
            .iter()
            .filter_map(|(ns, c)| c.get(counter).map(|n| (ns.clone(), *n)))
            .collect()
    }

    /// A subnet of a bridge or Docker network, not the interface the client came in on,
    /// that contains the client: replies to it are routed there.
    pub fn overlapping(&self, client: IpAddr) -> Option<&LocalSubnet> {
        self.subnets.iter().find(|s| {
            s.net.contains(client)
                && s.net.prefix > 0
                && !self
                    .ingress_ifaces
                    .contains(&(s.netns.clone(), s.ifname.clone()))
                && !client.is_loopback()
        })
    }
}

/// The cause a drop names by itself: its reason, or on kernels without reasons its code
/// location. Shared by the verdicts and the live view.
pub fn reason_cause(reason: &str, kind: PacketKind, location: &str) -> Option<Cause> {
    Some(match reason {
        "TCP_RFC7323_TW_PAWS" | "TCP_RFC7323_PAWS" => Cause::PawsTimestamps,
        "NETFILTER_DROP" => Cause::NetfilterDrop,
        "IP_RPFILTER" => Cause::RpFilter,
        "NO_SOCKET" if kind == PacketKind::Syn => Cause::NoListener,
        "NEIGH_FAILED" | "NEIGH_QUEUEFULL" | "NEIGH_CREATEFAIL" if kind == PacketKind::SynAck => {
            Cause::ReplyMisrouted
        }
        // The SYN sent on (after the mesh's DNAT or IPVS) to an address no neighbour answers
        // for: a backend that is gone, or one this node's overlay does not know.
        "NEIGH_FAILED" | "NEIGH_QUEUEFULL" | "NEIGH_CREATEFAIL" | "NEIGH_DEAD"
            if kind == PacketKind::Syn =>
        {
            Cause::BackendUnreachable
        }
        "IP_OUTNOROUTES" | "IP_INNOROUTES" => Cause::NoRoute,
        "TCP_LISTEN_OVERFLOW" | "TCP_REQQFULLDROP" => Cause::ListenQueueFull,
        // The packet's bytes do not match its checksum (TCP, the VXLAN datagram's UDP, the IP
        // header, or the device's full checksum).
        r if CHECKSUM_REASONS.contains(&r) => Cause::BadChecksum,
        // Kernels without drop reasons (before 5.17): the code location names the cause.
        _ if [
            "nft_do_chain",
            "ipt_do_table",
            "ip6t_do_table",
            "nf_hook_slow",
        ]
        .iter()
        .any(|f| location.starts_with(f)) =>
        {
            Cause::NetfilterDrop
        }
        _ if (kind == PacketKind::SynAck || kind == PacketKind::Syn)
            && [
                "neigh_invalidate",
                "__neigh_event_send",
                "neigh_resolve_output",
                // Where a kernel does not inline it into neigh_invalidate (5.10 does): the
                // queue of a failed neighbour is freed there.
                "arp_error_report",
                "ndisc_error_report",
            ]
            .iter()
            .any(|f| location.starts_with(f)) =>
        {
            if kind == PacketKind::SynAck {
                Cause::ReplyMisrouted
            } else {
                Cause::BackendUnreachable
            }
        }
        // Where a kernel inlines the TIME_WAIT path's drop into it. Kernels without the
        // TW_PAWS reason (before 6.16) mostly free such a SYN in tcp_v4_rcv as NOT_SPECIFIED
        // (6.x) or without a reason (5.10): the PAWS counters of that namespace tell, below.
        _ if location.starts_with("tcp_timewait_state_process") => Cause::PawsTimestamps,
        _ => return None,
    })
}

/// The drop reasons of a packet whose checksum did not match its bytes.
const CHECKSUM_REASONS: [&str; 4] = ["TCP_CSUM", "UDP_CSUM", "IP_CSUM", "SKB_CSUM"];

/// How much a verdict rests on the handshake itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    /// The handshake's own packets say it: a drop's reason or place, a RST, its client's
    /// address inside a subnet the replies are routed to.
    Confirmed,
    /// Only counters of a whole namespace over the whole run point at it: any other traffic
    /// there raises them too.
    Circumstantial,
}

impl Confidence {
    pub fn id(self) -> &'static str {
        match self {
            Confidence::Confirmed => "confirmed",
            Confidence::Circumstantial => "circumstantial",
        }
    }
}

/// A drop reason that names nothing: the kernel's catch-all, or a kernel without reasons.
fn unnamed_reason(reason: &str) -> bool {
    matches!(reason, "" | "NOT_SPECIFIED" | "UNKNOWN" | "TCP_DROP") || reason.starts_with("REASON_")
}

/// The handshake's SYN carried a TCP timestamp option (a key's TSval is 0 without one): PAWS
/// cannot reject a SYN without it.
pub fn carried_timestamps(h: &Handshake) -> bool {
    h.keys.iter().any(|k| k.tsval != 0)
        || h.drops
            .iter()
            .any(|d| d.kind == PacketKind::Syn && d.packet.tsval.is_some_and(|t| t != 0))
}

/// Whether namespace-wide counters that point at `cause` can explain what is known of the
/// handshake itself.
fn consistent(cause: Cause, h: &Handshake, ctx: &Context) -> bool {
    match cause {
        Cause::PawsTimestamps => {
            carried_timestamps(h)
                // A kernel that names TIME_WAIT PAWS drops would have named this one.
                && !ctx.has_tw_paws_reason
                // A SYN freed with a reason other than the catch-all was freed for it.
                && h.drops.iter().all(|d| unnamed_reason(&d.reason))
        }
        // The listen queue drops a SYN before it is answered, never after.
        Cause::ListenQueueFull => {
            !matches!(h.answer, Some(Answer::SynAck { .. }))
                && h.drops.iter().all(|d| unnamed_reason(&d.reason))
        }
        Cause::RpFilter => h.drops.iter().all(|d| unnamed_reason(&d.reason)),
        // Kernels without reasons: the drop itself is unnamed (one with a reason said so).
        Cause::BadChecksum => {
            !h.drops.is_empty() && h.drops.iter().all(|d| unnamed_reason(&d.reason))
        }
        _ => true,
    }
}

/// A netfilter drop in a namespace whose conntrack table was full is conntrack's: its hook
/// drops a new connection's first packet when it cannot track it, as a DROP rule would, and
/// the kernel reports both alike (NETFILTER_DROP, or nf_hook_slow without reasons).
fn conntrack_refined(c: Cause, d: &DropNote, ctx: &Context) -> Cause {
    match (c, d.netns_name.as_deref()) {
        (Cause::NetfilterDrop, Some(ns)) if ctx.conntrack_full(ns) => Cause::ConntrackFull,
        _ => c,
    }
}

/// The ports a SYN's drop may have been marked by: the packet's own where it was dropped,
/// and the published one as first seen.
fn syn_ports(h: &Handshake, d: &DropNote) -> [u16; 2] {
    [d.packet.dst.port(), h.service.port()]
}

/// A netfilter drop of a SYN in a namespace where IPVS had no backend for the port's mark is
/// IPVS's: it answers such a SYN with an ICMP port unreachable and drops it (`ip_vs_leave`:
/// NF_DROP), which the kernel reports as a rule's (NETFILTER_DROP, or nf_hook_slow without
/// reasons). Confirmed where no DROP or REJECT rule's counter rose in that namespace; only
/// circumstantial where the rules could not be read; a rule's where one rose.
fn ipvs_refined(c: Cause, h: &Handshake, d: &DropNote, ctx: &Context) -> (Cause, Confidence) {
    let confirmed = (c, Confidence::Confirmed);
    if c != Cause::NetfilterDrop || d.kind != PacketKind::Syn {
        return confirmed;
    }
    let Some(ns) = d.netns_name.as_deref() else {
        return confirmed;
    };
    match ctx.ipvs_no_backend(ns, syn_ports(h, d)) {
        Some((_, _, view)) => match &view.rules_rose {
            Some(rules) if rules.is_empty() => (Cause::IpvsNoBackend, Confidence::Confirmed),
            Some(_) => confirmed,
            None => (Cause::IpvsNoBackend, Confidence::Circumstantial),
        },
        // The rules of that namespace were read and none of their counters rose: netfilter
        // dropped it, but no iptables rule says so.
        None if ctx
            .netfilter
            .get(ns)
            .is_some_and(|v| v.rules_rose.as_ref().is_some_and(Vec::is_empty)) =>
        {
            (Cause::NetfilterDrop, Confidence::Circumstantial)
        }
        None => confirmed,
    }
}

/// The drops of a handshake's SYNs past an IPVS that had sent them to a backend of weight 0
/// ([`Context::ipvs_misdirected`]), each with where it was sent; a drop in that IPVS's own
/// namespace is not one (it never reached the backend).
fn misdirections<'a>(
    h: &'a Handshake,
    ctx: &'a Context,
) -> impl Iterator<Item = (&'a DropNote, IpvsMisdirection<'a>)> + 'a {
    h.drops.iter().filter_map(move |d| {
        ctx.ipvs_misdirected(d, syn_ports(h, d))
            .filter(|m| d.netns_name.as_deref() != Some(m.netns))
            .map(|m| (d, m))
    })
}

/// The cause one drop names by itself ([`reason_cause`]), if the handshake does not
/// contradict it: a PAWS drop told by its place alone is one only on a kernel that does not
/// name PAWS drops (there the reason would say so), and only for a SYN with a timestamp.
fn drop_cause(d: &DropNote, timestamps: bool, has_tw_paws_reason: bool) -> Option<Cause> {
    let c = reason_cause(&d.reason, d.kind, &d.location)?;
    let by_place = c == Cause::PawsTimestamps && !d.reason.contains("PAWS");
    (!by_place || (!has_tw_paws_reason && timestamps)).then_some(c)
}

/// The cause a handshake's own packets show when it ends, for the live metrics (counters
/// come only at the end of a run): its first drop's, a RST's, else `unknown`. None for an
/// answered one. Without the kernel's facts at hand, a PAWS drop told by its place alone
/// counts only with a timestamp in the dropped SYN.
pub fn own_cause(outcome: Outcome, first_drop: Option<&DropNote>) -> Option<Cause> {
    if outcome == Outcome::Answered {
        return None;
    }
    let timestamps = |d: &DropNote| d.packet.tsval.is_some_and(|t| t != 0);
    if let Some(c) = first_drop.and_then(|d| drop_cause(d, timestamps(d), false)) {
        return Some(c);
    }
    Some(if outcome == Outcome::Reset {
        Cause::NoListener
    } else {
        Cause::Unknown
    })
}

/// The host's own namespace refused the SYN (nothing listens there): it never went into the
/// routing mesh. Its SYN freed as NO_SOCKET in `host`, or, on kernels without reasons, freed
/// in tcp_v4_rcv/tcp_v6_rcv there and answered by a RST.
fn refused_by_host(h: &Handshake) -> bool {
    let reset = matches!(h.answer, Some(Answer::Reset { .. }));
    h.drops.iter().any(|d| {
        d.kind == PacketKind::Syn
            && d.netns_name.as_deref() == Some("host")
            && (&*d.reason == "NO_SOCKET"
                || (reset
                    && unnamed_reason(&d.reason)
                    && (d.location.starts_with("tcp_v4_rcv")
                        || d.location.starts_with("tcp_v6_rcv"))))
    })
}

/// The cause of one handshake that failed; None for an answered one.
pub fn classify(h: &Handshake, ctx: &Context) -> Option<Cause> {
    assess(h, ctx).map(|(c, _)| c)
}

/// The cause of one handshake that failed, and how much it rests on the handshake itself.
pub fn assess(h: &Handshake, ctx: &Context) -> Option<(Cause, Confidence)> {
    let outcome = h.outcome();
    if outcome == Outcome::Answered {
        // A half-open accept by the host of a port the mesh should carry is no answer: no
        // task is behind it (dockerd holds a listener on every port it publishes).
        let by_host = ctx.host_answered.contains(&(h.client, h.isn));
        return match ctx.mesh_publisher(h.service.port()) {
            Some(p) if by_host && p.running == Some(0) => {
                Some((Cause::NoRunningTask, Confidence::Confirmed))
            }
            Some(_) if by_host => Some((Cause::MeshBypassed, Confidence::Confirmed)),
            _ => None,
        };
    }
    // Docker's view of the port first: with no task behind it, nothing else matters.
    if let Some(p) = ctx.mesh_publisher(h.service.port()) {
        if p.running == Some(0) {
            return Some((Cause::NoRunningTask, Confidence::Confirmed));
        }
        if refused_by_host(h) {
            return Some((Cause::MeshBypassed, Confidence::Confirmed));
        }
    }
    // A packet of the handshake arrived corrupted (its checksum does not match its bytes): an
    // offload or a link broke it on the way, inside the overlay's datagrams too, and no rule
    // or socket of this node is to blame.
    if h.drops
        .iter()
        .any(|d| CHECKSUM_REASONS.contains(&&*d.reason))
    {
        return Some((Cause::BadChecksum, Confidence::Confirmed));
    }
    // Dropped inside a VXLAN datagram, before the overlay took the packet out of it: whatever
    // the reason (a firewall rule, no VXLAN socket), the overlay did not carry it here.
    if h.drops.iter().any(|d| d.vxlan_from.is_some()) {
        return Some((Cause::OverlayUnreachable, Confidence::Confirmed));
    }
    // IPVS sent the SYN to a backend Docker is draining (weight 0), and it was lost or
    // refused there: it should not have gone there. Confirmed when the backend was of
    // weight 0 before the run (so before the SYN); when only at its end, the task may have
    // stopped listening before Docker drained it.
    if let Some((_, m)) = misdirections(h, ctx).next() {
        let confidence = if m.at_start {
            Confidence::Confirmed
        } else {
            Confidence::Circumstantial
        };
        return Some((Cause::IpvsMisdirected, confidence));
    }
    // The kernel said why: the first drop with a reason that names a cause (and that the
    // handshake does not contradict) wins.
    let timestamps = carried_timestamps(h);
    if let Some(found) = h.drops.iter().find_map(|d| {
        drop_cause(d, timestamps, ctx.has_tw_paws_reason)
            .map(|c| ipvs_refined(conntrack_refined(c, d, ctx), h, d, ctx))
    }) {
        return Some(found);
    }
    // Answered by a RST (the SYN itself freed without a telling reason, as on kernels
    // without drop reasons): nothing listens.
    if outcome == Outcome::Reset || matches!(h.answer, Some(Answer::Reset { .. })) {
        return Some((Cause::NoListener, Confidence::Confirmed));
    }
    // Silence: the reply went elsewhere, or a counter says who swallowed the SYN. Only for a
    // client seen coming in on a watched interface: one known only from a drop's source is
    // the address after NAT (on a task's node, another node's ingress SNAT address, always
    // inside the ingress subnet) and says nothing of where replies to the client go.
    if h.first_hop.is_some() && ctx.overlapping(h.client.ip()).is_some() {
        return Some((Cause::ReplyMisrouted, Confidence::Confirmed));
    }
    // Silence after the SYN left for another node inside the overlay: no counter of this
    // node explains it. Where it was lost (on the way, at that node's firewall, in its task,
    // or the answer on its way back) only that node sees: not confirmed here.
    if outcome == Outcome::Unanswered && h.overlay.is_some() {
        return Some((Cause::OverlayUnreachable, Confidence::Circumstantial));
    }
    // A drop without a telling reason: the counters of the namespace it happened in.
    // Silence: the counters of any namespace.
    let drop_ns: Vec<&str> = h
        .drops
        .iter()
        .filter_map(|d| d.netns_name.as_deref())
        .collect();
    let any = |names: &[&str]| {
        names.iter().any(|n| {
            ctx.rose(n)
                .iter()
                .any(|(ns, _)| drop_ns.is_empty() || drop_ns.contains(&ns.as_str()))
        })
    };
    // A SYN that PAWS rejects is freed where we see it, so a drop in that namespace comes
    // with PAWS counters. Silence is the listen queue's way (its SYNs leave no drop on many
    // kernels), while the PAWS counters also count late segments of established
    // connections, which any busy namespace has: for silence the listen queue's counters are
    // the more specific evidence and are asked first.
    // A checksum error counter counts nothing else: where it rose with the drop (kernels
    // without reasons), it is asked first; a corrupted SYN always leaves a drop, so never for
    // silence.
    let order: &[(&[&str], Cause)] = if drop_ns.is_empty() {
        &[
            (LISTEN_COUNTERS, Cause::ListenQueueFull),
            (PAWS_COUNTERS, Cause::PawsTimestamps),
            (RP_COUNTERS, Cause::RpFilter),
        ]
    } else {
        &[
            (CHECKSUM_COUNTERS, Cause::BadChecksum),
            (PAWS_COUNTERS, Cause::PawsTimestamps),
            (LISTEN_COUNTERS, Cause::ListenQueueFull),
            (RP_COUNTERS, Cause::RpFilter),
        ]
    };
    if let Some((_, cause)) = order
        .iter()
        .find(|(names, cause)| any(names) && consistent(*cause, h, ctx))
    {
        return Some((*cause, Confidence::Circumstantial));
    }
    Some((Cause::Unknown, Confidence::Circumstantial))
}

/// Clients and services listed per verdict: those with most handshakes (the totals say how
/// many there were). Also the bound of its evidence's drops and counters, and notes.
pub const LISTED: usize = 20;
const PAWS_COUNTERS: &[&str] = &[
    "TcpExt.PAWSTimewait",
    "TcpExt.PAWSPassive",
    "TcpExt.PAWSEstab",
];
const LISTEN_COUNTERS: &[&str] = &["TcpExt.ListenOverflows", "TcpExt.TCPReqQFullDrop"];
const RP_COUNTERS: &[&str] = &["TcpExt.IPReversePathFilter"];
const CHECKSUM_COUNTERS: &[&str] = &["Tcp.InCsumErrors", "Udp.InCsumErrors", "IpExt.InCsumErrors"];

#[derive(Debug, Clone)]
pub struct Verdict {
    pub cause: Cause,
    pub confidence: Confidence,
    /// What else would explain the evidence of a circumstantial verdict.
    pub alternatives: Vec<String>,
    /// Handshakes: the tracker's, the ones it forgot (`forgotten`) and the drops no event
    /// showed (`from_counters`).
    pub count: u64,
    /// Of `count`, handshakes the tracker forgot under a flood, classified by their kind
    /// (exact count).
    pub forgotten: u64,
    /// Of `count`, drops that the kernel's exact counters counted but no event showed,
    /// one handshake each (an estimate).
    pub from_counters: u64,
    /// The [`LISTED`] clients with most handshakes (of those the tracker kept).
    pub clients: BTreeSet<IpAddr>,
    /// Distinct clients of the handshakes the tracker kept.
    pub clients_total: u64,
    pub services: BTreeSet<String>,
    pub services_total: u64,
    /// "REASON in netns (packet)" -> count.
    pub drops: BTreeMap<String, u64>,
    /// Drops of evidence keys past [`LISTED`].
    pub drops_other: u64,
    pub unanswered: u64,
    pub resets: u64,
    /// "netns: Counter" -> rise.
    pub counters: BTreeMap<String, u64>,
    /// The namespace of each key of `drops` and of `counters`, kept as it is: a namespace's
    /// name is anybody's text (" in ", ": " included), never parsed back out of a key.
    pub drop_netns: BTreeMap<String, String>,
    pub counter_netns: BTreeMap<String, String>,
    /// Where these handshakes' SYNs left inside the overlay, towards which node (at most
    /// [`LISTED`]).
    pub overlay_paths: Vec<OverlayPath>,
    /// The nodes whose VXLAN datagrams carrying these handshakes were dropped here (at most
    /// [`LISTED`]).
    pub overlay_from: BTreeSet<IpAddr>,
    /// The reasons for which VXLAN datagrams carrying these handshakes were dropped here, and
    /// whether each is a firewall's (blocked) or not (lost); at most [`LISTED`].
    pub overlay_reasons: BTreeMap<String, bool>,
    /// backend-unreachable: the addresses the SYNs were sent on to, which no neighbour
    /// answered for (at most [`LISTED`]; named in the notes too).
    pub unreachable: BTreeSet<std::net::SocketAddr>,
    pub notes: Vec<String>,
    pub explanation: String,
    pub confirm: String,
    pub fix: String,
}

/// Groups failed handshakes by cause and confidence, with their evidence: a cause the
/// handshakes' own packets confirm is never merged with one only counters point at.
pub fn verdicts<'a>(
    handshakes: impl Iterator<Item = &'a Handshake>,
    ctx: &Context,
) -> Vec<Verdict> {
    verdicts_of(handshakes.map(|h| (h, 1, true)), ctx)
}

/// The cause a reason names whatever packet it dropped, if any: what drops known only by
/// their reason (from the kernel's counters) are counted into.
fn reason_only_cause(reason: &str) -> Option<Cause> {
    use PacketKind::*;
    let c = reason_cause(reason, Syn, "");
    [SynAck, Rst, Ack]
        .iter()
        .all(|k| reason_cause(reason, *k, "") == c)
        .then_some(c)
        .flatten()
}

/// The `n` largest counts of `m` (ties in key order), and what the rest add up to.
fn largest<K: Ord + Clone>(m: &BTreeMap<K, u64>, n: usize) -> (BTreeMap<K, u64>, u64) {
    let mut v: Vec<(&K, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let rest = v.iter().skip(n).map(|(_, c)| **c).sum();
    (
        v.into_iter()
            .take(n)
            .map(|(k, c)| (k.clone(), *c))
            .collect(),
        rest,
    )
}

/// Handshakes per client and per service of one cause.
type Named = (BTreeMap<IpAddr, u64>, BTreeMap<String, u64>);

/// A verdict is one cause at one confidence.
type Key = (Cause, Confidence);

/// Groups failed handshakes by cause, with their evidence: each `(handshake, weight,
/// listed)` stands for `weight` handshakes (a shape of forgotten ones stands for many), and
/// only a listed one's client and service are named.
pub fn verdicts_of<'a>(
    handshakes: impl Iterator<Item = (&'a Handshake, u64, bool)>,
    ctx: &Context,
) -> Vec<Verdict> {
    let mut by_cause: BTreeMap<Key, Verdict> = BTreeMap::new();
    // Bounded by the handshakes the tracker keeps; cut to the LISTED most frequent below.
    let mut named: BTreeMap<Key, Named> = BTreeMap::new();
    let new = |(cause, confidence): Key| Verdict {
        cause,
        confidence,
        alternatives: Vec::new(),
        count: 0,
        forgotten: 0,
        from_counters: 0,
        clients: BTreeSet::new(),
        clients_total: 0,
        services: BTreeSet::new(),
        services_total: 0,
        drops: BTreeMap::new(),
        drops_other: 0,
        unanswered: 0,
        resets: 0,
        counters: BTreeMap::new(),
        drop_netns: BTreeMap::new(),
        counter_netns: BTreeMap::new(),
        overlay_paths: Vec::new(),
        overlay_from: BTreeSet::new(),
        overlay_reasons: BTreeMap::new(),
        unreachable: BTreeSet::new(),
        notes: Vec::new(),
        explanation: String::new(),
        confirm: String::new(),
        fix: String::new(),
    };
    for (h, weight, listed) in handshakes {
        let Some(key) = assess(h, ctx) else {
            continue;
        };
        let cause = key.0;
        let v = by_cause.entry(key).or_insert_with(|| new(key));
        v.count += weight;
        if listed {
            let (clients, services) = named.entry(key).or_default();
            *clients.entry(h.client.ip()).or_default() += weight;
            *services.entry(h.service.to_string()).or_default() += weight;
        } else {
            v.forgotten += weight;
        }
        match h.outcome() {
            Outcome::Unanswered => v.unanswered += weight,
            Outcome::Reset => v.resets += weight,
            _ => {}
        }
        for (i, d) in h.drops.iter().enumerate() {
            let ns = d.netns_label();
            let where_ = d.location.split('+').next().unwrap_or("");
            let key = format!("{} {} at {where_} in {ns}", d.kind.as_str(), d.reason);
            // Drops past the notes kept are counted with the last note (a replayed packet).
            let more = if i + 1 == h.drops.len() {
                h.overflow.drops
            } else {
                0
            };
            *v.drops.entry(key.clone()).or_default() += weight + more;
            v.drop_netns.insert(key, ns);
        }
        netfilter_notes(v, h, ctx);
        if cause == Cause::BackendUnreachable {
            unreachable_notes(v, h);
        }
        if matches!(
            cause,
            Cause::NoRunningTask
                | Cause::MeshBypassed
                | Cause::IpvsNoBackend
                | Cause::IpvsMisdirected
        ) {
            if let Some(p) = ctx.mesh_publisher(h.service.port()) {
                let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
                let note = format!(
                    "Docker: service {} publishes port {} through the routing mesh; {} of {} task(s) running",
                    p.service,
                    p.port,
                    count(p.running),
                    count(p.desired)
                );
                if !v.notes.contains(&note) {
                    v.notes.push(note);
                }
            }
            if cause == Cause::MeshBypassed {
                let note = if h.outcome() == Outcome::Answered {
                    "accepted in the host namespace itself (a listener there, such as the one dockerd holds on each published port, completed the handshake; no task is behind it): the SYN never went into ingress_sbox"
                } else {
                    "refused in the host namespace itself: the SYN never went into ingress_sbox"
                }
                .to_owned();
                if !v.notes.contains(&note) {
                    v.notes.push(note);
                }
            }
        }
        for d in h
            .drops
            .iter()
            .filter(|_| cause == Cause::OverlayUnreachable)
        {
            let Some(from) = d.vxlan_from else { continue };
            let note = format!(
                "{} from {} to {} inside a VXLAN datagram (UDP {}) from {from} dropped ({}) in {} before the overlay took it out: {} is node {from}'s routing-mesh address, the real client is in that node's output (swarmtrace join)",
                d.kind.as_str(),
                d.packet.src,
                d.packet.dst,
                ctx.vxlan_port(),
                d.reason,
                d.netns_label(),
                d.packet.src.ip()
            );
            add_note(&mut v.notes, note);
            if v.overlay_from.len() < LISTED {
                v.overlay_from.insert(from);
            }
            let by_firewall = reason_cause(&d.reason, d.kind, &d.location)
                .is_some_and(|c| c == Cause::NetfilterDrop);
            if v.overlay_reasons.len() < LISTED {
                v.overlay_reasons.insert(d.reason.to_string(), by_firewall);
            }
        }
        if let (Cause::OverlayUnreachable, Some(o)) = (cause, h.overlay) {
            let note = format!(
                "SYN from client {} to {} sent into the overlay (VXLAN, UDP {}) from {} to {} (the task's node)",
                h.client.ip(),
                h.service,
                ctx.vxlan_port(),
                o.local,
                o.remote
            );
            add_note(&mut v.notes, note);
            // The interface it left by, as the run named it (the first path of that pair).
            let path = ctx
                .overlay_paths
                .iter()
                .find(|p| p.local == o.local && p.remote == o.remote)
                .cloned()
                .unwrap_or_else(|| OverlayPath {
                    local: o.local,
                    remote: o.remote,
                    netns: "host".to_owned(),
                    ifname: "any".to_owned(),
                });
            if v.overlay_paths.len() < LISTED && !v.overlay_paths.contains(&path) {
                v.overlay_paths.push(path);
            }
        }
        if cause == Cause::ReplyMisrouted {
            if let Some(s) = ctx.overlapping(h.client.ip()) {
                let note = format!(
                    "client {} is inside {} of {} in {}: replies to it are routed there",
                    h.client.ip(),
                    s.net.network(),
                    s.ifname,
                    s.netns
                );
                add_note(&mut v.notes, note);
            }
        }
    }
    for (reason, n) in &ctx.unseen_drops {
        if let (Some(cause), true) = (reason_only_cause(reason), *n > 0) {
            // The kernel's reason names the cause: the packets' own evidence.
            let key = (cause, Confidence::Confirmed);
            let v = by_cause.entry(key).or_insert_with(|| new(key));
            v.count += n;
            v.from_counters += n;
        }
    }
    for (key, (clients, services)) in named {
        let v = by_cause.get_mut(&key).expect("named only with its verdict");
        v.clients_total = clients.len() as u64;
        v.clients = largest(&clients, LISTED).0.into_keys().collect();
        v.services_total = services.len() as u64;
        v.services = largest(&services, LISTED).0.into_keys().collect();
    }
    let mut out: Vec<Verdict> = by_cause.into_values().collect();
    for v in &mut out {
        let (drops, other) = largest(&v.drops, LISTED);
        v.drop_netns.retain(|k, _| drops.contains_key(k));
        (v.drops, v.drops_other) = (drops, other);
        // Where drops name namespaces, their counters are the evidence; others' rises
        // (unrelated traffic elsewhere on the host) are noise.
        let drop_namespaces: Vec<String> = v.drop_netns.values().cloned().collect();
        for name in relevant_counters(v.cause) {
            for (ns, n) in ctx.rose(name) {
                if !drop_namespaces.is_empty() && !drop_namespaces.contains(&ns) {
                    continue;
                }
                let key = format!("{ns}: {}", name.trim_start_matches("TcpExt."));
                if v.counters.len() < LISTED {
                    v.counters.insert(key.clone(), n);
                    v.counter_netns.insert(key, ns);
                }
            }
        }
        conntrack_notes(v, ctx);
        advise(v, ctx);
    }
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.cause.cmp(&b.cause))
            .then(a.confidence.cmp(&b.confidence))
    });
    out
}

const CONNTRACK_DROP: &str = "Conntrack.drop";
const CONNTRACK_EARLY_DROP: &str = "Conntrack.early_drop";

/// What conntrack's counters say beside a netfilter verdict: the fill of the full table, or,
/// for a drop a rule made, conntrack drops elsewhere or without a full table (not the cause,
/// but worth a look).
fn conntrack_notes(v: &mut Verdict, ctx: &Context) {
    let fill = |ns: &str| match ctx.conntrack_fill.get(ns) {
        Some((count, max)) => format!("{count} of {max} entries (nf_conntrack_max) at the end"),
        None => "its fill unknown".to_owned(),
    };
    let mut notes = Vec::new();
    match v.cause {
        Cause::ConntrackFull => {
            let namespaces: BTreeSet<&String> = v.drop_netns.values().collect();
            for ns in namespaces.into_iter().filter(|ns| ctx.conntrack_full(ns)) {
                notes.push(format!(
                    "conntrack table of {ns} full: {} dropped, {} evicted to make room (early_drop) during the run; {}",
                    ctx.rise_in(ns, CONNTRACK_DROP),
                    ctx.rise_in(ns, CONNTRACK_EARLY_DROP),
                    fill(ns)
                ));
            }
        }
        Cause::NetfilterDrop => {
            for (ns, n) in ctx.rose(CONNTRACK_DROP) {
                let here = v.drop_netns.values().any(|d| *d == ns);
                notes.push(if here {
                    format!("conntrack also dropped {n} packet(s) in {ns} during the run, but its table showed no sign of being full (nothing evicted, {}): a rule is the likelier cause", fill(&ns))
                } else {
                    format!("conntrack dropped {n} packet(s) in {ns} during the run, not where these SYNs were dropped")
                });
            }
        }
        _ => {}
    }
    for note in notes {
        add_note(&mut v.notes, note);
    }
}

/// What IPVS and the rules of the namespaces where a handshake's SYNs were dropped say beside
/// a netfilter verdict: the service without a backend, the rules whose counters rose.
fn netfilter_notes(v: &mut Verdict, h: &Handshake, ctx: &Context) {
    if v.cause == Cause::IpvsMisdirected {
        misdirected_notes(v, h, ctx);
        return;
    }
    if !matches!(v.cause, Cause::IpvsNoBackend | Cause::NetfilterDrop) {
        return;
    }
    for d in h.drops.iter().filter(|d| d.kind == PacketKind::Syn) {
        let Some(ns) = d.netns_name.as_deref() else {
            continue;
        };
        let Some(view) = ctx.netfilter.get(ns) else {
            continue;
        };
        if let Some((port, mark, view)) = ctx.ipvs_no_backend(ns, syn_ports(h, d)) {
            let dests = view.ipvs.get(&mark).map_or_else(
                || "no such service".to_owned(),
                |d| {
                    if d.is_empty() {
                        "none".to_owned()
                    } else {
                        d.iter()
                            .map(|(a, w)| format!("{a} weight {w}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                },
            );
            add_note(&mut v.notes, format!(
                "IPVS in {ns}: port {port} is marked {mark} ({mark:#x}) by the mangle table's PREROUTING; service FWM {mark} had no destination it could schedule a new connection to (at the end: {dests})"
            ));
        }
        match &view.rules_rose {
            Some(rules) if rules.is_empty() && v.cause == Cause::NetfilterDrop => add_note(
                &mut v.notes,
                format!("no DROP or REJECT rule's packet counter rose in {ns} during the run (iptables-save -c at its start and end): netfilter dropped the SYN there, but no iptables rule says it did"),
            ),
            Some(rules) if rules.is_empty() && v.cause == Cause::IpvsNoBackend => add_note(
                &mut v.notes,
                format!("no DROP or REJECT rule's packet counter rose in {ns} during the run (iptables-save -c at its start and end)"),
            ),
            Some(rules) if v.cause == Cause::NetfilterDrop => {
                for (rule, n) in rules {
                    add_note(
                        &mut v.notes,
                        format!("DROP or REJECT rule in {ns} matched {n} packet(s) during the run: {rule}"),
                    );
                }
            }
            None if v.cause == Cause::IpvsNoBackend => add_note(
                &mut v.notes,
                format!("the firewall rules of {ns} could not be read (iptables-save): a DROP rule there is not ruled out"),
            ),
            _ => {}
        }
    }
}

/// Where IPVS sent the SYN, what Docker had made of that backend, and the sysctl that lets a
/// reused client port follow its old entry.
fn misdirected_notes(v: &mut Verdict, h: &Handshake, ctx: &Context) {
    for (d, m) in misdirections(h, ctx) {
        let when = if m.at_start {
            "at the start of the run already"
        } else {
            "at the end of the run (not at its start)"
        };
        let note = format!(
            "IPVS in {}: port {} is marked {} ({:#x}); the SYN from {} was sent to backend {} of service FWM {}, of weight 0 {} (a task Docker is draining: it sets a shutting-down task's weight to 0 before removing it), and {} at {} in {}",
            m.netns,
            m.port,
            m.mark,
            m.mark,
            h.client,
            m.backend,
            m.mark,
            when,
            if d.reason.is_empty() { "freed" } else { "dropped" },
            d.location,
            d.netns_label(),
        );
        add_note(&mut v.notes, note);
        let shown = |x: Option<u8>| x.map_or_else(|| "unreadable".to_owned(), |n| n.to_string());
        let reuse = format!(
            "in {}: net.ipv4.vs.conn_reuse_mode = {}, net.ipv4.vs.expire_nodest_conn = {}{}",
            m.netns,
            shown(m.view.conn_reuse_mode),
            shown(m.view.expire_nodest_conn),
            match (m.view.conn_reuse_mode, m.view.expire_nodest_conn) {
                (Some(0), Some(0)) => " (Docker sets 0 and 1): a SYN from a client address and port IPVS still has a connection entry for (a reused source port) goes to that entry's backend, whatever its weight",
                (Some(0), _) => " (Docker's settings): a SYN from a reused client port follows its connection entry, unless the kernel schedules it anew because that entry's backend has weight 0 (recent kernels do with expire_nodest_conn = 1)",
                _ => "",
            }
        );
        add_note(&mut v.notes, reuse);
    }
}

/// backend-unreachable: where each SYN was sent on to, and where its neighbour failed.
fn unreachable_notes(v: &mut Verdict, h: &Handshake) {
    for d in h.drops.iter().filter(|d| {
        d.kind == PacketKind::Syn
            && reason_cause(&d.reason, d.kind, &d.location) == Some(Cause::BackendUnreachable)
    }) {
        let dst = d.packet.dst;
        if v.unreachable.len() < LISTED {
            v.unreachable.insert(dst);
        }
        let note = format!(
            "the SYN from client {} to {} was sent on to {dst} and freed as {} at {} in {}: no neighbour answered for {} there",
            h.client,
            h.service,
            if d.reason.is_empty() { "UNKNOWN" } else { &d.reason },
            d.location,
            d.netns_label(),
            dst.ip()
        );
        add_note(&mut v.notes, note);
    }
}

/// Adds `note` to a verdict's notes unless it is there already or LISTED are.
fn add_note(notes: &mut Vec<String>, note: String) {
    if notes.len() < LISTED && !notes.contains(&note) {
        notes.push(note);
    }
}

fn relevant_counters(c: Cause) -> &'static [&'static str] {
    match c {
        Cause::PawsTimestamps => &[
            "TcpExt.PAWSTimewait",
            "TcpExt.PAWSPassive",
            "TcpExt.PAWSEstab",
        ],
        Cause::ListenQueueFull => &[
            "TcpExt.ListenOverflows",
            "TcpExt.ListenDrops",
            "TcpExt.TCPReqQFullDrop",
        ],
        Cause::RpFilter => &["TcpExt.IPReversePathFilter"],
        Cause::ConntrackFull => &[
            "Conntrack.drop",
            "Conntrack.early_drop",
            "Conntrack.insert_failed",
        ],
        Cause::NoListener => &["Tcp.OutRsts"],
        Cause::BadChecksum => CHECKSUM_COUNTERS,
        Cause::ReplyMisrouted => &["TcpExt.ListenDrops"],
        _ => &[],
    }
}

/// The namespace the evidence points at: where the first drop happened, else where a counter
/// rose.
fn first_ns(v: &Verdict) -> String {
    v.drop_netns
        .values()
        .next()
        .or_else(|| v.counter_netns.values().next())
        .cloned()
        .unwrap_or_else(|| "<namespace>".to_owned())
}

fn advise(v: &mut Verdict, ctx: &Context) {
    // The overlays' VXLAN port, in the texts of overlay-unreachable.
    let vx = ctx.vxlan_port();
    let ns = match v.cause {
        // Where the reply was routed: the namespace whose neighbour lookup failed, else the
        // one with the overlapping subnet, never a task's counters.
        Cause::ReplyMisrouted => v
            .drop_netns
            .iter()
            .find(|(key, _)| key.starts_with(PacketKind::SynAck.as_str()))
            .map(|(_, ns)| ns.clone())
            .or_else(|| {
                v.clients
                    .iter()
                    .find_map(|c| ctx.overlapping(*c))
                    .map(|s| s.netns.clone())
            })
            .unwrap_or_else(|| first_ns(v)),
        // Where the VXLAN datagrams left: the underlay's namespace, not the task's.
        Cause::OverlayUnreachable if v.confidence == Confidence::Circumstantial => v
            .overlay_paths
            .first()
            .map_or_else(|| "host".to_owned(), |p| p.netns.clone()),
        _ => first_ns(v),
    };
    let enter = netns_prefix(&ns);
    // The evidence's drops, "KIND REASON at PLACE in NAMESPACE; ...", for the texts that quote
    // them.
    let drop_keys = v
        .drops
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    // A real client to ask the route for: the command then runs as it is.
    let client = v
        .clients
        .iter()
        .next()
        .map_or_else(|| "CLIENT-IP".to_owned(), IpAddr::to_string);
    // The services Docker says publish these handshakes' ports, and the ports.
    let publishers: Vec<&PublishedService> = v
        .services
        .iter()
        .filter_map(|s| s.parse::<std::net::SocketAddr>().ok())
        .filter_map(|a| ctx.mesh_publisher(a.port()))
        .collect();
    let service_words = |cmd: &str| {
        publishers
            .iter()
            .map(|p| format!("{cmd} {}", escape::shell_word(&p.service)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let dport_rules = publishers
        .iter()
        .map(|p| {
            let port = p.port;
            format!("iptables -t nat -S DOCKER-INGRESS | grep -w -- '--dport {port}'; iptables -S DOCKER-INGRESS | grep -w -- '--dport {port}'; nsenter --net={}/ingress_sbox iptables -t mangle -S PREROUTING | grep -w -- '--dport {port}'", netns::DOCKER_DIR)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let (explanation, confirm, fix) = match v.cause {
        Cause::NoRunningTask => (
            "Docker publishes the port for a service that has no running task (scaled to 0, or every task failing): the routing mesh has nothing to send the SYN to. With no task left Docker also removes the port's ingress rule, so the host itself refuses it.".to_owned(),
            format!("{}; {}", service_words("docker service ps --no-trunc"), service_words("docker service inspect --format '{{.Spec.Mode}} {{.Endpoint.Ports}}'")),
            "Scale the service up (docker service scale SERVICE=N); if its tasks keep failing, the ERROR column of docker service ps --no-trunc says why (image, constraints, resources, a crashing command).".to_owned(),
        ),
        Cause::MeshBypassed => (
            "The host's own namespace took the SYN: Docker publishes the port through the routing mesh and the service has running tasks, but on this node the ingress rule that sends the port to ingress_sbox (nat DOCKER-INGRESS DNAT) is missing, so the SYN never crossed docker_gwbridge. The host refuses it, or, where a listener holds the port there (dockerd keeps one on each port it publishes), completes the handshake itself and nothing ever answers the request.".to_owned(),
            dport_rules,
            "Have Docker program the ingress again on this node: docker service update --force SERVICE, or restart dockerd here. Find what removed Docker's rules (a firewalld reload, an iptables-restore of a saved ruleset, a cleanup script) and keep it off the DOCKER-INGRESS chains.".to_owned(),
        ),
        Cause::PawsTimestamps => (
            format!(
                "Clients behind NAT share one address but each keeps its own TCP timestamp clock. A SYN that reuses the address and port of a connection still in TIME_WAIT on the server, with an older TSval, fails the PAWS check (RFC 7323) and is dropped without an answer. {} On kernels before 4.12, net.ipv4.tcp_tw_recycle=1 does the same to any SYN from a NATed client (TcpExt PAWSPassive).",
                if ctx.has_tw_paws_reason {
                    "This kernel names the drop TCP_RFC7323_TW_PAWS."
                } else {
                    "This kernel has no TCP_RFC7323_TW_PAWS reason (it came in 6.16): the evidence is the TIME_WAIT drop path and the PAWS counters."
                }
            ),
            format!("{enter}nstat -az TcpExtPAWSTimewait TcpExtPAWSEstab TcpExtPAWSPassive; {enter}sysctl net.ipv4.tcp_tw_recycle net.ipv4.tcp_timestamps"),
            format!(
                "Set net.ipv4.tcp_tw_recycle=0 where it exists (kernels before 4.12). Stop funnelling many clients through one SNAT address and port range into the task: publish with mode=host, or keep client addresses with your own load balancer in front.{}",
                // Turning timestamps off costs every connection its PAWS protection: never on
                // the word of counters alone.
                if v.confidence == Confidence::Confirmed {
                    " As a last resort, net.ipv4.tcp_timestamps=0 on the NAT or the clients (loses PAWS protection and RTT samples)."
                } else {
                    ""
                }
            ),
        ),
        Cause::NetfilterDrop => (
            "A firewall rule (iptables/nftables) dropped the handshake before it reached the service.".to_owned(),
            format!("{enter}iptables-save -c | grep -E -- '-j (DROP|REJECT)'; {enter}nft list ruleset | grep -E 'drop|reject'"),
            "Remove or narrow the rule. For Swarm services, your own rules belong in the DOCKER-USER chain; check that they do not match the published port.".to_owned(),
        ),
        Cause::ConntrackFull => (
            "The conntrack table of the namespace that dropped the SYN was full: netfilter's connection tracking could not make an entry for the new connection (nor evict one: established ones are kept) and dropped its first packet, which the kernel reports as a firewall drop (NETFILTER_DROP, or nf_hook_slow without reasons) and logs as \"nf_conntrack: table full, dropping packet\". Established connections carry on; new ones vanish until entries expire. Each namespace counts its own entries against the host's one limit, nf_conntrack_max.".to_owned(),
            format!("{enter}conntrack -S; {enter}sysctl net.netfilter.nf_conntrack_count net.netfilter.nf_conntrack_max; dmesg | grep 'nf_conntrack: table full' | tail -n 3"),
            format!("Raise the limit on the host: sysctl -w net.netfilter.nf_conntrack_max=N (persist it in /etc/sysctl.d/; it applies to every namespace), and the hash table with it (echo N/4 > /sys/module/nf_conntrack/parameters/hashsize). Then find what fills the table: {enter}conntrack -L | grep -o 'src=[^ ]*' | sort | uniq -c | sort -rn | head (many UNREPLIED entries: a scan or a SYN flood; many TIME_WAIT ones: short-lived connections, lower net.netfilter.nf_conntrack_tcp_timeout_time_wait)."),
        ),
        Cause::IpvsNoBackend => (
            "IPVS, the routing mesh's load balancer in this namespace, had no backend for the port: Docker marks each published port in the mangle table's PREROUTING and IPVS balances each mark over the service's tasks (a fwmark service), but the service of this port's mark had no destination it could schedule a new connection to (none, or all of weight 0) while Docker counts running tasks. IPVS answers such a SYN with an ICMP port unreachable and drops it (ip_vs_leave), which the kernel reports as a firewall drop (NETFILTER_DROP, or nf_hook_slow without reasons). Docker's view and IPVS's disagree: the task's backend was never programmed here or was removed.".to_owned(),
            {
                let ports: BTreeSet<u16> = v
                    .notes
                    .iter()
                    .filter_map(|n| n.split("port ").nth(1)?.split(' ').next()?.parse().ok())
                    .chain(publishers.iter().map(|p| p.port))
                    .collect();
                let mut cmd = format!("{enter}ipvsadm -Ln");
                for port in ports.iter().take(4) {
                    cmd.push_str(&format!("; {enter}iptables -t mangle -S PREROUTING | grep -w -- '--dport {port}'"));
                }
                cmd
            },
            format!(
                "Have Docker program the service's backends again: {}; it rewrites each task's IPVS destination in every node's ingress_sbox. If they go missing again, restart dockerd on this node and look in its log for IPVS errors (journalctl -u docker | grep -i ipvs).",
                if publishers.is_empty() {
                    "docker service update --force SERVICE".to_owned()
                } else {
                    escape::terminal(&service_words("docker service update --force")).into_owned()
                }
            ),
        ),
        Cause::IpvsMisdirected => {
            // The namespace of the IPVS that balanced these handshakes (a draining backend's).
            let sb = netns_prefix(
                ctx.netfilter
                    .iter()
                    .find(|(_, view)| {
                        !view.draining_at_start.is_empty() || !view.draining_at_end.is_empty()
                    })
                    .map_or("ingress_sbox", |(ns, _)| ns.as_str()),
            );
            (
            "IPVS, the routing mesh's load balancer, sent the SYN to a backend Docker is draining (weight 0: a task that is shutting down, or whose endpoint Docker disabled), where nothing took it. IPVS schedules no new connection to a backend of weight 0, but the client reused a source port for which IPVS still held a connection entry (its TIME_WAIT lasts 2 minutes), and with net.ipv4.vs.conn_reuse_mode=0, as Docker sets it, IPVS sends such a SYN where the old entry points (kernels that schedule it anew do so only with net.ipv4.vs.expire_nodest_conn=1; older kernels never do). Clients that open many short connections (and so reuse ports soon) get refused or time out during every rolling update or scale-down. Without a reused port, the SYN was scheduled there before Docker drained the backend.".to_owned(),
            format!("{sb}ipvsadm -Ln; {sb}ipvsadm -Lnc | grep -F -- '{client}:' | head; {sb}sysctl net.ipv4.vs.conn_reuse_mode net.ipv4.vs.expire_nodest_conn"),
            format!(
                "Let draining tasks finish what IPVS still sends them: keep serving until SIGKILL, or stop accepting only after the stop grace period has mostly passed (docker service update --stop-grace-period, a SIGTERM handler that waits). On the clients, avoid reusing source ports quickly (a larger net.ipv4.ip_local_port_range, connection pooling/keep-alive). In the load-balancing namespace, net.ipv4.vs.expire_nodest_conn=1 (Docker's setting; {enter_sb}sysctl -w net.ipv4.vs.expire_nodest_conn=1) makes a recent kernel schedule such a SYN anew; on an older kernel, net.ipv4.vs.conn_reuse_mode=1 does ({enter_sb}sysctl -w net.ipv4.vs.conn_reuse_mode=1; before 5.9 it costs a 1 s delay on reused ports). Both are settings of that namespace, lost when Docker re-creates it.",
                enter_sb = sb
            ),
        )
        }
        Cause::NoListener => (
            "Nothing listens on the target port where the handshake arrived; the kernel answered with a RST.".to_owned(),
            format!("{enter}ss -ltn"),
            "Start the service or fix its port: the target port of --publish published=P,target=T must be the port the task listens on, on 0.0.0.0 (not 127.0.0.1).".to_owned(),
        ),
        Cause::ListenQueueFull => (
            "The listening socket's queue is full: the application does not accept connections fast enough, and the kernel drops new SYNs without an answer.".to_owned(),
            format!("{enter}ss -ltn   # Recv-Q at Send-Q means a full accept queue; {enter}nstat -az TcpExtListenOverflows TcpExtListenDrops"),
            "Make the application accept faster or add replicas; raise its listen backlog together with net.core.somaxconn and net.ipv4.tcp_max_syn_backlog.".to_owned(),
        ),
        Cause::RpFilter => (
            "Strict reverse-path filtering dropped the SYN: the route back to the client leaves by another interface than the one the SYN came in on.".to_owned(),
            format!("{enter}sysctl -a 2>/dev/null | grep '\\.rp_filter'; {enter}nstat -az TcpExtIPReversePathFilter"),
            "Make routing symmetric, or set rp_filter=2 (loose) on the interface the clients come in on.".to_owned(),
        ),
        Cause::ReplyMisrouted => (
            "The handshake reached the service but the answer went the wrong way: the client's address lies inside a subnet Docker uses on this host (docker_gwbridge, docker0, ingress or an overlay), so the reply is routed there and never reaches the client.".to_owned(),
            format!("{enter}ip route get {client}; {enter}ip neigh"),
            "Move Docker's networks out of the clients' ranges: default-address-pools in /etc/docker/daemon.json, docker_gwbridge re-created with another --subnet before swarm init, and the ingress network re-created with `docker network create --ingress --subnet ...`.".to_owned(),
        ),
        Cause::NoRoute => (
            "The kernel had no route for the handshake's packets.".to_owned(),
            format!("{enter}ip route get {client}"),
            "Add the missing route (or default route) in that namespace.".to_owned(),
        ),
        Cause::OverlayUnreachable
            if v.confidence == Confidence::Confirmed
                && v.overlay_reasons.values().any(|by_firewall| !by_firewall) =>
        {
            let from = v.overlay_senders();
            let lost: Vec<&str> = v
                .overlay_reasons
                .iter()
                .filter(|(_, by_firewall)| !**by_firewall)
                .map(|(r, _)| r.as_str())
                .collect();
            let reasons = lost.join(", ");
            let also_firewall = if v.overlay_reasons.values().any(|b| *b) {
                " (others were dropped by a firewall rule: see the drops)"
            } else {
                ", not by a firewall rule"
            };
            let mut why = String::new();
            if lost.contains(&"NO_SOCKET") {
                why += &format!(" NO_SOCKET: nothing here listens on UDP {vx}, so this node has no VXLAN endpoint for the ingress overlay (dockerd has not set the ingress network up here, the node left the swarm, or the nodes disagree on the data-path port).");
            }
            if lost.contains(&"VXLAN_VNI_NOT_FOUND") {
                why += " VXLAN_VNI_NOT_FOUND: this node has no overlay with the datagram's network identifier (VNI): the network the other node sent it on does not exist here, or exists with another VNI (the ingress network re-created while this node was not in the swarm, or this node never joined that network).";
            }
            (
                format!(
                    "The overlay from {from} to this node lost the handshake here: the VXLAN datagrams (UDP {vx}) that carried it from the node where it entered the routing mesh ({from}) were dropped in {ns} for {reasons}{also_firewall}, before the overlay took the packets out of them.{why} The task on this node never saw the SYN; the real client is named in {from}'s output (swarmtrace join).",
                ),
                format!("{enter}ss -ulpn 'sport = :{vx}'; docker network inspect --format '{{{{.Peers}}}}' ingress"),
                format!(
                    "On this node: check that it is in the swarm (`docker info --format '{{{{.Swarm.LocalNodeState}}}}'` says active) and that the ingress network exists here (`docker network inspect ingress`); if not, leave and rejoin the swarm (`docker swarm leave`, then `docker swarm join` with a token from a manager). If the swarm uses another data-path port (`docker swarm init --data-path-port`; this run looked inside UDP {vx}: see --vxlan-port), open that one between the nodes. For another reason, the kernel's reason above names it."
                ),
            )
        }
        Cause::OverlayUnreachable if v.confidence == Confidence::Confirmed => {
            let from = v.overlay_senders();
            let reasons = drop_keys;
            (
                format!(
                    "The overlay from {from} to this node is blocked here by a firewall rule: the VXLAN datagrams (UDP {vx}) that carried the handshake from the node where it entered the routing mesh ({from}) were dropped in {ns} before the overlay took the packets out of them ({reasons}). The task on this node never saw the SYN; the real client is named in {from}'s output (swarmtrace join)."
                ),
                format!("{enter}iptables-save -c | grep -w -e {vx} -e 7946; {enter}nft list ruleset | grep -w -e {vx} -e 7946"),
                format!(
                    "Open UDP {vx} (VXLAN data) and TCP and UDP 7946 (the nodes' gossip) between the nodes, both ways: remove or narrow the rule here that drops them (from {from}), and check every other firewall on the way (firewalld, cloud security groups, network ACLs). Check the MTU too: the overlay adds 50 bytes to each packet."
                ),
            )
        }
        Cause::OverlayUnreachable => {
            let remotes = v
                .overlay_paths
                .iter()
                .map(|p| p.remote.to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ");
            let (remote, local, ifname) = v.overlay_paths.first().map_or_else(
                || ("NODE-IP".to_owned(), "THIS-NODE-IP".to_owned(), "any".to_owned()),
                |p| (p.remote.to_string(), p.local.to_string(), p.ifname.clone()),
            );
            let ifname = escape::shell_word(&ifname);
            (
                format!(
                    "The routing mesh sent the SYN of client {client} on to the node that runs the task, {remotes}, through the ingress overlay (VXLAN over UDP {vx}, from {local}), and nothing came back: no SYN-ACK, no RST, no drop on this node. The overlay to {remotes} looks unreachable: the VXLAN datagrams are lost on the way or refused there (UDP {vx} blocked by a firewall or security group), or that node's answers do not get back."
                ),
                format!(
                    "{enter}timeout 10 tcpdump -ni {ifname} -c 20 'udp port {vx} and host {remote}'   # datagrams to {remote} and none back: the overlay is blocked"
                ),
                format!(
                    "Open UDP {vx} (VXLAN data) and TCP and UDP 7946 (the nodes' gossip) between the nodes, both ways, in every firewall on the way: iptables/nftables/firewalld on {remote} and on this node ({local}), cloud security groups, network ACLs. On {remote}, `iptables-save -c | grep -w -e {vx} -e 7946` shows a rule that drops them; `swarmtrace run` there, joined with this node's output by `swarmtrace join`, names the dropped datagram. Check the MTU too: the overlay adds 50 bytes to each packet."
                ),
            )
        }
        Cause::BadChecksum => {
            let reasons = drop_keys;
            (
                format!(
                    "The kernel discarded the handshake's packets because their checksum did not match their bytes ({reasons}): they were corrupted after the sender computed the checksum, or it was never filled in. On Docker hosts this is most often checksum offload: a NIC, a virtual NIC (VMware's vmxnet3, some cloud and SR-IOV NICs) or its driver gets the checksum of VXLAN-encapsulated or NATed packets wrong, so the overlays and the routing mesh lose handshakes while plain traffic works. A packet dropped inside a VXLAN datagram points at the node that sent the datagram; a faulty link or NIC corrupts other traffic too."
                ),
                format!("{enter}nstat -az TcpInCsumErrors UdpInCsumErrors IpExtInCsumErrors   # rising: corrupted packets arrive here; on the sending host: ethtool -k IFACE | grep -i checksum"),
                "Turn checksum offload off where the packets leave: on the sending host's interface (for an overlay, the other node's underlay interface), `ethtool -K IFACE tx-checksum-ip-generic off` (or `ethtool -K IFACE tx off`), and make it persistent (a udev rule or the network configuration); then update the NIC's driver or firmware, or the hypervisor's virtual NIC. If the checksum errors rise for all traffic, check the link and the NIC: `ethtool -S IFACE` (CRC and frame errors).".to_owned(),
            )
        }
        Cause::BackendUnreachable => {
            let to = v
                .unreachable
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>();
            let first = to.first().cloned().unwrap_or_else(|| "BACKEND-IP".to_owned());
            let to = if to.is_empty() { "an address".to_owned() } else { to.join(", ") };
            let services = service_words("docker service ps");
            (
                format!(
                    "The routing mesh sent the SYN on to {to} (the backend its DNAT or IPVS chose), and nothing answered for that address in {ns}: the kernel could not resolve its neighbour (ARP) and freed the SYN without an answer. On a swarm node the backend is a task's address on the ingress network: the task is gone while the mesh still balances to it, or it runs on another node and this node's overlay has no neighbour and forwarding entries for it (Docker's gossip on TCP and UDP 7946 programs them; blocked or out of sync, they are missing)."
                ),
                format!(
                    "{enter}ip neigh show {first}; {enter}ipvsadm -Ln{}",
                    if services.is_empty() { String::new() } else { format!("; {services}") }
                ),
                "If the task behind that address is gone, make Docker program the mesh again: `docker service update --force SERVICE`. If it runs on another node, open TCP and UDP 7946 (the nodes' gossip, which carries the overlay's neighbour entries) and the data-path port between the nodes (`swarmtrace doctor` on each checks their firewalls), then restart dockerd on this node (`systemctl restart docker`) so that it learns the entries again; leaving and rejoining the swarm is the last resort.".to_owned(),
            )
        }
        Cause::Unknown => (
            "The handshake failed but the kernel gave no reason swarmtrace can name.".to_owned(),
            "swarmtrace run -v --json, and look at the drops' reasons and locations".to_owned(),
            "See the evidence; watch more interfaces with --iface NETNS:IFACE to see how far the SYN got.".to_owned(),
        ),
    };
    v.explanation = explanation;
    v.confirm = confirm;
    v.fix = fix;
    if v.cause == Cause::OverlayUnreachable && v.confidence == Confidence::Circumstantial {
        // Its own packets show the SYN leaving towards the other node, not where it was lost.
        v.alternatives = alternatives(v.cause);
        v.explanation = format!(
            "Not confirmed: this node saw the SYN leave into the overlay and no answer come back; where it was lost only the task's node can see. {}",
            v.explanation
        );
    } else if v.confidence == Confidence::Circumstantial && v.cause != Cause::Unknown {
        v.alternatives = alternatives(v.cause);
        v.explanation = format!(
            "Not confirmed: no packet of these handshakes shows it, only counters of a whole namespace over the whole run. {}",
            v.explanation
        );
        v.fix = format!(
            "Confirm it first (the command above, during the failures). {}",
            v.fix
        );
    }
}

/// What else raises the counters a circumstantial verdict rests on, or swallows a SYN
/// without a word.
fn alternatives(c: Cause) -> Vec<String> {
    let mut out: Vec<String> = match c {
        Cause::PawsTimestamps => vec![
            "late or duplicate segments of established connections in that namespace (PAWSEstab), unrelated to these handshakes".into(),
            "SYNs of other clients rejected against TIME_WAIT sockets there (PAWSTimewait)".into(),
        ],
        Cause::ListenQueueFull => vec![
            "another listener in that namespace overflowing (ListenOverflows counts every socket of the namespace)".into(),
        ],
        Cause::RpFilter => vec![
            "other clients' packets dropped by reverse-path filtering in that namespace".into(),
        ],
        Cause::IpvsNoBackend => vec![
            "a DROP or REJECT rule in that namespace (its rules could not be read to rule it out)".into(),
        ],
        Cause::NetfilterDrop => vec![
            "a rule of an nftables table that iptables-save does not show (nft list ruleset)".into(),
            "IPVS dropping the first SYN of a reused client port whose old connection entry it expired (a backend removed or drained while the client still had an entry; the client's retransmission 1 s later is scheduled anew): ipvsadm -Lnc in that namespace".into(),
            "conntrack dropping a packet it could not track (conntrack -S: insert_failed, drop, invalid)".into(),
        ],
        Cause::BadChecksum => vec![
            "other traffic with bad checksums in that namespace (a corrupted UDP datagram or TCP segment of another connection), while these SYNs were dropped for another reason the kernel does not name".into(),
        ],
        Cause::IpvsMisdirected => vec![
            "the task stopped listening (it crashed, or exited its server early) before Docker drained its backend, and IPVS scheduled the SYN there while it still had weight 1: nothing listening in the task".into(),
        ],
        Cause::OverlayUnreachable => vec![
            "the task's node received the SYN and lost it or its answer there (a firewall in the task's namespace, a full listen queue, PAWS): run swarmtrace there too and join both nodes' output with `swarmtrace join`".into(),
            "the answer lost on its way back through the overlay (its VXLAN port towards this node blocked, or an MTU mismatch on the way)".into(),
        ],
        _ => vec![],
    };
    out.push("a drop the kernel does not report with a reason (a qdisc, a filter, a full device queue); watch more interfaces with --iface NETNS:IFACE to see how far the SYN got".into());
    out
}

/// [`netns_enter`] with a space after it, ready to prefix a command (empty for the host).
fn netns_prefix(ns: &str) -> String {
    match netns_enter(ns) {
        e if e.is_empty() => e,
        e => e + " ",
    }
}

/// How to enter a namespace by the name swarmtrace shows: a shell command prefix whose every
/// word from the name is quoted ([`escape::shell_word`]).
fn netns_enter(ns: &str) -> String {
    if ns == "<namespace>" {
        return String::new();
    }
    match NetnsLabel::of(ns) {
        NetnsLabel::Host => String::new(),
        // Only the number: the process's name is anybody's.
        NetnsLabel::Process(pid) => format!("nsenter -t {pid} -n"),
        NetnsLabel::Docker(file) => {
            escape::shell_words(["nsenter", &format!("--net={}/{file}", netns::DOCKER_DIR)])
        }
        NetnsLabel::Inode(_) | NetnsLabel::Named(_) => {
            escape::shell_words(["ip", "netns", "exec", ns])
        }
    }
}

impl Verdict {
    /// The nodes whose VXLAN datagrams carrying these handshakes were dropped here.
    fn overlay_senders(&self) -> String {
        self.overlay_from
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn to_json(&self) -> Value {
        json!({
            "cause": self.cause.id(),
            "confidence": self.confidence.id(),
            "alternatives": self.alternatives,
            "count": self.count,
            "clients": self.clients.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "services": self.services.iter().collect::<Vec<_>>(),
            "evidence": {
                "drops": self.drops,
                "unanswered": self.unanswered,
                "resets": self.resets,
                "counters": self.counters,
                "notes": self.notes,
                "drops_other": self.drops_other,
            },
            "explanation": self.explanation,
            "confirm": self.confirm,
            "fix": self.fix,
            "clients_total": self.clients_total,
            "services_total": self.services_total,
            "forgotten": self.forgotten,
            "from_counters": self.from_counters,
        })
    }

    /// The verdict for a terminal: every text that came from outside (namespace and
    /// interface names in the evidence and the commands, reasons, addresses) escaped.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let t = escape::terminal;
        let mut s = String::new();
        let clients: Vec<String> = self.clients.iter().map(|c| c.to_string()).collect();
        let services: Vec<&str> = self.services.iter().map(String::as_str).collect();
        let more = |shown: usize, total: u64| match total.saturating_sub(shown as u64) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        let _ = writeln!(
            s,
            "[{}] {} handshake(s) to {}{} from {}{}",
            self.cause.id(),
            self.count,
            t(&services.join(", ")),
            more(services.len(), self.services_total),
            clients.join(", "),
            more(clients.len(), self.clients_total),
        );
        if self.forgotten > 0 || self.from_counters > 0 {
            let _ = writeln!(
                s,
                "  count:    {} forgotten by the tracker under the flood (counted by kind), {} counted from the kernel's exact drop counters (events lost or sampled; one handshake per drop)",
                self.forgotten, self.from_counters
            );
        }
        let _ = writeln!(s, "  why:      {}", self.explanation);
        if self.confidence == Confidence::Circumstantial && self.cause != Cause::Unknown {
            let _ = writeln!(
                s,
                "  confidence: circumstantial; it could also be: {}",
                self.alternatives.join("; ")
            );
        }
        for (d, n) in &self.drops {
            let _ = writeln!(s, "  evidence: {n} x {}", t(d));
        }
        if self.drops_other > 0 {
            let _ = writeln!(s, "  evidence: {} other drops", self.drops_other);
        }
        if self.unanswered > 0 {
            let _ = writeln!(
                s,
                "  evidence: {} unanswered (no SYN-ACK, no drop)",
                self.unanswered
            );
        }
        if self.resets > 0 {
            let _ = writeln!(s, "  evidence: {} answered by a RST", self.resets);
        }
        for (c, n) in &self.counters {
            let _ = writeln!(s, "  evidence: {} +{n}", t(c));
        }
        for note in &self.notes {
            let _ = writeln!(s, "  evidence: {}", t(note));
        }
        let _ = writeln!(s, "  confirm:  {}", t(&self.confirm));
        let _ = writeln!(s, "  fix:      {}", self.fix);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::parse_cidr;
    use crate::trace::tracker::Answer;
    use swarmtrace_common::{HandshakeKey, Hop};

    fn hs(client: &str) -> Handshake {
        Handshake {
            client: client.parse().unwrap(),
            service: "10.10.0.1:8080".parse().unwrap(),
            isn: 1,
            first_ns: 0,
            syns: 1,
            keys: vec![HandshakeKey { isn: 1, tsval: 2 }],
            first_hop: Some(Hop::default()),
            answer: None,
            drops: vec![],
            reported: true,
            overflow: Default::default(),
            overlay: None,
        }
    }

    fn dropped(
        client: &str,
        kind: PacketKind,
        reason: &str,
        location: &str,
        ns: &str,
    ) -> Handshake {
        let mut h = hs(client);
        h.drops.push(DropNote {
            ts_ns: 1,
            kind,
            reason: reason.into(),
            location: location.into(),
            netns: 7,
            netns_name: Some(ns.into()),
            ifname: Some("eth0".into()),
            packet: crate::trace::event::Packet {
                kind,
                src: "10.0.0.2:40000".parse().unwrap(),
                dst: "10.0.0.5:80".parse().unwrap(),
                seq: 1,
                ack: 0,
                tsval: Some(2),
                tsecr: None,
                flags: 2,
            },
            vxlan_from: None,
        });
        h
    }

    fn lab_ctx() -> Context {
        Context {
            subnets: vec![
                LocalSubnet {
                    netns: "host".into(),
                    ifname: "eth0".into(),
                    net: parse_cidr("10.10.0.0/24").unwrap(),
                },
                LocalSubnet {
                    netns: "host".into(),
                    ifname: "docker_gwbridge".into(),
                    net: parse_cidr("172.18.0.0/16").unwrap(),
                },
            ],
            ingress_ifaces: [("host".to_owned(), "eth0".to_owned())].into(),
            has_tw_paws_reason: true,
            ..Context::default()
        }
    }

    #[test]
    fn reasons_name_causes() {
        let ctx = lab_ctx();
        let cases = [
            (
                PacketKind::Syn,
                "TCP_RFC7323_TW_PAWS",
                "tcp_v4_rcv+0x1",
                Cause::PawsTimestamps,
            ),
            (
                PacketKind::Syn,
                "NETFILTER_DROP",
                "nft_do_chain+0x1",
                Cause::NetfilterDrop,
            ),
            (
                PacketKind::Syn,
                "NO_SOCKET",
                "tcp_v4_rcv+0x1",
                Cause::NoListener,
            ),
            (
                PacketKind::Syn,
                "IP_RPFILTER",
                "ip_rcv_finish_core+0x1",
                Cause::RpFilter,
            ),
            (
                PacketKind::SynAck,
                "NEIGH_FAILED",
                "neigh_invalidate+0x1",
                Cause::ReplyMisrouted,
            ),
            (
                PacketKind::Syn,
                "IP_INNOROUTES",
                "ip_route_input+0x1",
                Cause::NoRoute,
            ),
            (
                PacketKind::Syn,
                "NOT_SPECIFIED",
                "somewhere+0x1",
                Cause::Unknown,
            ),
            (
                PacketKind::Syn,
                "TCP_CSUM",
                "tcp_v4_rcv+0x1",
                Cause::BadChecksum,
            ),
            (
                PacketKind::Syn,
                "NEIGH_FAILED",
                "neigh_invalidate+0x1",
                Cause::BackendUnreachable,
            ),
            (
                PacketKind::Syn,
                "UNKNOWN",
                "__neigh_event_send+0x1",
                Cause::BackendUnreachable,
            ),
            (
                PacketKind::Syn,
                "UNKNOWN",
                "arp_error_report+0x2b",
                Cause::BackendUnreachable,
            ),
            (
                PacketKind::SynAck,
                "SKB_CSUM",
                "__skb_checksum_complete+0x1",
                Cause::BadChecksum,
            ),
            // 5.10: no reasons, the location tells.
            (
                PacketKind::Syn,
                "UNKNOWN",
                "nft_do_chain+0x3f2",
                Cause::NetfilterDrop,
            ),
            (
                PacketKind::SynAck,
                "UNKNOWN",
                "neigh_invalidate+0x8a",
                Cause::ReplyMisrouted,
            ),
        ];
        for (kind, reason, loc, want) in cases {
            let h = dropped("10.10.0.11:40000", kind, reason, loc, "task");
            assert_eq!(classify(&h, &ctx), Some(want), "{reason} at {loc}");
            if want != Cause::Unknown {
                assert_eq!(assess(&h, &ctx).unwrap().1, Confidence::Confirmed);
            }
        }
        // Before 6.16 the TIME_WAIT path's place names PAWS (where it is not inlined).
        let before_tw_paws = Context {
            has_tw_paws_reason: false,
            ..lab_ctx()
        };
        let h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "NOT_SPECIFIED",
            "tcp_timewait_state_process+0x1",
            "task",
        );
        assert_eq!(
            assess(&h, &before_tw_paws),
            Some((Cause::PawsTimestamps, Confidence::Confirmed))
        );
    }

    /// `text` holds `want`, or the assertion shows both.
    fn says(text: &str, want: &str) {
        assert!(text.contains(want), "{want:?} not in {text}");
    }

    /// A SYN whose VXLAN datagram arrived with a bad UDP checksum: the other node's offload,
    /// not an unreachable overlay (whose fix is a firewall or the swarm's membership).
    #[test]
    fn a_corrupted_datagram_is_a_bad_checksum_not_an_unreachable_overlay() {
        let ctx = lab_ctx();
        let mut h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "UDP_CSUM",
            "udp_queue_rcv_one_skb+0x1",
            "host",
        );
        h.drops[0].vxlan_from = Some("192.168.56.11".parse().unwrap());
        assert_eq!(
            assess(&h, &ctx),
            Some((Cause::BadChecksum, Confidence::Confirmed))
        );
        // The same datagram refused by a firewall stays the overlay's.
        let mut fw = h.clone();
        fw.drops[0].reason = "NETFILTER_DROP".into();
        assert_eq!(classify(&fw, &ctx), Some(Cause::OverlayUnreachable));

        let mut ctx = ctx;
        ctx.counter_rises
            .insert("host".into(), [("Udp.InCsumErrors".to_owned(), 3)].into());
        let v = verdicts([&h].into_iter(), &ctx);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].cause.id(), "bad-checksum");
        says(&v[0].explanation, "UDP_CSUM");
        says(&v[0].confirm, "nstat -az TcpInCsumErrors");
        says(&v[0].fix, "ethtool -K IFACE tx-checksum-ip-generic off");
        assert_eq!(
            v[0].counters.values().sum::<u64>(),
            3,
            "{:?}",
            v[0].counters
        );
    }

    /// 5.10 frees a corrupted SYN in tcp_v4_rcv without a reason: the checksum error counter
    /// of that namespace tells, not confirmed; one risen elsewhere, or silence, does not.
    #[test]
    fn without_reasons_the_checksum_counter_of_the_drops_namespace_tells() {
        let h = dropped(
            "10.10.0.11:40100",
            PacketKind::Syn,
            "UNKNOWN",
            "tcp_v4_rcv+0x5d0",
            "host",
        );
        let rises = |ns: &str| {
            let mut ctx = lab_ctx();
            ctx.counter_rises
                .insert(ns.into(), [("Tcp.InCsumErrors".to_owned(), 2)].into());
            ctx
        };
        assert_eq!(
            assess(&h, &rises("host")),
            Some((Cause::BadChecksum, Confidence::Circumstantial))
        );
        assert_eq!(classify(&h, &rises("task")), Some(Cause::Unknown));
        let v = verdicts([&h].into_iter(), &rises("host"));
        assert!(
            v[0].explanation.starts_with("Not confirmed"),
            "{}",
            v[0].explanation
        );
        assert!(!v[0].alternatives.is_empty());
        let mut silent = hs("10.10.0.11:40100");
        silent.drops.clear();
        assert_eq!(classify(&silent, &rises("host")), Some(Cause::Unknown));
    }

    /// The SYN sent on to a task address nobody answers for: the address is named, and the
    /// confirm command asks the namespace's neighbour table for it.
    #[test]
    fn a_syn_whose_neighbour_failed_names_the_backend() {
        let ctx = lab_ctx();
        let h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "NEIGH_FAILED",
            "neigh_invalidate+0x1",
            "ingress_sbox",
        );
        let v = verdicts([&h].into_iter(), &ctx);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].cause.id(), "backend-unreachable");
        assert_eq!(v[0].confidence, Confidence::Confirmed);
        says(&v[0].explanation, "on to 10.0.0.5");
        says(&v[0].confirm, "ip neigh show 10.0.0.5");
        assert!(
            v[0].notes
                .iter()
                .any(|n| n.contains("sent on to 10.0.0.5:80")),
            "{:?}",
            v[0].notes
        );
        // The SYN-ACK's neighbour failing is still the reply's way, not the backend.
        let r = dropped(
            "10.10.0.11:40000",
            PacketKind::SynAck,
            "NEIGH_FAILED",
            "neigh_invalidate+0x1",
            "ingress_sbox",
        );
        assert_eq!(classify(&r, &ctx), Some(Cause::ReplyMisrouted));
    }

    fn without_timestamps(mut h: Handshake) -> Handshake {
        for k in &mut h.keys {
            k.tsval = 0;
        }
        for d in &mut h.drops {
            d.packet.tsval = None;
        }
        h
    }

    fn paws_rises(ns: &str) -> Context {
        let mut ctx = Context {
            has_tw_paws_reason: false,
            ..lab_ctx()
        };
        ctx.counter_rises
            .insert(ns.into(), [("TcpExt.PAWSEstab".to_owned(), 4)].into());
        ctx
    }

    #[test]
    fn paws_needs_a_syn_that_carried_a_timestamp() {
        let ctx = paws_rises("task1");
        for loc in ["tcp_v4_rcv+0x91", "tcp_timewait_state_process+0x1"] {
            let h = dropped(
                "10.10.0.12:40000",
                PacketKind::Syn,
                "NOT_SPECIFIED",
                loc,
                "task1",
            );
            assert_eq!(classify(&h, &ctx), Some(Cause::PawsTimestamps), "{loc}");
            let h = without_timestamps(h);
            assert!(!carried_timestamps(&h));
            assert_eq!(classify(&h, &ctx), Some(Cause::Unknown), "{loc}");
        }
        // Silence with PAWS counters somewhere: not for a SYN without timestamps either.
        let h = without_timestamps(hs("10.10.0.12:40000"));
        assert_eq!(classify(&h, &ctx), Some(Cause::Unknown));
        assert_eq!(
            assess(&hs("10.10.0.12:40000"), &ctx),
            Some((Cause::PawsTimestamps, Confidence::Circumstantial))
        );
    }

    #[test]
    fn a_kernel_that_names_tw_paws_would_have_named_it() {
        let mut ctx = paws_rises("task1");
        ctx.has_tw_paws_reason = true;
        for loc in ["tcp_v4_rcv+0x91", "tcp_timewait_state_process+0x1"] {
            let h = dropped(
                "10.10.0.12:40000",
                PacketKind::Syn,
                "NOT_SPECIFIED",
                loc,
                "task1",
            );
            assert_eq!(classify(&h, &ctx), Some(Cause::Unknown), "{loc}");
        }
        assert_eq!(
            classify(&hs("10.10.0.12:40000"), &ctx),
            Some(Cause::Unknown)
        );
        // The reason itself still says it.
        let h = dropped(
            "10.10.0.12:40000",
            PacketKind::Syn,
            "TCP_RFC7323_TW_PAWS",
            "tcp_v4_rcv+0x91",
            "task1",
        );
        assert_eq!(
            assess(&h, &ctx),
            Some((Cause::PawsTimestamps, Confidence::Confirmed))
        );
    }

    #[test]
    fn a_syn_freed_for_another_named_reason_is_not_explained_by_counters() {
        let mut ctx = paws_rises("task1");
        ctx.counter_rises.get_mut("task1").unwrap().extend([
            ("TcpExt.ListenOverflows".to_owned(), 2),
            ("TcpExt.IPReversePathFilter".to_owned(), 2),
        ]);
        let h = dropped(
            "10.10.0.12:40000",
            PacketKind::Syn,
            "TC_INGRESS",
            "tcx_run+0x1",
            "task1",
        );
        assert_eq!(classify(&h, &ctx), Some(Cause::Unknown));
    }

    #[test]
    fn a_listen_queue_does_not_drop_an_answered_syn() {
        let mut ctx = lab_ctx();
        ctx.counter_rises.insert(
            "task1".into(),
            [("TcpExt.ListenOverflows".to_owned(), 3)].into(),
        );
        // The SYN-ACK left and was lost on the way back, for no reason the kernel named.
        let mut h = dropped(
            "10.10.0.12:40000",
            PacketKind::SynAck,
            "NOT_SPECIFIED",
            "somewhere+0x1",
            "task1",
        );
        h.answer = Some(Answer::SynAck {
            latency_ns: 10,
            hop: Hop::default(),
        });
        assert_eq!(classify(&h, &ctx), Some(Cause::Unknown));
        // Unanswered, the same counters are circumstantial evidence of a full queue.
        assert_eq!(
            assess(&hs("10.10.0.12:40000"), &ctx),
            Some((Cause::ListenQueueFull, Confidence::Circumstantial))
        );
    }

    /// A SYN dropped by netfilter where conntrack counted drops at a full table.
    fn conntrack_full_in(ns: &str, drop_ns: &str, rises: &[(&str, u64)]) -> (Handshake, Context) {
        let mut ctx = lab_ctx();
        ctx.counter_rises.insert(
            ns.into(),
            rises.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        );
        let h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "NETFILTER_DROP",
            "nf_hook_slow+0x9c",
            drop_ns,
        );
        (h, ctx)
    }

    #[test]
    fn a_full_conntrack_table_is_told_from_a_drop_rule() {
        // The table full in ingress_sbox: conntrack could not make room (early_drop found
        // nothing to evict) and dropped the SYN there.
        let (h, ctx) = conntrack_full_in(
            "ingress_sbox",
            "ingress_sbox",
            &[("Conntrack.drop", 3), ("Conntrack.early_drop", 0)],
        );
        let (h2, _) = conntrack_full_in("ingress_sbox", "ingress_sbox", &[]);
        let mut ctx = ctx;
        ctx.counter_rises
            .get_mut("ingress_sbox")
            .unwrap()
            .insert("Conntrack.early_drop".into(), 5);
        let v = verdicts([h, h2].iter(), &ctx);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].cause.id(), "conntrack-full", "{v:?}");
        assert_eq!(v[0].to_json()["cause"], "conntrack-full");
        assert_eq!(v[0].confidence, Confidence::Confirmed);
        assert_eq!(v[0].counters["ingress_sbox: Conntrack.drop"], 3);
        assert!(
            v[0].confirm.starts_with(
                "nsenter --net=/var/run/docker/netns/ingress_sbox conntrack -S; nsenter --net=/var/run/docker/netns/ingress_sbox sysctl net.netfilter.nf_conntrack_count net.netfilter.nf_conntrack_max"
            ),
            "{}",
            v[0].confirm
        );
        says(&v[0].fix, "nf_conntrack_max");
        assert!(
            v[0].notes[0].starts_with("conntrack table of ingress_sbox full: 3 dropped, 5 evicted"),
            "{:?}",
            v[0].notes
        );
        // No eviction counted, but the table at its limit at the end: full too.
        let (h, mut ctx) =
            conntrack_full_in("ingress_sbox", "ingress_sbox", &[("Conntrack.drop", 3)]);
        assert_eq!(classify(&h, &ctx), Some(Cause::NetfilterDrop));
        ctx.conntrack_fill.insert("ingress_sbox".into(), (250, 256));
        let v = verdicts([h].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::ConntrackFull);
        assert!(
            v[0].to_text().contains("250 of 256 entries"),
            "{}",
            v[0].to_text()
        );
        ctx.conntrack_fill.insert("ingress_sbox".into(), (200, 256));
        assert_eq!(
            classify(
                &dropped(
                    "10.10.0.11:40000",
                    PacketKind::Syn,
                    "NETFILTER_DROP",
                    "nf_hook_slow+0x9c",
                    "ingress_sbox"
                ),
                &ctx
            ),
            Some(Cause::NetfilterDrop)
        );
        // 5.10: no reason, the code location.
        let (mut h, ctx) = conntrack_full_in(
            "ingress_sbox",
            "ingress_sbox",
            &[("Conntrack.drop", 3), ("Conntrack.early_drop", 1)],
        );
        h.drops[0].reason = "UNKNOWN".into();
        assert_eq!(classify(&h, &ctx).map(Cause::id), Some("conntrack-full"));
        // Not this cause: conntrack dropped in another namespace than the SYN's.
        let (h, ctx) = conntrack_full_in(
            "host",
            "ingress_sbox",
            &[("Conntrack.drop", 3), ("Conntrack.early_drop", 1)],
        );
        assert_eq!(classify(&h, &ctx), Some(Cause::NetfilterDrop));
        let v = verdicts([h].iter(), &ctx);
        assert_eq!(
            v[0].notes,
            ["conntrack dropped 3 packet(s) in host during the run, not where these SYNs were dropped"]
        );
        // Not this cause: a DROP rule while conntrack is fine (no conntrack drop).
        let (h, ctx) = conntrack_full_in(
            "ingress_sbox",
            "ingress_sbox",
            &[("Conntrack.early_drop", 1)],
        );
        assert_eq!(classify(&h, &ctx), Some(Cause::NetfilterDrop));
    }

    /// A SYN to port 8080 dropped by netfilter in ingress_sbox (Docker: web, 2 of 2 tasks
    /// running), where IPVS's service for the port's mark (0x100) has `dests`, and the DROP
    /// or REJECT rules that rose there (None: not read).
    fn ipvs_case(dests: &[(&str, u32)], rules: Option<&[(&str, u64)]>) -> (Handshake, Context) {
        let mut ctx = docker_view(2);
        let ipvs: BTreeMap<u32, Vec<(String, u32)>> = [(
            0x100,
            dests.iter().map(|(a, w)| (a.to_string(), *w)).collect(),
        )]
        .into();
        ctx.netfilter.insert(
            "ingress_sbox".into(),
            NetfilterView {
                ipvs_no_backend: crate::kernel::ipvs::without_backend(&ipvs),
                ipvs,
                port_marks: [(8080, 0x100), (8081, 0x101)].into(),
                rules_rose: rules.map(|r| r.iter().map(|(k, n)| (k.to_string(), *n)).collect()),
                ..NetfilterView::default()
            },
        );
        let h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "NETFILTER_DROP",
            "nf_hook_slow+0x9c",
            "ingress_sbox",
        );
        (h, ctx)
    }

    #[test]
    fn ipvs_without_a_backend_is_told_from_a_drop_rule() {
        let (h, ctx) = ipvs_case(&[], Some(&[]));
        let v = verdicts([h].iter(), &ctx);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].cause.id(), "ipvs-no-backend", "{v:?}");
        assert_eq!(v[0].to_json()["cause"], "ipvs-no-backend");
        assert_eq!(v[0].confidence, Confidence::Confirmed);
        let text = v[0].to_text();
        for fact in [
            "Docker: service web publishes port 8080 through the routing mesh; 2 of 2 task(s) running",
            "IPVS in ingress_sbox: port 8080 is marked 256 (0x100) by the mangle table's PREROUTING; service FWM 256 had no destination it could schedule a new connection to (at the end: none)",
            "no DROP or REJECT rule's packet counter rose in ingress_sbox during the run",
        ] {
            assert!(text.contains(fact), "{fact}: {text}");
        }
        assert_eq!(
            v[0].confirm,
            "nsenter --net=/var/run/docker/netns/ingress_sbox ipvsadm -Ln; nsenter --net=/var/run/docker/netns/ingress_sbox iptables -t mangle -S PREROUTING | grep -w -- '--dport 8080'"
        );
        says(&v[0].fix, "docker service update --force web");
        // Destinations of weight 0 only (Docker's way of draining a task): none available.
        let (h, ctx) = ipvs_case(&[("10.0.0.7:0", 0)], Some(&[]));
        let v = verdicts([h].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::IpvsNoBackend);
        assert!(
            v[0].to_text().contains("(at the end: 10.0.0.7:0 weight 0)"),
            "{}",
            v[0].to_text()
        );
        // 5.10: no reason, the place.
        let (mut h, ctx) = ipvs_case(&[], Some(&[]));
        h.drops[0].reason = "UNKNOWN".into();
        assert_eq!(classify(&h, &ctx).map(Cause::id), Some("ipvs-no-backend"));
        // The rules could not be read: a rule is not ruled out, so only circumstantial.
        let (h, ctx) = ipvs_case(&[], None);
        assert_eq!(
            assess(&h, &ctx),
            Some((Cause::IpvsNoBackend, Confidence::Circumstantial))
        );
        let v = verdicts([h].iter(), &ctx);
        assert!(
            v[0].alternatives
                .iter()
                .any(|a| a.contains("a DROP or REJECT rule in that namespace")),
            "{:?}",
            v[0].alternatives
        );
        // Not this cause: a DROP rule's counter rose where the SYN was dropped. The verdict
        // names the rule and its namespace.
        let rule = "-t filter -A INPUT -p tcp -m tcp --dport 8080 -j DROP";
        let (h, ctx) = ipvs_case(&[], Some(&[(rule, 2)]));
        let v = verdicts([h].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::NetfilterDrop, "{v:?}");
        assert_eq!(v[0].confidence, Confidence::Confirmed);
        let text = v[0].to_text();
        assert!(
            text.contains(&format!(
                "DROP or REJECT rule in ingress_sbox matched 2 packet(s) during the run: {rule}"
            )),
            "{text}"
        );
        // Not this cause: the service has a backend. Netfilter dropped it, but no rule's
        // counter rose there: only circumstantial, with what else drops there.
        let (h, ctx) = ipvs_case(&[("10.0.0.7:0", 1)], Some(&[]));
        assert_eq!(
            assess(&h, &ctx),
            Some((Cause::NetfilterDrop, Confidence::Circumstantial))
        );
        let v = verdicts([h].iter(), &ctx);
        assert!(
            v[0].to_text().contains("no DROP or REJECT rule's packet counter rose in ingress_sbox during the run (iptables-save -c at its start and end): netfilter dropped the SYN there, but no iptables rule says it did"),
            "{}",
            v[0].to_text()
        );
        for alt in [
            "nft list ruleset",
            "IPVS dropping the first SYN of a reused client port",
            "conntrack -S",
        ] {
            assert!(
                v[0].alternatives.iter().any(|a| a.contains(alt)),
                "{alt}: {:?}",
                v[0].alternatives
            );
        }
        // The rules not read: a rule is not ruled out (as before).
        let (h, ctx) = ipvs_case(&[("10.0.0.7:0", 1)], None);
        assert_eq!(
            assess(&h, &ctx),
            Some((Cause::NetfilterDrop, Confidence::Confirmed))
        );
        // Not this cause: dropped in another namespace than the one without a backend.
        let (mut h, ctx) = ipvs_case(&[], Some(&[]));
        h.drops[0].netns_name = Some("host".into());
        assert_eq!(classify(&h, &ctx), Some(Cause::NetfilterDrop));
        // Not this cause: a port IPVS does not balance (no mark), or another mark's service.
        let (mut h, ctx) = ipvs_case(&[], Some(&[]));
        h.service = "10.10.0.1:9090".parse().unwrap();
        assert_eq!(classify(&h, &ctx), Some(Cause::NetfilterDrop));
        h.service = "10.10.0.1:8081".parse().unwrap();
        assert_eq!(classify(&h, &ctx), Some(Cause::NetfilterDrop));
    }

    /// A SYN to port 8080 refused in the task behind backend 10.0.0.5 (NO_SOCKET there, a RST
    /// back), where IPVS in ingress_sbox balances 8080's mark over 10.0.0.5 and 10.0.0.6 with
    /// the weights `at_start` and `at_end` of 10.0.0.5 (10.0.0.6: 1).
    fn misdirected_case(at_start: u32, at_end: u32) -> (Handshake, Context) {
        let (_, mut ctx) = ipvs_case(&[("10.0.0.5:0", at_end), ("10.0.0.6:0", 1)], Some(&[]));
        let before: crate::kernel::ipvs::FwmServices = [(
            0x100,
            vec![("10.0.0.5:0".into(), at_start), ("10.0.0.6:0".into(), 1)],
        )]
        .into();
        let view = ctx.netfilter.get_mut("ingress_sbox").unwrap();
        view.draining_at_start = crate::kernel::ipvs::draining(&before);
        view.draining_at_end = crate::kernel::ipvs::draining(&view.ipvs);
        view.conn_reuse_mode = Some(0);
        view.expire_nodest_conn = Some(0);
        // The drop's packet is as IPVS rewrote it: to 10.0.0.5.
        let mut h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "NO_SOCKET",
            "tcp_v4_rcv+0x1",
            "container web.1 (service web)",
        );
        h.answer = Some(Answer::Reset {
            hop: Hop::default(),
        });
        (h, ctx)
    }

    #[test]
    fn a_syn_ipvs_sent_to_a_draining_backend_is_misdirected_not_no_listener() {
        let (h, ctx) = misdirected_case(0, 0);
        assert_eq!(
            assess(&h, &ctx),
            Some((Cause::IpvsMisdirected, Confidence::Confirmed))
        );
        let v = verdicts([h.clone()].iter(), &ctx);
        assert_eq!(v[0].to_json()["cause"], "ipvs-misdirected");
        let text = v[0].to_text();
        for fact in [
            "Docker: service web publishes port 8080 through the routing mesh; 2 of 2 task(s) running",
            "IPVS in ingress_sbox: port 8080 is marked 256 (0x100); the SYN from 10.10.0.11:40000 was sent to backend 10.0.0.5 of service FWM 256, of weight 0 at the start of the run already",
            "dropped at tcp_v4_rcv+0x1 in container web.1 (service web)",
            "in ingress_sbox: net.ipv4.vs.conn_reuse_mode = 0, net.ipv4.vs.expire_nodest_conn = 0 (Docker sets 0 and 1): a SYN from a client address and port IPVS still has a connection entry for (a reused source port) goes to that entry's backend, whatever its weight",
        ] {
            assert!(text.contains(fact), "{fact}: {text}");
        }
        assert_eq!(
            v[0].confirm,
            "nsenter --net=/var/run/docker/netns/ingress_sbox ipvsadm -Ln; nsenter --net=/var/run/docker/netns/ingress_sbox ipvsadm -Lnc | grep -F -- '10.10.0.11:' | head; nsenter --net=/var/run/docker/netns/ingress_sbox sysctl net.ipv4.vs.conn_reuse_mode net.ipv4.vs.expire_nodest_conn"
        );
        assert!(
            v[0].fix.contains(
                "nsenter --net=/var/run/docker/netns/ingress_sbox sysctl -w net.ipv4.vs.expire_nodest_conn=1"
            ),
            "{}",
            v[0].fix
        );
        // 5.10: no reason, freed in tcp_v4_rcv and answered by a RST.
        let mut h510 = h.clone();
        h510.drops[0].reason = "".into();
        assert_eq!(classify(&h510, &ctx), Some(Cause::IpvsMisdirected));
        // Drained during the run only: the task may have stopped listening first.
        let (h, ctx) = misdirected_case(1, 0);
        assert_eq!(
            assess(&h, &ctx),
            Some((Cause::IpvsMisdirected, Confidence::Circumstantial))
        );
        let v = verdicts([h].iter(), &ctx);
        assert!(
            v[0].alternatives
                .iter()
                .any(|a| a.contains("the task stopped listening")),
            "{:?}",
            v[0].alternatives
        );
        // Not this cause: the refusing backend is not a draining one (10.0.0.6 of weight 1
        // refuses while 10.0.0.5 drains): nothing listens there.
        let (mut h, ctx) = misdirected_case(0, 0);
        h.drops[0].packet.dst = "10.0.0.6:80".parse().unwrap();
        assert_eq!(classify(&h, &ctx), Some(Cause::NoListener));
        // Not this cause: no backend drains.
        let (h, ctx) = misdirected_case(1, 1);
        assert_eq!(classify(&h, &ctx), Some(Cause::NoListener));
        // Not this cause: another port's service drains that address.
        let (mut h, ctx) = misdirected_case(0, 0);
        h.service = "10.10.0.1:8081".parse().unwrap();
        assert_eq!(classify(&h, &ctx), Some(Cause::NoListener));
        // Not this cause: a drop in the IPVS namespace itself (IPVS or a rule there).
        let (mut h, ctx) = misdirected_case(0, 0);
        h.drops[0].netns_name = Some("ingress_sbox".into());
        h.drops[0].reason = "NETFILTER_DROP".into();
        assert_eq!(classify(&h, &ctx), Some(Cause::NetfilterDrop));
    }

    #[test]
    fn hostile_names_in_the_ipvs_verdict_are_escaped_and_quoted() {
        let (h, mut ctx) = ipvs_case(&[("10.0.0.7:0\u{1b}[2J", 0)], Some(&[]));
        ctx.published[0].service = "web; rm -rf /\u{1b}[2J".into();
        let v = verdicts([h].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::IpvsNoBackend);
        assert!(!v[0].to_text().contains('\u{1b}'), "{}", v[0].to_text());
        assert!(
            v[0].fix
                .contains("docker service update --force 'web; rm -rf /")
                && !v[0].fix.contains('\u{1b}'),
            "{}",
            v[0].fix
        );
    }

    #[test]
    fn circumstantial_verdicts_say_so_and_do_not_turn_timestamps_off() {
        let ctx = paws_rises("task1");
        let told = dropped(
            "10.10.0.13:40000",
            PacketKind::Syn,
            "TCP_RFC7323_TW_PAWS",
            "tcp_v4_rcv+0x1",
            "task1",
        );
        let v = verdicts([hs("10.10.0.12:40000"), told].iter(), &ctx);
        assert_eq!(v.len(), 2, "confirmed and circumstantial are kept apart");
        let (confirmed, circumstantial) = if v[0].confidence == Confidence::Confirmed {
            (&v[0], &v[1])
        } else {
            (&v[1], &v[0])
        };
        assert!(confirmed.fix.contains("tcp_timestamps=0"));
        assert_eq!(confirmed.to_json()["confidence"], "confirmed");
        assert_eq!(circumstantial.cause, Cause::PawsTimestamps);
        assert!(
            !circumstantial.fix.contains("tcp_timestamps=0"),
            "{}",
            circumstantial.fix
        );
        assert!(circumstantial.explanation.starts_with("Not confirmed"));
        let j = circumstantial.to_json();
        assert_eq!(j["confidence"], "circumstantial");
        assert!(j["alternatives"][0]
            .as_str()
            .unwrap()
            .contains("established connections"));
        assert!(circumstantial
            .to_text()
            .contains("confidence: circumstantial; it could also be: late"));
        assert!(!confirmed.to_text().contains("confidence:"));
    }

    #[test]
    fn answered_has_no_verdict_and_reset_is_no_listener() {
        let ctx = lab_ctx();
        let mut h = hs("10.10.0.11:40000");
        h.answer = Some(Answer::SynAck {
            latency_ns: 10,
            hop: Hop::default(),
        });
        assert_eq!(classify(&h, &ctx), None);
        h.answer = Some(Answer::Reset {
            hop: Hop::default(),
        });
        assert_eq!(classify(&h, &ctx), Some(Cause::NoListener));
        // 5.10: the SYN freed without a reason in tcp_v4_rcv, then the RST: no listener.
        let mut h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "UNKNOWN",
            "tcp_v4_rcv+0x5e",
            "task1",
        );
        h.answer = Some(Answer::Reset {
            hop: Hop::default(),
        });
        assert_eq!(classify(&h, &ctx), Some(Cause::NoListener));
    }

    #[test]
    fn silence_is_attributed_by_overlap_then_counters() {
        let mut ctx = lab_ctx();
        assert_eq!(
            classify(&hs("172.18.5.5:40000"), &ctx),
            Some(Cause::ReplyMisrouted)
        );
        assert_eq!(
            classify(&hs("10.10.0.11:40000"), &ctx),
            Some(Cause::Unknown)
        );
        // ListenDrops alone is not a full queue (the overlap case raises it too).
        ctx.counter_rises
            .insert("task".into(), [("TcpExt.ListenDrops".to_owned(), 1)].into());
        assert_eq!(
            classify(&hs("10.10.0.11:40000"), &ctx),
            Some(Cause::Unknown)
        );
        ctx.counter_rises.insert(
            "task".into(),
            [
                ("TcpExt.ListenOverflows".to_owned(), 3),
                ("TcpExt.ListenDrops".to_owned(), 3),
            ]
            .into(),
        );
        assert_eq!(
            classify(&hs("10.10.0.11:40000"), &ctx),
            Some(Cause::ListenQueueFull)
        );
        // Seen on 5.10 in the VM's task-fault scenario: the full queue's namespace also
        // counted a late segment (PAWSEstab +1) while ListenOverflows rose by 9. Silence is
        // the full queue's.
        ctx.counter_rises.insert(
            "task".into(),
            [
                ("TcpExt.ListenOverflows".to_owned(), 9),
                ("TcpExt.ListenDrops".to_owned(), 9),
                ("TcpExt.PAWSEstab".to_owned(), 1),
            ]
            .into(),
        );
        assert_eq!(
            classify(&hs("10.10.0.11:40000"), &ctx),
            Some(Cause::ListenQueueFull)
        );
    }

    #[test]
    fn paws_without_its_reason_is_told_by_the_counters_of_the_drops_namespace() {
        // 6.1 and 6.12: the SYN hitting TIME_WAIT is freed NOT_SPECIFIED in tcp_v4_rcv.
        let h = dropped(
            "10.10.0.12:40000",
            PacketKind::Syn,
            "NOT_SPECIFIED",
            "tcp_v4_rcv+0x91",
            "task1",
        );
        let mut ctx = Context {
            has_tw_paws_reason: false,
            ..lab_ctx()
        };
        assert_eq!(classify(&h, &ctx), Some(Cause::Unknown));
        ctx.counter_rises
            .insert("other".into(), [("TcpExt.PAWSEstab".to_owned(), 1)].into());
        assert_eq!(
            classify(&h, &ctx),
            Some(Cause::Unknown),
            "another namespace's counter is no evidence"
        );
        ctx.counter_rises
            .insert("task1".into(), [("TcpExt.PAWSEstab".to_owned(), 1)].into());
        assert_eq!(classify(&h, &ctx), Some(Cause::PawsTimestamps));
        // 5.10: no reason at all.
        let h = dropped(
            "10.10.0.12:40000",
            PacketKind::Syn,
            "UNKNOWN",
            "tcp_v4_rcv+0x5e",
            "task1",
        );
        assert_eq!(classify(&h, &ctx), Some(Cause::PawsTimestamps));
    }

    #[test]
    fn verdicts_group_by_cause_with_clients_and_advice() {
        let ctx = lab_ctx();
        let hs = [
            dropped(
                "10.10.0.12:40000",
                PacketKind::Syn,
                "TCP_RFC7323_TW_PAWS",
                "tcp_v4_rcv+0x1",
                "task1",
            ),
            dropped(
                "10.10.0.13:40001",
                PacketKind::Syn,
                "TCP_RFC7323_TW_PAWS",
                "tcp_v4_rcv+0x1",
                "task1",
            ),
            dropped(
                "10.10.0.11:40002",
                PacketKind::Syn,
                "NETFILTER_DROP",
                "nft_do_chain+0x1",
                "host",
            ),
        ];
        let v = verdicts(hs.iter(), &ctx);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].cause, Cause::PawsTimestamps);
        assert_eq!(v[0].count, 2);
        assert_eq!(v[0].clients.len(), 2);
        assert!(v[0].explanation.contains("TCP_RFC7323_TW_PAWS"));
        assert!(v[0].explanation.contains("tcp_tw_recycle"));
        says(&v[0].confirm, "ip netns exec task1");
        let j = v[0].to_json();
        assert_eq!(j["cause"], "paws-timestamps");
        assert_eq!(
            j["evidence"]["drops"]["SYN TCP_RFC7323_TW_PAWS at tcp_v4_rcv in task1"],
            2
        );
        assert!(v[1].to_text().contains("[netfilter-drop]"));
        assert_eq!(
            netns_enter("ingress_sbox"),
            "nsenter --net=/var/run/docker/netns/ingress_sbox"
        );
        assert_eq!(
            netns_enter("container web.1.x3 (service web) [8c1e2f3a4b5c]"),
            "nsenter --net=/var/run/docker/netns/8c1e2f3a4b5c"
        );
        assert_eq!(netns_enter("pid:42(nginx)"), "nsenter -t 42 -n");
        assert_eq!(netns_enter("st1-task1"), "ip netns exec st1-task1");
        assert!(
            !v[1].confirm.contains("netns exec"),
            "host needs no nsenter: {}",
            v[1].confirm
        );
    }

    fn docker_view(running: u64) -> Context {
        Context {
            published: vec![PublishedService {
                service: "web".into(),
                port: 8080,
                mode: "ingress".into(),
                running: Some(running),
                desired: Some(2),
            }],
            ..lab_ctx()
        }
    }

    fn refused(ns: &str) -> Handshake {
        let mut h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "NO_SOCKET",
            "tcp_v4_rcv+0x1",
            ns,
        );
        h.answer = Some(Answer::Reset {
            hop: Hop::default(),
        });
        h
    }

    #[test]
    fn a_published_port_without_a_running_task() {
        let ctx = docker_view(0);
        let v = verdicts([refused("host")].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::NoRunningTask);
        assert_eq!(v[0].confidence, Confidence::Confirmed);
        let text = v[0].to_text();
        assert!(
            text.contains(
                "service web publishes port 8080 through the routing mesh; 0 of 2 task(s) running"
            ),
            "{text}"
        );
        assert!(
            v[0].confirm
                .starts_with("docker service ps --no-trunc web; "),
            "{}",
            v[0].confirm
        );
        // Silence too: with no task nothing answers, however it is lost.
        assert_eq!(
            classify(&hs("10.10.0.11:40000"), &ctx),
            Some(Cause::NoRunningTask)
        );
        // Another port is not this service's.
        let mut other = refused("host");
        other.service = "10.10.0.1:9999".parse().unwrap();
        assert_eq!(classify(&other, &ctx), Some(Cause::NoListener));
    }

    #[test]
    fn the_host_refusing_a_mesh_port_is_the_mesh_bypassed() {
        let ctx = docker_view(2);
        let v = verdicts([refused("host")].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::MeshBypassed);
        let text = v[0].to_text();
        assert!(text.contains("2 of 2 task(s) running"), "{text}");
        assert!(
            text.contains("refused in the host namespace itself"),
            "{text}"
        );
        assert!(
            v[0].confirm
                .starts_with("iptables -t nat -S DOCKER-INGRESS | grep -w -- '--dport 8080'; "),
            "{}",
            v[0].confirm
        );
        assert!(v[0]
            .confirm
            .contains("nsenter --net=/var/run/docker/netns/ingress_sbox iptables -t mangle"));
        // 5.10: freed without a reason in tcp_v4_rcv, answered by a RST.
        let mut h = refused("host");
        h.drops[0].reason = "UNKNOWN".into();
        assert_eq!(classify(&h, &ctx), Some(Cause::MeshBypassed));
    }

    #[test]
    fn a_half_open_accept_by_the_host_is_not_answered() {
        let mut h = hs("10.10.0.11:40000");
        h.answer = Some(Answer::SynAck {
            latency_ns: 1_300_000,
            hop: Hop::default(),
        });
        let mut ctx = docker_view(2);
        assert_eq!(classify(&h, &ctx), None, "answered by the mesh");
        ctx.host_answered.insert((h.client, h.isn));
        let v = verdicts([h.clone()].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::MeshBypassed);
        assert!(v[0]
            .to_text()
            .contains("accepted in the host namespace itself"));
        ctx.published[0].running = Some(0);
        assert_eq!(classify(&h, &ctx), Some(Cause::NoRunningTask));
        // Without Docker's view of the port, an answer is an answer.
        ctx.published.clear();
        assert_eq!(classify(&h, &ctx), None);
    }

    #[test]
    fn a_task_refusing_is_not_the_mesh_bypassed() {
        // The task refused: the mesh did its job, nothing listens in the task.
        let ctx = docker_view(2);
        let task = "container web.1.x3 (service web) [8c1e2f3a4b5c]";
        assert_eq!(classify(&refused(task), &ctx), Some(Cause::NoListener));
        assert_eq!(
            classify(&refused("ingress_sbox"), &ctx),
            Some(Cause::NoListener)
        );
        // Without Docker's view the host's refusal is only no-listener.
        assert_eq!(
            classify(&refused("host"), &lab_ctx()),
            Some(Cause::NoListener)
        );
        // Published in host mode: the host is where it is served.
        let mut ctx = docker_view(2);
        ctx.published[0].mode = "host".into();
        assert_eq!(classify(&refused("host"), &ctx), Some(Cause::NoListener));
    }

    #[test]
    fn a_hostile_service_name_is_quoted_and_escaped() {
        let mut ctx = docker_view(0);
        ctx.published[0].service = "w$(id)\x1b[2J".into();
        let v = verdicts([refused("host")].iter(), &ctx);
        says(
            &v[0].confirm,
            "docker service ps --no-trunc 'w$(id)\x1b[2J'",
        );
        assert!(!v[0].to_text().contains('\x1b'));
    }

    #[test]
    fn a_drop_seen_only_behind_another_nodes_snat_is_not_a_misrouted_reply() {
        // A task's node in a Swarm: the SYN came over the ingress overlay from another node's
        // ingress_sbox, so the only address this node has for the client is that SNAT
        // address, inside the ingress subnet. No watched interface saw the SYN: the address
        // says nothing of where replies to the real client go.
        let mut ctx = lab_ctx();
        ctx.has_tw_paws_reason = false;
        ctx.subnets.push(LocalSubnet {
            netns: "ingress_sbox".into(),
            ifname: "eth0".into(),
            net: parse_cidr("10.0.0.0/24").unwrap(),
        });
        ctx.counter_rises.insert(
            "container paws.1".into(),
            [("TcpExt.PAWSEstab".to_owned(), 1)].into(),
        );
        let mut h = dropped(
            "10.0.0.2:40000",
            PacketKind::Syn,
            "NOT_SPECIFIED",
            "tcp_v4_rcv+0x9e",
            "container paws.1",
        );
        h.first_hop = None;
        let v = verdicts([h.clone()].iter(), &ctx);
        assert_ne!(v[0].cause, Cause::ReplyMisrouted, "{:?}", v[0]);
        assert_eq!(v[0].cause, Cause::PawsTimestamps, "{:?}", v[0]);
        // Seen coming in with that address (the client itself is inside the subnet): still
        // the misrouted reply.
        h.first_hop = Some(Hop::default());
        h.drops.clear();
        assert_eq!(verdicts([h].iter(), &ctx)[0].cause, Cause::ReplyMisrouted);
    }

    #[test]
    fn reply_misrouted_is_confirmed_where_the_reply_is_routed() {
        let mut ctx = lab_ctx();
        ctx.subnets.push(LocalSubnet {
            netns: "ingress_sbox".into(),
            ifname: "eth1".into(),
            // As `ip -o addr` gives it: the interface's address with its prefix.
            net: parse_cidr("172.18.0.1/16").unwrap(),
        });
        ctx.subnets.retain(|s| s.ifname != "docker_gwbridge");
        // 5.10: silence, and the task's ListenDrops rose.
        ctx.counter_rises.insert(
            "task1".into(),
            [("TcpExt.ListenDrops".to_owned(), 2)].into(),
        );
        let v = verdicts([hs("172.18.5.5:40000")].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::ReplyMisrouted);
        // The note names the subnet, not the interface's own address.
        assert_eq!(
            v[0].notes,
            ["client 172.18.5.5 is inside 172.18.0.0/16 of eth1 in ingress_sbox: replies to it are routed there"]
        );
        assert_eq!(
            v[0].confirm,
            "nsenter --net=/var/run/docker/netns/ingress_sbox ip route get 172.18.5.5; nsenter --net=/var/run/docker/netns/ingress_sbox ip neigh"
        );
        // 6.x: the SYN-ACK's failed neighbour lookup names the namespace.
        let h = dropped(
            "172.18.5.5:40000",
            PacketKind::SynAck,
            "NEIGH_FAILED",
            "neigh_invalidate+0x1",
            "ingress_sbox",
        );
        let v = verdicts([h].iter(), &ctx);
        assert!(
            v[0].confirm.starts_with(
                "nsenter --net=/var/run/docker/netns/ingress_sbox ip route get 172.18.5.5;"
            ),
            "{}",
            v[0].confirm
        );
    }

    #[test]
    fn forgotten_and_unseen_handshakes_count_and_clients_are_the_top_ones() {
        let mut ctx = lab_ctx();
        let mut kept = Vec::new();
        for i in 0..100u32 {
            // Client .1 has most handshakes; 99 others one each.
            let last = if i < 30 { 1 } else { i };
            kept.push(dropped(
                &format!("10.64.{}.{}:40000", last >> 8, last & 0xff),
                PacketKind::Syn,
                "NETFILTER_DROP",
                "nft_do_chain+0x1",
                "host",
            ));
        }
        let mut replayed = kept[0].clone();
        replayed.overflow.drops = 999;
        let rep = dropped(
            "10.99.0.1:1",
            PacketKind::Syn,
            "NETFILTER_DROP",
            "nft_do_chain+0x1",
            "host",
        );
        ctx.unseen_drops = [
            ("NETFILTER_DROP".to_owned(), 5),
            ("NO_SOCKET".to_owned(), 7),
        ]
        .into();
        let items = kept
            .iter()
            .map(|h| (h, 1, true))
            .chain([(&replayed, 1, true), (&rep, 1_000_000, false)]);
        let v = verdicts_of(items, &ctx);
        assert_eq!(v.len(), 1, "NO_SOCKET names no cause by itself: {v:?}");
        let v = &v[0];
        assert_eq!(v.cause, Cause::NetfilterDrop);
        assert_eq!(v.count, 101 + 1_000_000 + 5);
        assert_eq!((v.forgotten, v.from_counters), (1_000_000, 5));
        assert_eq!(v.clients.len(), LISTED);
        assert!(v.clients.contains(&"10.64.0.1".parse::<IpAddr>().unwrap()));
        assert!(!v.clients.contains(&"10.99.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!(v.clients_total, 71);
        assert_eq!(
            v.drops["SYN NETFILTER_DROP at nft_do_chain in host"],
            101 + 999 + 1_000_000
        );
        let j = v.to_json();
        assert_eq!(j["count"], 1_000_106);
        assert_eq!(j["clients"].as_array().unwrap().len(), LISTED);
        assert_eq!(j["clients_total"], 71);
        let text = v.to_text();
        assert!(text.contains("from 10.64.0.1"), "{text}");
        assert!(text.contains(" and 51 more"), "{text}");
        assert!(text.contains("1000000 forgotten"), "{text}");
    }

    #[test]
    fn hostile_namespace_names_are_quoted_in_commands_and_escaped_in_text() {
        let ctx = lab_ctx();
        let name = "x in $(touch pwned)`id`\n\x1b[31m': y";
        let h = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "NO_SOCKET",
            "tcp_v4_rcv+0x1",
            name,
        );
        let v = verdicts([h].iter(), &ctx);
        assert_eq!(v[0].cause, Cause::NoListener);
        // The namespace is the drop's, whole, not what follows its last " in ".
        assert_eq!(
            v[0].confirm,
            "ip netns exec 'x in $(touch pwned)`id`\n\x1b[31m'\\'': y' ss -ltn"
        );
        let text = v[0].to_text();
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains(
                "confirm:  ip netns exec 'x in $(touch pwned)`id`\\n\\x1b[31m'\\'': y' ss -ltn"
            ),
            "{text}"
        );
        assert_eq!(text.lines().count(), 5, "a name adds no line: {text}");
        // Only the number of a pid label is used; a name that merely looks like one is quoted.
        assert_eq!(netns_enter("pid:42(a;b)"), "nsenter -t 42 -n");
        assert_eq!(netns_enter("pid:4;2(x)"), "ip netns exec 'pid:4;2(x)'");
        assert_eq!(
            netns_enter("container a b (service $(x)) [8c1e2f3a4b5c]"),
            "nsenter --net=/var/run/docker/netns/8c1e2f3a4b5c"
        );
    }

    /// Node 1 of a two-node Swarm: the SYN came in from the client, the routing mesh sent it
    /// inside a VXLAN datagram to node 2 (which runs the task), and nothing came back.
    fn sent_into_the_overlay(client: &str) -> (Handshake, Context) {
        let mut h = hs(client);
        h.overlay = Some(crate::trace::handshake::OverlaySend {
            local: "192.168.200.1".parse().unwrap(),
            remote: "192.168.200.2".parse().unwrap(),
            hop: Hop::default(),
        });
        let mut ctx = lab_ctx();
        ctx.overlay_paths = vec![OverlayPath {
            local: "192.168.200.1".parse().unwrap(),
            remote: "192.168.200.2".parse().unwrap(),
            netns: "host".into(),
            ifname: "eth0".into(),
        }];
        // Unrelated traffic raised this node's PAWS counters: they do not explain a SYN that
        // left the node.
        ctx.counter_rises
            .insert("host".into(), [("TcpExt.PAWSEstab".to_owned(), 2)].into());
        ctx.has_tw_paws_reason = false;
        (h, ctx)
    }

    #[test]
    fn an_overlay_on_another_data_path_port_is_named_by_its_port() {
        // A swarm made with `--data-path-port 7789`: every text of the verdict names the port
        // the run looked inside, and none the default.
        let (h, mut ctx) = sent_into_the_overlay("10.10.0.11:40000");
        ctx.vxlan_port = 7789;
        let v = &verdicts([&h].into_iter(), &ctx)[0];
        assert_eq!(v.cause.id(), "overlay-unreachable");
        let texts = [&v.explanation, &v.confirm, &v.fix, &v.notes[0]];
        for text in texts {
            assert!(!text.contains("4789"), "{text}");
        }
        assert!(v.explanation.contains("UDP 7789"), "{}", v.explanation);
        assert!(v.notes[0].contains("UDP 7789"), "{}", v.notes[0]);
        assert!(
            v.confirm.contains("'udp port 7789 and host 192.168.200.2'"),
            "{}",
            v.confirm
        );
        assert!(
            v.fix.contains("Open UDP 7789") && v.fix.contains("-e 7789"),
            "{}",
            v.fix
        );
        // A bundle written before the port was recorded reads as the default.
        ctx.vxlan_port = 0;
        assert_eq!(ctx.vxlan_port(), 4789);
    }

    #[test]
    fn silence_after_the_syn_left_into_the_overlay_names_the_other_node() {
        let (h, ctx) = sent_into_the_overlay("10.10.0.11:40000");
        assert_eq!(
            assess(&h, &ctx),
            Some((Cause::OverlayUnreachable, Confidence::Circumstantial))
        );
        let v = &verdicts([&h].into_iter(), &ctx)[0];
        assert_eq!(v.cause.id(), "overlay-unreachable");
        assert_eq!(v.clients, ["10.10.0.11".parse().unwrap()].into());
        // What it says: the real client, the node the SYN was sent to, the overlay; not more
        // than this node saw.
        for text in [&v.explanation, &v.notes[0]] {
            for want in ["10.10.0.11", "192.168.200.2", "VXLAN", "UDP 4789"] {
                assert!(text.contains(want), "{want} not in {text}");
            }
        }
        assert!(
            v.explanation.starts_with("Not confirmed"),
            "{}",
            v.explanation
        );
        assert!(v.alternatives.iter().any(|a| a.contains("swarmtrace join")));
        // The command runs as printed, where the datagrams left, with the real address.
        assert_eq!(
            v.confirm,
            "timeout 10 tcpdump -ni eth0 -c 20 'udp port 4789 and host 192.168.200.2'   # datagrams to 192.168.200.2 and none back: the overlay is blocked"
        );
        assert!(v.fix.contains("UDP 4789") && v.fix.contains("7946") && v.fix.contains("MTU"));
        assert!(v.to_text().contains("[overlay-unreachable]"));
        assert_eq!(v.to_json()["cause"], "overlay-unreachable");

        // Answered through the overlay: no verdict. A drop on this node with its reason: that
        // cause. Sent into the overlay from an interface in another namespace: entered there.
        let mut answered = h.clone();
        answered.answer = Some(Answer::SynAck {
            latency_ns: 10,
            hop: Hop::default(),
        });
        assert_eq!(classify(&answered, &ctx), None);
        let mut dropped_here = dropped(
            "10.10.0.11:40000",
            PacketKind::Syn,
            "NETFILTER_DROP",
            "nft_do_chain+0x1",
            "host",
        );
        dropped_here.overlay = h.overlay;
        assert_eq!(classify(&dropped_here, &ctx), Some(Cause::NetfilterDrop));
        let mut elsewhere = ctx.clone();
        elsewhere.overlay_paths[0].netns = "underlay".into();
        let v = &verdicts([&h].into_iter(), &elsewhere)[0];
        assert!(
            v.confirm
                .starts_with("ip netns exec underlay timeout 10 tcpdump -ni eth0 "),
            "{}",
            v.confirm
        );
        // Node 2: the VXLAN datagram that carried the SYN dropped by its firewall, in the host
        // namespace, before the overlay took the SYN out (the client is node 1's ingress
        // address there).
        let mut on_node2 = dropped(
            "10.0.0.2:40000",
            PacketKind::Syn,
            "NETFILTER_DROP",
            "nft_do_chain+0x1",
            "host",
        );
        on_node2.first_hop = None;
        on_node2.drops[0].vxlan_from = Some("192.168.200.1".parse().unwrap());
        let plain = lab_ctx();
        assert_eq!(
            assess(&on_node2, &plain),
            Some((Cause::OverlayUnreachable, Confidence::Confirmed))
        );
        let v = &verdicts([&on_node2].into_iter(), &plain)[0];
        assert!(v.explanation.contains("192.168.200.1") && v.explanation.contains("UDP 4789"));
        assert!(v.notes[0].contains("inside a VXLAN datagram (UDP 4789) from 192.168.200.1 dropped (NETFILTER_DROP) in host"), "{}", v.notes[0]);
        assert_eq!(
            v.confirm,
            "iptables-save -c | grep -w -e 4789 -e 7946; nft list ruleset | grep -w -e 4789 -e 7946"
        );
        assert!(v.alternatives.is_empty());
        assert!(
            v.explanation.contains("blocked here by a firewall rule"),
            "{}",
            v.explanation
        );
        // Dropped inside VXLAN for another reason: lost, not blocked; no firewall to open.
        let mut no_vtep = on_node2.clone();
        no_vtep.drops[0].reason = "NO_SOCKET".into();
        no_vtep.drops[0].location = "__udp4_lib_rcv+0x5a1".into();
        let v = &verdicts([&no_vtep].into_iter(), &plain)[0];
        assert_eq!(
            (v.cause, v.confidence),
            (Cause::OverlayUnreachable, Confidence::Confirmed)
        );
        assert!(!v.explanation.contains("blocked"), "{}", v.explanation);
        for want in [
            "NO_SOCKET, not by a firewall rule",
            "nothing here listens on UDP 4789",
            "192.168.200.1",
        ] {
            assert!(
                v.explanation.contains(want),
                "{want} not in {}",
                v.explanation
            );
        }
        assert_eq!(
            v.confirm,
            "ss -ulpn 'sport = :4789'; docker network inspect --format '{{.Peers}}' ingress"
        );
        assert!(v.fix.contains("docker swarm join") && !v.fix.starts_with("Open UDP 4789"));
        // No overlay with the datagram's VNI here: said as such.
        let mut no_vni = no_vtep.clone();
        no_vni.drops[0].reason = "VXLAN_VNI_NOT_FOUND".into();
        no_vni.drops[0].location = "vxlan_rcv+0x2c4".into();
        let v = &verdicts([&no_vni].into_iter(), &plain)[0];
        assert_eq!(v.cause, Cause::OverlayUnreachable);
        assert!(
            v.explanation
                .contains("no overlay with the datagram's network identifier (VNI)")
                && !v.explanation.contains("nothing here listens"),
            "{}",
            v.explanation
        );
        // The same drop, not inside VXLAN: the firewall.
        on_node2.drops[0].vxlan_from = None;
        assert_eq!(classify(&on_node2, &plain), Some(Cause::NetfilterDrop));
        // Without the SYN seen leaving into the overlay, silence stays what it was.
        let mut silent = h.clone();
        silent.overlay = None;
        assert_ne!(classify(&silent, &ctx), Some(Cause::OverlayUnreachable));
    }
}
