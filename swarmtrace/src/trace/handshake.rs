//! A handshake as user space follows it: one client's connection attempt, `(client, ISN)`,
//! what answered it and what dropped it, with the bounds that keep one handshake small
//! whatever a sender replays. Followed by the `tracker`, folded by `forgotten`.

use crate::name::Name;
use std::net::SocketAddr;

use swarmtrace_common::{HandshakeKey, Hop};

use crate::trace::drops::Drop;
use crate::trace::event::{Packet, PacketKind};

pub type HandshakeId = (SocketAddr, u32);

/// A dropped packet of a handshake.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropNote {
    pub ts_ns: u64,
    pub kind: PacketKind,
    // Shared with the named drop: a note costs no copy of its names.
    pub reason: Name,
    pub location: Name,
    pub netns: u32,
    pub netns_name: Option<Name>,
    pub ifname: Option<Name>,
    /// The packet as it was where it was dropped (after any NAT).
    pub packet: Packet,
    /// Dropped inside a VXLAN datagram (an overlay's) that this address sent: the packet is
    /// the one it carried.
    #[serde(default)]
    pub vxlan_from: Option<std::net::IpAddr>,
}

impl From<&Drop> for DropNote {
    fn from(d: &Drop) -> Self {
        Self {
            ts_ns: d.ts_ns,
            kind: d.packet.kind,
            reason: d.reason.clone(),
            location: d.location.clone(),
            netns: d.netns,
            netns_name: d.netns_name.clone(),
            ifname: d.ifname.clone(),
            packet: d.packet.clone(),
            vxlan_from: d.vxlan_from,
        }
    }
}

impl DropNote {
    /// The namespace's name, or `netns:INODE` when it has none.
    pub fn netns_label(&self) -> String {
        crate::trace::drops::netns_label(self.netns_name.as_deref(), self.netns)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Answer {
    SynAck { latency_ns: u64, hop: Hop },
    Reset { hop: Hop },
}

/// Written as its `as_str` (the `verdict` of a handshake object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Answered,
    Dropped,
    Reset,
    Unanswered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Dropped => "dropped",
            Outcome::Reset => "reset",
            Outcome::Unanswered => "unanswered",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Handshake {
    /// The client and the service as first seen, before any NAT on this host.
    pub client: SocketAddr,
    pub service: SocketAddr,
    pub isn: u32,
    pub first_ns: u64,
    /// SYN transmissions seen (retransmissions carry a new TSval).
    pub syns: u32,
    pub keys: Vec<HandshakeKey>,
    /// Where the first SYN was seen; None when only a drop told us of it.
    pub first_hop: Option<Hop>,
    pub answer: Option<Answer>,
    pub drops: Vec<DropNote>,
    /// The handshake line was printed.
    pub reported: bool,
    /// What did not fit in `keys` and `drops`.
    #[serde(default)]
    pub overflow: Overflow,
    /// The SYN left this node inside a VXLAN datagram (an overlay: the routing mesh's
    /// ingress) towards another node: the first such sending seen.
    #[serde(default)]
    pub overlay: Option<OverlaySend>,
}

/// A SYN seen leaving inside a VXLAN datagram (UDP 4789) on a watched interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OverlaySend {
    /// The VXLAN datagram's source: this node's address on the overlay's underlay.
    pub local: std::net::IpAddr,
    /// Its destination: the node the SYN was sent to (where the task runs).
    pub remote: std::net::IpAddr,
    pub hop: Hop,
}

/// Keys kept per handshake: Linux sends a SYN 7 times at most by default
/// (`net.ipv4.tcp_syn_retries` = 6), each with its own TSval; a sender that replays one
/// handshake's SYN with ever new TSvals adds no memory past this (the answers to those are
/// not joined).
pub const MAX_KEYS: usize = 8;

/// Drop notes kept per handshake: one identical SYN replayed a million times into a DROP
/// rule is one handshake with a million drops, of which the first few are kept and the rest
/// counted.
pub const MAX_DROP_NOTES: usize = 8;

/// A handshake's keys and drops beyond [`MAX_KEYS`] and [`MAX_DROP_NOTES`], counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overflow {
    pub keys: u64,
    pub drops: u64,
}

impl Handshake {
    pub fn outcome(&self) -> Outcome {
        // A dropped SYN-ACK means the client did not get the answer the classifiers saw.
        let answer_dropped = self.drops.iter().any(|d| d.kind == PacketKind::SynAck);
        match self.answer {
            Some(Answer::SynAck { .. }) if !answer_dropped => Outcome::Answered,
            _ if !self.drops.is_empty() => Outcome::Dropped,
            Some(Answer::Reset { .. }) => Outcome::Reset,
            Some(Answer::SynAck { .. }) => Outcome::Dropped,
            None => Outcome::Unanswered,
        }
    }

    /// Most handshakes have one drop at most: room for exactly one at first, where a Vec's
    /// first push would make room for four (about 700 bytes per handshake under a flood).
    /// Past [`MAX_DROP_NOTES`] a drop is counted only, except a first dropped SYN-ACK, which
    /// takes the last note's place: it decides the outcome.
    pub(super) fn add_drop(&mut self, note: impl FnOnce() -> DropNote, kind: PacketKind) {
        if self.drops.len() >= MAX_DROP_NOTES {
            self.overflow.drops += 1;
            if kind == PacketKind::SynAck && !self.drops.iter().any(|d| d.kind == kind) {
                if let Some(last) = self.drops.last_mut() {
                    *last = note();
                }
            }
            return;
        }
        if self.drops.is_empty() {
            self.drops.reserve_exact(1);
        }
        self.drops.push(note());
    }

    /// Keeps a key unless it has [`MAX_KEYS`]; true when it is kept (and is to be indexed).
    pub(super) fn add_key(&mut self, key: HandshakeKey) -> bool {
        if self.keys.contains(&key) {
            return true;
        }
        if self.keys.len() >= MAX_KEYS {
            self.overflow.keys += 1;
            return false;
        }
        self.keys.push(key);
        true
    }

    /// Every drop of it, kept as a note or only counted.
    pub fn drop_count(&self) -> u64 {
        self.drops.len() as u64 + self.overflow.drops
    }

    pub fn latency_ns(&self) -> Option<u64> {
        match self.answer {
            Some(Answer::SynAck { latency_ns, .. }) => Some(latency_ns),
            _ => None,
        }
    }
}
