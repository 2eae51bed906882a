//! Decoding ring-buffer records into rich types. Checks the length, reads unaligned, then
//! converts; a malformed record is an error, never a panic.

use crate::name::Name;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::trace::topk::Fast;
use swarmtrace_common::{
    class, kind, seen, DropEvent, EventHeader, HandshakeEvent, HandshakeKey, Hop, PacketInfo,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("event of {len} bytes is shorter than its {need}-byte header or body")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    #[error("bad address family {0}")]
    BadFamily(u8),
    #[error("bad packet class {0}")]
    BadClass(u8),
    #[error("bad handshake sighting {0}")]
    BadSeen(u8),
}

/// What a handshake packet is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum PacketKind {
    Syn,
    SynAck,
    Rst,
    Ack,
}

impl PacketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PacketKind::Syn => "SYN",
            PacketKind::SynAck => "SYN-ACK",
            PacketKind::Rst => "RST",
            PacketKind::Ack => "ACK",
        }
    }
}

impl TryFrom<u8> for PacketKind {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            class::SYN => PacketKind::Syn,
            class::SYN_ACK => PacketKind::SynAck,
            class::RST => PacketKind::Rst,
            class::ACK => PacketKind::Ack,
            other => return Err(DecodeError::BadClass(other)),
        })
    }
}

/// A TCP packet's identity as the hook saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Packet {
    pub kind: PacketKind,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub tsval: Option<u32>,
    pub tsecr: Option<u32>,
    pub flags: u8,
}

impl Packet {
    /// The initial sequence number of the handshake this packet belongs to, seen from the
    /// side that sent the SYN: a SYN carries it; a SYN-ACK acknowledges it (+1).
    pub fn client_isn(&self) -> u32 {
        match self.kind {
            PacketKind::SynAck => self.ack.wrapping_sub(1),
            _ => self.seq,
        }
    }
}

impl TryFrom<&PacketInfo> for Packet {
    type Error = DecodeError;
    fn try_from(p: &PacketInfo) -> Result<Self, DecodeError> {
        let ts = p.has_ts != 0;
        Ok(Packet {
            kind: PacketKind::try_from(p.class)?,
            src: sock(p.family, &p.saddr, p.sport)?,
            dst: sock(p.family, &p.daddr, p.dport)?,
            seq: p.seq,
            ack: p.ack_seq,
            tsval: ts.then_some(p.tsval),
            tsecr: ts.then_some(p.tsecr),
            flags: p.tcp_flags,
        })
    }
}

/// The handshake a drop was joined to: its key and its ends as first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    pub key: HandshakeKey,
    pub client: SocketAddr,
    pub service: SocketAddr,
}

/// A dropped handshake packet, decoded but not yet named (names need the kernel facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDrop {
    pub ts_ns: u64,
    pub location: u64,
    pub netns: u32,
    pub ifindex: u32,
    /// Shared: the named drop and the handshake's note of it carry the same one.
    pub ifname: Option<Name>,
    pub reason: u32,
    pub packet: Packet,
    pub joined: Option<Joined>,
    /// Dropped inside a VXLAN datagram (an overlay's) sent by this address: `packet` is the
    /// inner one.
    pub vxlan_from: Option<IpAddr>,
}

/// What a TC classifier saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Syn,
    SynAck,
    Rst,
    /// A known SYN leaving inside a VXLAN datagram: the packet's addresses are the outer
    /// ones (this node, the node it was sent to), its ports the inner TCP's.
    Overlay,
}

/// A handshake sighting from a TC classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub ts_ns: u64,
    pub key: HandshakeKey,
    pub hop: Hop,
    pub seen: Seen,
    pub latency_ns: u32,
    pub packet: Packet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Drop(RawDrop),
    Handshake(Sighting),
}

fn sock(family: u8, addr: &[u8; 16], port: u16) -> Result<SocketAddr, DecodeError> {
    let ip = match family {
        4 => {
            let a: [u8; 4] = addr[..4].try_into().unwrap_or_default();
            IpAddr::V4(Ipv4Addr::from(a))
        }
        6 => IpAddr::V6(Ipv6Addr::from(*addr)),
        f => return Err(DecodeError::BadFamily(f)),
    };
    Ok(SocketAddr::new(ip, port))
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; T is a repr(C) plain-old-data wire type for which every
    // bit pattern is valid; read_unaligned because ring-buffer records are only 8-aligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Interface names kept to share: the kernel's, bounded all the same (past this many, a
/// name is made afresh for each drop, as every name once was).
const MAX_IFNAMES: usize = 1024;

thread_local! {
    /// Interface names met, by their bytes. A flood's drops name the same few interfaces:
    /// shared, a drop's name costs a lookup, where it cost an allocation (freed when its
    /// handshake was forgotten, long after, from cold memory).
    static IFNAMES: RefCell<Ifnames> = RefCell::default();
}

#[derive(Default)]
struct Ifnames {
    /// The last name met: a flood's drops are on one interface, found by comparing 16
    /// bytes, without hashing them.
    last: Option<([u8; 16], Name)>,
    names: HashMap<[u8; 16], Name, Fast>,
}

/// A drop's interface name (NUL-terminated, or all 16 bytes); None when empty.
fn ifname(raw: &[u8; 16]) -> Option<Name> {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if len == 0 {
        return None;
    }
    // What follows the NUL is not part of the name.
    let mut key = [0u8; 16];
    key[..len].copy_from_slice(&raw[..len]);
    IFNAMES.with_borrow_mut(|Ifnames { last, names }| {
        if let Some((k, n)) = last {
            if *k == key {
                return Some(n.clone());
            }
        }
        if let Some(n) = names.get(&key) {
            *last = Some((key, n.clone()));
            return Some(n.clone());
        }
        let n = Name::intern_within(
            &String::from_utf8_lossy(&raw[..len]),
            crate::name::HOST_ROOM,
        );
        if names.len() < MAX_IFNAMES {
            names.insert(key, n.clone());
        }
        Some(n)
    })
}

impl TryFrom<&[u8]> for Event {
    type Error = DecodeError;
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header: EventHeader = read(bytes)?;
        match header.kind {
            kind::DROP => {
                let ev: DropEvent = read(bytes)?;
                let ifname = ifname(&ev.ifname);
                let packet = Packet::try_from(&ev.packet)?;
                let joined = if ev.joined != 0 {
                    Some(Joined {
                        key: ev.key,
                        client: sock(ev.packet.family, &ev.client, ev.client_port)?,
                        service: sock(ev.packet.family, &ev.service, ev.service_port)?,
                    })
                } else {
                    None
                };
                Ok(Event::Drop(RawDrop {
                    ts_ns: ev.header.ts_ns,
                    location: ev.location,
                    netns: ev.netns,
                    ifindex: ev.ifindex,
                    ifname,
                    reason: ev.reason,
                    packet,
                    joined,
                    vxlan_from: (ev.vxlan_from != [0; 4])
                        .then(|| IpAddr::V4(Ipv4Addr::from(ev.vxlan_from))),
                }))
            }
            kind::HANDSHAKE => {
                let ev: HandshakeEvent = read(bytes)?;
                let seen = match ev.what {
                    seen::SYN => Seen::Syn,
                    seen::SYN_ACK => Seen::SynAck,
                    seen::RST => Seen::Rst,
                    seen::OVERLAY => Seen::Overlay,
                    w => return Err(DecodeError::BadSeen(w)),
                };
                Ok(Event::Handshake(Sighting {
                    ts_ns: ev.header.ts_ns,
                    key: ev.key,
                    hop: ev.hop,
                    seen,
                    latency_ns: ev.latency_ns,
                    packet: Packet::try_from(&ev.packet)?,
                }))
            }
            k => Err(DecodeError::UnknownKind(k)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn drop_bytes(family: u8, class: u8) -> Vec<u8> {
        let mut ev = DropEvent::default();
        ev.header.kind = kind::DROP;
        ev.header.ts_ns = 123;
        ev.location = 0xffffffff820339c0 + 0x10;
        ev.netns = 4026532300;
        ev.ifindex = 7;
        ev.ifname[..4].copy_from_slice(b"eth0");
        ev.reason = 3;
        ev.packet.family = family;
        ev.packet.class = class;
        if family == 4 {
            ev.packet.saddr[..4].copy_from_slice(&[10, 0, 0, 2]);
            ev.packet.daddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        } else {
            ev.packet.saddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets();
            ev.packet.daddr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets();
        }
        ev.packet.sport = 40000;
        ev.packet.dport = 8080;
        ev.packet.seq = 1000;
        ev.packet.has_ts = 1;
        ev.packet.tsval = 77;
        // SAFETY: plain-old-data, no padding (size checked in swarmtrace-common).
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const DropEvent).cast(),
                std::mem::size_of::<DropEvent>(),
            )
        };
        bytes.to_vec()
    }

    fn as_drop(e: Event) -> RawDrop {
        match e {
            Event::Drop(d) => d,
            other => panic!("not a drop: {other:?}"),
        }
    }

    pub fn handshake_bytes(what: u8) -> Vec<u8> {
        let mut ev = HandshakeEvent::default();
        ev.header.kind = kind::HANDSHAKE;
        ev.header.ts_ns = 500;
        ev.key = HandshakeKey {
            isn: 1000,
            tsval: 77,
        };
        ev.hop = Hop {
            netns: 1,
            ifindex: 2,
            dir: 1,
            _pad: [0; 3],
        };
        ev.what = what;
        ev.latency_ns = 1234;
        ev.packet.family = 4;
        ev.packet.class = class::SYN_ACK;
        ev.packet.saddr[..4].copy_from_slice(&[10, 10, 0, 1]);
        ev.packet.daddr[..4].copy_from_slice(&[10, 10, 0, 11]);
        ev.packet.sport = 8080;
        ev.packet.dport = 40000;
        ev.packet.ack_seq = 1001;
        // SAFETY: plain-old-data, no padding (size checked in swarmtrace-common).
        unsafe {
            std::slice::from_raw_parts(
                (&ev as *const HandshakeEvent).cast::<u8>(),
                std::mem::size_of::<HandshakeEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_handshake_sightings() {
        let Event::Handshake(h) =
            Event::try_from(handshake_bytes(seen::SYN_ACK).as_slice()).unwrap()
        else {
            panic!("not a handshake");
        };
        assert_eq!(h.seen, Seen::SynAck);
        assert_eq!(
            h.key,
            HandshakeKey {
                isn: 1000,
                tsval: 77
            }
        );
        assert_eq!(h.packet.client_isn(), 1000);
        assert_eq!(h.latency_ns, 1234);
        assert_eq!(
            Event::try_from(handshake_bytes(9).as_slice()),
            Err(DecodeError::BadSeen(9))
        );
        let short = handshake_bytes(seen::SYN);
        assert!(matches!(
            Event::try_from(&short[..100]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn decodes_joined_drop() {
        let mut bytes = drop_bytes(4, class::SYN);
        let mut ev: DropEvent = read(&bytes).unwrap();
        ev.joined = 1;
        ev.key = HandshakeKey {
            isn: 1000,
            tsval: 77,
        };
        ev.client[..4].copy_from_slice(&[192, 168, 1, 50]);
        ev.client_port = 40000;
        ev.service[..4].copy_from_slice(&[10, 10, 0, 1]);
        ev.service_port = 8080;
        // SAFETY: as in drop_bytes.
        bytes = unsafe {
            std::slice::from_raw_parts((&ev as *const DropEvent).cast::<u8>(), bytes.len())
        }
        .to_vec();
        let d = as_drop(Event::try_from(bytes.as_slice()).unwrap());
        let j = d.joined.unwrap();
        assert_eq!(j.client.to_string(), "192.168.1.50:40000");
        assert_eq!(j.service.to_string(), "10.10.0.1:8080");
        assert_eq!(
            as_drop(Event::try_from(drop_bytes(4, class::SYN).as_slice()).unwrap()).joined,
            None
        );
    }

    #[test]
    fn decodes_ipv4_syn_drop() {
        let d = as_drop(Event::try_from(drop_bytes(4, class::SYN).as_slice()).unwrap());
        assert_eq!(d.packet.src.to_string(), "10.0.0.2:40000");
        assert_eq!(d.packet.dst.to_string(), "10.0.0.1:8080");
        assert_eq!(d.packet.kind, PacketKind::Syn);
        assert_eq!(d.packet.tsval, Some(77));
        assert_eq!(d.ifname.as_deref(), Some("eth0"));
        assert_eq!(d.packet.client_isn(), 1000);
    }

    #[test]
    fn interface_names_are_shared_and_bounded() {
        let a = ifname(b"eth0\0garbage\0\0\0\0").unwrap();
        let b = ifname(b"eth0\0\0\0\0\0\0\0\0\0\0\0\0").unwrap();
        assert_eq!(&*a, "eth0");
        assert_eq!(a.addr(), b.addr(), "one name, shared");
        assert!(a.is_interned());
        assert_eq!(ifname(&[0; 16]), None);
        assert_eq!(
            ifname(b"veth0123456789ab").as_deref(),
            Some("veth0123456789ab")
        );
        assert_eq!(
            ifname(b"bad\xffname\0\0\0\0\0\0\0\0").as_deref(),
            Some("bad\u{fffd}name")
        );
        // Past the bound, names are still right, only not kept.
        for i in 0..MAX_IFNAMES + 10 {
            let mut raw = [0u8; 16];
            let name = format!("if{i}");
            raw[..name.len()].copy_from_slice(name.as_bytes());
            assert_eq!(ifname(&raw).as_deref(), Some(name.as_str()));
        }
        assert_eq!(IFNAMES.with_borrow(|n| n.names.len()), MAX_IFNAMES);
        assert_eq!(
            ifname(b"eth0\0\0\0\0\0\0\0\0\0\0\0\0").as_deref(),
            Some("eth0")
        );
    }

    #[test]
    fn the_last_interface_name_is_the_one_asked_for() {
        let raw = |s: &str| {
            let mut r = [0u8; 16];
            r[..s.len()].copy_from_slice(s.as_bytes());
            r
        };
        for s in [
            "eth0", "eth1", "eth1", "eth0", "eth0", "veth9", "eth1", "eth0",
        ] {
            assert_eq!(ifname(&raw(s)).as_deref(), Some(s));
        }
        assert_eq!(
            ifname(&raw("eth")).as_deref(),
            Some("eth"),
            "a prefix of the last"
        );
        assert_eq!(ifname(&raw("eth0")).as_deref(), Some("eth0"));
    }

    #[test]
    fn decodes_ipv6_and_unaligned() {
        let mut buf = vec![0u8];
        buf.extend(drop_bytes(6, class::SYN_ACK));
        let d = as_drop(Event::try_from(&buf[1..]).unwrap());
        assert_eq!(d.packet.src.to_string(), "[fd00::2]:40000");
        assert_eq!(d.packet.kind.as_str(), "SYN-ACK");
    }

    #[test]
    fn rejects_malformed_records() {
        let full = drop_bytes(4, class::SYN);
        for len in [0, 1, 15, 16, 111, 159] {
            assert!(matches!(
                Event::try_from(&full[..len]),
                Err(DecodeError::Short { .. })
            ));
        }
        let mut bad = full.clone();
        bad[0] = 99;
        assert_eq!(
            Event::try_from(bad.as_slice()),
            Err(DecodeError::UnknownKind(99))
        );
        assert_eq!(
            Event::try_from(drop_bytes(5, class::SYN).as_slice()),
            Err(DecodeError::BadFamily(5))
        );
        assert_eq!(
            Event::try_from(drop_bytes(4, 9).as_slice()),
            Err(DecodeError::BadClass(9))
        );
    }
}
