//! The handshake table, shared by every hook: which SYN a packet belongs to, by (ISN, TSval).

use aya_ebpf::{macros::map, maps::LruHashMap};
use swarmtrace_common::{class, Handshake, HandshakeKey, PacketInfo, HANDSHAKE_TABLE};

/// SYNs first seen on a watched interface. LRU: under a flood the oldest go first, and
/// user space sweeps answered and timed-out ones.
#[map]
pub static HANDSHAKES: LruHashMap<HandshakeKey, Handshake> =
    LruHashMap::with_max_entries(HANDSHAKE_TABLE, 0);

/// ISN -> TSval of the latest SYN with that ISN, for packets that echo the ISN but carry no
/// timestamp (a RST answering a SYN, a SYN-ACK from a peer without timestamps).
#[map]
pub static ISN_INDEX: LruHashMap<u32, u32> = LruHashMap::with_max_entries(HANDSHAKE_TABLE, 0);

/// The key of the SYN this packet belongs to, if it can be told from the packet alone or
/// through the ISN index.
#[inline(always)]
pub fn key_of(p: &PacketInfo) -> Option<HandshakeKey> {
    let isn = match p.class {
        class::SYN => {
            return Some(HandshakeKey {
                isn: p.seq,
                tsval: if p.has_ts != 0 { p.tsval } else { 0 },
            });
        }
        class::SYN_ACK => {
            let isn = p.ack_seq.wrapping_sub(1);
            if p.has_ts != 0 {
                // The SYN-ACK echoes the TSval of the SYN it answers.
                return Some(HandshakeKey {
                    isn,
                    tsval: p.tsecr,
                });
            }
            isn
        }
        // A RST answering a SYN acknowledges ISN + 1; a client's RST carries ISN + 1.
        class::RST if p.tcp_flags & 0x10 != 0 => p.ack_seq.wrapping_sub(1),
        class::RST | class::ACK => p.seq.wrapping_sub(1),
        _ => return None,
    };
    let tsval = unsafe { ISN_INDEX.get(isn) }.copied()?;
    Some(HandshakeKey { isn, tsval })
}

/// The table entry for this packet's SYN.
#[inline(always)]
pub fn lookup(p: &PacketInfo) -> Option<(HandshakeKey, *mut Handshake)> {
    let key = key_of(p)?;
    let entry = HANDSHAKES.get_ptr_mut(key)?;
    Some((key, entry))
}
