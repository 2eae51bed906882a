//! What the engine hands out: typed records of drops (`drops::Drop`), handshakes and its
//! health while it runs, and the summary at the end. Whatever consumes them (the NDJSON and
//! text writer, the metrics endpoint, the live view, all in `present`) is an [`Observer`].
//! JSON is made only where a record leaves the process: the records serialize as the objects
//! of docs/json.md (field names are a contract: add, never rename).

use std::net::SocketAddr;

use anyhow::Result;
use serde::Serialize;
use swarmtrace_common::{HandshakeKey, Hop};

use crate::clock::rfc3339_micros;
use crate::trace::drops::Drop;
use crate::trace::hops::HopNames;
use crate::trace::tracker::{Answer, DropNote, Handshake, Outcome};

/// The tracer's state, once a second.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    pub elapsed_s: f64,
    /// Exact kernel totals.
    pub drops: u64,
    pub lost_events: u64,
    pub syns: u64,
    pub answered: u64,
    pub resets: u64,
    /// Watched interfaces and whether the classifiers are attached there now.
    pub watched: Vec<(String, bool)>,
    /// Handshakes held in memory.
    pub tracked: usize,
    /// N while the kernel samples detail events 1 in N (overload); 0 otherwise.
    pub sampled_one_in: u32,
    /// Detail events the kernel did not send while sampling, over the run.
    pub events_sampled_out: u64,
}

/// A hop, written by its interface's name (`eth0/in`): named only when it is written.
#[derive(Debug, Clone, Copy)]
pub struct HopName<'a> {
    pub hop: Hop,
    names: &'a HopNames,
}

impl std::fmt::Display for HopName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names.name(&self.hop))
    }
}

impl Serialize for HopName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn ts<S: serde::Serializer>(unix_ns: &i128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_micros(*unix_ns))
}

fn tsvals<S: serde::Serializer>(keys: &&[HandshakeKey], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(|k| k.tsval))
}

fn micros<S: serde::Serializer>(ns: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    ns.map(|n| n / 1000).serialize(s)
}

/// Where a handshake's SYN went into the overlay: `{"from": this node, "to": the node}`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OverlayRecord {
    pub from: std::net::IpAddr,
    pub to: std::net::IpAddr,
}

/// A handshake reported (answered, dropped, reset, or unanswered after the timeout): the
/// `handshake` object of docs/json.md, the fields in the documented order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "handshake")]
pub struct HandshakeRecord<'a> {
    #[serde(rename = "ts", serialize_with = "ts")]
    pub unix_ns: i128,
    pub verdict: Outcome,
    pub client: SocketAddr,
    pub service: SocketAddr,
    /// Written in microseconds (`latency_us`).
    #[serde(rename = "latency_us", serialize_with = "micros")]
    pub latency_ns: Option<u64>,
    /// Of its first drop.
    pub reason: Option<&'a str>,
    pub netns_name: Option<&'a str>,
    pub isn: u32,
    pub syns: u32,
    pub first_hop: Option<HopName<'a>>,
    pub last_hop: Option<HopName<'a>>,
    pub answer_hop: Option<HopName<'a>>,
    /// The TSvals of its SYNs (with `isn`, the kernel keys that join it across nodes).
    #[serde(serialize_with = "tsvals")]
    pub tsvals: &'a [HandshakeKey],
    /// Its SYN left this node inside a VXLAN datagram (the overlay): from which address of
    /// this node, to which node. Only then written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayRecord>,
    /// Its first drop whole (which packet, where), for the text line.
    #[serde(skip)]
    pub first_drop: Option<&'a DropNote>,
}

impl<'a> HandshakeRecord<'a> {
    pub fn new(h: &'a Handshake, hops: &'a HopNames, last_hop: Option<Hop>, unix_ns: i128) -> Self {
        let first_drop = h.drops.first();
        let named = |hop| HopName { hop, names: hops };
        HandshakeRecord {
            unix_ns,
            verdict: h.outcome(),
            client: h.client,
            service: h.service,
            latency_ns: h.latency_ns(),
            reason: first_drop.map(|d| &*d.reason),
            netns_name: first_drop.and_then(|d| d.netns_name.as_deref()),
            isn: h.isn,
            syns: h.syns,
            first_hop: h.first_hop.map(named),
            last_hop: last_hop.map(named),
            answer_hop: match h.answer {
                Some(Answer::SynAck { hop, .. }) | Some(Answer::Reset { hop }) => Some(named(hop)),
                None => None,
            },
            tsvals: &h.keys,
            overlay: h.overlay.map(|o| OverlayRecord {
                from: o.local,
                to: o.remote,
            }),
            first_drop,
        }
    }

    pub fn latency_us(&self) -> Option<u64> {
        self.latency_ns.map(|n| n / 1000)
    }
}

/// Gets a run's records as they happen.
pub trait Observer: Send {
    fn on_drop(&mut self, _drop: &Drop) -> Result<()> {
        Ok(())
    }
    fn on_handshake(&mut self, _handshake: &HandshakeRecord<'_>) -> Result<()> {
        Ok(())
    }
    /// Whether it reads [`Observer::on_health`] (reading the kernel's totals is not free).
    fn wants_health(&self) -> bool {
        true
    }
    fn on_health(&mut self, _health: &Health) {}
    /// The end of a batch of records (a writer flushes).
    fn on_batch(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether it prints on the terminal now: the engine's notes on stderr are left out
    /// while the live view owns the screen.
    fn owns_terminal(&self) -> bool {
        false
    }
    /// Tracing stopped: the summary follows (the live view gives the terminal back).
    fn on_end(&mut self) {}
}

/// The observers of one run, told in order.
#[derive(Default)]
pub struct Observers<'a>(pub Vec<&'a mut dyn Observer>);

impl Observers<'_> {
    pub fn drop(&mut self, d: &Drop) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.on_drop(d))
    }

    pub fn handshake(&mut self, h: &HandshakeRecord<'_>) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.on_handshake(h))
    }

    pub fn wants_health(&self) -> bool {
        self.0.iter().any(|o| o.wants_health())
    }

    pub fn health(&mut self, h: &Health) {
        for o in &mut self.0 {
            o.on_health(h);
        }
    }

    pub fn batch(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.on_batch())
    }

    pub fn terminal_owned(&self) -> bool {
        self.0.iter().any(|o| o.owns_terminal())
    }

    pub fn end(&mut self) {
        for o in &mut self.0 {
            o.on_end();
        }
    }
}
