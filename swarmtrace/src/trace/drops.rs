//! Drops named for humans (reason, code location, namespace), rendered as text or NDJSON,
//! and the end-of-run summary.

use crate::name::Name;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::clock::{rfc3339_micros, WallClock};
use crate::kernel::kallsyms::Kallsyms;
use crate::kernel::netns::NetnsNames;
use crate::kernel::DropReasons;
use crate::trace::event::{Joined, Packet, RawDrop};
use crate::trace::summary::{AddrCount, LocationCount, RunSummary};
use crate::trace::topk::{Fast, TopK};
use crate::trace::tracer::Totals;

/// A dropped handshake packet with every name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    /// Monotonic kernel time, for ordering against handshake sightings.
    pub ts_ns: u64,
    pub unix_ns: i128,
    pub packet: Packet,
    // Names are interned (`Name`): a flood repeats the same few, and each drop is also kept
    // in its handshake and counted in the summary.
    pub reason: Name,
    pub location: Name,
    pub netns: u32,
    pub netns_name: Option<Name>,
    pub ifname: Option<Name>,
    /// The handshake it belongs to, with the real client, when it was seen first on a
    /// watched interface.
    pub joined: Option<Joined>,
    /// Dropped inside a VXLAN datagram (an overlay's) that this address sent.
    pub vxlan_from: Option<std::net::IpAddr>,
}

/// A namespace's name, or `netns:INODE` when it has none: how a drop's place is written.
pub fn netns_label(name: Option<&str>, inode: u32) -> String {
    name.map_or_else(|| format!("netns:{inode}"), str::to_owned)
}

/// A drop's JSON object (docs/json.md); the fields in the documented order.
#[derive(Debug, serde::Serialize)]
pub struct DropRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts: String,
    packet: &'static str,
    reason: &'a str,
    location: &'a str,
    netns: u32,
    netns_name: Option<&'a str>,
    ifname: Option<&'a str>,
    src: SocketAddr,
    dst: SocketAddr,
    isn: u32,
    tsval: Option<u32>,
    client: Option<SocketAddr>,
    service: Option<SocketAddr>,
    /// Dropped inside a VXLAN datagram that this node sent; only then written.
    #[serde(skip_serializing_if = "Option::is_none")]
    vxlan_from: Option<std::net::IpAddr>,
}

/// Turns kernel numbers into names.
pub struct Namer {
    pub reasons: DropReasons,
    pub kallsyms: Kallsyms,
    pub netns: NetnsNames,
    pub clock: WallClock,
}

impl Namer {
    pub fn name(&mut self, raw: RawDrop) -> Drop {
        const TCP_DROP: Name = Name::from_static("tcp_drop");
        Drop {
            ts_ns: raw.ts_ns,
            unix_ns: self.clock.to_unix_ns(raw.ts_ns),
            joined: raw.joined,
            reason: self.reasons.shared_name(raw.reason),
            location: if raw.reason == swarmtrace_common::REASON_TCP_DROP {
                TCP_DROP.clone()
            } else {
                self.kallsyms.location(raw.location)
            },
            netns_name: self.netns.shared_name(raw.netns),
            netns: raw.netns,
            ifname: raw.ifname,
            packet: raw.packet,
            vxlan_from: raw.vxlan_from,
        }
    }
}

impl Drop {
    /// The NDJSON object of docs/json.md, ready to serialize (an NDJSON line is written from
    /// it directly, with no intermediate `Value`). Field names are a contract: add, never
    /// rename.
    pub fn record(&self) -> DropRecord<'_> {
        DropRecord {
            kind: "drop",
            ts: rfc3339_micros(self.unix_ns),
            packet: self.packet.kind.as_str(),
            reason: &self.reason,
            location: &self.location,
            netns: self.netns,
            netns_name: self.netns_name.as_deref(),
            ifname: self.ifname.as_deref(),
            src: self.packet.src,
            dst: self.packet.dst,
            isn: self.packet.client_isn(),
            tsval: self.packet.tsval,
            client: self.joined.map(|j| j.client),
            service: self.joined.map(|j| j.service),
            vxlan_from: self.vxlan_from,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.record()).expect("a drop record always serializes")
    }

    /// One readable line.
    pub fn to_line(&self) -> String {
        let ts = rfc3339_micros(self.unix_ns);
        let time = ts.get(11..26).unwrap_or(&ts);
        let ns = netns_label(self.netns_name.as_deref(), self.netns);
        let dev = self.ifname.as_deref().unwrap_or("-");
        let who = match &self.joined {
            Some(j) => format!("  (client {} -> service {})", j.client, j.service),
            None => String::new(),
        };
        format!(
            "{time} DROP {:<7} {} -> {}  {} at {}  [{ns} dev {dev}]{who}",
            self.packet.kind.as_str(),
            self.packet.src,
            self.packet.dst,
            self.reason,
            self.location,
        )
    }
}

/// Addresses kept by the summary's heavy-hitter tables: a source (or destination) with more
/// than 1/`TOP_ADDRESSES` of the drops is always among them, and the five shown are exact
/// unless the run saw more distinct addresses than this.
pub const TOP_ADDRESSES: usize = 512;

/// Addresses shown in the summary.
const SHOWN: usize = 5;

/// What the run saw, for the summary at exit.
#[derive(Debug)]
pub struct Summary {
    pub events: u64,
    pub decode_errors: u64,
    // Counted by what each drop carries, without making text per drop: the text is made
    // at the end, for the few keys there are. Addresses are the sender's to choose: bounded.
    sources: TopK<IpAddr>,
    destinations: TopK<SocketAddr>,
    /// Reason -> full location (`function+0xoff`) -> drops; folded by function at the end.
    /// Both are the kernel's (its reasons, its code addresses): no sender grows them.
    by_location: HashMap<Name, HashMap<Name, u64, Fast>, Fast>,
    /// The (reason, location) of the last drops and how many of them are not yet in
    /// `by_location`: a flood's drops are of one pair, counted here by comparing two
    /// addresses where `by_location` hashes and compares two texts.
    recent: Option<(Name, Name, u64)>,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            events: 0,
            decode_errors: 0,
            sources: TopK::new(TOP_ADDRESSES),
            destinations: TopK::new(TOP_ADDRESSES),
            by_location: HashMap::default(),
            recent: None,
        }
    }
}

impl Summary {
    pub fn add(&mut self, d: &Drop) {
        self.events += 1;
        self.sources.add(d.packet.src.ip());
        self.destinations.add(d.packet.dst);
        match &mut self.recent {
            Some((reason, location, n)) if *reason == d.reason && *location == d.location => {
                *n += 1;
                return;
            }
            _ => {}
        }
        if let Some((reason, location, n)) = self.recent.take() {
            self.count_location(reason, location, n);
        }
        self.recent = Some((d.reason.clone(), d.location.clone(), 1));
    }

    fn count_location(&mut self, reason: Name, location: Name, n: u64) {
        let locations = match self.by_location.get_mut(&*reason) {
            Some(l) => l,
            None => self.by_location.entry(reason).or_default(),
        };
        match locations.get_mut(&*location) {
            Some(c) => *c += n,
            None => {
                locations.insert(location, n);
            }
        }
    }

    /// The `n` largest counts, ties in the order of their keys.
    fn top<K>(counts: impl Iterator<Item = (K, u64)>, n: usize) -> Vec<(String, u64)>
    where
        K: ToString + Ord,
    {
        let mut v: Vec<(K, u64)> = counts.collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.into_iter()
            .take(n)
            .map(|(k, c)| (k.to_string(), c))
            .collect()
    }

    /// Drop events received, by reason (what the kernel's exact counts are compared with).
    pub fn events_by_reason(&self) -> BTreeMap<String, u64> {
        let mut by_reason: BTreeMap<String, u64> = self
            .by_location
            .iter()
            .map(|(r, l)| (r.to_string(), l.values().sum()))
            .collect();
        if let Some((reason, _, n)) = &self.recent {
            *by_reason.entry(reason.to_string()).or_default() += n;
        }
        by_reason
    }

    fn top_locations(&self, n: usize) -> Vec<LocationCount> {
        let mut by_function: HashMap<(&str, &str), u64> = HashMap::new();
        for (reason, locations) in &self.by_location {
            for (location, count) in locations {
                let function = location.split('+').next().unwrap_or("");
                *by_function.entry((reason, function)).or_default() += count;
            }
        }
        if let Some((reason, location, n)) = &self.recent {
            let function = location.split('+').next().unwrap_or("");
            *by_function.entry((reason, function)).or_default() += n;
        }
        let mut locs: Vec<_> = by_function.into_iter().collect();
        locs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        locs.into_iter()
            .take(n)
            .map(|((reason, function), count)| LocationCount {
                reason: reason.to_owned(),
                function: function.to_owned(),
                count,
            })
            .collect()
    }

    /// The summary of the drops: the handshakes, verdicts, watched interfaces and what the
    /// kernel lacks are the caller's to fill in.
    pub fn finish(&self, totals: &Totals, reasons: &DropReasons, duration_s: f64) -> RunSummary {
        let by_reason: BTreeMap<String, u64> = totals
            .drops_by_reason
            .iter()
            .map(|(r, n)| {
                let name = if *r == swarmtrace_common::MAX_REASONS - 1 {
                    "TCP_DROP_OR_OTHER".to_owned()
                } else {
                    reasons.name(*r)
                };
                (name, *n)
            })
            .collect();
        let top = |v: Vec<(String, u64)>| -> Vec<AddrCount> {
            v.into_iter()
                .map(|(addr, count)| AddrCount { addr, count })
                .collect()
        };
        // What the listed ones do not account for (their counts may overestimate theirs by
        // the error Space-Saving bounds, so this may underestimate the others').
        let others = |shown: &[AddrCount], total: u64| {
            total.saturating_sub(shown.iter().map(|a| a.count).sum())
        };
        let kept =
            |t: &TopK<SocketAddr>| t.top(TOP_ADDRESSES).into_iter().map(|c| (c.key, c.count));
        let top_sources = top(Self::top(
            self.sources
                .top(SHOWN)
                .into_iter()
                .map(|c| (c.key, c.count)),
            SHOWN,
        ));
        // Ordered by their text, as they always were.
        let top_destinations = top(Self::top(
            kept(&self.destinations).map(|(a, n)| (a.to_string(), n)),
            SHOWN,
        ));
        RunSummary {
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            drops: totals.drops,
            drops_by_reason: by_reason,
            lost_events: totals.lost_events,
            unreadable_packets: totals.unreadable,
            events: self.events,
            decode_errors: self.decode_errors,
            other_sources: others(&top_sources, self.sources.total()),
            other_destinations: others(&top_destinations, self.destinations.total()),
            top_sources,
            top_destinations,
            top_locations: self.top_locations(SHOWN),
            events_by_reason: self.events_by_reason(),
            ..RunSummary::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::event::{Event, PacketKind};
    use swarmtrace_common::class;

    fn named() -> Drop {
        let Ok(Event::Drop(raw)) =
            Event::try_from(crate::trace::event::tests::drop_bytes(4, class::SYN).as_slice())
        else {
            panic!("not a drop");
        };
        let mut names = BTreeMap::new();
        names.insert(3, "NO_SOCKET".to_owned());
        let mut namer = Namer {
            reasons: DropReasons::from_names(names),
            kallsyms: Kallsyms::parse("ffffffff820339c0 T tcp_v4_rcv\n"),
            netns: NetnsNames::with_roots(std::path::Path::new("/nonexistent"), vec![]),
            clock: WallClock::sample(),
        };
        namer.name(raw)
    }

    #[test]
    fn json_contract() {
        let d = named();
        let v = d.to_json();
        assert_eq!(v["type"], "drop");
        assert_eq!(v["packet"], "SYN");
        assert_eq!(v["reason"], "NO_SOCKET");
        assert_eq!(v["location"], "tcp_v4_rcv+0x10");
        assert_eq!(v["netns"], 4026532300u32);
        assert_eq!(v["netns_name"], Value::Null);
        assert_eq!(v["ifname"], "eth0");
        assert_eq!(v["src"], "10.0.0.2:40000");
        assert_eq!(v["dst"], "10.0.0.1:8080");
        assert_eq!(v["isn"], 1000);
        assert_eq!(v["tsval"], 77);
        assert_eq!(v["client"], Value::Null);
        assert_eq!(v["service"], Value::Null);
        let ts = v["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-27T08:01:43.123456Z".len(), "{ts}");
        assert_eq!(d.packet.kind, PacketKind::Syn);
    }

    #[test]
    fn summary_counts() {
        let d = named();
        let mut s = Summary::default();
        s.add(&d);
        s.add(&d);
        let totals = Totals {
            drops: 2,
            lost_events: 0,
            drops_by_reason: vec![(3, 2)],
            ..Totals::default()
        };
        let mut names = BTreeMap::new();
        names.insert(3, "NO_SOCKET".to_owned());
        let reasons = DropReasons::from_names(names);
        let v = s.finish(&totals, &reasons, 1.0);
        assert_eq!(v.drops_by_reason["NO_SOCKET"], 2);
        assert_eq!(v.top_sources[0].addr, "10.0.0.2");
        assert_eq!(v.top_sources[0].count, 2);
        assert_eq!(v.top_locations[0].function, "tcp_v4_rcv");
        assert_eq!(v.top_locations[0].reason, "NO_SOCKET");
        assert!(d.to_line().contains("NO_SOCKET at tcp_v4_rcv+0x10"));
    }

    #[test]
    fn a_flood_from_many_sources_keeps_a_bounded_table_and_says_how_many_others() {
        let mut s = Summary::default();
        let mut d = named();
        for i in 0..20_000u32 {
            // One heavy source among 10 000 distinct ones.
            let ip = if i % 2 == 0 {
                0x0a00_0001
            } else {
                0x0a40_0000 + i
            };
            d.packet.src = SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), 1);
            s.add(&d);
        }
        assert!(s.sources.len() <= TOP_ADDRESSES);
        let v = s.finish(&Totals::default(), &DropReasons::default(), 1.0);
        assert_eq!(v.top_sources.len(), SHOWN);
        assert_eq!(v.top_sources[0].addr, "10.0.0.1");
        assert!(v.top_sources[0].count >= 10_000);
        let listed: u64 = v.top_sources.iter().map(|a| a.count).sum();
        assert_eq!(listed + v.other_sources, 20_000);
        assert_eq!(v.events_by_reason["NO_SOCKET"], 20_000);
        assert_eq!(v.other_destinations, 0);
    }

    #[test]
    fn summary_orders_destinations_by_text_and_folds_locations_by_function() {
        let mut s = Summary::default();
        for (dst, location) in [
            ("10.0.0.9:80", "tcp_v4_rcv+0x10"),
            ("10.0.0.10:80", "tcp_v4_rcv+0x20"),
            ("[fd00::1]:80", "nft_do_chain+0x1"),
        ] {
            let mut d = named();
            d.packet.dst = dst.parse().unwrap();
            d.location = location.into();
            s.add(&d);
        }
        let v = s.finish(&Totals::default(), &DropReasons::default(), 1.0);
        let addrs: Vec<&str> = v.top_destinations.iter().map(|d| &*d.addr).collect();
        assert_eq!(addrs, ["10.0.0.10:80", "10.0.0.9:80", "[fd00::1]:80"]);
        assert_eq!(v.top_locations[0].function, "tcp_v4_rcv");
        assert_eq!(v.top_locations[0].count, 2);
        assert_eq!(v.top_locations[1].function, "nft_do_chain");
    }

    #[test]
    fn runs_of_one_reason_and_location_count_as_every_drop_did() {
        // Runs of one pair (counted aside until another comes), pairs met again, names equal
        // by text but elsewhere (not shared), and a last run never folded in.
        let mut s = Summary::default();
        let mut expect: BTreeMap<(String, String), u64> = BTreeMap::new();
        let pairs = [
            ("NO_SOCKET", "tcp_v4_rcv+0x10"),
            ("NO_SOCKET", "tcp_v4_rcv+0x20"),
            ("NETFILTER_DROP", "nft_do_chain+0x1"),
        ];
        let mut d = named();
        for (i, run) in [3usize, 1, 5, 2, 1, 4, 7].into_iter().enumerate() {
            let (reason, location) = pairs[i % pairs.len()];
            for _ in 0..run {
                d.reason = if i % 2 == 0 {
                    Name::intern(reason)
                } else {
                    Name::shared(reason)
                };
                d.location = Name::shared(location);
                s.add(&d);
                *expect.entry((reason.into(), location.into())).or_default() += 1;
            }
        }
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for ((r, _), n) in &expect {
            *by_reason.entry(r.clone()).or_default() += n;
        }
        assert_eq!(s.events_by_reason(), by_reason);
        assert_eq!(s.events, 23);
        let tops: Vec<(String, String, u64)> = s
            .top_locations(10)
            .into_iter()
            .map(|l| (l.reason, l.function, l.count))
            .collect();
        assert_eq!(
            tops,
            [
                ("NO_SOCKET".into(), "tcp_v4_rcv".into(), 14),
                ("NETFILTER_DROP".into(), "nft_do_chain".into(), 9),
            ]
        );
    }
}
