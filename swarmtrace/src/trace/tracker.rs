//! The handshake tracker: user space's view of every SYN the classifiers saw, what answered
//! it and what dropped it. A handshake is one client's connection attempt, `(client, ISN)`;
//! each (re)transmitted SYN of it is a kernel table key `(ISN, TSval)`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use swarmtrace_common::HandshakeKey;

use crate::trace::drops::Drop;
use crate::trace::event::{PacketKind, Seen, Sighting};
use crate::trace::forgotten::Forgotten;
use crate::trace::topk::Fast;
// The handshake's types live beside, shared with `forgotten`; named from here as always.
pub use crate::trace::handshake::{
    Answer, DropNote, Handshake, HandshakeId, Outcome, Overflow, OverlaySend, MAX_DROP_NOTES,
    MAX_KEYS,
};

/// Handshakes kept for the summary; beyond this the oldest are forgotten, reported or not,
/// and counted in `evicted` (the summary's `forgotten`). This bounds the tracker's memory
/// under a flood (measured: BENCHMARKS.md, resident memory under the flood and the soak).
pub const MAX_HANDSHAKES: usize = 25_000;

/// A handshake's sequence number. 32 bits keep the tables small (they are most of the
/// tracker's cache misses); it wraps after 4 billion handshakes, harmlessly, since only
/// differences within the ring (at most `MAX_HANDSHAKES + 1`) are used.
type Seq = u32;

/// A handshake id packed for the id table: smaller slots, and 24 bytes hashed together,
/// where `(SocketAddr, u32)` is hashed in five pieces (its variant, a length, the octets,
/// the port, the ISN). An IPv6 address's flow label and scope id are left out: addresses
/// come from packet headers, where they are always 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IdKey([u64; 3]);

impl IdKey {
    fn new((client, isn): HandshakeId) -> Self {
        let (ip, family) = match client.ip() {
            IpAddr::V4(ip) => (u128::from(ip.to_bits()), 4u64),
            IpAddr::V6(ip) => (ip.to_bits(), 6),
        };
        let rest = family << 48 | u64::from(client.port()) << 32 | u64::from(isn);
        Self([(ip >> 64) as u64, ip as u64, rest])
    }
}

/// A kernel table key hashed in one write, not one per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyBits(HandshakeKey);

impl Hash for KeyBits {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.0.isn) << 32 | u64::from(self.0.tsval));
    }
}

/// Handshakes are kept in the order they were first seen, which is the order they are
/// forgotten in: a ring of at most `MAX_HANDSHAKES` slots. Once full, a new handshake is
/// made in the slot of the oldest, which is folded into `forgotten` first: the slot was just
/// read, so making one costs no cold memory, no move of a handshake and no allocation (the
/// slot's lists keep their room). The tables map to a handshake's sequence number (counted
/// from the run's first handshake), which never changes.
///
/// Forgetting a handshake does not unindex it: an entry whose sequence number is no longer
/// in the ring is stale, and reads as absent. Stale entries are swept out (one sequential
/// pass) when a table is full, before it would grow: the tables stay within the room they
/// have for `2 * MAX_HANDSHAKES` entries whatever the flood, and eviction costs no lookup.
#[derive(Debug)]
pub struct Tracker {
    /// The ring: `ring[head]` is the oldest once the ring is full (`head` is 0 until then).
    ring: Vec<Handshake>,
    head: usize,
    /// The sequence number of the oldest kept handshake.
    first_seq: Seq,
    by_id: HashMap<IdKey, Seq, Fast>,
    by_key: HashMap<KeyBits, Seq, Fast>,
    timeout_ns: u64,
    /// Handshakes before this sequence number have been through `due`.
    due_from: Seq,
    pub evicted: u64,
    /// The evicted handshakes, folded by what their verdicts read.
    pub forgotten: Forgotten,
}

/// Entries a table has room for before it sweeps out its stale ones (or, were they all
/// live, grows): twice the handshakes kept, so a sweep comes once per `MAX_HANDSHAKES` new
/// entries at least.
const TABLE_ROOM: usize = 2 * MAX_HANDSHAKES;

/// Makes room in `table` for one more entry without growing it, when the room is only taken
/// by stale entries: those whose sequence number is not in `first_seq..first_seq + len`.
/// The room left after a sweep is an eighth of the entries at least (the table grows, or
/// clears its tombstones, if need be), so that a table of live entries (a handshake keeps
/// up to `MAX_KEYS` keys) is not swept again and again: a pass per eighth of its entries
/// at most.
fn sweep<K: Eq + std::hash::Hash>(table: &mut HashMap<K, Seq, Fast>, first_seq: Seq, len: usize) {
    if table.len() >= table.capacity() {
        table.retain(|_, seq| (seq.wrapping_sub(first_seq) as usize) < len);
        table.reserve(table.len() / 8 + 1);
    }
}

/// Makes `h` a new handshake, keeping the room of its lists.
fn renew(h: &mut Handshake, id: HandshakeId, service: SocketAddr, ts_ns: u64) {
    // Every field named: one added to `Handshake` must be renewed here too.
    let Handshake {
        client,
        service: s,
        isn,
        first_ns,
        syns,
        keys,
        first_hop,
        answer,
        drops,
        reported,
        overflow,
        overlay,
    } = h;
    *client = id.0;
    *s = service;
    *isn = id.1;
    *first_ns = ts_ns;
    *syns = 0;
    keys.clear();
    *first_hop = None;
    *answer = None;
    drops.clear();
    *reported = false;
    *overflow = Overflow::default();
    *overlay = None;
}

impl Tracker {
    pub fn new(timeout_ns: u64) -> Self {
        Self {
            ring: Vec::new(),
            head: 0,
            first_seq: 0,
            by_id: HashMap::with_capacity_and_hasher(TABLE_ROOM, Fast::default()),
            by_key: HashMap::with_capacity_and_hasher(TABLE_ROOM, Fast::default()),
            timeout_ns,
            due_from: 0,
            evicted: 0,
            forgotten: Forgotten::default(),
        }
    }

    /// Where handshake `seq` is in first-seen order; `len()` or beyond when `seq` was
    /// forgotten (or is a stale table entry).
    fn index(&self, seq: Seq) -> usize {
        seq.wrapping_sub(self.first_seq) as usize
    }

    /// The slot of the `i`-th kept handshake, oldest first.
    fn slot(&self, i: usize) -> usize {
        let at = self.head + i;
        if at >= self.ring.len() {
            at - self.ring.len()
        } else {
            at
        }
    }

    /// The `i`-th kept handshake, oldest first.
    fn nth_mut(&mut self, i: usize) -> Option<&mut Handshake> {
        if i >= self.ring.len() {
            return None;
        }
        let s = self.slot(i);
        self.ring.get_mut(s)
    }

    /// The kept handshake of a sequence number; None when it was forgotten.
    fn live(&mut self, seq: Seq) -> Option<&mut Handshake> {
        self.nth_mut(self.index(seq))
    }

    /// The handshake `id` and its sequence number, made if new (one lookup either way). A
    /// new one takes the oldest's slot when the tracker is full (the oldest is forgotten).
    fn entry(&mut self, id: HandshakeId, service: SocketAddr, ts_ns: u64) -> (Seq, &mut Handshake) {
        let len = self.ring.len();
        sweep(&mut self.by_id, self.first_seq, len);
        let next = self.first_seq.wrapping_add(len as Seq);
        let first_seq = self.first_seq;
        let seq = match self.by_id.entry(IdKey::new(id)) {
            Entry::Occupied(mut e) if (e.get().wrapping_sub(first_seq) as usize) >= len => {
                // A stale entry: the id was forgotten and is back.
                e.insert(next);
                None
            }
            Entry::Occupied(e) => Some(*e.get()),
            Entry::Vacant(e) => {
                e.insert(next);
                None
            }
        };
        if let Some(seq) = seq {
            let i = self.index(seq);
            let h = self
                .nth_mut(i)
                .expect("a live entry names a kept handshake");
            return (seq, h);
        }
        let seq = if self.ring.len() < MAX_HANDSHAKES {
            self.ring.push(Handshake {
                client: id.0,
                service,
                isn: id.1,
                first_ns: ts_ns,
                syns: 0,
                keys: Vec::new(),
                first_hop: None,
                answer: None,
                drops: Vec::new(),
                reported: false,
                overflow: Overflow::default(),
                overlay: None,
            });
            next
        } else {
            // Full: the oldest is forgotten and the new one made in its slot.
            let slot = self.head;
            self.head = if slot + 1 == self.ring.len() {
                0
            } else {
                slot + 1
            };
            self.first_seq = self.first_seq.wrapping_add(1);
            self.evicted += 1;
            let h = &mut self.ring[slot];
            self.forgotten.add(h);
            renew(h, id, service, ts_ns);
            // The ring is as long as before and starts one later: the new one is last.
            next
        };
        let i = self.index(seq);
        (seq, self.nth_mut(i).expect("just made"))
    }

    /// Records a sighting; returns the handshake when it should be reported now (answered).
    pub fn on_sighting(&mut self, s: &Sighting) -> Option<HandshakeId> {
        match s.seen {
            Seen::Syn => {
                let (seq, h) = self.entry((s.packet.src, s.key.isn), s.packet.dst, s.ts_ns);
                h.syns = h.syns.saturating_add(1);
                let kept = h.add_key(s.key);
                if h.first_hop.is_none() {
                    h.first_hop = Some(s.hop);
                }
                if kept {
                    self.index_key(s.key, seq);
                }
                None
            }
            Seen::SynAck | Seen::Rst => {
                let seq = *self.by_key.get(&KeyBits(s.key))?;
                let h = self.live(seq)?;
                if h.answer.is_none() {
                    h.answer = Some(if s.seen == Seen::SynAck {
                        Answer::SynAck {
                            latency_ns: s.latency_ns as u64,
                            hop: s.hop,
                        }
                    } else {
                        Answer::Reset { hop: s.hop }
                    });
                }
                (s.seen == Seen::SynAck && !h.reported && h.drops.is_empty()).then(|| {
                    h.reported = true;
                    (h.client, h.isn)
                })
            }
            Seen::Overlay => {
                let seq = *self.by_key.get(&KeyBits(s.key))?;
                let h = self.live(seq)?;
                if h.overlay.is_none() {
                    h.overlay = Some(OverlaySend {
                        local: s.packet.src.ip(),
                        remote: s.packet.dst.ip(),
                        hop: s.hop,
                    });
                }
                None
            }
        }
    }

    /// Records a drop; returns the handshake it belongs to, if any.
    pub fn on_drop(&mut self, d: &Drop) -> Option<HandshakeId> {
        // Made only for a drop that has a handshake.
        let note = || DropNote::from(d);
        match &d.joined {
            Some(j) => {
                // A known key names a kept handshake, unless its entry is stale.
                let known = self
                    .by_key
                    .get(&KeyBits(j.key))
                    .copied()
                    .filter(|&seq| self.index(seq) < self.ring.len());
                let (seq, h) = match known {
                    Some(seq) => (seq, self.live(seq).expect("checked live")),
                    None => self.entry((j.client, j.key.isn), j.service, d.ts_ns),
                };
                let id = (h.client, h.isn);
                let kept = h.add_key(j.key);
                h.add_drop(note, d.packet.kind);
                if known.is_none() && kept {
                    self.index_key(j.key, seq);
                }
                Some(id)
            }
            // Not seen on a watched interface: the packet itself is all we know. A dropped
            // SYN still makes a handshake (its client may be a NAT address); other packets
            // without a handshake are reported as drops only.
            // Its kernel key (ISN, TSval) is kept as a SYN's would be: another node's record
            // of the same SYN joins it (`report n1 n2`, as the live `join` does by the drop
            // line's keys).
            None if d.packet.kind == PacketKind::Syn => {
                let id = (d.packet.src, d.packet.seq);
                let key = d.packet.tsval.map(|tsval| HandshakeKey {
                    isn: d.packet.client_isn(),
                    tsval,
                });
                let (seq, h) = self.entry(id, d.packet.dst, d.ts_ns);
                if h.syns == 0 {
                    h.syns = 1;
                }
                let kept = key.is_some_and(|k| h.add_key(k));
                h.add_drop(note, d.packet.kind);
                if let Some(k) = key.filter(|_| kept) {
                    // A kept handshake's entry stays; a stale one is replaced.
                    let len = self.ring.len();
                    sweep(&mut self.by_key, self.first_seq, len);
                    let first_seq = self.first_seq;
                    let e = self.by_key.entry(KeyBits(k)).or_insert(seq);
                    if (e.wrapping_sub(first_seq) as usize) >= len {
                        *e = seq;
                    }
                }
                Some(id)
            }
            None => None,
        }
    }

    /// Handshakes whose time is up (`timeout` after their first SYN) and not yet reported;
    /// marks them reported.
    ///
    /// The ring is in first-seen order, so the scan starts where the last one stopped and
    /// stops at the first handshake whose time is not up: each tick costs the handshakes that
    /// came due, not every kept one. (Events of different CPUs can arrive a few microseconds
    /// out of order; such a handshake is reported at the next tick.)
    pub fn due(&mut self, now_ns: u64) -> Vec<HandshakeId> {
        let mut out = Vec::new();
        let start = self.due_from.wrapping_sub(self.first_seq) as usize;
        // Behind the ring's start (forgotten since): start at the oldest kept.
        let start = if start > self.ring.len() { 0 } else { start };
        let timeout_ns = self.timeout_ns;
        let mut i = start;
        while let Some(h) = self.nth_mut(i) {
            if now_ns < h.first_ns.saturating_add(timeout_ns) {
                break;
            }
            if !h.reported {
                h.reported = true;
                out.push((h.first_ns, (h.client, h.isn)));
            }
            i += 1;
        }
        self.due_from = self.first_seq.wrapping_add(i as Seq);
        out.sort_by_key(|(first_ns, _)| *first_ns);
        out.into_iter().map(|(_, id)| id).collect()
    }

    /// Every handshake not yet reported, whatever its age (at exit).
    pub fn flush(&mut self) -> Vec<HandshakeId> {
        self.due(u64::MAX)
    }

    pub fn get(&self, id: &HandshakeId) -> Option<&Handshake> {
        let i = self.index(*self.by_id.get(&IdKey::new(*id))?);
        (i < self.ring.len()).then(|| &self.ring[self.slot(i)])
    }

    /// The kept handshakes, oldest first.
    pub fn handshakes(&self) -> impl Iterator<Item = &Handshake> {
        let (newer, older) = self.ring.split_at(self.head);
        older.iter().chain(newer)
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Indexes a kept key of handshake `seq` (replacing whatever the key named before).
    fn index_key(&mut self, key: HandshakeKey, seq: Seq) {
        sweep(&mut self.by_key, self.first_seq, self.ring.len());
        self.by_key.insert(KeyBits(key), seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::event::{Joined, Packet};
    use swarmtrace_common::Hop;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn packet(kind: PacketKind, src: &str, dst: &str, seq: u32, ack: u32) -> Packet {
        Packet {
            kind,
            src: addr(src),
            dst: addr(dst),
            seq,
            ack,
            tsval: Some(5),
            tsecr: None,
            flags: 0,
        }
    }

    fn hop(ifindex: u32) -> Hop {
        Hop {
            netns: 1,
            ifindex,
            dir: 1,
            _pad: [0; 3],
        }
    }

    fn syn(ts: u64, tsval: u32) -> Sighting {
        Sighting {
            ts_ns: ts,
            key: HandshakeKey { isn: 100, tsval },
            hop: hop(2),
            seen: Seen::Syn,
            latency_ns: 0,
            packet: packet(
                PacketKind::Syn,
                "192.168.1.50:40000",
                "10.10.0.1:8080",
                100,
                0,
            ),
        }
    }

    fn drop_of(kind: PacketKind, reason: &str, joined: Option<Joined>) -> Drop {
        Drop {
            ts_ns: 10,
            unix_ns: 0,
            packet: packet(kind, "10.0.0.2:40000", "10.0.0.5:80", 100, 0),
            reason: reason.into(),
            location: "tcp_v4_rcv+0x1".into(),
            netns: 9,
            netns_name: Some("task".into()),
            ifname: Some("eth0".into()),
            joined,
            vxlan_from: None,
        }
    }

    #[test]
    fn a_syn_sent_into_the_overlay_notes_the_node_it_went_to() {
        let mut t = Tracker::new(1_000);
        t.on_sighting(&syn(0, 5));
        let mut sent = syn(1, 5);
        sent.seen = Seen::Overlay;
        sent.hop = hop(3);
        // The outer addresses: this node, the node the VXLAN datagram went to.
        sent.packet = packet(
            PacketKind::Syn,
            "192.168.200.1:40000",
            "192.168.200.2:80",
            100,
            0,
        );
        assert_eq!(t.on_sighting(&sent), None);
        let h = t.handshakes().next().unwrap();
        assert_eq!(
            h.overlay,
            Some(OverlaySend {
                local: "192.168.200.1".parse().unwrap(),
                remote: "192.168.200.2".parse().unwrap(),
                hop: hop(3),
            })
        );
        // One of a SYN the tracker does not know makes no handshake.
        sent.key.tsval = 99;
        assert_eq!(t.on_sighting(&sent), None);
        assert_eq!(t.handshakes().count(), 1);
    }

    #[test]
    fn answered_is_reported_at_once_with_latency() {
        let mut t = Tracker::new(1_000);
        assert_eq!(t.on_sighting(&syn(0, 5)), None);
        let mut ack = syn(300, 5);
        ack.seen = Seen::SynAck;
        ack.latency_ns = 300;
        let id = t.on_sighting(&ack).unwrap();
        let h = t.get(&id).unwrap();
        assert_eq!(h.outcome(), Outcome::Answered);
        assert_eq!(h.latency_ns(), Some(300));
        assert!(t.due(10_000).is_empty(), "already reported");
    }

    /// A SYN of client port `port` with its own ISN, first seen at `ts`.
    fn syn_from(port: u16, ts: u64) -> Sighting {
        let mut s = syn(ts, 5);
        s.key.isn = u32::from(port);
        s.packet.seq = u32::from(port);
        s.packet.src.set_port(port);
        s
    }

    #[test]
    fn due_scans_on_from_where_it_stopped_and_survives_eviction() {
        let mut t = Tracker::new(1_000);
        // Ring order; the third arrived a little out of order (another CPU's event).
        for (port, ts) in [(1, 0), (2, 10), (3, 5), (4, 2_000)] {
            t.on_sighting(&syn_from(port, ts));
        }
        let ports = |v: Vec<HandshakeId>| v.iter().map(|id| id.0.port()).collect::<Vec<_>>();
        assert_eq!(ports(t.due(1_005)), [1]);
        // The out-of-order one waits for the one before it: one tick late at most.
        assert_eq!(ports(t.due(1_010)), [3, 2], "oldest first");
        assert!(t.due(1_500).is_empty());
        // Evicting what the scan had passed moves its start with the ring.
        for port in 10..9 + MAX_HANDSHAKES as u16 {
            t.on_sighting(&syn_from(port, 2_000));
        }
        assert_eq!(t.len(), MAX_HANDSHAKES);
        assert!(t.due(2_999).is_empty());
        let due = t.due(3_000);
        assert_eq!(due.len(), MAX_HANDSHAKES, "port 4 and every new one");
        assert_eq!(due[0].0.port(), 4);
        assert!(t.flush().is_empty());

        // Evicting past where the scan stopped: it restarts at the oldest kept.
        let mut t = Tracker::new(1_000);
        t.on_sighting(&syn_from(1, 0));
        assert!(t.due(500).is_empty());
        for port in 10..10 + MAX_HANDSHAKES as u16 {
            t.on_sighting(&syn_from(port, 100));
        }
        assert!(t.get(&(syn_from(1, 0).packet.src, 1)).is_none(), "evicted");
        assert_eq!(t.due(1_100).len(), MAX_HANDSHAKES);
    }

    #[test]
    fn retransmissions_are_one_handshake_and_time_out_unanswered() {
        let mut t = Tracker::new(1_000);
        t.on_sighting(&syn(0, 5));
        t.on_sighting(&syn(900, 905));
        assert!(t.due(999).is_empty());
        let due = t.due(1_000);
        assert_eq!(due.len(), 1);
        let h = t.get(&due[0]).unwrap();
        assert_eq!(h.syns, 2);
        assert_eq!(h.keys.len(), 2);
        assert_eq!(h.outcome(), Outcome::Unanswered);
    }

    #[test]
    fn drop_behind_nat_is_charged_to_the_real_client() {
        let mut t = Tracker::new(1_000);
        t.on_sighting(&syn(0, 5));
        let joined = Joined {
            key: HandshakeKey { isn: 100, tsval: 5 },
            client: addr("192.168.1.50:40000"),
            service: addr("10.10.0.1:8080"),
        };
        let id = t
            .on_drop(&drop_of(
                PacketKind::Syn,
                "TCP_RFC7323_TW_PAWS",
                Some(joined),
            ))
            .unwrap();
        assert_eq!(id.0, addr("192.168.1.50:40000"));
        let h = t.get(&id).unwrap();
        assert_eq!(h.outcome(), Outcome::Dropped);
        assert_eq!(h.drops[0].netns_name.as_deref(), Some("task"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn unjoined_syn_drop_makes_its_own_handshake_and_other_drops_none() {
        let mut t = Tracker::new(1_000);
        let id = t
            .on_drop(&drop_of(PacketKind::Syn, "NO_SOCKET", None))
            .unwrap();
        assert_eq!(id.0, addr("10.0.0.2:40000"));
        assert_eq!(
            t.on_drop(&drop_of(PacketKind::Rst, "NOT_SPECIFIED", None)),
            None
        );
    }

    #[test]
    fn an_unjoined_syn_drop_keeps_the_syn_s_key() {
        // The node behind the mesh's SNAT sees client .3's SYN only in its drop: its bundle
        // must still carry (ISN, TSval), or `report n1 n2` cannot join it to the node where the
        // SYN came in (the live `join` reads the drop line's keys).
        let mut t = Tracker::new(1_000);
        let id = t
            .on_drop(&drop_of(PacketKind::Syn, "NOT_SPECIFIED", None))
            .unwrap();
        let h = t.get(&id).unwrap();
        assert_eq!(h.keys, vec![HandshakeKey { isn: 100, tsval: 5 }]);
        // A second drop of the same SYN is the same handshake, one key.
        t.on_drop(&drop_of(PacketKind::Syn, "NOT_SPECIFIED", None));
        assert_eq!(t.get(&id).unwrap().keys.len(), 1);
    }

    #[test]
    fn oldest_handshakes_are_forgotten_beyond_the_cap() {
        let mut t = Tracker::new(1_000);
        let key = |i: u32| HandshakeKey {
            isn: i,
            tsval: i + 1,
        };
        let client = |i: u32| SocketAddr::new([10, 0, (i >> 8) as u8, i as u8].into(), 40000);
        let extra = 10;
        for i in 0..MAX_HANDSHAKES as u32 + extra {
            let mut s = syn(i as u64, 0);
            s.key = key(i);
            s.packet.src = client(i);
            t.on_sighting(&s);
            // Its drop, joined: the same handshake, no new one.
            let joined = Joined {
                key: key(i),
                client: client(i),
                service: addr("10.10.0.1:8080"),
            };
            let id = t
                .on_drop(&drop_of(PacketKind::Syn, "NO_SOCKET", Some(joined)))
                .unwrap();
            assert_eq!(id, (client(i), i));
        }
        assert_eq!(t.len(), MAX_HANDSHAKES);
        assert_eq!(t.evicted, extra as u64);
        let answer = |t: &mut Tracker, i: u32| {
            let mut a = syn(0, 0);
            a.key = key(i);
            a.seen = Seen::Rst;
            t.on_sighting(&a);
            t.get(&(client(i), i)).map(|h| h.answer.is_some())
        };
        // The forgotten ones and their keys are gone; the kept ones still answer.
        assert_eq!(answer(&mut t, extra - 1), None);
        assert_eq!(answer(&mut t, extra), Some(true));
        assert_eq!(
            answer(&mut t, MAX_HANDSHAKES as u32 + extra - 1),
            Some(true)
        );
        assert_eq!(t.get(&(client(extra), extra)).unwrap().drops.len(), 1);
    }

    #[test]
    fn a_replayed_syn_keeps_a_few_notes_and_counts_the_rest() {
        let mut t = Tracker::new(1_000);
        for _ in 0..1_000 {
            t.on_drop(&drop_of(PacketKind::Syn, "NETFILTER_DROP", None));
        }
        assert_eq!(t.len(), 1);
        let h = t.handshakes().next().unwrap();
        assert_eq!(h.drops.len(), MAX_DROP_NOTES);
        assert_eq!(h.overflow.drops, 1_000 - MAX_DROP_NOTES as u64);
        assert_eq!(h.drop_count(), 1_000);
        assert_eq!(h.outcome(), Outcome::Dropped);

        // New TSvals for one handshake: the keys stop at the cap, and a SYN-ACK dropped past
        // the notes' cap still decides the outcome.
        let mut t = Tracker::new(1_000);
        for tsval in 0..20 {
            t.on_sighting(&syn(0, tsval));
        }
        let id = (addr("192.168.1.50:40000"), 100);
        let h = t.get(&id).unwrap();
        assert_eq!((h.keys.len(), h.overflow.keys, h.syns), (MAX_KEYS, 12, 20));
        assert_eq!(t.by_key.len(), MAX_KEYS);
        let joined = Joined {
            key: HandshakeKey { isn: 100, tsval: 0 },
            client: id.0,
            service: addr("10.10.0.1:8080"),
        };
        for _ in 0..MAX_DROP_NOTES {
            t.on_drop(&drop_of(PacketKind::Syn, "NOT_SPECIFIED", Some(joined)));
        }
        let mut a = syn(10, 0);
        a.seen = Seen::SynAck;
        t.on_sighting(&a);
        t.on_drop(&drop_of(PacketKind::SynAck, "NEIGH_FAILED", Some(joined)));
        let h = t.get(&id).unwrap();
        assert_eq!(h.drops.len(), MAX_DROP_NOTES);
        assert_eq!(h.outcome(), Outcome::Dropped);
    }

    #[test]
    fn forgotten_handshakes_are_folded_by_kind_not_lost() {
        let mut t = Tracker::new(1_000);
        let extra = 1_000u32;
        for i in 0..MAX_HANDSHAKES as u32 + extra {
            let mut d = drop_of(PacketKind::Syn, "NETFILTER_DROP", None);
            d.packet.src = SocketAddr::new(std::net::Ipv4Addr::from(0x0a40_0000 + i).into(), 1);
            t.on_drop(&d);
        }
        t.on_drop(&drop_of(PacketKind::Syn, "NETFILTER_DROP", None));
        t.on_drop(&drop_of(PacketKind::Syn, "NETFILTER_DROP", None));
        assert_eq!(t.evicted, u64::from(extra) + 1);
        assert_eq!(t.forgotten.total(), u64::from(extra) + 1);
        let shapes: Vec<(&Handshake, u64)> = t.forgotten.shapes().collect();
        assert_eq!(shapes.len(), 1, "one kind of handshake");
        assert_eq!(shapes[0].1, u64::from(extra) + 1);
        assert!(shapes[0].0.keys.is_empty());
    }

    #[test]
    fn a_forgotten_handshake_that_comes_back_is_a_new_one() {
        let mut t = Tracker::new(1_000);
        t.on_sighting(&syn(0, 5));
        let id = (addr("192.168.1.50:40000"), 100);
        t.on_drop(&drop_of(PacketKind::Syn, "NO_SOCKET", None));
        // Other ISNs than its 100.
        for port in 1_000..1_000 + MAX_HANDSHAKES as u16 {
            t.on_sighting(&syn_from(port, 10));
        }
        assert!(t.get(&id).is_none(), "forgotten");
        // Its stale entries name nothing.
        let mut a = syn(20, 5);
        a.seen = Seen::SynAck;
        assert_eq!(t.on_sighting(&a), None);
        // The same SYN again: a handshake of its own, nothing of the forgotten one's.
        t.on_sighting(&syn(30, 5));
        let h = t.get(&id).unwrap();
        assert_eq!((h.syns, h.first_ns, h.drops.len()), (1, 30, 0));
        assert_eq!((h.answer, h.reported, h.keys.len()), (None, false, 1));
        assert_eq!(t.handshakes().last().map(|h| h.first_ns), Some(30));
        assert_eq!(t.on_sighting(&a), Some(id));
        assert_eq!(t.len(), MAX_HANDSHAKES);
    }

    #[test]
    fn the_tables_keep_their_room_whatever_the_flood() {
        let mut t = Tracker::new(1_000);
        let room = (t.by_id.capacity(), t.by_key.capacity());
        assert!(room.0 >= TABLE_ROOM && room.1 >= TABLE_ROOM);
        for i in 0..10 * MAX_HANDSHAKES as u32 {
            let mut s = syn(u64::from(i), i);
            s.key.isn = i;
            s.packet.src = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 1);
            t.on_sighting(&s);
            let joined = Joined {
                key: s.key,
                client: s.packet.src,
                service: s.packet.dst,
            };
            t.on_drop(&drop_of(PacketKind::Syn, "NO_SOCKET", Some(joined)));
            let mut d = drop_of(PacketKind::Syn, "NO_SOCKET", None);
            d.packet.src = SocketAddr::new(std::net::Ipv4Addr::from(0x0b00_0000 + i).into(), 1);
            d.packet.seq = i;
            t.on_drop(&d);
        }
        // Never grown (sweeping leaves tombstones, which the table clears in place: its
        // room for entries may read less than before, never more).
        assert!(t.by_id.capacity() <= room.0 && t.by_key.capacity() <= room.1);
        assert_eq!(t.len(), MAX_HANDSHAKES);
        assert_eq!(
            t.evicted,
            20 * MAX_HANDSHAKES as u64 - MAX_HANDSHAKES as u64
        );
        assert_eq!(t.forgotten.total(), t.evicted);
        // Every kept handshake is found by its id and its key.
        let ids: Vec<_> = t
            .handshakes()
            .map(|h| ((h.client, h.isn), h.keys[0]))
            .collect();
        for (id, key) in ids {
            assert_eq!(t.get(&id).map(|h| (h.client, h.isn)), Some(id));
            let seq = t.by_key[&KeyBits(key)];
            assert_eq!(t.live(seq).map(|h| (h.client, h.isn)), Some(id));
        }
    }

    #[test]
    fn handshakes_of_many_keys_grow_the_key_table_as_before_not_its_sweeps() {
        // Every handshake retransmitted to its cap of keys: the live keys outnumber the
        // table's room, which grows to hold them (as it always did), each sweep leaving room
        // for many inserts.
        let mut t = Tracker::new(1_000);
        let start = std::time::Instant::now();
        for i in 0..2 * MAX_HANDSHAKES as u32 {
            for tsval in 0..MAX_KEYS as u32 {
                let mut s = syn(u64::from(i), tsval);
                s.key.isn = i;
                s.packet.src = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 1);
                t.on_sighting(&s);
            }
        }
        assert!(t.by_key.len() >= MAX_HANDSHAKES * MAX_KEYS);
        assert!(t.by_key.capacity() <= 4 * MAX_HANDSHAKES * MAX_KEYS);
        let last = t.handshakes().last().unwrap().clone();
        assert_eq!(last.keys.len(), MAX_KEYS);
        for k in last.keys {
            let seq = t.by_key[&KeyBits(k)];
            assert_eq!(t.live(seq).map(|h| h.isn), Some(last.isn));
        }
        // A pass per insert would take minutes here.
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn packed_ids_tell_every_id_apart() {
        let ids = [
            (addr("1.2.3.4:80"), 7),
            (addr("1.2.3.4:81"), 7),
            (addr("1.2.3.4:80"), 8),
            (addr("1.2.3.5:80"), 7),
            (addr("[::ffff:1.2.3.4]:80"), 7),
            (addr("[fd00::1]:80"), 7),
            (addr("[fd00::1:0:0:0:1]:80"), 7),
        ];
        let keys: std::collections::HashSet<IdKey> = ids.iter().map(|&id| IdKey::new(id)).collect();
        assert_eq!(keys.len(), ids.len());
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut t = Tracker::new(1_000);
        t.first_seq = Seq::MAX - 2;
        for isn in 0..6 {
            let mut s = syn(0, isn);
            s.key.isn = isn;
            t.on_sighting(&s);
        }
        for isn in 0..6 {
            let mut a = syn(10, isn);
            a.key.isn = isn;
            a.seen = Seen::SynAck;
            assert_eq!(t.on_sighting(&a), Some((addr("192.168.1.50:40000"), isn)));
        }
        assert_eq!(t.get(&(addr("192.168.1.50:40000"), 6)).map(|h| h.isn), None);
    }

    #[test]
    fn reset_and_dropped_synack() {
        let mut t = Tracker::new(1_000);
        t.on_sighting(&syn(0, 5));
        let mut rst = syn(10, 5);
        rst.seen = Seen::Rst;
        assert_eq!(
            t.on_sighting(&rst),
            None,
            "a reset waits for its drop evidence"
        );
        let id = t.due(2_000)[0];
        assert_eq!(t.get(&id).unwrap().outcome(), Outcome::Reset);

        let mut t = Tracker::new(1_000);
        t.on_sighting(&syn(0, 5));
        let joined = Joined {
            key: HandshakeKey { isn: 100, tsval: 5 },
            client: addr("192.168.1.50:40000"),
            service: addr("10.10.0.1:8080"),
        };
        let id = t
            .on_drop(&drop_of(PacketKind::SynAck, "NEIGH_FAILED", Some(joined)))
            .unwrap();
        assert_eq!(t.get(&id).unwrap().outcome(), Outcome::Dropped);
    }
}
