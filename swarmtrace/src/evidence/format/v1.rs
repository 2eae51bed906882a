//! Format 1 (`swarmtrace-bundle/1`), read only: `handshakes.json` as the first `capture`
//! wrote it, which was the tracker's `Handshake` serialized as it was at the time (main at
//! 6383894). Frozen here, field for field, so that the in-memory types can change and
//! these bundles still read. A version 1 file is upgraded to version 2 (`From`), then read
//! as one. tests/fixtures/bundles/v1-paws.tar.gz is such a bundle.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{v2, Key};

/// `handshakes.json` without its `format` (read first, by `read_handshakes`).
#[derive(Debug, Deserialize)]
pub struct Handshakes {
    pub handshakes: Vec<HandshakeV1>,
    pub hops: Vec<(u32, u32, String, String)>,
    #[serde(default)]
    pub forgotten: u64,
    pub clock: Clock,
}

#[derive(Debug, Deserialize)]
pub struct Clock {
    pub offset_ns: i128,
}

#[derive(Debug, Deserialize)]
pub struct HandshakeV1 {
    pub client: SocketAddr,
    pub service: SocketAddr,
    pub isn: u32,
    pub first_ns: u64,
    pub syns: u32,
    pub keys: Vec<Key>,
    pub first_hop: Option<HopV1>,
    pub answer: Option<AnswerV1>,
    pub drops: Vec<DropV1>,
    /// The live run's "handshake line printed" flag: meaningless in a bundle.
    #[serde(default)]
    pub reported: bool,
}

/// The kernel's `Hop` as it was: `dir` 1 ingress, 2 egress, 0 unknown; `_pad` always zero.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct HopV1 {
    pub netns: u32,
    pub ifindex: u32,
    pub dir: u8,
    #[serde(default, rename = "_pad")]
    pub _pad: [u8; 3],
}

/// Externally tagged, as serde writes a Rust enum: `{"SynAck": {...}}`, `{"Reset": {...}}`.
#[derive(Debug, Deserialize)]
pub enum AnswerV1 {
    SynAck { latency_ns: u64, hop: HopV1 },
    Reset { hop: HopV1 },
}

#[derive(Debug, Deserialize)]
pub struct DropV1 {
    pub ts_ns: u64,
    pub kind: KindV1,
    pub reason: String,
    pub location: String,
    pub netns: u32,
    pub netns_name: Option<String>,
    pub ifname: Option<String>,
    pub packet: PacketV1,
}

/// A packet kind by its Rust variant name.
#[derive(Debug, Clone, Copy, Deserialize)]
pub enum KindV1 {
    Syn,
    SynAck,
    Rst,
    Ack,
}

#[derive(Debug, Deserialize)]
pub struct PacketV1 {
    pub kind: KindV1,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub tsval: Option<u32>,
    pub tsecr: Option<u32>,
    pub flags: u8,
}

impl From<KindV1> for v2::Kind {
    fn from(k: KindV1) -> Self {
        match k {
            KindV1::Syn => v2::Kind::Syn,
            KindV1::SynAck => v2::Kind::SynAck,
            KindV1::Rst => v2::Kind::Rst,
            KindV1::Ack => v2::Kind::Ack,
        }
    }
}

impl From<HopV1> for v2::HopV2 {
    fn from(h: HopV1) -> Self {
        (&swarmtrace_common::Hop {
            netns: h.netns,
            ifindex: h.ifindex,
            dir: h.dir,
            _pad: [0; 3],
        })
            .into()
    }
}

impl From<DropV1> for v2::DropV2 {
    fn from(d: DropV1) -> Self {
        let p = d.packet;
        Self {
            ts_ns: d.ts_ns,
            reason: d.reason,
            location: d.location,
            netns: d.netns,
            netns_name: d.netns_name,
            ifname: d.ifname,
            // `kind` was the packet's kind, written twice.
            packet: v2::PacketV2 {
                kind: p.kind.into(),
                src: p.src,
                dst: p.dst,
                seq: p.seq,
                ack: p.ack,
                tsval: p.tsval,
                tsecr: p.tsecr,
                flags: p.flags,
            },
            // Version 1 did not look inside VXLAN datagrams.
            vxlan_from: None,
        }
    }
}

impl From<HandshakeV1> for v2::HandshakeV2 {
    fn from(h: HandshakeV1) -> Self {
        Self {
            client: h.client,
            service: h.service,
            isn: h.isn,
            first_ns: h.first_ns,
            syns: h.syns,
            keys: h.keys,
            first_hop: h.first_hop.map(Into::into),
            answer: h.answer.map(|a| match a {
                AnswerV1::SynAck { latency_ns, hop } => v2::AnswerV2::SynAck {
                    latency_ns,
                    hop: hop.into(),
                },
                AnswerV1::Reset { hop } => v2::AnswerV2::Reset { hop: hop.into() },
            }),
            drops: h.drops.into_iter().map(Into::into).collect(),
            overlay: None,
        }
    }
}

/// A version 1 file upgraded to version 2, which is then read as any version 2 file.
impl From<Handshakes> for v2::Handshakes {
    fn from(f: Handshakes) -> Self {
        Self {
            handshakes: f.handshakes.into_iter().map(Into::into).collect(),
            hops: f
                .hops
                .into_iter()
                .map(|(netns, ifindex, namespace, interface)| v2::HopName {
                    netns,
                    ifindex,
                    namespace,
                    interface,
                })
                .collect(),
            forgotten: f.forgotten,
            clock: v2::Clock {
                offset_ns: f.clock.offset_ns,
            },
        }
    }
}
