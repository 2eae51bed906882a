//! A handshake as a record: the `handshake` NDJSON object of docs/json.md, and its text line.

use std::net::SocketAddr;

use serde_json::Value;
use swarmtrace_common::Hop;

use crate::clock::rfc3339_micros;
use crate::trace::hops::HopNames;
use crate::trace::tracker::{Answer, Handshake, Outcome};

/// The `handshake` NDJSON object of docs/json.md; the fields in the documented order.
#[derive(Debug, serde::Serialize)]
pub struct HandshakeRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts: String,
    verdict: &'static str,
    client: SocketAddr,
    service: SocketAddr,
    latency_us: Option<u64>,
    reason: Option<&'a str>,
    netns_name: Option<&'a str>,
    isn: u32,
    syns: u32,
    first_hop: Option<String>,
    last_hop: Option<String>,
    answer_hop: Option<String>,
}

pub fn handshake_record<'a>(
    h: &'a Handshake,
    hops: &HopNames,
    last_hop: Option<Hop>,
    unix_ns: i128,
) -> HandshakeRecord<'a> {
    let first_drop = h.drops.first();
    HandshakeRecord {
        kind: "handshake",
        ts: rfc3339_micros(unix_ns),
        verdict: h.outcome().as_str(),
        client: h.client,
        service: h.service,
        latency_us: h.latency_ns().map(|n| n / 1000),
        reason: first_drop.map(|d| &*d.reason),
        netns_name: first_drop.and_then(|d| d.netns_name.as_deref()),
        isn: h.isn,
        syns: h.syns,
        first_hop: h.first_hop.map(|x| hops.name(&x)),
        last_hop: last_hop.map(|x| hops.name(&x)),
        answer_hop: match h.answer {
            Some(Answer::SynAck { hop, .. }) | Some(Answer::Reset { hop }) => Some(hops.name(&hop)),
            None => None,
        },
    }
}

/// The handshake as a `serde_json::Value`: what observers get (the bench compares its cost).
pub fn handshake_json(
    h: &Handshake,
    hops: &HopNames,
    last_hop: Option<Hop>,
    unix_ns: i128,
) -> Value {
    serde_json::to_value(handshake_record(h, hops, last_hop, unix_ns))
        .expect("a handshake record always serializes")
}

pub fn handshake_line(
    h: &Handshake,
    hops: &HopNames,
    last_hop: Option<Hop>,
    unix_ns: i128,
) -> String {
    let ts = rfc3339_micros(unix_ns);
    let time = ts.get(11..26).unwrap_or(&ts);
    let detail = match h.outcome() {
        Outcome::Answered => format!(
            "answered in {:.3} ms",
            h.latency_ns().unwrap_or(0) as f64 / 1e6
        ),
        Outcome::Reset => "reset by the server".to_owned(),
        Outcome::Dropped => {
            let d = &h.drops[0];
            format!(
                "dropped: {} {} in {}",
                d.kind.as_str(),
                d.reason,
                d.netns_label()
            )
        }
        Outcome::Unanswered => format!(
            "unanswered after {} SYN(s); last seen at {}",
            h.syns,
            last_hop
                .map(|x| hops.name(&x))
                .unwrap_or_else(|| "-".to_owned())
        ),
    };
    format!("{time} HANDSHAKE {} -> {}  {detail}", h.client, h.service)
}
