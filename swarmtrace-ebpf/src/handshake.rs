//! The handshake table, shared by every hook: which SYN a packet belongs to, by (ISN, TSval).
//!
//! A fixed-size array of [`Slot`]s indexed by a seeded hash of the ISN, not a hash map: a new
//! SYN costs one inlined array lookup and the stores of its slot, where an LRU hash map once
//! full cost an eviction, a bucket lock and a list walk per insert (about 1.5 us of the 1.7 us
//! a new SYN cost, BENCHMARKS.md). A new SYN overwrites whatever held its slot: the table
//! forgets, by collision, about as an LRU of the same size forgets by age once the rate of
//! new SYNs is far above the size over the time an answer takes, and never grows.
//!
//! No lock: a slot is written with plain stores, so two CPUs writing one slot at once (two
//! SYNs whose ISNs collide, within nanoseconds) can leave a mix of both. Readers copy the
//! slot and trust it only when [`Slot::holds`] their key: the key and the check over the
//! fields fixed at creation match, which a torn mix or a stale slot under another key does
//! not (but by a 32-bit coincidence). `state` and the last hop (`last_dir`, `last_netns`,
//! `last_ifindex`), updated in place later, are outside the check: each field is written
//! whole (aligned), so a reader sees an old or a new value of each, never a torn one; the
//! three fields of the last hop are three stores (see `record_syn`).
//!
//! Indexed by the ISN alone, one slot (one cache line, see `Slot`) answers both "this SYN"
//! and, for packets that echo the ISN but not the TSval (a RST answering a SYN, a SYN-ACK
//! without timestamps), "the latest SYN with this ISN": its key is read first (one aligned
//! 8-byte load, never torn), then the slot copied and checked. A new SYN touches that one
//! line and no other of the table (an ISN index beside it cost a second random store per new
//! SYN, BENCHMARKS.md).
//!
//! User space reads the table for a handshake's last hop, with the same slot function and
//! the same check (`Tracer::handshake`).
//!
//! Each new SYN still sends one event (`seen::SYN`): user space learns of a SYN from it, and
//! needs to, to report one that nothing answers or drops (unanswered after the timeout).
//! Bounded by overload sampling (`config::keep_detail`): past the rate, 1 handshake in N
//! sends its events (a branch that sent none and read the mmapped table instead measured no
//! faster, BENCHMARKS.md).

use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array};
use swarmtrace_common::{
    class, slot_index, Handshake, HandshakeKey, Hop, PacketInfo, Slot, HANDSHAKE_TABLE,
};

use crate::config::global;

/// `BPF_F_MMAPABLE` for its layout, not for a mapping: the kernel then page-aligns the
/// values, so that each 64-byte slot is one cache line.
#[map]
pub static HANDSHAKES: Array<Slot> = Array::with_max_entries(HANDSHAKE_TABLE, BPF_F_MMAPABLE);

#[inline(always)]
fn slot_ptr(isn: u32) -> Option<*mut Slot> {
    HANDSHAKES.get_ptr_mut(slot_index(isn, global!(TABLE.seed), global!(TABLE.mask)))
}

/// The ISN of the client's SYN this packet belongs to, as the packet carries or echoes it.
#[inline(always)]
pub fn isn_of(p: &PacketInfo) -> Option<u32> {
    Some(match p.class {
        class::SYN => p.seq,
        class::SYN_ACK => p.ack_seq.wrapping_sub(1),
        // A RST answering a SYN acknowledges ISN + 1; a client's RST carries ISN + 1.
        class::RST if p.tcp_flags & 0x10 != 0 => p.ack_seq.wrapping_sub(1),
        class::RST | class::ACK => p.seq.wrapping_sub(1),
        _ => return None,
    })
}

/// Where the SYN with an ISN lives in the table, or would: found once per packet, for the
/// early load and the reads and writes after it.
#[derive(Clone, Copy)]
pub struct At {
    isn: u32,
    slot: *mut Slot,
}

/// The slot of the SYN this packet belongs to (by the ISN it carries or echoes).
#[inline(always)]
pub fn slot_of(p: &PacketInfo) -> Option<At> {
    let isn = isn_of(p)?;
    Some(At {
        isn,
        slot: slot_ptr(isn)?,
    })
}

impl At {
    /// Loads the slot's first word and drops it: the load starts the slot's cache line on its
    /// way while the program goes on, for a use a little later.
    #[inline(always)]
    pub fn touch(self) {
        // SAFETY: a valid pointer into the array map; one aligned 8-byte load.
        let _ = unsafe { core::ptr::read_volatile(&(*self.slot).key) };
    }
}

/// The key of the SYN this packet belongs to, if it can be told from the packet alone or
/// through its ISN's slot `at`.
#[inline(always)]
fn key_of(p: &PacketInfo, at: At) -> Option<HandshakeKey> {
    let isn = at.isn;
    match p.class {
        class::SYN => {
            return Some(HandshakeKey {
                isn,
                tsval: if p.has_ts != 0 { p.tsval } else { 0 },
            })
        }
        // The SYN-ACK echoes the TSval of the SYN it answers.
        class::SYN_ACK if p.has_ts != 0 => {
            return Some(HandshakeKey {
                isn,
                tsval: p.tsecr,
            })
        }
        _ => {}
    }
    // SAFETY: a valid pointer into the array map (lookups of an array never fail in range and
    // its values live as long as the map); the key is the slot's first 8 bytes, 8-aligned:
    // one load, never torn. Whether the rest is this SYN's, `lookup` checks.
    let key = unsafe { core::ptr::read_volatile(&(*at.slot).key) };
    (key.isn == isn).then_some(key)
}

/// A handshake found in the table: a checked copy to read (in the caller's scratch space:
/// the BPF stack has no room for it beside the rest), and its slot to update the fields that
/// change (`state`, `last_hop`).
pub struct Found {
    pub key: HandshakeKey,
    pub hs: &'static Handshake,
    slot: *mut Slot,
}

impl Found {
    #[inline(always)]
    pub fn mark(&self, state: u8) {
        // SAFETY: a pointer into the array map, valid while the program runs; a 1-byte store
        // (see the module's doc on sharing).
        unsafe { core::ptr::write_volatile(&mut (*self.slot).hs.state, self.hs.state | state) };
    }
}

/// The table's record of this packet's SYN (whose slot is `at`), copied into `copy`.
#[inline(always)]
pub fn lookup(p: &PacketInfo, at: At, copy: &'static mut Slot) -> Option<Found> {
    let key = key_of(p, at)?;
    let slot = at.slot;
    // SAFETY: a valid pointer into the array map, copied into a scratch value of the same
    // type; plain integers (any bit pattern is a valid `Slot`), trusted only if it checks.
    unsafe { core::ptr::copy_nonoverlapping(slot, copy as *mut Slot, 1) };
    if !copy.holds(&key) {
        return None;
    }
    Some(Found {
        key,
        hs: &copy.hs,
        slot,
    })
}

/// Records a SYN (`key`, whose slot is `at`) last seen on `hop`. If its slot holds it
/// already (the same SYN further along its path, after DNAT or in another namespace), updates
/// the slot's last hop and returns false. Else lets `make` fill `new` but for the last hop
/// (called only then, so a SYN seen again costs no more; false: not one to keep), writes it
/// into the slot and returns true.
#[inline(always)]
pub fn record_syn(
    key: HandshakeKey,
    at: At,
    hop: Hop,
    new: &'static mut Slot,
    make: impl FnOnce(&mut Handshake) -> bool,
) -> Option<bool> {
    let slot = at.slot;
    // SAFETY: as in `lookup`; the key alone decides "seen already": updating the last hop of a
    // slot another CPU is overwriting at this instant at worst gives that SYN our hop. Each
    // field is one aligned store; two CPUs updating one SYN's last hop at the same instant
    // (one SYN on two hops at once) could mix their namespace and interface.
    unsafe {
        if core::ptr::read_volatile(&(*slot).key) == key && (*slot).check != 0 {
            let hs = &mut (*slot).hs;
            core::ptr::write_volatile(&mut hs.last_netns, hop.netns);
            core::ptr::write_volatile(&mut hs.last_ifindex, hop.ifindex);
            core::ptr::write_volatile(&mut hs.last_dir, hop.dir);
            return Some(false);
        }
    }
    if !make(&mut new.hs) {
        return None;
    }
    new.hs.last_dir = hop.dir;
    new.hs.last_netns = hop.netns;
    new.hs.last_ifindex = hop.ifindex;
    new.key = key;
    new.check = Slot::check_of(&key, &new.hs);
    // SAFETY: plain stores into the array value from the scratch one; see the module's doc
    // on sharing.
    unsafe { core::ptr::copy_nonoverlapping(new as *const Slot, slot, 1) };
    Some(true)
}
