//! Format 2 (`swarmtrace-bundle/2`), what `capture` writes: `handshakes.json` and
//! `system.json` as structs of their own. A field added later is `#[serde(default)]` (and
//! old bundles still read); a field renamed, retyped or removed is a new version.

use crate::name::Name;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Key, Recorded, VerdictContext};
use crate::clock::WallClock;
use crate::trace::event::{Packet, PacketKind};
use crate::trace::tracker::{Answer, DropNote, Handshake, OverlaySend};

/// `handshakes.json` (its `format` is written first, by `handshakes_json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Handshakes {
    pub handshakes: Vec<HandshakeV2>,
    /// The names of the watched interfaces.
    #[serde(default)]
    pub hops: Vec<HopName>,
    /// Handshakes the capture forgot (beyond the tracker's bound), counted.
    #[serde(default)]
    pub forgotten: u64,
    pub clock: Clock,
}

/// Kernel (monotonic) to wall-clock time: wall-clock ns = monotonic ns + `offset_ns`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Clock {
    pub offset_ns: i128,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HopName {
    pub netns: u32,
    pub ifindex: u32,
    pub namespace: String,
    pub interface: String,
}

/// One handshake: a client's connection attempt, `(client, isn)`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandshakeV2 {
    /// The client and the service as first seen, before any NAT on this host.
    pub client: SocketAddr,
    pub service: SocketAddr,
    pub isn: u32,
    /// Monotonic ns (see `Clock`).
    pub first_ns: u64,
    /// SYN transmissions seen.
    #[serde(default)]
    pub syns: u32,
    /// The kernel table keys of its SYNs.
    #[serde(default)]
    pub keys: Vec<Key>,
    /// Where the first SYN was seen; absent when only a drop told of it.
    #[serde(default)]
    pub first_hop: Option<HopV2>,
    #[serde(default)]
    pub answer: Option<AnswerV2>,
    #[serde(default)]
    pub drops: Vec<DropV2>,
    /// Where its SYN left this node inside a VXLAN datagram (the routing mesh's ingress
    /// overlay), towards the node that runs the task (added 2026-12-04: `overlay-unreachable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayV2>,
}

/// A SYN sent into the overlay: from this node's address (`local`) to the task's node
/// (`remote`), by the interface `hop`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct OverlayV2 {
    pub local: IpAddr,
    pub remote: IpAddr,
    pub hop: HopV2,
}

/// A place a packet passed: an interface of a namespace, in one direction.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct HopV2 {
    /// The namespace's inode.
    pub netns: u32,
    pub ifindex: u32,
    #[serde(default)]
    pub dir: Direction,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
    #[default]
    Unknown,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AnswerV2 {
    SynAck { latency_ns: u64, hop: HopV2 },
    Reset { hop: HopV2 },
}

/// A packet of the handshake dropped by the kernel, as recorded.
#[derive(Debug, Serialize, Deserialize)]
pub struct DropV2 {
    /// Monotonic ns (see `Clock`).
    pub ts_ns: u64,
    /// The kernel's drop reason, or `NOT_SPECIFIED`.
    pub reason: String,
    /// The function and offset that freed the packet.
    pub location: String,
    /// The namespace's inode, and its name when known.
    pub netns: u32,
    #[serde(default)]
    pub netns_name: Option<String>,
    #[serde(default)]
    pub ifname: Option<String>,
    /// The packet as it was where it was dropped (after any NAT).
    pub packet: PacketV2,
    /// Dropped inside a VXLAN datagram from this node (the sending node's address), before
    /// the overlay took it out (added 2026-12-04: `overlay-unreachable`, confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_from: Option<IpAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PacketV2 {
    pub kind: Kind,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    #[serde(default)]
    pub tsval: Option<u32>,
    #[serde(default)]
    pub tsecr: Option<u32>,
    /// The TCP flags byte.
    pub flags: u8,
}

/// A handshake packet's kind, by the name the NDJSON lines use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "SYN")]
    Syn,
    #[serde(rename = "SYN-ACK")]
    SynAck,
    #[serde(rename = "RST")]
    Rst,
    #[serde(rename = "ACK")]
    Ack,
}

/// `system.json`: typed where `report` reads it back (`format`, `hostname`,
/// `verdict_context`: see `super::read_system`), free-form where it is only shown.
#[derive(Debug, Serialize)]
pub struct System {
    pub format: &'static str,
    pub swarmtrace: &'static str,
    pub captured_at: String,
    pub duration_s: f64,
    pub hostname: Option<String>,
    pub kernel: Value,
    /// The `CapEff` line of the capturing process.
    pub capabilities: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    pub namespaces: Vec<Namespace>,
    pub docker: Option<Value>,
    pub verdict_context: VerdictContext,
}

#[derive(Debug, Serialize)]
pub struct Namespace {
    pub name: String,
    pub inode: Option<u32>,
    pub addresses: Vec<String>,
    pub routes: Vec<String>,
    pub counters_before: Option<BTreeMap<String, u64>>,
    pub counters_after: Option<BTreeMap<String, u64>>,
}

impl From<PacketKind> for Kind {
    fn from(k: PacketKind) -> Self {
        match k {
            PacketKind::Syn => Kind::Syn,
            PacketKind::SynAck => Kind::SynAck,
            PacketKind::Rst => Kind::Rst,
            PacketKind::Ack => Kind::Ack,
        }
    }
}

impl From<Kind> for PacketKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Syn => PacketKind::Syn,
            Kind::SynAck => PacketKind::SynAck,
            Kind::Rst => PacketKind::Rst,
            Kind::Ack => PacketKind::Ack,
        }
    }
}

impl From<&swarmtrace_common::Hop> for HopV2 {
    fn from(h: &swarmtrace_common::Hop) -> Self {
        Self {
            netns: h.netns,
            ifindex: h.ifindex,
            dir: match h.dir {
                1 => Direction::Ingress,
                2 => Direction::Egress,
                _ => Direction::Unknown,
            },
        }
    }
}

impl From<HopV2> for swarmtrace_common::Hop {
    fn from(h: HopV2) -> Self {
        Self {
            netns: h.netns,
            ifindex: h.ifindex,
            dir: match h.dir {
                Direction::Ingress => 1,
                Direction::Egress => 2,
                Direction::Unknown => 0,
            },
            _pad: [0; 3],
        }
    }
}

impl From<&Packet> for PacketV2 {
    fn from(p: &Packet) -> Self {
        Self {
            kind: p.kind.into(),
            src: p.src,
            dst: p.dst,
            seq: p.seq,
            ack: p.ack,
            tsval: p.tsval,
            tsecr: p.tsecr,
            flags: p.flags,
        }
    }
}

impl From<PacketV2> for Packet {
    fn from(p: PacketV2) -> Self {
        Self {
            kind: p.kind.into(),
            src: p.src,
            dst: p.dst,
            seq: p.seq,
            ack: p.ack,
            tsval: p.tsval,
            tsecr: p.tsecr,
            flags: p.flags,
        }
    }
}

impl From<&DropNote> for DropV2 {
    fn from(d: &DropNote) -> Self {
        Self {
            ts_ns: d.ts_ns,
            reason: d.reason.to_string(),
            location: d.location.to_string(),
            netns: d.netns,
            netns_name: d.netns_name.as_deref().map(str::to_owned),
            ifname: d.ifname.as_deref().map(str::to_owned),
            packet: (&d.packet).into(),
            vxlan_from: d.vxlan_from,
        }
    }
}

impl From<DropV2> for DropNote {
    fn from(d: DropV2) -> Self {
        let packet = Packet::from(d.packet);
        Self {
            ts_ns: d.ts_ns,
            // The tracker notes a drop's kind from its packet.
            kind: packet.kind,
            reason: Name::shared(&d.reason),
            location: Name::shared(&d.location),
            netns: d.netns,
            netns_name: d.netns_name.map(Name::from),
            ifname: d.ifname.map(Name::from),
            packet,
            vxlan_from: d.vxlan_from,
        }
    }
}

impl From<&Handshake> for HandshakeV2 {
    fn from(h: &Handshake) -> Self {
        Self {
            client: h.client,
            service: h.service,
            isn: h.isn,
            first_ns: h.first_ns,
            syns: h.syns,
            keys: h.keys.iter().map(Key::from).collect(),
            first_hop: h.first_hop.as_ref().map(HopV2::from),
            answer: h.answer.map(|a| match a {
                Answer::SynAck { latency_ns, hop } => AnswerV2::SynAck {
                    latency_ns,
                    hop: (&hop).into(),
                },
                Answer::Reset { hop } => AnswerV2::Reset { hop: (&hop).into() },
            }),
            drops: h.drops.iter().map(DropV2::from).collect(),
            overlay: h.overlay.map(|o| OverlayV2 {
                local: o.local,
                remote: o.remote,
                hop: (&o.hop).into(),
            }),
        }
    }
}

impl From<HandshakeV2> for Handshake {
    fn from(h: HandshakeV2) -> Self {
        Self {
            client: h.client,
            service: h.service,
            isn: h.isn,
            first_ns: h.first_ns,
            syns: h.syns,
            keys: h.keys.into_iter().map(Into::into).collect(),
            first_hop: h.first_hop.map(Into::into),
            answer: h.answer.map(|a| match a {
                AnswerV2::SynAck { latency_ns, hop } => Answer::SynAck {
                    latency_ns,
                    hop: hop.into(),
                },
                AnswerV2::Reset { hop } => Answer::Reset { hop: hop.into() },
            }),
            drops: h.drops.into_iter().map(Into::into).collect(),
            // Every handshake of a finished capture had its line printed.
            reported: true,
            overflow: Default::default(),
            overlay: h.overlay.map(|o| OverlaySend {
                local: o.local,
                remote: o.remote,
                hop: o.hop.into(),
            }),
        }
    }
}

impl From<&Recorded> for Handshakes {
    fn from(r: &Recorded) -> Self {
        Self {
            handshakes: r.handshakes.iter().map(HandshakeV2::from).collect(),
            hops: r
                .hops
                .iter()
                .map(|(netns, ifindex, namespace, interface)| HopName {
                    netns: *netns,
                    ifindex: *ifindex,
                    namespace: namespace.clone(),
                    interface: interface.clone(),
                })
                .collect(),
            forgotten: r.forgotten,
            clock: Clock {
                offset_ns: r.clock.offset_ns(),
            },
        }
    }
}

impl From<Handshakes> for Recorded {
    fn from(f: Handshakes) -> Self {
        Self {
            handshakes: f.handshakes.into_iter().map(Into::into).collect(),
            hops: f
                .hops
                .into_iter()
                .map(|h| (h.netns, h.ifindex, h.namespace, h.interface))
                .collect(),
            forgotten: f.forgotten,
            clock: WallClock::from_offset_ns(f.clock.offset_ns),
        }
    }
}
