//! A handshake as a text line; its NDJSON object is the engine's record
//! (`trace::observe::HandshakeRecord`), serialized as it is.

use crate::trace::observe::HandshakeRecord;
use crate::trace::tracker::Outcome;

pub fn handshake_line(h: &HandshakeRecord<'_>) -> String {
    let ts = crate::clock::rfc3339_micros(h.unix_ns);
    let time = ts.get(11..26).unwrap_or(&ts);
    let detail = match (h.verdict, h.first_drop) {
        (Outcome::Answered, _) => format!(
            "answered in {:.3} ms",
            h.latency_ns.unwrap_or(0) as f64 / 1e6
        ),
        (Outcome::Reset, _) => "reset by the server".to_owned(),
        (Outcome::Dropped, Some(d)) => format!(
            "dropped: {} {} in {}",
            d.kind.as_str(),
            d.reason,
            d.netns_label()
        ),
        (Outcome::Dropped, None) | (Outcome::Unanswered, _) => format!(
            "unanswered after {} SYN(s); last seen at {}",
            h.syns,
            h.last_hop
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".to_owned())
        ),
    };
    format!("{time} HANDSHAKE {} -> {}  {detail}", h.client, h.service)
}
