//! The handshake table, shared by every hook: which SYN a packet belongs to, by (ISN, TSval).

use aya_ebpf::{macros::map, maps::LruHashMap};
use swarmtrace_common::{class, Handshake, HandshakeKey, PacketInfo, HANDSHAKE_TABLE};

/// SYNs first seen on a watched interface. LRU: the table empties itself, the oldest first
/// (user space only reads it, for the last hop of a handshake it reports).
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
    // SAFETY: a map value read at once by copy, while the program runs under RCU; a u32 is
    // written whole, so a concurrent update gives the old or the new TSval, never a torn one.
    let tsval = unsafe { ISN_INDEX.get(isn) }.copied()?;
    Some(HandshakeKey { isn, tsval })
}

/// The table entry for this packet's SYN.
#[inline(always)]
pub fn lookup(p: &PacketInfo) -> Option<(HandshakeKey, &'static mut Handshake)> {
    let key = key_of(p)?;
    entry(key).map(|e| (key, e))
}

/// The table entry of `key`, to read or update in place.
///
/// Best effort, by design: the entry is shared by every CPU and updated with plain stores
/// (no lock: a spin lock or atomics on it would cost each SYN-ACK more than the rest of the
/// program, and BPF's fetching atomics need 5.12 while 5.10 is supported). Each field is
/// stored whole (at most 8 bytes, aligned), so a reader sees an old or a new value, never a
/// torn one; two CPUs answering the same SYN at the same instant may both mark it, which is
/// why `stat::ANSWERED` and `stat::RESETS` are "about" counters while the drop counters,
/// counted once per drop on a per-CPU slot, are exact.
#[inline(always)]
pub fn entry(key: HandshakeKey) -> Option<&'static mut Handshake> {
    let ptr = HANDSHAKES.get_ptr_mut(key)?;
    // SAFETY: a non-null pointer to a map value, valid while the program runs (the value is
    // freed only after an RCU grace period, and a program runs inside one); the sharing with
    // other CPUs is the best-effort contract above.
    Some(unsafe { &mut *ptr })
}
