//! Wire types shared by the kernel programs (`swarmtrace-ebpf`) and user space (`swarmtrace`).
//!
//! Rules that keep both sides agreeing on every byte:
//! - `#[repr(C)]`, every padding byte spelled out as a `_pad` field, so no type has implicit
//!   padding (the kernel copies the bytes verbatim, and `aya::Pod` requires it);
//! - no `bool` and no Rust `enum` on the wire: flags and kinds are integers, decoded into rich
//!   types by user space;
//! - a compile-time size check on each type, so a change on one side cannot go unnoticed.
#![no_std]

/// Event kinds, in [`EventHeader::kind`].
pub mod kind {
    /// A [`super::DropEvent`]: a TCP handshake packet freed by `kfree_skb` with a drop reason.
    pub const DROP: u16 = 1;
    /// A [`super::HandshakeEvent`]: a TC classifier saw a handshake start, answered or reset.
    pub const HANDSHAKE: u16 = 2;
}

/// What a [`HandshakeEvent`] reports, in [`HandshakeEvent::what`].
pub mod seen {
    /// A SYN seen for the first time (a retransmitted SYN carries a new TSval, so is new too).
    pub const SYN: u8 = 1;
    /// The first SYN-ACK for a known SYN.
    pub const SYN_ACK: u8 = 2;
    /// A RST answering a known SYN.
    pub const RST: u8 = 3;
    /// A known SYN leaving inside a VXLAN datagram (UDP 4789: Docker's overlays, the routing
    /// mesh's ingress among them) towards another node. The event's packet carries the
    /// outer (VTEP) addresses with the inner TCP header: the address is the other node's.
    pub const OVERLAY: u8 = 4;
}

/// Bits of [`Handshake::state`].
pub mod state {
    pub const ANSWERED: u8 = 1;
    pub const RESET: u8 = 2;
}

/// Packet classes, in [`PacketInfo::class`].
pub mod class {
    pub const SYN: u8 = 1;
    pub const SYN_ACK: u8 = 2;
    pub const RST: u8 = 3;
    /// A bare ACK that may complete a handshake (no payload, no SYN/RST/FIN).
    pub const ACK: u8 = 4;
}

/// Slots of the per-CPU `STATS` array. Summed over CPUs by user space; exact, never sampled.
pub mod stat {
    /// Handshake packets that matched the filters and were dropped.
    pub const DROPS: u32 = 0;
    /// Events that could not be written because the ring buffer was full.
    pub const LOST_EVENTS: u32 = 1;
    /// kfree_skb calls on TCP packets whose headers could not be read.
    pub const UNREADABLE: u32 = 2;
    /// SYNs seen for the first time by the TC classifiers (handshakes started).
    pub const SYNS: u32 = 3;
    /// Handshakes answered by a SYN-ACK seen by the TC classifiers. Best effort: two answers to
    /// one SYN racing on two CPUs may both count (the drop counters are the exact ones).
    pub const ANSWERED: u32 = 4;
    /// Handshakes answered by a RST (best effort, as `ANSWERED`).
    pub const RESETS: u32 = 5;
    /// Drops joined to a handshake first seen on a watched interface.
    pub const JOINED_DROPS: u32 = 6;
    /// Packets the TC classifiers could not parse.
    pub const TC_UNREADABLE: u32 = 7;
    /// SYN, SYN-ACK and RST events not sent while the classifiers sampled (overload); their
    /// counts above stay exact.
    pub const TC_SAMPLED_OUT: u32 = 8;
    /// Drop events not sent while the drop hooks sampled (overload); `DROPS` stays exact.
    pub const DROPS_SAMPLED_OUT: u32 = 9;
    pub const COUNT: u32 = 10;
}

/// Drop reasons at or above this value are counted in the last slot of `DROP_REASONS`.
pub const MAX_REASONS: u32 = 256;

/// The reason given to drops seen by the `tcp_drop` kprobe (no kernel enum goes this high);
/// counted in the last slot of `DROP_REASONS`.
pub const REASON_TCP_DROP: u32 = 0xffff_ff00;

/// VXLAN's IANA port, which Docker's overlays use unless the swarm was made with another
/// (`docker swarm init --data-path-port`).
pub const VXLAN_PORT: u16 = 4789;

/// Bytes of the ring buffer that carries events to user space.
pub const RING_BYTES: u32 = 4 << 20;

/// Default number of entries of the handshake table (user space may change it before load,
/// rounded up to a power of two: a slot is a hash of the key masked).
pub const HANDSHAKE_TABLE: u32 = 65536;

/// Detail events (SYN, SYN-ACK, RST, drop) per second per CPU above which the kernel programs
/// sample them (see [`Overload`]). From the measurements (BENCHMARKS.md): an event costs user
/// space about 0.9 us (decode and aggregate 0.26 us, its NDJSON line 0.62 us), so 50 000/s
/// per CPU keeps user space under about a twentieth of a core per watched CPU, far below the
/// rate at which the ring first lost events (none lost at 218 824 SYN drops/s, two events
/// each, on two CPUs).
pub const OVERLOAD_RATE: u32 = 50_000;

/// One in this many handshakes keeps its detail events while a CPU is overloaded.
pub const OVERLOAD_ONE_IN: u32 = 16;

/// How the handshake table is addressed and when the programs sample, set as a global by user
/// space before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TableConfig {
    /// A random per-run seed of the slot hash, so that nobody outside can aim SYNs at one
    /// slot (or at the sampled-out handshakes) without knowing it.
    pub seed: u64,
    /// Number of slots - 1 (a power of two - 1).
    pub mask: u32,
    /// Detail events per CPU per [`OVERLOAD_WINDOW_NS`] above which the next window samples;
    /// 0: never sample.
    pub overload_per_window: u32,
    /// 1 in this many handshakes keeps its events while sampling (>= 2).
    pub one_in: u32,
    pub _pad: u32,
}

/// The window over which a CPU counts its detail events, to decide whether the next one
/// samples: 100 ms.
pub const OVERLOAD_WINDOW_NS: u64 = 100_000_000;

/// A CPU's overload state (a per-CPU array of one). Written by the programs of that CPU only;
/// user space reads it to say "sampled 1 in N since T".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Overload {
    /// Start of the current window (monotonic ns).
    pub window_start: u64,
    /// Detail events wanted in the current window (sent or not).
    pub in_window: u64,
    /// Since when this CPU samples (monotonic ns of the window's start); 0: it does not.
    pub sampling_since: u64,
    /// Windows this CPU has sampled, over the run.
    pub windows_sampled: u64,
}

/// A slot of the handshake table: a fixed-size array indexed by [`slot_index`] of the ISN,
/// 64 bytes, so that a slot is one cache line of the table (the map is created
/// `BPF_F_MMAPABLE`, which makes the kernel page-align its values). A new SYN overwrites its
/// slot whole, with plain stores, without a lock; `check` (written with the rest) covers the
/// key and the fields fixed at creation, so a reader that copies the slot and finds `check`
/// matching knows it read one SYN's slot, never a torn mix of two writers or a stale one under
/// a new key (but by a 32-bit coincidence, about 1 in 4 billion torn or stale reads).
///
/// Indexed by the ISN alone, the slot also answers "which SYN has this ISN" for packets that
/// echo the ISN but not the TSval (a RST answering a SYN, a SYN-ACK without timestamps): a
/// retransmitted SYN (same ISN, a new TSval) takes its first transmission's slot, as the
/// latest SYN of an ISN should.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Slot {
    pub key: HandshakeKey,
    pub hs: Handshake,
    pub check: u32,
}

impl Slot {
    /// The check of a slot holding `key` and `hs` (never 0, so an empty slot never checks).
    #[inline(always)]
    pub fn check_of(key: &HandshakeKey, hs: &Handshake) -> u32 {
        let w = |b: &[u8; 16], i: usize| {
            u64::from_ne_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let ports = (hs.client_port as u64) << 32
            | (hs.service_port as u64) << 16
            | (hs.family as u64) << 8;
        let mut h = (key.isn as u64) << 32 | key.tsval as u64;
        for x in [
            hs.first_t16 as u64 ^ ports,
            w(&hs.client, 0),
            w(&hs.client, 8),
            w(&hs.service, 0),
            w(&hs.service, 8),
        ] {
            h = (h ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        }
        (h >> 32) as u32 | 1
    }

    /// Whether the slot holds `key`'s SYN, whole.
    #[inline(always)]
    pub fn holds(&self, key: &HandshakeKey) -> bool {
        self.key == *key && self.check == Self::check_of(&self.key, &self.hs)
    }
}

/// The slot of the SYN with `isn` in a table of `mask + 1` slots.
#[inline(always)]
pub fn slot_index(isn: u32, seed: u64, mask: u32) -> u32 {
    let x = (isn as u64) ^ seed;
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 & mask
}

/// Monotonic nanoseconds in the unit of [`Handshake::first_t16`]: 16 ns, wrapping every
/// 68.7 s.
#[inline(always)]
pub fn t16(ns: u64) -> u32 {
    (ns >> 4) as u32
}

/// Nanoseconds from `first_t16` to `now_ns` (within 16 ns), for an answer less than 68 s
/// after its SYN (one answers the SYN whose TSval it echoes, or is a RST within the SYN's
/// retransmission time), at most `u32::MAX` (4.29 s).
#[inline(always)]
pub fn since_t16(first_t16: u32, now_ns: u64) -> u32 {
    let units = t16(now_ns).wrapping_sub(first_t16);
    if units >= 1 << 28 {
        u32::MAX
    } else {
        units << 4
    }
}

/// Whether the handshake of `isn` keeps its detail events while sampling 1 in `one_in`: the
/// same answer for its SYN, SYN-ACK, RST and drops (all carry or echo the ISN), so a sampled
/// handshake is whole.
#[inline(always)]
pub fn sampled_in(isn: u32, seed: u64, one_in: u32) -> bool {
    let x = (isn as u64 ^ seed.rotate_left(41)).wrapping_mul(0xff51_afd7_ed55_8ccd) >> 32;
    one_in <= 1 || (x as u32).is_multiple_of(one_in)
}

/// Header at offset 0 of every ring-buffer event. The decoder reads `kind` first and picks the
/// type from it, so this header must stay first and keep its layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u16,
    pub _pad: [u8; 6],
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, converted to wall time by user space.
    pub ts_ns: u64,
}

/// The TCP/IP facts of one handshake packet, as the kernel saw them at the hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketInfo {
    /// IPv4 addresses use the first 4 bytes; network byte order.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack_seq: u32,
    /// TCP timestamp option; valid when `has_ts` is 1.
    pub tsval: u32,
    pub tsecr: u32,
    /// 4 or 6.
    pub family: u8,
    /// One of [`class`].
    pub class: u8,
    /// 1 when the packet carried a TCP timestamp option. A `u8`, not a `bool`, so any byte the
    /// kernel writes is a valid value.
    pub has_ts: u8,
    /// The raw TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN).
    pub tcp_flags: u8,
}

/// A dropped handshake packet, from the `skb:kfree_skb` tracepoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropEvent {
    pub header: EventHeader,
    /// Kernel address of the code that dropped the packet (`location` of the tracepoint).
    pub location: u64,
    /// Inode of the network namespace the packet was in (its device's, else its socket's).
    pub netns: u32,
    pub ifindex: u32,
    /// The kernel's `enum skb_drop_reason` value; its name is read from the running kernel.
    pub reason: u32,
    /// The outer IPv4 source of the VXLAN datagram (UDP 4789) the packet was dropped inside
    /// (the node that sent it into the overlay), network order; zero for a packet dropped
    /// bare. `packet` is then the inner one.
    pub vxlan_from: [u8; 4],
    pub packet: PacketInfo,
    /// The device name, NUL-padded; empty when the packet had no device.
    pub ifname: [u8; 16],
    /// The handshake the packet belongs to, when it was first seen on a watched interface
    /// (`joined` is 1): the real client and the published service, before any NAT.
    pub key: HandshakeKey,
    pub client: [u8; 16],
    pub service: [u8; 16],
    pub client_port: u16,
    pub service_port: u16,
    pub joined: u8,
    pub _pad2: [u8; 3],
}

/// Where a packet was seen: a network namespace, an interface in it, and a direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Hop {
    pub netns: u32,
    pub ifindex: u32,
    /// 1 ingress, 2 egress, 0 unknown.
    pub dir: u8,
    pub _pad: [u8; 3],
}

/// Key of the handshake table: the client's initial sequence number and the TSval of the SYN
/// that carried it. Both survive every NAT hop, so the key names one SYN everywhere on the
/// host. TSval is 0 when the SYN had no timestamp option.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct HandshakeKey {
    pub isn: u32,
    pub tsval: u32,
}

/// A handshake in its table [`Slot`]. `state` and the last hop are updated in place by every
/// CPU without a lock (each field written whole, see the kernel crate's `handshake`); the
/// other fields are fixed when the SYN makes the slot and covered by [`Slot::check`]. 52
/// bytes, so that a slot is 64: where the SYN was first seen is in its event, not here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Handshake {
    /// When the SYN was first seen: monotonic ns in units of 16 ns, wrapping ([`t16`]).
    pub first_t16: u32,
    /// The client and the service as first seen (before any NAT on this host).
    pub client: [u8; 16],
    pub service: [u8; 16],
    pub client_port: u16,
    pub service_port: u16,
    pub family: u8,
    /// Bits of [`state`]: whether an answer (SYN-ACK or RST) was already counted.
    pub state: u8,
    /// The last hop the SYN was seen on (user space reads it for a handshake's path): its
    /// direction, namespace and interface, each written whole.
    pub last_dir: u8,
    pub _pad: u8,
    pub last_netns: u32,
    pub last_ifindex: u32,
}

impl Handshake {
    /// The last hop the SYN was seen on.
    #[inline(always)]
    pub fn last_hop(&self) -> Hop {
        Hop {
            netns: self.last_netns,
            ifindex: self.last_ifindex,
            dir: self.last_dir,
            _pad: [0; 3],
        }
    }
}

/// A handshake packet seen by a TC classifier: a new SYN, its SYN-ACK or a RST.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HandshakeEvent {
    pub header: EventHeader,
    pub key: HandshakeKey,
    pub hop: Hop,
    /// One of [`seen`].
    pub what: u8,
    pub _pad: [u8; 3],
    /// For an answer: nanoseconds since the SYN was first seen.
    pub latency_ns: u32,
    /// The packet as seen at this hop.
    pub packet: PacketInfo,
    pub _pad2: u32,
}

/// Filters applied in the kernel, so that the exact counters count what the user asked for.
/// Set as a global before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    /// Match when either port equals this; 0 matches every port.
    pub port: u16,
    /// 0: any address; 4 or 6: the address family of `addr`.
    pub family: u8,
    pub _pad: u8,
    /// Match when either address, masked with `mask`, equals `addr` (both network order).
    pub addr: [u32; 4],
    pub mask: [u32; 4],
    /// The UDP port of the overlays' VXLAN datagrams, which the programs look inside
    /// ([`VXLAN_PORT`] unless the swarm uses another data-path port).
    pub vxlan_port: u16,
    pub _pad2: [u8; 2],
}

/// Offsets into kernel structures, read by user space from the running kernel (tracefs format
/// file and BTF) and handed to the programs as a global before load: aya's Rust eBPF has no
/// CO-RE relocations, and these layouts change between kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    // skb:kfree_skb tracepoint record.
    pub tp_skbaddr: u32,
    pub tp_location: u32,
    /// `u32::MAX` when the kernel has no drop reasons (before 5.17).
    pub tp_reason: u32,
    /// `u32::MAX` when the tracepoint has no `rx_sk` (before 6.11).
    pub tp_rx_sk: u32,
    // struct sk_buff
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    // struct net_device
    pub dev_ifindex: u32,
    pub dev_name: u32,
    pub dev_nd_net: u32,
    // struct net
    pub net_inum: u32,
    // struct sock
    pub sk_net: u32,
    /// The value of `SKB_CONSUMED` (packets freed after use, not dropped, traced through
    /// kfree_skb since 6.2), or `u32::MAX` where the kernel has no such reason.
    pub reason_consumed: u32,
    /// Index into [`TP_LAYOUTS`] when the tracepoint record is one of those layouts, which
    /// the program then reads with plain loads (no helper call); `u32::MAX` otherwise (read
    /// field by field at the offsets above).
    pub tp_layout: u32,
    /// Start of an 8-aligned window of at most [`SKB_HDR_WINDOW`] bytes of `struct sk_buff`
    /// holding both `network_header` and `head`, read in one helper call; `u32::MAX` when they
    /// are further apart (two reads).
    pub skb_hdr_window: u32,
    /// Start of a window of `dev_window_len` (at most [`DEV_WINDOW`]) bytes of
    /// `struct net_device` holding `ifindex` and `name`, and `nd_net` too when it fits, read in
    /// one helper call; `u32::MAX` when `ifindex` and `name` are further apart (a read each).
    pub dev_window: u32,
    pub dev_window_len: u32,
}

/// The `skb:kfree_skb` record layouts the program knows at compile time, as
/// (`skbaddr`, `reason`) offsets; `u32::MAX`: no reason field. User space picks one only when
/// the running kernel's format file says exactly these offsets: 5.10 (no reasons), 5.17-6.10,
/// 6.11+ (`rx_sk` before `protocol`).
pub const TP_LAYOUTS: [(u32, u32); 3] = [(8, u32::MAX), (8, 28), (8, 36)];

/// Bytes of `struct sk_buff` read at once for `network_header` and `head`.
pub const SKB_HDR_WINDOW: u32 = 32;

/// Most bytes of `struct net_device` read at once for `ifindex`, `name` and `nd_net`: they
/// span 72 bytes on 6.18 and 96 on 6.12. Not 6.1 (`ifindex` and `name` alone span 220) nor
/// 5.10 (260): a window that long saved nothing measured (a 264-byte read cost about as
/// much more than a 72-byte one as a separate read does), so they keep a read each.
pub const DEV_WINDOW: u32 = 128;

/// The furthest byte the program reads of a record of layout `i`: the 8-byte `skbaddr` and
/// the 4-byte `reason`.
pub const fn tp_layout_end(i: usize) -> u32 {
    let (skb, reason) = TP_LAYOUTS[i];
    if reason != u32::MAX && reason + 4 > skb + 8 {
        reason + 4
    } else {
        skb + 8
    }
}

impl KernelOffsets {
    /// Fills `tp_layout` and `skb_hdr_window` from the offsets read from the kernel;
    /// `record_end` is where the tracepoint record's last field ends.
    pub fn with_fast_paths(mut self, record_end: u32) -> Self {
        self.tp_layout = TP_LAYOUTS
            .iter()
            .enumerate()
            .position(|(i, &(skb, reason))| {
                skb == self.tp_skbaddr && reason == self.tp_reason && tp_layout_end(i) <= record_end
            })
            .map_or(u32::MAX, |i| i as u32);
        let start = self.skb_network_header & !7;
        self.skb_hdr_window = if self.skb_head >= start
            && self.skb_head.is_multiple_of(8)
            && self.skb_head + 8 - start <= SKB_HDR_WINDOW
            && self.skb_network_header + 2 - start <= SKB_HDR_WINDOW
        {
            start
        } else {
            u32::MAX
        };
        (self.dev_window, self.dev_window_len) = self.device_window();
        self
    }

    /// The smallest span of `struct net_device` holding `ifindex` (4 bytes) and `name` (16),
    /// grown to `nd_net` (8) when the whole still fits in [`DEV_WINDOW`]; `(u32::MAX, 0)` when
    /// the first two do not fit.
    fn device_window(&self) -> (u32, u32) {
        let span = |fields: &[(u32, u32)]| {
            let lo = fields.iter().map(|&(at, _)| at).min().unwrap_or(0);
            let hi = fields
                .iter()
                .map(|&(at, len)| at.saturating_add(len))
                .max()
                .unwrap_or(0);
            (lo, hi - lo)
        };
        let (ifindex, name, net) = (
            (self.dev_ifindex, 4),
            (self.dev_name, 16),
            (self.dev_nd_net, 8),
        );
        for fields in [&[ifindex, name, net][..], &[ifindex, name]] {
            let (start, len) = span(fields);
            if len <= DEV_WINDOW && start != u32::MAX {
                return (start, len);
            }
        }
        (u32::MAX, 0)
    }
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 16);
const _: () = assert!(core::mem::size_of::<PacketInfo>() == 56);
const _: () = assert!(core::mem::size_of::<DropEvent>() == 160);
const _: () = assert!(core::mem::size_of::<Hop>() == 12);
const _: () = assert!(core::mem::size_of::<HandshakeKey>() == 8);
const _: () = assert!(core::mem::size_of::<Handshake>() == 52);
const _: () = assert!(core::mem::size_of::<HandshakeEvent>() == 104);
const _: () = assert!(core::mem::size_of::<Filter>() == 40);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 72);
const _: () = assert!(core::mem::size_of::<TableConfig>() == 24);
const _: () = assert!(core::mem::size_of::<Overload>() == 32);
const _: () = assert!(core::mem::size_of::<Slot>() == 64);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integer and byte-array fields only, no implicit padding (sizes are
    // checked above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::Filter {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::DropEvent {}
    unsafe impl aya::Pod for super::HandshakeKey {}
    unsafe impl aya::Pod for super::Handshake {}
    unsafe impl aya::Pod for super::HandshakeEvent {}
    unsafe impl aya::Pod for super::TableConfig {}
    unsafe impl aya::Pod for super::Overload {}
    unsafe impl aya::Pod for super::Slot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(first_ns: u64, client: u8, port: u16) -> Handshake {
        let mut h = Handshake {
            first_t16: t16(first_ns),
            client_port: port,
            service_port: 80,
            family: 4,
            ..Handshake::default()
        };
        h.client[..4].copy_from_slice(&[10, 0, 0, client]);
        h.service[..4].copy_from_slice(&[10, 0, 1, 1]);
        h
    }

    fn slot(key: HandshakeKey, hs: Handshake) -> Slot {
        Slot {
            key,
            hs,
            check: Slot::check_of(&key, &hs),
        }
    }

    #[test]
    fn a_slot_holds_its_key_only_whole() {
        let (ka, kb) = (
            HandshakeKey { isn: 1, tsval: 2 },
            HandshakeKey { isn: 3, tsval: 2 },
        );
        let (a, b) = (
            slot(ka, handshake(100, 2, 40000)),
            slot(kb, handshake(1_000, 3, 40001)),
        );
        assert!(a.holds(&ka) && b.holds(&kb));
        // Stale: another key's slot.
        assert!(!a.holds(&kb));
        // Empty: never holds, not even the zero key.
        assert!(!Slot::default().holds(&HandshakeKey::default()));
        // Torn: two writers' stores mixed, whichever check landed last.
        for check in [a.check, b.check] {
            let mut torn = a;
            torn.hs.client = b.hs.client;
            torn.check = check;
            assert!(!torn.holds(&ka) && !torn.holds(&kb));
            let mut torn = b;
            torn.key = ka;
            torn.check = check;
            assert!(!torn.holds(&ka) && !torn.holds(&kb));
            let mut torn = a;
            torn.hs.first_t16 = b.hs.first_t16;
            torn.check = check;
            assert!(!torn.holds(&ka));
        }
        // What changes in place (answered, last hop) is outside the check.
        let mut answered = a;
        answered.hs.state = state::ANSWERED;
        answered.hs.last_ifindex = 9;
        answered.hs.last_netns = 7;
        answered.hs.last_dir = 2;
        assert!(answered.holds(&ka));
    }

    #[test]
    fn slots_spread_and_sampling_keeps_about_one_in_n() {
        let (seed, mask) = (0x1234_5678_9abc_def0, 1023);
        let mut used = [0u32; 1024];
        let mut kept = 0;
        for i in 0..65536u32 {
            let key = HandshakeKey {
                isn: i.wrapping_mul(2_654_435_761),
                tsval: 7,
            };
            used[slot_index(key.isn, seed, mask) as usize] += 1;
            kept += u32::from(sampled_in(key.isn, seed, 16));
        }
        // 64 per slot on average: no slot empty, none with four times its share.
        assert!(used.iter().all(|&n| n > 0 && n < 256), "{:?}", &used[..16]);
        assert!(
            (3500..4700).contains(&kept),
            "{kept} of 65536 kept at 1 in 16"
        );
        assert!(sampled_in(5, seed, 1) && sampled_in(5, seed, 0));
    }

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<Slot>(), 64);
        assert_eq!(core::mem::offset_of!(Slot, check), 60);
    }

    #[test]
    fn latency_from_the_16_ns_clock() {
        let first = 5_000_000_123u64;
        let f = t16(first);
        assert_eq!(since_t16(f, first + 1_500_000), 1_500_000);
        // Within 16 ns of the truth.
        for d in 1_500_000..1_500_040 {
            assert!(since_t16(f, first + d).abs_diff(d as u32) < 16, "{d}");
        }
        // Across the 32-bit wrap of the unit clock (every 68.7 s).
        let near_wrap = (u32::MAX as u64) << 4;
        assert_eq!(since_t16(t16(near_wrap), near_wrap + 320), 320);
        // 4.29 s and more: saturated, as the event's u32 latency always was.
        assert_eq!(since_t16(f, first + 5_000_000_000), u32::MAX);
    }
}
