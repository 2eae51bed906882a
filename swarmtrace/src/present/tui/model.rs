//! What the live view knows: per (service, client IP) pair statistics, the verdicts so far
//! and the last drops, fed by the engine's typed records; no terminal needed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use crate::clock::rfc3339_micros;
use crate::trace::drops::{netns_label, Drop};
use crate::trace::event::PacketKind;
use crate::trace::observe::{HandshakeRecord, Health};
use crate::trace::tracker::Outcome;
use crate::verdict::Cause;

/// (service, client) pairs kept; later pairs are counted in one "(other pairs)" row.
pub const MAX_ROWS: usize = 10_000;
/// Recent drops kept for the drops panel.
pub const MAX_DROPS: usize = 200;
/// Latencies kept per pair for its median (the maximum is over all of them).
pub const LATENCY_SAMPLES: usize = 64;
/// Handshakes remembered to join drops to them (by client and ISN).
const MAX_JOIN: usize = 20_000;
/// Distinct clients kept per verdict.
const MAX_VERDICT_CLIENTS: usize = 1_000;
/// Lines of stderr kept while the view is open.
const MAX_MESSAGES: usize = 200;
const OTHER_SERVICE: &str = "(other pairs)";

/// The cause a failed handshake points at so far. `Silent`: neither answer nor drop; the run
/// names it at exit from the namespaces' counters and subnets, which the view does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SoFar {
    Cause(Cause),
    Silent,
}

impl SoFar {
    pub fn label(self) -> &'static str {
        match self {
            SoFar::Cause(c) => c.id(),
            SoFar::Silent => "unanswered*",
        }
    }
}

/// One (service, client IP) pair.
#[derive(Debug, Clone, Default)]
pub struct PairStats {
    pub service: String,
    pub client: String,
    pub answered: u64,
    pub dropped: u64,
    pub reset: u64,
    pub unanswered: u64,
    latencies: VecDeque<u64>,
    pub latency_max: Option<u64>,
    pub reason: Option<String>,
    pub netns: Option<String>,
    /// When it last changed (a counter of updates), to show the freshest first on ties.
    pub seq: u64,
}

impl PairStats {
    pub fn failed(&self) -> u64 {
        self.dropped + self.reset + self.unanswered
    }

    /// Median of the last [`LATENCY_SAMPLES`] answered handshakes, microseconds.
    pub fn latency_p50(&self) -> Option<u64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v: Vec<u64> = self.latencies.iter().copied().collect();
        v.sort_unstable();
        Some(v[(v.len() - 1) / 2])
    }
}

/// The clients and count of one verdict so far.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub count: u64,
    /// Client IP -> handshakes.
    pub clients: BTreeMap<String, u64>,
    /// Clients not kept past [`MAX_VERDICT_CLIENTS`].
    pub more_clients: bool,
}

/// A handshake, to join drops to it: (client, ISN).
type JoinKey = (SocketAddr, u32);

/// A map that forgets its oldest entries past `cap`.
#[derive(Debug)]
struct Bounded<V> {
    /// Value and the generation of its entry in `order`.
    map: HashMap<JoinKey, (V, u64)>,
    /// Insertion order; entries whose generation is not the map's are stale.
    order: VecDeque<(JoinKey, u64)>,
    cap: usize,
    generation: u64,
}

impl<V> Bounded<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
            generation: 0,
        }
    }

    fn insert(&mut self, k: JoinKey, v: V) {
        if let Some(old) = self.map.get_mut(&k) {
            old.0 = v;
            return;
        }
        self.generation += 1;
        self.order.push_back((k, self.generation));
        self.map.insert(k, (v, self.generation));
        while self.map.len() > self.cap {
            let Some((old, g)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.1 == g) {
                self.map.remove(&old);
            }
        }
        // Removed entries leave stale ones behind: drop them now and then.
        if self.order.len() > 2 * self.cap.max(1) {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|e| e.1 == *g));
        }
    }

    fn get(&self, k: &JoinKey) -> Option<&V> {
        self.map.get(k).map(|e| &e.0)
    }

    fn remove(&mut self, k: &JoinKey) -> Option<V> {
        self.map.remove(k).map(|e| e.0)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A recent drop, ready to print.
#[derive(Debug, Clone)]
pub struct DropLine {
    pub time: String,
    pub packet: String,
    pub reason: String,
    pub netns: String,
    pub flow: String,
}

/// Everything the view shows, fed by the observer.
#[derive(Debug)]
pub struct Model {
    rows: HashMap<(String, String), PairStats>,
    pub(super) drops: VecDeque<DropLine>,
    /// Drop objects received.
    pub drops_seen: u64,
    /// Handshake objects received.
    pub handshakes: u64,
    verdicts: BTreeMap<SoFar, Tally>,
    /// First nameable cause of the drops of handshakes not yet reported, by (client, ISN).
    pending: Bounded<Cause>,
    /// What each reported failed handshake was counted as, by (client, ISN): a late drop
    /// (an ARP failure takes seconds) moves a silent one to its cause.
    decided: Bounded<(SoFar, String)>,
    pub health: Option<Health>,
    pub(super) messages: VecDeque<String>,
    /// stderr lines not kept past [`MAX_MESSAGES`].
    pub messages_lost: u64,
    seq: u64,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            drops: VecDeque::new(),
            drops_seen: 0,
            handshakes: 0,
            verdicts: BTreeMap::new(),
            pending: Bounded::new(MAX_JOIN),
            decided: Bounded::new(MAX_JOIN),
            health: None,
            messages: VecDeque::new(),
            messages_lost: 0,
            seq: 0,
        }
    }
}

impl Model {
    fn pair(&mut self, service: &str, client_ip: &str) -> &mut PairStats {
        self.seq += 1;
        let seq = self.seq;
        let mut key = (service.to_owned(), client_ip.to_owned());
        if !self.rows.contains_key(&key) && self.rows.len() >= MAX_ROWS {
            key = (OTHER_SERVICE.to_owned(), "*".to_owned());
        }
        let row = self.rows.entry(key).or_insert_with_key(|k| PairStats {
            service: k.0.clone(),
            client: k.1.clone(),
            ..PairStats::default()
        });
        row.seq = seq;
        row
    }

    fn count(&mut self, what: SoFar, client_ip: &str) {
        let t = self.verdicts.entry(what).or_default();
        t.count += 1;
        if let Some(n) = t.clients.get_mut(client_ip) {
            *n += 1;
        } else if t.clients.len() < MAX_VERDICT_CLIENTS {
            t.clients.insert(client_ip.to_owned(), 1);
        } else {
            t.more_clients = true;
        }
    }

    fn uncount(&mut self, what: SoFar, client_ip: &str) {
        if let Some(t) = self.verdicts.get_mut(&what) {
            t.count = t.count.saturating_sub(1);
            if let Some(n) = t.clients.get_mut(client_ip) {
                *n -= 1;
                if *n == 0 {
                    t.clients.remove(client_ip);
                }
            }
            if t.count == 0 {
                self.verdicts.remove(&what);
            }
        }
    }

    pub fn on_drop(&mut self, d: &Drop) {
        self.drops_seen += 1;
        let reason = &*d.reason;
        let netns = netns_label(d.netns_name.as_deref(), d.netns);
        let (flow_from, flow_to) = match d.joined {
            Some(j) => (j.client, j.service),
            None => (d.packet.src, d.packet.dst),
        };
        let ts = rfc3339_micros(d.unix_ns);
        self.drops.push_front(DropLine {
            time: ts.get(11..19).unwrap_or(&ts).to_owned(),
            packet: d.packet.kind.as_str().to_owned(),
            reason: reason.to_owned(),
            netns: netns.clone(),
            flow: format!("{flow_from} -> {flow_to}"),
        });
        self.drops.truncate(MAX_DROPS);
        let Some(j) = d.joined else {
            return;
        };
        let row = self.pair(&j.service.to_string(), &j.client.ip().to_string());
        row.reason = Some(reason.to_owned());
        row.netns = Some(netns);
        let Some(cause) = crate::verdict::reason_cause(reason, d.packet.kind, &d.location) else {
            return;
        };
        let key = (j.client, d.packet.client_isn());
        match self.decided.get(&key).cloned() {
            Some((was @ (SoFar::Silent | SoFar::Cause(Cause::Unknown)), ip)) => {
                self.uncount(was, &ip);
                self.count(SoFar::Cause(cause), &ip);
                self.decided.insert(key, (SoFar::Cause(cause), ip));
            }
            Some(_) => {}
            None => {
                if self.pending.get(&key).is_none() {
                    self.pending.insert(key, cause);
                }
            }
        }
    }

    pub fn on_handshake(&mut self, h: &HandshakeRecord<'_>) {
        self.handshakes += 1;
        let ip = h.client.ip().to_string();
        let row = self.pair(&h.service.to_string(), &ip);
        match h.verdict {
            Outcome::Answered => row.answered += 1,
            Outcome::Dropped => row.dropped += 1,
            Outcome::Reset => row.reset += 1,
            Outcome::Unanswered => row.unanswered += 1,
        }
        if let Some(l) = h.latency_us() {
            if row.latencies.len() == LATENCY_SAMPLES {
                row.latencies.pop_front();
            }
            row.latencies.push_back(l);
            row.latency_max = Some(row.latency_max.map_or(l, |m| m.max(l)));
        }
        if let Some(r) = h.reason {
            row.reason = Some(r.to_owned());
            row.netns = h.netns_name.map(str::to_owned);
        }
        let key = (h.client, h.isn);
        let joined = self.pending.remove(&key);
        let what = match (h.verdict, joined, h.reason) {
            (Outcome::Answered, ..) => return,
            (_, Some(c), _) => SoFar::Cause(c),
            // The reason of its first drop, taken as the SYN's.
            (_, None, Some(r)) => SoFar::Cause(
                crate::verdict::reason_cause(r, PacketKind::Syn, "").unwrap_or(Cause::Unknown),
            ),
            (Outcome::Reset, None, None) => SoFar::Cause(Cause::NoListener),
            (Outcome::Dropped, None, None) => SoFar::Cause(Cause::Unknown),
            (Outcome::Unanswered, None, None) => SoFar::Silent,
        };
        self.count(what, &ip);
        self.decided.insert(key, (what, ip));
    }

    pub fn on_health(&mut self, h: &Health) {
        self.health = Some(h.clone());
    }

    /// A line the process wrote on stderr.
    pub fn on_message(&mut self, line: String) {
        if self.messages.len() == MAX_MESSAGES {
            self.messages.pop_front();
            self.messages_lost += 1;
        }
        self.messages.push_back(line);
    }

    pub fn pairs(&self) -> usize {
        self.rows.len()
    }

    pub fn row(&self, service: &str, client_ip: &str) -> Option<&PairStats> {
        self.rows.get(&(service.to_owned(), client_ip.to_owned()))
    }

    /// The verdicts so far, most handshakes first.
    pub fn verdicts(&self) -> Vec<(SoFar, &Tally)> {
        let mut v: Vec<(SoFar, &Tally)> = self.verdicts.iter().map(|(k, t)| (*k, t)).collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        v
    }

    pub fn recent_drops(&self) -> impl Iterator<Item = &DropLine> {
        self.drops.iter()
    }

    /// The rows that match `filter` (case-insensitive substring of service, client or last
    /// reason), in the order asked.
    pub fn sorted(&self, sort: SortKey, reverse: bool, filter: &str) -> Vec<&PairStats> {
        let needle = filter.to_lowercase();
        let mut rows: Vec<&PairStats> = self
            .rows
            .values()
            .filter(|r| {
                needle.is_empty()
                    || r.service.to_lowercase().contains(&needle)
                    || r.client.to_lowercase().contains(&needle)
                    || r.reason
                        .as_deref()
                        .is_some_and(|x| x.to_lowercase().contains(&needle))
            })
            .collect();
        rows.sort_by(|a, b| {
            let primary = sort.compare(a, b);
            let primary = if reverse { primary.reverse() } else { primary };
            primary
                .then_with(|| b.seq.cmp(&a.seq))
                .then_with(|| a.service.cmp(&b.service))
                .then_with(|| a.client.cmp(&b.client))
        });
        rows
    }
}

/// The column the table is sorted by; `s` cycles through them in the order of the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Service,
    Client,
    Failed,
    Answered,
    Dropped,
    Reset,
    Unanswered,
    P50,
    Max,
    Reason,
    Netns,
}

impl SortKey {
    pub const ALL: [SortKey; 11] = [
        SortKey::Service,
        SortKey::Client,
        SortKey::Failed,
        SortKey::Answered,
        SortKey::Dropped,
        SortKey::Reset,
        SortKey::Unanswered,
        SortKey::P50,
        SortKey::Max,
        SortKey::Reason,
        SortKey::Netns,
    ];

    pub fn title(self) -> &'static str {
        match self {
            SortKey::Service => "SERVICE",
            SortKey::Client => "CLIENT",
            SortKey::Failed => "FAILED",
            SortKey::Answered => "ANSWERED",
            SortKey::Dropped => "DROPPED",
            SortKey::Reset => "RESET",
            SortKey::Unanswered => "UNANSWERED",
            SortKey::P50 => "P50",
            SortKey::Max => "MAX",
            SortKey::Reason => "LAST REASON",
            SortKey::Netns => "NETNS",
        }
    }

    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// Numbers sort largest first, text alphabetically; `r` reverses either.
    fn compare(self, a: &PairStats, b: &PairStats) -> std::cmp::Ordering {
        let text = |x: &Option<String>, y: &Option<String>| {
            // Rows without one go last.
            match (x, y) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        };
        match self {
            SortKey::Service => a.service.cmp(&b.service),
            SortKey::Client => a.client.cmp(&b.client),
            SortKey::Failed => b.failed().cmp(&a.failed()),
            SortKey::Answered => b.answered.cmp(&a.answered),
            SortKey::Dropped => b.dropped.cmp(&a.dropped),
            SortKey::Reset => b.reset.cmp(&a.reset),
            SortKey::Unanswered => b.unanswered.cmp(&a.unanswered),
            SortKey::P50 => b.latency_p50().cmp(&a.latency_p50()),
            SortKey::Max => b.latency_max.cmp(&a.latency_max),
            SortKey::Reason => text(&a.reason, &b.reason),
            SortKey::Netns => text(&a.netns, &b.netns),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    use crate::trace::event::{Joined, Packet};

    /// A handshake record as the engine makes it (2026-11-27T08:01:43.123456Z).
    pub fn hs(
        verdict: &str,
        client: &str,
        service: &str,
        isn: u32,
        reason: Option<&'static str>,
    ) -> HandshakeRecord<'static> {
        let verdict = match verdict {
            "answered" => Outcome::Answered,
            "dropped" => Outcome::Dropped,
            "reset" => Outcome::Reset,
            _ => Outcome::Unanswered,
        };
        HandshakeRecord {
            unix_ns: 1_795_766_503_123_456_000,
            verdict,
            client: client.parse().unwrap(),
            service: service.parse().unwrap(),
            latency_ns: (verdict == Outcome::Answered).then_some(u64::from(isn) * 100_000),
            reason,
            netns_name: reason.map(|_| "ingress_sbox"),
            isn,
            syns: 1,
            first_hop: None,
            last_hop: None,
            answer_hop: None,
            tsvals: &[],
            overlay: None,
            first_drop: None,
        }
    }

    /// A named drop (2026-11-27T08:01:44.000001Z), joined to `client`'s handshake if any.
    pub fn drop_(
        client: Option<&str>,
        isn: u32,
        packet: PacketKind,
        reason: &str,
        location: &str,
    ) -> Drop {
        Drop {
            ts_ns: 1,
            unix_ns: 1_795_766_504_000_001_000,
            packet: Packet {
                kind: packet,
                src: "10.0.0.2:40000".parse().unwrap(),
                dst: "10.0.0.1:80".parse().unwrap(),
                // The client's ISN, whichever way the packet goes.
                seq: if packet == PacketKind::SynAck { 7 } else { isn },
                ack: if packet == PacketKind::SynAck {
                    isn.wrapping_add(1)
                } else {
                    0
                },
                tsval: Some(1),
                tsecr: None,
                flags: 2,
            },
            reason: reason.into(),
            location: location.into(),
            netns: 4026532000,
            netns_name: Some("ingress_sbox".into()),
            ifname: Some("eth0".into()),
            joined: client.map(|c| Joined {
                key: Default::default(),
                client: c.parse().unwrap(),
                service: "192.0.2.1:8080".parse().unwrap(),
            }),
            vxlan_from: None,
        }
    }

    #[test]
    fn handshakes_add_up_per_service_and_client_ip() {
        let mut m = Model::default();
        for (i, port) in [1000, 1001, 1002].iter().enumerate() {
            m.on_handshake(&hs(
                "answered",
                &format!("198.51.100.7:{port}"),
                "192.0.2.1:8080",
                i as u32 + 1,
                None,
            ));
        }
        m.on_handshake(&hs(
            "reset",
            "198.51.100.7:1003",
            "192.0.2.1:8080",
            9,
            Some("NO_SOCKET"),
        ));
        m.on_handshake(&hs("unanswered", "[fd00::7]:5", "[fd00::1]:80", 10, None));
        let r = m.row("192.0.2.1:8080", "198.51.100.7").unwrap();
        assert_eq!((r.answered, r.reset, r.failed()), (3, 1, 1));
        assert_eq!(r.latency_p50(), Some(200));
        assert_eq!(r.latency_max, Some(300));
        assert_eq!(r.reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(r.netns.as_deref(), Some("ingress_sbox"));
        assert_eq!(m.row("[fd00::1]:80", "fd00::7").unwrap().unanswered, 1);
        assert_eq!(m.pairs(), 2);
        let v = m.verdicts();
        assert_eq!(v.len(), 2);
        assert!(v.iter().any(|(k, t)| *k == SoFar::Cause(Cause::NoListener)
            && t.count == 1
            && t.clients.contains_key("198.51.100.7")));
        assert!(v.iter().any(|(k, _)| *k == SoFar::Silent));
    }

    #[test]
    fn drops_join_their_handshake_and_late_drops_move_silent_ones() {
        let mut m = Model::default();
        // The drop names the cause (TIME_WAIT path) before the handshake is reported.
        m.on_drop(&drop_(
            Some("198.51.100.7:1000"),
            5,
            PacketKind::Syn,
            "NOT_SPECIFIED",
            "tcp_timewait_state_process+0x1a",
        ));
        m.on_handshake(&hs(
            "dropped",
            "198.51.100.7:1000",
            "192.0.2.1:8080",
            5,
            Some("NOT_SPECIFIED"),
        ));
        // A silent one, then its SYN-ACK is dropped for want of a neighbour.
        m.on_handshake(&hs(
            "unanswered",
            "198.51.100.8:1000",
            "192.0.2.1:8080",
            6,
            None,
        ));
        assert!(m.verdicts().iter().any(|(k, _)| *k == SoFar::Silent));
        m.on_drop(&drop_(
            Some("198.51.100.8:1000"),
            6,
            PacketKind::SynAck,
            "NEIGH_FAILED",
            "neigh_invalidate+0x10",
        ));
        let v = m.verdicts();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v
            .iter()
            .any(|(k, t)| *k == SoFar::Cause(Cause::PawsTimestamps) && t.count == 1));
        assert!(v
            .iter()
            .any(|(k, t)| *k == SoFar::Cause(Cause::ReplyMisrouted)
                && t.clients.keys().collect::<Vec<_>>() == ["198.51.100.8"]));
        // A drop without a client only goes to the drops panel.
        m.on_drop(&drop_(
            None,
            7,
            PacketKind::Syn,
            "NETFILTER_DROP",
            "nft_do_chain+0x1",
        ));
        assert_eq!(m.drops_seen, 3);
        let d = m.recent_drops().next().unwrap();
        assert_eq!(d.flow, "10.0.0.2:40000 -> 10.0.0.1:80");
        assert_eq!(d.time, "08:01:44");
        assert_eq!(m.verdicts().len(), 2);
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = Model::default();
        for i in 0..(MAX_ROWS as u32 + 50) {
            let c = format!("10.{}.{}.{}:1", i >> 16, (i >> 8) & 255, i & 255);
            m.on_handshake(&hs("answered", &c, "192.0.2.1:8080", i, None));
            m.on_drop(&drop_(
                Some(&c),
                i,
                PacketKind::Ack,
                "NO_SOCKET",
                "tcp_v4_rcv+0x1",
            ));
        }
        assert_eq!(m.pairs(), MAX_ROWS + 1);
        assert_eq!(m.row(OTHER_SERVICE, "*").unwrap().answered, 50);
        assert_eq!(m.recent_drops().count(), MAX_DROPS);
        assert!(m.pending.len() <= MAX_JOIN && m.decided.len() <= MAX_JOIN);
        // A pair's latencies are a window; the maximum is over all.
        for i in 0..(LATENCY_SAMPLES as u32 * 3) {
            m.on_handshake(&hs("answered", "10.0.0.1:1", "192.0.2.1:8080", i + 1, None));
        }
        let r = m.row("192.0.2.1:8080", "10.0.0.1").unwrap();
        assert_eq!(r.latencies.len(), LATENCY_SAMPLES);
        assert_eq!(r.latency_max, Some(LATENCY_SAMPLES as u64 * 3 * 100));
        // Joins that come and go leave no trail.
        let mut b = Bounded::new(4);
        let client: SocketAddr = "10.0.0.9:1".parse().unwrap();
        for i in 0..1000 {
            b.insert((client, i), ());
            b.remove(&(client, i));
        }
        assert!(b.order.len() <= 9 && b.len() == 0);
        for i in 0..10 {
            b.insert((client, i), ());
        }
        assert_eq!(b.len(), 4);
        assert!(b.get(&(client, 9)).is_some() && b.get(&(client, 5)).is_none());
        for _ in 0..(MAX_MESSAGES + 3) {
            m.on_message("x".into());
        }
        assert_eq!(m.messages.len(), MAX_MESSAGES);
        assert_eq!(m.messages_lost, 3);
    }
}
